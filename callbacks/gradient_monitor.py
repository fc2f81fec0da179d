"""`GradientMonitor`: an optimizer wrapper that records what callbacks can't see."""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from . import distributed, norms
from .host_read import to_int, to_numpy
from .monitor_clipping import MonitorClipping
from .gradient_record import (
    APPLIED, CLIPPED_SPIKE, DISCARDED, NONFINITE, SKIPPED_SPIKE, GradientRecord,
)
from .ring import (
    FIXED, NORM, NORM_CLIPPED, TALLY_ALARMS, TALLY_COUNT, TALLY_SIZE, TALLY_STEP, decode,
    mark_rows, newest_row, running_median, write_row,
)
from .optimizer_chain import (
    accumulation_steps, clip_settings, innermost_optimizer, loss_scaler, step_counter,
)
from .step_decision import SpikeGate, decide_step
from .validation import check, check_int, is_int, is_number

# Under mixed_float16, compile() wraps GradientMonitor(LossScaleOptimizer(...))
# in a second LossScaleOptimizer: the loss is scaled twice and the norms the
# monitor reports are divided by the scale once too often.
DOUBLE_LOSS_SCALE = (
    "{}, where model.compile() wraps the optimizer in a second "
    "LossScaleOptimizer: the loss would be scaled twice and the gradient "
    "norms reported divided by the loss scale (e.g. 0.0002 instead of 5.5). "
    "Pass the plain optimizer, GradientMonitor(keras.optimizers.Adam(...)), "
    "and let Keras add the LossScaleOptimizer around it; or compile with the "
    "plain optimizer and let a gradguard callback install the monitor."
)


class SpikeSetting(NamedTuple):
    """NaNGuard's spike gate as set on the monitor (`set_spike_gate`)."""

    factor: float  # 0: off
    window: int
    min_history: int
    clip: float  # 1: clip a spike to the median, 0: skip it


_SPIKE_OFF = SpikeSetting(0.0, 2, 1, 0.0)


class Tally(NamedTuple):
    """What `GradientMonitor.tally()` reads: see there."""

    count: int
    alarms: int
    step: int


def _constant(value):
    """An initializer that fills a variable with `value`."""
    return lambda shape, dtype: ops.full(shape, value, dtype)


def _check_one_mode(mode, percentile, keras_clip, other=None) -> None:
    """Refuses a second clipping mode next to AGC or ZClip."""
    if mode is None:
        return
    taken = [f"autoclip_percentile={percentile}" if percentile is not None else None,
             str(keras_clip) if keras_clip else None,
             "the other of AGC and ZClip" if other is not None else None]
    taken = [t for t in taken if t]
    if taken:
        raise ValueError(
            f"GradientMonitor cannot clip with {mode}: it already clips with "
            f"{taken[0]}; use one clipping mode only."
        )


def _check_window(window, history: int) -> None:
    check(
        is_int(window) and 1 <= window <= history, "GradientMonitor",
        "autoclip_history", window, f"an int in [1, history={history}]",
    )


