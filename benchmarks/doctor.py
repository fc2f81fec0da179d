"""The doctor on a population of broken and healthy set-ups, beside a random-cure baseline.

Each kind is a user's script with one fault (or none), built for real from
a seed: the learning rate too high under SGD and under Adam, inputs or
targets (or both) in the thousands, a deep ReLU stack with gains ~4, a
deep sigmoid stack, dead ReLUs, an exploding SimpleRNN, NaN rows in x or
in y, a custom loss taking log(p) without an epsilon, inputs that overflow
float16 under `mixed_float16`, the three model/loss mismatches, SGD at
batch size 1; and healthy ones (an MLP, one behind an adapted
`Normalization`, a classifier, a data-limited classifier with 25% label
noise).

For each set-up the doctor runs with the defaults the tests use (320 rows,
20% held out, 3 epochs, batch 16, `max_trials=8`), and so does a
**random-cure baseline** (Kim et al., ICST 2023): trial 0, then cures drawn
at random from the same catalogue (`search.CATALOGUE`), one at a time on
fresh copies, no stacking, within the same trial budget, stopping at the
first that learns. A broken set-up counts as repaired when a trial learned
(by the doctor's own bar); a healthy one when it was left alone (the doctor
named it `healthy`; the baseline's trial 0 learned).

Run from the repository root (each row is appended to `--csv` as it
finishes, so a long run can be read while it goes):

    python -m benchmarks.doctor --seeds 1 --csv benchmarks/results/doctor_population.csv
    python -m benchmarks.doctor --kinds lr_sgd,target_scale --no-baseline

To measure an older doctor, run this file with `PYTHONPATH` pointing at a
tree whose `gradguard` package is that version, with `--no-baseline`.
"""

from __future__ import annotations

import argparse
import os
import time

if __name__ == "__main__":  # run as a program: TensorFlow's start-up notes filtered out
    from gradguard.recipes.console import quiet_start

    quiet_start()
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.recipes.doctor import examine  # noqa: E402

EPOCHS, BATCH, ROWS, BUDGET = 3, 16, 320, 8
D = keras.layers.Dense


# -- data ---------------------------------------------------------------------


def linear(seed, n=ROWS, d=8, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x * np.float32(scale), (x @ rng.normal(size=(d, 1)) / np.sqrt(d)).astype("float32")


def three_classes(seed, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 8)).astype("float32")
    y = ((x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1)).astype("int32")
    flip = rng.random(ROWS) < noise
    y[flip] = rng.integers(0, 3, size=flip.sum())
    return x, y


def sequences(seed, n=ROWS, steps=12):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, steps, 2)).astype("float32")
    return x, (x[:, -3:, :1].sum(1) - 0.5 * x[:, -1:, 1]).astype("float32")


# -- models as users write them -----------------------------------------------------


def model(layers, optimizer, shape=(8,), loss="mse", seed=0):
    keras.utils.set_random_seed(seed)
    built = keras.Sequential([keras.Input(shape), *layers])
    built.compile(optimizer=optimizer, loss=loss)
    return built


def mlp(optimizer, seed, hidden="relu", output=None, units=1, loss="mse", depth=1, **dense):
    return model([*[D(32, activation=hidden, **dense) for _ in range(depth)],
                  D(units, activation=output)], optimizer, loss=loss, seed=seed)


@keras.saving.register_keras_serializable(package="gradguard_benchmarks")
def log_loss_no_epsilon(y_true, y_pred):
    """Binary cross-entropy written by hand, without an epsilon: log(0) = -inf."""
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    return -keras.ops.mean(y_true * keras.ops.log(y_pred) + (1 - y_true) * keras.ops.log(1 - y_pred),
                           axis=-1)


def nan_rows(seed, where):
    x, y = linear(seed)
    rows = np.random.default_rng(seed + 100).choice(ROWS - 64, size=4, replace=False)
    (x if where == "x" else y)[rows] = np.nan
    return x, y


