"""The cures race recipe, the new variants and the models it races."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradguard.callbacks import AGC, ZClip
from gradguard.recipes import cures_race
from gradguard.recipes.models import attention_regressor, relu_rnn
from gradguard.recipes.variants import SKIP_BATCHES, Variant, clip_callbacks


def test_new_variants_parse_into_callbacks_and_guard_arguments():
    agc = Variant.parse("agc+rollback_reset@adam")
    assert agc.clip == "agc" and agc.optimizer == "adam"
    assert agc.guard == {"action": "rollback", "skip_batches": 0, "reset_moments": True}
    assert Variant.parse("rollback_skip").guard["skip_batches"] == SKIP_BATCHES
    assert Variant.parse("zclip").guard == {}
    assert Variant.parse("irnn+global_clipnorm").rnn_init == "irnn"
    (callback,) = clip_callbacks("agc", None)
    assert isinstance(callback, AGC) and callback.clipping == 0.01
    (callback,) = clip_callbacks("zclip", 3.0)
    assert isinstance(callback, ZClip) and callback.z_threshold == 3.0
    with pytest.raises(ValueError, match="more than one guard action or recurrent init"):
        Variant.parse("rollback+rollback_skip")
    with pytest.raises(ValueError, match="more than one clipping mode"):
        Variant.parse("agc+zclip")


def test_relu_rnn_starts_as_the_paper_says():
    model = relu_rnn(10, 2, units=4)
    cell = model.get_layer("rnn").cell
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cell.recurrent_kernel), np.eye(4))
    assert not keras.ops.convert_to_numpy(cell.bias).any()
    assert float(np.std(keras.ops.convert_to_numpy(cell.kernel))) < 0.01
    assert cell.activation is keras.activations.relu
    q = keras.ops.convert_to_numpy(
        relu_rnn(10, 2, units=4, recurrent_init="orthogonal").get_layer("rnn").cell.recurrent_kernel)
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=1e-5)
    with pytest.raises(ValueError, match="relu_rnn received recurrent_init='unitary'; expected one of"):
        relu_rnn(10, 2, recurrent_init="unitary")


def test_attention_regressor_maps_sequences_to_one_number():
    model = attention_regressor(12, 2, d_model=8, heads=2, blocks=1)
    assert model(np.zeros((3, 12, 2), "float32")).shape == (3, 1)
    assert "attention_0" in [layer.name for layer in model.layers]


def test_attention_position_code_is_a_layer_of_the_model_fixed_and_saved(tmp_path):
    """The position code is computed inside the model, per call (an `Embedding` called on a constant
    `arange` was computed once at build time, outside the graph: under PyTorch the second step failed)."""
    import keras

    model = attention_regressor(12, 2, d_model=8, heads=2, blocks=1)
    positions = model.get_layer("positions")
    assert [v.path for v in model.non_trainable_weights] == ["positions/embeddings"]
    table = keras.ops.convert_to_numpy(positions.table)
    assert table.shape == (12, 8) and np.abs(table).max() <= 0.05
    x = np.random.default_rng(0).normal(size=(3, 12, 2)).astype("float32")
    embed = model.get_layer("embed")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(positions(embed(x))),
                               keras.ops.convert_to_numpy(embed(x)) + table, atol=1e-6)
    model.compile("adam", "mse")
    model.fit(x, np.ones((3, 1)), epochs=2, verbose=0)  # two steps
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(positions.table), table)  # not trained
    model.save(tmp_path / "attention.keras")
    loaded = keras.saving.load_model(tmp_path / "attention.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow  # four rows: ~25 s on an idle machine, minutes on the shared one
def test_quick_race_writes_the_table(tmp_path):
    table = cures_race.main(["--quick", "--seeds", "2", "--setups", "deep_dense",
                             "--methods", "baseline", "agc", "--out", str(tmp_path / "race")])
    race = table.attrs["race"]
    assert list(race["method"]) == ["baseline", "agc"] and (race["seeds"] == 2).all()
    assert race["explosion_rate"].str.match(r"\d/2").all()
    text = (tmp_path / "race" / "race.md").read_text()
    assert "explosion_rate" in text and "budget" in text
    assert (tmp_path / "race" / "deep_dense" / "results.csv").is_file()


def test_bad_race_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cures_race.main(["--setups", "cnn"])
    assert caught.value.code == 2
    assert "--setups received 'cnn'" in capsys.readouterr().err
