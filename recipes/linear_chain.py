"""
Title: Vanishing and exploding gradients in a deep linear chain
Description: Stack L linear layers W = a * I and watch signals and gradients
scale like a**L.

The smallest network that shows why depth makes gradients explode is a chain
of L bias-free linear layers, each with the same kernel W = diag(a, a). Its
output is y = W^L x = a**L x, so the signal grows or shrinks geometrically
with depth: with a = 1.5, ten layers already multiply it by
1.5**10 = 57.6650390625, and fifty by about 6.4e8. Backpropagation multiplies
by the same Jacobians in the other direction, so the gradients do the same.
A gain below 1 makes them vanish just as fast (0.5**50 is about 8.9e-16).
Deep nonlinear networks and RNNs unrolled over time behave like this chain
whenever the typical gain of a layer (or time step) is not close to 1.

The recipe builds the real Keras model for each gain `a` and depth `L`,
feeds it `x = (1, 1)`, and measures with the Keras backend's own autodiff
(`tf.GradientTape`, `jax.grad` or `torch.autograd.grad`):

- the output scale `||y|| / ||x||`, which should be `|a|**L`;
- the gradient of `sum(y)` with respect to the input, whose norm should be
  `|a|**L * sqrt(units)`;
- the gradient of `sum(y)` with respect to the first layer's kernel, whose
  norm should be `|a|**(L - 1) * units` (with `x` all ones).

The loss is `sum(y)` rather than `0.5 * ||y||**2` so that the gradient is
exactly the transposed Jacobian applied to a fixed vector, `J^T 1`: its norm
scales like the Jacobian, `a**L`. A squared loss would multiply in the
output `y` itself and report `a**(2L)`, mixing the forward blow-up with the
backward one.

What you will see: a table with one row per (gain, depth), the measured
values next to their closed forms, a `per_layer_growth` column equal to `a`
(the factor the gradient gains with every extra layer), the lines

    1.5**10 = 57.6650390625: ...
    vanishing vs exploding at depth 50: ...

and `results.csv`, `results.md`, `config.json` and `linear_chain.png`
(output scale and gradient norms against depth, log scale) in the run
folder.

Run it with `python -m recipes.linear_chain` (add `--quick` for three
depths, `--help` for every flag). Gains must be > 0, and a gain and depth
whose `a**L` overflows float32 (e.g. `--gains 1e30 --depths 50`, or `2` at
depth 128) are refused up front with the largest depth that fits: past it
the Keras chain computes inf and then NaN (`inf * 0` in the next matmul)
instead of something to compare with the closed form. A bad flag exits
with code 2 before anything is measured or written.

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

import keras
import numpy as np
import pandas as pd

from .common import device_name, new_run_dir, parse_config, write_config, write_table
from .models import linear_chain

NAME = "linear_chain"
QUICK_DEPTHS = (1, 5, 10)
FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the linear chain recipe."""

    # Per-layer gains a: below 1 vanishes, 1 is stable, above 1 explodes.
    gains: tuple[float, ...] = field(
        default=(0.5, 1.0, 1.5),
        metadata={"help": "per-layer gains a; every kernel is a * I"},
    )
    # Numbers of layers L; 50 is deep enough to see 16 orders of magnitude.
    depths: tuple[int, ...] = field(
        default=(1, 2, 5, 10, 20, 50),
        metadata={"help": "numbers of layers L to build and measure"},
    )
    # Width of the input and of every layer: W = diag(a, a) for units=2.
    units: int = field(
        default=2,
        metadata={"help": "width of the input and of every layer"},
    )
    # Smoke-test mode: depths (1, 5, 10) instead of --depths.
    quick: bool = field(
        default=False,
        metadata={"help": f"measure depths {QUICK_DEPTHS} only (overrides --depths)"},
    )
    # Results folder; None makes a new runs/linear_chain-<timestamp>.
    out: str | None = field(
        default=None,
        metadata={"help": "new or empty folder for the results; none: runs/linear_chain-<time>"},
    )

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        bad_depths = [d for d in self.depths if d < 1]
        if bad_depths:
            return (
                f"--depths received {bad_depths[0]}; expected ints >= 1 "
                "(numbers of layers)."
            )
        bad_gains = [a for a in self.gains if not (math.isfinite(a) and a > 0)]
        if bad_gains:
            return (
                f"--gains received {bad_gains[0]!r}; expected finite floats > 0 "
                "(the per-layer gain a: below 1 vanishes, 1 is stable, above 1 "
                "explodes)."
            )
        if self.units < 1:
            return f"--units received {self.units}; expected an int >= 1."
        depths = self.depth_list
        for a in self.gains:
            first = overflow_depth(a, max(depths)) if depths else None
            if first is None:
                continue
            depth = min(d for d in depths if d >= first)
            fix = (
                f"Use depths <= {first - 1} with this gain, or a gain closer to 1."
                if first > 1
                else "Use a gain closer to 1: this one is beyond float32 itself."
            )
            return (
                f"--gains {a!r} at depth {depth} would overflow float32: the "
                f"chain's output and gradients grow like {a!r}**{depth}, above "
                f"float32's largest value {FLOAT32_MAX:.8g}, so the Keras model "
                f"would compute inf and NaN instead of the closed form. {fix}"
            )
        return None

    @property
    def depth_list(self) -> tuple[int, ...]:
        """The depths to measure, sorted: `QUICK_DEPTHS` under `--quick`."""
        return tuple(sorted(set(QUICK_DEPTHS if self.quick else self.depths)))


