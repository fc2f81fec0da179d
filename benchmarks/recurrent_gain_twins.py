"""Does a recurrent gain above 1 amplify? SimpleRNN, GRU and LSTM beside their gain-1 twins.

The evidence behind `diagnosis.ungated_recurrent_gain` and the `recurrence`
set-ups of `benchmarks.diagnosis`: on the population's 40-step sequences,
each cell at each recurrent gain (orthogonal initializer, `gain`), with the
same data, seed and rate. Per row: the state norm at steps 1 and 40 at
initialization (mean over 64 sequences), its ratio to the gain-1 twin's at
step 40, and the loss after 24 steps (mean of the last 8 running losses)
over the targets' variance (1: the constant prediction) under SGD (0.1)
and Adam (1e-3). What you will see: a ReLU SimpleRNN's state explodes at
gain 1.3 while a GRU's or LSTM's at gain 2 stays within ~10-20% of gain 1's
and learns the same.

    python -m benchmarks.recurrent_gain_twins   # ~2-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras: `--help` answers before Keras loads)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recurrent_gain_twins",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help="Markdown file to write (must not exist); default "
                             "benchmarks/results/recurrent_gain_twins.md, or a timestamped "
                             "sibling when that exists")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser, log_level="3")  # flags first as a program, then Keras, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from gradguard.recipes.console import terminal  # noqa: E402

from .diagnosis_population import make_data, make_model, make_optimizer  # noqa: E402

CELLS = {  # cell: (activation, gains)
    ("simplernn", "tanh"): (1.0, 1.5, 2.0),
    ("simplernn", "relu"): (1.0, 1.3, 1.5, 2.0),
    ("gru", "tanh"): (1.0, 1.5, 2.0),
    ("gru", "relu"): (1.0, 2.0, 4.0),
    ("lstm", "tanh"): (1.0, 1.5, 2.0),
    ("lstm", "relu"): (1.0, 2.0, 4.0),
}
RATES = {"sgd": 0.1, "adam": 1e-3}  # the population's recurrence rates
SEQ_LEN, SEED = 40, 0


class _Losses(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def state_norms(model, x) -> np.ndarray:
    """The recurrent layer's state norm at each step (mean over sequences)."""
    layer = model.layers[1]
    config = {**layer.get_config(), "return_sequences": True, "name": "probe"}
    probe = layer.__class__.from_config(config)
    keras.Sequential([keras.Input(x.shape[1:]), probe])
    probe.set_weights(layer.get_weights())
    return np.linalg.norm(np.asarray(probe(x)), axis=-1).mean(axis=0)


def run() -> pd.DataFrame:
    rows = []
    x, y = make_data("gru", SEED, seq_len=SEQ_LEN)  # the same draw for every cell
    variance = float(np.var(y))
    for (family, act), gains in CELLS.items():
        for gain in gains:
            row = {"cell": family, "activation": act, "gain": gain}
            for opt, lr in RATES.items():
                keras.backend.clear_session()
                keras.utils.set_random_seed(SEED)
                model = make_model(family, x.shape[1:], depth=2,
                                   recurrent_gain=gain, rnn_act=act)
                if opt == "sgd":
                    norms = state_norms(model, x[:64])
                    row.update(state_1=norms[0], state_40=norms[-1])
                model.compile(optimizer=make_optimizer(opt, lr), loss="mse")
                losses = _Losses()
                model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[losses])
                row[f"loss_{opt}"] = float(np.mean(losses.losses[-8:])) / variance
            rows.append(row)
    df = pd.DataFrame(rows)
    twin = df[df["gain"] == 1.0].set_index(["cell", "activation"])["state_40"]
    df.insert(5, "state_40_vs_gain_1", [
        r.state_40 / twin[(r.cell, r.activation)] for r in df.itertuples()])
    return df


def output_path(out: str | None) -> pathlib.Path:
    """Where the table goes: `out`, or the default, never over an existing file."""
    if out is not None:
        return pathlib.Path(out)
    default = pathlib.Path(__file__).parent / "results" / "recurrent_gain_twins.md"
    if not default.exists():
        return default
    return default.with_name(f"{default.stem}-{time.strftime('%Y%m%d-%H%M%S')}.md")


def main(argv=None) -> pd.DataFrame:
    parser = build_parser()
    args = parser.parse_args(argv)
    path = output_path(args.out)
    if path.exists():
        parser.error(f"--out {path}: the file exists; name a new file (nothing is overwritten).")
    df = run()
    text = df.to_markdown(index=False, floatfmt=".3g")
    print(terminal(text))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as f:  # "x": never overwrite
        f.write(text + "\n")
    print(f"Wrote {path}")
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
