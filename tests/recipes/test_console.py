"""What a recipe prints and draws: quiet start, --help without Keras, compact table, summary, plots."""

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gradguard.recipes import console, plots

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _table(n=14):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "variant": [f"global_clipnorm+batchnorm@adam{i}" for i in range(n)], "cell": "simple_rnn",
        "seed": 0, "optimizer": "adam", "learning_rate": 0.01,
        "val_loss": rng.lognormal(size=n) * 1e5, "val/trivial": rng.lognormal(size=n) * 1e3,
        "learned": [i % 3 == 0 for i in range(n)],
        "learned_epoch": pd.array([1 if i % 3 == 0 else None for i in range(n)], dtype="Int64"),
        "exploded_step": pd.array([12 if i == 1 else None for i in range(n)], dtype="Int64"),
        "max_grad_norm": rng.lognormal(size=n) * 1e5, "median_grad_norm": rng.lognormal(size=n),
        "nan_guard": ["stop at step 12 (gradient_spike)" if i == 1 else "none" for i in range(n)],
        "epochs_run": 8, "wall_time_s": 123.456,
    })


def test_console_table_is_compact_rounded_and_blank_for_missing():
    table = _table()
    text = console.console_table(table)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120 and len(lines) == len(table) + 1
    header = lines[0].split()
    assert header[:5] == ["variant", "cell", "learned", "exploded@", "val/trivial"]  # verdicts first
    assert "seed" not in header  # one seed: no column for it
    assert "<NA>" not in text and "nan" not in text and "None" not in text
    row = lines[2].split()  # the exploded row: no `learned`, the stop's step, 3 digits
    assert row[2] == "12" and row[3] == f"{table['val/trivial'][1]:.3g}"
    assert "stop@12" in lines[2] or "NaNGuard" not in header
    assert console.console_table(table, width=70).count("\n") == len(table)
    assert max(map(len, console.console_table(table, width=70).splitlines())) <= 70


def test_text_table_keeps_120_columns_and_wraps_the_last_column_under_itself():
    long = "standardize the targets + Normalization in front of the inputs + learning rate x0.1"
    frame = pd.DataFrame({"trial": [0, 12], "change": ["as given", long], "val_loss": [101755.0, None],
                          "learned": [False, True]}).astype(object)
    frame = frame.where(frame.notna(), None)
    lines = console.text_table(frame, last="change", width=60).splitlines()
    assert max(map(len, lines)) <= 60 and lines[0].split() == ["trial", "val_loss", "learned", "change"]
    start = lines[0].index("change")
    assert lines[1].split() == ["0", "1.018e+05", "False", "as", "given"]
    assert " ".join(line[start:] for line in lines[2:]) == long  # every word, in order, under its column
    assert all(line[:start].strip() == "" for line in lines[3:])
    assert lines[2][:start].split() == ["12", "True"]  # a missing number is blank


def test_progress_line_counts_rows_and_estimates_the_time_left():
    assert console.progress_line(1, 14, "a", 0.0, 0, 112) == "[1/14] a  (0 s so far)"
    # 9 epochs in 90 s: 10 s each; 11 rows of 8 epochs left: 880 s.
    assert console.progress_line(4, 14, "b", 90.0, 9, 88) == "[4/14] b  (1 min 30 s so far, about 14 min 40 s left)"
    assert console.duration(3725) == "1 h 02 min"


def test_startup_noise_is_matched_and_other_lines_are_kept():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796125556.251195    7019 cudart_stub.cc:31] Could not find cuda drivers on your "
        "machine, GPU will not be used.",
        "E0000 00:00:1796125564.326469    7019 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
        "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    assert all(console.STARTUP_NOISE.match(line) for line in noise)
    assert not console.STARTUP_NOISE.match("E0000 00:00:1.0  7 some_op.cc:1] a real error")
    assert not console.STARTUP_NOISE.match("Traceback (most recent call last):")


