"""benchmarks.diagnosis_scripts: the keras-io population, its breaks and one run end to end."""

import numpy as np
import pytest

from gradguard.benchmarks import diagnosis_scripts as ds
from gradguard.benchmarks import keras_io


def test_every_script_carries_at_least_six_breaks_or_says_why():
    assert len(keras_io.SCRIPTS) >= 10
    for script in keras_io.SCRIPTS:
        module = keras_io.load(script)
        runs = ds.plan(script)
        breaks = [b for b, _ in runs if b != "healthy"]
        assert sum(b == "healthy" for b, _ in runs) == 2
        assert set(breaks).isdisjoint(module.NOT_APPLICABLE)
        assert module.SOURCE.endswith(".py") and len(module.COMMIT) == 40
        # The transformer (sparse labels and token ids) falls short, and says why; the
        # VAE (no labels, and a Sampling layer that cannot run under mixed_float16) runs 5.
        assert len(breaks) >= 6 or (len(breaks) >= 5 and len(module.NOT_APPLICABLE) >= 3) \
            or len(module.NOT_APPLICABLE) >= 4, script


def test_inject_puts_exactly_one_bad_value_into_the_data():
    module = keras_io.load("boston_regression")
    x, y = module.make_data(0)
    setup = module.build(x, y)
    ds.inject(module, setup, "nan_input", 0)
    assert (~np.isfinite(setup.x)).sum() == 1 and np.isfinite(x).all()  # a copy
    setup = module.build(x, y)
    ds.inject(module, setup, "feature_x1e4", 0)
    np.testing.assert_allclose(setup.x[:, 0], x[:, 0] * 1e4, rtol=1e-6)
    np.testing.assert_array_equal(setup.x[:, 1:], x[:, 1:])


@pytest.mark.slow  # two real fits of a 20-epoch MLP: ~10 s idle, more on a loaded machine
def test_a_nan_input_row_against_a_plain_run():
    """The row's event and finite weights, against the same break without the guard."""
    plain = ds.run_one("boston_regression", "nan_input", 0, callbacks=[])
    assert plain["error"] == ""
    assert not plain["weights_finite"]  # the break really ruins a plain Keras run
    # (Its epoch loss may still read finite: a compiled ReLU under oneDNN takes
    # NaN to 0, so NaN weights can give finite outputs. The weights tell.)
    row = ds.run_one("boston_regression", "nan_input", 0)
    assert row["error"] == "" and row["expected"] == "bad_data"
    assert row["events"] >= 1 and row["step"] >= 1
    assert row["weights_finite"]  # the guard kept the NaN out of the weights
    text = ds.summarize(__import__("pandas").DataFrame([plain, row]))
    assert "right cause: " in text and "confusion matrix" in text


@pytest.mark.slow  # two real fits of a 20-epoch MLP over 12k tf-idf columns: ~15 s each loaded
def test_a_multi_label_net_blown_up_at_step_two_is_caught_there():
    """Held-out round 6's silent break: plain Keras ends at chance; the guard stops at step 2."""
    plain = ds.run_one("multi_label", "lr_x100", 0, callbacks=[])
    assert plain["error"] == "" and plain["weights_finite"]
    assert plain["at_chance"]  # the label prior for every paper: the break's harm
    row = ds.run_one("multi_label", "lr_x100", 0)
    assert row["error"] == ""
    assert (row["trigger"], row["step"], row["cause"]) == ("early_blowup", 2, "learning_rate")
    assert row["action"] == "stop" and row["weights_finite"]


def _row(script, brk, skill, events=0, cause="", also=""):
    return dict(script=script, brk=brk, seed=0, expected=ds.BREAKS.get(brk, "none"),
                error="", events=events, cause=cause, action="", also=also, skill=skill,
                weights_finite=True, at_chance=skill <= 0.02, went_on=True, step=-1,
                trigger="")


