"""NaNGuard's words: the message printed and the JSON report written."""

from __future__ import annotations

import json
import os
import textwrap
import weakref

import numpy as np

from .atomic_write import write_atomic
from .validation import check_writable_folder


class NonFiniteTrainingError(FloatingPointError):
    """Raised by `NaNGuard(action="raise")`; `.report` holds the diagnosis."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# report_path (real path) -> the guard that writes it, for this process.
_CLAIMS: dict[str, weakref.ref] = {}


def free_report_path(path: str, overwrite: bool = False) -> str:
    """`path`, or the first free numbered sibling when it exists.

    `nan_report.json` exists: `nan_report-1.json`, then `-2`, ... A script
    re-run with the same `report_path` trains and keeps every earlier
    report; `overwrite=True` writes over `path` itself.
    """
    if overwrite or not os.path.lexists(path):
        return path
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.lexists(f"{stem}-{n}{ext}"):
        n += 1
    return f"{stem}-{n}{ext}"


def check_report_path(path: str, owner=None, overwrite: bool = False) -> None:
    """Raises unless `path` is a writable file path free for `owner`.

    A path is claimed by the first guard that checks it (for as long as that
    guard lives): a second guard given the same path would overwrite the
    first one's events, so it is refused before training. An existing file
    is refused unless `overwrite` (`free_report_path` numbers a new one).
    """
    if os.path.isdir(path):
        raise ValueError(
            f"NaNGuard received report_path={path!r}, which is a folder; "
            "pass a file path such as 'nan_report.json'."
        )
    if os.path.exists(path) and not overwrite:
        raise ValueError(
            f"NaNGuard received report_path={path!r}, which already exists; "
            "pass a new path or move the old report away."
        )
    key = os.path.realpath(path)
    holder = _CLAIMS.get(key)
    holder = None if holder is None else holder()
    if holder is not None and holder is not owner:
        raise ValueError(
            f"NaNGuard received report_path={path!r}, which another NaNGuard "
            "in this process already writes to (each would overwrite the "
            "other's events); give each guard its own report_path."
        )
    check_writable_folder(
        path, "NaNGuard", "report_path",
        folder=os.path.dirname(os.path.abspath(path)),
    )
    if owner is not None:
        _CLAIMS[key] = weakref.ref(owner)


def write_json_atomically(path: str, payload: dict) -> None:
    """Writes JSON through `write_atomic` (a temporary file, then a rename).

    A reader (or a crash) never sees a half-written report; a failed write
    raises an `OSError` naming `path` and leaves no file behind. The file gets
    the mode `open()` would give it (0666 less the umask), not the private
    0600 of a `tempfile`.
    """
    try:
        write_atomic(path, json.dumps(payload, indent=2, default=_plain))
    except OSError as error:  # a full disk, a folder gone read-only
        raise OSError(error.errno, (
            f"NaNGuard could not write its report {path!r}: "
            f"{error.strerror or error}; free space or pass another report_path."
        )) from None


def _plain(value):
    return np.asarray(value).tolist()


def format_message(event: dict) -> str:
    """A headline, then the evidence, the cure and the weights, one line each.

    The headline names the step, the trigger, the cause and the action; the
    lines below it, indented, say what was seen (`What:`), why the cause
    was named (`Cause:`), what to change (`Cure:`) and which weights the
    model holds (`Weights:`). `epoch` and `batch` are 0-based (Keras'
    callback indices); `step` is the global step.
    """
    action = event["action"]
    if action == "rollback":
        done = (f"rollback, learning rate {event['learning_rate']:.4g} -> "
                f"{event['new_learning_rate']:.4g}")
    elif action == "warn":
        done = "warn (recorded; training goes on)"
    elif event["cause"] == "transient_spike":
        done = f"{action} the spike and go on"
    elif action in ("skip", "clip"):
        done = f"{'skipped' if action == 'skip' else 'clipped'} as bad data, learning rate unchanged"
    else:
        done = action
    how = ", found by replay" if event.get("method") == "replay" else ""
    evidence = [f"Cause: {event['cause']}{how} ({event['evidence']})."]
    if event.get("nonfinite_variables", 0) > 1 and not event["first_nonfinite_variable"]:
        evidence.append(
            f"Every gradient is non-finite ({event['nonfinite_variables']} variables): "
            "the NaN reached the loss, so no layer is singled out."
        )
    if event["first_nonfinite_variable"]:
        evidence.append(
            f"First non-finite gradient: {event['first_nonfinite_variable']} "
            f"(layer {event['first_nonfinite_layer']})."
        )
    if event["suspects"]:
        grew = "; ".join(
            f"{s['variable']} (layer {s['layer']}) first above 10x at step "
            f"{s['first_step']}, up to {s['ratio']:.3g}x at step {s['step']}"
            for s in event["suspects"]
        )
        evidence.append(f"Gradient norms that crossed 10x their median: {grew}.")
    if event["last_applied_norm"] is not None:
        evidence.append(f"Last applied global norm {event['last_applied_norm']:.4g}.")
    evidence.append(f"Learning rate in use {event['learning_rate']:.4g}.")
    return wrap_lines([
        f"Step {event['step']}: NaNGuard caught "
        f"{event['trigger'].replace('_', ' ')}: cause {event['cause']}, "
        f"action {done}.",
        f"  What: epoch {event['epoch']}, batch {event['batch']} (0-based): "
        f"{event['detail']}.",
        "  " + " ".join(evidence),
        f"  Cure: {event['cure']}.",
        f"  Weights: {_weights(event)}",
    ])


LINE_WIDTH = 120  # no line NaNGuard prints is longer (a 120-column terminal)


def wrap_lines(lines: list[str], width: int = LINE_WIDTH) -> str:
    """Joins `lines`, each wrapped at `width`, continuations indented 4 spaces."""
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out.append(textwrap.fill(line, width, subsequent_indent=indent + "    ",
                                 break_long_words=True, break_on_hyphens=False))
    return "\n".join(out)


def closing_line(events: list[dict], max_retries: int) -> str | None:
    """One line when rollbacks ran out (or were used), else None."""
    rollbacks = [e for e in events if e["action"] == "rollback"]
    if not rollbacks:
        return None
    rates = f"learning rate {rollbacks[0]['learning_rate']:.4g} -> {rollbacks[-1]['new_learning_rate']:.4g}"
    last = events[-1]
    if last["action"] == "stop":
        return wrap_lines([f"NaNGuard: training stopped at step {last['step']} after "
                f"{len(rollbacks)} rollback{'s' * (len(rollbacks) != 1)} "
                f"(max_retries={max_retries}, {rates}): the retries are "
                f"exhausted; the model holds the weights after step "
                f"{last['weights']['step']}."])
    return wrap_lines([f"NaNGuard: training went on after {len(rollbacks)} "
                       f"rollback{'s' * (len(rollbacks) != 1)} ({rates}; "
                       f"{max_retries - len(rollbacks)} of max_retries={max_retries} left)."])


def _weights(event: dict) -> str:
    held = event["weights"]
    if held["restored"]:
        how = (f"restored from the snapshot before the onset at step "
               f"{event['onset_step']}")
    elif held["kept_last"]:
        how = "the last finite ones, as restore_weights=False asks"
    elif held["step"] < event["step"]:
        how = f"the update of step {event['step']} was not applied"
    else:
        how = f"including step {event['step']}'s update"
    return f"the model holds the weights after step {held['step']} ({how})."
