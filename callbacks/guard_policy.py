"""What NaNGuard does about an event: the action, whether to restore, which weights it holds.

Pure functions of the event and the guard's counters (no Keras), unit-tested
in tests/callbacks/test_nan_guard_policy.py.
"""

from __future__ import annotations

import numpy as np

from .nan_event import NaNEvent
from .gradient_record import APPLIED, CLIPPED_SPIKE


def choose_action(action: str, cause: str, retries: int, max_retries: int,
                  bad_batches: int, max_bad_batches: int,
                  spike_action: str = "skip",
                  trigger: str = "", *, skip_bad_data: bool = False,
                  consecutive_bad: int = 0,
                  max_consecutive_bad: int = 3) -> tuple[str, str]:
    """What NaNGuard does: `action`, `"skip"`/`"clip"`, `"warn"` or `"stop"`.

    A `stalled` model is warned about (recorded, training goes on): its
    weights are finite and a healthy model's loss can stay flat for a few
    steps too; only its structure marks it.

    A transient spike, or a spike from a batch that spiked in an earlier
    epoch too, was skipped (or clipped) by the monitor already: training
    goes on. Bad data, with `skip_bad_data` (NaNGuard's default) or with
    `"rollback"`, is skipped (`bad_batches` counts this one, and
    `consecutive_bad` the run of bad steps it ends) until more than
    `max_bad_batches` in all or `max_consecutive_bad` in a row: then stop.
    Bad data never gets a rollback or a learning-rate cut. Other causes roll
    back until `max_retries` are used up. Returns the action and a note for
    the detail (the caps, stated).
    """
    if trigger in ("stalled", "held_spike", "off_scale_targets",
                   "off_scale_inputs"):  # finite, short of a divergence
        return "warn", ""
    if cause == "transient_spike" or (trigger == "gradient_spike" and cause == "bad_data"):
        return spike_action, ""  # the monitor skipped or clipped it already
    if cause == "bad_data" and (skip_bad_data or action == "rollback"):
        if bad_batches > max_bad_batches:
            return "stop", (f"; {bad_batches} bad batches in all, over "
                            f"max_bad_batches={max_bad_batches}")
        if consecutive_bad > max_consecutive_bad:
            return "stop", (f"; {consecutive_bad} bad batches in a row, over "
                            f"max_consecutive_bad_batches={max_consecutive_bad}")
        return "skip", (f"; bad batch {bad_batches} of at most {max_bad_batches}, "
                        f"{consecutive_bad} in a row of at most {max_consecutive_bad}")
    if action == "rollback" and retries >= max_retries:
        return "stop", f"; {max_retries} rollbacks used up"
    return action, ""


def must_restore(event: NaNEvent, weights_ok: bool, action: str,
                 restore_weights: bool) -> bool:
    """Whether to go back to the snapshot before the event's onset.

    Always when the weights are non-finite; for a divergence (the norms
    left their median before the event, or the loss scaler kept skipping:
    its skips changed nothing, the update before them led there) on
    rollback, and on stop/raise unless `restore_weights=False`.
    """
    diverging = event.trigger == "loss_scale" or (
        event.cause not in ("bad_data", "transient_spike")
        and event.onset_step < event.step
    )
    return not weights_ok or (diverging and (
        action == "rollback" or (action in ("stop", "raise") and restore_weights)
    ))


def weights_held(record, step: int, start_step: int) -> int:
    """The step whose weights a model holds when nothing was restored."""
    kept = (record.steps <= step) & np.isin(record.status, (APPLIED, CLIPPED_SPIKE))
    return int(record.steps[kept][-1]) if kept.any() else start_step