def test_help_and_flag_errors_answer_before_keras_loads():
    script = (
        "import sys\n"
        "from gradguard.recipes import rnn_long_seq\n"
        "for argv in (['--help'], ['--seeds', '0']):\n"
        "    try:\n"
        "        rnn_long_seq.main(argv)\n"
        "    except SystemExit as e:\n"
        "        print('exit', e.code)\n"
        "print('loaded:', [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules])\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert "exit 0" in out.stdout and "exit 2" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "loaded: []"
    assert "--seeds received 0; expected an int >= 1." in out.stderr
    assert "absl" not in out.stderr and "cuInit" not in out.stderr


@pytest.mark.parametrize("values, log", [
    ([np.array([0.2, 0.16, np.nan]), np.array([0.15, np.inf])], False),
    ([np.array([0.17, 1.86e8]), np.array([270.6, 0.01])], True),
])
def test_loss_axis_holds_every_finite_value(values, log):
    is_log, low, high = plots._y_range(values, (1 / 6,))
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    assert is_log == log and low <= finite.min() and high >= finite.max()


def test_verdicts_name_the_exploded_and_the_learned():
    assert plots.verdict(12, False, math.inf) == ("exploded @ step 12", plots.EXPLODED)
    assert plots.verdict(pd.NA, True, 0.0061) == ("learned, 0.0061", plots.LEARNED)
    assert plots.verdict(None, False, 1624.0)[0] == "stable, not learned, 1.62e+03"


def test_time_left_times_each_kind_of_row_by_its_own_measured_epochs():
    assert console.time_left({}, ["lstm"], 8) is None  # nothing measured: no guess
    # SimpleRNN epochs took 2 s, LSTM epochs 10 s (one row stopped after 2 of 8 epochs).
    spent = {"simple_rnn": (16.0, 8), "lstm": (20.0, 2)}
    assert console.time_left(spent, ["simple_rnn", "lstm", "lstm"], 8) == 2 * 8 + 10 * 8 * 2
    # A kind not measured yet runs at the mean over every epoch measured: 36 s / 10 epochs.
    assert console.time_left(spent, ["gru"], 5) == 36.0 / 10 * 5
    line = console.progress_line(3, 14, "c", 36.0, 10, 96, left=console.time_left(spent, ["lstm"] * 12, 8))
    assert line == "[3/14] c  (36 s so far, about 16 min 00 s left)"


def _red_pixels(path) -> int:
    import matplotlib.image

    rgb = (matplotlib.image.imread(path)[..., :3] * 255).astype(int)
    return int(np.sum((abs(rgb[..., 0] - 214) < 20) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)))


def test_first_steps_draws_the_exploded_row_in_red_and_nothing_red_without_one(tmp_path):
    rng = np.random.default_rng(0)
    steps = np.arange(1, 201)
    rows = {"baseline": [6, 22, 24, 40, 387], "global_clipnorm": list(rng.lognormal(size=200)),
            "lower_lr": list(rng.lognormal(size=200))}
    table = pd.DataFrame({"variant": list(rows), "cell": "simple_rnn", "seed": 0,
                          "exploded_step": pd.array([5, None, None], dtype="Int64"),
                          "learned": [False, True, False]})
    norms = {f"{v}-simple_rnn-seed0": pd.DataFrame({"step": steps[:len(n)], "grad_norm": n})
             for v, n in rows.items()}
    path = plots.plot_first_steps(table, norms, tmp_path / "first_steps.png", title="t")
    assert _red_pixels(path) > 300  # the thick red curve, its cross, its label and the title
    calm = table.assign(exploded_step=pd.array([None, None, None], dtype="Int64"))
    calm_norms = {**norms, "baseline-simple_rnn-seed0": norms["lower_lr-simple_rnn-seed0"]}
    assert _red_pixels(plots.plot_first_steps(calm, calm_norms, tmp_path / "calm.png", title="t")) == 0


def test_terminal_prints_a_wide_markdown_table_as_one_block_per_row_within_120_columns():
    """The benchmarks' reports: Markdown in the file, 120 columns on the console, no cell lost."""
    frame = pd.DataFrame({
        "model": ["20 x Dense(64) MLP", "text model (Embedding 20k)"],
        "configuration": ["GradientMonitor compiled in, skipping non-finite steps (as NaNGuard sets it)",
                          "logger every step | per layer"],
        "ms/step": [4.2361, 3.5], "ratio min-max": ["1.091-1.392", "0.9-1.1"], "target": ["<= 1.15", ""],
    })
    narrow = "| a | b |\n|---|---:|\n| x | 1 |"
    prose = "word " * 60
    escaped = frame.assign(configuration=frame["configuration"].str.replace("|", "\\|"))  # as report.markdown writes it
    markdown = "\n".join(["# Title", prose, "", escaped.to_markdown(index=False), "", narrow, "- " + prose])
    assert max(map(len, markdown.splitlines())) > 120
    lines = console.terminal(markdown).splitlines()
    assert max(map(len, lines)) <= 120
    assert narrow in console.terminal(markdown)  # a table that fits is left as it is
    assert " ".join(lines[1:4]).split() == prose.split()  # prose wrapped, every word kept
    for _, row in frame.iterrows():  # each row: its names on one line, then every non-empty cell by its column
        title = lines.index(f"{row['model']} / {row['configuration']}")
        block = " ".join(lines[title + 1:title + 3])
        assert f"ms/step {row['ms/step']:g}" in block and f"ratio min-max {row['ratio min-max']}" in block
        assert ("target" in block) == bool(row["target"])
    item = next(i for i, line in enumerate(lines) if line.startswith("- word"))
    assert all(line.startswith("  word") for line in lines[item + 1:])  # a list item continues under itself
