"""NaNGuard's judgment: what failed, why, and the cure (numpy in, `NaNEvent` out).

Pure functions of the monitor's record (a `GradientRecord`, numpy arrays)
and of a few numbers the guard measured on the model when the fit began.
Nothing here touches Keras: each rule is unit-tested on small arrays
(tests/callbacks/test_diagnosis.py), and its constants are defined once,
below, with the population that set them (`python -m benchmarks.diagnosis`,
docs/nan_guard.md).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .gradient_record import APPLIED, CLIPPED_SPIKE, DISCARDED, NONFINITE, SKIPPED_SPIKE

CAUSES = (
    "learning_rate", "input_scale", "target_scale", "depth", "recurrence",
    "bad_data", "loss_scale", "transient_spike", "unknown",
)
# Norms below this are rounding noise (a converged net's 4.5e-9): no ratio
# is taken over them, so a NaN after convergence cannot read "2.83e+08x".
NORM_FLOOR = 1e-6
SUSPECT_FACTOR = 10.0  # a variable's norm this far above its own running median has left it
MIN_PERIODS = 3  # finite earlier values a running median needs
GROWTH_FACTOR = 3.0  # recent global norms this far above their median: a divergence under way
RECENT = 3  # how many steps before the event count as recent
WEIGHT_GROWTH = 2.0  # weights' global norm this many times its start: grown (short history)
INPUT_SCALE = 30.0  # inputs' estimated root mean square that is not unit scale
DEPTH_GAIN = 1e3  # product of the kernels' gains through the stack that amplifies
MIN_DEPTH = 4  # kernels needed to call a failure `depth`
# An ungated recurrent kernel's largest singular value (`ungated_recurrent_gain`)
# above which the recurrence amplifies. Keras' orthogonal initializer reads
# 1.0000001 in float32, so `> 1.0` would blame every default SimpleRNN; 5%
# is far above rounding and far below the gains that explode within a
# sequence of tens of steps (a ReLU SimpleRNN at 1.3: 190x its gain-1
# state after 40 steps).
RECURRENT_GAIN = 1.05
# Batch losses this many times the best running loss (and above the fit's
# first), `RECENT` in a row, are a divergence even when every value stays
# finite (Adam at a rate far too high; `loss_has_grown`).
LOSS_GROWTH = 1e3
CLIP_PERCENTILE = 90.0  # the cure's clipping threshold: this percentile of the norms before the onset
# Absolute evidence, for a net broken from its first step that stays finite
# (a running median only compares a run with itself). Set on the population
# of `python -m benchmarks.diagnosis` (docs/nan_guard.md).
# A running loss this many times its early level (`loss_has_risen`), for
# `RECENT` steps in a row, is a divergence that stays finite (Adam at a rate
# far too high: 20-400x its first loss); no healthy run of the population
# stayed above 4.9x for 3 steps.
LOSS_RISE = 10.0
# Steps of loss history before a stall is judged: one epoch of the population.
STALL_STEPS = 8
# A model with a structural sign (`structural_sign`) whose running loss has
# not fallen below this share of its first value after `STALL_STEPS` steps
# is not learning; no healthy run of the population has a structural sign.
STALL_LOSS = 0.9
# The first step's global gradient norm over the square root of its loss:
# for a squared error both scale with the residual, so the ratio measures
# how sensitive the output is to the weights, whatever the targets' scale.
# The population's healthy runs read at most 7.7; its deep nets at gain
# 3-6 and its unscaled inputs 234 to 3e7 (even where Adam lowers their
# astronomical loss by half in 8 steps). With a structural sign, above this
# is a stall too.
SENSITIVITY = 100.0


@dataclasses.dataclass(frozen=True)
class NaNEvent:
    """One NaNGuard event: what was caught, its cause, and what was done.

    Read it as attributes (`event.cause`) or as a mapping (`event["cause"]`,
    as in earlier versions, where events were dicts); `to_dict()` gives the
    JSON report's form. `step` is the global step; `epoch` and `batch` are
    0-based. The guard fills the last seven fields once it has acted.
    """

    trigger: str  # nonfinite_gradient, nonfinite_weights, gradient_spike, nonfinite_loss, loss_scale
    step: int
    epoch: int
    batch: int
    detail: str  # what the monitor saw, one clause
    cause: str  # one of CAUSES
    evidence: str  # why that cause, with numbers
    cure: str  # what to change, with numbers
    suspects: tuple = ()  # variables that left their median first (`rank_suspects`)
    onset_step: int = 0  # where the failure began (the snapshot restored is older)
    growth: float | None = None  # `measure_growth`: recent max / median
    last_applied_norm: float | None = None
    learning_rate: float = 0.0  # the rate in use (with a rollback's cut)
    first_nonfinite_variable: str | None = None
    first_nonfinite_layer: str | None = None  # None when every gradient is non-finite
    nonfinite_variables: int = 0  # how many variables' gradients were non-finite
    loss_scale: dict | None = None  # `LossScaleWatch`'s finding
    method: str = "rules"  # "replay" when an experiment named the cause (`replay.py`)
    replays: tuple = ()  # the replays run: {"change", "loss", "loss_after", "finite"}
    replay_seconds: float | None = None  # from the event to its diagnosis (replays included)
    action: str = ""  # stop, raise, rollback, skip, clip or warn
    weights: dict | None = None  # step held, restored, kept_last
    restored_step: int | None = None
    new_learning_rate: float | None = None
    moments_reset: list | None = None  # slots `reset_moments=True` set back to zero
    skipped_batches: list | None = None  # `skip_batches`: filled as the batches pass
    message: str = ""

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- measures ------------------------------------------------------------


def running_median(values: np.ndarray, window: int, min_periods: int = MIN_PERIODS):
    """Each value's ratio to the median of the `window` values before it.

    The host-side twin of `ring.running_median` (which decides spikes in the
    compiled step). Non-finite values neither get a ratio nor enter a
    median; a median of 0 gives no ratio.

    Args:
        values: (T,) or (T, V) array, oldest first.
        window: how many earlier values make the median.
        min_periods: fewest finite earlier values for a median. Defaults to 3.

    Returns:
        `(ratio, median)`, arrays shaped like `values`, NaN where undefined.
    """
    values = np.asarray(values, dtype=np.float64)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    clean = np.where(np.isfinite(values), values, np.nan)
    padded = np.concatenate([np.full((window, clean.shape[1]), np.nan), clean])
    windows = sliding_window_view(padded[:-1], window, axis=0)  # rows t-window..t-1
    count = np.sum(np.isfinite(windows), axis=-1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        median = np.nanmedian(windows, axis=-1)
        ratio = clean / median
    ok = (count >= min_periods) & (median > NORM_FLOOR) & np.isfinite(ratio)
    ratio = np.where(ok, ratio, np.nan)
    median = np.where(count >= min_periods, median, np.nan)
    return (ratio[:, 0], median[:, 0]) if squeeze else (ratio, median)


def measure_growth(norms: np.ndarray, window: int) -> dict:
    """How far the last `RECENT` norms rose above the median of those before.

    Args:
        norms: finite global norms of the applied steps before the event,
            oldest first.
        window: how many steps make the median.

    Returns:
        `growth` (largest recent norm / median; `None` with fewer than two
        norms), `median` and `recent` (the recent norms, at least one norm
        left before them).
    """
    norms = np.asarray(norms, dtype=np.float64)
    k = min(RECENT, len(norms) - 1)
    if k < 1:
        return {"growth": None, "median": None, "recent": norms.tolist()}
    earlier, recent = norms[:-k][-window:], norms[-k:]
    median = float(np.median(earlier))
    growth = float(recent.max() / median) if median > NORM_FLOOR else None
    return {"growth": growth, "median": median, "recent": recent.tolist()}


def kernel_gains(kernels: list[np.ndarray]) -> list[float]:
    """Each kernel's gain: weight std times sqrt(fan-in).

    The fan-in is every axis but the last (a Dense kernel's rows, a
    convolution's window times its input channels). About 1 for Glorot and
    fan-in variance scaling (sqrt(2) for He); the product through a stack is
    how much the stack amplifies a signal at initialization.
    """
    return [float(np.std(k) * np.sqrt(np.prod(k.shape[:-1])))
            for k in kernels if k.ndim >= 2 and k.size > 1]


def ungated_recurrent_gain(kernels: list[np.ndarray]) -> float | None:
    """The largest singular value among the ungated recurrent kernels.

    A SimpleRNN's recurrent kernel is square, `(units, units)`: above 1 its
    loop amplifies (the `recurrence` sign, `RECURRENT_GAIN`). A GRU's
    `(units, 3 units)` and an LSTM's `(units, 4 units)` concatenate their
    gates' blocks, and at initialization the update or forget gate (about
    0.5) damps the loop: on the population's 40-step sequences a GRU's or
    LSTM's state after 40 steps at recurrent gain 2 is within 10% (tanh)
    or 20% (ReLU cells) of its gain-1 twin's, and so is its loss after 24
    steps, where a ReLU SimpleRNN's state at gain 1.3 is 190x its twin's
    (`python -m benchmarks.recurrent_gain_twins`). Gated kernels are left
    out.

    Returns:
        The largest singular value of the square kernels, `None` if none.
    """
    gains = [float(np.linalg.norm(np.asarray(k, dtype=np.float64), 2))
             for k in kernels if np.ndim(k) == 2 and k.shape[0] == k.shape[1]]
    return max(gains, default=None)


def input_ratio(variable_norms: np.ndarray, kernel: int, bias: int,
                fan_in: int) -> float | None:
    """First layer's kernel gradient norm over its bias's, per sqrt(fan-in).

    For a first layer `x @ W + b` this estimates the inputs' root mean
    square: about 1 for standardized inputs. Rows where either norm is
    non-finite or the bias norm is 0 are left out; the median of the rest.
    """
    norms = np.asarray(variable_norms, dtype=np.float64)
    if len(norms) == 0:
        return None
    k, b = norms[:, kernel], norms[:, bias]
    ok = np.isfinite(k) & np.isfinite(b) & (b > NORM_FLOOR)
    if not ok.any():
        return None
    return float(np.median(k[ok] / b[ok]) / np.sqrt(fan_in))


def rank_suspects(steps: np.ndarray, variable_norms: np.ndarray, paths, layers, *,
                  window: int, threshold: float = SUSPECT_FACTOR, top: int = 3) -> list[dict]:
    """The variables whose gradient norm first rose `threshold` times above its median.

    At the failing step the per-variable norms often blame the wrong layer
    (a saturated recurrent kernel reads 0 while the head reads inf): the
    variable that left its own running median first is where it started.
    Only variables that crossed the threshold are returned, earliest first,
    then by their largest rise.

    Returns:
        Up to `top` dicts: variable, layer, first_step, ratio (the largest
        rise), step (where it was largest), norm and median there.
    """
    if len(steps) == 0:
        return []
    ratio, median = running_median(variable_norms, window)
    suspects = []
    for column in range(ratio.shape[1]):
        series = ratio[:, column]
        above = np.flatnonzero(np.nan_to_num(series) > threshold)
        if not len(above):
            continue
        t = int(np.nanargmax(series))
        suspects.append({
            "variable": str(paths[column]), "layer": str(layers[column]),
            "first_step": int(steps[above[0]]), "ratio": float(series[t]),
            "step": int(steps[t]), "norm": float(variable_norms[t, column]),
            "median": float(median[t, column]),
        })
    suspects.sort(key=lambda s: (s["first_step"], -s["ratio"]))
    return suspects[:top]


def suggest_clip(stable_norms: np.ndarray, spike: float | None) -> float | None:
    """A clipping threshold: the `CLIP_PERCENTILE` of the norms before the onset.

    Never at or above the spike it answers: if the percentile reaches it,
    the median of those norms instead (and `None` if that does too).
    """
    norms = np.asarray(stable_norms, dtype=np.float64)
    norms = norms[np.isfinite(norms)]
    if len(norms) == 0:
        return None
    for value in (np.percentile(norms, CLIP_PERCENTILE), np.median(norms)):
        if spike is None or not np.isfinite(spike) or value < spike:
            return float(value)
    return None


def structural_sign(gains, recurrent_gain: float | None,
                    input_ratio: float | None) -> str | None:
    """The structural cause a model shows before its first step, or `None`.

    `recurrence` (a recurrent gain above `RECURRENT_GAIN`), `depth`
    (`MIN_DEPTH` kernels or more whose gains multiply past `DEPTH_GAIN`) or
    `input_scale` (an `input_ratio` above `INPUT_SCALE`), in that order.
    """
    gains = list(gains)
    if recurrent_gain is not None and recurrent_gain > RECURRENT_GAIN:
        return "recurrence"
    if len(gains) >= MIN_DEPTH and float(np.prod(gains)) > DEPTH_GAIN:
        return "depth"
    if input_ratio is not None and input_ratio > INPUT_SCALE:
        return "input_scale"
    return None


def batch_loss(batch: int, running: float, prev_batch: int, prev_running: float) -> float:
    """The mean loss of batches `prev_batch + 1 .. batch` from Keras' running means.

    Keras' batch `logs["loss"]` is the epoch's running mean, so one huge
    batch keeps it high for many steps after the loss has come back (a
    tiny GPT-2 under SGD: batch losses 0.96, 35.9, 8.4, 4.8 read 0.96, 18.4,
    14.4, 12.0). With equal batches the sum after batch `b` (0-based in the
    epoch) is `(b + 1) * running`; `prev_batch` is -1 (and `prev_running`
    0) at the epoch's start. A smaller last batch makes it approximate.
    """
    if batch <= prev_batch:
        return float(running)
    return float(((batch + 1) * running - (prev_batch + 1) * prev_running)
                 / (batch - prev_batch))


def loss_has_grown(batch_losses, best: float, first: float) -> bool:
    """Whether the last `RECENT` batch losses all exceed `LOSS_GROWTH` x the best.

    `best` is the lowest running loss before them and `first` the fit's
    first; the newest batch loss must be above `first` too. The batches' own
    losses (`batch_loss`), `RECENT` in a row: one outlier target holds the
    running mean high for steps after its batch (a target of 1e4 among unit
    ones read a running loss 4.9e5x its best for the rest of the epoch,
    while the next batches' losses were back at 0.5), and a finite
    divergence keeps every batch high.
    """
    recent = np.asarray(batch_losses, dtype=np.float64)[-RECENT:]
    return bool(len(recent) == RECENT and best is not None and best > 0
                and np.isfinite(recent).all()
                and (recent > LOSS_GROWTH * best).all() and recent[-1] > first)


def loss_has_risen(losses, batch_losses=None) -> bool:
    """Whether the last `RECENT` batch losses all exceed `LOSS_RISE` x the early level.

    A divergence that stays finite and below `LOSS_GROWTH`: Adam at a rate
    far too high on a GRU or a Conv2D climbs to 20-400x its first loss
    while its norms grow too slowly for the spike gate, from step 2 on. The
    early level is the first running loss, or the median of the fit's first
    `STALL_STEPS` (those before the last `RECENT`) if lower: not the best
    loss so far, because at a later epoch's start the running loss is one
    batch's, and with batch size 2 one batch read 0.05 where the epoch's
    mean was 0.49 (a healthy run, 9.7x "its best" for 20 steps). Requiring `RECENT` steps in a row (and,
    in the guard, norms that are not growing) leaves a fast explosion to the
    spike gate and the non-finite checks, which name its onset and suspects.

    The recent losses are the batches' own (`batch_loss`), not the running
    mean, which one transient spike holds above the level for steps after
    the loss came back.

    Args:
        losses: the running losses since the fit began, one per step,
            oldest first (the guard keeps the first `STALL_STEPS` and the
            last `RECENT`).
        batch_losses: the batch losses of the same steps (`batch_loss`);
            `None` uses the running losses.
    """
    losses = np.asarray(losses, dtype=np.float64)
    recent = losses if batch_losses is None else np.asarray(batch_losses, np.float64)
    if len(losses) <= RECENT or not np.isfinite(losses).all():
        return False
    early = early_level(losses)
    return bool(early > 0 and (recent[-RECENT:] > LOSS_RISE * early).all())


def early_level(losses) -> float:
    """The first running loss, or the median of the first `STALL_STEPS` if lower.

    Only the losses before the last `RECENT` count (`loss_has_risen`).
    """
    # At most STALL_STEPS numbers, every batch: Python's sort is ~50x
    # faster than np.median here, and gives the same median.
    early = [float(v) for v in losses[:max(min(STALL_STEPS, len(losses) - RECENT), 1)]]
    ordered = sorted(early)
    n = len(ordered)
    median = 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
    return min(early[0], median)


def first_step_sensitivity(norm: float, loss: float) -> float | None:
    """The first step's global gradient norm over the square root of its loss.

    Both scale with the residual under a squared error, so the ratio is
    about the output's sensitivity to the weights: a few units for a
    Glorot-initialized net, hundreds to millions for one whose gains
    multiply past `DEPTH_GAIN` or whose inputs are far from unit scale.
    `None` where either is non-finite or the loss is not positive.
    """
    if not (np.isfinite(norm) and np.isfinite(loss)) or loss <= 0:
        return None
    return float(norm / np.sqrt(loss))


def windows_flat(batch_losses) -> bool:
    """Whether the second `STALL_STEPS` steps' mean batch loss is not below the first's.

    Not below `STALL_LOSS` x the mean of the first `STALL_STEPS` batch
    losses (`batch_loss`), where `batch_losses` holds at least
    `2 * STALL_STEPS` of them, the fit's first. The first loss alone is one
    batch's: a ReLU SimpleRNN at recurrent gain 2 whose batch losses repeat
    every epoch (1.29, 0.64, 1.23, ...: it learns nothing) reads a running
    loss 0.75x its first batch's at step 2, so it never stalls by that
    measure; its second 8 steps' mean is 0.98x its first 8's.
    """
    losses = np.asarray(batch_losses, dtype=np.float64)[:2 * STALL_STEPS]
    if len(losses) < 2 * STALL_STEPS or not np.isfinite(losses).all():
        return False
    first, second = losses[:STALL_STEPS].mean(), losses[STALL_STEPS:].mean()
    return bool(first > 0 and second >= STALL_LOSS * first)


def find_stall(losses, structure: str | None,
               sensitivity: float | None = None, batch_losses=None) -> str | None:
    """A model with a structural sign that is not learning: broken from step 1.

    Its norms never spike against their own history, so only absolute
    evidence catches it: the structure measured before step 1, and after
    `STALL_STEPS` steps either a running loss that has not fallen below
    `STALL_LOSS` x its first value, or a `first_step_sensitivity` above
    `SENSITIVITY` (an astronomical loss that Adam lowers, but from 1e7);
    or, after `2 * STALL_STEPS` steps, a second window of batch losses
    whose mean has not fallen below `STALL_LOSS` x the first's
    (`windows_flat`).

    Args:
        losses: the running losses since the fit began, one per step.
        structure: `structural_sign` of the model, or `None`.
        sensitivity: `first_step_sensitivity`, or `None`. Defaults to `None`.
        batch_losses: the fit's first batch losses (`batch_loss`), or
            `None`. Defaults to `None`.

    Returns:
        Which evidence holds, first in this order: `"flat"` (the running
        loss), `"sensitivity"` or `"windows"`; `None` when the model does
        not stall.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if structure is None or len(losses) < STALL_STEPS or not np.isfinite(losses).all():
        return None
    if losses[0] > 0 and losses.min() >= STALL_LOSS * losses[0]:
        return "flat"
    if sensitivity is not None and sensitivity > SENSITIVITY:
        return "sensitivity"
    if batch_losses is not None and windows_flat(batch_losses):
        return "windows"
    return None


# -- finding an event ----------------------------------------------------


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


# -- the judgment --------------------------------------------------------


def diagnose(found: dict, record, *, layers: list[str], window: int,
             min_history: int, start_step: int, learning_rate: float,
             epoch: int, batch: int, repeated: bool = False,
             gains: tuple = (), recurrent_gain: float | None = None,
             input_columns: tuple | None = None,
             weight_growth: float | None = None,
             loss_scale: dict | None = None,
             earlier_epoch: int | None = None) -> NaNEvent:
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
    onset = min([s["first_step"] for s in suspects] + [step])
    short = applied.sum() < min_history
    if short:  # too little history to tell where it began: the fit's start
        onset = min(onset, start_step + 1)
    g = growth["growth"]
    if g is not None and g >= GROWTH_FACTOR:
        recent_steps = record.steps[applied][-len(growth["recent"]):]
        high = np.asarray(growth["recent"]) >= GROWTH_FACTOR * growth["median"]
        onset = min(onset, int(recent_steps[np.argmax(high)]))
    if trigger == "loss_scale":  # the skips changed nothing; the update before did
        onset = min(onset, max(step, start_step + 1))
    if "best_step" in found:  # loss_growth, loss_rise: it grew after its best
        onset = min(onset, found["best_step"] + 1)
    if trigger in ("stalled", "early_blowup"):  # broken from the first steps
        onset = min(onset, start_step + 1)
    spikes = np.isin(record.status, (SKIPPED_SPIKE, CLIPPED_SPIKE)) & upto
    signs = {
        "growth": g, "short": bool(short),
        "earlier_suspects": [s for s in suspects if s["first_step"] < step],
        "spikes": int((spikes & (record.steps > step - window)).sum()),
        "weight_growth": weight_growth, "gains": list(gains),
        "recurrent_gain": recurrent_gain,
        "input_ratio": None if input_columns is None else input_ratio(
            record.variable_norms[upto], *input_columns),
    }
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

    1. `loss_scale`: the loss scaler kept skipping or its scale collapsed.
    2. For a spike whose batch spiked in an earlier epoch too: `bad_data`
       (an outlier; the spike gate already skipped or clipped it).
    3. Is it diverging? The recent norms rose `GROWTH_FACTOR` x their median,
       or a variable left its median (`SUSPECT_FACTOR`) before the event, or
       the weights overflowed, or several spikes fell within the window, or
       (with too little history for a median) the weights' norm grew
       `WEIGHT_GROWTH` x since the fit began, or the loss grew (`loss_growth`,
       `loss_rise`), or the loss has not fallen on a model with a
       structural sign (`stalled`, `find_stall`).
    4. `transient_spike`: a spike that is none of that (recorded and
       skipped or clipped, training goes on).
    5. `bad_data`: the same batch failed in an earlier epoch, or the loss
       or gradient turned non-finite while nothing was diverging, unless a
       structural sign below explains an overflow within the first
       `min_history` steps (an early overflow).
    6. `recurrence`: the recurrent kernel's gain exceeds `RECURRENT_GAIN`.
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
    g, early = signs["growth"], signs["short"]
    if trigger == "loss_scale":
        return _loss_scale(loss_scale or {}, g, learning_rate, clip_text)
    grew = g is not None and g >= GROWTH_FACTOR
    wg = signs.get("weight_growth")
    weights_grew = early and wg is not None and wg >= WEIGHT_GROWTH
    diverging = (grew or weights_grew or bool(signs["earlier_suspects"])
                 or trigger in ("nonfinite_weights", "loss_growth", "loss_rise",
                                "stalled", "early_blowup")
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
    when = ("the loss has not fallen since the first step" if trigger == "stalled" else
            "an overflow within the first steps" if early and not grew else
            "the loss rose far above its best" if trigger == "loss_rise" else
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
                f"{when}; the first kernel's gradient norm is {ratio:.3g}x its "
                f"bias's per input feature: the inputs' root mean square is "
                f"~{ratio:.3g}, not ~1",
                "standardize the inputs (zero mean, unit variance per feature, "
                "e.g. keras.layers.Normalization adapted on the training data)")
    if diverging:
        evidence = (f"the global norm rose to {g:.3g}x its median in the {RECENT} steps before"
                    if grew else
                    f"the weights' norm grew {wg:.3g}x in the first steps" if weights_grew
                    else "the loss grew far above its best" if trigger in (
                        "loss_growth", "loss_rise")
                    else "the first steps blew up" if trigger == "early_blowup"
                    else "a clip held a raw spike" if trigger == "held_spike"
                    else "repeated spikes" if trigger == "gradient_spike"
                    else "a variable left its median first" if first
                    else "the weights overflowed after an update")
        return ("learning_rate", evidence + " on a network with unit-scale gains" + led,
                f"lower the learning rate to ~{learning_rate / 10:.3g} (a tenth "
                f"of {learning_rate:.3g}); or " + clip_text)
    return "unknown", "no growth, origin or scale stood out", clip_text


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
    if growth is not None and growth >= GROWTH_FACTOR:
        evidence += f"; the global norm had risen to {growth:.3g}x its median"
    return (
        "loss_scale", evidence,
        f"lower the learning rate to ~{learning_rate / 10:.3g} (a tenth of "
        f"{learning_rate:.3g}); or keep the layers whose values overflow "
        "float16 in float32 (dtype='float32', e.g. the output layer); or "
        + clip_text,
    )
