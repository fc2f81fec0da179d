"""The doctor on AUTOTRAINER's published demo cases, ported to Keras 3.

AUTOTRAINER (Zhang et al., ICSE 2021) ships demo cases in its public
repository, github.com/shiningrain/AUTOTRAINER:

- `AutoTrainer/demo_case/Gradient_Vanish_Case/` (model.h5 + config.pkl):
  8 x Dense(5, sigmoid, he_uniform) + Dense(1, sigmoid, he_uniform),
  Adam(lr=1e-3), binary_crossentropy, batch 128, `simplednn_circle` data.
- `AutoTrainer/demo_case/Improper_Activation_case/demo_activation.py`
  (+ config_acti.pkl): 4 x Dense(50, relu, he_uniform) + Dense(3, relu),
  Adam(lr=1e-4), categorical_crossentropy, batch 256, `simplednn_blob`.
- `AutoTrainer/demo_case/Oscillating_Loss_Case/` (model.h5 + config.pkl):
  Dense(50, relu, he_uniform) + Dense(3, softmax),
  SGD(lr=0.01, momentum=0.9), categorical_crossentropy, batch 1,
  `simplednn_blob`.
- `Motivation/DyingReLU/` (train.py + minist_relu_layer=34.h5): 34 x
  (Dense(128, glorot_uniform) + Activation(relu)) + Dense(10, softmax),
  Adam (Keras default, lr=1e-3), categorical_crossentropy, batch 32, MNIST
  flattened to 784 and divided by 255.

Layers, activations, initializers, optimizer, learning rate, loss and batch
size are the published ones (read from the .h5 model configs and the
config .pkl files). What changed, and why:

- Data: no data set can be downloaded here, and scikit-learn is not
  installed, so `make_circles(n=1000, noise=0.1)` and
  `make_blobs(n=1000, centers=3, n_features=2, cluster_std=2)` are
  re-implemented in numpy (same distributions, other random draws than
  sklearn's `random_state=1`/`2`). Their preprocessing (`x * 100` then
  `/ 100`) is the identity, so x keeps make_blobs' raw scale (about
  +-15). The 700/300 split of `simplednn.py` is kept (passed as
  `validation_data`). MNIST is replaced by 3,000 rows (2,400 + 600
  held out) of class templates (smooth random blobs in [0, 1]) plus noise,
  clipped to [0, 1] as `x / 255` gives.
- Initial weights: drawn by the published initializers with a fixed seed,
  not the weights stored in the .h5 files (the files are not vendored).
- Epochs: the doctor's default (3 per trial), not the published 300/200/50;
  the doctor judges a trial by its own bar.

Run from the repository root:

    TF_CPP_MIN_LOG_LEVEL=3 python -m benchmarks.autotrainer_demos --max-seconds 180

References:
    - Zhang et al., "AUTOTRAINER: An Automatic DNN Training Problem
      Detection and Repair System", ICSE 2021.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SPLIT = 700  # simplednn.py: the first 700 of 1000 rows train, the rest validate


def make_circles(n: int = 1000, *, noise: float = 0.1, factor: float = 0.8, seed: int):
    """sklearn.datasets.make_circles in numpy: two noisy concentric circles, labels 0/1."""
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1),
                        factor * np.stack([np.cos(t_in), np.sin(t_in)], 1)])
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)]).astype("int64")
    order = rng.permutation(n)
    x, y = x[order], y[order]
    x = x + rng.normal(scale=noise, size=x.shape)
    return x.astype("float32"), y


def make_blobs(n: int = 1000, *, centers: int = 3, cluster_std: float = 2.0, seed: int):
    """sklearn.datasets.make_blobs in numpy (centers uniform in [-10, 10]^2); one-hot labels."""
    rng = np.random.default_rng(seed)
    where = rng.uniform(-10, 10, size=(centers, 2))
    counts = [n // centers + (1 if i < n % centers else 0) for i in range(centers)]
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    x = where[labels] + rng.normal(scale=cluster_std, size=(n, 2))
    order = rng.permutation(n)
    return x[order].astype("float32"), np.eye(centers, dtype="float32")[labels[order]]


def mnist_like(n: int = 3000, *, seed: int):
    """28x28 class templates (smooth blobs in [0, 1]) plus noise, flattened, one-hot over 10."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(28), np.arange(28), indexing="ij"), -1)
    templates = np.zeros((10, 28, 28))
    for c in range(10):
        for centre in rng.uniform(4, 24, size=(4, 2)):
            templates[c] += np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 3.0 ** 2))
    templates = np.clip(templates, 0, 1)
    labels = rng.integers(0, 10, size=n)
    x = np.clip(templates[labels] + rng.normal(scale=0.3, size=(n, 28, 28)), 0, 1)
    return x.reshape(n, 784).astype("float32"), np.eye(10, dtype="float32")[labels]


