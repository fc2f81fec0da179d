"""`EventResponse`: what NaNGuard does once an event is found.

A mixin of `NaNGuard` (its state lives on the guard): the event is
diagnosed by rules (`cause_rules.diagnose`), its cause tested by replay
where the failing batch and a state before it are at hand (`replay.py`),
then acted on (`guard_policy.choose_action`: skip, warn, stop, raise or
roll back), reported and printed.
"""

from __future__ import annotations

import dataclasses
import time

import keras

from .bad_rows import nonfinite_rows
from .diagnosis import diagnose
from .float32_replay import (
    FLOAT16_CURE, batch_loss, computes_in_float16, float32_copy, judge_float32, loss_in_float32,
)
from .gradient_record import NONFINITE, SKIPPED_SPIKE
from .guard_actions import cut_learning_rate, reset_moments
from .guard_policy import choose_action, must_restore, weights_held
from .host_read import to_numpy
from .layer_names import layer_of_paths
from .model_evidence import input_columns, to_float, weights_norm
from .nan_report import NonFiniteTrainingError, format_message
from .attach import end_fit, find_monitor
from .optimizer_chain import innermost_optimizer
from .replay import cure_for, judge_replays
from .replay_batches import batch_arrays
from .snapshots import all_finite, optimizer_state


