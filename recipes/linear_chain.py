"""
Title: Vanishing and exploding gradients in a deep linear chain
Description: Stack L linear layers W = a * I and watch signals and gradients
scale like a**L.

The smallest network that shows why depth makes gradients explode is a chain
of L bias-free linear layers with kernel W = diag(a, a): its output is
y = W^L x = a**L x, so with a = 1.5 ten layers multiply the signal by
1.5**10 = 57.6650390625, and fifty by about 6.4e8. Backpropagation multiplies
by the same Jacobians in the other direction, so the gradients do the same;
a gain below 1 makes them vanish as fast (0.5**50 is about 8.9e-16). Deep
networks and RNNs unrolled over time behave like this chain whenever a
layer's (or a time step's) typical gain is not close to 1.

For each gain `a` and depth `L` the recipe builds the real Keras model
(`models.linear_chain`), feeds it `x = (1, 1)` and measures, with the
backend's own autodiff (`tf.GradientTape`, `jax.grad`, `torch.autograd`),
the output scale `||y|| / ||x||` (closed form `|a|**L`) and the gradients of
`sum(y)` with respect to the input (`|a|**L * sqrt(units)`) and the first
kernel (`|a|**(L - 1) * units`). `sum(y)` makes the gradient `J^T 1`, which
scales like the Jacobian; a squared loss would report `a**(2L)`.

What you will see: one row per (gain, depth) with the measured values beside
their closed forms and `per_layer_growth` (equal to `a`), the line
`1.5**10 = 57.6650390625: ...`, the ratio of vanishing to exploding at the
deepest depth, and `results.csv`, `results.md`, `config.json` and
`linear_chain.png` in the run folder.

Run it with `python -m recipes.linear_chain` (`--quick` for three depths).
Gains must be > 0; a gain and depth whose `a**L` overflows float32 (`--gains
1e30 --depths 50`, or `2` at depth 128) are refused up front with the
largest depth that fits, since past it the chain computes inf and NaN.

References:
    - Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics
      of learning in deep linear neural networks", ICLR 2014,
      https://arxiv.org/abs/1312.6120.
    - Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013, https://arxiv.org/abs/1211.5063.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from dataclasses import field

import numpy as np
import pandas as pd

from .cli import help_description, program
from .common import new_run_dir, parse_config, write_config, write_table
from .console import WIDTH, quiet_start, wrap

# Keras (and so TensorFlow) loads inside `measure`, not at import: `--help`
# and a bad flag answer at once, and `main` loads the backend quietly.

NAME = "linear_chain"
QUICK_DEPTHS = (1, 5, 10)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the linear chain recipe."""

    # Per-layer gains a: below 1 vanishes, 1 is stable, above 1 explodes.
    gains: tuple[float, ...] = field(default=(0.5, 1.0, 1.5), metadata={"help": (
        "per-layer gains a; every kernel is a * I")})
    # Numbers of layers L; 50 is deep enough to see 16 orders of magnitude.
    depths: tuple[int, ...] = field(default=(1, 2, 5, 10, 20, 50), metadata={"help": (
        "numbers of layers L to build and measure")})
    # Width of the input and of every layer: W = diag(a, a) for units=2.
    units: int = field(default=2, metadata={"help": "width of the input and of every layer"})
    # Smoke-test mode: depths (1, 5, 10) instead of --depths.
    quick: bool = field(default=False, metadata={"help": (
        f"measure depths {QUICK_DEPTHS} only (overrides --depths)")})
    # Results folder; None makes a new runs/linear_chain-<timestamp>.
    out: str | None = field(default=None, metadata={"help": (
        "new or empty folder for the results; none: runs/linear_chain-<time>")})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        bad_depths = [d for d in self.depths if d < 1]
        if bad_depths:
            return f"--depths received {bad_depths[0]}; expected ints >= 1 (numbers of layers)."
        bad_gains = [a for a in self.gains if not (math.isfinite(a) and a > 0)]
        if bad_gains:
            return (f"--gains received {bad_gains[0]!r}; expected finite floats > 0 (the per-layer "
                    "gain a: below 1 vanishes, 1 is stable, above 1 explodes).")
        if self.units < 1:
            return f"--units received {self.units}; expected an int >= 1."
        for a in self.gains:
            first = overflow_depth(a, max(self.depth_list)) if self.depth_list else None
            if first is not None:
                depth = min(d for d in self.depth_list if d >= first)
                fix = (f"Use depths <= {first - 1} with this gain, or a gain closer to 1." if first > 1
                       else "Use a gain closer to 1: this one is beyond float32 itself.")
                return (f"--gains {a!r} at depth {depth} would overflow float32: the chain's output "
                        f"and gradients grow like {a!r}**{depth}, above float32's largest value "
                        f"{FLOAT32_MAX:.8g}, so the Keras model would compute inf and NaN instead "
                        f"of the closed form. {fix}")
        return None

    @property
    def depth_list(self) -> tuple[int, ...]:
        """The depths to measure, sorted: `QUICK_DEPTHS` under `--quick`."""
        return tuple(sorted(set(QUICK_DEPTHS if self.quick else self.depths)))