def test_a_silent_break_as_good_as_healthy_is_harmless_and_left_out():
    """Harmless: no event and >= HARMLESS_SHARE of the healthy median, where healthy learns."""
    import pandas as pd

    rows = [_row("a", "healthy", 0.40), _row("a", "healthy", 0.60),  # median 0.5
            _row("a", "lr_x100", 0.46),  # 0.92 x the median, silent: harmless
            _row("a", "lr_x1000", 0.44),  # 0.88 x: counted, a miss
            _row("a", "nan_label", 0.50, events=1, cause="bad_data"),
            _row("b", "healthy", 0.01), _row("b", "lr_x100", 0.01),  # healthy at chance: counted
            _row("c", "fp16_overflow", 0.0, events=1, cause="input_scale", also="input_scale"),
            _row("d", "fp16_overflow", 0.0, events=1, cause="input_scale")]
    df = ds.mark_harm(pd.DataFrame(rows))
    breaks = df[df["brk"] != "healthy"].set_index(["script", "brk"])
    assert list(breaks["harmless"]) == [True, False, False, False, False, False]
    assert list(breaks["right"]) == [False, False, True, False, True, False]
    text = ds.summarize(pd.DataFrame(rows))
    # counted: 5 of 6 breaks; right: nan_label and c's fp16 (input_scale also right)
    assert "right cause: 2 of 5 breaks (40%) (harmless breaks left out: 1" in text
    assert "right cause, strict (every break, expected cause only): 1 of 6" in text


def test_breaks_at_chance_with_no_event_say_where_healthy_runs_are_at_chance_too():
    import pandas as pd

    rows = [_row("a", "healthy", 0.5), _row("a", "healthy", 0.6),
            _row("a", "lr_x100", 0.0),  # silent at chance where healthy learns
            _row("a", "lr_x1000", 0.0, events=1, cause="learning_rate"),  # an event
            _row("b", "healthy", 0.01), _row("b", "healthy", 0.3),  # one healthy run learns
            _row("b", "lr_x100", 0.0),
            _row("c", "healthy", 0.0), _row("c", "healthy", 0.01),  # both at chance
            _row("c", "lr_x100", 0.0), _row("c", "lr_x1000", 0.5)]
    text = ds.summarize(pd.DataFrame(rows))
    assert ("breaks that leave the model NaN or at chance with no event: 3 (NaN weights: 0; "
            "at chance on a script whose healthy runs end at chance too: 1)") in text


def test_recalibrated_batch_norm_holds_the_statistics_of_the_data():
    """Moving mean/variance = numpy's mean/variance of the layer's input over the rows."""
    import keras

    rng = np.random.default_rng(0)
    x = (5.0 + 3.0 * rng.normal(size=(300, 4))).astype("float32")
    dense = keras.layers.Dense(3)
    norm = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((4,)), dense, norm, keras.layers.Dense(1)])
    ds.recalibrate_batch_norm(model, x)
    h = x @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(dense.bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), h.mean(0),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_variance), h.var(0),
                               rtol=1e-3)
    assert norm.momentum == 0.99  # put back


def test_a_rescaling_break_is_judged_in_its_own_units():
    module = keras_io.load("boston_regression")
    x, y = module.make_data(0)
    setup = module.build(x, y)
    ds.inject(module, setup, "targets_x1e5", 0)
    jx, jy = ds.judged_data(setup, "targets_x1e5", x, y)
    assert jx is x and np.allclose(jy, y * 1e5)
    setup = module.build(x, y)
    ds.inject(module, setup, "feature_x1e4", 0)
    jx, jy = ds.judged_data(setup, "feature_x1e4", x, y)
    assert np.allclose(jx[:, 0], x[:, 0] * 1e4) and jy is y
    setup = module.build(x, y)
    ds.inject(module, setup, "nan_input", 0)
    assert ds.judged_data(setup, "nan_input", x, y) == (x, y)
