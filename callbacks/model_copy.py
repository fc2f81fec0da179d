"""A faithful copy of a Keras model: the model as Keras' own saving round-trips it.

`keras.models.clone_model` and `from_config` + `set_weights` rebuild a model
from its config and its weights, and that is not the model: an adapted
`Normalization` keeps its statistics in variables whose `mean`/`variance`
tensors are rebuilt only by `adapt`, `build` or `load_own_variables`; a
`StringLookup` or `TextVectorization` adapted on data keeps its vocabulary
as an asset, not a weight. `model.save` + `keras.saving.load_model` runs
every layer's `save_own_variables`/`save_assets` and their inverses, so the
copy predicts what the original predicts. This module does that round trip
through a temporary `.keras` file (Keras' public saving API accepts only a
path) and keeps the bytes, so a caller that needs many copies saves once.
"""

from __future__ import annotations

import pathlib
import tempfile

import keras


def model_bytes(model: keras.Model) -> bytes:
    """The `.keras` archive of `model` (architecture, weights, assets), in memory.

    Args:
        model: a built Keras model whose layers are serializable (built-in,
            or registered with `keras.saving.register_keras_serializable`).

    Returns:
        The bytes `model.save("m.keras")` writes.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes, *, compile: bool = False,
                     custom_objects: dict | None = None) -> keras.Model:
    """A fresh model loaded from `model_bytes`' archive.

    Args:
        data: the bytes `model_bytes` returned.
        compile: restore the optimizer and loss too. Defaults to `False`.
        custom_objects: passed to `keras.saving.load_model`. Defaults to
            `None` (registered objects load without it).

    Returns:
        A new, independent `keras.Model`.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "model.keras"
        path.write_bytes(data)
        # safe_mode=False: the archive is the caller's own model, saved a
        # moment ago; a Lambda layer in it is their code, not a stranger's.
        return keras.saving.load_model(path, compile=compile, safe_mode=False,
                                       custom_objects=custom_objects)


def faithful_copy(model: keras.Model, *, compile: bool = False) -> keras.Model:
    """A copy of `model` as `model.save` + `keras.saving.load_model` gives it.

    Every layer's state is rebuilt the way loading rebuilds it (adapted
    `Normalization` statistics, lookup vocabularies, `Discretization`
    bins, custom layers' own variables), so the copy's predictions equal
    the original's. The original is not changed.

    Args:
        model: a built Keras model.
        compile: restore the optimizer (with its state) and loss too.
            Defaults to `False`.

    Returns:
        A new, independent `keras.Model`.

    Raises:
        ValueError: when Keras cannot save or load `model` (an unregistered
            custom layer); the message says to register it.

    Example:

    ```python
    copy = faithful_copy(model)
    np.testing.assert_allclose(copy.predict(x), model.predict(x))
    ```
    """
    try:
        return model_from_bytes(model_bytes(model), compile=compile)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"faithful_copy could not round-trip {type(model).__name__} {model.name!r} through "
            f"model.save: {str(error).splitlines()[0] if str(error) else type(error).__name__}; "
            "register custom layers and losses with "
            "@keras.saving.register_keras_serializable() and give them get_config."
        ) from error
