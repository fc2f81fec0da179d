"""`StepLogs`: the newest global norm in the train step's own `logs`.

On TensorFlow, Keras turns the logs a train step returns into Python floats
every batch anyway (`CallbackList` calls `pythonify_logs`), so what rides in
them costs no extra device read. A callback that wants the global norm of
every step (`GradientNormLogger`) would otherwise read the monitor's
variables after every batch: two eager reads, which on a small model cost
as much as the step's own norm (see `benchmarks.callback_overhead`).

`StepLogs` swaps the model's train function, for one `fit`, for one made by
Keras' own `_make_function` from the model's `train_step` followed by a read
of the monitor's newest row, inside the compiled step. It swaps at the first
batch, after every callback's `on_train_begin` has had its say (some rebuild
the train function), and puts Keras' function back at the end of the `fit`.
The function it made is kept on the model for the next `fit` (by any
`StepLogs`, a fresh callback's too) while Keras' function is the same one;
it replaces a Keras function that was not yet traced, so a `fit` traces
once either way, and later fits not at all.

Only TensorFlow without a `tf.distribute` strategy, compiled (not
`run_eagerly`), takes this path; elsewhere `active` stays False and the
caller reads the monitor as before.
"""

from __future__ import annotations

import keras

from .optimizer_chain import find_monitor

# The keys the train step's logs get: the newest step's global norm before
# and after clipping (what `GradientNormLogger` puts in batch logs).
KEYS = ("grad_norm", "grad_norm_clipped")
# Where a model keeps `(Keras' train function, the norm-carrying one made
# from it)`: with the model, so that a fresh callback in a later `fit`
# reuses the traced function instead of tracing a new one.
CACHE = "_gradguard_step_logs"


def _supported(model) -> bool:
    """TensorFlow, compiled, no `tf.distribute` strategy."""
    if keras.backend.backend() != "tensorflow" or model.run_eagerly:
        return False
    import tensorflow as tf

    return (getattr(model, "_distribute_strategy", None) is None
            and not tf.distribute.has_strategy())


class StepLogs:
    """Swaps a model's train function for one whose logs carry the global norm.

    Args:
        owner: the callback's class name (for nothing but `repr`).

    Use: `begin()` in `on_train_begin`, `swap(model)` in the first
    `on_train_batch_begin` (`due` is True until then), `end(model)` in
    `on_train_end`; `active` says whether this `fit`'s batch logs carry
    `KEYS` from the step.
    """

    def __init__(self, owner: str):
        self.owner = owner
        self.active = False
        self.due = False
        self._keras_fn = None  # Keras' train function the cached one replaces
        self._ours = None
        self._tap = None  # NaNGuard's BatchTap the swap went inside, if any

    def __repr__(self):
        return f"StepLogs({self.owner}, active={self.active})"

    def begin(self, model) -> None:
        """Arms the swap for this `fit` (done at its first batch)."""
        self.active = False
        self.due = _supported(model)

    def swap(self, model) -> None:
        """Puts the norm-carrying train function in place (once per `fit`)."""
        if not self.due:
            return
        self.due = False
        keras_fn = model.train_function
        if keras_fn is None:
            return
        # NaNGuard's `BatchTap` may wrap Keras' function for this fit: swap
        # the function inside the tap, so that the tap keeps drawing batches
        # and the cache stays keyed on Keras' own function (no retrace).
        self._tap = getattr(keras_fn, "_gradguard_tap", None)
        if self._tap is not None:
            keras_fn = self._tap.inner
        cached = getattr(model, CACHE, None)
        if cached is None or cached[0] is not keras_fn:
            cached = (keras_fn, model._make_function(_norm_step(model)))
            # Past Keras' attribute tracking: not a layer, variable or saved state.
            object.__setattr__(model, CACHE, cached)
        self._keras_fn, self._ours = cached
        if self._tap is not None:
            self._tap.inner = self._ours
        else:
            model.train_function = self._ours
        self.active = True

    def end(self, model) -> None:
        """Gives Keras its own train function back."""
        self.due = False
        tap, self._tap = self._tap, None
        if self.active and tap is not None and tap.inner is self._ours:
            tap.inner = self._keras_fn
        elif self.active and model.train_function is self._ours:
            model.train_function = self._keras_fn
        self.active = False
        # The functions stay cached on the model, not here: a callback
        # holds no traced function (it deep-copies and pickles).
        self._keras_fn = self._ours = None


def _norm_step(model):
    """`model.train_step` whose logs also carry the newest norms (`KEYS`)."""
    step = model.train_step

    def train_step(data):
        logs = step(data)
        monitor = find_monitor(model.optimizer)
        if not isinstance(logs, dict) or monitor is None or not monitor.built:
            return logs
        return {**logs, **dict(zip(KEYS, monitor.newest_norms()))}

    return train_step
