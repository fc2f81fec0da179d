"""What `NaNGuard` holds for one `fit`: set at its start, read by its rules.

`FitState.begin_fit_state` resets it at every `on_train_begin` (an instance
can be reused across `fit` calls): the counters of events, retries and bad
batches, the losses the loss rules read, the fit's first snapshot and the
evidence measured on it, and the batch tap the replay draws batches from.
"""

from __future__ import annotations

from .attach import find_monitor
from .bad_rows import BadRows
from .batch_tap import BatchTap
from .guard_actions import BatchSkipper
from .model_evidence import initial_gains, weights_norm
from .optimizer_chain import clip_settings
from .replay import Replayer
from .snapshots import Snapshots, default_cadence

REPLAY_BATCHES = 4  # recent batches the guard keeps references to (`BatchTap`)


class FitState:
    """The per-fit state of `NaNGuard` (a mixin)."""

    def begin_fit_state(self, model, monitor, params: dict) -> None:
        """Resets the state for a `fit` that starts now, with `monitor` attached."""
        self.retries = self.bad_batches = 0
        self._lr_cut = False  # a rollback cut the rate in this fit
        self._epoch = 0
        self._columns = None
        self._failed = set()  # (epoch, batch) of the events handled so far
        self._every = self.snapshot_every or default_cadence(params.get("steps"))
        # The running median reads the monitor's ring, which lives with the
        # model: it carries over from earlier fit calls.
        self._catch_up(monitor)
        self._step = monitor.last_step
        self._start_step = self._step
        self._input_columns = None
        self._first_loss = self._best_loss = None
        self._losses, self._loss_steps, self._stall_judged = [], [], 0
        self._batch_losses, self._running = [], (-1, 0.0)
        self._last_batch = -1
        self._no_loss_warned = False  # `loss_watch.py`: once a fit
        self._first_batch_losses = []  # the fit's first 2 * STALL_STEPS (`windows_flat`)
        self.loss_scale.begin(model.optimizer, self._step)
        self._snapshots = Snapshots(self.keep_snapshots)
        self._take_snapshot()
        # The weights as this fit found them, not as a divergence left them:
        # the gains and the norm are measured on the first copy when a rule
        # needs them (`start_evidence`), not on every fit.
        first = self._snapshots.first
        self._start_values = (None if first is None else
                              dict(zip(map(id, model.weights), first[1])))
        self._start_evidence = None if first is not None else (
            *initial_gains(model), weights_norm(model))  # built at its first batch
        self._skipper = BatchSkipper(self.skip_batches)
        self._consecutive_bad, self._last_bad_step = 0, None
        self._bad_rows, self._bad_skip_epoch = BadRows(), None  # `bad_rows.py`
        self._early_judged = self._held_warned = False
        self._target_rms, self._target_checks = None, 0  # `target_scale.py`
        self._input_rms = None  # the first batch's float inputs (`input_scale_of`)
        self._held_since = self._step
        self._probed_at = None  # the step of the fit's last collapse probe (`collapse.py`)
        self._high_run = 0  # batch losses in a row above `collapse.RISE` x the best
        self._clipping = bool(clip_settings(monitor)) or getattr(
            monitor, "autoclip_percentile", None) is not None
        self._epoch_sum, self._epoch_count = 0.0, 0  # a per-batch loss's running mean
        self._tap = BatchTap(REPLAY_BATCHES)
        self._tapped = self.replay and self._tap.install(model)
        self._replayer = Replayer()

    @property
    def start_evidence(self) -> tuple[list[float], float | None, float]:
        """`(gains, recurrent gain, weights' norm)` of the weights the fit began with.

        Measured once, from the fit's first snapshot (`model_evidence`).
        """
        if self._start_evidence is None:
            values, model = self._start_values, self.model
            self._start_evidence = (*initial_gains(model, values), weights_norm(model, values))
            self._start_values = None
        return self._start_evidence

    def _catch_up(self, monitor):
        """Marks every row written so far as seen; returns the monitor's tally."""
        tally = monitor.tally()
        self._last_index, self._alarms = tally.count, tally.alarms
        return tally

    def _take_snapshot(self):
        monitor = find_monitor(self.model.optimizer)
        self._snapshots.take(self.model, monitor, self._step)
        self._snapshot_step = self._step
