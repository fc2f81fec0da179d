"""`NaNGuard`: catch NaN/Inf and gradient explosions before they ruin weights."""

from __future__ import annotations

import collections
import math
import os
import weakref

import keras
import numpy as np

from .attach import begin_fit, end_fit, ensure_monitor, find_monitor
from .diagnosis import rank_suspects
from .layer_names import layer_of_paths
from .nan_report import format_message, write_json_atomically
from .validation import check, check_int, check_writable_folder, is_number

ACTIONS = ("stop", "raise", "rollback")
ONSET_FACTOR = 10.0  # a norm this far above its running median has left it


class NonFiniteTrainingError(FloatingPointError):
    """Raised by `NaNGuard(action="raise")`; `.report` holds the diagnosis."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class NaNGuard(keras.callbacks.Callback):
    """Stops, raises or rolls back when gradients turn non-finite or explode.

    `TerminateOnNaN` looks at the running loss after the weights are already
    ruined. `NaNGuard` reads the `GradientMonitor` (installed on
    `on_train_begin` if absent), which skips any update whose gradient holds
    NaN or inf, so the weights stay finite. It fires on, in this order:

    1. a non-finite gradient (caught before the update);
    2. non-finite weights after an update (a finite gradient times a huge
       learning rate);
    3. a gradient spike: a global norm above `spike_factor` times its running
       median over the last `window` steps; still finite, but the sign of an
       explosion long before NaN;
    4. a non-finite loss.

    The message and the JSON report name the trigger, step, epoch, batch, the
    first variable with a non-finite gradient, the variables whose norms grew
    most relative to their own running medians in the steps before (at the
    NaN step the per-layer norms often blame the wrong layer), the last
    finite global norm and the learning rate.

    Actions: `"stop"` ends training gracefully, `"raise"` raises
    `NonFiniteTrainingError` (a `FloatingPointError`), `"rollback"` restores
    the last finite weights and optimizer state from before the trigger,
    multiplies the learning rate by `lr_factor` and goes on, at most
    `max_retries` times, then stops. After any action the weights are finite.

    Args:
        action: `"stop"`, `"raise"` or `"rollback"`. Defaults to `"stop"`.
        spike_factor: float > 1 or `None` (no spike detection). Defaults to
            50.0.
        window: int >= 2, steps in the running median. Defaults to 50.
        min_history: int >= 1, steps needed before spikes are detected.
            Defaults to 5.
        lr_factor: float in (0, 1], learning-rate factor on rollback.
            Defaults to 0.5.
        max_retries: int >= 0, rollbacks before stopping. Defaults to 3.
        report_path: path of a JSON report (written atomically; must not
            exist yet), or `None`. Defaults to `None`.
        snapshot_every: int >= 1, steps between copies of the weights and
            optimizer state (to host memory) that a rollback, or a stop after
            non-finite weights, returns to. Copying costs about as much as a
            small model's step, hence not every step. Defaults to 50.
        keep_snapshots: int >= 1, how many copies are kept. A rollback returns
            to the newest one from before the suspects' norms first rose 10x
            above their running medians. Defaults to 4.
        verbose: print a message on each event. Defaults to `True`.

    Example:

    ```python
    guard = NaNGuard(action="rollback", report_path="nan_report.json")
    model.fit(x, y, callbacks=[guard])
    guard.events  # what happened
    ```
    """

    def __init__(
        self,
        action: str = "stop",
        *,
        spike_factor: float | None = 50.0,
        window: int = 50,
        min_history: int = 5,
        lr_factor: float = 0.5,
        max_retries: int = 3,
        report_path: str | os.PathLike | None = None,
        snapshot_every: int = 50,
        keep_snapshots: int = 4,
        verbose: bool = True,
    ):
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(
                f"NaNGuard received action={action!r}; expected one of "
                f"{', '.join(repr(a) for a in ACTIONS)}."
            )
        check(
            spike_factor is None or (is_number(spike_factor) and spike_factor > 1),
            "NaNGuard", "spike_factor", spike_factor,
            "a number > 1, or None to turn spike detection off",
        )
        for name, value, low in [
            ("window", window, 2), ("min_history", min_history, 1),
            ("max_retries", max_retries, 0),
            ("snapshot_every", snapshot_every, 1),
            ("keep_snapshots", keep_snapshots, 1),
        ]:
            check_int("NaNGuard", name, value, low)
        check(
            is_number(lr_factor) and 0 < lr_factor <= 1,
            "NaNGuard", "lr_factor", lr_factor, "a number in (0, 1]",
        )
        self.action = action
        self.spike_factor = spike_factor
        self.window = window
        self.min_history = min_history
        self.lr_factor = float(lr_factor)
        self.max_retries = max_retries
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self.report_path = None if report_path is None else os.fspath(report_path)
        self.verbose = verbose
        self._written = False
        self._model_ref = None
        self._discarded = []  # (first, last) step ranges undone by rollbacks
        self.events: list[dict] = []

    # -- Keras hooks -------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.report_path is not None and not self._written:
            if os.path.exists(self.report_path):
                raise ValueError(
                    f"NaNGuard received report_path={self.report_path!r}, "
                    "which already exists; pass a new path or move the old "
                    "report away."
                )
            check_writable_folder(
                self.report_path, "NaNGuard", "report_path",
                folder=os.path.dirname(os.path.abspath(self.report_path)),
            )
        model = self.model
        if self._model_ref is None or self._model_ref() is not model:
            self._discarded = []  # a new model: earlier rollbacks don't apply
            self._model_ref = weakref.ref(model)
        monitor = ensure_monitor(
            model, "NaNGuard", self.window + 1, check_weights=True
        )
        begin_fit(monitor, self.params)
        if self.action == "rollback" and self.lr_factor != 1 and not isinstance(
            monitor.learning_rate, keras.Variable
        ):
            raise ValueError(
                f"NaNGuard(action='rollback', lr_factor={self.lr_factor}) "
                "needs a settable learning rate, but the optimizer uses a "
                "LearningRateSchedule; pass lr_factor=1.0 or a float "
                "learning rate."
            )
        self.retries = 0
        self._epoch = 0
        self._columns = None
        # The running median reads the monitor's ring, which lives with the
        # model: it carries over from earlier fit calls.
        self._last_index = monitor.read().count if monitor.built else 0
        self._step = int(monitor.iterations.numpy())
        self._snapshots = collections.deque(maxlen=self.keep_snapshots)
        self._snapshot_step = self._step
        self._take_snapshot()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_end(self, logs=None):
        self._snapshots.clear()  # host copies of the weights

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        model = self.model  # syncs the JAX state
        monitor = find_monitor(model.optimizer)
        record = monitor.read()
        new = record.since(self._last_index)
        self._last_index = record.count
        if len(new.steps):
            self._step = int(new.steps[-1])
        event = self._detect(record, new, monitor.loss_scaled)
        if event is None:
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                step = self._step
                event = {"trigger": "nonfinite_loss", "step": step,
                         "detail": f"the running loss is {float(loss)}"}
        if event is None:
            if self._step - self._snapshot_step >= self.snapshot_every:
                self._take_snapshot()
            return
        self._handle(event, record, batch)

    # -- detection ---------------------------------------------------------

    def _detect(self, record, new, loss_scaled: bool) -> dict | None:
        kept = self._kept(record.steps)
        for i, step in enumerate(new.steps.tolist()):
            bad = int(new.first_nonfinite[i])
            if bad >= 0 and not loss_scaled:
                return {"trigger": "nonfinite_gradient", "step": step,
                        "detail": "a gradient holds NaN or inf; the update "
                                  "was skipped", "variable_index": bad}
            if not math.isfinite(float(new.norm[i])) and not loss_scaled:
                return {"trigger": "nonfinite_gradient", "step": step,
                        "detail": "the global gradient norm overflows to "
                                  f"{float(new.norm[i])}; the update was "
                                  "skipped"}
            if not new.weights_finite[i]:
                return {"trigger": "nonfinite_weights", "step": step,
                        "detail": "the weights hold NaN or inf after the "
                                  "update"}
            if self.spike_factor is None:
                continue
            earlier = record.norm[
                (record.steps < step) & kept
            ][-self.window:]
            earlier = earlier[np.isfinite(earlier)]
            norm = float(new.norm[i])
            if len(earlier) < self.min_history or not math.isfinite(norm):
                continue
            median = float(np.median(earlier))
            if median > 0 and norm > self.spike_factor * median:
                return {"trigger": "gradient_spike", "step": step,
                        "detail": f"global gradient norm {norm:.4g} is "
                                  f"{norm / median:.0f}x its running median "
                                  f"{median:.4g} over the last "
                                  f"{len(earlier)} steps"}
        return None

    # -- actions -----------------------------------------------------------

    def _handle(self, event, record, batch):
        model = self.model
        monitor = find_monitor(model.optimizer)
        if self._columns is None:
            self._layer_names, self._columns = layer_of_paths(
                model, record.variable_paths
            )
        layers = [self._layer_names[c] for c in self._columns]
        step = event["step"]
        index = event.pop("variable_index", None)
        before = record.steps <= step
        finite_norms = record.norm[before & np.isfinite(record.norm)]
        event.update({
            "epoch": self._epoch + 1,
            "batch": int(batch),
            "first_nonfinite_variable": None if index is None
            else record.variable_paths[index],
            "first_nonfinite_layer": None if index is None else layers[index],
            "suspects": rank_suspects(
                record.steps[before], record.variable_norms[before],
                record.variable_paths, layers, window=self.window,
                threshold=ONSET_FACTOR,
            ),
            "last_finite_norm": float(finite_norms[-1])
            if len(finite_norms) else None,
            "learning_rate": _to_float(monitor.learning_rate),
        })
        action = self.action
        if action == "rollback" and self.retries >= self.max_retries:
            action = "stop"
            event["detail"] += f"; {self.max_retries} rollbacks used up"
        onsets = [s["first_step"] for s in event["suspects"] if s["first_step"]]
        restored = self._restore(
            force=self.action == "rollback", before=min(onsets, default=step)
        )
        if restored is not None:
            self._discarded.append((restored + 1, self._step))
        if action == "rollback":
            self.retries += 1
            new_lr = event["learning_rate"] * self.lr_factor
            monitor.learning_rate = new_lr
            model.reset_metrics()  # the bad batch's loss left the mean
            event["new_learning_rate"] = new_lr
        event["action"] = action
        event["restored_step"] = restored
        event["message"] = format_message(event)
        self.events.append(event)
        self._write_report()
        if self.verbose:
            print(event["message"])
        if action == "stop":
            model.stop_training = True
        elif action == "raise":
            end_fit(monitor)  # on_train_end will not run
            raise NonFiniteTrainingError(event["message"], event)

    def _kept(self, steps: np.ndarray) -> np.ndarray:
        """False for steps whose updates a rollback undid."""
        keep = np.ones(len(steps), dtype=bool)
        for first, last in self._discarded:
            keep &= (steps < first) | (steps > last)
        return keep

    def _take_snapshot(self):
        weights = self.model.get_weights()
        if not _all_finite(weights):
            return
        state = [
            keras.ops.convert_to_numpy(v) for v in self._restorable_state()
        ]
        self._snapshots.append((self._step, weights, state))
        self._snapshot_step = self._step

    def _restorable_state(self) -> list:
        """The optimizer variables a rollback restores.

        All but the step counter (step numbers never repeat) and the learning
        rate (a rollback lowers it; restoring it would undo that).
        """
        monitor = find_monitor(self.model.optimizer)
        keep = (monitor.iterations, monitor.learning_rate)
        return [
            v for v in monitor.inner_optimizer.variables
            if not any(v is k for k in keep)
        ]

    def _restore(self, force: bool, before: int) -> int | None:
        """Restores a snapshot when forced or when weights are not finite.

        Picks the newest snapshot taken before step `before` (the weights
        after step `before - 1`), else the oldest one kept.
        """
        if (not force and _all_finite(self.model.get_weights())) or not self._snapshots:
            return None
        earlier = [s for s in self._snapshots if s[0] < before]
        step, weights, state = earlier[-1] if earlier else self._snapshots[0]
        while self._snapshots and self._snapshots[-1][0] > step:
            self._snapshots.pop()  # they lie on the path that went wrong
        self._snapshot_step = step
        self.model.set_weights(weights)
        for variable, value in zip(self._restorable_state(), state):
            variable.assign(value)
        return step

    def _write_report(self):
        if self.report_path is None:
            return
        write_json_atomically(self.report_path, {"events": self.events})
        self._written = True


def _all_finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")


def _to_float(value) -> float:
    return float(keras.ops.convert_to_numpy(value))
