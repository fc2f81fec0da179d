"""`LossWatch`: NaNGuard's rules on the loss and on the norms the spike gate cannot judge.

A mixin of `NaNGuard` (its state lives on the guard, set in
`on_train_begin`): what the loss says (`loss_growth`, `loss_rise`,
`stalled`, from `loss_rules.py`), the fit's first steps (`early_blowup`),
the first batch's targets and inputs (`off_scale_targets`,
`off_scale_inputs`) and spikes a clip held (`held_spike`, from `blowup_rules.py`). Each method
returns the event found (`trigger`, `step`, `detail`, ...) or `None`.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .blowup_rules import find_early_blowup, find_held_spike
from .gradient_record import APPLIED, DISCARDED
from .loss_rules import (
    CHANCE_FACTOR, LOSS_GROWTH, LOSS_RISE, SENSITIVITY, STALL_LOSS, STALL_STEPS, batch_loss,
    chance_loss, early_level, find_stall, first_step_sensitivity, loss_has_grown, loss_has_risen,
    regularization_penalty,
)
from .float32_replay import batch_loss as forward_loss
from .model_evidence import input_columns
from .off_scale_inputs import (
    find_off_scale_inputs, normalizes_inputs, off_scale_columns, rescale_columns,
)
from .optimizer_chain import find_monitor, innermost_optimizer
from .norm_history import GROWTH_FACTOR, RECENT, measure_growth
from .replay_batches import batch_arrays, root_mean_square
from .structure_signs import first_layer_unapplied, input_scale, structural_sign
from .loss_only_inputs import loss_only_inputs
from .target_scale import find_off_scale_targets, targets_rms


class LossWatch:
    """NaNGuard's loss and early-step rules (a mixin: the guard holds the state)."""

    def _watch_loss(self, loss, read, batch: int = 0) -> dict | None:
        """A non-finite running loss, batch losses `LOSS_GROWTH` x above the best for `RECENT` steps, or
        the absolute rules (`_watch_absolute`).

        The growth counts only while the gradient norms are not growing
        (`GROWTH_FACTOR`): when they are, the spike gate and the non-finite
        checks decide, with the suspects and onset they give.

        `read()` gives the monitor's record, read only when a rule needs it.
        """
        if loss is None:
            if not self._no_loss_warned and self.spike_factor is not None:
                self._no_loss_warned = True
                warnings.warn(
                    f"Step {self._step}: NaNGuard found no 'loss' in the batch logs (a "
                    "train_step that does not return one): its loss rules (a non-finite "
                    "loss, early blow-up, stall, rise, chance) cannot run; the gradient "
                    "checks and the end-of-epoch collapse probe still do. Return the "
                    "loss from train_step to turn them on.", stacklevel=2)
            return None
        loss = float(loss)
        if not math.isfinite(loss):
            if self._carries_skipped_nan(read):
                return None
            return {"trigger": "nonfinite_loss", "step": self._step,
                    "detail": f"the running loss is {loss}"}
        prev_batch, prev_running = self._running
        if self._per_batch_loss:  # a custom loop's own loss: the running mean is ours
            if batch <= prev_batch:  # a new epoch (on_epoch_begin may not be called)
                self._epoch_sum, self._epoch_count = 0.0, 0
            self._epoch_sum, self._epoch_count = self._epoch_sum + loss, self._epoch_count + 1
            this_batch, loss = loss, self._epoch_sum / self._epoch_count
        else:
            this_batch = batch_loss(batch, loss, prev_batch, prev_running)
        if self._first_loss is None:
            self._first_loss = loss
        self._running = (batch, loss)
        self._losses.append(loss)
        self._batch_losses.append(this_batch)
        if len(self._first_batch_losses) < 2 * STALL_STEPS:
            self._first_batch_losses.append(self._batch_losses[-1])
        self._loss_steps.append(self._step)
        if len(self._losses) > STALL_STEPS + RECENT:
            # Bounded: the first STALL_STEPS (the stall, the early level) and the last RECENT.
            del self._losses[STALL_STEPS], self._loss_steps[STALL_STEPS]
            del self._batch_losses[STALL_STEPS]
        if self._target_checks < STALL_STEPS:
            off = self._watch_targets(this_batch)
            if off is not None:
                return off
        if (self.spike_factor is not None and not self._early_judged
                and self._step - self._start_step <= self.min_history):
            early = self._watch_early(read())
            if early is not None:
                return early
        if (self.spike_factor is not None  # off with the spike gate: non-finite only
                and loss_has_grown(self._batch_losses, self._best_loss, self._first_loss)
                and not self._norms_growing(read())):
            last = self._batch_losses[-1]
            return {"trigger": "loss_growth", "step": self._step,
                    "best_step": self._best_step,
                    "detail": f"the batch loss ({last:.4g} at the last step; running "
                              f"{loss:.4g}) has stayed above {LOSS_GROWTH:g}x the best "
                              f"running loss {self._best_loss:.4g} (step {self._best_step}) "
                              f"for {RECENT} steps, and above the first "
                              f"{self._first_loss:.4g}"}
        if self._best_loss is None or loss <= self._best_loss:
            self._best_loss, self._best_step = loss, self._step
        if self.spike_factor is not None:
            return self._watch_absolute(read) or self._watch_collapse()
        return None

    def _carries_skipped_nan(self, read) -> bool:
        """Whether a non-finite running loss is only a skipped bad batch's, carried.

        `fit` resets its running mean after a skip; a custom loop's own
        `keras.metrics.Mean` keeps the bad batch's NaN for the rest of the
        epoch. So a running loss (not a per-batch one) that is non-finite
        in the epoch of a skipped bad batch, while this step's gradient was
        finite and applied, is no new event.
        """
        if self._per_batch_loss or self._bad_skip_epoch != self._epoch:
            return False
        record = read()
        now = record.steps == self._step
        return bool(now.any()) and int(record.status[now][-1]) == APPLIED

    def _watch_targets(self, loss: float) -> dict | None:
        """`off_scale_targets`: the fit's first batch's targets far from unit scale.

        The targets are measured at the fit's first loss, on the batch the
        guard holds (`batch_tap.py`; none without `replay`, or in a custom
        loop that does not hand it over); the batch losses of the first
        `STALL_STEPS` steps are judged against them
        (`target_scale.find_off_scale_targets`): a sigmoid at 0.5 gives a
        binary cross-entropy of 0.69 whatever the labels' scale, and the
        scale reaches the loss a step or two later. At most one warning a fit.
        """
        self._target_checks += 1
        if self._target_checks == 1:
            batches = self._tap.batches
            try:
                first = batch_arrays(batches[-1]) if batches else None
                self._target_rms = None if first is None else targets_rms(first)
                # The inputs too, for a net whose gradients cannot estimate them
                # (`structure_signs.input_scale`).
                self._input_rms = None if first is None else root_mean_square(first[0])
                if first is not None and first[1] is None:  # targets fed as inputs?
                    self._measure_loss_only_inputs(first[0])
            except Exception:  # noqa: BLE001  (a batch we cannot read: no sign)
                self._target_rms = self._input_rms = None
            if first is not None:
                found = self._watch_inputs(first)
                if found is not None:
                    return found
        if self._target_rms is None:
            self._target_checks = STALL_STEPS  # nothing to judge
            return None
        detail = find_off_scale_targets(self._target_rms, loss)
        if detail is None:
            return None
        self._target_checks = STALL_STEPS
        return {"trigger": "off_scale_targets", "step": self._step, "detail": detail}

    def _measure_loss_only_inputs(self, x) -> None:
        """With no `y`: inputs only a loss reads are the targets (`loss_only_inputs.py`)."""
        targets = loss_only_inputs(self.model, x)
        if not targets:
            return
        self._target_rms = root_mean_square([x[k] for k in targets]) or None
        keys = x if isinstance(x, dict) else range(len(x))
        self._input_rms = root_mean_square([x[k] for k in keys if k not in targets])

    def _watch_inputs(self, first) -> dict | None:
        """`off_scale_inputs`: a few float input columns far off the rest's scale.

        Measured on the fit's first batch (`off_scale_inputs.off_scale_columns`);
        where there are such columns and no normalizing layer before the
        first kernel, the experiment: the batch's loss from the fit's start
        weights on the guard's copy, as given and with those columns at the
        median column's scale (`find_off_scale_inputs`). Once a fit; a
        warning, after which the stall is not judged (it would name the
        same cause again).
        """
        try:
            found = off_scale_columns(first[0])
            if found is None or normalizes_inputs(self.model):
                return None
            start = self._snapshots.first
            monitor = find_monitor(self.model.optimizer)
            started = time.perf_counter()  # the copy (once a fit) and two forward passes
            if start is None or not self._replayer.prepare(self.model, innermost_optimizer(monitor)):
                return None
            copy = self._replayer.copy
            copy.set_weights(start[1])
            x, y, sw = first
            given = forward_loss(copy, (x, y, sw))
            rescaled = forward_loss(copy, (rescale_columns(x, found), y, sw))
        except Exception:  # noqa: BLE001  (an experiment, never a crash)
            return None
        detail = find_off_scale_inputs(found, given, rescaled)
        if detail is None:
            return None
        self.replays_run += 1
        self._stall_judged = 2  # the stall would name the same cause again
        return {"trigger": "off_scale_inputs", "step": self._step, "detail": detail,
                "experiment_seconds": time.perf_counter() - started}

    def _watch_early(self, record) -> dict | None:
        """`early_blowup`: the fit's first steps against its first (`find_early_blowup`)."""
        # Only the steps the spike gate is blind to (fewer than min_history
        # norms before them): from there on, the gate judges.
        rows = ((record.steps > self._start_step) & (record.status != DISCARDED)
                & (record.steps <= self._start_step + self.min_history))
        steps = record.steps[rows]
        known = dict(zip(self._loss_steps, self._batch_losses))
        losses = [known.get(int(t), np.nan) for t in steps]
        blowup = find_early_blowup(steps, record.norm[rows], losses)
        if blowup is None:
            return None
        self._early_judged = True
        return {"trigger": "early_blowup", "step": blowup.step, "detail": blowup.detail}

    def _watch_held_spike(self, record) -> dict | None:
        """`held_spike`: a raw spike a clip held (`find_held_spike`); warned once a fit."""
        blowup = find_held_spike(record.steps, record.norm, record.norm_clipped,
                                 record.status == APPLIED, self.window, self._held_since)
        self._held_since = self._step
        if blowup is None:
            return None
        self._held_warned = True
        return {"trigger": "held_spike", "step": blowup.step, "detail": blowup.detail}

    def _norms_growing(self, record) -> bool:
        """Whether the recent global norms of applied steps grow (`GROWTH_FACTOR`).

        Measured only when a loss rule fires: a median over the window,
        not worth paying on every batch.
        """
        # The norms the spike gate judges (after the user's clip): a clip that
        # holds them leaves the loss rules to decide.
        applied = (record.status == APPLIED) & np.isfinite(record.norm_clipped)
        growth = measure_growth(record.norm_clipped[applied], self.window)["growth"]
        return growth is not None and growth >= GROWTH_FACTOR

    def _rise_start(self, level: float) -> int:
        """The first step of the run of batch losses above `level` that ends now.

        The rise is the onset, not the fit's best loss: per-example steps
        (batch size 1) on a net that learned for 1,600 steps rose 10x above
        its early level in 3 steps in a row; its best loss was at step 4, and
        a rollback to it threw the 1,600 steps away. Only the kept steps
        count (the fit's first `STALL_STEPS` and the last `RECENT`).
        """
        losses, steps = self._batch_losses, self._loss_steps
        k = len(losses) - RECENT
        while k > 0 and steps[k - 1] == steps[k] - 1 and losses[k - 1] > level:
            k -= 1
        return int(steps[k])

    def _watch_absolute(self, read) -> dict | None:
        """`loss_rise` and `stalled`: the rules that need no running median.

        `loss_rise` counts only while the gradient norms are not growing
        (`_norms_growing`), as `loss_growth` does. `read()` gives the
        monitor's record.
        """
        losses = np.asarray(self._losses)
        if (loss_has_risen(losses, self._batch_losses)
                and not self._norms_growing(read())):
            early = early_level(losses)
            return {"trigger": "loss_rise", "step": self._step,
                    "best_step": self._rise_start(LOSS_RISE * early) - 1,
                    "detail": f"the batch loss ({self._batch_losses[-1]:.4g} at the last "
                              f"step; running {losses[-1]:.4g}) has stayed above "
                              f"{LOSS_RISE:g}x its early level {early:.4g} (its first, "
                              f"or the median of the first {STALL_STEPS} if lower) "
                              f"for {RECENT} steps"}
        # Judged after the fit's first STALL_STEPS steps, and again after
        # 2 * STALL_STEPS (`windows_flat`); at most one warning a fit.
        if self._stall_judged >= 2 or len(losses) < STALL_STEPS or (
                self._stall_judged == 1
                and len(self._first_batch_losses) < 2 * STALL_STEPS):
            return None
        self._stall_judged += 1
        if self._start_step != 0:  # only a model trained from its first step:
            return None  # a resumed one may have learned all it can already
        record = read()
        if self._input_columns is None:
            self._input_columns = input_columns(self.model, record.variable_paths)
        applied = record.variable_norms[record.status == APPLIED]
        ratio, _ = input_scale(applied, self._input_columns, self._input_rms)
        if ratio is None and self._input_columns is not None and first_layer_unapplied(
                applied, *self._input_columns[:2]):
            # No step has applied a finite first-layer gradient yet (a loss
            # scaler that skipped every step so far: keras-io's toy ResNet
            # on pixels at ~3e4 under float16, 1000x chance): the inputs'
            # measured scale stands in, as for a saturated layer (`diagnose`
            # is told: its rows give no estimate either).
            ratio, measured = self._input_rms, True
        else:
            measured = False
        gains, recurrent_gain, _ = self.start_evidence
        structure = structural_sign(gains, recurrent_gain, ratio)
        first = record.steps == self._start_step + 1
        sensitivity = (first_step_sensitivity(float(record.norm[first][0]), losses[0])
                       if first.any() else None)
        chance = chance_loss(self.model)
        penalty = 0.0 if chance is None else regularization_penalty(self.model)
        evidence = find_stall(losses, structure, sensitivity, self._first_batch_losses, chance,
                              penalty)
        if evidence is None:
            return None
        self._stall_judged = 2
        if evidence == "flat":
            detail = (f"the running loss {losses[-1]:.4g} has not fallen below "
                      f"{STALL_LOSS:g}x its first {losses[0]:.4g} in {len(losses)} steps")
        elif evidence == "chance":
            data = losses[STALL_STEPS - 1] - penalty
            detail = (f"the running loss {losses[STALL_STEPS - 1]:.4g} after {STALL_STEPS} steps "
                      + (f"less its regularization penalty {penalty:.4g} " if penalty else "")
                      + f"is still {data / chance:.3g}x a chance guess's "
                      f"{chance:.4g} (> {CHANCE_FACTOR:g}x; a sane classifier starts near it)")
        elif evidence == "sensitivity":
            detail = (f"the first step's gradient norm is {sensitivity:.3g}x the "
                      f"square root of its loss (> {SENSITIVITY:g}; a few units "
                      "for a well-initialized net)")
        else:  # "windows"
            first = np.mean(self._first_batch_losses[:STALL_STEPS])
            second = np.mean(self._first_batch_losses[STALL_STEPS:])
            detail = (f"the mean batch loss of steps {STALL_STEPS + 1}-{2 * STALL_STEPS} "
                      f"({second:.4g}) has not fallen below {STALL_LOSS:g}x that of "
                      f"steps 1-{STALL_STEPS} ({first:.4g})")
        return {"trigger": "stalled", "step": self._step, "detail": detail,
                **({"input_measured": True} if measured else {})}
