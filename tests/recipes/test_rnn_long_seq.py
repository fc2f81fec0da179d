"""Tests for `python -m recipes.rnn_long_seq`: a real --quick run, flags, defaults."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from gradguard.datasets import ADDING_PROBLEM_BASELINE_MSE
from gradguard.recipes import analysis, rnn_long_seq
from gradguard.recipes.experiment import LEARNED_RATIO, Row, run_group, tensorboard_run
from gradguard.recipes.rnn_long_seq import DEFAULT_LR, Config, setup

QUICK = ["--quick", "--variants", "baseline", "global_clipnorm@adam", "--cells", "simple_rnn", "lstm"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn") / "r"
    return rnn_long_seq.main([*QUICK, "--out", str(out)]), out


def test_quick_run_writes_every_file_and_one_row_per_variant_and_cell(quick_run):
    table, out = quick_run
    for name in ("results.csv", "results.md", "grad_norms.png", "loss.png", "summary.txt", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "grad_norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = [("baseline", "simple_rnn"), ("baseline", "lstm"),
                ("global_clipnorm@adam", "simple_rnn"), ("global_clipnorm@adam", "lstm")]
    assert list(zip(table["variant"], table["cell"])) == expected
    written = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(written["val_loss"], table["val_loss"], rtol=1e-12)
    # TensorBoard runs are named after the row (no "tensorboard/" prefix under
    # --logdir <out>/tensorboard) and carry the log10 norm, visible on a linear axis.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p.parent.name for p in (out / "tensorboard").glob("*/*/events.out.tfevents.*"))
    assert sorted(set(runs)) == sorted(Row(v, c, 0).name for v, c in expected)
    acc = EventAccumulator(str(tensorboard_run(out, Row("baseline", "simple_rnn", 0).name)))
    acc.Reload()
    assert "gradients/global_norm_log10" in acc.Tags()["scalars"]
    assert not list(out.glob("*/*.incomplete"))


def tensorboard_view(logdir):
    """What TensorBoard serves for `logdir`: its runs, the custom-scalars layout, the scalars.

    Read the way the TensorBoard server reads them: an `EventMultiplexer`
    behind the `MultiplexerDataProvider`, and the custom-scalars plugin's own
    `layout_impl` (which merges the layouts of every run).
    """
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.data import provider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    data = data_provider.MultiplexerDataProvider(mux, str(logdir))
    ctx = context.RequestContext()
    plugin = CustomScalarsPlugin(base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                                                       data_provider=data))
    layout = json.loads(plugin.layout_impl(ctx, "") or "{}")
    scalars = data.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=10**6,
                                run_tag_filter=provider.RunTagFilter())
    return list(data.list_runs(ctx, experiment_id="")), layout, scalars


def test_tensorboard_one_run_per_row_and_every_norm_on_one_log_chart(quick_run):
    import re

    table, out = quick_run
    runs, layout, scalars = tensorboard_view(out / "tensorboard")
    # One run per row under its verdict (exploded/, learned/, stable/), holding
    # the gradient norms and both losses; the figures in a run of their own.
    names = {f"{run_group(r._asdict())}/{Row(r.variant, r.cell, r.seed).name}": Row(r.variant, r.cell, r.seed).name
             for r in table.rename(columns={"val/trivial": "ratio"}).itertuples()}
    assert sorted(r.run_name for r in runs) == sorted([*names, "figures"])
    scalars = {names[run]: tags for run, tags in scalars.items()}
    for name in names.values():
        assert {"gradients/global_norm_log10", "epoch_loss/train", "epoch_loss/validation"} <= set(scalars[name])
        val = [p.value for p in scalars[name]["epoch_loss/validation"]]
        assert val == pytest.approx([table.set_index(["variant", "cell"]).loc[
            tuple(name.split("-")[:2]), "val_loss"]], rel=1e-6)
    # So the default recipe (14 rows) stays under TensorBoard's 40 auto-selected runs.
    assert len(Config().rows()) == 14 and len(Config().rows()) <= 40
    # The layout's first chart: log10 of the unclipped global norm of every row.
    category = layout["category"][0]
    assert len(layout["category"]) == 2  # every run's copy merged into one
    chart = category["chart"][0]
    assert "log10" in chart["title"]
    (regex,) = chart["multiline"]["tag"]
    matched = {run: tag for run in scalars for tag in scalars[run] if re.search(regex, tag)}
    assert sorted(matched) == sorted(names.values())
    # On it, the exploded row climbs decades above every stable row.
    top = {run: max(p.value for p in scalars[run][tag] if math.isfinite(p.value))
           for run, tag in matched.items()}
    exploded = Row("baseline", "simple_rnn", 0).name
    logged = pd.read_csv(out / "rows" / exploded / "grad_norms.csv")["grad_norm"]
    assert top[exploded] == pytest.approx(np.log10(logged[np.isfinite(logged)].max()), rel=1e-5)
    assert top[exploded] >= max(v for run, v in top.items() if run != exploded) + 2


def tensorboard_blobs_and_texts(logdir):
    """The images (run -> tag -> PNG bytes) and texts (run -> tag -> [(step, text)]) TensorBoard serves."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.data import provider

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    data = data_provider.MultiplexerDataProvider(mux, str(logdir))
    ctx = context.RequestContext()
    every = provider.RunTagFilter()
    images = {run: {tag: data.read_blob(ctx, blob_key=datums[-1].values[2].blob_key)  # width, height, PNG
                    for tag, datums in tags.items()}
              for run, tags in data.read_blob_sequences(ctx, experiment_id="", plugin_name="images",
                                                        downsample=100, run_tag_filter=every).items()}
    texts = {run: {tag: [(d.step, d.numpy.item().decode()) for d in datums] for tag, datums in tags.items()}
             for run, tags in data.read_tensors(ctx, experiment_id="", plugin_name="text", downsample=100,
                                                run_tag_filter=every).items()}
    return images, texts


