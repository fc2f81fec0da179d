"""The benchmarks' --help: usage naming the program, no TensorFlow start-up noise (they load Keras first: slow)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["benchmarks.callback_profile", "benchmarks.callback_overhead",
                                    "benchmarks.doctor", "benchmarks.repeated_fit"])
def test_help_prints_usage_without_startup_noise(module):
    from gradguard.recipes.console import STARTUP_NOISE

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"usage: python -m {module} [-h]")
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    assert not [line for line in lines if STARTUP_NOISE.match(line) or "absl" in line or "cuInit" in line]
    assert out.stderr.strip() == "" and max(map(len, lines)) <= 120
