"""AGC and ZClip under KERAS_BACKEND=jax / torch (in a subprocess) and MirroredStrategy.

The subprocess trains one AGC step and a ZClip run; the AGC update is
checked here against the NumPy rule applied to GradientTape's gradients,
ZClip's thresholds against the NumPy reference run over the logged norms.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.callbacks.clipping_reference import agc_numpy, zclip_numpy
from tests.callbacks.helpers import dense_model, regression_data, tape_steps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, keras
    sys.path.insert(0, {root!r})
    from gradguard.callbacks import AGC, ZClip
    from gradguard.callbacks.attach import find_monitor
    from tests.callbacks.helpers import dense_model, regression_data
    x, y = regression_data((8,), n=32)
    keras.utils.set_random_seed(0)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = model.get_weights()
    model.fit(x[:16], y[:16], batch_size=16, shuffle=False, verbose=0,
              callbacks=[AGC(clipping=0.01)])
    after = model.get_weights()
    x, y = regression_data((8,), n=320, seed=1)
    x[200:216] *= 30.0
    x[100:101] = np.nan  # a NaN norm after the warm-up
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
              callbacks=[ZClip(warmup_steps=5)])
    record = find_monitor(model.optimizer).read()
    np.savez({out!r}, *before, *after, norm=record.norm,
             norm_clipped=record.norm_clipped, threshold=record.threshold,
             backend=keras.backend.backend())
""")


@pytest.mark.slow  # a subprocess each: ~45 s on the shared 2 cores
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_agc_and_zclip_under_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    out = str(tmp_path / "result.npz")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT, out=out)],
                   env=env, check=True, timeout=300)
    result = np.load(out)
    assert str(result["backend"]) == backend
    n = len(dense_model().get_weights())
    before = [result[f"arr_{i}"] for i in range(n)]
    after = [result[f"arr_{i}"] for i in range(n, 2 * n)]
    x, y = regression_data((8,), n=32)
    grads = tape_steps(dense_model, before, x, y, 16, 0.1, 1)[0]
    for w0, w1, g in zip(before, after, agc_numpy(grads, before, 0.01)):
        np.testing.assert_allclose((w0 - w1) / 0.1, g, rtol=1e-4, atol=1e-6)
    norm = result["norm"]
    assert np.isnan(norm[6])  # the NaN batch: skipped, out of the statistics
    want = zclip_numpy(norm, 2.5, 0.97, 5)
    np.testing.assert_allclose(result["norm_clipped"][np.isfinite(norm)],
                               np.minimum(norm, want)[np.isfinite(norm)], rtol=1e-4)
    assert np.isfinite(want[12]) and np.isfinite(result["threshold"][12])


@pytest.mark.slow
def test_agc_and_zclip_under_mirrored_strategy():
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "adaptive_mirrored_script.py")],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ("agc", "zclip"):
        # The update two replicas apply equals one device's on the global batch.
        assert result[mode]["vs_single_max_diff"] < 1e-6, result[mode]
        assert result[mode]["replicas_agree"]
    norm = np.array(result["zclip"]["norm"])
    want = zclip_numpy(norm, 2.5, 0.97, 5)
    np.testing.assert_allclose(result["zclip"]["norm_clipped"], np.minimum(norm, want), rtol=1e-4)
    assert np.isfinite(want).any()  # it clipped
    assert result["agc"]["clipped"]  # AGC was active
