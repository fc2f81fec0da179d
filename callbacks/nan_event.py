"""A NaNGuard event: what the monitor's record shows, and its description (numpy)."""

from __future__ import annotations

import keras
import numpy as np

from .cause import kernel_gains, measure_growth, name_cause
from .diagnosis import rank_suspects
from .gradient_record import APPLIED, CLIPPED_SPIKE, DISCARDED, NONFINITE, SKIPPED_SPIKE

ONSET_FACTOR = 10.0  # a norm this far above its running median has left it


def detect_in_record(record, new, window: int, loss_scaled: bool) -> dict | None:
    """The first event among the rows `new` of the monitor's `record`.

    An event is a non-finite gradient (when no loss scaler handles it),
    non-finite weights after an update, or a spike the gate skipped or
    clipped.

    Args:
        record: the whole `GradientRecord`.
        new: its rows written since the last read.
        window: steps in the running median.
        loss_scaled: whether a `LossScaleOptimizer` handles non-finite steps.

    Returns:
        A dict (`trigger`, `step`, `detail`, maybe `variable_index`), or `None`.
    """
    for i, step in enumerate(new.steps.tolist()):
        status, norm = int(new.status[i]), float(new.norm[i])
        if status == NONFINITE and not loss_scaled:
            bad = int(new.first_nonfinite[i])
            what = ("a gradient holds NaN or inf" if bad >= 0 else
                    f"the global gradient norm overflows to {norm}")
            return {"trigger": "nonfinite_gradient", "step": step,
                    "detail": what + "; the update was skipped",
                    "variable_index": bad if bad >= 0 else None}
        if not new.weights_finite[i]:
            return {"trigger": "nonfinite_weights", "step": step,
                    "detail": "the weights hold NaN or inf after the update"}
        if status in (SKIPPED_SPIKE, CLIPPED_SPIKE):
            earlier = (record.steps < step) & (record.status == APPLIED)
            median = float(np.median(record.norm[earlier][-window:]))
            done = ("skipped" if status == SKIPPED_SPIKE else
                    f"applied clipped to the median {median:.4g}")
            return {"trigger": "gradient_spike", "step": step,
                    "detail": f"global gradient norm {norm:.4g} is "
                              f"{norm / median:.0f}x its running median "
                              f"{median:.4g}; the update was {done}"}
    return None


def describe_event(event: dict, record, *, model, layers: list[str],
                   window: int, min_history: int, start_step: int,
                   learning_rate: float, epoch: int, batch: int,
                   repeated: bool, gains: list[float],
                   recurrent_gain: float | None,
                   loss_scale: dict | None = None) -> None:
    """Adds where, the suspects, the onset, the lr in use and the cause.

    Args:
        event: the event found (`trigger`, `step`, `detail`, ...), updated
            in place.
        record: the monitor's `GradientRecord`.
        model: the model (for its first layer's kernel).
        layers: the layer name of each of the record's variables.
        window: steps in the running median.
        min_history: applied steps needed to tell where a divergence began.
        start_step: the step the fit started at.
        learning_rate: the learning rate in use.
        epoch: 0-based epoch of the event.
        batch: 0-based batch index of the event.
        repeated: the same batch index failed in an earlier epoch.
        gains: the kernels' gains at the fit's start (`cause.kernel_gains`).
        recurrent_gain: the recurrent kernels' largest singular value at
            the fit's start, or `None`.
        loss_scale: the `LossScaleWatch` finding of a `loss_scale` event.
    """
    step = event["step"]
    index = event.pop("variable_index", None)
    upto = (record.steps <= step) & (record.status != DISCARDED)
    suspects = [s for s in rank_suspects(
        record.steps[upto], record.variable_norms[upto],
        record.variable_paths, layers, window=window, threshold=ONSET_FACTOR,
    ) if s["first_step"] is not None]
    applied = ((record.steps < step) & (record.status == APPLIED)
               & np.isfinite(record.norm))
    if event["trigger"] == "loss_scale":  # the last applied step counts too
        applied |= (record.steps == step) & (record.status == APPLIED)
    growth = measure_growth(record.norm[applied], window)
    onset = min([s["first_step"] for s in suspects] + [step])
    if applied.sum() < min_history:
        # Too little history to tell where it began: the fit's start.
        onset = min(onset, start_step + 1)
    if growth["growth"] is not None and growth["growth"] >= 3.0:
        recent_steps = record.steps[applied][-len(growth["recent"]):]
        high = np.asarray(growth["recent"]) >= 3.0 * growth["median"]
        onset = min(onset, int(recent_steps[np.argmax(high)]))
    if event["trigger"] == "loss_scale":
        # The skips changed nothing; the update before them led there.
        onset = min(onset, max(step, start_step + 1))
    stable = applied & (record.steps < onset)
    event.update({
        "epoch": epoch,
        "batch": batch,
        "first_nonfinite_variable": None if index is None
        else record.variable_paths[index],
        "first_nonfinite_layer": None if index is None else layers[index],
        "suspects": suspects,
        "onset_step": onset,
        "growth": growth["growth"],
        "last_applied_norm": float(record.norm[applied][-1])
        if applied.any() else None,
        "learning_rate": learning_rate,
    })
    event.update(name_cause(
        trigger=event["trigger"], growth=growth, suspects=suspects,
        repeated=repeated, gains=gains, recurrent_gain=recurrent_gain,
        stable_norms=record.norm[stable], learning_rate=learning_rate,
        input_ratio=input_ratio(model, record, upto),
        epoch=epoch, batch=batch, loss_scale=loss_scale,
    ))
    if event["cause"] == "bad_data":
        event["onset_step"] = step  # no divergence before it