def binary(seed):
    x, y = three_classes(seed)
    return x, (y > 0).astype("float32")


SGD, ADAM = keras.optimizers.SGD, keras.optimizers.Adam
KINDS = {  # name -> seed -> (model, x, y, options); healthy kinds start with "healthy"
    "lr_sgd": lambda s: (mlp(SGD(0.5), s), *linear(s), {}),
    "lr_adam": lambda s: (mlp(ADAM(1.0), s, depth=2), *linear(s), {}),
    "input_scale": lambda s: (mlp(SGD(0.05), s), *linear(s, scale=1000.0), {}),
    "target_scale": lambda s: (mlp(SGD(0.05), s), linear(s)[0], linear(s)[1] * 100 + 300, {}),
    "input_and_target_scale": lambda s: (mlp(SGD(0.01), s), linear(s, scale=1000.0)[0],
                                         linear(s)[1] * 100 + 300, {}),
    "depth_init": lambda s: (mlp(SGD(0.05), s, depth=6, kernel_initializer=keras.initializers.RandomNormal(
        stddev=4.0 / np.sqrt(32))), *linear(s, n=640), {}),
    "saturating": lambda s: (mlp(SGD(0.05), s, hidden="sigmoid", depth=8), *linear(s), {}),
    "dying_relu": lambda s: (mlp(SGD(0.05), s, bias_initializer=keras.initializers.Constant(-10.0)),
                             *linear(s), {}),
    "recurrence": lambda s: (model([keras.layers.SimpleRNN(16, activation="relu", recurrent_initializer=
                                    keras.initializers.Orthogonal(gain=3.0)), D(1)], SGD(0.01),
                                   (12, 2), seed=s), *sequences(s), {}),
    "nan_rows_x": lambda s: (mlp(SGD(0.05), s), *nan_rows(s, "x"), {}),
    "nan_rows_y": lambda s: (mlp(SGD(0.05), s), *nan_rows(s, "y"), {}),
    "custom_loss_nan": lambda s: (mlp(SGD(2.0), s, output="sigmoid", loss=log_loss_no_epsilon),
                                  *binary(s), {}),
    "float16_overflow": lambda s: (mlp(SGD(0.05), s), *linear(s, scale=3000.0),
                                   {"policy": "mixed_float16"}),
    "mismatch_linear_cce": lambda s: (mlp(SGD(0.1), s, units=3, loss=keras.losses.SparseCategoricalCrossentropy()),
                                      *three_classes(s), {}),
    "mismatch_softmax_one_unit": lambda s: (mlp(SGD(0.1), s, output="softmax", loss="binary_crossentropy"),
                                            *binary(s), {}),
    "mismatch_relu_cce": lambda s: (mlp(SGD(0.1), s, output="relu", units=3,
                                        loss=keras.losses.CategoricalCrossentropy()),
                                    three_classes(s)[0], np.eye(3, dtype="float32")[three_classes(s)[1]], {}),
    "batch1_oscillation": lambda s: (mlp(SGD(0.3), s), *linear(s), {"batch_size": 1}),
    "healthy_mlp": lambda s: (mlp(SGD(0.05), s), *linear(s), {}),
    "healthy_normalization": lambda s: healthy_normalized(s),
    "healthy_classifier": lambda s: (mlp(SGD(0.1), s, units=3, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)), *three_classes(s), {}),
    "healthy_data_limited": lambda s: (mlp(SGD(0.1), s, units=3, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)), *three_classes(s, noise=0.25), {}),
}


def healthy_normalized(seed):
    x, y = linear(seed, scale=1000.0)
    normalize = keras.layers.Normalization()
    normalize.adapt(x[:256])
    return model([normalize, D(32, activation="relu"), D(1)], SGD(0.05), seed=seed), x, y, {}


# -- the random-cure baseline ----------------------------------------------------------


