"""The cause by experiment: replay the failing step on a copy with one thing changed.

When NaNGuard fires and it holds the failing batch (`batch_tap.py`), it
replays one step on a copy of the model (never the user's weights) under
counterfactuals. First, from the state just before the failing update (the
weights the guard kept, or the newest snapshot before the event's step):

- `as_given`: the same state, batch and learning rate;
- `other_batch`: another recent batch (a bad batch, or a bad state?);
- `finite_rows`: the same batch without its rows holding NaN/inf (where
  it has any: the one experiment at a fit's first step, with no other
  batch yet).

Then, unless that names a bad batch, from the newest snapshot before the
onset (a state the divergence had not reached yet; the same state when the
failure has no history):

- `from_onset`: the failing batch as given;
- `inputs_standardized`: its float inputs standardized with the recent
  batches' statistics (only where they are far from unit scale);
- `targets_scaled`: its targets divided by their root mean square (only
  where that is far from 1);
- `lr_x0.1`: the learning rate times 0.1 (and `lr_x0.01`, times 0.01,
  where a tenth fails too).

Each replay is one optimizer update with Keras' own `train_on_batch`, then
the same batch's loss again: it *fails* when a value turns non-finite or
the batch loss rises `BLOWUP` times over the update. `judge_replays` (pure:
numbers in, a `ReplayVerdict` out) names the cause from which change
removes the failure. Nothing here runs unless an event fires.

The copy is made the way Keras saves a model (`pickle`, Keras' in-memory
`.keras` round trip: layers that rebuild state on load do so), once per
`fit`, and compiled with a fresh optimizer of the user's class and config;
each replay sets its weights and optimizer state from the guard's copies.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import time

import keras
import numpy as np

from .replay_batches import finite_rows, root_mean_square, scale_targets, standardize

BLOWUP = 10.0  # a batch loss that rises this many times over one update blew up
SCALE = 30.0  # inputs' or targets' root mean square above this: not unit scale
LR_CUT = 0.1  # the learning-rate counterfactual's factor (then its square, if that fails too)
LOSS_FLOOR = 1e-8  # losses below this count as this (a converged net's rounding)


@dataclasses.dataclass(frozen=True)
class Replay:
    """One replayed step: the batch loss before and after one update."""

    change: str  # as_given, other_batch, inputs_standardized, targets_scaled, lr_x0.1
    loss: float  # the batch loss at the start state
    loss_after: float  # the same batch's loss after the update
    finite: bool  # the loss, the update and the weights after it are finite
    factor: float = 1.0  # how many times the change scaled what it changed (rate, inputs, targets)

    @property
    def failed(self) -> bool:
        return step_failed(self.loss, self.loss_after, self.finite)

    @property
    def trains(self) -> bool:
        """Whether the update lowered its own batch's loss (not merely did not blow up)."""
        return not self.failed and self.loss_after <= max(self.loss, LOSS_FLOOR)

    def describe(self) -> str:
        return f"{_CHANGE_WORDS[self.change]} {self.loss:.3g} -> {self.loss_after:.3g}"


_CHANGE_WORDS = {
    "as_given": "as given", "other_batch": "another batch",
    "finite_rows": "its finite rows only",
    "from_onset": "as given",
    "inputs_standardized": "inputs standardized", "targets_scaled": "targets scaled",
    "lr_x0.1": f"lr x{LR_CUT:g}", "lr_x0.01": f"lr x{LR_CUT ** 2:g}",
}


@dataclasses.dataclass(frozen=True)
class ReplayVerdict:
    """What the replays show: a cause, or `None` when they decide nothing."""

    cause: str | None
    evidence: str  # "replay from step 12: as given 2.3 -> nan; another batch ..."


def step_failed(loss: float, loss_after: float, finite: bool) -> bool:
    """Whether one update failed: a non-finite value, or the loss x`BLOWUP`."""
    if not (finite and math.isfinite(loss) and math.isfinite(loss_after)):
        return True
    return loss_after > BLOWUP * max(loss, LOSS_FLOOR)


def broken_batch(given: Replay) -> bool:
    """Whether the batch as given gives a non-finite loss before any update."""
    return not math.isfinite(given.loss)


