"""The doctor's command line with custom objects: --import MODULE and legacy .h5 models."""

import keras
import numpy as np
import pytest

from gradguard.recipes import doctor

from doctor_data import linear_data


def test_cli_import_names_a_missing_module(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2)), y=np.zeros(8))
    # Past the file checks (HDF5's signature), so that --import is what fails.
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(SystemExit) as error:
        doctor.main(["--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"),
                     "--import", "no_such_module_here"])
    assert "--import 'no_such_module_here'" in str(error.value.code)


@pytest.mark.slow
def test_cli_loads_a_custom_layer_from_import_and_an_h5_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_layers.py").write_text(
        "import keras\n"
        "@keras.saving.register_keras_serializable(package='my_layers')\n"
        "class Scale(keras.layers.Layer):\n"
        "    def __init__(self, factor=1.0, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.factor = factor\n"
        "    def call(self, x):\n"
        "        return x * self.factor\n"
        "    def get_config(self):\n"
        "        return {**super().get_config(), 'factor': self.factor}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    x, y = linear_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), my_layers.Scale(0.5),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.save(tmp_path / "m.h5")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    found = doctor.main(["--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"),
                         "--import", "my_layers", "--batch-size", "16"])
    assert found.cause == "healthy"
    assert "bar: learned = val_loss <= 0.1 x the constant prediction's" in capsys.readouterr().out
