"""symptoms.judge_after_search on small trial tables: healthy only when the search is the evidence."""

import pandas as pd
import pytest

from gradguard.recipes.symptoms import NO_BETTER, judge_after_search

UNKNOWN = {"cause": "unknown", "problem": "none", "evidence": "no guard event and no symptom"}


def trials(*rows):
    """rows: (trial, val/trivial, exploded_step, note)."""
    return pd.DataFrame(rows, columns=["trial", "val/trivial", "exploded_step", "note"]).astype(
        {"exploded_step": "Int64"})


def test_a_set_up_no_cure_did_better_than_is_healthy():
    table = trials((0, 0.97, None, ""), (1, 1.09, None, ""), (2, 0.9, None, ""),
                   (3, None, None, "not applicable"), (4, float("inf"), 5, ""))
    judged = judge_after_search(UNKNOWN, table)
    assert judged["cause"] == "healthy" and judged["problem"] == "none"
    assert "0.97" in judged["evidence"] and "none of the 3 cures" in judged["evidence"]


@pytest.mark.parametrize("first, table", [
    # a cure did clearly better: it was kept, the set-up was not healthy
    (UNKNOWN, trials((0, 0.97, None, ""), (1, 0.97 * NO_BETTER, None, ""))),
    # trial 0 does not beat the constant prediction
    (UNKNOWN, trials((0, 1.0, None, ""), (1, 1.2, None, ""))),
    # trial 0 had a guard event (its cause would not be unknown, but judged on the table too)
    (UNKNOWN, trials((0, 0.5, 3, ""), (1, 0.9, None, ""))),
    # a named cause (a symptom) stays named
    ({**UNKNOWN, "cause": "activation", "problem": "dying_relu"},
     trials((0, 0.97, None, ""), (1, 1.0, None, ""))),
    # no cure was trained: no evidence
    (UNKNOWN, trials((0, 0.97, None, ""), (1, None, None, "not applicable"))),
])
def test_anything_else_is_left_as_it_was(first, table):
    assert judge_after_search(first, table) is first


@pytest.mark.slow
def test_a_set_up_that_learns_with_half_its_relus_dead_is_healthy():
    import keras
    import numpy as np

    from gradguard.recipes.doctor import examine

    from doctor_data import linear_data

    x, y = linear_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(1)])
    kernel, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([kernel, np.r_[np.full(16, -100.0), np.zeros(16)].astype("float32")])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    # judged here: half the units never fire on the training inputs (and never will: a bias of
    # -100 against pre-activations of a few units), and trial 0's val/trivial by numpy
    hidden = np.maximum(x[:256] @ kernel + model.layers[0].get_weights()[1], 0)
    assert np.mean(hidden.max(0) <= 0) == 0.5
    found = examine(model, x, y, epochs=1, batch_size=16, max_trials=2, verbose=False)
    assert found.cause == "healthy" and len(found.trials) == 1, found.evidence
    pred = np.asarray(found.model(x[256:]), np.float64)  # trial 0's model
    ratio = np.mean((pred - y[256:]) ** 2) / np.mean((y[256:] - y[:256].mean()) ** 2)
    assert 0.1 < ratio <= 0.5, ratio  # not at the bar, clearly below the constant prediction


def test_dead_units_probe_takes_a_single_input_without_keras_warning():
    """The doctor's dead-unit probe on a one-input Sequential model: the fraction numpy gives, and no
    "The structure of `inputs` doesn't match" UserWarning (a probe built on the input list warned)."""
    import warnings

    import keras
    import numpy as np

    from gradguard.recipes.symptoms import dead_units

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(1)])
    kernel, bias = model.get_layer("hidden").get_weights()
    bias[:2] = -100.0  # two of four units never fire on these inputs
    model.get_layer("hidden").set_weights([kernel, bias])
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        layer, fraction = dead_units(model, x)
    hidden = np.maximum(x @ kernel + bias, 0)
    assert layer == "hidden" and fraction == np.mean(hidden.max(0) <= 0) == 0.5
