import math
import re

import numpy as np
import pandas as pd
import pytest

from gradguard.recipes import linear_chain as recipe


def test_a_1_5_depth_10_gives_exactly_57_665():
    measured = recipe.measure(1.5, 10)
    assert measured["output"] == 57.6650390625 == 1.5**10
    assert measured["output_scale"] == 57.6650390625


@pytest.mark.parametrize("a", [0.5, 1.0, 1.5, -1.2])
@pytest.mark.parametrize("depth", [1, 3, 12])
@pytest.mark.parametrize("units", [1, 2, 3])
def test_gradients_match_the_closed_form(a, depth, units):
    measured = recipe.measure(a, depth, units)
    g = abs(a)
    assert measured["output_scale"] == pytest.approx(g**depth, rel=1e-6)
    # d sum(y) / dx = a**L * ones(units)
    assert measured["grad_input_norm"] == pytest.approx(g**depth * math.sqrt(units), rel=1e-6)
    # d sum(y) / dW1 = outer(x, a**(L-1) * ones) with x = ones
    assert measured["grad_kernel_norm"] == pytest.approx(g ** (depth - 1) * units, rel=1e-6)


def test_input_gradient_grows_by_a_per_layer():
    config = recipe.Config(gains=(0.5, 1.5), depths=(1, 2, 3, 6, 7))
    table = recipe.run(config)
    for a, group in table.groupby("gain"):
        norms = group.grad_input_norm.to_numpy()
        depths = group.depth.to_numpy()
        ratios = (norms[1:] / norms[:-1]) ** (1 / np.diff(depths))
        np.testing.assert_allclose(ratios, a, rtol=1e-5)
        np.testing.assert_allclose(group.per_layer_growth.to_numpy()[1:], a, rtol=1e-5)
        assert math.isnan(group.per_layer_growth.iloc[0])
    assert set(table.regime) == {"vanishing", "exploding"}


def test_run_has_one_row_per_gain_and_depth_with_the_closed_forms():
    table = recipe.run(recipe.Config(gains=(0.5, 1.0), depths=(4, 2)))
    assert list(zip(table.gain, table.depth)) == [(0.5, 2), (0.5, 4), (1.0, 2), (1.0, 4)]
    np.testing.assert_allclose(table.output_scale, table.output_scale_expected, rtol=1e-6)
    np.testing.assert_allclose(table.grad_input_norm, table.grad_input_expected, rtol=1e-6)
    np.testing.assert_allclose(table.grad_kernel_norm, table.grad_kernel_expected, rtol=1e-6)


def test_quick_overrides_depths():
    assert recipe.Config(depths=(50,), quick=True).depth_list == recipe.QUICK_DEPTHS
    assert recipe.Config(depths=(5, 1, 5)).depth_list == (1, 5)


