"""NaNGuard's judgment: the event found, its cause and cure (numpy in, `NaNEvent` out).

`find_event` reads the monitor's new rows; `diagnose` gathers the signs
(`norm_history`, `structure_signs`, `loss_rules`) and `name_cause` names the
cause by rules, the prior that a replay (`replay.py`) may overrule. Pure
functions, unit-tested on small arrays (tests/callbacks/test_diagnosis.py).
"""

from __future__ import annotations

import math

import numpy as np

from .loss_rules import LOSS_RISE
from .gradient_record import APPLIED, CLIPPED_SPIKE, DISCARDED, NONFINITE, SKIPPED_SPIKE
from .nan_event import NaNEvent
from .step_decision import SPREAD
from .norm_history import (
    CLIP_PERCENTILE, GROWTH_FACTOR, RECENT, measure_growth, rank_suspects, scattered, suggest_clip,
)
from .target_scale import TARGET_SCALE
from .structure_signs import RECURRENT_GAIN, WEIGHT_GROWTH, input_scale, structural_sign

INPUT_CURE = ("standardize the inputs (zero mean, unit variance per feature, "
              "e.g. keras.layers.Normalization adapted on the training data)")


def find_event(record, new, window: int, loss_scaled: bool) -> dict | None:
    """The first event among the rows `new` of the monitor's `record`.

    A non-finite gradient (when no loss scaler handles it), non-finite
    weights after an update, or a spike the gate skipped or clipped.

    Returns:
        `trigger`, `step`, `detail` and `variable_index` (the first
        non-finite variable, or `None`), or `None` when nothing happened.
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
                    "detail": "the weights hold NaN or inf after the update",
                    "variable_index": None}
        if status in (SKIPPED_SPIKE, CLIPPED_SPIKE):
            earlier = (record.steps < step) & (record.status == APPLIED)
            median = float(np.median(record.norm[earlier][-window:]))
            done = ("skipped" if status == SKIPPED_SPIKE else
                    f"applied clipped to the median {median:.4g}")
            return {"trigger": "gradient_spike", "step": step,
                    "detail": f"global gradient norm {norm:.4g} is "
                              f"{norm / median:.0f}x its running median "
                              f"{median:.4g}; the update was {done}",
                    "variable_index": None}
    return None


def diagnose(found: dict, record, *, layers: list[str], window: int,
             min_history: int, start_step: int, learning_rate: float,
             epoch: int, batch: int, repeated: bool = False,
             gains: tuple = (), recurrent_gain: float | None = None,
             input_columns: tuple | None = None,
             weight_growth: float | None = None,
             loss_scale: dict | None = None,
             earlier_epoch: int | None = None,
             target_rms: float | None = None,
             input_rms: float | None = None) -> NaNEvent:
    """Describes an event `find_event` (or the guard) found: a `NaNEvent`.

    Args:
        found: `trigger`, `step`, `detail` and maybe `variable_index` (the
            first non-finite variable) and `best_step` (a `loss_growth`'s
            step of the best loss).
        record: the monitor's whole `GradientRecord` (numpy arrays).
        layers: the layer name of each of the record's variables.
        window: steps in the running median.
        min_history: applied steps needed to tell where a divergence began.
        start_step: the global step the fit started at.
        learning_rate: the learning rate in use.
        epoch: 0-based epoch of the event.
        batch: 0-based batch of the event (the event's own, not its
            execution's last).
        repeated: the same batch index failed in an earlier epoch.
        earlier_epoch: that earlier epoch (0-based), for the evidence.
        gains: `kernel_gains` of the model's kernels at the fit's start.
        recurrent_gain: the recurrent kernels' largest singular value at the
            fit's start, or `None`.
        input_columns: `(kernel, bias, fan_in)` of the first layer in the
            record's columns, or `None` (for `input_ratio`).
        weight_growth: the weights' global norm now over the fit's start.
        loss_scale: `LossScaleWatch`'s finding of a `loss_scale` event.
        target_rms: the root mean square of the fit's first batch's float
            targets (`target_scale.targets_rms`), or `None`.
        input_rms: the root mean square of the fit's first batch's float
            inputs, or `None`: the input scale where the first layer's
            gradients give none (`structure_signs.input_scale`).
    """
    trigger, step = found["trigger"], found["step"]
    index = found.get("variable_index")
    at_step = record.variable_norms[record.steps == step]
    bad = (int((~np.isfinite(at_step[-1])).sum())
           if len(at_step) and at_step.shape[1] else 0)
    if index is not None and bad > 1 and bad == at_step.shape[1]:
        # Every gradient is non-finite: the NaN came through the loss (an
        # input, a target), and the first in list order names no origin.
        index = None
    upto = (record.steps <= step) & (record.status != DISCARDED)
    suspects = rank_suspects(record.steps[upto], record.variable_norms[upto],
                             record.variable_paths, layers, window=window)
    applied = ((record.steps < step) & (record.status == APPLIED)
               & np.isfinite(record.norm))
    if trigger == "loss_scale":  # the last applied step counts too
        applied |= (record.steps == step) & (record.status == APPLIED)
    growth = measure_growth(record.norm[applied], window)
    # Norms that range over more than SPREAD with no trend (per-example
    # steps) cross 10x their median all the time: no variable's crossing,
    # and no growth over the median, dates the onset (at batch size 1 the
    # first crossing was at step 16 of an event at step 475, and the
    # rollback lost every step).
    dispersed = scattered(record.norm[applied][-window:], SPREAD)
    onset = min([s["first_step"] for s in suspects if not dispersed] + [step])
    short = applied.sum() < min_history
    if short:  # too little history to tell where it began: the fit's start
        onset = min(onset, start_step + 1)
    g = growth["growth"]
    if g is not None and g >= GROWTH_FACTOR and not dispersed:
        recent_steps = record.steps[applied][-len(growth["recent"]):]
        high = np.asarray(growth["recent"]) >= GROWTH_FACTOR * growth["median"]
        onset = min(onset, int(recent_steps[np.argmax(high)]))
    if trigger == "loss_scale":  # the skips changed nothing; the update before did
        onset = min(onset, max(step, start_step + 1))
    if "best_step" in found:  # loss_growth, loss_rise, collapsed: after its best
        onset = min(onset, found["best_step"] + 1)
    if trigger in ("stalled", "early_blowup", "off_scale_targets",
                   "off_scale_inputs"):  # broken from the first steps
        onset = min(onset, start_step + 1)
    spikes = np.isin(record.status, (SKIPPED_SPIKE, CLIPPED_SPIKE)) & upto
    recent_spikes = spikes & (record.steps > step - window)
    if dispersed and recent_spikes.any():  # the spikes that made it repeated
        onset = min(onset, int(record.steps[recent_spikes][0]))
    signs = {
        "growth": g, "short": bool(short),
        "earlier_suspects": [s for s in suspects if s["first_step"] < step],
        "spikes": int(recent_spikes.sum()),
        "weight_growth": weight_growth, "gains": list(gains),
        "recurrent_gain": recurrent_gain,
        "target_rms": target_rms,
        "detail": found.get("detail"),
    }
    signs["input_ratio"], signs["input_measured"] = input_scale(
        record.variable_norms[upto], input_columns, input_rms)
    if found.get("input_measured") and signs["input_ratio"] is None:
        # The stall was judged on the measured scale: no step applied a
        # finite first-layer gradient (`LossWatch._watch_absolute`).
        signs["input_ratio"], signs["input_measured"] = input_rms, "unapplied"
    row = record.steps == step
    spike = float(record.norm[row][-1]) if row.any() else None
    if onset < step:
        at = applied & (record.steps >= onset)
        spike = float(record.norm[at][0]) if at.any() else spike
    clip = suggest_clip(record.norm[applied & (record.steps < onset)], spike)
    cause, evidence, cure = name_cause(
        trigger, signs, suspects=suspects, repeated=repeated, clip=clip,
        learning_rate=learning_rate, epoch=epoch, batch=batch,
        loss_scale=loss_scale, earlier_epoch=earlier_epoch)
    if cause in ("bad_data", "transient_spike"):
        onset = step  # no divergence before it
    return NaNEvent(
        trigger=trigger, step=step, epoch=epoch, batch=batch,
        detail=found["detail"], cause=cause, evidence=evidence, cure=cure,
        suspects=tuple(suspects), onset_step=onset, growth=g,
        last_applied_norm=float(record.norm[applied][-1]) if applied.any() else None,
        learning_rate=learning_rate,
        first_nonfinite_variable=None if index is None else record.variable_paths[index],
        first_nonfinite_layer=None if index is None else layers[index],
        nonfinite_variables=bad,
        loss_scale=loss_scale,
    )


def name_cause(trigger: str, signs: dict, *, suspects: list[dict], repeated: bool,
               clip: float | None, learning_rate: float, epoch: int, batch: int,
               loss_scale: dict | None = None,
               earlier_epoch: int | None = None) -> tuple[str, str, str]:
    """Names the likeliest cause: `(cause, evidence, cure)`.

    Decided in this order, the first that holds:

    0. `input_scale` for `off_scale_inputs`: a forward pass showed a few
       input columns' scale in the loss (`off_scale_inputs.py`).
    1. `loss_scale`: the loss scaler kept skipping or its scale collapsed.
    2. For a spike whose batch spiked in an earlier epoch too: `bad_data`
       (an outlier; the spike gate already skipped or clipped it).
    3. Is it diverging? The recent norms rose `GROWTH_FACTOR` x their median,
       or a variable left its median (`SUSPECT_FACTOR`) before the event, or
       the weights overflowed, or several spikes fell within the window, or
       (with too little history for a median) the weights' norm grew
       `WEIGHT_GROWTH` x since the fit began, or the loss grew (`loss_growth`,
       `loss_rise`), or the outputs collapsed (`collapsed`), or the loss has not fallen on a model with a
       structural sign (`stalled`, `find_stall`).
    4. `transient_spike`: a spike that is none of that (recorded and
       skipped or clipped, training goes on).
    5. `bad_data`: the same batch failed in an earlier epoch, or the loss
       or gradient turned non-finite while nothing was diverging, unless a
       structural sign below explains an overflow within the first
       `min_history` steps (an early overflow).
    6. `recurrence`: the recurrent kernel's gain exceeds `RECURRENT_GAIN`.
    6b. `target_scale`: the fit's first batch's float targets have a root
       mean square above `TARGET_SCALE` (`off_scale_targets`, or any
       divergence on such targets).
    7. `depth`: `MIN_DEPTH` kernels or more whose gains multiply past `DEPTH_GAIN`.
    8. `input_scale`: the first layer's `input_ratio` exceeds `INPUT_SCALE`.
    9. `learning_rate`: diverging on a network with none of those signs.
    10. `unknown`.
    """
    clip_text = (f"clip the global norm at ~{clip:.3g} (the {CLIP_PERCENTILE:.0f}th "
                 f"percentile of the norms before the onset), e.g. "
                 f"global_clipnorm={clip:.3g}" if clip else
                 "clip the global norm (too little history to suggest a value)")
    where = f"epoch {epoch}, batch {batch} (0-based)"
    if trigger == "off_scale_inputs":  # proven by a forward pass (`off_scale_inputs.py`)
        return ("input_scale", signs["detail"], INPUT_CURE)
    g, early = signs["growth"], signs["short"]
    if trigger == "loss_scale" and not diverged_in_float32(loss_scale or {}):
        return _loss_scale(loss_scale or {}, g, learning_rate, clip_text)
    grew = g is not None and g >= GROWTH_FACTOR
    wg = signs.get("weight_growth")
    weights_grew = early and wg is not None and wg >= WEIGHT_GROWTH
    diverging = (grew or weights_grew or bool(signs["earlier_suspects"])
                 or trigger in ("nonfinite_weights", "loss_growth", "loss_rise",
                                "collapsed", "stalled", "early_blowup", "off_scale_targets",
                                "loss_scale")  # (diverged in float32 too)
                 or (trigger == "gradient_spike" and signs["spikes"] > 1))
    spike = trigger in ("gradient_spike", "held_spike")  # held: by the user's clip
    rg, gains, ratio = signs["recurrent_gain"], signs["gains"], signs["input_ratio"]
    total = float(np.prod(gains)) if gains else 0.0
    structure = structural_sign(gains, rg, ratio)
    before = (f"epoch {earlier_epoch}" if earlier_epoch is not None
              else "an earlier epoch")
    if spike and repeated:
        return ("bad_data",
                f"the spike's batch {batch} spiked in {before} too (now {where})",
                f"check the rows of {where} for outliers; the guard "
                "skipped (or clipped) that step each time")
    if spike and not diverging:
        return ("transient_spike",
                f"one spike, with no growth before it and no other spike in "
                f"the last steps (recent norms at most {g or 0:.2g}x their median)",
                "none needed if it stays isolated; if spikes recur, " + clip_text)
    if repeated or (not diverging and not (early and structure)):
        evidence = (f"batch {batch} failed in {before} too (now {where})"
                    if repeated else
                    f"the {'loss' if trigger == 'nonfinite_loss' else 'gradient'} "
                    f"turned non-finite at {where} while the weights were finite "
                    "and nothing was growing before it"
                    + (f" (recent norms at most {g:.2g}x their median)" if g else ""))
        return ("bad_data", evidence,
                f"check the rows of {where} for NaN/inf or extreme values and "
                "fix or drop them; the guard skipped that step")
    first = signs["earlier_suspects"][0] if signs["earlier_suspects"] else None
    led = (f"; {first['variable']} left its median first ({first['ratio']:.3g}x "
           f"at step {first['step']})" if first else "")
    rms = signs.get("target_rms")
    if trigger == "off_scale_targets" or (diverging and rms is not None and rms > TARGET_SCALE):
        return ("target_scale",
                ("" if trigger == "off_scale_targets" else
                 "the loss has not fallen since the first step; " if trigger == "stalled" else
                 "the first steps blew up; " if trigger == "early_blowup" else
                 "diverging; ")
                + f"the targets' root mean square is {rms:.3g}, not ~1: the loss and "
                "its gradients carry their scale",
                "scale the targets to unit variance (divide by their standard "
                "deviation, multiply the predictions back), or use a loss that "
                "does not grow with their scale (e.g. Huber); labels for a "
                "cross-entropy are 0/1 (or class ids)")
    when = ("the loss has not fallen since the first step" if trigger == "stalled" else
            "an overflow within the first steps" if early and not grew else
            "the loss rose far above its best" if trigger == "loss_rise" else
            "the outputs stopped depending on the inputs" if trigger == "collapsed" else
            "the norms grew")
    if structure == "recurrence":
        return ("recurrence",
                f"{when} and the recurrent kernel's largest singular value is "
                f"{rg:.3g} (> {RECURRENT_GAIN}: the recurrence amplifies){led}",
                "initialize the recurrent kernel orthogonal with gain 1 "
                "('orthogonal'), or use an LSTM/GRU with tanh, or shorten the "
                "sequences; " + clip_text)
    if structure == "depth":
        return ("depth",
                f"{when}; {len(gains)} kernels with gains {min(gains):.2g}.."
                f"{max(gains):.2g} multiply to {total:.3g}{led}",
                "initialize with fan-in variance scaling (e.g. 'glorot_uniform', "
                "gain ~1), or add normalization / residual connections; " + clip_text)
    if structure == "input_scale":
        return ("input_scale",
                (f"{when}; no step has applied a finite first-layer gradient yet (each "
                 f"was skipped), and measured on the first batch the "
                 f"inputs' root mean square is {ratio:.3g}, not ~1"
                 if signs.get("input_measured") == "unapplied" else
                 f"{when}; the first layer's gradients are zero (its units "
                 f"saturated from the first step) and the inputs' root mean square "
                 f"is {ratio:.3g}, not ~1" if signs.get("input_measured") else
                 f"{when}; the first kernel's gradient norm is {ratio:.3g}x its "
                 f"bias's per input feature: the inputs' root mean square is "
                 f"~{ratio:.3g}, not ~1"),
                INPUT_CURE)
    stalled_growing = trigger == "stalled" and wg is not None and wg >= WEIGHT_GROWTH
    if trigger == "stalled" and not grew and not stalled_growing:  # far above chance, no sign
        return ("unknown",
                "the loss has not fallen since the first step and stays far above a "
                "chance guess's, with no structural sign (gains, recurrence, input "
                "scale) and no growth of the norms",
                "check what sets the loss's scale from the start: the initial weights "
                "(embedding tables, kernels), a regularization penalty, the labels' "
                "encoding (a classifier's loss starts near ln of its classes)")
    if diverging:
        evidence = (float32_evidence(loss_scale) if trigger == "loss_scale" else
                    f"the loss has not fallen since the first step while the weights' "
                    f"norm grew {wg:.3g}x" if stalled_growing else
                    f"the global norm rose to {g:.3g}x its median in the {RECENT} steps before"
                    if grew else
                    f"the weights' norm grew {wg:.3g}x in the first steps" if weights_grew
                    else "the loss grew far above its best" if trigger in (
                        "loss_growth", "loss_rise")
                    else "the outputs stopped depending on the inputs"
                    if trigger == "collapsed"
                    else "the first steps blew up" if trigger == "early_blowup"
                    else "a clip held a raw spike" if trigger == "held_spike"
                    else "repeated spikes" if trigger == "gradient_spike"
                    else "a variable left its median first" if first
                    else "the weights overflowed after an update")
        return ("learning_rate", evidence + " on a network with unit-scale gains" + led,
                f"lower the learning rate to ~{learning_rate / 10:.3g} (a tenth "
                f"of {learning_rate:.3g}); or " + clip_text)
    return "unknown", "no growth, origin or scale stood out", clip_text


def diverged_in_float32(found: dict) -> bool:
    """Whether a `loss_scale` event's batch diverges in float32 too.

    The guard replays the failing batch on a float32 copy from the same
    weights (`float32_replay.py`) and stores its loss as `float32_loss`,
    beside `early_loss` (the fit's first running loss). Non-finite there
    too, or above `LOSS_RISE` x the early loss: the weights diverged and
    float16 only overflowed first (the population's SGD at rate 30 under
    mixed_float16 blows up in float32 as well), so the divergence rules name
    the cause. No replay (`float32_loss` absent): `False`.
    """
    loss, early = found.get("float32_loss"), found.get("early_loss")
    if loss is None:
        return False
    if not math.isfinite(loss):
        return True
    return early is not None and math.isfinite(early) and early > 0 and loss > LOSS_RISE * early


def float32_evidence(found: dict) -> str:
    """The evidence of a `loss_scale` event whose batch diverges in float32 too."""
    n, loss, early = found.get("skipped", 0), found["float32_loss"], found.get("early_loss")
    than = (f", {loss / early:.3g}x the fit's first loss {early:.4g}"
            if math.isfinite(loss) and early else "")
    return (f"the loss scaler skipped {n} step{'s' * (n != 1)} in a row, but in float32 the "
            f"same batch's loss from the same weights is {loss:.4g}{than}: the weights "
            "diverged, float16 only overflowed first")


def _loss_scale(found: dict, growth, learning_rate: float, clip_text: str):
    """The `loss_scale` cause: its evidence is the scale history."""
    scales = [found.get("scale_before", float("nan")), *found.get("scales", [])]
    history = " -> ".join(f"{s:.6g}" for s in scales)
    n = found.get("skipped", 0)
    evidence = (
        f"the loss scaler skipped {n} step{'s' * (n != 1)} in a row (scale "
        f"{history}, halved on each overflow): the float16 gradients overflow "
        + (f"at a scale {scales[0] / scales[-1]:.0f}x lower than the one the "
           "last applied step fitted" if found.get("settled", True) else
           "at every scale tried, and no step has fitted float16 yet")
    )
    if found.get("rule") == "min_scale":
        evidence += f", and below {found.get('min_scale', 1.0):.6g}"
    if found.get("float32_loss") is not None:
        evidence += (f"; in float32 the same batch's loss from the same weights is "
                     f"{found['float32_loss']:.4g} (the fit's first: "
                     f"{found.get('early_loss', float('nan')):.4g}): float16's range, not "
                     "the state")
    if growth is not None and growth >= GROWTH_FACTOR:
        evidence += f"; the global norm had risen to {growth:.3g}x its median"
    return (
        "loss_scale", evidence,
        f"lower the learning rate to ~{learning_rate / 10:.3g} (a tenth of "
        f"{learning_rate:.3g}); or keep the layers whose values overflow "
        "float16 in float32 (dtype='float32', e.g. the output layer); or "
        + clip_text,
    )
