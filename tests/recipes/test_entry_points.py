"""Every entry point's --help: usage naming the program as run, no backend loaded, no noise, 120 columns."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENTRY_POINTS = ["recipes.rnn_long_seq", "recipes.deep_dense", "recipes.cures_race", "recipes.linear_chain",
                "recipes.doctor"]
BACKENDS = {"keras", "tensorflow", "jax", "torch"}


def _help(module: str, cwd: pathlib.Path):
    """`python -X importtime -m <module> --help`: stdout, the modules imported, the other stderr lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    return out.stdout, imported, [line for line in lines if not line.startswith("import time:")]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_names_the_program_and_loads_no_backend(module):
    stdout, imported, noise = _help(module, ROOT)
    assert stdout.startswith(f"usage: python -m {module} [-h]")
    assert not BACKENDS & imported  # so no TensorFlow start-up lines, and --help answers at once
    assert noise == []
    assert max(map(len, stdout.splitlines())) <= 120
    assert "--out" in stdout or "--model" in stdout


@pytest.mark.parametrize("module", ["recipes.doctor", "recipes.deep_dense"])
def test_help_from_anywhere_names_the_installed_module(module, tmp_path):
    stdout, imported, noise = _help(f"gradguard.{module}", tmp_path)
    assert stdout.startswith(f"usage: python -m gradguard.{module} [-h]")
    assert not BACKENDS & imported and noise == []


def test_help_into_a_pipe_closed_early_ends_quietly():
    """`python -m recipes.rnn_long_seq --help | head -1`: no BrokenPipeError traceback."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "recipes.rnn_long_seq", "--help"], cwd=ROOT, env=env,
                               stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        first = pipe.read(16)  # then the reader goes away, as `head` does
    _, stderr = process.communicate(timeout=120)
    assert first.startswith(b"usage:")
    assert process.returncode == 0 and b"Traceback" not in stderr, stderr.decode()[-2000:]
