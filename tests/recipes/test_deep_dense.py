"""Tests for `python -m recipes.deep_dense`: a real --quick run, flags, --out."""

import math

import numpy as np
import pandas as pd
import pytest

from gradguard.datasets import poorly_scaled_regression
from gradguard.recipes import deep_dense
from gradguard.recipes.runner import exploded


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "r"
    table = deep_dense.main(["--quick", "--out", str(out)])
    return table, out


def test_quick_run_writes_every_file(quick_run):
    table, out = quick_run
    for name in ("results.csv", "results.md", "grad_norms.png", "loss.png",
                 "grad_norms.csv", "summary.txt", "config.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for variant in deep_dense.VARIANTS:
        assert list((out / "tensorboard" / variant).rglob("events.out.tfevents.*")), variant
    # NaNGuard's report exists exactly for the runs it stopped.
    stopped = set(table.loc[table["nan_guard"] != "none", "variant"])
    assert {p.stem for p in (out / "nan_guard").glob("*.json")} == stopped


def test_baseline_explodes_and_mitigations_stay_finite(quick_run):
    table, out = quick_run
    assert list(table["variant"]) == list(deep_dense.VARIANTS)
    assert list(pd.read_csv(out / "results.csv")["variant"]) == list(deep_dense.VARIANTS)
    rows = table.set_index("variant")
    base = rows.loc["baseline"]
    mitigated = rows.drop(index="baseline")
    assert (
        not pd.isna(base["first_nonfinite_step"])
        or base["nan_guard"] != "none"
        or base["max_grad_norm"] >= 100 * mitigated["max_grad_norm"].max()
    )
    assert exploded(base)
    for name, row in mitigated.iterrows():
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]), name
        assert row["finite_weights"] and row["nan_guard"] == "none", name


def test_table_matches_independent_computations(quick_run):
    table, out = quick_run
    config = deep_dense.Config(quick=True)
    n_train, n_val, _ = config.sizes
    _, y = poorly_scaled_regression(n_train, config.n_features, seed=0)
    _, y_val = poorly_scaled_regression(n_val, config.n_features, seed=1)
    expected = np.mean((y_val.astype(np.float64) - y.astype(np.float64).mean()) ** 2)
    assert table["trivial_mse"].to_numpy() == pytest.approx(np.full(len(table), expected))
    norms = pd.read_csv(out / "grad_norms.csv")
    for _, row in table.iterrows():
        values = norms.loc[norms["variant"] == row["variant"], "grad_norm"].to_numpy()
        finite = values[np.isfinite(values)]
        assert row["median_grad_norm"] == pytest.approx(np.median(finite), rel=1e-6)
        bad = norms.loc[(norms["variant"] == row["variant"]) & ~np.isfinite(norms["grad_norm"]), "step"]
        if len(bad):
            assert row["first_nonfinite_step"] == bad.iloc[0]
        else:
            assert pd.isna(row["first_nonfinite_step"])
    # Standardizing removes the cause: its gradients are far smaller than the baseline's.
    rows = table.set_index("variant")
    assert rows.loc["standardize", "max_grad_norm"] * 100 < rows.loc["baseline", "max_grad_norm"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--depth", "-1"], "--depth received -1"),
        (["--variants", "nope"], "invalid choice: 'nope'"),
        (["--scale-range", "10", "1"], "--scale-range received 10 1"),
        (["--width", "0"], "--width received 0"),
    ],
)
def test_bad_flags_exit_2_before_training(flags, message, tmp_path, capsys):
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as info:
        deep_dense.main([*flags, "--out", str(out)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_existing_out_folder_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    with pytest.raises(SystemExit) as info:
        deep_dense.main(["--quick", "--out", str(out)])
    assert info.value.code == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_same_seed_same_table(tmp_path):
    flags = ["--quick", "--variants", "baseline", "standardize"]
    first = deep_dense.main([*flags, "--out", str(tmp_path / "a")])
    second = deep_dense.main([*flags, "--out", str(tmp_path / "b")])
    pd.testing.assert_frame_equal(first.drop(columns="wall_time_s"),
                                  second.drop(columns="wall_time_s"))