def overflow_depth(a: float, max_depth: int) -> int | None:
    """Returns the first depth at which the chain with gain `a` overflows float32.

    The chain multiplies by `a` once per layer, forward and backward: its
    output and input gradient hold `a**depth` and its kernel gradient
    `a**(depth - 1)`, each computed as a float32 product. Once one of them is
    `inf`, the next layer's matmul gives `inf * 0 = NaN`. The same float32
    products are taken here with numpy, so the depth is the exact one.

    Args:
        a: The per-layer gain, a finite float > 0.
        max_depth: The deepest chain to check, an int >= 1.

    Returns:
        The smallest depth `<= max_depth` at which `a**depth` is `inf` in
        float32, or `None` if there is none (always for `a <= 1`).

    Example:

    >>> overflow_depth(2.0, 200), overflow_depth(1e30, 50), overflow_depth(1.5, 50)
    (128, 2, None)
    """
    with np.errstate(over="ignore"):
        powers = np.multiply.accumulate(np.full(max_depth, a, dtype=np.float32))
    overflowed = np.flatnonzero(np.isinf(powers))
    return int(overflowed[0]) + 1 if overflowed.size else None


# ---------------------------------------------------------------------------
# Data and model: x is all ones, the model is models.linear_chain(a, L).
# ---------------------------------------------------------------------------


def measure(a: float, depth: int, units: int = 2) -> dict[str, float]:
    """Builds `linear_chain(a, depth)` and measures its output and gradients.

    Args:
        a: The per-layer gain.
        depth: The number of layers, an int >= 1.
        units: The width. Defaults to 2.

    Returns:
        A dict with the measured `output_scale` (`||y|| / ||x||`),
        `grad_input_norm` and `grad_kernel_norm` (gradients of `sum(y)` with
        respect to `x` and to the first kernel), and `output` (the first
        output value, `a**depth` for `x` of ones).

    Raises:
        RuntimeError: If the Keras backend is not TensorFlow, JAX or PyTorch.
    """
    model = linear_chain(a, depth, units=units)
    y, grad_x, grad_kernel = _gradients(model, model.get_layer("linear_0").kernel, units)
    y = np.asarray(y, dtype=np.float64)
    return {
        "output": float(y[0, 0]),
        # sqrt(sum(y**2) / sum(x**2)) is ||y|| / ||x||, and exact in float64
        # when y = a**L * x (e.g. 57.6650390625 for a=1.5, L=10).
        "output_scale": float(np.sqrt(np.sum(y**2) / units)),
        "grad_input_norm": float(np.linalg.norm(np.asarray(grad_x, np.float64))),
        "grad_kernel_norm": float(np.linalg.norm(np.asarray(grad_kernel, np.float64))),
    }


def _gradients(model: keras.Model, kernel, units: int):
    """`y`, d sum(y)/dx and d sum(y)/d kernel at `x` of ones, by the backend's autodiff."""
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


# ---------------------------------------------------------------------------
# Run: one row per (gain, depth).
# ---------------------------------------------------------------------------


