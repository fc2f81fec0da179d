"""`NaNGuard`: catch NaN/Inf and gradient explosions before they ruin weights."""

from __future__ import annotations

import os

import keras

from .attach import begin_fit, ensure_monitor, find_monitor, rebuild_train_function
from .collapse import CollapseWatch
from .diagnosis import NaNEvent, find_event
from .event_response import EventResponse
from .fit_state import FitState
from .guard_arguments import check_arguments
from .guard_policy import choose_action, must_restore, weights_held  # noqa: F401 (public here)
from .loss_scale_watch import MAX_SKIPS, MIN_SCALE, LossScaleWatch, describe_skips
from .loss_watch import LossWatch
from .model_evidence import to_float
from .nan_report import (  # noqa: F401 (NonFiniteTrainingError: imported from here too)
    NonFiniteTrainingError, check_report_path, closing_line, free_report_path,
    write_json_atomically,
)
from .optimizer_chain import innermost_optimizer
from .replay import Replayer


class NaNGuard(FitState, LossWatch, CollapseWatch, EventResponse, keras.callbacks.Callback):
    """Stops, raises or rolls back when gradients turn non-finite or explode.

    `TerminateOnNaN` looks at the running loss after the weights are ruined.
    `NaNGuard` works through the `GradientMonitor` (installed on
    `on_train_begin` if absent), which decides inside the compiled step,
    before the update:

    1. a non-finite gradient: the update is skipped;
    2. a gradient spike, a global norm above `spike_factor` times the running
       median of the last `window` applied steps (and, where 20 or more of
       those norms range over more than 10x, as per-example steps at batch
       size 1 do while a net learns, `spike_factor` times the largest of
       them): the
       update is skipped (`spike_action="skip"`) or applied with its norm
       clipped to that median (`"clip"`);

    and fires on those, on non-finite weights after an update, on a
    non-finite loss, and on batch losses `LOSS_GROWTH` (1e3) times above
    the best running loss for 3 steps in a row while the gradient norms are flat, or a batch loss (undone
    from Keras' running mean) `LOSS_RISE` (10) times its early level (its
    first, or the median of the first 8 if lower) for 3 steps in a row (a divergence that stays finite, as Adam's at a
    rate far too high), and on a model with a structural sign (an ungated
    recurrent gain, a gains product or an input scale far from 1) whose loss has not
    fallen below `STALL_LOSS` (0.9) x its first in `STALL_STEPS` (8) steps,
    or whose first gradient norm is `SENSITIVITY` (100) x the square root
    of its first loss, or (a one-output classifier under cross-entropy)
    whose running loss at step 8 is still `CHANCE_FACTOR` (5) x a chance
    guess's (ln C) without having halved, or whose mean batch loss over steps 9-16 has not
    fallen below 0.9x that of steps 1-8, in a fit that starts at step 0 (`stalled`: broken from step 1 but
    finite; recorded with action `"warn"` and training goes on). While the
    spike gate has fewer than `min_history` norms it is blind: there the
    evidence is absolute, against the fit's first step (`early_blowup`: a
    raw norm 100x the first, or a batch loss 10x with the norm 10x;
    `blowup_rules.py`). A spike the user's clip held (raw norm 100x its
    median) is a warning with the raw figure (`held_spike`, once a fit).
    Float targets far from unit scale (root mean square above 1e3, with a
    first batch loss above 1e2 in size) are a warning at a fit's first
    step, cause `target_scale` (`off_scale_targets`, `target_scale.py`;
    with no `y`, the targets are the inputs only a loss reads,
    `loss_only_inputs.py`);
    so are a few float input columns far off the rest's scale where a
    forward pass from the start weights shows it in the loss, cause
    `input_scale` (`off_scale_inputs`, `off_scale_inputs.py`). A net whose
    outputs stopped depending on the inputs (one output for every sample of
    a batch whose targets vary, where a snapshot of the fit gave them
    varied outputs), probed at each epoch's end and while the batch loss
    stays 1.5x above its best, is `collapsed` (`collapse.py`).
    The loss rules are off with `spike_factor=None`; a fit whose logs hold
    no `loss` (a `train_step` that returns none) cannot run them, and gets
    one warning saying so.
    Each event is a frozen `NaNEvent` (`nan_event.py`; read as attributes or
    as a mapping, `event["cause"]`) that names a **cause** (`learning_rate`,
    `input_scale`, `target_scale`, `depth`, `recurrence`, `bad_data`,
    `loss_scale`, `transient_spike` or `unknown`), by experiment where it
    can (`replay.py`: the failing step replayed on a copy with another
    batch, standardized inputs, scaled targets, the rate x0.1) and by rules
    otherwise (`cause_rules.name_cause`; `event.method` says which),
    the evidence and a cure, the variables whose norms crossed 10x their own
    running medians first, and which weights the model holds afterwards.

    **Transient spikes do not stop training.** A spike with no growth before
    it and no other spike among the last `window` steps is a
    `transient_spike`: the gate skipped (or clipped) it, the event records
    it with that action, and training goes on, whatever `action`. So does a
    spike from a batch that spiked in an earlier epoch too (`bad_data`, an
    outlier). `action` applies to non-finite values, repeated spikes and
    sustained growth.

    Actions: `"stop"` ends training, `"raise"` raises
    `NonFiniteTrainingError`. Both leave the last good weights: those before
    the bad step (which the monitor skipped), or, when the norms had been
    growing before it or the weights overflowed, the newest snapshot from
    before the onset (`restore_weights=False` keeps the last finite ones).
    `"rollback"` restores that snapshot, multiplies the learning rate by
    `lr_factor` and goes on, at most `max_retries` times, then stops. The
    cut sets the optimizer's own rate, so `model.optimizer.learning_rate`
    reads it (`ReduceLROnPlateau` goes on from it; a
    `LearningRateScheduler` that returns a fixed rate per epoch replaces it
    at its next epoch, as it replaces any rate set by hand). A
    `LearningRateSchedule` cannot be set: there the cut multiplies every
    update inside the monitor, the schedule's later values cannot undo it,
    and the event says so. Restoring a snapshot never restores a learning
    rate; events report the rate in use, and after a cut History logs it
    under `"learning_rate"` (and `guard.learning_rate` reads it).
    **Bad data** is not divergence: by default (`skip_bad_data=True`) a
    step named `bad_data` is skipped and training goes on, whatever
    `action`, with no restore, no cut and no retry used, until more than
    `max_bad_batches` in all or `max_consecutive_bad_batches` in a row
    (then the guard stops and the event says which cap). It is decided by
    replaying the failing step from the same weights on another recent
    batch (it trains: a bad batch, not a bad state), or, without the batch,
    from the rules: its loss or gradient turned non-finite while the
    weights were finite and nothing grew before it (under `mixed_float16`,
    where the loss scaler skips that step, from its non-finite loss).

    **Mixed precision.** Keras' `LossScaleOptimizer` skips a step whose
    float16 gradients overflow without calling the monitor inside it. The
    guard records such skips (`guard.loss_scale.to_dataframe()`, never as a
    norm) and fires, cause `loss_scale`, on `max_loss_scale_skips` in a row
    once the scale has settled or on a scale below `min_loss_scale` (see
    `LossScaleWatch`); `stop`/`rollback` go back to the snapshot before the
    last applied step, with the loss scale it had. A non-finite loss on a
    batch with no NaN/inf in it is replayed in float32 (one forward pass on
    a float32 copy, `float32_replay.py`): finite there, the cause is
    `loss_scale` (float16 overflows), not `bad_data`.

    Numbering: `step` is the global step (the optimizer's iterations after
    it: 1 for the first step, continuing across epochs and `fit` calls);
    `epoch` and `batch` are 0-based, as Keras passes them to callbacks and
    as `GradientNormLogger.to_dataframe()` holds them, in messages too
    (with `steps_per_execution > 1`, the event's own batch, not the last
    of its execution).

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
        max_bad_batches: int >= 0, bad-data steps skipped before
            stopping. A batch whose non-finite rows were all in an earlier
            bad batch (the same rows, reshuffled into another batch: the
            same bad data, `bad_rows.py`) is skipped and not counted again;
            the event says so. Defaults to 10.
        max_loss_scale_skips: int >= 1, under `mixed_float16`: consecutive
            steps the loss scaler skips, once its scale has settled, that
            make a `loss_scale` event. Defaults to 3.
        min_loss_scale: float > 0, under `mixed_float16`: a skip that leaves
            the loss scale below this makes a `loss_scale` event. Defaults
            to 1.0.
        restore_weights: bool, on stop/raise return to the last good
            weights. Defaults to `True`.
        report_path: path of a JSON report (written atomically; an
            existing file is kept and the report goes to the first free
            `name-N.json`, see `overwrite`; `guard.report_file` says where),
            or `None`. Defaults to `None`.
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
        skip_bad_data: bool, a step named `bad_data` is skipped and training
            goes on, whatever `action` (as `LossScaleOptimizer` and optax's
            `apply_if_finite` skip a non-finite step); never a rollback or
            a learning-rate cut. `False`: bad data gets `action` (except a
            rollback). Defaults to `True`.
        max_consecutive_bad_batches: int >= 1, bad-data steps in a row
            skipped before the guard stops (with `max_bad_batches` in all;
            the event states the cap). Defaults to 3.
        loss_is: `"running"` (Keras' running mean of the epoch, as `fit`
            logs it), `"batch"` (each batch's own loss, as a custom loop
            passes it) or `"auto"`: `"batch"` when the callbacks got no
            `epochs` param (a `CallbackList([...], model=model)`), else
            `"running"`. Defaults to `"auto"`.
        replay: bool, name the cause by experiment when an event fires:
            replay the failing step on a copy of the model with one thing
            changed (`replay.py`; the event's `method` says `"replay"` or
            `"rules"`). Under `fit` the guard keeps references to the last
            4 batches (`batch_tap.py`); a custom loop hands them over with
            `observe_batch`. Nothing is replayed while nothing fires.
            Defaults to `True`.
        overwrite: bool, write the report over an existing `report_path`;
            `False` writes a numbered sibling (`nan_report-1.json`) instead.
            Defaults to `False`.

    Example:

    ```python
    guard = NaNGuard(action="rollback", report_path="nan_report.json")
    model.fit(x, y, callbacks=[guard])
    guard.events[0].cause, guard.events[0].cure  # or events[0]["cause"]
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
        skip_bad_data: bool = True,
        max_consecutive_bad_batches: int = 3,
        loss_is: str = "auto",
        replay: bool = True,
        overwrite: bool = False,
    ):
        super().__init__()
        check_arguments(
            action=action, spike_action=spike_action, spike_factor=spike_factor,
            window=window, min_history=min_history, lr_factor=lr_factor,
            max_retries=max_retries, max_bad_batches=max_bad_batches,
            max_loss_scale_skips=max_loss_scale_skips, min_loss_scale=min_loss_scale,
            report_path=report_path, snapshot_every=snapshot_every,
            keep_snapshots=keep_snapshots, skip_batches=skip_batches,
            max_consecutive_bad_batches=max_consecutive_bad_batches, loss_is=loss_is)
        self.skip_bad_data = bool(skip_bad_data)
        self.max_consecutive_bad_batches = max_consecutive_bad_batches
        self.loss_is, self.replay, self.overwrite = loss_is, bool(replay), bool(overwrite)
        self.reset_moments, self.skip_batches = bool(reset_moments), skip_batches
        self.action, self.spike_action = action, spike_action
        self.spike_factor = spike_factor
        self.window, self.min_history = window, min_history
        self.lr_factor = float(lr_factor)
        self.loss_scale = LossScaleWatch(max_loss_scale_skips, min_loss_scale)
        self.max_retries, self.max_bad_batches = max_retries, max_bad_batches
        self.restore_weights = bool(restore_weights)
        self.snapshot_every, self.keep_snapshots = snapshot_every, keep_snapshots
        self.report_path = None if report_path is None else os.fspath(report_path)
        self.verbose = verbose
        self._written = False
        self.report_file = None  # where the report goes (`free_report_path`)
        self.replays_run = 0  # events diagnosed by replay (none while nothing fires)
        self.events: list[NaNEvent] = []

    # -- Keras hooks -------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.report_path is not None and not self._written:
            self.report_file = free_report_path(self.report_path, self.overwrite)
            check_report_path(self.report_file, owner=self, overwrite=self.overwrite)
        model = self.model
        monitor = ensure_monitor(
            model, "NaNGuard", self.window + 1, check_weights=True
        )
        # A custom loop's `CallbackList([...], model=model)` passes no params:
        # a dict of this fit's own (a new one, so the monitor's per-fit reset runs).
        params = self.params if self.params else {}
        self._per_batch_loss = self.loss_is == "batch" or (
            self.loss_is == "auto" and "epochs" not in params)
        begin_fit(monitor, params)
        rebuild = monitor.set_spike_gate(
            self.spike_factor, self.window, self.min_history, self.spike_action
        )
        if self.action == "rollback" and self.lr_factor < 1 and not isinstance(
                getattr(innermost_optimizer(monitor), "_learning_rate", None), keras.Variable):
            # A schedule's cut is a multiplier in the step: compiled now, not mid-fit.
            rebuild |= monitor.compile_lr_multiplier()
        if rebuild:
            rebuild_train_function(model)
        self.begin_fit_state(model, monitor, params)

    def observe_batch(self, x, y=None, sample_weight=None) -> None:
        """Hands the guard the batch about to be trained on (custom loops).

        `fit` needs no call: the guard draws the batch from Keras' own
        iterator (`batch_tap.py`). A custom training loop calls this before
        `callbacks.on_train_batch_end`, so an event can be replayed
        (`replay.py`); without it, the rules decide.
        """
        if self.replay:
            self._tap.add((x, y, sample_weight))
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
        self._running = (-1, 0.0)  # (batch, running loss) last seen this epoch
        self._last_batch = -1  # the epoch's last batch seen, with a loss or not
        self._epoch_sum, self._epoch_count = 0.0, 0

    def on_epoch_end(self, epoch, logs=None):
        monitor = find_monitor(self.model.optimizer)
        self._watch_collapse_at_epoch_end(monitor)  # outputs that stopped varying
        # After a rollback's cut the rate in use goes into History (and
        # TensorBoard) under Keras' own key.
        if logs is not None and monitor is not None and (
                self._lr_cut or monitor.lr_multiplier != 1.0):
            logs["learning_rate"] = self.learning_rate

    @property
    def learning_rate(self) -> float | None:
        """The learning rate in use: the optimizer's times a rollback's cut."""
        monitor = None if self.model is None else find_monitor(self.model.optimizer)
        if monitor is None:
            return None
        return to_float(monitor.learning_rate) * monitor.lr_multiplier

    def on_train_end(self, logs=None):
        self._snapshots.clear()  # host copies of the weights
        self._start_values = None
        self._tap.remove()
        self._tap.batches.clear()
        self._replayer = Replayer()  # the copy's memory goes back
        line = closing_line(self.events, self.max_retries)
        if self.verbose and line:
            print(line)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._last_batch = int(batch)
        model = self.model  # syncs the JAX state
        monitor = find_monitor(model.optimizer)
        if self._skipper.after_batch(model, monitor, self._epoch, int(batch)):
            self._catch_up(monitor)  # its update is undone
            self._step = monitor.last_step
            if not self._skipper.left:
                self._write_report()  # with the batches skipped
            return
        # One small read (`GradientMonitor.tally`): the rows written, the
        # alarms among them and the newest row's step. The ring itself is
        # read only when a new row holds an alarm, or a rule needs it.
        last_index, alarms = self._last_index, self._alarms
        tally = self._catch_up(monitor)
        if tally.count > last_index:
            self._step = iterations = tally.step  # the monitor's last_step
        else:  # no row: a LossScaleOptimizer around the monitor skipped
            iterations = monitor.last_step
        found = None
        if tally.alarms != alarms:
            record = monitor.read()
            found = find_event(record, record.since(last_index), self.window,
                               monitor.loss_scaled)
        scale = self.loss_scale.update(self._epoch, int(batch), iterations)
        if found is None and scale is not None:
            found = {"trigger": "loss_scale", "step": self._step,
                     "detail": describe_skips(scale)}
        if found is None:
            found = self._watch_loss(logs.get("loss"), monitor.read, int(batch))
        if found is None and self._clipping and not self._held_warned:
            found = self._watch_held_spike(monitor.read())
        if found is None:
            # No copy yet: a model built at its first batch had no weights to
            # copy at on_train_begin; its first copy is the first finite step's.
            if self._step - self._snapshot_step >= self._every or not len(self._snapshots):
                self._take_snapshot()
            return
        # With steps_per_execution > 1 this call comes once per execution,
        # with its last batch: the event's own batch is earlier by the steps
        # that ran after it.
        found["batch"] = max(int(batch) - max(iterations - found["step"], 0), 0)
        self._handle(found, monitor.read(), scale)

    # -- actions -----------------------------------------------------------

    def _write_report(self):
        if self.report_path is None:
            return
        write_json_atomically(self.report_file,
                              {"events": [e.to_dict() for e in self.events]})
        self._written = True


