"""Tests for variants, the experiment table's verdicts and their analysis (no training)."""

import itertools
import math
import re

import keras
import numpy as np
import pandas as pd
import pytest

from gradguard.recipes import analysis
from gradguard.recipes.experiment import LEARNED_RATIO, Row, judge
from gradguard.recipes.variants import CLIP_MODES, Variant, factorial_variants, make_optimizer
from gradguard.recipes.run_files import RunFolderError, write_atomic


@pytest.mark.parametrize("name, mods, optimizer", [
    ("baseline", set(), None),
    ("global_clipnorm", {"global_clipnorm"}, None),
    ("batchnorm+standardize", {"batchnorm", "standardize"}, None),
    ("global_clipnorm+batchnorm@adam", {"global_clipnorm", "batchnorm"}, "adam"),
    ("baseline@momentum", set(), "momentum"),
])
def test_variant_parse(name, mods, optimizer):
    variant = Variant.parse(name)
    assert (variant.mods, variant.optimizer, variant.name) == (mods, optimizer, name)
    assert variant.clip == next((m for m in CLIP_MODES if m in mods), None)


@pytest.mark.parametrize("name, problem", [
    ("nope", "modifiers 'nope'"),
    ("batchnorm+batchnorm", "modifiers 'batchnorm+batchnorm'"),
    ("clipnorm+autoclip", "'clipnorm+autoclip' with more than one clipping mode; pick one"),
    ("baseline@adagrad", "optimizer 'adagrad'; expected one of sgd, momentum, adam, rmsprop"),
])
def test_variant_parse_errors_name_the_value_and_the_fix(name, problem):
    with pytest.raises(ValueError, match=re.escape(f"--variants received {name!r}: {problem}")):
        Variant.parse(name)


@pytest.mark.parametrize("clip", [None, "global_clipnorm", "autoclip"])
def test_factorial_variants_cover_every_combination_once(clip):
    names = factorial_variants(clip)
    factors = ["batchnorm", "standardize"] + ([clip] if clip else [])
    combos = {frozenset(Variant.parse(n).mods) for n in names}
    expected = {frozenset(f for f, on in zip(factors, bits) if on)
                for bits in itertools.product([False, True], repeat=len(factors))}
    assert combos == expected and len(names) == len(expected)


@pytest.mark.parametrize("name, cls, momentum", [
    ("sgd", keras.optimizers.SGD, 0.0), ("momentum", keras.optimizers.SGD, 0.9),
    ("adam", keras.optimizers.Adam, None), ("rmsprop", keras.optimizers.RMSprop, None)])
def test_make_optimizer(name, cls, momentum):
    optimizer = make_optimizer(name, 0.003)
    assert type(optimizer) is cls
    assert float(optimizer.learning_rate) == pytest.approx(0.003)
    if momentum is not None:
        assert optimizer.momentum == momentum


def test_judge_against_a_hand_computation():
    trivial = 0.5
    history = {"loss": [0.6, 0.2, 0.04, 0.03], "val_loss": [0.55, 0.06, 0.045, 0.049]}
    norms = pd.DataFrame({"step": [1, 2, 3, 4, 5], "grad_norm": [1.0, 3.0, np.inf, 2.0, np.nan]})
    row = judge(history, norms, [{"action": "stop", "step": 5, "trigger": "nonfinite_gradient"}], trivial)
    ratios = np.array(history["val_loss"]) / trivial
    assert row["val/trivial"] == pytest.approx(ratios[-1])
    assert row["learned"] == bool(ratios[-1] <= LEARNED_RATIO)
    assert row["learned_epoch"] == 1 + int(np.argmax(ratios <= LEARNED_RATIO))
    assert row["exploded_step"] == 3  # the first non-finite norm, before the event at 5
    assert row["max_grad_norm"] == 3.0 and row["median_grad_norm"] == 2.0
    assert row["nan_guard"] == "stop at step 5 (nonfinite_gradient)"
    calm = judge({"loss": [1.0], "val_loss": [0.9]}, norms.iloc[:2], [], trivial)
    assert calm["exploded_step"] is None and calm["learned_epoch"] is None and not calm["learned"]


def test_write_atomic_replaces_whole_files_and_names_the_path_on_failure(tmp_path):
    path = write_atomic(tmp_path / "sub" / "a.csv", "x\n1\n")
    assert path.read_text() == "x\n1\n"
    write_atomic(path, b"x\n2\n")
    assert path.read_text() == "x\n2\n"
    blocked = tmp_path / "sub" / "results.md"
    blocked.mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(RunFolderError, match=re.escape(f"could not write {str(blocked)!r}")):
        write_atomic(blocked, "text")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.csv", "results.md"]
    assert path.read_text() == "x\n2\n"