def judge_replays(replays: dict[str, Replay], start_step: int,
                  structural: str | None = None,
                  onset_step: int | None = None) -> ReplayVerdict:
    """Names the cause from the replays: the change that removes the failure.

    1. The step replayed as given does not fail: no verdict (the failure
       needs more than one step from that state; the rules decide).
    2. Another recent batch, or the batch without its non-finite rows,
       does not fail from the same state: `bad_data` (a bad batch, not a
       bad state). Another batch counts only where the batch as given
       gives a non-finite loss before any update (`broken_batch`): a
       finite batch whose one update blows up while another's does not
       is a rate or scale the batch only happened to reveal (SGD at 0.5
       on a plain MLP: 2.4 -> 34.7 as given, 3.0 -> 2.1 for another).
    3. From before the onset (`from_onset`, where replayed), the batch as
       given does not fail: no verdict.
    4. Scaled targets do not fail: `target_scale` (a rate cut that lets
       one step of a loss at 1e10 through cures nothing: under a squared
       error the targets' scale sets the loss, not the curvature).
       Otherwise, of the changes that remove the failure (standardized
       inputs: `input_scale`; the learning rate x`LR_CUT` or x`LR_CUT`**2:
       `learning_rate`), the smaller names the cause: the one that scales
       what it changes the fewer times (`Replay.factor`: 10 or 100 for a
       rate cut, the inputs' root mean square, >= `SCALE`); a tie goes to
       the inputs. Changes whose update lowers the batch's loss
       (`Replay.trains`) come first; the others only where none does.
       Published scripts on raw inputs (Boston's features at rms 420, the
       custom-loop guide's pixels at 0..255) at 100x their rate are cured
       by both a tenth of the rate and standardized inputs; the tenth is
       the smaller change, and they train at their own rate on those
       inputs. A generated conv2d on features up to rms 820 under SGD:
       standardized, its batch loss falls (0.383 -> 0.382); a hundredth of
       the rate only keeps it under 10x (109 -> 400): `input_scale`.
    5. A structural cause the rules found (`depth`, `recurrence`) stands
       against a rate cut: one step cannot test an initialization.
    6. Otherwise no verdict.

    Args:
        replays: by change name; `as_given` is required, the others are
            optional (not run when impossible or irrelevant).
        start_step: the global step of the state replayed from.
        structural: the rules' structural cause, or `None`.
        onset_step: the step of the state the `from_onset` replays start
            from, or `None` (they start from `start_step`).
    """
    given = replays["as_given"]
    moved = "from_onset" in replays  # the cause replays start from an earlier state
    first = ("as_given", "other_batch", "finite_rows")
    near = [r for c, r in replays.items() if not moved or c in first]
    far = [r for c, r in replays.items() if moved and c not in first]
    evidence = f"replay from the weights after step {start_step}: " + "; ".join(
        r.describe() for r in near)
    if far:
        at = start_step if onset_step is None else onset_step
        evidence += f"; from step {at}: " + "; ".join(r.describe() for r in far)
    if not given.failed:
        return ReplayVerdict(None, evidence + " (the step alone does not fail)")
    for change in ("other_batch", "finite_rows"):
        other = replays.get(change)
        if other is not None and not other.failed and (
                change == "finite_rows" or broken_batch(given)):
            return ReplayVerdict("bad_data", evidence)
    base = replays.get("from_onset")
    if base is not None and not base.failed:
        return ReplayVerdict(None, evidence + " (from before the onset the step does not fail)")
    scaled = replays.get("targets_scaled")
    if scaled is not None and not scaled.failed:
        return ReplayVerdict("target_scale", evidence)
    cures = [(r.factor, order, cause, r) for order, (change, cause) in enumerate(_CURES)
             if (r := replays.get(change)) is not None and not r.failed]
    if not cures:
        return ReplayVerdict(None, evidence)
    trained = [c for c in cures if c[3].trains]
    cause = min(trained or cures, key=lambda c: c[:2])[2]
    if cause == "learning_rate" and structural in ("depth", "recurrence"):
        return ReplayVerdict(None, evidence)
    return ReplayVerdict(cause, evidence)


# The changes weighed by their size when they remove the failure, in tie order.
_CURES = (("inputs_standardized", "input_scale"),
          ("lr_x0.1", "learning_rate"), ("lr_x0.01", "learning_rate"))


def cure_for(cause: str, learning_rate: float, where: str, rules_cure: str) -> str:
    """The cure for a cause the replays named (the rules' own where they agree)."""
    if cause == "bad_data":
        return (f"check the rows of {where} for NaN/inf or extreme values and "
                "fix or drop them; the guard skipped that step")
    if cause == "learning_rate":
        # the rules' clip value, where they suggest one (the norms before the onset)
        at = rules_cure.find("or clip the global norm at")
        clip = rules_cure[at:] if at >= 0 else "or clip the global norm"
        return (f"lower the learning rate to ~{learning_rate * LR_CUT:.3g} "
                f"(a tenth of {learning_rate:.3g}); {clip}")
    if cause == "input_scale":
        return ("standardize the inputs (zero mean, unit variance per feature, "
                "e.g. keras.layers.Normalization adapted on the training data)")
    if cause == "target_scale":
        return ("scale the targets to unit variance (divide by their standard "
                "deviation, multiply the predictions back), or use a loss that "
                "does not grow with their scale (e.g. Huber)")
    return rules_cure


# -- the copy ------------------------------------------------------------