def overflow_depth(a: float, max_depth: int) -> int | None:
    """The first depth `<= max_depth` at which `a**depth` is inf in float32, or None.

    The chain takes the same float32 products, one per layer; once one is
    inf the next matmul gives `inf * 0 = NaN`.

    Example:

    >>> overflow_depth(2.0, 200), overflow_depth(1e30, 50), overflow_depth(1.5, 50)
    (128, 2, None)
    """
    with np.errstate(over="ignore"):
        powers = np.multiply.accumulate(np.full(max_depth, a, dtype=np.float32))
    overflowed = np.flatnonzero(np.isinf(powers))
    return int(overflowed[0]) + 1 if overflowed.size else None


def measure(a: float, depth: int, units: int = 2) -> dict[str, float]:
    """`output` (first value, `a**depth`), `output_scale`, `grad_input_norm`, `grad_kernel_norm`.

    The gradients are those of `sum(y)` at `x` of ones, with respect to `x`
    and to the first kernel, by the Keras backend's autodiff.
    """
    from .models import linear_chain

    model = linear_chain(a, depth, units=units)
    y, grad_x, grad_kernel = _gradients(model, model.get_layer("linear_0").kernel, units)
    y = np.asarray(y, dtype=np.float64)
    return {
        "output": float(y[0, 0]),
        # sqrt(sum(y**2) / sum(x**2)) is exact in float64 when y = a**L * x.
        "output_scale": float(np.sqrt(np.sum(y**2) / units)),
        "grad_input_norm": float(np.linalg.norm(np.asarray(grad_x, np.float64))),
        "grad_kernel_norm": float(np.linalg.norm(np.asarray(grad_kernel, np.float64))),
    }


