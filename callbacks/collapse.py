"""Outputs that stopped depending on the inputs: found by two forward passes.

A net can leave learning with no NaN, no spike and no loss far above its
best: it collapses to a constant. keras-io's siamese contrastive network
under RMSprop at 100x its rate learned for an epoch (batch loss 0.12), then
its tanh towers saturated, the distance it compares went constant, and from
there every pair got the same output, 0.4999: the contrastive loss sat at
0.25, 2x its best, with small and steady norms, for the rest of the fit.
No rule on the norms or the loss saw it (the loss rules want 10x and 1000x,
the chance rule knows only cross-entropies); it was held out, and silent.

The sign is in the outputs, not the loss: across a batch whose targets
vary, a net that has collapsed gives every sample the same output (a spread
of 1e-7 of their scale, float32's rounding), where the same net a few
hundred steps earlier gave them outputs 0.3 apart. `NaNGuard` probes
(`CollapseWatch`) at the end of every epoch and, within one, where the loss
says something went wrong: the last `STALL_STEPS` batch losses all above
`RISE` x the best running loss, at most once every `PROBE_GAP` steps. The
probe is the newest batch's outputs in inference mode from the weights as
they are; where their spread is below `CONSTANT` x their scale, the same
batch's outputs from the snapshots the guard holds, newest first, back to
the newest before the best step (within an epoch) or to the fit's first
(at its end): the first whose outputs varied by more than `VARIED` x
theirs dates the collapse, which came after it (`spread_at`: a
snapshot's weights loaded for a forward pass and the model's own put
back, value for value, by `values_put_back`; a copy of the model would
do, but a model with a `Lambda` or a custom loss, as the siamese net's,
cannot always be copied).
None varied: no event (a net that never depended on its inputs has not
collapsed).

Nearly constant is not enough (tried in session 9, reverted): keras-io's
NER Transformer at 100x Adam's rate tags every token `O` with outputs
that spread 1.5e-4 of their scale, but its first snapshot (after step 1)
spread 4e-6 already, so no snapshot the guard holds shows a fall; and a
rule for a spread <= 1e-3 that fell 100x stopped two healthy runs of the
generated population (a GRU and an Embedding net fitting targets of mean
100 under Adam: outputs at the mean, a spread of 9e-5 and 3e-4 of their
scale, on their way to learning).

The end-of-epoch probe came from the fourth held-out round: keras-io's
video classifier (two GRUs over masked frame features) at 100x Adam's rate
never learned, its loss at ln 5 from the first step, so no loss rose
above a best; by its third epoch every video got the same five
probabilities (a spread of 1.5e-6 of their scale, 0.04 at the fit's
start), and no rule had fired.
"""

from __future__ import annotations

import contextlib
import math
import time

import keras
import numpy as np

from .loss_rules import STALL_STEPS
from .replay_batches import batch_arrays

RISE = 1.5  # batch losses this far above the best running loss, STALL_STEPS in a row: probe
PROBE_GAP = 100  # the fewest steps between two probes of one fit
# A spread across the batch (the largest over output units of their
# standard deviation) below this fraction of the outputs' root mean square:
# one output for every sample. The collapsed siamese net read 1.2e-7
# (float32 rounding of a constant 0.4999); its healthy runs 0.3-0.9.
CONSTANT = 1e-5
VARIED = 1e-3  # ...and at the reference weights above this: they did depend on the inputs


def output_spread(outputs) -> float:
    """How much a batch's outputs vary across its samples, as a fraction of their scale.

    Every output (a tree of arrays, batch first) is flattened per sample;
    the spread is the largest per-unit standard deviation across the batch
    over the root mean square of all the outputs. 0 for outputs that are
    all 0; NaN where an output is not finite or the batch has one sample.

    Args:
        outputs: a model's outputs on one batch (arrays or tensors).

    Returns:
        A float.
    """
    arrays = [np.asarray(keras.ops.convert_to_numpy(o), np.float64)
              for o in keras.tree.flatten(outputs)]
    arrays = [a.reshape(len(a), -1) for a in arrays if a.ndim >= 1 and a.size]
    if not arrays or min(len(a) for a in arrays) < 2:
        return math.nan
    if not all(np.isfinite(a).all() for a in arrays):
        return math.nan
    spread = max(float(a.std(axis=0).max()) for a in arrays)
    rms = math.sqrt(sum(float(np.square(a).sum()) for a in arrays)
                    / sum(a.size for a in arrays))
    return 0.0 if rms == 0 else spread / rms


def targets_vary(y) -> bool:
    """Whether a batch's targets differ across its samples (`None`, an autoencoder's: yes)."""
    if y is None:
        return True
    for a in keras.tree.flatten(y):
        a = np.asarray(a)
        if a.ndim >= 1 and len(a) >= 2:
            flat = a.reshape(len(a), -1)
            if (flat != flat[:1]).any():
                return True
    return False


def above_best(batch_loss: float, best: float | None) -> bool:
    """Whether a batch loss is above `RISE` x the best running loss (finite, > 0)."""
    return bool(best is not None and best > 0 and math.isfinite(batch_loss)
                and batch_loss > RISE * best)