def input_ratio(model, record, rows) -> float | None:
    """First kernel's gradient norm over its bias's, per input feature.

    For a first layer `x @ W + b` the ratio is about the root mean square
    of the inputs (times sqrt(fan-in) before the division): ~1 for
    standardized inputs.
    """
    paths = record.variable_paths
    first = next((v for v in model.trainable_variables
                  if v.path.endswith("kernel") and len(v.shape) == 2), None)
    if first is None or first.path not in paths:
        return None
    bias = first.path[: -len("kernel")] + "bias"
    if bias not in paths:
        return None
    k, b = paths.index(first.path), paths.index(bias)
    norms = record.variable_norms[rows]
    ok = np.isfinite(norms[:, k]) & np.isfinite(norms[:, b]) & (norms[:, b] > 0)
    if not ok.any():
        return None
    ratio = np.median(norms[ok, k] / norms[ok, b])
    return float(ratio / np.sqrt(first.shape[0]))


def choose_action(action: str, cause: str, retries: int, max_retries: int,
                  bad_batches: int, max_bad_batches: int) -> tuple[str, str]:
    """What NaNGuard does: `action`, or `"skip"` for bad data, or `"stop"`.

    With `"rollback"`, bad data is skipped (`bad_batches` counts this one)
    until `max_bad_batches` are used up; other causes roll back until
    `max_retries` are used up. Returns the action and a note for the detail.
    """
    if action == "rollback" and cause == "bad_data":
        if bad_batches <= max_bad_batches:
            return "skip", ""
        return "stop", f"; {max_bad_batches} bad batches used up"
    if action == "rollback" and retries >= max_retries:
        return "stop", f"; {max_retries} rollbacks used up"
    return action, ""


def must_restore(event: dict, weights_ok: bool, action: str,
                 restore_weights: bool) -> bool:
    """Whether to go back to the snapshot before the event's onset.

    Always when the weights are non-finite; for a divergence (the norms
    left their median before the event, or the loss scaler kept skipping:
    its skips changed nothing, the update before them led there) on
    rollback, and on stop/raise unless `restore_weights=False`.
    """
    diverging = event["trigger"] == "loss_scale" or (
        event["cause"] != "bad_data" and event["onset_step"] < event["step"]
    )
    return not weights_ok or (diverging and (
        action == "rollback" or (action != "skip" and restore_weights)
    ))


def weights_held(record, step: int, start_step: int) -> int:
    """The step whose weights a model holds when nothing was restored."""
    kept = (record.steps <= step) & np.isin(record.status, (APPLIED, CLIPPED_SPIKE))
    return int(record.steps[kept][-1]) if kept.any() else start_step


def initial_gains(model) -> tuple[list[float], float | None]:
    """The kernels' gains and the recurrent kernels' largest singular value.

    Taken when a fit starts: the `depth` and `recurrence` evidence.
    """
    variables = model.trainable_variables
    gains = kernel_gains([
        keras.ops.convert_to_numpy(v) for v in variables
        if v.path.endswith("kernel") and "recurrent" not in v.path
    ])
    recurrent = max([
        float(np.linalg.norm(keras.ops.convert_to_numpy(v), 2))
        for v in variables if v.path.endswith("recurrent_kernel")
    ], default=None)
    return gains, recurrent


def to_float(value) -> float:
    return float(keras.ops.convert_to_numpy(value))