def _gradients(model, kernel, units: int):
    """`y`, d sum(y)/dx and d sum(y)/d kernel at `x` of ones, by the backend's autodiff."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.ones((1, units), dtype="float32")
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x)
            loss = tf.reduce_sum(y)
        return (y, *tape.gradient(loss, [x, kernel]))
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        index = next(i for i, v in enumerate(model.trainable_variables) if v is kernel)
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(trainable, x):
            y, _ = model.stateless_call(trainable, frozen, x)
            return jnp.sum(y), y

        (grad_trainable, grad_x), y = jax.grad(loss, argnums=(0, 1), has_aux=True)(
            trainable, jnp.ones((1, units), dtype="float32"))
        return y, grad_x, grad_trainable[index]
    if backend == "torch":
        import torch

        x = torch.ones((1, units), dtype=torch.float32, device=kernel.value.device, requires_grad=True)
        y = model(x)
        grad_x, grad_kernel = torch.autograd.grad(y.sum(), [x, kernel.value])
        return (y.detach().cpu(), grad_x.cpu(), grad_kernel.cpu())
    raise RuntimeError(
        "recipes.linear_chain measures gradients with TensorFlow, JAX or PyTorch autodiff; "
        f"the Keras backend is {backend!r}. Set KERAS_BACKEND to tensorflow, jax or torch.")


def run(config: Config) -> pd.DataFrame:
    """One row per gain and depth: measured values, closed forms, regime, per-layer growth.

    Raises:
        ValueError: If `config.validate()` finds a problem.
    """
    problem = config.validate()
    if problem:
        raise ValueError(f"linear_chain.run received a bad config: {problem}")
    rows = []
    for a in config.gains:
        g, previous = abs(a), None
        for depth in config.depth_list:
            m = measure(a, depth, config.units)
            growth = math.nan  # the factor the input gradient gains per layer since the last depth
            if previous is not None and previous[1] > 0:
                growth = (m["grad_input_norm"] / previous[1]) ** (1 / (depth - previous[0]))
            previous = (depth, m["grad_input_norm"])
            rows.append({
                "gain": a, "depth": depth,
                "regime": "vanishing" if g < 1 else "stable" if g == 1 else "exploding",
                "output_scale": m["output_scale"], "output_scale_expected": g**depth,
                "grad_input_norm": m["grad_input_norm"],
                "grad_input_expected": g**depth * math.sqrt(config.units),
                "grad_kernel_norm": m["grad_kernel_norm"],
                "grad_kernel_expected": g ** (depth - 1) * config.units,
                "per_layer_growth": growth,
            })
    return pd.DataFrame(rows)


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The two headline sentences printed under the table."""
    exact = 1.5**10
    row = table[(table.gain == 1.5) & (table.depth == 10)]
    seen = (f"the Keras chain measured {float(row.output_scale.iloc[0])!r}" if len(row)
            else "add --gains 1.5 and depth 10 to measure it")
    lines = [f"1.5**10 = {exact!r} (about {exact:.3f}): ten layers with gain 1.5 amplify "
             f"the signal {exact:.0f}-fold; {seen}."]
    deepest = table.depth.max()
    at_depth = table[table.depth == deepest]
    low = at_depth.loc[at_depth.gain.abs().idxmin()]
    high = at_depth.loc[at_depth.gain.abs().idxmax()]
    if abs(low.gain) < 1 < abs(high.gain):
        ratio = (f"a ratio of {high.grad_input_norm / low.grad_input_norm:.3g} between two chains "
                 "that differ only in their per-layer gain" if low.grad_input_norm > 0 else
                 f"the first underflowed to 0 in float32 (its closed form is "
                 f"{low.grad_input_expected:.3g}), so their ratio is unbounded")
        lines.append(f"vanishing vs exploding at depth {deepest}: the input gradient norm is "
                     f"{low.grad_input_norm:.3g} for a={low.gain:g} (vanished) and "
                     f"{high.grad_input_norm:.3g} for a={high.gain:g} (exploded), {ratio}.")
    return lines


def save_plot(table: pd.DataFrame, out_dir: pathlib.Path) -> pathlib.Path | None:
    """Output scale and gradient norms against depth (log scale); None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    for a, group in table.groupby("gain"):
        (line,) = left.plot(group.depth, group.output_scale, "o", label=f"a={a:g}")
        color = line.get_color()
        left.plot(group.depth, group.output_scale_expected, "-", color=color, alpha=0.5)
        right.plot(group.depth, group.grad_input_norm, "o", color=color, label=f"a={a:g}, d/dx")
        right.plot(group.depth, group.grad_kernel_norm, "s", color=color, mfc="none",
                   label=f"a={a:g}, d/dW1")
        right.plot(group.depth, group.grad_input_expected, "-", color=color, alpha=0.5)
    left.set_title("output scale ||y|| / ||x||  (line: a**L)")
    right.set_title("gradient norm of sum(y)  (line: closed form of d/dx)")
    for ax in (left, right):
        ax.set(yscale="log", xlabel="depth L")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    path = out_dir / f"{NAME}.png"
    figure.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags (a bad one exits with code 2 before any work), measures, prints, writes."""
    config = parse_config(Config, argv, description=help_description(__doc__, f"recipes.{NAME}"),
                          prog=program(f"recipes.{NAME}"))
    device = quiet_start()  # the backend loads here, after the flags were read
    print(f"Device: {device}. Gains {config.gains}, depths {config.depth_list}.")
    table = run(config)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}", line_width=WIDTH))
    print("", *(wrap(line) for line in summary_lines(table)), sep="\n")
    out_dir = new_run_dir(config.out, NAME)  # made only once there is something to put in it
    write_config(config, out_dir)
    written = [*write_table(table, out_dir, caption=f"Linear chain, device: {device}."),
               save_plot(table, out_dir)]
    print(wrap(f"\nWrote {', '.join(str(p.resolve()) for p in written if p)}."))
    if written[-1] is None:
        print("(Install matplotlib for the plot: pip install matplotlib.)")
    return table


if __name__ == "__main__":
    main()