def find_collapse(now: float, then: float, then_step: int, loss: float | None = None,
                  best: float | None = None, best_step: int | None = None) -> str | None:
    """The `collapsed` event's detail, or `None` where the outputs did not collapse.

    Args:
        now: `output_spread` of the newest batch from the weights as they are.
        then: the same batch's from the weights after step `then_step`.
        loss: the newest batch loss; `best`: the best running loss, at
            step `best_step` (the loss's part of the evidence; `None` at an
            epoch's end, where no loss rise asked for the probe).
    """
    if not (now <= CONSTANT and then > VARIED):  # NaN: nothing to judge
        return None
    detail = (f"the outputs stopped depending on the inputs: across the newest batch (whose "
              f"targets vary) they spread {now:.2g} of their scale, where from the weights "
              f"of step {then_step} the same batch's spread {then:.2g}")
    if best is not None:
        detail += (f"; the batch loss {loss:.4g} has stayed above {RISE:g}x the best running "
                   f"loss {best:.4g} (step {best_step})")
    return detail


@contextlib.contextmanager
def values_put_back(variables):
    """Inside, `variables` may change; after, each holds its value from before, bit for bit."""
    saved = [(v, np.array(keras.ops.convert_to_numpy(v), copy=True)) for v in variables]
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)


def spread_at(model, weights, x) -> float:
    """`output_spread` of `model` on `x` with `weights` loaded (left loaded).

    Called inside `values_put_back(model.weights)`, which puts the model's
    own back once, however many snapshots were tried.

    Args:
        model: a built Keras model.
        weights: arrays for `model.set_weights` (a snapshot's).
        x: the batch's inputs.
    """
    model.set_weights(weights)
    return output_spread(model(x, training=False))


def other_variables(model) -> list:
    """The model's variables that are not weights: its random seeds' state.

    A forward pass in inference mode moves nothing but these: a layer that
    samples (keras-io's VAE draws its latent with `keras.random.normal`)
    advances its `SeedGenerator`, and every draw of the fit after it
    would differ (the VAE's healthy runs ended 392.40 -> 391.69 until the
    probe put them back).
    """
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def can_probe(model) -> bool:
    """Whether a forward pass leaves `model` as it was (no stateful RNN layer)."""
    return not any(getattr(layer, "stateful", False) for layer in model._flatten_layers())


class CollapseWatch:
    """NaNGuard's `collapsed` probes (a mixin: the guard holds the state).

    `_probed_at` (the step of the fit's last probe) and `_high_run` (batch
    losses in a row above `RISE` x the best) are reset per fit
    (`fit_state.py`).
    """

    def _watch_collapse(self) -> dict | None:
        """Within an epoch: probed while the batch loss stays `RISE` x above its best."""
        high = above_best(self._batch_losses[-1], self._best_loss)
        self._high_run = self._high_run + 1 if high else 0
        if (self._high_run < STALL_STEPS
                or (self._probed_at is not None
                    and self._step - self._probed_at < PROBE_GAP)):
            return None
        return self._probe_collapse(self._best_step + 1, rise=True)

    def _watch_collapse_at_epoch_end(self, monitor) -> None:
        """At an epoch's end: outputs constant now that varied at a snapshot of this fit.

        Handled as an event of the epoch's last batch (`_handle`); not after
        a stop, with the loss rules off, or in an epoch with no batch. A fit
        whose logs hold no loss is probed too: keras-io's trainer pattern
        (a `train_step` that returns its accuracy alone) at 100x its rate
        sat at chance with every loss rule blind (held-out round 8; its
        outputs still varied, so the probe does not catch that run either).
        """
        if (self.spike_factor is None or monitor is None or self._last_batch < 0
                or self.model.stop_training or self._probed_at == self._step):
            return
        found = self._probe_collapse(None, rise=False)
        if found is not None:
            found["batch"] = self._last_batch
            self._handle(found, monitor.read(), None)

    def _probe_collapse(self, before: int | None, *, rise: bool) -> dict | None:
        """The newest batch's outputs now and at the snapshots before step `before`.

        `before=None`: every snapshot of the fit. Returns the event found.
        """
        batches = self._tap.batches
        if not batches or not can_probe(self.model):
            return None
        self._probed_at = self._step
        started = time.perf_counter()
        model = self.model
        then = None
        try:
            # The probe leaves the fit's random draws as they were.
            with values_put_back(other_variables(model)):
                x, y, _ = batch_arrays(batches[-1])
                now = output_spread(model(x, training=False))
                if not now <= CONSTANT or not targets_vary(y):
                    return None
                with values_put_back(model.weights):  # once, whatever the snapshots tried
                    for step, weights, _ in reversed(self._snapshots.kept()):  # newest first
                        if before is not None and step >= before:
                            continue
                        spread = spread_at(model, weights, x)
                        if spread > VARIED:
                            then = (step, spread)
                            break
        except Exception:  # noqa: BLE001  (an experiment, never a crash)
            return None
        if then is None:
            return None
        if rise:
            detail = find_collapse(now, then[1], then[0], self._batch_losses[-1],
                                   self._best_loss, self._best_step)
        else:
            detail = find_collapse(now, then[1], then[0])
        if detail is None:
            return None
        self.replays_run += 1
        return {"trigger": "collapsed", "step": self._step, "best_step": then[0],
                "detail": detail, "experiment_seconds": time.perf_counter() - started}