def test_tensorboard_opens_on_the_figures_and_nan_guards_words(quick_run):
    """Images, NaNGuard's text and the per-epoch max norm, read back as the TensorBoard server reads them."""
    table, out = quick_run
    images, texts = tensorboard_blobs_and_texts(out / "tensorboard")
    # The Images tab: the run's three figures, byte for byte the PNG files on disk.
    assert set(images) == {"figures"}
    assert images["figures"] == {f"charts/{stem}": (out / f"{stem}.png").read_bytes()
                                 for stem in ("first_steps", "grad_norms", "loss", "gradient_flow")}
    # The Text tab: each NaNGuard event in its row's run, at the step NaNGuard acted.
    guarded = {Row(r.variant, r.cell, r.seed).name: r for r in table.itertuples() if r.nan_guard != "none"}
    assert guarded  # the baseline SimpleRNN explodes
    assert {run.split("/")[-1] for run in texts} == set(guarded)
    for name, row in guarded.items():
        report = json.loads((out / "rows" / name / "nan_guard.json").read_text())["events"]
        ((step, text),) = texts[f"exploded/{name}"]["nan_guard"]
        assert step == report[0]["step"] == row.exploded_step
        assert f"cause {report[0]['cause']}" in text and report[0]["cure"].split(";")[0] in text
    # Runs sort the broken rows together: every exploded row before every other row.
    runs = sorted(str(p.parent.relative_to(out / "tensorboard"))
                  for p in (out / "tensorboard").glob("*/*/events.out.tfevents.*"))
    groups = [run.split("/")[0] for run in dict.fromkeys(runs)]
    assert groups == sorted(groups) and groups[0] == "exploded"
    # The per-epoch max norm equals the largest finite norm of that epoch in grad_norms.csv.
    _, _, scalars = tensorboard_view(out / "tensorboard")
    # Time Series shows one section per tag prefix, in name order: the figures' comes first.
    prefixes = {tag.split("/")[0] for tags in scalars.values() for tag in tags}
    assert {"epoch_loss", "gradients"} <= prefixes and "charts" < min(prefixes)
    for r in table.itertuples():
        name = Row(r.variant, r.cell, r.seed).name
        norms = pd.read_csv(out / "rows" / name / "grad_norms.csv")
        norms = norms[np.isfinite(norms["grad_norm"])]
        run = str(tensorboard_run(out, name).relative_to(out / "tensorboard"))
        logged = [(p.step, p.value) for p in scalars[run]["gradients/epoch_max_norm"]]
        expected = list(norms.groupby("epoch")["grad_norm"].max().items())
        assert [s for s, _ in logged] == [e for e, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_rows_are_judged_by_the_model(quick_run):
    table, out = quick_run
    for _, row in table.iterrows():
        name = Row(row["variant"], row["cell"], row["seed"]).name
        losses = pd.read_csv(out / "rows" / name / "losses.csv")
        val = losses["val_loss"].dropna().to_numpy()
        assert row["val_loss"] == pytest.approx(val[-1])
        assert row["val/trivial"] == pytest.approx(val[-1] / ADDING_PROBLEM_BASELINE_MSE)
        assert row["learned"] == (val[-1] <= LEARNED_RATIO * ADDING_PROBLEM_BASELINE_MSE)
        hits = np.flatnonzero(val <= LEARNED_RATIO * ADDING_PROBLEM_BASELINE_MSE)
        assert (pd.isna(row["learned_epoch"]) if not len(hits) else row["learned_epoch"] == hits[0] + 1)
        norms = pd.read_csv(out / "rows" / name / "grad_norms.csv")["grad_norm"].to_numpy()
        assert row["max_grad_norm"] == pytest.approx(norms[np.isfinite(norms)].max())
        report = out / "rows" / name / "nan_guard.json"
        if report.exists():  # NaNGuard stopped the row: it exploded at the guard's step
            assert row["exploded_step"] == json.loads(report.read_text())["events"][0]["step"]
    rows = table.set_index(["variant", "cell"])
    assert not pd.isna(rows.loc[("baseline", "simple_rnn"), "exploded_step"])
    assert rows.loc[("baseline", "simple_rnn"), "optimizer"] == "sgd"
    assert rows.loc[("baseline", "simple_rnn"), "learning_rate"] == DEFAULT_LR["sgd"]
    assert rows.loc[("global_clipnorm@adam", "lstm"), "optimizer"] == "adam"
    assert rows.loc[("global_clipnorm@adam", "lstm"), "learning_rate"] == DEFAULT_LR["adam"]
    assert pd.isna(rows.loc[("global_clipnorm@adam", "lstm"), "exploded_step"])


def test_one_threshold_in_summary_and_markdown(quick_run):
    table, out = quick_run
    norms = analysis.load_norms(out, table)
    stable = [Row(r.variant, r.cell, r.seed).name for r in table.itertuples()
              if pd.isna(r.exploded_step) and r.variant == "baseline"]
    expected = np.percentile(np.concatenate([norms[n]["grad_norm"] for n in stable]), 90)
    assert table.attrs["threshold"] == pytest.approx(expected)
    line = f"suggested clipping threshold: {expected:.3g} "
    assert line in (out / "summary.txt").read_text()
    assert line in (out / "results.md").read_text()


@pytest.mark.parametrize("flags, optimizer, lr", [
    ([], "sgd", 0.1), (["--optimizer", "adam"], "adam", 0.01),
    (["--optimizer", "rmsprop"], "rmsprop", 0.001), (["--optimizer", "momentum", "--lr", "0.003"], "momentum", 0.003),
    (["--lr", "0.05"], "sgd", 0.05),
])
def test_optimizer_flag_and_its_default_learning_rate(flags, optimizer, lr):
    from gradguard.recipes.cli import parse_config

    config = parse_config(Config, flags)
    for row in config.rows():
        s = setup(row, config, np.zeros((4, 100, 2), "float32"))
        v = row.variant
        if v.endswith("@adam"):
            assert (s.optimizer, s.learning_rate) == ("adam", lr if optimizer == "adam" else 0.01)
        elif v == "lower_lr":
            assert (s.optimizer, s.learning_rate) == (optimizer, pytest.approx(lr / 5))
        else:
            assert (s.optimizer, s.learning_rate) == (optimizer, lr)


def test_cells_and_cell_and_seeds_and_factorial_make_the_rows():
    assert {r.cell for r in Config(cells=("simple_rnn", "gru")).rows()} == {"simple_rnn", "gru"}
    assert {r.cell for r in Config(cells=("simple_rnn", "gru"), cell="lstm").rows()} == {"lstm"}
    rows = Config(variants=("baseline", "clipnorm"), cells=("lstm",), seeds=3, seed=5).rows()
    assert [(r.variant, r.seed) for r in rows] == [(v, s) for v in ("baseline", "clipnorm") for s in (5, 6, 7)]
    rows = Config(factorial=True, factorial_clip="clipvalue", cells=("gru",)).rows()
    assert len(rows) == 8 and len({r.variant for r in rows}) == 8
    config = Config(factorial=True)
    x = np.random.default_rng(0).random((8, 100, 2)).astype("float32")
    for row in config.rows():
        names = [layer.name for layer in setup(row, config, x).build().layers]
        assert ("bn" in names) == ("batchnorm" in row.variant)
        assert ("standardize" in names) == ("standardize" in row.variant)


@pytest.mark.parametrize("flags, message", [
    (["--seq-len", "-5"], "--seq-len received -5"),
    (["--variants", "baseline", "nope"], "--variants received 'nope': modifiers 'nope'"),
    (["--cell", "transformer"], "invalid choice 'transformer'"),
    (["--optimizer", "adagrad"], "invalid choice 'adagrad'"),
    (["--lr", "0"], "--lr received 0.0"),
    (["--seeds", "0"], "--seeds received 0; expected an int >= 1."),
    (["--variants", "baseline", "baseline"], "name each once"),
])
def test_bad_flags_exit_2_before_training(flags, message, refused):
    assert message in refused(rnn_long_seq.main, flags)


def test_existing_out_folder_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.csv").write_text("keep me\n")
    with pytest.raises(SystemExit) as info:
        rnn_long_seq.main(["--quick", "--out", str(out)])
    assert info.value.code == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == "keep me\n"


def test_unwritable_out_folder_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as info:
        rnn_long_seq.main(["--quick", "--out", "/proc/gradguard-results"])
    assert info.value.code == 1
    assert "could not create the results folder '/proc/gradguard-results'" in capsys.readouterr().err


@pytest.mark.slow
def test_default_run_explodes_and_learns(tmp_path):
    """The default (no flags but --out): baseline explodes, something learns.

    Its run time is measured and reported (README), not asserted: a timed
    assertion fails on a loaded machine (454 s with a CI run beside it).
    """
    table = rnn_long_seq.main(["--out", str(tmp_path / "r")])
    rows = table.set_index(["variant", "cell"])
    assert not pd.isna(rows.loc[("baseline", "simple_rnn"), "exploded_step"])
    learned = table[table["learned"]]
    assert (learned["val_loss"] <= LEARNED_RATIO * ADDING_PROBLEM_BASELINE_MSE).all() and len(learned)
    assert not math.isnan(table.attrs["threshold"])


@pytest.mark.slow
def test_default_quick_run_makes_14_runs_with_the_explosion_on_the_log_chart(tmp_path):
    """The default recipe under --quick, read back as the TensorBoard server reads it."""
    import re

    table = rnn_long_seq.main(["--quick", "--out", str(tmp_path / "r")])
    runs, layout, scalars = tensorboard_view(tmp_path / "r" / "tensorboard")
    assert len(runs) == len(table) + 1 == 15 <= 40  # a run per row, and the figures
    (regex,) = layout["category"][0]["chart"][0]["multiline"]["tag"]
    top = {run: max(p.value for tag in tags if re.search(regex, tag) for p in tags[tag]
                    if math.isfinite(p.value)) for run, tags in scalars.items() if run != "figures"}
    exploded = "exploded/" + Row("baseline", "simple_rnn", 0).name
    assert len(top) == 14 and top[exploded] >= max(v for r, v in top.items() if r != exploded) + 2
