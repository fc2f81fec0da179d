"""Tests for `python -m recipes.deep_dense`: factorial x seeds, interrupt and resume, defaults."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gradguard.datasets import poorly_scaled_regression
from gradguard.recipes import analysis, deep_dense
from gradguard.recipes.experiment import LEARNED_RATIO
from gradguard.recipes.report import _python_command
from gradguard.recipes.variants import Variant

# Small rows (about 1-3 s each) for the default suite.
SMALL = ["--depth", "3", "--width", "16", "--n-train", "1024", "--n-val", "256", "--epochs", "2"]
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def factorial_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "f"
    flags = [*SMALL, "--epochs", "1", "--factorial", "--seeds", "2", "--optimizer", "adam"]
    return deep_dense.main([*flags, "--out", str(out)]), out


def test_factorial_with_seeds_has_every_cell_of_the_design(factorial_run):
    table, out = factorial_run
    assert len(table) == 8
    combos = table.groupby("variant")["seed"].apply(sorted).to_dict()
    assert combos == {v: [0, 1] for v in ("baseline", "batchnorm", "standardize", "batchnorm+standardize")}
    assert (table["optimizer"] == "adam").all() and (table["learning_rate"] == deep_dense.DEFAULT_LR["adam"]).all()


def test_trivial_mse_and_the_split_are_one_task(factorial_run):
    table, _ = factorial_run
    config = deep_dense.Config(n_train=1024, n_val=256)
    x, y = poorly_scaled_regression(1280, config.n_features, seed=0)
    expected = np.mean((y[1024:].astype(np.float64) - y[:1024].astype(np.float64).mean()) ** 2)
    assert table["trivial_mse"].to_numpy() == pytest.approx(np.full(len(table), expected))
    np.testing.assert_allclose(table["val/trivial"], table["val_loss"] / expected, rtol=1e-9)


def test_effects_in_the_summary_match_the_table(factorial_run):
    table, out = factorial_run
    summary = (out / "summary.txt").read_text()
    for factor in ("batchnorm", "standardize"):
        on = table[[factor in Variant.parse(v).mods for v in table["variant"]]]["val/trivial"]
        off = table[[factor not in Variant.parse(v).mods for v in table["variant"]]]["val/trivial"]
        ranges = table.groupby("variant")["val/trivial"].agg(np.ptp)
        diff, spread = on.mean() - off.mean(), ranges.max()
        verdict = "a real difference" if abs(diff) > spread else "not a real difference"
        assert (f"effect of {factor} on dense (2 pairs, 4 runs each side): exploded 0 without, 0 with; "
                f"val/trivial {off.mean():.3g} without, {on.mean():.3g} with: {diff:+.3g}") in summary
        assert verdict in summary.split(f"effect of {factor}")[1].splitlines()[0]
    md = (out / "results.md").read_text()
    assert "Mean and min..max over seeds" in md
    spread = analysis.spread_table(table)
    assert list(spread["seeds"]) == [2, 2, 2, 2]


def _wait_for_rows(path: pathlib.Path, n: int, proc, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and len(pd.read_csv(path)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never had {n} rows")


RESUME = [*SMALL, "--variants", "baseline", "standardize", "batchnorm+standardize@adam"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_interrupted_run_resumes_to_the_same_table(sig, tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "recipes.deep_dense", *RESUME, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(out / "results.csv", 1, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    finished = pd.read_csv(out / "results.csv")
    assert 1 <= len(finished) < 3, "interrupt landed after the last row"
    assert err.strip().splitlines()[-1] == (
        f"Interrupted: {len(finished)} finished row{'s' * (len(finished) != 1)} saved in "
        f"{out}/results.csv; finish the run with: {_python_command()} -m recipes.deep_dense --resume {out}")
    assert not list(out.rglob("*.incomplete")) and not list(out.rglob(".*.tmp-*"))
    assert sorted(p.name for p in (out / "rows").iterdir()) == sorted(
        f"{v}-dense-seed0" for v in finished["variant"])

    # A folder where results.md should go: the resumed run trains the missing
    # rows, then fails to write the report with the path named.
    (out / "results.md").mkdir()
    with pytest.raises(SystemExit) as info:
        deep_dense.main(["--resume", str(out)])
    assert info.value.code == 1
    assert len(pd.read_csv(out / "results.csv")) == 3
    (out / "results.md").rmdir()

    resumed = deep_dense.main(["--resume", str(out)])  # nothing left to train
    again = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(again.iloc[:len(finished)], finished, check_dtype=False)  # not retrained
    fresh = deep_dense.main([*RESUME, "--out", str(tmp_path / "fresh")])
    pd.testing.assert_frame_equal(resumed.drop(columns="wall_time_s"), fresh.drop(columns="wall_time_s"))
    assert (out / "grad_norms.png").is_file() and (out / "loss.png").is_file()


def test_a_swallowed_sigterm_stops_the_run_at_the_next_row(tmp_path, monkeypatch, capsys):
    # A C extension can clear the handler's exception instead of raising it
    # (CI once saw a SIGTERM after row 1 end in exit code 0 with every row
    # trained). The flag the handler sets must still stop the run between rows.
    from gradguard.recipes import experiment, resume

    train = experiment.Experiment.train

    def train_then_swallowed_sigterm(self, row):
        result = train(self, row)
        resume.STOPPING["requested"] = True  # what the handler sets before raising
        return result

    monkeypatch.setattr(experiment.Experiment, "train", train_then_swallowed_sigterm)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        deep_dense.main([*RESUME, "--out", str(out)])
    assert info.value.code == 130
    assert len(pd.read_csv(out / "results.csv")) == 1
    assert "Interrupted: 1 finished row saved in" in capsys.readouterr().err
    assert not resume.STOPPING["requested"], "the next run in this process starts clean"
    assert not (out / "results.md").exists()


def test_resume_refuses_other_flags_and_non_run_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        deep_dense.main(["--resume", str(tmp_path), "--epochs", "3"])
    assert info.value.code == 2
    assert "--resume takes every setting from" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        deep_dense.main(["--resume", str(tmp_path)])
    assert info.value.code == 2
    assert f"--resume received {str(tmp_path)!r}, which has no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--depth", "-1"], "--depth received -1"),
    (["--variants", "nope"], "--variants received 'nope'"),
    (["--scale-range", "10", "1"], "--scale-range received 10 1"),
    (["--optimizer", "sgdd"], "invalid choice 'sgdd'"),
])
def test_bad_flags_exit_2_before_training(flags, message, refused):
    assert message in refused(deep_dense.main, flags)


@pytest.mark.slow
def test_default_run_explodes_and_a_cure_learns(tmp_path):
    table = deep_dense.main(["--out", str(tmp_path / "r")])
    rows = table.set_index("variant")
    assert not pd.isna(rows.loc["baseline", "exploded_step"])
    _, y = poorly_scaled_regression(4096 + 1024, 8, seed=0)
    var_y = float(np.mean((y[4096:] - y[:4096].mean()) ** 2))
    learned = table[table["val_loss"] <= LEARNED_RATIO * var_y]
    assert len(learned) and learned["learned"].all()


@pytest.mark.slow
def test_same_seed_same_table(tmp_path):
    flags = ["--quick", "--variants", "baseline", "standardize"]
    first = deep_dense.main([*flags, "--out", str(tmp_path / "a")])
    second = deep_dense.main([*flags, "--out", str(tmp_path / "b")])
    pd.testing.assert_frame_equal(first.drop(columns="wall_time_s"), second.drop(columns="wall_time_s"))


def test_run_takes_a_config_and_returns_the_table(tmp_path):
    config = deep_dense.Config(quick=True, depth=2, width=8, variants=("standardize",), out=str(tmp_path / "r"))
    table = deep_dense.run(config)
    assert list(table["variant"]) == ["standardize"] and table.attrs["out_dir"] == str(tmp_path / "r")
    assert pd.read_csv(tmp_path / "r" / "results.csv")["val_loss"].tolist() == pytest.approx(table["val_loss"].tolist())
