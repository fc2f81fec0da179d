"""Whole short fits with fresh callbacks: what a loop of `fit` calls pays.

A loop, Keras Tuner or staged fine-tuning calls `fit` again and again,
each time with new callback instances. The steady-state rows of
`callback_overhead` time steps inside one long fit with the same
callbacks; here every timed `fit` is a whole call (set-up, first step,
every hook, the end) with callbacks created for it, on a model that has
already been fitted twice (untimed: its first fit traces).

Each configuration gets its own model (same seed), compiled once and
warmed up by two fits (a model's second fit pays a one-off cost in plain
Keras too). A round runs one whole fit of every configuration,
in an order shuffled every round; the ratio is the median over rounds of
a configuration's fit time over plain fit's in the same round. "first
batch" is the time from calling `fit` to the end of its first batch: a
retrace shows there (a second instead of milliseconds).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from gradguard.callbacks import AutoClip, GradientNormLogger, NaNGuard
from gradguard.recipes.console import wrap

PLAIN = "plain fit"
LOGGER = "logger every step, fresh per fit"
STACK = "logger + NaNGuard + AutoClip, fresh per fit"
CONFIGS = (PLAIN, LOGGER, STACK)
# Reported, not asserted (issue 29): whole short fits on the MLPs.
TARGETS = {LOGGER: 1.15, STACK: 1.25}


def fresh_callbacks(name: str) -> list:
    """New callback instances for one fit of configuration `name`."""
    if name == PLAIN:
        return []
    if name == LOGGER:
        return [GradientNormLogger()]
    if name == STACK:
        return [GradientNormLogger(), NaNGuard(verbose=False), AutoClip()]
    raise ValueError(f"fresh_fits received configuration {name!r}; expected one of {CONFIGS}.")


class FirstBatch(keras.callbacks.Callback):
    """Notes when the first batch of a fit ended (`at`, perf_counter)."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.at = time.perf_counter()


def time_fresh_fits(model: str, build, data, steps: int, rounds: int, seed: int = 0,
                    log=print) -> list[dict]:
    """Times `rounds` whole fits of `steps` steps per configuration.

    Args:
        model: the model's name in the table.
        build: `build(name) -> keras.Model`, a fresh compiled model.
        data: `data(steps) -> tf.data.Dataset` of `steps` batches.
        steps: steps per timed fit.
        rounds: timed fits per configuration.

    Returns:
        One row per timed fit: model, config, repeat, seconds, first_batch.
    """
    nets = {}
    for name in CONFIGS:
        nets[name] = build(name)
        # Two untimed fits: a model's second fit pays ~1 s once in plain
        # Keras too (no retrace of train_step; seen 2026-12-07), which
        # would land on round 1 of some configurations only.
        for _ in range(2):
            nets[name].fit(data(steps), epochs=1, verbose=0, shuffle=False, callbacks=fresh_callbacks(name))
    rng = np.random.default_rng(seed)
    rows = []
    for round_ in range(rounds):
        for name in rng.permutation(CONFIGS):
            first = FirstBatch()
            callbacks = fresh_callbacks(str(name)) + [first]
            started = time.perf_counter()
            nets[name].fit(data(steps), epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
            seconds = time.perf_counter() - started
            rows.append({"model": model, "config": str(name), "repeat": round_,
                         "seconds": seconds, "first_batch": first.at - started})
            log(wrap(f"  whole fit {round_ + 1}/{rounds} {seconds:7.3f} s (first batch {first.at - started:6.3f} s)  "
                     f"{model}: {name}", indent=" " * 30))
    return rows


def fresh_table(raw: pd.DataFrame) -> pd.DataFrame:
    """Per model and configuration: median fit time, ratio to plain, first batch."""
    by_round = raw.pivot_table(index=["model", "repeat"], columns="config", values="seconds")
    out = []
    for (model, name), runs in raw.groupby(["model", "config"], sort=False):
        seconds = runs.set_index("repeat")["seconds"]
        ratios = seconds / by_round[PLAIN].loc[model].loc[seconds.index]
        target = TARGETS.get(name)
        ratio = float(np.median(ratios))
        out.append({
            "model": model, "configuration": name,
            "fit s": float(seconds.median()),
            "first batch s": float(runs["first_batch"].median()),
            "first batch max s": float(runs["first_batch"].max()),
            "ratio": ratio,
            "ratio min-max": f"{ratios.min():.3f}-{ratios.max():.3f}",
            "target": "" if target is None else f"<= {target:.2f}",
            "met": "" if target is None else ("met" if ratio <= target else "missed"),
        })
    return pd.DataFrame(out)