class EventResponse:
    """NaNGuard's response to an event (a mixin: the guard holds the state)."""

    def _handle(self, found, record, scale):
        model = self.model
        monitor = find_monitor(model.optimizer)
        if self._columns is None:
            self._layer_names, self._columns = layer_of_paths(
                model, record.variable_paths
            )
            self._input_columns = input_columns(model, record.variable_paths)
        layers = [self._layer_names[c] for c in self._columns]
        batch = found["batch"]
        earlier = [e for e, b in self._failed if b == batch and e < self._epoch]
        started = time.perf_counter()
        gains, recurrent_gain, start_norm = self.start_evidence
        if found["trigger"] == "loss_scale" and self.replay and scale is not None:
            # Float16's range or a diverged state? The batch in float32 tells.
            in_float32 = self._float32_loss()
            if in_float32 is not None:
                scale = dict(scale, float32_loss=in_float32, early_loss=self._first_loss)
        event = diagnose(
            found, record, layers=layers, window=self.window,
            min_history=self.min_history, start_step=self._start_step,
            learning_rate=to_float(monitor.learning_rate) * monitor.lr_multiplier,
            epoch=self._epoch, batch=batch,
            repeated=bool(earlier), earlier_epoch=max(earlier) if earlier else None,
            gains=gains, recurrent_gain=recurrent_gain,
            input_columns=self._input_columns,
            weight_growth=weights_norm(model) / start_norm if start_norm else None,
            loss_scale=scale if found["trigger"] == "loss_scale" else None,
            target_rms=self._target_rms, input_rms=self._input_rms,
        )
        if (event.loss_scale and "float32_loss" in event.loss_scale
                or event.trigger == "off_scale_inputs"):  # judged by a forward pass
            event = dataclasses.replace(event, method="replay")
        if self.replay and not earlier:
            event = self._replay(event, record, monitor)
            event = self._replay_in_float32(event)
        event = dataclasses.replace(
            event, replay_seconds=time.perf_counter() - started
            + found.get("experiment_seconds", 0.0))  # a rule's own forward passes
        skips_bad = self.skip_bad_data or self.action == "rollback"
        if (event.cause == "bad_data" and skips_bad
                and event.trigger != "gradient_spike"):
            digests = self._bad_row_digests()
            first = self._bad_rows.seen_before(digests)
            if first is None:  # new bad rows (or none to tell): one more against the cap
                self.bad_batches += 1
                self._bad_rows.add(digests, event.step)
            else:
                event = dataclasses.replace(event, evidence=(
                    f"{event.evidence}; the same {len(digests)} non-finite row(s) as at "
                    f"step {first}, in another batch (shuffled): the same bad data, "
                    "counted once against max_bad_batches"))
            follows = self._last_bad_step is not None and event.step - self._last_bad_step <= 1
            self._consecutive_bad = self._consecutive_bad + 1 if follows else 1
            self._last_bad_step = event.step
        action, used_up = choose_action(
            self.action, event.cause, self.retries, self.max_retries,
            self.bad_batches, self.max_bad_batches, self.spike_action,
            event.trigger, skip_bad_data=skips_bad,
            consecutive_bad=self._consecutive_bad,
            max_consecutive_bad=self.max_consecutive_bad_batches,
        )
        if action == "skip" and event.cause == "bad_data":
            self._bad_skip_epoch = self._epoch  # a running loss may carry its NaN
        weights_ok = all_finite(model.get_weights())
        restored = None
        if must_restore(event, weights_ok, action, self.restore_weights):
            restored = self._snapshots.restore(model, monitor, event.onset_step)
        if restored is not None:
            monitor.mark_discarded(restored + 1, self._step)
            self._snapshot_step = self._step
            held = restored
            if event.trigger == "loss_scale":  # the scale those weights had
                self.loss_scale.restore_scale()
        else:
            held = weights_held(record, self._step, self._start_step)
        new_lr = None
        if action == "rollback":
            self.retries += 1
            used_up += cut_learning_rate(monitor, self.lr_factor)
            self._lr_cut = True  # History logs the rate in use from now on
            new_lr = event.learning_rate * self.lr_factor
            self._best_loss = None  # the loss starts again from the snapshot
            self._losses, self._loss_steps, self._batch_losses = [], [], []
            self._first_batch_losses = []
        moments = skipped = None
        if action in ("rollback", "skip") and self.reset_moments:
            moments = reset_moments(monitor)
        if action == "rollback" and self.skip_batches:
            skipped = self._skipper.start()  # filled as they pass
        if action != "warn":  # a warning changed nothing: the skips still count
            self.loss_scale.reset()
        if action in ("rollback", "skip"):
            model.reset_metrics()  # the bad batch's loss left the mean
        self._failed.add((self._epoch, batch))
        event = dataclasses.replace(
            event, detail=event.detail + used_up, action=action,
            restored_step=restored, new_learning_rate=new_lr,
            moments_reset=moments, skipped_batches=skipped,
            weights={"step": held, "restored": restored is not None,
                     "kept_last": not self.restore_weights and restored is None},
        )
        event = dataclasses.replace(event, message=format_message(event))
        self.events.append(event)
        self._write_report()
        if self.verbose:
            print("\n" + event.message)  # on its own lines, never after Keras' progress bar
        if action == "stop":
            model.stop_training = True
        elif action == "raise":
            end_fit(monitor)  # on_train_end will not run
            self._tap.remove()
            raise NonFiniteTrainingError(event.message, event)

    def _replay_in_float32(self, event):
        """`loss_scale` where float32 removes a non-finite loss the data did not hold.

        Under a float16 policy, an event named `bad_data` (or left unknown)
        from a non-finite value, on a batch with no NaN/inf in it, is
        replayed as one forward pass of that batch on a float32 copy from
        the same weights (`float32_replay.py`): a finite loss there is a
        float16 overflow, not bad data.
        """
        if (event.cause not in ("bad_data", "unknown") or not event.trigger.startswith("nonfinite")
                or not self._tap.batches or not computes_in_float16(self.model)):
            return event
        loss = self._float32_loss()
        if loss is None:
            return event
        if not judge_float32(float("nan"), loss):
            return dataclasses.replace(event, evidence=(
                f"{event.evidence}; in float32 the same batch's loss is {loss:.3g} too"))
        return dataclasses.replace(
            event, cause="loss_scale", method="replay",
            evidence=(f"the batch holds no NaN/inf and its loss is non-finite under the "
                      f"float16 policy, {loss:.4g} in float32 from the same weights: "
                      "float16 overflows"),
            cure=FLOAT16_CURE)

    def _float32_loss(self) -> float | None:
        """The failing batch's loss on a float32 copy from the current weights.

        `None` where there is no batch, it holds NaN/inf (bad data, whatever
        the precision), the model computes in float32 already, or it can
        neither be copied (`float32_replay.float32_copy`) nor run in float32
        itself (`float32_replay.loss_in_float32`: a single compiled loss).
        """
        if not self._tap.batches or not computes_in_float16(self.model):
            return None
        try:
            data = batch_arrays(self._tap.batches[-1])
            if nonfinite_rows(keras.tree.flatten(data)):
                return None
            copy = float32_copy(self.model)
            if copy is None:  # not clonable: the model itself, in float32 for one call
                return loss_in_float32(self.model, data)
            return batch_loss(copy, data)
        except Exception:  # noqa: BLE001  (an experiment, never a crash)
            return None

    def _bad_row_digests(self) -> list:
        """Fingerprints of the non-finite rows of the batch the guard holds (`bad_rows.py`)."""
        batches = self._tap.batches
        if not batches:
            return []
        try:
            return nonfinite_rows(keras.tree.flatten(batch_arrays(batches[-1])))
        except Exception:  # noqa: BLE001  (a batch we cannot read: counted as new)
            return []

    def _replay(self, event, record, monitor):
        """The event with the cause the replays name (`replay.py`), if they name one.

        From the weights before the failing update: the model's own where
        the monitor held that update back, else the newest snapshot from
        before the event's step (the failing step is replayed from there
        with the failing batch). No batch, no such state, or a model that cannot
        be copied: the rules' event, unchanged.
        """
        batches = list(self._tap.batches)
        # (A collapse took many steps: one step's replay says nothing of it.)
        if not batches or event.trigger in ("loss_scale", "stalled", "held_spike", "collapsed",
                                             "off_scale_targets", "off_scale_inputs"):
            return event
        row = record.steps == event.step
        status = int(record.status[row][-1]) if row.any() else None
        held_back = status in (NONFINITE, SKIPPED_SPIKE) or (
            status is None and event.trigger == "nonfinite_loss")
        if held_back and all_finite(self.model.get_weights()):
            near = (event.step - 1, [to_numpy(v) for v in self.model.weights],
                    [to_numpy(v) for v in optimizer_state(monitor)])
        else:
            near = self._snapshots.newest_before(event.step)  # the failing step's, replayed
            if near is None:
                return event
        far = self._snapshots.newest_before(event.onset_step)
        if not self._replayer.prepare(self.model, innermost_optimizer(monitor)):
            return event
        self.replays_run += 1
        try:
            data = batch_arrays(batches[-1])
            recent = [batch_arrays(b) for b in batches[:-1]]
            replays = self._replayer.run(near, far, data, recent, event.learning_rate)
        except Exception as error:  # noqa: BLE001  (an experiment, never a crash)
            self._replayer.error = f"{type(error).__name__}: {error}"[:200]
            return event
        structural = event.cause if event.cause in ("depth", "recurrence") else None
        verdict = judge_replays(replays, near[0], structural,
                                None if far is None else far[0])
        runs = tuple(dataclasses.asdict(r) for r in replays.values())
        if verdict.cause is None:
            return dataclasses.replace(
                event, replays=runs, evidence=f"{event.evidence}; {verdict.evidence}")
        where = f"epoch {event.epoch}, batch {event.batch} (0-based)"
        return dataclasses.replace(
            event, cause=verdict.cause, method="replay", replays=runs,
            evidence=verdict.evidence,
            cure=cure_for(verdict.cause, event.learning_rate, where, event.cure),
            onset_step=event.step if verdict.cause == "bad_data" else event.onset_step,
        )
