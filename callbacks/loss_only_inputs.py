"""Model inputs that only a loss reads: targets fed as inputs.

keras-io's endpoint layer pattern compiles a model with no loss and feeds
the targets as an input: a layer computes the loss from them with
`add_loss` and returns the predictions alone. `fit` gets no `y`, so the
guard's target-scale sign (`target_scale.py`), which measures `y`, saw
nothing, and targets x1e5 there were named `learning_rate` (held-out
round 7); the inputs' scale (`structure_signs.input_scale`) counted them
as features.

An input is read only by a loss where the model's outputs on a batch are
the same, bit for bit, with that input set to zeros: two forward passes
in inference mode, once a fit, only for a fit with no `y` and inputs by
name or position.
"""

from __future__ import annotations

import keras
import numpy as np

from .collapse import other_variables, values_put_back


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(keras.ops.convert_to_numpy(p)),
                              np.asarray(keras.ops.convert_to_numpy(q)), equal_nan=True)
               for p, q in zip(keras.tree.flatten(a), keras.tree.flatten(b)))


def loss_only_inputs(model, x) -> list:
    """The keys (or positions) of `x`'s float inputs that the outputs do not depend on.

    Args:
        model: a built Keras model.
        x: one batch's inputs: a dict or a list/tuple of arrays (a single
            array has no other input to be the features: `[]`).

    Returns:
        A list of keys or positions, in `x`'s order; `[]` where none, or
        where a forward pass fails.
    """
    if isinstance(x, dict):
        keys = list(x)
    elif isinstance(x, (list, tuple)) and len(x) > 1:
        keys = list(range(len(x)))
    else:
        return []
    floats = [k for k in keys if np.asarray(x[k]).dtype.kind == "f" and np.asarray(x[k]).size]
    if not floats:
        return []
    found = []
    try:
        # The probe leaves the fit's random draws as they were.
        with values_put_back(other_variables(model)):
            base = model(x, training=False)
            for key in floats:
                zeroed = dict(x) if isinstance(x, dict) else list(x)
                zeroed[key] = np.zeros_like(np.asarray(x[key]))
                if not isinstance(x, dict):
                    zeroed = type(x)(zeroed)
                if _same(base, model(zeroed, training=False)):
                    found.append(key)
    except Exception:  # noqa: BLE001  (a sign, never a crash)
        return []
    return found if len(found) < len(keys) else []  # every input unread: no sign