def _split(x, y, train):
    return (x[:train], y[:train]), (x[train:], y[train:])


def gradient_vanish(seed: int = 0):
    """Gradient_Vanish_Case: 8 sigmoid layers of 5 units, he_uniform, Adam 1e-3, BCE, batch 128."""
    import keras

    keras.utils.set_random_seed(seed)
    init = keras.initializers.HeUniform
    model = keras.Sequential([keras.Input((2,))]
                             + [keras.layers.Dense(5, activation="sigmoid", kernel_initializer=init(seed + i))
                                for i in range(8)]
                             + [keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init(seed + 8))])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model, *make_circles(seed=seed), 128


def improper_activation(seed: int = 0):
    """Improper_Activation_case: ReLU output under categorical cross-entropy, Adam 1e-4, batch 256."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,))]
                             + [keras.layers.Dense(50, activation="relu",
                                                   kernel_initializer=keras.initializers.HeUniform(seed + i))
                                for i in range(4)]
                             + [keras.layers.Dense(3, activation="relu")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model, *make_blobs(seed=seed), 256


def oscillating_loss(seed: int = 0):
    """Oscillating_Loss_Case: one ReLU layer, SGD(0.01, momentum 0.9) at batch size 1."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)),
                              keras.layers.Dense(50, activation="relu",
                                                 kernel_initializer=keras.initializers.HeUniform(seed)),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model, *make_blobs(seed=seed), 1


def dying_relu(seed: int = 0):
    """Motivation/DyingReLU: 34 x (Dense 128 + ReLU), glorot_uniform, Adam default, batch 32."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((784,))]
    for _ in range(34):
        layers += [keras.layers.Dense(128), keras.layers.Activation("relu")]
    model = keras.Sequential(layers + [keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model, *mnist_like(seed=seed), 32


# name -> (builder, AUTOTRAINER's label for it, training rows)
CASES = {
    "Gradient_Vanish_Case": (gradient_vanish, "vanishing gradient", SPLIT),
    "Improper_Activation_case": (improper_activation, "improper activation (ReLU output)", SPLIT),
    "Oscillating_Loss_Case": (oscillating_loss, "oscillating loss", SPLIT),
    "Motivation/DyingReLU": (dying_relu, "dying ReLU", 2400),
}


def run_case(name: str, *, max_seconds: float | None, seed: int = 0, epochs: int = 3) -> dict:
    """Builds one case and runs the doctor on it with its defaults; returns one row."""
    from gradguard.recipes.doctor import examine

    build, label, train = CASES[name]
    model, x, y, batch = build(seed)
    (x_tr, y_tr), val = _split(x, y, train)
    start = time.perf_counter()
    found = examine(model, x_tr, y_tr, validation_data=val, batch_size=batch, epochs=epochs,
                    max_seconds=max_seconds, seed=seed, verbose=True)
    seconds = time.perf_counter() - start
    t = found.trials
    first = t.iloc[0]
    learned = bool(t["learned"].astype(bool).any())
    return {"case": name, "published": label, "batch": batch,
            "trial0_acc": float(first["accuracy"]), "trial0_val/trivial": float(first["val/trivial"]),
            "trial0_learned": bool(first["learned"]), "cause": found.cause, "problem": found.problem,
            "cure": found.cure or "(none)", "trials": len(t), "learned": learned, "time_s": round(seconds, 1),
            "table": t}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.autotrainer_demos",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=180.0,
                        help="the doctor's search budget per case after trial 0 (default 180)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="which cases (default all)")
    parser.add_argument("--seed", type=int, default=0, help="data and weights seed (default 0)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3, the doctor's)")
    args = parser.parse_args(argv)
    import pandas as pd

    from gradguard.recipes.console import quiet_start, terminal

    quiet_start()  # the backend loads after the flags, its start-up notes filtered out

    rows = []
    for name in args.cases:
        print(f"=== {name}", flush=True)
        row = run_case(name, max_seconds=args.max_seconds, seed=args.seed, epochs=args.epochs)
        print(terminal(row.pop("table").to_markdown(index=False)), flush=True)
        rows.append(row)
    print(terminal(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g")))


if __name__ == "__main__":
    main()
