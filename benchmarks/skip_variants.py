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

    python -m benchmarks.skip_variants            # about a minute on 2 cores
    python -m benchmarks.skip_variants --quick
"""

from __future__ import annotations

import argparse
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no TensorFlow: `--help` answers before it loads)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.skip_variants",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--steps", type=int, default=400, help="timed updates a round (default 400)")
    parser.add_argument("--quick", action="store_true", help="1 round of 20 updates")
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


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    rounds, steps = (1, 20) if args.quick else (args.rounds, args.steps)
    print(machine_header())
    times = time_variants(rounds, steps)
    plain = float(np.median(times["plain"]))
    print(f"\n{rounds} rounds of {steps} updates (42 variables, Adam); ms per update, median over rounds")
    print(f"{'variant':8} {'ms':>7} {'ratio':>6}  per round")
    for kind in VARIANTS:
        ms = float(np.median(times[kind]))
        print(f"{kind:8} {ms:7.3f} {ms / plain:6.3f}  " + " ".join(f"{t:.3f}" for t in times[kind]))
    return times


if __name__ == "__main__":
    main(sys.argv[1:])
