"""Ways to skip a non-finite update inside the compiled step, and what each costs.

NaNGuard's monitor skips an update whose gradient norm is not finite with a
`cond` around the inner optimizer's `apply`, as Keras' `LossScaleOptimizer`
does; on the 20 x Dense(64) MLP that `cond` is most of the full stack's
cost (`benchmarks.callback_overhead`). This times, under TensorFlow, one
Adam update of 42 variables (21 kernels 64 x 64, 21 biases) in a
`tf.function`, three ways:

- `plain`: the update, no skip (the reference);
- `cond`: the update inside `tf.cond(finite, update, nothing)`;
- `select`: no branch: the weights and Adam's state copied, the update
  applied with the gradients zeroed where the norm is not finite, then
  every variable set back with `where(finite, new, old)` (the step counter
  still counts).

`cond` and `select` skip exactly (`tests/benchmarks/test_skip_variants.py`:
with a NaN gradient the weights and Adam's moments are unchanged; with a
finite one both equal `plain`). Rounds interleave the variants; the table
gives each one's ms per update (median over rounds) and its ratio to
`plain`.

The second part times the same question where it matters, inside `fit` on
that MLP (batch 32, whole fits of `--fit-steps` steps, configurations
interleaved fit by fit, ratio per round to plain fit's, median), where
backpropagation produces the gradients one layer at a time:

- `fit: plain`, and three custom `train_step`s around plain Adam:
  `wait on the norm` (every gradient times `where(finite(global norm), 1,
  0)`: each update waits for the last gradient, nothing is skipped),
  `cond on the norm` (the update inside `cond(finite(global norm))`) and
  `cond on the loss` (the same `cond` on the loss, which exists before
  any gradient: the branch without the wait; a timing reference, not an
  exact skip: a loss can be finite where a gradient is not);
- `GradientMonitor` as `NaNGuard` sets it (skip, weights check, spike
  gate) with the `cond` skip (`undo_max_bytes = 0`) and with the update-and-undo skip (the default on this
  model), whose `cond` that puts the old values back is one `If` op
  (`whole_cond`); `undo, lowered`: the same with that `cond` lowered by
  TensorFlow to a `Switch` per variable, as `keras.ops.cond` leaves it;
  and Keras' own `global_clipnorm`.

    python -m benchmarks.skip_variants            # about 3 minutes on 2 cores
    python -m benchmarks.skip_variants --quick
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no TensorFlow: `--help` answers before it loads)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.skip_variants",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--steps", type=int, default=400, help="timed updates a round (default 400)")
    parser.add_argument("--fit-rounds", type=int, default=9,
                        help="interleaved rounds of whole fits in part 2 (default 9; 0 skips it)")
    parser.add_argument("--fit-steps", type=int, default=400, help="steps per timed fit (default 400)")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 20 updates, 1 round of 10-step fits")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser)  # flags first as a program, then TensorFlow, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from .machine import machine_header  # noqa: E402

VARIANTS = ("plain", "cond", "select")


def make_variables(seed: int = 0) -> list:
    """The 20 x Dense(64) MLP's 42 variables' shapes: 21 kernels, 21 biases."""
    rng = np.random.default_rng(seed)
    return ([keras.Variable(rng.normal(size=(64, 64)).astype("float32")) for _ in range(21)]
            + [keras.Variable(np.zeros(64, "float32")) for _ in range(21)])


def make_update(kind: str, variables: list):
    """`(update, optimizer)`: a `tf.function` taking the gradients, skipping by `kind`."""
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(variables)
    state = [v for v in optimizer.variables
             if v is not optimizer.iterations and v is not getattr(optimizer, "_learning_rate", None)]

    @tf.function
    def update(grads):
        norm = tf.linalg.global_norm(grads)
        finite = tf.math.is_finite(norm)
        if kind == "plain":
            optimizer.apply(grads, variables)
        elif kind == "cond":
            tf.cond(finite, lambda: optimizer.apply(grads, variables) or tf.constant(0),
                    lambda: tf.constant(0))
        else:  # "select"
            held = variables + state
            old = [tf.identity(v.value) for v in held]
            with tf.control_dependencies(old):
                optimizer.apply([tf.where(finite, g, tf.zeros_like(g)) for g in grads], variables)
            for v, before in zip(held, old):
                v.assign(tf.where(finite, v.value, before))
        return norm

    return update, optimizer


def time_variants(rounds: int, steps: int) -> dict:
    """ms per update of each variant, one list a variant (a value a round)."""
    rng = np.random.default_rng(1)
    grads = [tf.constant(rng.normal(size=v.shape).astype("float32") * 1e-3)
             for v in make_variables()]
    times = {k: [] for k in VARIANTS}
    for r in range(rounds):
        for kind in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
            update, _ = make_update(kind, make_variables())
            for _ in range(10):
                update(grads)
            start = time.perf_counter()
            for _ in range(steps):
                update(grads)
            times[kind].append((time.perf_counter() - start) / steps * 1e3)
    return times


FIT_VARIANTS = ("fit: plain", "fit: wait on the norm", "fit: cond on the norm",
                "fit: cond on the loss", "fit: monitor, cond skip", "fit: monitor, undo skip",
                "fit: monitor, undo, lowered", "fit: Keras global_clipnorm")


def _custom_step_model(kind: str, base: keras.Model) -> keras.Model:
    """`base`'s layers under a `train_step` that updates by `kind` (part 2)."""
    loss_fn = keras.losses.MeanSquaredError()

    class Stepped(keras.Model):
        def train_step(self, data):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, self(x, training=True))
            variables = self.trainable_variables
            grads = tape.gradient(loss, variables)
            opt = self.optimizer
            if kind == "plain":
                opt.apply(grads, variables)
                return {"loss": loss}
            finite = (tf.math.is_finite(loss) if kind == "cond on the loss"
                      else tf.math.is_finite(tf.linalg.global_norm(grads)))
            if kind == "wait on the norm":
                opt.apply([g * tf.where(finite, 1.0, 0.0) for g in grads], variables)
            else:
                def update():
                    opt.apply(grads, variables)
                    return tf.constant(0)

                def skip():
                    opt.iterations.assign_add(1)
                    return tf.constant(0)

                tf.cond(finite, update, skip)
            return {"loss": loss}

    return Stepped(base.inputs, base.outputs)


