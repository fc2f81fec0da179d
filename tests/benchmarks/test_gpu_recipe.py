"""Tests of benchmarks/gpu_recipe.py: its environments and its comparison, never timings."""

import importlib.util

import pandas as pd
import pytest

from gradguard.benchmarks import gpu_recipe


def results(rows):
    """A results.csv as the recipes write it, from (variant, exploded_step, learned, wall)."""
    return pd.DataFrame([
        {"variant": v, "cell": "lstm", "seed": 0, "val/trivial": 0.5, "learned": learned,
         "exploded_step": step, "wall_time_s": wall, "device": "CPU", "kernel": "generic"}
        for v, step, learned, wall in rows])


def test_run_env_shows_or_hides_the_gpu_and_asks_for_determinism():
    base = {"PATH": "/bin", "JAX_PLATFORMS": "cuda", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    gpu = gpu_recipe.run_env("jax", hide_gpu=False, base=base)
    cpu = gpu_recipe.run_env("torch", hide_gpu=True, base=base)
    assert gpu["KERAS_BACKEND"] == "jax" and "JAX_PLATFORMS" not in gpu
    assert gpu["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"
    assert cpu["KERAS_BACKEND"] == "torch"
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["JAX_PLATFORMS"] == "cpu"
    assert cpu["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert base == {"PATH": "/bin", "JAX_PLATFORMS": "cuda", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}


def test_compare_runs_agrees_on_verdicts_not_numbers():
    gpu = results([("clip", None, True, 2.0), ("baseline", 12, False, 1.0)])  # kept in run order
    cpu = results([("baseline", 14, False, 3.0), ("clip", None, True, 8.0)])
    cpu.loc[1, "val/trivial"] = 0.25  # numbers may differ
    table = gpu_recipe.compare_runs(gpu, cpu)
    assert list(table["variant"]) == ["clip", "baseline"]
    assert list(table["agree"]) == ["yes", "yes"]
    assert list(table["speedup"]) == [4.0, 3.0]
    assert table["gpu exploded_step"].isna().tolist() == [True, False]
    text = gpu_recipe.report(table, {"gpu": (10.0, True), "cpu": (20.0, True)}, "header")
    assert "verdicts (exploded, learned): the same in 2 of 2 rows" in text
    assert "| baseline" in text


def test_compare_runs_flags_a_different_verdict_and_a_missing_row():
    gpu = results([("baseline", 12, False, 1.0), ("clip", None, True, 2.0), ("lower_lr", None, False, 1.0)])
    cpu = results([("baseline", None, False, 3.0), ("clip", None, True, 8.0)])  # cut short
    table = gpu_recipe.compare_runs(gpu, cpu)
    assert list(zip(table["variant"], table["agree"])) == [("baseline", "NO"), ("clip", "yes"), ("lower_lr", "missing")]
    text = gpu_recipe.report(table, {"gpu": (10.0, True), "cpu": (270.0, False)}, "header")
    assert "DIFFERENT in 1 of 2 rows both runs finished: baseline/lstm/seed0" in text
    assert "cpu run: 270 s (cut short" in text


def test_bad_flags_exit_2(tmp_path, capsys):
    (tmp_path / "x").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        gpu_recipe.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_recipe.main(["--timeout", "0"])
    assert "--timeout received 0.0" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_on_cpu_compares_two_cpu_runs(tmp_path, capsys):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    code = gpu_recipe.main(["--quick", "--recipe", "deep_dense", "--backend", "jax", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "saw no GPU" in printed
    assert "verdicts (exploded, learned): the same in 9 of 9 rows" in printed
