"""The recipes under KERAS_BACKEND=jax / torch, in a subprocess, and what they write.

Each backend runs `deep_dense --quick` (three variants) and `linear_chain
--quick` in one fresh process whose path finder does not find TensorFlow, the way a JAX-
or PyTorch-only install sees it. Skipped where the backend is not installed (CI installs jax, not
torch). The files are checked against the same recipe run here under
TensorFlow, and the TensorBoard events against the recipe's own CSVs.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import pandas as pd
import pytest

from gradguard.recipes import deep_dense
from gradguard.recipes.common import device_name, rnn_kernel
from gradguard.recipes.epoch_summary import EpochSummary
from gradguard.recipes.experiment import RUN_GROUPS, tensorboard_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
DENSE = ["--quick", "--variants", "baseline", "global_clipnorm", "standardize@adam"]
SCRIPT = textwrap.dedent("""
    import importlib.machinery, sys

    class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] == "tensorflow":
                return None  # as on a JAX- or PyTorch-only install
            return super().find_spec(name, path, target)

    sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = PathFinderWithoutTensorFlow
    from gradguard.recipes import deep_dense, linear_chain
    deep_dense.main({dense!r} + ["--out", {out!r} + "/dense"])
    linear_chain.main(["--quick", "--out", {out!r} + "/chain"])
    assert "tensorflow" not in sys.modules
""")


def files(folder: pathlib.Path) -> set[str]:
    """Every file under `folder`, relative, with TensorBoard event names reduced to their folder.

    A row's run folder is `tensorboard/<verdict>/<row>`; the verdict (exploded
    or not) may differ between backends, so it is left out.
    """
    names = set()
    for path in folder.rglob("*"):
        if path.is_file():
            rel = path.relative_to(folder)
            if rel.parts[0] == "tensorboard" and rel.parts[1] in RUN_GROUPS:
                rel = pathlib.Path(rel.parts[0], *rel.parts[2:])
            names.add(str(rel.parent / "events") if rel.name.startswith("events.out") else str(rel))
    return names


def scalars(folder: pathlib.Path, tag: str) -> list[tuple[int, float]]:
    """`(step, value)` of every `tag` scalar in the event files of `folder`."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    values = []
    for path in sorted(folder.glob("events.out*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    values.append((event.step, value.simple_value))
    return values


@pytest.fixture(scope="module")
def tensorflow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf") / "dense"
    deep_dense.main([*DENSE, "--out", str(out)])
    return out


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_quick_recipes_under_backend_without_tensorflow(backend, tmp_path, tensorflow_run):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", SCRIPT.format(dense=DENSE, out=str(tmp_path))],
                   cwd=ROOT, env=env, check=True, timeout=240)
    out = tmp_path / "dense"
    table = pd.read_csv(out / "results.csv")
    assert list(table["variant"]) == ["baseline", "global_clipnorm", "standardize@adam"]
    assert set(table["backend"]) == {backend} and set(table["device"]) == {"CPU"}
    # The same files as the TensorFlow run (nan_guard.json only where NaNGuard acted).
    expected = {f for f in files(tensorflow_run) if not f.endswith("nan_guard.json")}
    assert expected <= files(out)
    assert {f for f in files(out) if not f.endswith("nan_guard.json")} == expected
    # TensorBoard, written without TensorFlow: the epoch losses are the CSV's.
    for row in table.itertuples():
        name = f"{row.variant}-dense-seed0"
        losses = pd.read_csv(out / "rows" / name / "losses.csv")
        val = scalars(tensorboard_run(out, name), "epoch_loss/validation")
        assert [v for _, v in val] == pytest.approx(list(losses["val_loss"].dropna()), rel=1e-6, nan_ok=True)
        norms = scalars(tensorboard_run(out, name), "gradients/global_norm")
        assert len(norms) == len(pd.read_csv(out / "rows" / name / "grad_norms.csv"))
    chain = pd.read_csv(tmp_path / "chain" / "results.csv")
    assert chain["grad_input_norm"].to_numpy() == pytest.approx(chain["grad_input_expected"].to_numpy(), rel=1e-5)
    assert chain["grad_kernel_norm"].to_numpy() == pytest.approx(chain["grad_kernel_expected"].to_numpy(), rel=1e-5)


def test_epoch_summary_writes_train_and_validation_losses(tmp_path):
    x = keras.ops.convert_to_numpy(keras.random.normal((64, 3), seed=1))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, x[:, :1], validation_split=0.25, epochs=3, verbose=0,
                        callbacks=[EpochSummary(tmp_path)]).history
    for split, key in (("train", "loss"), ("validation", "val_loss")):
        logged = scalars(tmp_path, f"epoch_loss/{split}")
        assert [s for s, _ in logged] == [0, 1, 2]
        assert [v for _, v in logged] == pytest.approx(history[key], rel=1e-6)


def test_rnn_kernel_names_the_generic_loop_without_a_gpu():
    # This suite runs on CPU: TensorFlow's LSTM and GRU only take cuDNN on a GPU.
    if keras.backend.backend() != "tensorflow" or device_name() != "CPU":
        pytest.skip("checks TensorFlow on a CPU-only machine")
    assert [rnn_kernel(c) for c in ("simple_rnn", "lstm", "gru")] == ["generic"] * 3


def test_layout_summary_is_the_custom_scalar_plugins_proto_built_without_tensorflow():
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, summary

    from gradguard.recipes.epoch_summary import LAYOUT, layout_summary

    ours = layout_summary()
    layout = layout_pb2.Layout.FromString(ours.value[0].tensor.string_val[0])
    assert [c.title for c in layout.category] == list(LAYOUT)
    # `summary.pb` needs TensorFlow (installed here); the bytes must be the same.
    assert ours == summary_pb2.Summary.FromString(summary.pb(layout).SerializeToString())
