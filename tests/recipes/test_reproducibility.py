"""A recipe run twice on one machine writes the same results, wall time aside.

Every row seeds Keras (`keras.utils.set_random_seed`: Python, numpy and the
backend) and turns on the backend's deterministic kernels
(`experiment.set_determinism`: TensorFlow's op determinism) before its
model is built, and `fit` shuffles with that seed, so the weights, the data
order and every number in `results.csv` and the rows' curves repeat.
"""

import pandas as pd
import pytest

from gradguard.recipes import deep_dense, rnn_long_seq

RUNS = {
    "deep_dense": (deep_dense, ["--depth", "3", "--width", "8", "--n-train", "256", "--n-val", "64",
                                "--epochs", "2", "--batch-size", "32",
                                "--variants", "baseline", "standardize+global_clipnorm@adam"]),
    "rnn_long_seq": (rnn_long_seq, ["--seq-len", "8", "--units", "4", "--n-train", "128",
                                    "--n-val", "32", "--epochs", "2", "--batch-size", "16",
                                    "--cells", "simple_rnn", "lstm", "--variants", "global_clipnorm@adam"]),
}


def _files(out):
    """Every CSV the run wrote (results and each row's curves), wall time dropped."""
    return {p.relative_to(out): pd.read_csv(p).drop(columns="wall_time_s", errors="ignore")
            for p in sorted(out.rglob("*.csv"))}


@pytest.mark.slow  # about 20 s each on 2 shared cores: two runs of 2-4 rows
@pytest.mark.parametrize("name", RUNS)
def test_two_runs_write_the_same_results_but_wall_time(tmp_path, name):
    module, flags = RUNS[name]
    first, second = ([module.main([*flags, "--out", str(tmp_path / run)]) for run in ("a", "b")])
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    # results + per row its global norms, layer norms and losses
    assert a.keys() == b.keys() and len(a) == 1 + 3 * len(first)
    for path in a:
        pd.testing.assert_frame_equal(a[path], b[path], check_exact=True, obj=str(path))
    assert first["epochs_run"].sum() >= len(first)  # every row trained
    pd.testing.assert_frame_equal(first.drop(columns="wall_time_s"), second.drop(columns="wall_time_s"))
