"""Mapping an optimizer's variables back to the model's layers."""

from __future__ import annotations

from typing import Sequence


def layer_of_paths(model, paths: Sequence[str]) -> tuple[list[str], list[int]]:
    """Groups variables (by `variable.path`) under the model's top-level layers.

    An LSTM's `kernel`, `recurrent_kernel` and `bias` all belong to the layer
    the user named (`lstm`), not to its inner cell. A variable no top-level
    layer owns is its own group, named by its path.

    Args:
        model: the `keras.Model` being trained.
        paths: `variable.path` of each trainable variable, in optimizer order.

    Returns:
        `(layer_names, columns)`: the distinct layer names in order of first
        appearance, and for each path the index of its layer in that list.
    """
    owner = {}
    for layer in getattr(model, "layers", []):
        for variable in layer.trainable_variables:
            owner.setdefault(variable.path, layer.name)
    names: list[str] = []
    columns: list[int] = []
    for path in paths:
        name = owner.get(path, path)
        if name not in names:
            names.append(name)
        columns.append(names.index(name))
    return names, columns


def layer_of_path(model, path: str) -> str:
    """The top-level layer name that owns the variable at `path`."""
    names, columns = layer_of_paths(model, [path])
    return names[columns[0]]
