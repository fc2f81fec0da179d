"""`GradientMonitor`: an optimizer wrapper that records what callbacks can't see.

This module holds the wrapper itself: its arguments, its variables and the
checkpoint layout it shares with the inner optimizer. Its parts, one file
each: `monitor_settings.py` (what a `fit` switches on, as variables),
`monitor_step.py` (the compiled step: measure, decide, update),
`monitor_record.py` (the ring row written each step and read back) and
`monitor_clipping.py` (AGC and ZClip).
"""

from __future__ import annotations

import keras
import numpy as np

from .monitor_clipping import MonitorClipping
from .monitor_record import MonitorRecord, _ReadCache
from .monitor_settings import (
    _SPIKE_OFF, MonitorSettings, SpikeSetting, _check_one_mode, _check_window, _constant,
)
from .monitor_step import MonitorStep
from .optimizer_chain import innermost_optimizer, clip_settings, loss_scaler
from .ring import FIXED, TALLY_SIZE
from .validation import check_int

__all__ = ["DOUBLE_LOSS_SCALE", "GradientMonitor", "SpikeSetting"]

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


@keras.saving.register_keras_serializable(package="gradguard")
class GradientMonitor(MonitorStep, MonitorSettings, MonitorRecord,
                      keras.optimizers.Optimizer):
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
    The monitor measures the densified gradient (repeated rows summed,
    `norms.combine_duplicates`), so norms, skipping and the spike gate see
    what the update adds; the inner optimizer gets the slices as Keras
    gives them (Adam and RMSprop update a repeated row once per
    occurrence), and its own clipping treats them as plain Keras does. The
    monitor's clipping scales them (AutoClip, ZClip, the spike gate) or,
    for AGC, densifies them. `GradientClipping` on an `Embedding` asks for
    the summed rows (`require_combined_sparse`) so that its bound holds
    for the update itself.

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
            Defaults to `True`. Under TensorFlow, on a model whose weights
            and optimizer state take at most 64 MiB and with no clip that
            scales every gradient by the global norm, the update runs at
            once and a skipped step puts the old state back
            (`monitor_step.update_then_undo`); otherwise the skip is a
            `cond` around the update (as in `LossScaleOptimizer`), which
            makes every update wait for the last gradient (the 42- and
            30-variable MLPs of `benchmarks.callback_overhead`, 7 Dec 2026:
            x1.65 and x1.48 of plain Adam with the `cond`, x1.27 and x1.17
            with the undo, x1.06 and x1.05 without a skip). `GradientNormLogger` installs its monitor
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
        # Sum an IndexedSlices' repeated rows before the update (only for
        # GradientClipping on an Embedding: `require_combined_sparse`).
        self.combine_sparse = False
        self.variable_paths: tuple = ()
        # The spike gate and the learning-rate multiplier (NaNGuard's): code
        # compiled in once asked for, then switched by their variables.
        self.spike_compiled = False
        self.spike_clip_compiled = False  # the gate's clip (mode="clip")
        # The largest state skipped by update-and-undo (None: the module's
        # `monitor_step.UNDO_MAX_BYTES`; 0: always the `cond`), read when
        # the step is traced.
        self.undo_max_bytes = None
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
        # What the variables hold, so that a setter writes only changes
        # (a plain dict, past Keras' attribute tracking).
        object.__setattr__(self, "_settings_written",
                           {k: np.float32(v) for k, v in self._settings().items()})
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
        found = self.rate_in_use()
        if found is not None:
            rate, in_use = found
            index = [v is rate for v in self.inner_optimizer.variables].index(True)
            store = _Replacing(store, str(index), in_use)
        self.inner_optimizer.save_own_variables(store)

    def rate_in_use(self):
        """`(variable, value)` when the rate in use differs from the inner optimizer's variable.

        That is with a learning-rate multiplier in force on a rate that is a
        variable; the value is `variable * lr_multiplier`. `None` otherwise
        (no multiplier, or a `LearningRateSchedule`: no variable to write).
        """
        rate = getattr(self.inner_optimizer, "_learning_rate", None)
        if self.lr_multiplier == 1.0 or not isinstance(rate, keras.Variable):
            return None
        return rate, np.asarray(rate.numpy() * self.lr_multiplier, rate.dtype)

    def load_own_variables(self, store):
        """Loads the inner optimizer's variables from a plain Keras file."""
        self.inner_optimizer.load_own_variables(store)

    # -- the recorded step -------------------------------------------------

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


class _Replacing:
    """A checkpoint store that writes `value` in place of entry `key`."""

    def __init__(self, store, key: str, value):
        self._store, self._key, self._value = store, key, value

    def __setitem__(self, key, value):
        self._store[key] = self._value if key == self._key else value
