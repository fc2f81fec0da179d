"""Tests of the callback overhead benchmark: shape of its output, never timings."""

import argparse

import keras
import numpy as np
import pandas as pd
import pytest

from gradguard.benchmarks import callback_overhead, long_run, repeated_fit
from gradguard.benchmarks.report import overhead_table
from gradguard.benchmarks.tape_norm import TapeGradientNorm
from gradguard.benchmarks.timing import fit_exponent
from gradguard.callbacks import GradientNormLogger


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in `text`, as rows of cells (header row first)."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if not set(line) <= set("|-: "):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


@pytest.mark.parametrize("k", [0.5, 1.0, 1.7])
def test_fit_exponent_recovers_a_power_law(k):
    sizes = np.array([50, 100, 200, 400, 800])
    assert fit_exponent(sizes, 3e-4 * sizes**k) == pytest.approx(k)


def test_fit_exponent_needs_two_sizes():
    with pytest.raises(ValueError, match="at least two distinct sizes"):
        fit_exponent([100, 100], [1.0, 2.0])


def test_overhead_table_divides_by_plain_fit_of_the_same_round():
    raw = pd.DataFrame({
        "model": ["m"] * 4,
        "config": ["plain fit", "logger every 50 steps"] * 2,
        "repeat": [0, 0, 1, 1],
        "seconds": [1.0, 1.5, 2.0, 2.0],  # round 1 ran twice as slow
        "cpu_seconds": [1.0, 1.2, 1.0, 1.2],
        "steps": [10] * 4,
        "first_step_s": [0.1] * 4,
    })
    table = overhead_table(raw).set_index("configuration")
    assert table.loc["plain fit", "ratio"] == 1.0
    assert table.loc["logger every 50 steps", "ratio"] == pytest.approx(1.25)
    assert table.loc["logger every 50 steps", "ratio min-max"] == "1.000-1.500"
    assert table.loc["logger every 50 steps", "CPU-time ratio"] == pytest.approx(1.2)
    assert table.loc["logger every 50 steps", "met"] == "missed"


def test_repeated_fit_table_divides_by_plain_fit_of_the_same_pattern_and_round():
    raw = pd.DataFrame({
        "config": ["plain fit", "logger every 50 steps"] * 3,
        "pattern": ["a", "a", "a", "a", "b", "b"],
        "repeat": [0, 0, 1, 1, 0, 0],
        "seconds": [2.0, 2.2, 4.0, 4.0, 1.0, 3.0],  # round 1 twice as slow
        "second_first_step_s": [0.02, 0.03, 0.02, 0.05, 0.02, 2.0],
    })
    table = repeated_fit.summary_table(raw).set_index(["pattern", "configuration"])
    row = table.loc[("a", "logger every 50 steps")]
    assert row["ratio"] == pytest.approx(1.05) and row["ratio min-max"] == "1.000-1.100"
    assert row["2nd fit first step ms"] == pytest.approx(40.0)
    assert row["met"] == "met"
    assert table.loc[("b", "logger every 50 steps"), "met"] == "missed"


def test_long_run_table_takes_medians_and_divides_by_plain_fit():
    raw = pd.DataFrame({
        "config": ["plain fit", "logger every step, log_dir"] * 2,
        "repeat": [0, 0, 1, 1],
        "ms_per_step": [2.0, 2.4, 2.0, 2.8],
        "mib_per_1000": [0.1, 0.2, 0.1, 0.4],
        "event_bytes_per_step": [0.0, 800.0, 0.0, 800.0],
        "rss_end_mib": [700.0, 720.0, 700.0, 722.0],
    })
    table = long_run.summary_table(raw).set_index("configuration")
    row = table.loc["logger every step, log_dir"]
    assert row["ratio"] == pytest.approx(1.3)
    assert row["RSS growth MiB/1000 steps"] == pytest.approx(0.3)
    assert row["event bytes/step"] == 800.0


def test_long_run_refuses_steps_it_cannot_sample(capsys):
    with pytest.raises(SystemExit):
        long_run.main(["--steps", "2500"])
    assert "expected a multiple of 1000 >= 3000" in capsys.readouterr().err


def test_mirrored_step_needs_its_own_process(capsys):
    from gradguard.benchmarks import mirrored_step

    with pytest.raises(SystemExit):
        mirrored_step.main(["--quick"])  # pytest's process has one CPU device
    assert "needs 2 logical CPU devices" in capsys.readouterr().err


def test_existing_out_is_refused_before_running(tmp_path, capsys):
    out = tmp_path / "mine.md"
    out.write_text("a user's file")
    with pytest.raises(SystemExit):
        callback_overhead.main(["--quick", "--out", str(out)])
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "a user's file"


def test_default_out_gets_a_new_name_when_taken(tmp_path, monkeypatch):
    default = tmp_path / "callback_overhead.md"
    default.write_text("an earlier run")
    monkeypatch.setattr(callback_overhead, "DEFAULT_OUT", default)
    path = callback_overhead.output_path(None, argparse.ArgumentParser())
    assert path != default and path.parent == tmp_path
    assert path.name.startswith("callback_overhead-") and path.suffix == ".md"


def test_tape_workaround_norm_equals_logged_norm():
    # The workaround must do the same work as the monitor: same batch, same
    # weights, same global norm.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 5)).astype("float32")
    y = rng.normal(size=(24, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    tape = TapeGradientNorm(x, y, 8, keras.losses.MeanSquaredError())
    logger = GradientNormLogger()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[tape, logger])
    logged = logger.to_dataframe("global")["grad_norm"].to_numpy()
    np.testing.assert_allclose(tape.norms, logged, rtol=1e-5)


@pytest.mark.slow
def test_quick_run_writes_one_row_per_configuration(tmp_path):
    out = tmp_path / "overhead.md"
    assert callback_overhead.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Callback overhead\n\nMachine: ")
    overhead, scaling, repeated, long = markdown_tables(text)
    header, rows = overhead[0], overhead[1:]
    assert header[:2] == ["model", "configuration"] and "ratio" in header
    assert len(rows) == len(callback_overhead.QUICK.models) * len(callback_overhead.CONFIGS)
    assert all(len(row) == len(header) for row in rows)
    ratio = header.index("ratio")
    plain = [row for row in rows if row[1] == "plain fit"]
    assert [float(row[ratio]) for row in plain] == [1.0]
    assert len(scaling) - 1 == len(callback_overhead.QUICK.scaling_seq_lens)
    assert "Fitted exponent" in text
    assert len(repeated) - 1 == len(repeated_fit.PATTERNS) * len(repeated_fit.CONFIGS)
    assert len(long) - 1 == len(long_run.CONFIGS)
    assert "**met**" in text or "**missed**" in text