def random_cures(user_model, x, y, *, seed: int, batch_size: int) -> tuple[bool, int]:
    """(learned, trials trained): trial 0, then random single cures within the budget."""
    from gradguard.recipes import cures as C
    from gradguard.recipes.search import CATALOGUE
    from gradguard.recipes.symptoms import clip_norm
    from gradguard.recipes.trials import Bar, Trainer, split_data

    data = split_data(x, y, None, 0.2)
    trainer = Trainer(user_model, data, Bar.measure(user_model, data, None), seed=0,
                      epochs=EPOCHS, batch_size=batch_size, out_dir=None)
    first = trainer.train(0, "as given", trainer.patient())
    if first.row["learned"] and not first.events:
        return True, 1
    context = C.Context(clip_norm=clip_norm(first.norms, first.events), bad_rows=(),
                        loss=user_model.loss, batch_size=batch_size)
    trained = 1
    for index in np.random.default_rng(seed).permutation(len(CATALOGUE)):
        if trained >= BUDGET:
            break
        cure = CATALOGUE[index]
        try:
            patient = cure.apply(trainer.patient(), context)
        except C.NotApplicable:
            continue
        trained += 1
        if trainer.train(trained - 1, cure.name, patient).row["learned"]:
            return True, trained
    return False, trained


# -- run, report ------------------------------------------------------------------------


def measure(kind: str, seed: int, baseline: bool) -> dict:
    keras.config.set_dtype_policy("float32")
    user_model, x, y, options = KINDS[kind](seed)
    batch_size = options.get("batch_size", BATCH)
    if "policy" in options:  # built under the policy, as the user's script would
        keras.config.set_dtype_policy(options["policy"])
        user_model, x, y, _ = KINDS[kind](seed)
    healthy = kind.startswith("healthy")
    start = time.perf_counter()
    try:
        found = examine(user_model, x, y, epochs=EPOCHS, batch_size=batch_size,
                        max_trials=BUDGET, seed=0, verbose=False)
        trained = found.trials[found.trials["note"] == ""]
        ok = found.cause == "healthy" if healthy else found.cure is not None
        row = {"cause": found.cause, "cure": found.cure or "", "trials": len(trained), "error": ""}
    except Exception as error:  # noqa: BLE001 - a crash is a failure to repair, reported
        ok, row = False, {"cause": "", "cure": "", "trials": 0, "error": f"{type(error).__name__}: {error}"[:120]}
    wall = time.perf_counter() - start
    result = {"kind": kind, "seed": seed, "repaired": bool(ok), **row, "time_s": round(wall, 1)}
    if baseline:
        start = time.perf_counter()
        try:
            learned, tried = random_cures(user_model, x, y, seed=seed, batch_size=batch_size)
        except Exception:  # noqa: BLE001
            learned, tried = False, 0
        result.update(baseline=bool(learned), baseline_trials=tried,
                      baseline_time_s=round(time.perf_counter() - start, 1))
    keras.config.set_dtype_policy("float32")
    return result


def per_kind(rows: pd.DataFrame) -> pd.DataFrame:
    """repaired / baseline / median trials / median time, per kind."""
    agg = {"n": ("seed", "size"), "repaired": ("repaired", "sum"),
           "median_trials": ("trials", "median"), "median_time_s": ("time_s", "median")}
    if "baseline" in rows:
        agg["baseline"] = ("baseline", "sum")
    return rows.groupby("kind", sort=False).agg(**agg).reset_index()


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", help="comma-separated kinds (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per kind (default 1)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the random-cure baseline")
    parser.add_argument("--csv", help="append one row per set-up here as it finishes")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds received {unknown}; expected some of {sorted(KINDS)}.")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for kind in kinds:
            rows.append(measure(kind, seed, not args.no_baseline))
            print(rows[-1], flush=True)
            if args.csv:
                pd.DataFrame(rows[-1:]).to_csv(args.csv, mode="a", index=False,
                                               header=not os.path.exists(args.csv))
    table = pd.DataFrame(rows)
    print(per_kind(table).to_markdown(index=False))
    return table


if __name__ == "__main__":
    main()