def test_main_quick_writes_the_results(tmp_path, capsys):
    out = tmp_path / "lc"
    table = recipe.main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    assert max(map(len, printed.splitlines())) <= 120  # long sentences wrapped
    printed = " ".join(printed.split())  # read across the wrapped lines
    assert "1.5**10 = 57.6650390625" in printed
    assert "the Keras chain measured 57.6650390625" in printed
    assert "vanishing vs exploding at depth 10" in printed
    assert f"{(out / 'linear_chain.png').resolve()}" in printed or "Install matplotlib" in printed
    assert len(table) == 3 * len(recipe.QUICK_DEPTHS)
    written = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(written, table, check_dtype=False)
    md = (out / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["gain", "depth", "regime"]
    assert md.count("\n|") == 2 + len(table)
    assert (out / "config.json").exists()
    png = out / "linear_chain.png"
    if png.exists():  # matplotlib is optional
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--depths", "-1"], "error: --depths received -1; expected ints >= 1 (numbers of layers)."),
        (["--depths", "3", "0"], "error: --depths received 0; expected ints >= 1"),
        (
            ["--gains", "inf"],
            "error: --gains received inf; expected finite floats > 0 (the per-layer gain a: "
            "below 1 vanishes, 1 is stable, above 1 explodes).",
        ),
        (["--gains", "-1.5", "0"], "error: --gains received -1.5; expected finite floats > 0"),
        (["--gains", "0.5", "0"], "error: --gains received 0.0; expected finite floats > 0"),
        (
            ["--gains", "1e30", "--depths", "50"],
            "error: --gains 1e+30 at depth 50 would overflow float32: the chain's output "
            "and gradients grow like 1e+30**50, above float32's largest value "
            "3.4028235e+38, so the Keras model would compute inf and NaN instead of the "
            "closed form. Use depths <= 1 with this gain, or a gain closer to 1.",
        ),
        # The first requested depth that overflows is named, not the deepest.
        (
            ["--gains", "2", "--depths", "100", "127", "128", "300"],
            "error: --gains 2.0 at depth 128 would overflow float32",
        ),
        (
            ["--quick", "--gains", "1e5"],
            "at depth 10 would overflow float32: the chain's output and gradients grow "
            "like 100000.0**10",
        ),
        (["--quick", "--gains", "1e5"], "Use depths <= 7 with this gain"),
        (
            ["--gains", "1e39", "--depths", "1"],
            "Use a gain closer to 1: this one is beyond float32 itself.",
        ),
        (["--gains", "big"], "Error parsing --gains"),
        (["--units", "0"], "error: --units received 0; expected an int >= 1."),
    ],
)
def test_bad_flags_exit_with_code_2_before_any_work(argv, message, refused, monkeypatch):
    monkeypatch.setattr(recipe, "run", lambda config: pytest.fail("run() called"))
    assert message in refused(recipe.main, argv)


def test_existing_results_are_never_overwritten(tmp_path, capsys):
    (tmp_path / "results.csv").write_text("keep me\n")
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["--quick", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert (tmp_path / "results.csv").read_text() == "keep me\n"


def test_a_bad_flag_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    # Without --out the run folder would be runs/linear_chain-<time>.
    monkeypatch.chdir(tmp_path)
    for argv in (["--gains", "1e30", "--depths", "50"], ["--gains", "-1.5", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            recipe.main(argv)
        assert exit_info.value.code == 2
    assert "would overflow float32" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("a, first", [(1e30, 2), (300.0, 16), (2.0, 128)])
def test_overflow_depth_is_where_the_keras_chain_stops_being_finite(a, first):
    assert recipe.overflow_depth(a, first + 10) == first
    assert recipe.overflow_depth(a, first - 1) is None
    below, at = recipe.measure(a, first - 1), recipe.measure(a, first)
    assert all(math.isfinite(v) for v in below.values())
    assert not math.isfinite(at["output"]) and not math.isfinite(at["grad_input_norm"])


def test_gains_at_most_1_never_overflow():
    assert recipe.overflow_depth(1.0, 10_000) is None
    assert recipe.overflow_depth(1e-30, 10_000) is None  # underflows to 0 instead
    assert recipe.Config(gains=(1e-30, 1.0), depths=(10_000,)).validate() is None


def test_run_rejects_a_config_that_would_overflow():
    config = recipe.Config(gains=(1.5, 1e30), depths=(50,))
    message = "linear_chain.run received a bad config: --gains 1e+30 at depth 50 would"
    with pytest.raises(ValueError, match=re.escape(message)):
        recipe.run(config)


def test_a_gradient_that_underflows_to_0_gives_no_ratio():
    # 1e-30**2 = 1e-60 is below float32's smallest value: the chain gives 0.
    table = recipe.run(recipe.Config(gains=(1e-30, 1.5), depths=(1, 2)))
    assert table.grad_input_norm.iloc[1] == 0.0
    assert table.grad_input_expected.iloc[1] == pytest.approx(1e-60 * math.sqrt(2))
    lines = recipe.summary_lines(table)
    assert lines[1] == (
        "vanishing vs exploding at depth 2: the input gradient norm is 0 for a=1e-30 "
        "(vanished) and 3.18 for a=1.5 (exploded), the first underflowed to 0 in "
        "float32 (its closed form is 1.41e-60), so their ratio is unbounded."
    )
