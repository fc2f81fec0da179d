"""NaNGuard's words: the message printed and the JSON report written."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def write_json_atomically(path: str, payload: dict) -> None:
    """Writes JSON to a temporary file beside `path`, then renames it.

    A reader (or a crash) never sees a half-written report.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_plain)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _plain(value):
    return np.asarray(value).tolist()


def format_message(event: dict) -> str:
    """One paragraph: what was caught, where it started, what was done."""
    parts = [
        f"Epoch {event['epoch']}: Step {event['step']}: NaNGuard caught "
        f"{event['trigger'].replace('_', ' ')}: {event['detail']}."
    ]
    if event["first_nonfinite_variable"]:
        parts.append(
            f"First non-finite gradient: {event['first_nonfinite_variable']} "
            f"(layer {event['first_nonfinite_layer']})."
        )
    if event["suspects"]:
        grew = "; ".join(
            f"{s['variable']} (layer {s['layer']}) up to {s['ratio']:.3g}x "
            f"its running median at step {s['step']}"
            + (f", first above at step {s['first_step']}"
               if s["first_step"] is not None else "")
            for s in event["suspects"]
        )
        parts.append(f"Gradient norms that left their median first: {grew}.")
    if event["last_finite_norm"] is not None:
        parts.append(f"Last finite global norm {event['last_finite_norm']:.4g}.")
    parts.append(f"Learning rate {event['learning_rate']:.4g}.")
    action = event["action"]
    if action == "rollback":
        parts.append(
            f"Action: rollback to the weights after step "
            f"{event['restored_step']}, learning rate now "
            f"{event['new_learning_rate']:.4g}."
        )
    else:
        parts.append(f"Action: {action}.")
    return " ".join(parts)
