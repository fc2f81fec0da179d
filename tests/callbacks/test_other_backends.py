"""The callbacks under KERAS_BACKEND=jax / torch, in a subprocess.

Skipped where the backend is not installed (it is not a dependency). The
norms logged under the other backend are checked against GradientTape here.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.callbacks.helpers import dense_model, global_norm, tape_steps

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, keras
    sys.path.insert(0, {root!r})
    from gradguard.callbacks import GradientNormLogger, NaNGuard
    from tests.callbacks.helpers import dense_model, regression_data
    x, y = regression_data((8,), n=96)
    x[40] = np.nan  # third batch
    keras.utils.set_random_seed(0)
    model = dense_model()
    spe = 1 if keras.backend.backend() == "torch" else 2  # torch allows 1
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse",
                  steps_per_execution=spe)
    weights = model.get_weights()
    logger = GradientNormLogger()
    guard = NaNGuard(action="rollback", lr_factor=1.0, snapshot_every=1,
                     verbose=False)
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
              callbacks=[logger, guard])
    np.savez({out!r}, *weights,
             norms=logger.to_dataframe("global")["grad_norm"].to_numpy(),
             restored=-1 if guard.events[0]["restored_step"] is None
             else guard.events[0]["restored_step"],
             cause=guard.events[0]["cause"], held=guard.events[0]["weights"]["step"],
             finite=all(np.isfinite(w).all() for w in model.get_weights()),
             backend=keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_callbacks_under_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    out = str(tmp_path / "result.npz")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=root, out=out)],
        env=env, check=True, timeout=300,
    )
    result = np.load(out)
    assert str(result["backend"]) == backend
    assert bool(result["finite"])
    weights = [result[f"arr_{i}"] for i in range(len(dense_model().get_weights()))]
    norms = result["norms"]
    assert len(norms) == 6 and np.isnan(norms[2])
    # Steps 1-2 from the initial weights; the NaN step 3 is skipped as bad
    # data (no rollback needed: the weights are still those after step 2), so
    # steps 4-6 see the batches 4-6.
    from tests.callbacks.helpers import regression_data

    x, y = regression_data((8,), n=96)
    expected = tape_steps(dense_model, weights, x, y, 16, 0.05, 2)
    np.testing.assert_allclose(norms[:2], [global_norm(g) for g in expected], rtol=1e-4)
    assert str(result["cause"]) == "bad_data"
    # The report names the newest applied step when the guard read the ring:
    # step 2, or step 4 with steps_per_execution=2 (JAX).
    assert int(result["restored"]) == -1
    assert int(result["held"]) == (2 if backend == "torch" else 4)
    assert np.isfinite(norms[3:]).all()