@keras.saving.register_keras_serializable(package="gradguard")
class GradientMonitor(keras.optimizers.Optimizer):
    """Wraps an optimizer to record gradient norms and skip non-finite steps.

    Keras callbacks never see gradients. `GradientMonitor` sits where
    `LossScaleOptimizer` sits, between the train step and the optimizer, and on
    each step records in its own variables (so it works inside a compiled
    `tf.function`, under XLA and under JAX's `jit`):

    - the global gradient norm before clipping and after the clipping that the
      inner optimizer's `clipnorm` / `clipvalue` / `global_clipnorm` (or the
      monitor's adaptive threshold) will apply,
    - one norm per trainable variable,
    - the index of the first variable whose gradient holds NaN or inf,
    - whether every weight is finite after the step,
    - the step number: the inner optimizer's `iterations` after the step.

    A ring buffer keeps the last `history` steps, so a callback that reads
    every 50 steps, or runs once per `steps_per_execution` steps, loses
    nothing. When a gradient is non-finite the update is skipped: weights and
    optimizer state stay as they were, except `iterations`, which counts
    every training step so that step numbers never repeat (with a
    `LossScaleOptimizer` inside, the loss scaler skips the step and lowers
    its scale, as it always does).

    **Invisible in checkpoints.** The monitor saves and loads exactly the
    inner optimizer's variables, in the inner optimizer's layout: a
    `model.save`, `ModelCheckpoint` or `BackupAndRestore` file written with a
    monitor in place is the file plain Keras writes for the inner optimizer,
    and loads without gradguard. The ring buffer is training telemetry and is
    not saved.

    **Lives with the model.** The gradguard callbacks install a monitor the
    first time they meet a model and leave it in place (like a
    `LossScaleOptimizer`), so later `fit` calls reuse the compiled train
    function. `remove_monitor(model)` takes it out again. What callbacks
    switch per `fit` (AutoClip's percentile, NaNGuard's spike gate and lr
    multiplier, AGC, ZClip) are named variables (`gg_spike_factor`, ...)
    that only the monitor's setters write and the compiled step reads. A
    feature's code enters the step the first time it is switched on (the
    callback rebuilds the train function once); until then the step holds
    none of its ops. `step_decision.decide_step` decides every step.

    **Data parallel.** Under `tf.distribute.MirroredStrategy` and
    `MultiWorkerMirroredStrategy` the monitor all-reduces the gradients
    itself and measures, clips and skips once on the global gradient (see
    `distributed.py`); under JAX's `DataParallel` the step is one `jit` over
    the global batch already.

    **Sparse gradients.** Under TensorFlow an `Embedding`'s gradient is a
    `tf.IndexedSlices` whose indices repeat once per occurrence of a token.
    The monitor sums repeated rows first (`norms.combine_duplicates`), so
    norms, clipping (its own and the inner optimizer's), skipping and the
    spike gate all see the densified gradient, and the update is the same.

    **Gradient accumulation.** With `gradient_accumulation_steps=n` on the
    inner optimizer the ring holds one row per micro-batch (one per training
    step that callbacks see), numbered by micro-batch: `norm` is that
    micro-batch's gradient norm. Keras applies the average of n micro-batch
    gradients every n-th step and clips that average with `clipnorm` /
    `clipvalue` / `global_clipnorm`, which the row's `norm_clipped` does not
    show (it shows only the monitor's own clipping: AutoClip and the spike
    gate, which act on each micro-batch before it is accumulated). A skipped
    micro-batch adds nothing to the average; updates still fall on every
    n-th step.

    **Steps stay global.** The recorded step is the inner optimizer's step
    count plus `step_offset`, which a callback sets when it meets a model
    recompiled with a new optimizer (see `attach.py`), so step numbers go on
    from the last one instead of starting at 1 again. `last_step` reads it.

    Under the `mixed_float16` policy, compile with `GradientMonitor(optimizer)`
    (Keras then wraps it: `LossScaleOptimizer(GradientMonitor(optimizer))`) or
    let a callback wrap the compiled `LossScaleOptimizer`; do not compile with
    `GradientMonitor(LossScaleOptimizer(...))`, which Keras would wrap in a
    second loss scaler (the constructor raises a `ValueError` when the
    global policy is `mixed_float16`, and the callbacks raise one before
    training when they find two loss scalers).

    Args:
        optimizer: the `keras.optimizers.Optimizer` that does the update. A
            `LossScaleOptimizer` is fine; norms are reported unscaled.
        history: int, number of steps kept in the ring buffer. Defaults to
            1024.
        autoclip_percentile: float in (0, 100] or `None`. When set, the global
            gradient norm is clipped to this percentile of the norms seen over
            the last `autoclip_history` steps (AutoClip). Defaults to `None`.
        autoclip_history: int, the window for `autoclip_percentile`, at most
            `history`. Defaults to `history`.
        skip_nonfinite: bool, skip updates whose gradient holds NaN or inf.
            Defaults to `True`. The skip is a `cond` around the update (as
            in `LossScaleOptimizer`), which on a small model costs more
            than the norms (a 42-variable MLP: x1.30 of plain Adam with it,
            x1.02 without). `GradientNormLogger` installs its monitor
            without it (a logger changes nothing in training: plain Keras
            applies a NaN update too); `NaNGuard` and the clipping
            callbacks turn it on.
        check_weights: bool, also record whether all weights are finite after
            each update (one more pass over the weights; `NaNGuard` turns it
            on). Defaults to `False`.
        agc: float > 0 or `None`. When set, adaptive gradient clipping
            (AGC, Brock et al. 2021): each output unit's gradient is clipped
            to `agc` times its weight norm (see `adaptive_clipping.py`).
            Defaults to `None`.
        agc_eps: float >= 0, AGC's floor on the weight norm. Defaults to 1e-3.
        zclip: float > 0 or `None`. When set, ZClip: the global norm is
            clipped when its z-score against an EMA of past norms exceeds
            `zclip`. Defaults to `None` (2.5 is the paper's choice).
        zclip_alpha: float in [0, 1), ZClip's EMA factor. Defaults to 0.97.
        zclip_warmup: int >= 1, steps before ZClip clips. Defaults to 25.
        name: optional name.

    Example:

    ```python
    model.compile(optimizer=GradientMonitor(keras.optimizers.Adam(1e-3)),
                  loss="mse")
    model.fit(x, y, callbacks=[GradientNormLogger()])
    ```

    References:
        Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent
        neural networks", ICML 2013.
        Seetharaman et al., "AutoClip: Adaptive Gradient Clipping for Source
        Separation Networks", MLSP 2020.
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        history: int = 1024,
        autoclip_percentile: float | None = None,
        autoclip_history: int | None = None,
        skip_nonfinite: bool = True,
        check_weights: bool = False,
        agc: float | None = None,
        agc_eps: float = 1e-3,
        zclip: float | None = None,
        zclip_alpha: float = 0.97,
        zclip_warmup: int = 25,
        name: str | None = None,
        **kwargs,
    ):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "GradientMonitor received optimizer="
                f"{optimizer!r}; expected a keras.optimizers.Optimizer "
                "instance, e.g. keras.optimizers.Adam(1e-3)."
            )
        if isinstance(optimizer, GradientMonitor):
            raise ValueError(
                "GradientMonitor received an optimizer that is already a "
                "GradientMonitor; wrap the optimizer only once."
            )
        if (loss_scaler(optimizer) is not None
                and keras.config.dtype_policy().name == "mixed_float16"):
            raise ValueError(DOUBLE_LOSS_SCALE.format(
                "GradientMonitor received optimizer=LossScaleOptimizer("
                f"{type(innermost_optimizer(optimizer)).__name__}) under the "
                "'mixed_float16' dtype policy"
            ))
        check_int("GradientMonitor", "history", history, 2)
        if autoclip_history is None:
            autoclip_history = history
        _check_window(autoclip_history, history)
        self._check_autoclip(autoclip_percentile, optimizer)
        # AGC and ZClip: their settings and ZClip's statistics (telemetry,
        # not saved), in variables that `adaptive` creates and writes.
        adaptive = MonitorClipping(agc, agc_eps, zclip, zclip_alpha, zclip_warmup)
        _check_one_mode(adaptive.mode, autoclip_percentile, clip_settings(optimizer))
        for key in kwargs:
            raise ValueError(
                f"GradientMonitor does not support `{key}`; set it on the "
                "inner optimizer."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.history = int(history)
        self.autoclip_percentile = autoclip_percentile
        self.autoclip_history = int(autoclip_history)
        # AutoClip's code is compiled into the step once it is first asked
        # for; after that it is switched by a variable, with no retrace.
        self.autoclip_compiled = autoclip_percentile is not None
        self.adaptive = adaptive
        # What `fit` calls go back to (see `begin_fit`).
        self._base_autoclip = (autoclip_percentile, self.autoclip_history)
        self._fit_params = None
        self.skip_nonfinite = bool(skip_nonfinite)
        self.check_weights = bool(check_weights)
        self.variable_paths: tuple = ()
        # The spike gate and the learning-rate multiplier (NaNGuard's): code
        # compiled in once asked for, then switched by their variables.
        self.spike_compiled = False
        self.lr_scale_compiled = False
        self.spike_setting = _SPIKE_OFF
        self.lr_multiplier = 1.0
        # Added to the inner optimizer's step count in the ring, so that a
        # model recompiled with a new optimizer goes on counting (attach.py).
        self.step_offset = 0
        # The newest `read()`, for the next reader of the same step. A
        # plain holder: attributes set on an optimizer go through Keras'
        # and TensorFlow's tracking (~0.1 ms a set, on every batch).
        self._read_cache = _ReadCache()

    def __dir__(self):
        # Keras' saving walks `dir()` for child objects to save. The inner
        # optimizer's state is saved as the monitor's own (see
        # `save_own_variables`), so that the file has plain Keras' layout;
        # it must not be saved a second time as a child.
        return [name for name in super().__dir__() if name != "inner_optimizer"]

    @staticmethod
    def _check_autoclip(percentile, optimizer):
        if percentile is None:
            return
        check(
            is_number(percentile) and 0 < percentile <= 100,
            "GradientMonitor", "autoclip_percentile", percentile,
            "a number in (0, 100] or None",
        )
        clip = clip_settings(optimizer)
        if clip:
            raise ValueError(
                "GradientMonitor received autoclip_percentile="
                f"{percentile!r} but the optimizer already clips with "
                f"{clip}; use one clipping mode only."
            )

    def set_autoclip(
        self, percentile: float | None, window: int | None = None
    ) -> bool:
        """Turns adaptive clipping on (or off with `None`).

        Takes effect at the next step without retracing once AutoClip's code
        is in the compiled step; the first time it is turned on the train
        function must be rebuilt.

        Returns:
            True when the caller must rebuild the train function.
        """
        self._check_autoclip(percentile, self.inner_optimizer)
        if percentile is not None:
            _check_one_mode(self.adaptive.mode, percentile, {})
        window = self.history if window is None else window
        _check_window(window, self.history)
        self.autoclip_percentile = percentile
        self.autoclip_history = int(window)
        self._assign_settings()
        if percentile is not None and not self.autoclip_compiled:
            self.autoclip_compiled = True
            return True
        return False

    def set_agc(self, clipping: float | None, eps: float = 1e-3) -> bool:
        """Turns AGC on with ratio `clipping` (or off with `None`).

        Returns:
            True when the caller must rebuild the train function (the first
            time it is turned on).
        """
        if clipping is not None:
            _check_one_mode(f"AGC(clipping={clipping})", self.autoclip_percentile,
                            clip_settings(self.inner_optimizer), self.adaptive.zclip)
        return self.adaptive.set_agc(clipping, eps)

    def set_zclip(
        self, z_threshold: float | None, alpha: float = 0.97, warmup_steps: int = 25
    ) -> bool:
        """Turns ZClip on (or off with `z_threshold=None`).

        Its statistics carry over from earlier fits while they are on
        (`adaptive.reset_statistics()` forgets them).

        Returns:
            True when the caller must rebuild the train function.
        """
        if z_threshold is not None:
            _check_one_mode(f"ZClip(z_threshold={z_threshold})", self.autoclip_percentile,
                            clip_settings(self.inner_optimizer), self.adaptive.agc)
        return self.adaptive.set_zclip(z_threshold, alpha, warmup_steps)

    def set_spike_gate(
        self, factor: float | None, window: int = 50, min_history: int = 5,
        mode: str = "skip",
    ) -> bool:
        """Turns the spike gate on (or off with `factor=None`).

        A step whose global norm (before clipping) exceeds `factor` times the
        median of the finite, applied norms among the last `window` steps (at
        least `min_history` of them) is a spike. It is decided inside the
        compiled step, before the update: `mode="skip"` leaves the weights
        and optimizer state as they were (only `iterations` advances);
        `mode="clip"` applies it with its global norm scaled down to that
        running median. The ring records it (`GradientRecord.status`).

        Returns:
            True when the caller must rebuild the train function (the first
            time the gate is turned on).
        """
        self.spike_setting = SpikeSetting(
            0.0 if factor is None else float(factor), int(window),
            int(min_history), 1.0 if mode == "clip" else 0.0,
        )
        self._assign_settings()
        if factor is not None and not self.spike_compiled:
            self.spike_compiled = True
            return True
        return False

    def set_lr_multiplier(self, multiplier: float) -> bool:
        """Scales every update by `multiplier` (the learning rate in use).

        The update is the inner optimizer's times `multiplier`, which equals
        training with `learning_rate * multiplier` for every Keras optimizer
        (their updates are linear in the learning rate). Schedules,
        `LearningRateScheduler` and `ReduceLROnPlateau` set the inner
        learning rate and cannot undo it. It lives with the monitor; a saved
        model stores the rate in use (`save_own_variables`);
        `set_lr_multiplier(1.0)` ends it.

        Returns:
            True when the caller must rebuild the train function.
        """
        self.lr_multiplier = float(multiplier)
        self._assign_settings()
        if multiplier != 1.0:
            return self.compile_lr_multiplier()
        return False

    def compile_lr_multiplier(self) -> bool:
        """Compiles the learning-rate multiplier into the step now, at 1.0.

        NaNGuard calls it before a `fit` whose rollbacks may cut the rate,
        so that the cut needs no retrace mid-fit.

        Returns:
            True when the caller must rebuild the train function.
        """
        if self.lr_scale_compiled:
            return False
        self.lr_scale_compiled = True
        return True

    def _settings(self) -> dict:
        """The per-fit settings the compiled step reads, by variable name."""
        spike = self.spike_setting
        return {
            "autoclip_percentile": self.autoclip_percentile or 0.0,  # 0: off
            "autoclip_window": self.autoclip_history,
            "spike_factor": spike.factor,  # 0: off
            "spike_window": spike.window,
            "spike_min_history": spike.min_history,
            "spike_clip": spike.clip,
            "lr_multiplier": self.lr_multiplier,
        }

    def _assign_settings(self):
        if self.built:
            for name, value in self._settings().items():
                getattr(self, f"_{name}").assign(np.float32(value))

    # -- per fit -----------------------------------------------------------

    def begin_fit(self, params: dict) -> None:
        """Starts a `fit` call: per-fit settings go back to the monitor's own.

        Every gradguard callback calls this in `on_train_begin` with its
        `self.params` (one dict shared by all callbacks of a `fit` call), so
        the first one of each `fit` resets what an earlier `fit` switched on
        and could not switch off (an exception skips `on_train_end`).
        """
        if self._fit_params is params:
            return
        # Set past Keras' attribute tracking, which would store a copy of the dict.
        object.__setattr__(self, "_fit_params", params)
        self.end_fit()

    def end_fit(self) -> None:
        """Ends a `fit` call: per-fit settings (AutoClip, AGC, ZClip, spike gate) go back."""
        if (self.autoclip_percentile, self.autoclip_history) != self._base_autoclip:
            self.set_autoclip(*self._base_autoclip)
        adaptive = self.adaptive
        if adaptive.config() != adaptive.base:
            self.set_agc(None)
            self.set_zclip(None)
            base = adaptive.base
            self.set_agc(base["agc"], base["agc_eps"])
            self.set_zclip(base["zclip"], base["zclip_alpha"], base["zclip_warmup"])
        if self.spike_setting.factor:  # NaNGuard's spike gate is per fit too
            self.set_spike_gate(None)

    def require_skip(self) -> bool:
        """Turns the non-finite skip on; True when the step must be retraced."""
        if self.skip_nonfinite:
            return False
        self.skip_nonfinite = True
        return True

    def require_weight_check(self) -> bool:
        """Turns the weight check on; True when the step must be retraced."""
        if self.check_weights:
            return False
        self.check_weights = True
        return True

    def continue_steps_from(self, last_step: int) -> bool:
        """Numbers this monitor's next step `last_step + 1` (after a recompile).

        Returns:
            True when the step offset changed (the step must be retraced).
        """
        counter = step_counter(self.inner_optimizer)
        offset = max(0, int(last_step) - to_int(counter))
        changed = offset != self.step_offset
        self.step_offset = offset
        return changed

    def with_history(self, history: int) -> GradientMonitor:
        """A new monitor around the same optimizer, with a longer ring and these settings."""
        monitor = GradientMonitor(
            self.inner_optimizer,
            history=history,
            autoclip_percentile=self.autoclip_percentile,
            autoclip_history=self.autoclip_history,
            skip_nonfinite=self.skip_nonfinite,
            check_weights=self.check_weights,
            **self.adaptive.base,
        )
        monitor.adaptive.copy_settings(self.adaptive)
        return monitor

    def mark_discarded(self, first_step: int, last_step: int) -> None:
        """Marks the ring rows of steps a rollback undid (`DISCARDED`).

        They leave the spike gate's running median.
        """
        ring = to_numpy(self._ring)
        if mark_rows(ring, first_step, last_step, DISCARDED):
            self._ring.assign(ring)
            self._read_cache.record = None

    @property
    def loss_scaled(self) -> bool:
        """True when a LossScaleOptimizer inside handles non-finite steps."""
        return loss_scaler(self.inner_optimizer) is not None

    def build(self, var_list):
        n_vars = len(var_list)
        # One row per step, so that a step is one write and a read is one
        # transfer (see FIXED), then one norm per variable.
        self._count = self.add_variable(
            shape=(), initializer="zeros", dtype="int32",
            aggregation="only_first_replica", name="gg_count",
        )
        self._ring = self.add_variable(
            shape=(self.history, FIXED + max(n_vars, 1)), initializer="zeros",
            dtype="float32", aggregation="only_first_replica", name="gg_ring",
        )
        # Count, alarms and step of the newest row (`ring.TALLY_COUNT` ...):
        # one small read tells a callback whether a step needs a look.
        self._tally = self.add_variable(
            shape=(TALLY_SIZE,), initializer="zeros", dtype="int32",
            aggregation="only_first_replica", name="gg_tally",
        )
        # One named scalar per setting (`_autoclip_percentile`,
        # `_spike_factor`, `_lr_multiplier`, ...), written only by the
        # setters above through `_assign_settings`.
        for name, value in self._settings().items():
            setattr(self, f"_{name}", self.add_variable(
                shape=(), initializer=_constant(value), dtype="float32",
                aggregation="only_first_replica", name=f"gg_{name}",
            ))
        self.adaptive.build(self)
        self.variable_paths = tuple(v.path for v in var_list)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        # The ring buffer is telemetry, not optimizer state. JAX's stateless
        # step can only update what is listed here, so there it is listed;
        # under TensorFlow and torch the list is the inner optimizer's, so
        # that a LossScaleOptimizer around the monitor, `get_state_tree()`
        # and checkpoints all see the plain optimizer.
        if keras.backend.backend() == "jax":
            return self._variables + self.inner_optimizer.variables
        return self.inner_optimizer.variables

    # -- checkpoints: the inner optimizer's layout --------------------------

    def save_own_variables(self, store):
        """Saves the inner optimizer's variables, as plain Keras would.

        With a learning-rate multiplier in force (NaNGuard's rollback cut),
        the learning rate stored is the one in use, `learning_rate *
        lr_multiplier`, so a `.keras` file loads with it. A
        `LearningRateSchedule` is no variable: its file keeps the schedule.
        """
        rate = getattr(self.inner_optimizer, "_learning_rate", None)
        if self.lr_multiplier != 1.0 and isinstance(rate, keras.Variable):
            index = [v is rate for v in self.inner_optimizer.variables].index(True)
            in_use = np.asarray(rate.numpy() * self.lr_multiplier, rate.dtype)
            store = _Replacing(store, str(index), in_use)
        self.inner_optimizer.save_own_variables(store)

    def load_own_variables(self, store):
        """Loads the inner optimizer's variables from a plain Keras file."""
        self.inner_optimizer.load_own_variables(store)

    # -- the recorded step -------------------------------------------------

    def _loss_scale(self):
        scaler = loss_scaler(self.inner_optimizer)
        return None if scaler is None else scaler.dynamic_scale.value

    def measure(self, grads, trainable_variables, weights=None):
        """This step's norms, clipping and decision, inside the compiled step.

        `weights`: the weight values (JAX's stateless step passes them);
        `None` reads the variables.

        Returns:
            `(decision, grads, row)`: the `StepDecision`, the gradients to
            apply (clipped) and what `record` writes to the ring.
        """
        n_vars = len(self.variable_paths)
        # An IndexedSlices may repeat an index: sum those rows first, so that
        # norms, clipping (ours and Keras') and the update all see the
        # densified gradient.
        grads = [norms.combine_duplicates(g) for g in grads]
        columns = [self._get_variable_index(v) for v in trainable_variables]
        squares = norms.squared_norms(grads)
        # Place them by variable index, zeros for variables without grads.
        by_column = [ops.zeros((), "float32")] * max(n_vars, 1)
        for column, n in zip(columns, squares):
            by_column[column] = n
        # One fused pass: the squared norms are the terms of the global norm.
        squares = ops.stack(by_column)
        norm_vector = ops.sqrt(squares)
        norm = ops.sqrt(ops.sum(squares))
        scale = self._loss_scale()
        if scale is not None:
            norm_vector = norm_vector / ops.cast(scale, "float32")
            norm = norm / ops.cast(scale, "float32")
        # A NaN/inf gradient has a NaN/inf norm, and so has the global norm
        # (a sum of squares). A finite gradient whose norm overflows float32
        # (> 3e38) is no better: Keras' global_clipnorm would turn it into
        # NaN. Either way, skip (`decide_step`). The ring's per-variable
        # norms show which variable it was (`ring.first_nonfinite`).

        if self.autoclip_compiled:
            # The current norm takes part in its own threshold, as in the
            # AutoClip reference implementation.
            count = self._count.value
            ring = ops.slice_update(
                self._ring.value[:, NORM], [ops.mod(count, self.history)],
                ops.reshape(norm, (1,)),
            )
            percentile = self._autoclip_percentile.value
            threshold = norms.ring_percentile(
                ring, count + 1, ops.cast(self._autoclip_window.value, "int32"),
                percentile,
            )
            threshold = ops.where(percentile > 0, threshold, float("inf"))
            # The factor threshold / norm is the same for loss-scaled grads.
            grads = norms.scale_by_threshold(grads, norm, threshold)
            norm_clipped = ops.minimum(norm, threshold)
        else:
            threshold = ops.convert_to_tensor(float("inf"), "float32")
            settings = clip_settings(self.inner_optimizer)
            if accumulation_steps(self.inner_optimizer):
                # Keras clips the averaged update, at every n-th micro-batch,
                # not this micro-batch's gradient: nothing to report here.
                settings = {}
            unscaled = grads
            if scale is not None and settings.get("clipvalue"):
                unscaled = [
                    norms.map_values(g, lambda v: v / ops.cast(scale, v.dtype))
                    for g in grads
                ]
            norm_clipped = norms.clipped_global_norm(
                unscaled, norm_vector, norm, **settings
            )
        if self.adaptive.agc_compiled or self.adaptive.zclip_compiled:
            if weights is None:
                weights = [v.value for v in trainable_variables]
            ok = ops.isfinite(norm)
            grads, norm_clipped, threshold = self.adaptive.clip(
                grads, weights, ok, norm, norm_clipped, threshold, scale
            )
        gate = None
        if self.spike_compiled:
            median, n = running_median(self._ring, self._count,
                                       self._spike_window.value)
            gate = SpikeGate(self._spike_factor.value, median, n,
                             self._spike_min_history.value, self._spike_clip.value)
        decision = decide_step(
            norm, skip_nonfinite=self.skip_nonfinite,
            loss_scaled=self.loss_scaled, gate=gate, norm_clipped=norm_clipped,
        )
        if gate is not None:  # a clipped spike goes down to the median
            grads = norms.scale_by_threshold(grads, norm, decision.limit)
            norm_clipped = ops.minimum(norm_clipped, decision.limit)
        row = {"norm": norm, "norm_clipped": norm_clipped, "threshold": threshold,
               "status": decision.status,
               "variable_norms": norm_vector}
        return decision, grads, row

    def scaled_update(self, update, variables) -> None:
        """Runs `update()` with its change to `variables` times the lr multiplier."""
        if not self.lr_scale_compiled:
            update()
            return
        before = [ops.copy(v.value) for v in variables]
        update()
        multiplier = self._lr_multiplier.value
        for v, old in zip(variables, before):
            v.assign(old + ops.cast(multiplier, v.dtype) * (v.value - old))

    def _weights_flag(self, weights):
        """1.0 if all weights are finite, 0.0 if not, -1.0 when unchecked."""
        if not self.check_weights or not weights:
            return ops.convert_to_tensor(-1.0, "float32")
        # A sum is NaN/inf when any element is (or when finite weights
        # overflow float32 in total, which is no healthier).
        total = ops.sum(ops.stack([ops.sum(ops.cast(w, "float32")) for w in weights]))
        return ops.cast(ops.isfinite(total), "float32")

    def record(self, row: dict, weights, step) -> None:
        """Writes this step's row to the ring.

        `step`: the step's number as the step counter reads after the
        update; `weights`: the weights after the update (read only under
        `check_weights`).
        """
        if self.step_offset:  # after a recompile (attach.py)
            step = step + self.step_offset
        write_row(self._ring, self._count, weights_finite=self._weights_flag(weights),
                  step=step, tally=self._tally, **row)

    def count_skipped(self, trainable_variables) -> None:
        """Counts a skipped step (its number is not reused).

        Under `gradient_accumulation_steps` a skipped micro-batch counts as
        a zero gradient, so that updates still fall on every n-th step.
        """
        updater = innermost_optimizer(self.inner_optimizer)
        if accumulation_steps(updater):
            updater.apply(
                [ops.zeros(v.shape, v.dtype) for v in trainable_variables],
                trainable_variables,
            )
        else:
            step_counter(updater).assign_add(1)

    @property
    def last_step(self) -> int:
        """The global step of the newest training step (0 before the first).

        The inner optimizer's step count (`iterations`, or every micro-batch
        under `gradient_accumulation_steps`) plus `step_offset`: the number
        the ring records, which goes on across recompiles (see `attach.py`).
        """
        counter = step_counter(self.inner_optimizer)
        return to_int(counter) + self.step_offset

    # -- stateful (TensorFlow, torch) --------------------------------------

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(list(trainable_variables))
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        context = distributed.replica_context()
        if context is not None:
            distributed.apply(self, context, list(grads), trainable_variables)
            return
        decision, grads, row = self.measure(list(grads), trainable_variables)
        inner = self.inner_optimizer

        def count_skipped():
            self.count_skipped(trainable_variables)

        def update():
            self.scaled_update(
                lambda: inner.apply(grads, trainable_variables),
                trainable_variables,
            )

        counter = step_counter(inner)
        record_first = not self.check_weights
        if record_first:
            # The row needs nothing from the update: whichever branch runs
            # (applied, skipped, skipped by the loss scaler), the step
            # counter goes up by exactly one. Written first, the row no
            # longer waits for the update in a TensorFlow graph (reading the
            # step counter after the update made it wait): on the LSTM the
            # monitor's extra time went from 1.16 to 0.52 ms a step
            # (docs/performance.md).
            self.record(row, trainable_variables, counter.value + 1)
        if decision.update is None:
            update()
        else:
            ops.cond(decision.update, update, count_skipped)
        if decision.count_skip is not None:
            ops.cond(decision.count_skip, count_skipped, lambda: None)
        if not record_first:  # the weights flag reads the updated weights
            self.record(row, trainable_variables, counter.value)

    # -- stateless (JAX) ---------------------------------------------------

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, GradientMonitor must be built: "
                "call `optimizer.build(trainable_variables)` first."
            )
        # A LossScaleOptimizer around the monitor passes its inner
        # optimizer's variables themselves, mapped in its StatelessScope.
        optimizer_variables = [
            v.value if isinstance(v, keras.Variable) else v
            for v in optimizer_variables
        ]
        n_own = len(self._variables)
        own, inner_values = optimizer_variables[:n_own], optimizer_variables[n_own:]
        mapping = list(zip(self._variables, own))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            decision, grads, row = self.measure(
                list(grads), self._trainable_variables, list(trainable_variables)
            )
        # What `measure` wrote (ZClip's statistics) goes on to the write.
        mapping = [(v, scope.get_current_value(v)) for v in self._variables]
        inner = self.inner_optimizer
        counter = step_counter(inner)
        it = next(i for i, v in enumerate(inner.variables) if v is counter)

        def update_with(grads):
            new_tv, new_inner = inner.stateless_apply(
                inner_values, grads, trainable_variables
            )
            if self.lr_scale_compiled:
                with keras.StatelessScope(state_mapping=mapping):
                    multiplier = self._lr_multiplier.value
                new_tv = [
                    old + ops.cast(multiplier, old.dtype) * (new - old)
                    for old, new in zip(trainable_variables, new_tv)
                ]
            return list(new_tv), list(new_inner)

        def update():
            return update_with(grads)

        def skip():
            if accumulation_steps(inner):  # a zero micro-batch gradient
                return update_with([ops.zeros_like(v) for v in trainable_variables])
            new_inner = list(inner_values)
            new_inner[it] = new_inner[it] + 1
            return list(trainable_variables), new_inner

        if decision.update is None:
            new_tv, new_inner = update()
        else:
            new_tv, new_inner = ops.cond(decision.update, update, skip)
        if decision.count_skip is not None:  # the loss scaler's skip, uncounted
            new_inner[it] = new_inner[it] + ops.cast(
                decision.count_skip, new_inner[it].dtype
            )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.record(row, new_tv, new_inner[it])
        new_own = [scope.get_current_value(v) for v in self._variables]
        return new_tv, new_own + list(new_inner)

    # -- reading -----------------------------------------------------------

    def read(self) -> GradientRecord:
        """Copies the ring buffer to numpy, oldest step first.

        Under JAX, call it on `callback.model.optimizer` (which syncs the
        training state), not on a reference kept from before `fit`. Before
        the first step (and for a model without trainable weights, whose
        optimizer Keras never calls) the record is empty.
        """
        if not self.built:  # no step yet (or a model with no trainable weights)
            return decode(np.zeros((1, FIXED), "float32"), 0, ())
        # Two reads by the cheapest path (`host_read.py`).
        count = to_int(self._count)
        cached = self._read_cache.record
        if cached is not None and cached.count == count:
            return cached  # several callbacks read the same step
        record = decode(to_numpy(self._ring), count, self.variable_paths)
        self._read_cache.record = record
        return record

    def tally(self) -> Tally:
        """Rows written, alarms among them and the newest row's step: one small read.

        An alarm is a row whose status is not `APPLIED` (a non-finite or
        spiking gradient the monitor skipped or clipped) or whose weights
        were not finite after the update: the rows `diagnosis.find_event`
        looks at. While `alarms` stays the same, new rows hold no event
        and need not be read. Zeros before the first step.
        """
        if not self.built:
            return Tally(0, 0, 0)
        tally = to_numpy(self._tally)
        # The row's step: with step_offset already.
        return Tally(int(tally[TALLY_COUNT]), int(tally[TALLY_ALARMS]), int(tally[TALLY_STEP]))

    def newest_norms(self) -> tuple:
        """The newest step's global norm before and after clipping, as tensors.

        For the compiled step itself (after `apply` wrote its row); on
        the host, `read()` gives every row. See `step_logs.py`.
        """
        row = newest_row(self._ring, self._count)
        return row[NORM], row[NORM_CLIPPED]

    # -- forwarding --------------------------------------------------------

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "history": self.history,
            "autoclip_percentile": self.autoclip_percentile,
            "autoclip_history": self.autoclip_history,
            "skip_nonfinite": self.skip_nonfinite,
            "check_weights": self.check_weights,
            **self.adaptive.base,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)


class _ReadCache:
    """Holds the monitor's newest `read()` (`record`, or `None`)."""

    __slots__ = ("record",)

    def __init__(self):
        self.record = None


class _Replacing:
    """A checkpoint store that writes `value` in place of entry `key`."""

    def __init__(self, store, key: str, value):
        self._store, self._key, self._value = store, key, value

    def __setitem__(self, key, value):
        self._store[key] = self._value if key == self._key else value
