"""Tests of the callback overhead benchmark: shape of its output, never timings."""

import argparse
import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest

from gradguard.benchmarks import callback_overhead, fresh_fits, long_run, repeated_fit
from gradguard.benchmarks.overhead_models import MODELS, batches, build_network, make_data
from gradguard.benchmarks.report import (
    MONITOR, PLAIN_AGAIN, PLAIN_ALONE, alone_lines, overhead_table, target_lines,
)
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


def test_overhead_table_divides_the_extra_time_by_plain_fit_alone():
    raw = pd.DataFrame({
        "model": ["m"] * 9,
        "config": [PLAIN_ALONE, "plain fit", "logger every 50 steps"] * 3,
        "repeat": [0, 0, 0, 1, 1, 1, 2, 2, 2],
        # Interleaved, every step is slower than alone; round 1 ran slow.
        "seconds": [0.8, 1.0, 1.5, 1.6, 2.0, 2.0, 0.9, 1.2, 1.3],
        "steps": [10] * 9,
    })
    table = overhead_table(raw).set_index("configuration")
    assert PLAIN_ALONE not in table.index
    row = table.loc["logger every 50 steps"]
    extra = np.array([1.5 - 1.0, 2.0 - 2.0, 1.3 - 1.2]) / 10
    alone = np.array([0.8, 1.6, 0.9]) / 10
    assert row["extra ms/step"] == pytest.approx(1e3 * np.median(extra))
    assert row["ratio"] == pytest.approx(1 + np.median(extra) / np.median(alone))
    per_round = 1 + extra / alone
    assert row["ratio min-max"] == f"{per_round.min():.3f}-{per_round.max():.3f}"
    assert row["interleaved ratio"] == pytest.approx(
        np.median([1.5, 2.0, 1.3]) / np.median([1.0, 2.0, 1.2]))
    assert row["ms/step"] == pytest.approx(150.0)
    assert table.loc["plain fit", "ratio"] == 1.0
    assert table.loc["plain fit", "extra ms/step"] == 0.0
    (line,) = alone_lines(raw)
    assert line == ("- m: plain fit alone 90.000 ms/step (min-max 80.00-160.00), "
                    "interleaved 120.000 ms/step")


def test_targets_are_judged_per_model_family_and_against_the_monitor():
    configs = ["plain fit", MONITOR, "logger every 50 steps",
               "logger every step, per layer", PLAIN_AGAIN]
    raw = pd.DataFrame({
        "model": ["LSTM"] * 5 + ["MLP"] * 5,
        "config": configs * 2,
        "repeat": [0] * 10,
        "seconds": [1.0, 1.01, 1.015, 1.04, 0.99, 1.0, 1.2, 1.25, 1.1, 1.02],
        "steps": [10] * 10,
    })
    table = overhead_table(raw).set_index(["model", "configuration"])
    assert table.loc[("LSTM", "logger every 50 steps"), "met"] == "met"  # <= 1.03
    assert table.loc[("LSTM", "logger every step, per layer"), "met"] == "met"  # <= 1.05
    assert table.loc[("MLP", MONITOR), "met"] == "missed"
    assert table.loc[("MLP", "logger every step, per layer"), "met"] == "met"  # <= 1.15
    lines = "\n".join(target_lines(table.reset_index()))
    assert "LSTM, logger every 50 steps <= monitor alone + 1% (1.015 vs 1.010): **met**" in lines
    assert "MLP, logger every 50 steps <= monitor alone + 1% (1.250 vs 1.200): **missed**" in lines
    assert "MLP, noise floor: a second plain fit reads 1.020 (min-max 1.020-1.020)" in lines


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


def check_quick_report(text: str, config) -> None:
    """The report's structure: header, one row per configuration, targets."""
    assert text.startswith("# Callback overhead\n\nMachine: ")
    assert "load average" in text and "Load average at the end: " in text
    overhead, *fresh = markdown_tables(text)
    header, rows = overhead[0], overhead[1:]
    if config.fresh_models:  # the whole-fit table: one row per configuration
        (fresh,) = fresh
        assert fresh[0][:2] == ["model", "configuration"] and "first batch s" in fresh[0]
        assert sorted(row[1] for row in fresh[1:]) == sorted(fresh_fits.CONFIGS)
    else:
        assert fresh == []
    assert header[:3] == ["model", "configuration", "jit_compile"]
    for column in ("extra ms/step", "ratio", "ratio min-max", "interleaved ratio", "met"):
        assert column in header
    assert f"- {config.models[0]}: plain fit alone " in text
    assert [row[1] for row in rows] == list(config.configs)
    assert all(len(row) == len(header) for row in rows)
    plain = rows[0]
    assert float(plain[header.index("ratio")]) == 1.0
    assert plain[header.index("jit_compile")] == "False"  # 'auto' on a CPU
    assert "**met**" in text or "**missed**" in text


def test_quick_run_of_two_configurations_writes_the_table(tmp_path, monkeypatch):
    quick = dataclasses.replace(callback_overhead.QUICK, rounds=2, configs=(
        callback_overhead.PLAIN, callback_overhead.EVERY_STEP), fresh_rounds=1)
    monkeypatch.setattr(callback_overhead, "QUICK", quick)
    out = tmp_path / "overhead.md"
    assert callback_overhead.main(["--quick", "--out", str(out)]) == 0
    check_quick_report(out.read_text(), quick)


@pytest.mark.slow
def test_quick_run_writes_one_row_per_configuration(tmp_path):
    out = tmp_path / "overhead.md"
    assert callback_overhead.main(["--quick", "--out", str(out)]) == 0
    check_quick_report(out.read_text(), callback_overhead.QUICK)


def test_fresh_table_divides_each_fit_by_plain_fit_of_the_same_round():
    raw = pd.DataFrame({
        "model": ["m"] * 6,
        "config": [fresh_fits.PLAIN, fresh_fits.LOGGER, fresh_fits.STACK] * 2,
        "repeat": [0, 0, 0, 1, 1, 1],
        "seconds": [1.0, 1.1, 1.5, 2.0, 2.6, 2.4],  # round 1 twice as slow
        "first_batch": [0.02, 1.2, 0.03, 0.02, 0.02, 0.04],
    })
    table = fresh_fits.fresh_table(raw).set_index("configuration")
    assert table.loc[fresh_fits.LOGGER, "ratio"] == pytest.approx(1.2)  # of 1.1, 1.3
    assert table.loc[fresh_fits.STACK, "ratio"] == pytest.approx(1.35)  # of 1.5, 1.2
    assert table.loc[fresh_fits.LOGGER, "met"] == "missed"  # > 1.15
    assert table.loc[fresh_fits.STACK, "met"] == "missed"  # > 1.25
    assert table.loc[fresh_fits.LOGGER, "first batch max s"] == pytest.approx(1.2)


@pytest.mark.parametrize("model", ["text Embedding 20k x 128", "multi-input (2 inputs)"])
def test_text_and_multi_input_models_train_on_their_pipeline(model):
    spec = MODELS[model]
    x, y = make_data(spec, 2 * spec.batch_size)
    net = build_network(spec, x)
    net.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in net.get_weights()]
    net.fit(batches(x, y, spec.batch_size, 2), verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    if spec.kind == "text":
        assert net.layers[0].input_dim >= 20_000
        tokens = np.asarray(x).ravel()
        assert len(np.unique(tokens)) < len(tokens) / 2  # tokens repeat in a batch
