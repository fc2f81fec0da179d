"""Every benchmark run as a program answers `--help` before Keras loads, with no start-up noise."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROGRAMS = sorted(f"benchmarks.{path.stem}" for path in (ROOT / "benchmarks").glob("*.py")
                  if 'if __name__ == "__main__":' in path.read_text())

# Runs the module as `python -m` would, then says which heavy modules the run imported.
PROBE = """
import runpy, sys
sys.argv = [{module!r}, "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
print("LOADED", sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules), code)
"""


def test_every_program_is_found():
    assert {"benchmarks.callback_overhead", "benchmarks.doctor", "benchmarks.diagnosis",
            "benchmarks.recurrent_gain_twins"} <= set(PROGRAMS)


@pytest.mark.parametrize("module", PROGRAMS)
def test_help_answers_before_keras_loads(module):
    from gradguard.recipes.console import STARTUP_NOISE

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"usage: python -m {module} [-h]"), out.stdout[:200]
    assert out.stdout.splitlines()[-1] == "LOADED [] 0", out.stdout.splitlines()[-1]
    lines = out.stdout.splitlines()[:-1] + out.stderr.splitlines()
    assert not [line for line in lines if STARTUP_NOISE.match(line) or "absl" in line or "cuInit" in line]
    assert out.stderr.strip() == "" and max(map(len, lines)) <= 120


@pytest.mark.parametrize("module, argv", [
    ("gradguard.benchmarks.diagnosis", ["--help"]),
    ("gradguard.benchmarks.diagnosis", ["--scripts", "--help"]),
    ("gradguard.benchmarks.diagnosis_scripts", ["--help"]),
    ("gradguard.benchmarks.diagnosis_replay", ["--help"]),
])
def test_diagnosis_help_loads_neither_keras_nor_tensorflow(module, argv):
    # Issue 29: the population benchmarks answer --help at once (Keras and
    # TensorFlow load inside the functions that train). Checked by what the
    # process imported, not by a time on a shared machine.
    probe = ("import runpy, sys\n"
             f"sys.argv = ['x'] + {argv!r}\n"
             "try:\n"
             f"    runpy.run_module({module!r}, run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "print('LOADED', sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"


def test_machine_header_is_one_paragraph_within_120_columns():
    from gradguard.benchmarks.machine import machine_header

    header = machine_header()
    lines = header.splitlines()
    assert lines[0].startswith("Machine: ") and header.endswith(".")
    assert max(map(len, lines)) <= 120  # it was one line of ~163 on this project's machine
    assert "load average" in " ".join(lines)