def run(config: Config) -> pd.DataFrame:
    """Measures every (gain, depth) pair of `config`.

    Args:
        config: The recipe's settings.

    Returns:
        One row per gain and depth with the measured `output_scale`,
        `grad_input_norm`, `grad_kernel_norm`, their closed forms (`*_expected`,
        computed in float64), the `regime` (vanishing, stable or exploding) and
        `per_layer_growth`, the factor the input gradient gains per extra
        layer since the previous depth (`|a|`; empty for the first depth).

    Raises:
        ValueError: If `config.validate()` finds a problem, e.g. a gain <= 0 or
            a gain and depth whose `a**depth` overflows float32.
    """
    problem = config.validate()
    if problem:
        raise ValueError(f"linear_chain.run received a bad config: {problem}")
    rows = []
    for a in config.gains:
        previous = None
        for depth in config.depth_list:
            measured = measure(a, depth, config.units)
            growth = math.nan
            if previous is not None and previous[1] > 0:
                growth = (measured["grad_input_norm"] / previous[1]) ** (1 / (depth - previous[0]))
            previous = (depth, measured["grad_input_norm"])
            g = abs(a)
            rows.append(
                {
                    "gain": a,
                    "depth": depth,
                    "regime": "vanishing" if g < 1 else "stable" if g == 1 else "exploding",
                    "output_scale": measured["output_scale"],
                    "output_scale_expected": g**depth,
                    "grad_input_norm": measured["grad_input_norm"],
                    "grad_input_expected": g**depth * math.sqrt(config.units),
                    "grad_kernel_norm": measured["grad_kernel_norm"],
                    "grad_kernel_expected": g ** (depth - 1) * config.units,
                    "per_layer_growth": growth,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Returns the two headline sentences printed under the table."""
    exact = 1.5**10
    row = table[(table.gain == 1.5) & (table.depth == 10)]
    if len(row):
        seen = f"the Keras chain measured {float(row.output_scale.iloc[0])!r}"
    else:
        seen = "add --gains 1.5 and depth 10 to measure it"
    lines = [
        f"1.5**10 = {exact!r} (about {exact:.3f}): ten layers with gain 1.5 amplify "
        f"the signal {exact:.0f}-fold; {seen}."
    ]
    deepest = table.depth.max()
    at_depth = table[table.depth == deepest]
    low = at_depth.loc[at_depth.gain.abs().idxmin()]
    high = at_depth.loc[at_depth.gain.abs().idxmax()]
    if abs(low.gain) < 1 < abs(high.gain):
        if low.grad_input_norm > 0:
            ratio = (
                f"a ratio of {high.grad_input_norm / low.grad_input_norm:.3g} between "
                "two chains that differ only in their per-layer gain"
            )
        else:
            ratio = (
                f"the first underflowed to 0 in float32 (its closed form is "
                f"{low.grad_input_expected:.3g}), so their ratio is unbounded"
            )
        lines.append(
            f"vanishing vs exploding at depth {deepest}: the input gradient norm is "
            f"{low.grad_input_norm:.3g} for a={low.gain:g} (vanished) and "
            f"{high.grad_input_norm:.3g} for a={high.gain:g} (exploded), {ratio}."
        )
    return lines


def save_plot(table: pd.DataFrame, out_dir: pathlib.Path) -> pathlib.Path | None:
    """Plots output scale and gradient norms against depth, log scale.

    Returns:
        The PNG's path, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(11, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    for a, group in table.groupby("gain"):
        (line,) = axes[0].plot(group.depth, group.output_scale, "o", label=f"a={a:g}")
        color = line.get_color()
        axes[0].plot(group.depth, group.output_scale_expected, "-", color=color, alpha=0.5)
        axes[1].plot(
            group.depth, group.grad_input_norm, "o", color=color, label=f"a={a:g}, d/dx"
        )
        axes[1].plot(
            group.depth,
            group.grad_kernel_norm,
            "s",
            color=color,
            mfc="none",
            label=f"a={a:g}, d/dW1",
        )
        axes[1].plot(group.depth, group.grad_input_expected, "-", color=color, alpha=0.5)
    axes[0].set_title("output scale ||y|| / ||x||  (line: a**L)")
    axes[1].set_title("gradient norm of sum(y)  (line: closed form of d/dx)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("depth L")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    path = out_dir / f"{NAME}.png"
    figure.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags, runs the sweep, prints and writes the results.

    Args:
        argv: Flags without the program name. Defaults to `None`:
            `sys.argv[1:]`.

    Returns:
        The results table.
    """
    # Bad flags (a gain <= 0, a gain and depth that overflow float32, a taken
    # --out) exit with code 2 here, before anything is measured or written.
    config = parse_config(Config, argv, description=__doc__, prog="python -m recipes.linear_chain")
    device = device_name()
    print(f"Device: {device}. Gains {config.gains}, depths {config.depth_list}.")
    table = run(config)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print()
    for line in summary_lines(table):
        print(line)
    # The folder is made only once there is something to put in it.
    out_dir = new_run_dir(config.out, NAME)
    write_config(config, out_dir)
    csv_path, md_path = write_table(table, out_dir, caption=f"Linear chain, device: {device}.")
    plot_path = save_plot(table, out_dir)
    written = [csv_path, md_path] + ([plot_path] if plot_path else [])
    print(f"\nWrote {', '.join(str(p) for p in written)}.")
    if plot_path is None:
        print("(Install matplotlib for the plot: pip install matplotlib.)")
    return table


if __name__ == "__main__":
    main()
