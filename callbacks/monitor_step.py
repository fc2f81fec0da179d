"""The monitored step: measure, decide, update, inside the compiled train step.

`measure` computes this step's norms, the clipping that applies and the
`StepDecision`; `apply` (TensorFlow, torch) and `stateless_apply` (JAX)
run the inner optimizer's update accordingly and write the ring row.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from . import distributed, norms
from .host_read import to_int
from .optimizer_chain import (
    accumulation_steps, clip_settings, innermost_optimizer, loss_scaler, step_counter,
)
from .ring import NORM, running_median
from .snapshots import optimizer_state
from .step_decision import SpikeGate, decide_step
from .whole_cond import whole_cond

# The largest state (weights and optimizer variables) a skip is made by
# updating at once and putting the old values back when the step is not
# to be applied (`undo_skip`). Below it, that costs one copy of the state
# a step and lets each variable's update run as soon as its gradient is
# ready; a `cond` around the update makes every update wait for the last
# gradient (the global norm decides it). The 20 x Dense(64) MLP with Adam
# (1.1 MB of state) as NaNGuard sets the monitor, in `fit`, over plain
# Keras (`python -m benchmarks.skip_variants`, 9 interleaved rounds of
# 400-step fits, 7 Dec 2026, results/skip_variants-20261207-s6.md): the
# `cond` 1.63x, update-and-undo 1.17x (1.28x with the undo's own `cond`
# lowered to a `Switch` per variable: `whole_cond`). Above the cap the
# copy of a large model's state costs more memory than the wait costs
# time, and the `cond` stays.
UNDO_MAX_BYTES = 64 * 2**20


class MonitorStep:
    """The `GradientMonitor`'s compiled step (a mixin)."""


    def _loss_scale(self):
        scaler = loss_scaler(self.inner_optimizer)
        return None if scaler is None else scaler.dynamic_scale.value

    def measure(self, grads, trainable_variables, weights=None, combine_sparse=None):
        """This step's norms, clipping and decision, inside the compiled step.

        `weights`: the weight values (JAX's stateless step passes them);
        `None` reads the variables. `combine_sparse`: hand on an
        `IndexedSlices` with its repeated rows summed (`None`: the
        monitor's `combine_sparse`).

        Returns:
            `(decision, grads, row)`: the `StepDecision`, the gradients to
            apply (clipped) and what `record` writes to the ring.
        """
        n_vars = len(self.variable_paths)
        # An IndexedSlices may repeat an index: the norms are those of the
        # densified gradient, from its repeated rows summed. The update gets
        # the slices as Keras gives them (Adam and RMSprop update a repeated
        # row once per occurrence: summing would change training), unless
        # the monitor was asked to bound the densified update
        # (`require_combined_sparse`, GradientClipping on an Embedding).
        combined = [norms.combine_duplicates(g) for g in grads]
        if self.combine_sparse if combine_sparse is None else combine_sparse:
            grads = combined
        columns = [self._get_variable_index(v) for v in trainable_variables]
        squares = norms.squared_norms(combined)
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
            median, n, spread, peak = running_median(self._ring, self._count,
                                                     self._spike_window.value)
            gate = SpikeGate(self._spike_factor.value, median, n,
                             self._spike_min_history.value, self._spike_clip.value,
                             spread, peak)
        decision = decide_step(
            norm, skip_nonfinite=self.skip_nonfinite,
            loss_scaled=self.loss_scaled, gate=gate, norm_clipped=norm_clipped,
        )
        if gate is not None and self.spike_clip_compiled:
            # A clipped spike goes down to the median.
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
        self.rescale(variables, before)

    def rescale(self, variables, before, when=None) -> None:
        """Sets each variable to `old + multiplier * (new - old)`.

        Only where the multiplier is not 1 (and `when`, if given): at 1 the
        update stays the inner optimizer's, bit for bit, and the step waits
        for nothing but the multiplier's value.
        """
        multiplier = self._lr_multiplier.value
        due = ops.not_equal(multiplier, 1.0)
        if when is not None:
            due = ops.logical_and(due, when)

        def scale():
            for v, old in zip(variables, before):
                v.assign(old + ops.cast(multiplier, v.dtype) * (v.value - old))

        ops.cond(due, scale, lambda: None)

    def undo_skip(self, trainable_variables) -> bool:
        """Whether this step skips by undoing the update (`update_then_undo`).

        TensorFlow only (JAX's `stateless_apply` and torch keep the `cond`),
        with no loss scaler or gradient accumulation inside (their own
        skips and counts), a state of at most `UNDO_MAX_BYTES` (or the
        monitor's own `undo_max_bytes`, read when the step is traced), and no
        clip that scales every gradient by the global norm (AutoClip, the
        spike gate's clip, AGC, ZClip): there every update waits for the
        global norm anyway, and the copy would only add to it.
        """
        if (keras.backend.backend() != "tensorflow" or self.autoclip_compiled
                or self.spike_clip_compiled or self.adaptive.agc_compiled
                or self.adaptive.zclip_compiled
                or loss_scaler(self.inner_optimizer) is not None
                or accumulation_steps(self.inner_optimizer)):
            return False
        state = list(trainable_variables) + optimizer_state(self)
        size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in state)
        limit = UNDO_MAX_BYTES if self.undo_max_bytes is None else self.undo_max_bytes
        return size <= limit

    def update_then_undo(self, inner, grads, applied, trainable_variables) -> None:
        """The inner optimizer's update, undone where `applied` is False.

        The same weights and optimizer state as a `cond(applied, update,
        count_skipped)`: the old values are read before the update (a
        TensorFlow read is a snapshot: an update of a variable whose value
        is still held writes a new buffer), the update runs as the plain
        step would, counting the step, and a skipped step assigns the old
        values back. Each variable's update waits for its own gradient only.
        """
        import tensorflow as tf  # (TensorFlow's path only: `undo_skip`)

        state = list(trainable_variables) + optimizer_state(self)
        before = [ops.copy(v.value) for v in state]
        # Keras' step count goes up in `apply` on nothing but the count
        # itself: outside a `cond` it would run even when the step has no
        # batch (a dataset of unknown length ends with a call whose
        # `get_next` fails: plain Keras counts 15 steps for 12 there). Tied
        # to the last variable's gradient, the first that backpropagation
        # gives, the update runs only with a batch, as under the `cond`.
        last = next((g for g in reversed(grads) if g is not None), None)
        last = getattr(last, "values", last)  # an IndexedSlices' rows
        with tf.control_dependencies([] if last is None else [last]):
            inner.apply(grads, trainable_variables)
        if self.lr_scale_compiled:
            self.rescale(trainable_variables, before, when=applied)

        def restore():
            for variable, old in zip(state, before):
                variable.assign(old)

        # One `If` op: lowered, it would run a `Switch` per variable on
        # every step, restoring or not.
        whole_cond(applied, lambda: None, restore)

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
        elif self.undo_skip(trainable_variables):
            self.update_then_undo(inner, grads, decision.update, trainable_variables)
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