def make_fit_model(name: str, x) -> keras.Model:
    """The 20 x Dense(64) MLP of `callback_overhead`, compiled for `name` (part 2)."""
    from gradguard.callbacks import GradientMonitor

    from .overhead_models import MODELS, batches, build_network

    base = build_network(MODELS["MLP 20x64 (42 vars)"], x, 0)
    kind = name.removeprefix("fit: ")
    if kind in ("plain", "wait on the norm", "cond on the norm", "cond on the loss"):
        model, optimizer = _custom_step_model(kind, base), keras.optimizers.Adam(1e-3)
    elif kind == "Keras global_clipnorm":
        model, optimizer = base, keras.optimizers.Adam(1e-3, global_clipnorm=1e9)
    else:  # NaNGuard's settings: skip, weights check, spike gate (skip)
        model = base
        optimizer = GradientMonitor(keras.optimizers.Adam(1e-3), check_weights=True)
        optimizer.set_spike_gate(50.0, 50, 5, "skip")
        if kind == "monitor, cond skip":
            optimizer.undo_max_bytes = 0  # read whenever the step is traced
    model.compile(optimizer=optimizer, loss="mse")
    with _lowered_undo(kind == "monitor, undo, lowered"):
        model.train_on_batch(x[:32], x[:32, :1])
        # `fit` traces its own step (an iterator, not a batch): here, while
        # the variant's setting holds.
        model.fit(batches(x, x[:, :1], 32, 2), epochs=1, verbose=0)
    return model


@contextlib.contextmanager
def _lowered_undo(on: bool):
    """While `on`, the undo's `cond` is traced as Keras' `ops.cond` (lowered
    to a `Switch` per variable) instead of `whole_cond` (one `If` op)."""
    from gradguard.callbacks import monitor_step

    saved = monitor_step.whole_cond
    if on:
        monitor_step.whole_cond = lambda pred, t, f: keras.ops.cond(pred, t, f)
    try:
        yield
    finally:
        monitor_step.whole_cond = saved


def time_fits(rounds: int, steps: int, seed: int = 0) -> dict:
    """Per round, each fit variant's ms per step and its ratio to plain fit's."""
    from .overhead_models import MODELS, batches, make_data

    spec = MODELS["MLP 20x64 (42 vars)"]
    x, y = make_data(spec, (steps + 1) * spec.batch_size, seed)
    models = {name: make_fit_model(name, x) for name in FIT_VARIANTS}
    for model in models.values():  # warm-up fits (the first fit's set-up)
        model.fit(batches(x, y, spec.batch_size, 20), epochs=1, verbose=0)
    rng = np.random.default_rng(seed)
    ms = {name: [] for name in FIT_VARIANTS}
    for _ in range(rounds):
        for name in rng.permutation(FIT_VARIANTS):
            data = batches(x, y, spec.batch_size, steps)
            start = time.perf_counter()
            models[str(name)].fit(data, epochs=1, verbose=0)
            ms[str(name)].append((time.perf_counter() - start) / steps * 1e3)
    return ms


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    rounds, steps = (1, 20) if args.quick else (args.rounds, args.steps)
    fit_rounds, fit_steps = ((min(1, args.fit_rounds), 10) if args.quick
                             else (args.fit_rounds, args.fit_steps))
    print(machine_header())
    times = time_variants(rounds, steps)
    plain = float(np.median(times["plain"]))
    print(f"\n{rounds} rounds of {steps} updates (42 variables, Adam); ms per update, median over rounds")
    print(f"{'variant':8} {'ms':>7} {'ratio':>6}  per round")
    for kind in VARIANTS:
        ms = float(np.median(times[kind]))
        print(f"{kind:8} {ms:7.3f} {ms / plain:6.3f}  " + " ".join(f"{t:.3f}" for t in times[kind]))
    if fit_rounds > 0:
        fits = time_fits(fit_rounds, fit_steps)
        plain_fit = np.array(fits["fit: plain"])
        print(f"\n{fit_rounds} interleaved rounds of {fit_steps}-step fits (20 x Dense(64), batch 32): "
              "ms per step (median), ratio to plain fit's in the same round (median, min-max)")
        for name in FIT_VARIANTS:
            ratios = np.array(fits[name]) / plain_fit
            print(f"{name:28} {np.median(fits[name]):7.3f} {np.median(ratios):6.3f}  "
                  f"{ratios.min():.3f}-{ratios.max():.3f}")
        times.update(fits)
    return times


if __name__ == "__main__":
    main(sys.argv[1:])
