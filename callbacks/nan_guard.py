"""`NaNGuard`: catch NaN/Inf and gradient explosions before they ruin weights."""

from __future__ import annotations

import math
import os

import keras

from .guard_actions import BatchSkipper, reset_moments
from .attach import begin_fit, end_fit, ensure_monitor, find_monitor, rebuild_train_function
from .layer_names import layer_of_paths
from .loss_scale_watch import MAX_SKIPS, MIN_SCALE, LossScaleWatch, describe_skips
from .nan_event import (
    choose_action, describe_event, detect_in_record, initial_gains, must_restore,
    to_float, weights_held,
)
from .nan_report import (  # NonFiniteTrainingError: imported from here too
    NonFiniteTrainingError, check_report_path, closing_line, format_message,
    write_json_atomically,
)
from .snapshots import Snapshots, all_finite, default_cadence
from .validation import check, check_int, is_number

ACTIONS = ("stop", "raise", "rollback")
SPIKE_ACTIONS = ("skip", "clip")


class NaNGuard(keras.callbacks.Callback):
    """Stops, raises or rolls back when gradients turn non-finite or explode.

    `TerminateOnNaN` looks at the running loss after the weights are ruined.
    `NaNGuard` works through the `GradientMonitor` (installed on
    `on_train_begin` if absent), which decides inside the compiled step,
    before the update:

    1. a non-finite gradient: the update is skipped;
    2. a gradient spike, a global norm above `spike_factor` times the running
       median of the last `window` applied steps: the update is skipped
       (`spike_action="skip"`) or applied with its norm clipped to that
       median (`"clip"`);

    and fires on those, on non-finite weights after an update, and on a
    non-finite loss. Each event names a **cause** (see `cause.name_cause`:
    `learning_rate`, `input_scale`, `depth`, `recurrence`, `bad_data`,
    `loss_scale` or `unknown`), the evidence and a cure, the variables whose
    norms crossed 10x their own running medians first, and which weights the
    model holds afterwards.

    Actions: `"stop"` ends training, `"raise"` raises
    `NonFiniteTrainingError`. Both leave the last good weights: those before
    the bad step (which the monitor skipped), or, when the norms had been
    growing before it or the weights overflowed, the newest snapshot from
    before the onset (`restore_weights=False` keeps the last finite ones).
    `"rollback"` restores that snapshot, multiplies the learning rate by
    `lr_factor` and goes on, at most `max_retries` times, then stops. The
    cut is a multiplier inside the monitor: `LearningRateScheduler`,
    `ReduceLROnPlateau` and `LearningRateSchedule`s set the optimizer's own
    rate and the cut applies on top; restoring a snapshot never restores a
    learning rate; events report the rate in use. **Bad data** is not
    divergence: with `"rollback"` a step named `bad_data` is skipped and
    training goes on, with no restore, no cut and no retry used (at most
    `max_bad_batches` of them).

    **Mixed precision.** Keras' `LossScaleOptimizer` skips a step whose
    float16 gradients overflow without calling the monitor inside it. The
    guard records such skips (`guard.loss_scale.to_dataframe()`, never as a
    norm) and fires, cause `loss_scale`, on `max_loss_scale_skips` in a row
    once the scale has settled or on a scale below `min_loss_scale` (see
    `LossScaleWatch`); `stop`/`rollback` go back to the snapshot before the
    last applied step, with the loss scale it had.

    Numbering: `step` is the global step (the optimizer's iterations after
    it: 1 for the first step, continuing across epochs and `fit` calls);
    `epoch` and `batch` are 0-based, as Keras passes them to callbacks and
    as `GradientNormLogger.to_dataframe()` holds them, in messages too.

    Args:
        action: `"stop"`, `"raise"` or `"rollback"`. Defaults to `"stop"`.
        spike_factor: float > 1 or `None` (no spike gate). Defaults to 50.0.
        spike_action: `"skip"` or `"clip"`, what the gate does with a spike.
            Defaults to `"skip"`.
        window: int >= 2, steps in the running median. Defaults to 50.
        min_history: int >= 1, applied steps needed before spikes are
            gated. Defaults to 5.
        lr_factor: float in (0, 1], learning-rate factor on rollback.
            Defaults to 0.5.
        max_retries: int >= 0, rollbacks before stopping. Defaults to 3.
        max_bad_batches: int >= 0, bad-data steps skipped (with
            `"rollback"`) before stopping. Defaults to 10.
        max_loss_scale_skips: int >= 1, under `mixed_float16`: consecutive
            steps the loss scaler skips, once its scale has settled, that
            make a `loss_scale` event. Defaults to 3.
        min_loss_scale: float > 0, under `mixed_float16`: a skip that leaves
            the loss scale below this makes a `loss_scale` event. Defaults
            to 1.0.
        restore_weights: bool, on stop/raise return to the last good
            weights. Defaults to `True`.
        report_path: path of a JSON report (written atomically; must not
            exist yet), or `None`. Defaults to `None`.
        snapshot_every: int >= 1 or `None`, steps between host copies of the
            weights and optimizer state. `None`: four per epoch, at most
            every 50 steps. Defaults to `None`.
        keep_snapshots: int >= 1, how many copies are kept. Defaults to 4.
        verbose: print a message on each event. Defaults to `True`.
        reset_moments: bool, whenever training goes on after an event (a
            rollback, or a skipped bad batch), set the optimizer's moment
            slots (Adam's momentum and velocity, RMSprop's velocity, ...)
            back to zero, as SPAM does (`guard_actions.reset_moments`; the
            event lists them under `"moments_reset"`). Defaults to `False`.
        skip_batches: int >= 0, with `action="rollback"`: after each
            rollback, the next `skip_batches` batches are consumed but not
            learned from (PaLM's recipe for loss spikes), instead of
            training on them; their update is undone and their indices are
            reported (`guard.skipped_batches`, and each event's
            `"skipped_batches"`). Defaults to 0.

    Example:

    ```python
    guard = NaNGuard(action="rollback", report_path="nan_report.json")
    model.fit(x, y, callbacks=[guard])
    guard.events[0]["cause"], guard.events[0]["cure"]
    ```
    """

    def __init__(
        self,
        action: str = "stop",
        *,
        spike_factor: float | None = 50.0,
        spike_action: str = "skip",
        window: int = 50,
        min_history: int = 5,
        lr_factor: float = 0.5,
        max_retries: int = 3,
        max_bad_batches: int = 10,
        max_loss_scale_skips: int = MAX_SKIPS,
        min_loss_scale: float = MIN_SCALE,
        restore_weights: bool = True,
        report_path: str | os.PathLike | None = None,
        snapshot_every: int | None = None,
        keep_snapshots: int = 4,
        verbose: bool = True,
        reset_moments: bool = False,
        skip_batches: int = 0,
    ):
        super().__init__()
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
        self.reset_moments, self.skip_batches = bool(reset_moments), skip_batches
        if snapshot_every is not None:
            check_int("NaNGuard", "snapshot_every", snapshot_every, 1)
        check(
            is_number(lr_factor) and 0 < lr_factor <= 1,
            "NaNGuard", "lr_factor", lr_factor, "a number in (0, 1]",
        )
        self.action, self.spike_action = action, spike_action
        self.spike_factor = spike_factor
        self.window, self.min_history = window, min_history
        check(
            is_number(min_loss_scale) and min_loss_scale > 0,
            "NaNGuard", "min_loss_scale", min_loss_scale, "a number > 0",
        )
        self.lr_factor = float(lr_factor)
        self.loss_scale = LossScaleWatch(max_loss_scale_skips, min_loss_scale)
        self.max_retries, self.max_bad_batches = max_retries, max_bad_batches
        self.restore_weights = bool(restore_weights)
        self.snapshot_every, self.keep_snapshots = snapshot_every, keep_snapshots
        self.report_path = None if report_path is None else os.fspath(report_path)
        self.verbose = verbose
        self._written = False
        self.events: list[dict] = []

    # -- Keras hooks -------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.report_path is not None and not self._written:
            check_report_path(self.report_path, owner=self)
        model = self.model
        monitor = ensure_monitor(
            model, "NaNGuard", self.window + 1, check_weights=True
        )
        begin_fit(monitor, self.params)
        rebuild = monitor.set_spike_gate(
            self.spike_factor, self.window, self.min_history, self.spike_action
        )
        if self.action == "rollback" and self.lr_factor < 1 and not monitor.lr_scale_compiled:
            monitor.lr_scale_compiled = True  # compiled now, not mid-fit
            rebuild = True
        if rebuild:
            rebuild_train_function(model)
        self.retries = self.bad_batches = 0
        self._epoch = 0
        self._columns = None
        self._failed = set()  # (epoch, batch) of the events handled so far
        self._every = self.snapshot_every or default_cadence(self.params.get("steps"))
        # The running median reads the monitor's ring, which lives with the
        # model: it carries over from earlier fit calls.
        self._last_index = monitor.read().count if monitor.built else 0
        self._step = monitor.last_step
        self._start_step = self._step
        # As this fit found them, not as a divergence left them.
        self._gains, self._recurrent_gain = initial_gains(model)
        self.loss_scale.begin(model.optimizer, self._step)
        self._snapshots = Snapshots(self.keep_snapshots)
        self._take_snapshot()
        self._skipper = BatchSkipper(self.skip_batches)

    @property
    def skipped_batches(self) -> list[dict]:
        """`{"epoch", "batch", "steps"}` of every batch skipped after a rollback."""
        skipper = getattr(self, "_skipper", None)
        return [] if skipper is None else list(skipper.skipped)

    def on_train_batch_begin(self, batch, logs=None):
        if self._skipper.left:
            self._skipper.before_batch(self.model, find_monitor(self.model.optimizer))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_end(self, logs=None):
        self._snapshots.clear()  # host copies of the weights
        line = closing_line(self.events, self.max_retries)
        if self.verbose and line:
            print(line)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        model = self.model  # syncs the JAX state
        monitor = find_monitor(model.optimizer)
        if self._skipper.after_batch(model, monitor, self._epoch, int(batch)):
            self._last_index = monitor.read().count  # its update is undone
            self._step = int(monitor.iterations.numpy())
            if not self._skipper.left:
                self._write_report()  # with the batches skipped
            return
        record = monitor.read()
        new = record.since(self._last_index)
        self._last_index = record.count
        if len(new.steps):
            self._step = int(new.steps[-1])
        event = detect_in_record(record, new, self.window, monitor.loss_scaled)
        found = self.loss_scale.update(self._epoch, int(batch),
                                        monitor.last_step)
        if event is None and found is not None:
            event = {"trigger": "loss_scale", "step": self._step,
                     "detail": describe_skips(found), "loss_scale": found}
        if event is None:
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                event = {"trigger": "nonfinite_loss", "step": self._step,
                         "detail": f"the running loss is {float(loss)}"}
        if event is None:
            if self._step - self._snapshot_step >= self._every:
                self._take_snapshot()
            return
        self._handle(event, record, int(batch))

    # -- actions -----------------------------------------------------------

    def _handle(self, event, record, batch):
        model = self.model
        monitor = find_monitor(model.optimizer)
        if self._columns is None:
            self._layer_names, self._columns = layer_of_paths(
                model, record.variable_paths
            )
        lr = to_float(monitor.learning_rate) * monitor.lr_multiplier
        describe_event(
            event, record, model=model,
            layers=[self._layer_names[c] for c in self._columns],
            window=self.window, min_history=self.min_history,
            start_step=self._start_step, learning_rate=lr,
            epoch=self._epoch, batch=batch,
            repeated=any(b == batch and e < self._epoch for e, b in self._failed),
            gains=self._gains, recurrent_gain=self._recurrent_gain,
            loss_scale=event.get("loss_scale"),
        )
        action = self.action
        if action == "rollback" and event["cause"] == "bad_data":
            self.bad_batches += 1
        action, used_up = choose_action(
            action, event["cause"], self.retries, self.max_retries,
            self.bad_batches, self.max_bad_batches,
        )
        event["detail"] += used_up
        weights_ok = all_finite(model.get_weights())
        restore = must_restore(event, weights_ok, action, self.restore_weights)
        restored = None
        if restore:
            restored = self._snapshots.restore(model, monitor, event["onset_step"])
        if restored is not None:
            monitor.mark_discarded(restored + 1, self._step)
            self._snapshot_step = self._step
            held = restored
            if event["trigger"] == "loss_scale":  # the scale those weights had
                self.loss_scale.restore_scale()
        else:
            held = weights_held(record, self._step, self._start_step)
        event["weights"] = {"step": held, "restored": restored is not None,
                            "kept_last": not self.restore_weights and restored is None}
        if action == "rollback":
            self.retries += 1
            monitor.set_lr_multiplier(monitor.lr_multiplier * self.lr_factor)
            event["new_learning_rate"] = event["learning_rate"] * self.lr_factor
        if action in ("rollback", "skip") and self.reset_moments:
            event["moments_reset"] = reset_moments(monitor)
        if action == "rollback" and self.skip_batches:
            event["skipped_batches"] = self._skipper.start()  # filled as they pass
        self.loss_scale.reset()
        if action in ("rollback", "skip"):
            model.reset_metrics()  # the bad batch's loss left the mean
        self._failed.add((self._epoch, batch))
        event["action"] = action
        event["restored_step"] = restored
        event["message"] = format_message(event)
        self.events.append(event)
        self._write_report()
        if self.verbose:  # on its own lines, never after Keras' progress bar
            print("\n" + event["message"])
        if action == "stop":
            model.stop_training = True
        elif action == "raise":
            end_fit(monitor)  # on_train_end will not run
            raise NonFiniteTrainingError(event["message"], event)

    def _take_snapshot(self):
        monitor = find_monitor(self.model.optimizer)
        self._snapshots.take(self.model, monitor, self._step)
        self._snapshot_step = self._step

    def _write_report(self):
        if self.report_path is None:
            return
        write_json_atomically(self.report_path, {"events": self.events})
        self._written = True

