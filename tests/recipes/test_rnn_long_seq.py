"""Tests for `python -m recipes.rnn_long_seq`: a real --quick run, flags, --out."""

import math

import numpy as np
import pandas as pd
import pytest

from gradguard.datasets import ADDING_PROBLEM_BASELINE_MSE
from gradguard.recipes import rnn_long_seq
from gradguard.recipes.runner import exploded, pre_explosion_norms, suggest_clip_threshold


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn") / "r"
    table = rnn_long_seq.main(["--quick", "--out", str(out)])
    return table, out


def test_quick_run_writes_every_file(quick_run):
    table, out = quick_run
    for name in ("results.csv", "results.md", "grad_norms.png", "loss.png",
                 "grad_norms.csv", "summary.txt", "config.json"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    for variant in rnn_long_seq.VARIANTS:
        events = list((out / "tensorboard" / variant).rglob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events for {variant}"
    assert (out / "grad_norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_run_has_one_row_per_variant(quick_run):
    table, out = quick_run
    assert list(table["variant"]) == list(rnn_long_seq.VARIANTS)
    written = pd.read_csv(out / "results.csv")
    assert list(written["variant"]) == list(rnn_long_seq.VARIANTS)
    np.testing.assert_allclose(written["val_loss"], table["val_loss"], rtol=1e-6)
    md = (out / "results.md").read_text()
    assert all(f"| {v} " in md for v in rnn_long_seq.VARIANTS)


def test_baseline_explodes_and_mitigations_stay_finite(quick_run):
    table, _ = quick_run
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
        assert row["finite_weights"], name
        assert row["nan_guard"] == "none", name
        assert pd.isna(row["first_nonfinite_step"]), name


def test_table_matches_independent_computations(quick_run):
    table, out = quick_run
    assert (table["trivial_mse"] == ADDING_PROBLEM_BASELINE_MSE).all()
    norms = pd.read_csv(out / "grad_norms.csv")
    for _, row in table.iterrows():
        values = norms.loc[norms["variant"] == row["variant"], "grad_norm"].to_numpy()
        finite = values[np.isfinite(values)]
        assert row["median_grad_norm"] == pytest.approx(np.median(finite), rel=1e-6)
        assert row["max_grad_norm"] == pytest.approx(finite.max(), rel=1e-6)
    rows = table.set_index("variant")
    assert rows.loc["lower_lr", "learning_rate"] == rnn_long_seq.Config.lower_lr
    assert rows.loc["clipnorm", "learning_rate"] == rnn_long_seq.Config.lr
    # Every clipped run's norm after clipping respects its threshold.
    clipped = norms.loc[norms["variant"] == "global_clipnorm", "grad_norm_clipped"]
    assert (clipped <= rnn_long_seq.Config.global_clipnorm * (1 + 1e-5)).all()


def test_summary_comes_from_the_table(quick_run):
    table, out = quick_run
    summary = (out / "summary.txt").read_text()
    assert summary.splitlines() == table.attrs["summary"]
    assert summary.startswith("baseline (lr=0.1, no protection) exploded")
    best = table[table["variant"] != "baseline"].sort_values("val_loss").iloc[0]
    assert f"lowest validation loss: {best['variant']}" in summary


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seq-len", "-5"], "--seq-len received -5"),
        (["--variants", "baseline", "nope"], "invalid choice: 'nope'"),
        (["--cell", "transformer"], "invalid choice: 'transformer'"),
        (["--lr", "0"], "--lr received 0.0"),
        (["--variants", "baseline", "baseline"], "name each variant once"),
    ],
)
def test_bad_flags_exit_2_before_training(flags, message, tmp_path, capsys):
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as info:
        rnn_long_seq.main([*flags, "--out", str(out)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_existing_out_folder_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.csv").write_text("keep me\n")
    with pytest.raises(SystemExit) as info:
        rnn_long_seq.main(["--quick", "--out", str(out)])
    assert info.value.code == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["results.csv"]
    assert (out / "results.csv").read_text() == "keep me\n"


def test_suggested_threshold_uses_norms_before_the_jump():
    norms = pd.DataFrame({"step": np.arange(1, 9),
                          "grad_norm": [7.0, 25.0, 25.0, 59.0, 2.0, 45.0, 17.0, 2245.0]})
    before = pre_explosion_norms(norms, events=[])
    np.testing.assert_array_equal(before, [7.0, 25.0, 25.0, 59.0, 2.0, 45.0, 17.0])
    assert suggest_clip_threshold(before) == pytest.approx(np.percentile(before, 90))
    # A NaNGuard event earlier than the jump ends the window there.
    assert len(pre_explosion_norms(norms, events=[{"step": 4}])) == 3


@pytest.mark.slow
def test_same_seed_same_table(tmp_path):
    flags = ["--quick", "--variants", "baseline", "clipnorm", "lower_lr"]
    first = rnn_long_seq.main([*flags, "--out", str(tmp_path / "a")])
    second = rnn_long_seq.main([*flags, "--out", str(tmp_path / "b")])
    pd.testing.assert_frame_equal(first.drop(columns="wall_time_s"),
                                  second.drop(columns="wall_time_s"))