def _table(values: dict, trivial=1.0) -> pd.DataFrame:
    """A results table from {(variant, seed): val/trivial}; inf marks an explosion."""
    rows = []
    for (variant, seed), ratio in values.items():
        rows.append({"variant": variant, "cell": "c", "seed": seed, "optimizer": "sgd",
                     "learning_rate": 0.1, "val_loss": ratio * trivial, "val/trivial": ratio,
                     "trivial_mse": trivial, "learned": ratio <= LEARNED_RATIO,
                     "learned_epoch": pd.NA, "max_grad_norm": 10.0 * (seed + 1),
                     "exploded_step": 4 if math.isinf(ratio) else pd.NA, "finite_weights": True,
                     "nan_guard": "none"})
    return pd.DataFrame(rows).astype({"learned_epoch": "Int64", "exploded_step": "Int64"})


def test_effects_and_spread_match_hand_computed_means():
    rng = np.random.default_rng(0)
    names = factorial_variants()
    values = {(v, s): float(rng.uniform(0.2, 1.0)) for v in names for s in range(3)}
    table = _table(values)
    for e in analysis.effects(table):
        on = [r for (v, _), r in values.items() if e["factor"] in Variant.parse(v).mods]
        off = [r for (v, _), r in values.items() if e["factor"] not in Variant.parse(v).mods]
        assert e["with"] == pytest.approx(np.mean(on)) and e["without"] == pytest.approx(np.mean(off))
        ranges = [np.ptp([values[(v, s)] for s in range(3)]) for v in names]
        assert e["spread"] == pytest.approx(max(ranges))
        assert e["real"] == (abs(np.mean(on) - np.mean(off)) > max(ranges))
    assert {e["factor"] for e in analysis.effects(table)} == {"batchnorm", "standardize"}
    spread = analysis.spread_table(table)
    for _, g in spread.iterrows():
        seeds = [values[(g["variant"], s)] for s in range(3)]
        assert (g["val_loss"], g["val_loss_min"], g["val_loss_max"]) == pytest.approx(
            (np.mean(seeds), min(seeds), max(seeds)))
        assert g["max_grad_norm"] == pytest.approx(20.0) and g["seeds"] == 3


@pytest.mark.parametrize("on, off, real", [
    ([0.1, 0.12, 0.11], [0.9, 0.95, 0.92], True),   # far apart: real
    ([0.5, 0.7, 0.6], [0.55, 0.75, 0.65], False),   # overlapping: noise
    ([0.5], [0.9], None),                           # one seed: unknown
])
def test_compare_calls_a_difference_real_only_beyond_the_spread(on, off, real):
    diff, spread, verdict = analysis.compare(np.array(on), np.array(off))
    assert diff == pytest.approx(np.mean(on) - np.mean(off))
    assert verdict is real


def test_summary_says_real_only_beyond_the_spread():
    table = _table({("baseline", 0): math.inf, ("baseline", 1): math.inf,
                    ("standardize", 0): 0.05, ("standardize", 1): 0.06,
                    ("batchnorm", 0): 0.5, ("batchnorm", 1): 0.9})
    lines = analysis.summarize(table, 1.5, ["x"])
    text = "\n".join(lines)
    assert "baseline / c exploded in 2/2 seeds: first at step 4" in text
    assert "learned (val <= 0.1 x the constant prediction's 1): standardize / c in 2/2 seeds" in text
    assert "lowest val/trivial: standardize / c (0.055); next batchnorm / c (0.7): +0.645, larger " \
           "than the seed spread 0.4: a real difference" in text
    assert lines[-1].startswith("suggested clipping threshold: 1.5 (90th percentile")


def test_suggested_threshold_pools_the_stable_unclipped_rows():
    table = _table({("baseline", 0): math.inf, ("lower_lr", 0): 0.9, ("batchnorm", 0): 0.8,
                    ("global_clipnorm", 0): 0.7})
    rng = np.random.default_rng(1)
    norms = {Row(v, "c", 0).name: pd.DataFrame({"step": np.arange(1, 51),
                                                 "grad_norm": rng.lognormal(size=50)})
             for v in table["variant"]}
    threshold, used = analysis.suggest_clip_threshold(table, norms)
    assert used == [Row("lower_lr", "c", 0).name, Row("batchnorm", "c", 0).name]
    pooled = np.concatenate([norms[n]["grad_norm"] for n in used])
    assert threshold == pytest.approx(np.percentile(pooled, 90))
