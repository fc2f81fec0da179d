"""What NaNGuard's arguments must be: checked before any training starts."""

from __future__ import annotations

import os

from .validation import check, check_int, is_number

ACTIONS = ("stop", "raise", "rollback")
LOSS_KINDS = ("auto", "running", "batch")  # `loss_is`: what logs["loss"] holds
SPIKE_ACTIONS = ("skip", "clip")


def check_arguments(*, action, spike_action, spike_factor, window, min_history, lr_factor,
                    max_retries, max_bad_batches, max_loss_scale_skips, min_loss_scale,
                    report_path, snapshot_every, keep_snapshots, skip_batches,
                    max_consecutive_bad_batches, loss_is) -> None:
    """Raises a `TypeError`/`ValueError` naming the first bad argument and its fix."""
    if report_path is not None and not isinstance(report_path, (str, os.PathLike)):
        raise TypeError(
            f"NaNGuard received report_path={report_path!r} of type "
            f"{type(report_path).__name__}; expected a str or os.PathLike "
            "file path (e.g. 'nan_report.json'), or None for no report."
        )
    if loss_is not in LOSS_KINDS:
        raise ValueError(
            f"NaNGuard received loss_is={loss_is!r}; expected one of "
            f"{', '.join(repr(k) for k in LOSS_KINDS)}."
        )
    check_int("NaNGuard", "max_consecutive_bad_batches", max_consecutive_bad_batches, 1)
    for name, value, allowed in [("action", action, ACTIONS),
                                 ("spike_action", spike_action, SPIKE_ACTIONS)]:
        if value not in allowed:
            raise ValueError(
                f"NaNGuard received {name}={value!r}; expected one of "
                f"{', '.join(repr(a) for a in allowed)}."
            )
    check(
        spike_factor is None or (is_number(spike_factor) and spike_factor > 1),
        "NaNGuard", "spike_factor", spike_factor,
        "a number > 1, or None to turn spike detection off",
    )
    for name, value, low in [
        ("window", window, 2), ("min_history", min_history, 1),
        ("max_retries", max_retries, 0),
        ("max_bad_batches", max_bad_batches, 0),
        ("max_loss_scale_skips", max_loss_scale_skips, 1),
        ("keep_snapshots", keep_snapshots, 1),
    ]:
        check_int("NaNGuard", name, value, low)
    check_int("NaNGuard", "skip_batches", skip_batches, 0)
    if skip_batches and action != "rollback":
        raise ValueError(
            f"NaNGuard received skip_batches={skip_batches!r} with "
            f"action={action!r}; batches are skipped after a rollback "
            "only: pass action='rollback'."
        )
    if snapshot_every is not None:
        check_int("NaNGuard", "snapshot_every", snapshot_every, 1)
    check(
        is_number(lr_factor) and 0 < lr_factor <= 1,
        "NaNGuard", "lr_factor", lr_factor, "a number in (0, 1]",
    )
    check(
        is_number(min_loss_scale) and min_loss_scale > 0,
        "NaNGuard", "min_loss_scale", min_loss_scale, "a number > 0",
    )
