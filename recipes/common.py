"""Helpers every recipe shares: flags from a Config, run folders, tables, device.

A recipe declares its settings once, as a frozen dataclass whose fields carry
a `metadata={"help": ...}`, and gets its command line from it:

    @dataclasses.dataclass(frozen=True)
    class Config:
        depths: tuple[int, ...] = field(  # numbers of layers to compare
            default=(1, 10), metadata={"help": "numbers of layers"})
        quick: bool = field(  # fewer variants, for a smoke test
            default=False, metadata={"help": "run a reduced sweep"})
        out: str | None = field(  # results folder; None: runs/<name>-<time>
            default=None, metadata={"help": "results folder"})

        def validate(self) -> str | None:
            if min(self.depths) < 1:
                return f"--depths received {min(self.depths)}; expected ints >= 1."
            return None

    def main(argv=None):
        config = parse_config(Config, argv, description=__doc__,
                              prog="python -m recipes.my_recipe")
        out_dir = new_run_dir(config.out, "my_recipe")
        table = run(config)
        print(table.to_string(index=False))
        write_table(table, out_dir, caption=f"Device: {device_name()}")

Bad flags exit with a message naming the value and the fix, and exit code
2, before any training starts.

The command line lives in `cli.py` (tyro), the output helpers in
`run_files.py`; this module re-exports them, so recipes import everything
from `.common`. It also holds `device_name` and `rnn_kernel`, for result
tables.
"""

from __future__ import annotations

import functools

from .cli import help_text, parse_config
from .run_files import check_out_dir, new_run_dir, write_config, write_table

__all__ = [
    "check_out_dir",
    "device_name",
    "help_text",
    "new_run_dir",
    "parse_config",
    "rnn_kernel",
    "write_config",
    "write_table",
]


def device_name() -> str:
    """Returns `"CPU"` or the name of the first GPU the Keras backend sees.

    The backend's own library is asked, imported only here: TensorFlow's
    `tf.config`, `jax.devices()` or `torch.cuda`. With several GPUs the count
    is prefixed, e.g. `"2 x NVIDIA H100 80GB HBM3"`.

    Returns:
        A short human-readable device name for result tables.

    Example:

    >>> device_name()  # on a machine without a GPU  # doctest: +SKIP
    'CPU'
    """
    import keras

    backend = keras.backend.backend()
    names: list[str] = []
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            for gpu in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(gpu)
                names.append(details.get("device_name", gpu.name))
        elif backend == "jax":
            import jax

            names = [d.device_kind for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):
        names = []
    if not names:
        return "CPU"
    return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"


@functools.lru_cache(maxsize=None)
def rnn_kernel(cell: str) -> str:
    """Which kernel the Keras backend runs `cell` with: `cuDNN`, `fused` or `generic`.

    Keras' `LSTM` and `GRU` first hand the whole sequence to the backend's
    own kernel (`keras.src.backend.lstm` / `gru`), which raises
    `NotImplementedError` where it cannot run, and then fall back to the
    generic step-by-step loop. Keras does not say which ran, so this asks the
    same functions the layer asks, once per process, with the recipe's own
    layer (`models.sequence_model`): `cuDNN` when the backend's `cudnn_ok`
    accepts the layer on this machine and its kernel runs (TensorFlow's
    cuDNN op, `jax.experimental.rnn`, `torch.nn.LSTM` on CUDA); `fused` when
    the backend's own kernel runs without cuDNN (JAX's GRU as one
    `lax.scan`, PyTorch's LSTM and GRU on CPU); `generic` when it refuses.
    `SimpleRNN` has no backend kernel.

    Args:
        cell: `"simple_rnn"`, `"lstm"` or `"gru"`.

    Returns:
        `"cuDNN"`, `"fused"` or `"generic"`.
    """
    if cell not in ("lstm", "gru"):
        return "generic"
    import keras
    from keras.src import backend  # what LSTM.inner_loop calls; no public API says which ran

    from .models import sequence_model

    layer = sequence_model(2, 2, cell=cell, units=4).get_layer("rnn")
    x = keras.ops.zeros((1, 2, 2))
    h = keras.ops.zeros((1, 4))
    args = dict(activation=layer.cell.activation, recurrent_activation=layer.cell.recurrent_activation,
                unroll=layer.unroll)
    weights = dict(kernel=layer.cell.kernel, recurrent_kernel=layer.cell.recurrent_kernel,
                   bias=layer.cell.bias, return_sequences=False, go_backwards=False, **args)
    try:
        if cell == "lstm":
            backend.lstm(x, h, h, None, **weights)
        else:
            backend.gru(x, h, None, reset_after=layer.cell.reset_after, **weights)
    except NotImplementedError:
        return "generic"
    return "cuDNN" if backend.cudnn_ok(**args, use_bias=layer.cell.use_bias) else "fused"