class Replayer:
    """A copy of the user's model that replays single steps.

    Made on the first event of a `fit` (`pickle`: Keras' own saving round
    trip) and reused for the next ones; `None`-safe: `available` is False
    when the model cannot be copied (the guard then uses its rules).
    """

    def __init__(self):
        self.copy = None
        self.error: str | None = None

    def prepare(self, model, updater) -> bool:
        """Copies `model` (once) and compiles it with `updater`'s class and config."""
        if self.copy is not None:
            return True
        if self.error is not None:
            return False
        try:
            copy = pickle.loads(pickle.dumps(model))
            config = updater.get_config()
            config["learning_rate"] = 1.0  # set per replay
            optimizer = type(updater).from_config(config)
            kwargs = {}
            if getattr(model, "loss", None) is not None:
                kwargs["loss"] = model.loss
                if getattr(model, "loss_weights", None) is not None:
                    kwargs["loss_weights"] = model.loss_weights
            copy.compile(optimizer=optimizer, run_eagerly=True, **kwargs)
            self.copy = copy
            return True
        except Exception as error:  # noqa: BLE001  (no replay: the rules decide)
            self.error = f"{type(error).__name__}: {error}"[:200]
            return False

    def step(self, change: str, weights, state, iterations: int, data,
             learning_rate: float, factor: float = 1.0) -> Replay:
        """One update of the copy from `weights`/`state` on `data`; the batch loss again after.

        `factor` is recorded: how many times the change scaled what it changed.
        """
        copy = self.copy
        copy.set_weights(weights)
        updater = copy.optimizer
        while hasattr(updater, "inner_optimizer"):
            updater = updater.inner_optimizer
        x, y, sw = data
        if not updater.built:
            updater.build(copy.trainable_variables)
        slots = _slots(updater)
        if state is not None and len(state) == len(slots):
            for v, value in zip(slots, state):
                v.assign(value)
        else:
            for v in slots:
                v.assign(np.zeros(v.shape, dtype=v.dtype))
        updater.iterations.assign(iterations)
        updater.learning_rate = learning_rate
        with np.errstate(all="ignore"):
            before = _loss(copy.train_on_batch(x, y, sample_weight=sw, return_dict=True))
            after_weights = copy.get_weights()
            finite = all(np.isfinite(w).all() for w in after_weights
                         if np.asarray(w).dtype.kind == "f")
            after = _loss(copy.train_on_batch(x, y, sample_weight=sw, return_dict=True))
        return Replay(change, before, after, bool(finite), factor)

    def run(self, near: tuple, far: tuple | None, data, recent: list,
            learning_rate: float) -> dict[str, Replay]:
        """The counterfactual replays of `data` (see the module docstring).

        Args:
            near: `(step, weights, optimizer state)` just before the failing update.
            far: the same from before the onset, or `None` (use `near`).
            data: the failing batch, `(x, y, sample_weight)` as numpy.
            recent: earlier batches, oldest first.
            learning_rate: the rate in use.
        """
        step, weights, state = near
        replays = {"as_given": self.step("as_given", weights, state, step,
                                         data, learning_rate)}
        if not replays["as_given"].failed:
            return replays
        if recent:
            replays["other_batch"] = self.step("other_batch", weights, state,
                                               step, recent[-1], learning_rate)
            if not replays["other_batch"].failed and broken_batch(replays["as_given"]):
                return replays
        rows = finite_rows(data)
        if rows is not None:
            replays["finite_rows"] = self.step("finite_rows", weights, state, step,
                                               rows, learning_rate)
            if not replays["finite_rows"].failed:
                return replays
        if far is not None and far[0] != step:
            step, weights, state = far
            replays["from_onset"] = self.step("from_onset", weights, state, step,
                                              data, learning_rate)
            if not replays["from_onset"].failed:
                return replays
        iterations = step
        x, y, sw = data
        if (x_rms := root_mean_square(x)) > SCALE:
            x_std = standardize(x, [r[0] for r in recent])
            replays["inputs_standardized"] = self.step(
                "inputs_standardized", weights, state, iterations, (x_std, y, sw),
                learning_rate, x_rms / max(root_mean_square(x_std), 1e-12))
        if y is not None and (y_rms := root_mean_square(y)) > SCALE:
            replays["targets_scaled"] = self.step(
                "targets_scaled", weights, state, iterations, (x, scale_targets(y), sw),
                learning_rate, y_rms)
        replays["lr_x0.1"] = self.step("lr_x0.1", weights, state, iterations, data,
                                       learning_rate * LR_CUT, 1 / LR_CUT)
        if replays["lr_x0.1"].failed:
            replays["lr_x0.01"] = self.step("lr_x0.01", weights, state, iterations, data,
                                            learning_rate * LR_CUT ** 2, LR_CUT ** -2)
        return replays

    def __deepcopy__(self, memo):
        return Replayer()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()


def _slots(updater) -> list:
    keep = (updater.iterations, getattr(updater, "_learning_rate", None))
    return [v for v in updater.variables if not any(v is k for k in keep)]


def _loss(logs) -> float:
    value = logs.get("loss", next(iter(logs.values()), float("nan")))
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


def timed(fn, *args, **kwargs):
    """`(result, seconds)` of a call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
