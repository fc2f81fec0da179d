"""NaNGuard measured on scripts others wrote: keras-io examples with breaks injected.

Each script in `benchmarks/keras_io/` (a keras-io example adapted to run
offline on synthetic data, model/compile/fit as published) trains once per
break with the default `NaNGuard()`, and twice healthy (seeds 0 and 1).
Every run is labelled by construction with the cause the guard should name:

    lr_x100, lr_x1000    learning rate x100 / x1000 after compile -> learning_rate
    nan_label            one label NaN (one entry of a one-hot row) -> bad_data
    inf_label            one label inf (where inputs cannot hold NaN) -> bad_data
    nan_input            one input value NaN in one sample            -> bad_data
    inf_input            one input value inf (where labels cannot hold NaN) -> bad_data
    feature_x1e4         one input feature x1e4 in every sample       -> input_scale
    targets_x1e5         every target x1e5 (labels, for classifiers)  -> target_scale
    fp16_overflow        mixed_float16, float inputs scaled to ~3e4
                         (token models: embedding tables to ~3e4)     -> loss_scale
                         (or input_scale where float inputs were scaled)
    healthy              nothing changed                              -> no event at all

Two rules of counting (`mark_harm`, `summarize`). A float16 break that
scales a script's float inputs to ~3e4 puts them far off unit scale in
float32 as well: `input_scale` (standardize the inputs, which cures it in
either precision) is a right cause there too (`also`); token models, whose
embedding tables are scaled instead, have only `loss_scale`. And a break
the model shrugged off (no event, finite weights, clean-data skill at least
`HARMLESS_SHARE` of its healthy runs' median, on a script whose healthy
runs learn) is no break to name: it is counted apart (`harmless`) and left
out of the right-cause share; the strict share over every break is printed
beside it.

A break a script cannot carry (integer labels or token ids cannot hold
NaN; TF raises on them before any gradient) is not run; the module says
why (`NOT_APPLICABLE`) and the report lists it.

Per run: event (yes/no), step, trigger, cause, action of the decisive event
(the first that stopped training, else the first), weights finite at the
end, whether the model ended at chance on the clean data in the break's
units (`judged_data`; accuracy within 0.02 of the majority class, or an
R^2 <= 0.05, or non-finite predictions; `judge`, with BatchNormalization's
statistics recalibrated), and whether training went on to the last epoch.

    python -m benchmarks.diagnosis --scripts --tag before
    python -m benchmarks.diagnosis --scripts --only vae --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
from gradguard.recipes.console import terminal, wrap

# Keras loads inside the functions that train: `--help` answers at once. Run
# as a program, the backend loads here, quietly, before `.diagnosis` (which,
# imported, sets TF_CPP_MIN_LOG_LEVEL and so would turn the filtering off).
if __name__ == "__main__" and not {"-h", "--help"} & set(sys.argv[1:]):
    from gradguard.recipes.console import quiet_start

    quiet_start()
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from . import keras_io  # noqa: E402
from .diagnosis import _get, decisive  # noqa: E402


BREAKS = {  # break -> the cause it should be named
    "lr_x100": "learning_rate", "lr_x1000": "learning_rate",
    "nan_label": "bad_data", "inf_label": "bad_data", "nan_input": "bad_data",
    "inf_input": "bad_data",
    "feature_x1e4": "input_scale", "targets_x1e5": "target_scale",
    "fp16_overflow": "loss_scale",
}
HARMLESS_SHARE = 0.9  # a silent break with this share of the healthy skill did no harm
SINGLE_BAD = ("nan_label", "inf_label", "nan_input", "inf_input")
HEALTHY_SEEDS = (0, 1)
FP16_MAX = 3e4  # float inputs scaled so that their largest value is this (fits float16)


def plan(script: str, quick: bool = False) -> list[tuple[str, int]]:
    """(break, seed) runs of one script; `quick`: lr_x100, lr_x1000, the first
    single bad batch and one healthy seed only."""
    module = keras_io.load(script)
    runs = []
    for name in BREAKS:
        if name in module.NOT_APPLICABLE:
            continue
        if name == "inf_label" and "nan_input" not in module.NOT_APPLICABLE:
            continue  # an inf label only where the inputs cannot hold NaN
        if name == "inf_input" and ("nan_label" not in module.NOT_APPLICABLE
                                    or "nan_input" in module.NOT_APPLICABLE):
            continue  # an inf input only where the labels cannot hold NaN and inputs can
        runs.append((name, 0))
    if quick:
        first_bad = [r for r in runs if r[0] in SINGLE_BAD][:1]
        runs = [r for r in runs if r[0] in ("lr_x100", "lr_x1000")] + first_bad
    return runs + [("healthy", s) for s in (HEALTHY_SEEDS[:1] if quick else HEALTHY_SEEDS)]


# -- breaks --------------------------------------------------------------


def _rows(x, start: int, stop: int):
    """Rows `start:stop` of `x`: an array, a dict or a list of arrays (the scripts' inputs)."""
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [v[start:stop] for v in x]
    return x[start:stop]


def _length(x) -> int:
    """Rows in `x`, an array, a dict or a list of arrays."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x[0]) if isinstance(x, (list, tuple)) else len(x)


def _scale_one_feature(x, n: int):
    """`x` (one array) with one feature x1e4: a sequence's first channel at
    every step, a table's first column, an image's centre pixel."""
    x = np.array(x)
    if x.ndim == 3:
        x[..., 0] *= 1e4
    else:
        flat = x.reshape(n, -1)
        column = 0 if x.ndim == 2 else flat.shape[1] // 2
        flat[:, column] *= 1e4
    return x


def _with_one_bad_value(a, n: int, row: int, rng, bad: float):
    """A copy of array `a` with `bad` at one random value of sample `row`."""
    a = np.array(a)
    flat = a.reshape(n, -1)
    flat[row, int(rng.integers(flat.shape[1]))] = bad
    return a


def _scaled_to_fp16_max(a):
    """Array `a` scaled so that its largest absolute value is `FP16_MAX`, float32."""
    return (np.asarray(a) * (FP16_MAX / np.nanmax(np.abs(a)))).astype("float32")


def _built(setup) -> None:
    """Builds a subclassed model (it builds on its first call) on two rows of its data."""
    if not setup.model.built:
        setup.model(_rows(setup.x, 0, 2))


def inject(module, setup, brk: str, seed: int) -> None:
    """Puts break `brk` into `setup` (its data copies, its optimizer)."""
    import keras

    rng = np.random.default_rng(seed + 7)
    x, y = setup.x, setup.y
    n = _length(x)
    row = int(0.3 * n)  # inside the training part of any validation_split
    if brk in ("lr_x100", "lr_x1000"):
        opt = setup.model.optimizer
        opt.learning_rate = float(keras.ops.convert_to_numpy(opt.learning_rate)) * (
            100.0 if brk == "lr_x100" else 1000.0)
    elif brk in ("nan_label", "inf_label"):
        y = np.array(y, dtype="float32")
        y.reshape(n, -1)[row, 0] = np.nan if brk == "nan_label" else np.inf
    elif brk in ("nan_input", "inf_input"):
        bad = np.nan if brk == "nan_input" else np.inf
        if isinstance(x, dict):
            x = dict(x)
            key = module.NAN_KEY
            x[key] = np.array(x[key], dtype="float32")
            x[key][row, 0] = bad
        elif isinstance(x, (list, tuple)):  # one value of the module's input NAN_KEY
            x = list(x)
            x[module.NAN_KEY] = _with_one_bad_value(x[module.NAN_KEY], n, row, rng, bad)
        else:
            x = _with_one_bad_value(x, n, row, rng, bad)
    elif brk == "feature_x1e4":
        if isinstance(x, dict):
            x = dict(x)
            x[module.FEATURE_KEY] = x[module.FEATURE_KEY] * 10_000
        elif isinstance(x, (list, tuple)):  # the feature of the module's input FEATURE_KEY
            x = list(x)
            x[module.FEATURE_KEY] = _scale_one_feature(x[module.FEATURE_KEY], n)
        else:
            x = _scale_one_feature(x, n)
    elif brk == "targets_x1e5":
        y = np.asarray(y, dtype="float32") * 1e5
    elif brk == "fp16_overflow":
        _built(setup)
        embeddings = _embeddings(setup.model)
        if embeddings:  # token inputs: the tables' largest value to FP16_MAX
            for layer in embeddings:
                table = keras.ops.convert_to_numpy(layer.embeddings)
                layer.embeddings.assign(table * (FP16_MAX / np.abs(table).max()))
        elif isinstance(x, dict):
            x = {k: (v * FP16_MAX if v.dtype.kind == "i" else v) for k, v in x.items()}
        elif isinstance(x, (list, tuple)):  # every input to FP16_MAX
            x = [_scaled_to_fp16_max(v) for v in x]
        else:
            x = _scaled_to_fp16_max(x)
    setup.x, setup.y = x, y


def _embeddings(model) -> list:
    import keras

    return [l for l in model._flatten_layers() if isinstance(l, keras.layers.Embedding)]


def _also(brk: str, model) -> str:
    """`input_scale` for `fp16_overflow` on a model whose float inputs it scales
    (no Embedding layer: `inject`), else ""."""
    return "input_scale" if brk == "fp16_overflow" and not _embeddings(model) else ""


def also_right(script: str, brk: str) -> str:
    """The other right cause of a break (`also`, `_also`), for rows saved without one."""
    if brk != "fp16_overflow":
        return ""
    import keras

    module = keras_io.load(script)
    keras.backend.clear_session()
    setup = module.build(*module.make_data(0))
    _built(setup)
    return _also(brk, setup.model)


# -- judging the end state -----------------------------------------------


def _predict(setup, x):
    """The model's outputs on `x`, called directly (no predict function to trace)."""
    import keras

    parts = []
    for i in range(0, _length(x), 256):
        chunk = _rows(x, i, i + 256)
        parts.append(keras.ops.convert_to_numpy(setup.model(chunk, training=False)))
    return np.concatenate(parts).astype("float64")


def judged_data(setup, brk: str, x_clean, y_clean):
    """The data a trained model is judged on: the clean data, in the break's units.

    A break that rescales every sample (an input feature, all inputs, the
    targets) trains a model for the rescaled data, the data its user would
    predict on: it is judged there (regression targets rescaled, class
    labels kept). Every other break is judged on the clean data.
    """
    x = setup.x if brk in ("feature_x1e4", "fp16_overflow") else x_clean
    y = (setup.y if brk == "targets_x1e5" and setup.task in ("regression", "reconstruction")
         else y_clean)
    return x, y


def recalibrate_batch_norm(model, x) -> None:
    """Sets every BatchNormalization's moving statistics to those of `x` (<= 1024 rows).

    A short fit leaves them near their initial (0, 1) at momentum 0.99
    (30 steps: 26% of the way), and a model with BatchNormalization then
    predicts at chance in inference mode however well it trained; the
    published fits run hundreds of epochs. One forward pass in training
    mode with momentum 0 sets them; the trained weights are untouched.
    """
    import keras

    layers = [l for l in model._flatten_layers()
              if isinstance(l, keras.layers.BatchNormalization)]
    if not layers:
        return
    momenta = [l.momentum for l in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(_rows(x, 0, 1024), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def judge(setup, x, y) -> tuple[bool, float]:
    """(at chance, skill) of the trained model on `x`, `y` (`judged_data`).

    Skill: accuracy above the majority class's for classifiers (per
    position for sequence outputs; balanced accuracy above 0.5 for
    `binary_balanced`, where the majority class is 99.8%), R^2 (1 -
    mse / the constant prediction's) otherwise; NaN for non-finite outputs.
    At chance: skill <= 0.02 for classifiers, <= 0.05 otherwise, or NaN.
    BatchNormalization statistics are recalibrated on `x` first
    (`recalibrate_batch_norm`), where the weights are finite.
    """
    try:
        if weights_finite(setup.model):
            recalibrate_batch_norm(setup.model, x)
        p = _predict(setup, x)
    except Exception:  # noqa: BLE001  (a model that cannot predict is broken)
        return True, float("nan")
    if not np.isfinite(p).all():
        return True, float("nan")
    if setup.task == "binary":
        labels = np.asarray(y).reshape(-1)
        base = max(labels.mean(), 1 - labels.mean())
        skill = float(((p.reshape(-1) > 0.5) == labels).mean()) - base
        return skill <= 0.02, skill
    if setup.task == "binary_balanced":  # rare positives: balanced accuracy over 0.5
        labels = np.asarray(y).reshape(-1).astype(bool)
        hit = (p.reshape(-1) > 0.5) == labels
        skill = float(0.5 * (hit[labels].mean() + hit[~labels].mean())) - 0.5
        return skill <= 0.02, skill
    if setup.task in ("onehot", "sparse"):  # per position, for sequence outputs too
        labels = np.asarray(y).argmax(-1) if setup.task == "onehot" else np.asarray(y)
        labels = labels.reshape(-1).astype(int)
        base = np.bincount(labels).max() / len(labels)
        skill = float((p.argmax(-1).reshape(-1) == labels).mean()) - base
        return skill <= 0.02, skill
    target = np.asarray(x if y is None else y, dtype="float64").reshape(len(p), -1)
    mse = float(((p.reshape(len(p), -1) - target) ** 2).mean())
    skill = 1.0 - mse / float(((target - target.mean(axis=0)) ** 2).mean())
    return skill <= 0.05, skill


def weights_finite(model) -> bool:
    return all(np.isfinite(w).all() for w in model.get_weights()
               if np.asarray(w).dtype.kind == "f")


# -- one run -------------------------------------------------------------


def run_one(script: str, brk: str, seed: int, callbacks=None) -> dict:
    """Trains `script` with break `brk` (or "healthy") and the default NaNGuard.

    `callbacks`: the callbacks to train with (default `[NaNGuard(verbose=False)]`);
    pass `[]` for a plain run. One row of results.
    """
    import keras

    from gradguard.callbacks import NaNGuard

    module = keras_io.load(script)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    row = dict(script=script, source=module.SOURCE, brk=brk, seed=seed,
               expected=BREAKS.get(brk, "none"))
    start = time.perf_counter()
    guard = NaNGuard(verbose=False) if callbacks is None else None
    callbacks = [guard] if callbacks is None else list(callbacks)
    try:
        x_clean, y_clean = module.make_data(seed)
        if brk == "fp16_overflow":
            keras.config.set_dtype_policy("mixed_float16")
        setup = module.build(x_clean, y_clean)
        inject(module, setup, brk, seed)
        row["also"] = _also(brk, setup.model)
        history = setup.fit(callbacks)
        losses = history.get("loss", [])
        epochs = setup.fit_kwargs.get("epochs", 1)
        row.update(
            error="",
            epochs_run=len(losses),
            went_on=bool(len(losses) == epochs and not setup.model.stop_training),
            final_loss=float(losses[-1]) if losses else np.nan,
            weights_finite=weights_finite(setup.model),
        )
        row["at_chance"], row["skill"] = judge(
            setup, *judged_data(setup, brk, x_clean, y_clean))
    except Exception as error:  # noqa: BLE001  (a row, not a crash)
        row.update(error=f"{type(error).__name__}: {error}".replace("\n", " ")[:160])
    finally:
        keras.config.set_dtype_policy("float32")
    events = list(guard.events) if guard is not None else []
    e = decisive(events)
    row.update(
        events=len(events),
        step=int(_get(e, "step")) if e else -1,
        trigger=_get(e, "trigger") if e else "",
        cause=_get(e, "cause") if e else "",
        action=_get(e, "action") if e else "",
        seconds=round(time.perf_counter() - start, 1),
    )
    row.setdefault("error", "")
    return row


# -- report --------------------------------------------------------------


def mark_harm(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `harmed`, `harmless` and `right` to each run.

    `harmed`: non-finite weights or outputs, or (where the script's healthy
    runs learn, median skill >= 0.05) a skill below half of theirs.
    `harmless`: a break with no event, finite weights and (where the healthy
    runs learn) a skill at least `HARMLESS_SHARE` of theirs: it did nothing
    a guard should name. `right`: the named cause is `expected` or `also`.
    Judged on the clean data, not on the running loss (a skipped NaN batch
    leaves a NaN there).
    """
    df = df.copy()
    ok = df[df["error"] == ""]
    ref = ok[ok["brk"] == "healthy"].groupby("script")["skill"].median()
    harmed, harmless = [], []
    for _, r in df.iterrows():
        if r["error"] or r["brk"] == "healthy":
            harmed.append(False)
            harmless.append(False)
            continue
        skill, good = float(r["skill"]), float(ref.get(r["script"], np.nan))
        finite = bool(r["weights_finite"]) and np.isfinite(skill)
        harmed.append(bool(not finite or (good >= 0.05 and skill < 0.5 * good)))
        harmless.append(bool(finite and r["events"] == 0 and good >= 0.05
                             and skill >= HARMLESS_SHARE * good))
    df["harmed"], df["harmless"] = harmed, harmless
    if "also" not in df:
        df["also"] = ""
    also = df["also"].astype(object).fillna("")
    df["right"] = (df["cause"] == df["expected"]) | ((also != "") & (df["cause"] == also))
    return df


def summarize(df: pd.DataFrame) -> str:
    """Counts over the breaks and healthy runs, and the confusion matrix."""
    df = mark_harm(df)
    ok = df[df["error"] == ""]
    broken = ok[ok["brk"] != "healthy"]
    healthy = ok[ok["brk"] == "healthy"]
    strict = broken["cause"] == broken["expected"]
    right = broken["right"]
    counted = ~broken["harmless"]
    silent = broken[(broken["events"] == 0)
                    & (~broken["weights_finite"].astype(bool) | broken["at_chance"].astype(bool))]
    # Where a script's healthy runs end at chance as well, its short fit
    # learns nothing and "at chance" says nothing of the break.
    chance_scripts = set(healthy.groupby("script")["at_chance"].all().loc[lambda s: s].index)
    void = (silent["weights_finite"].astype(bool)
            & silent["script"].isin(chance_scripts))
    single = broken[broken["brk"].isin(SINGLE_BAD)]
    named = single["cause"] == "bad_data"
    skipped = single["action"] == "skip"
    went_on = single["went_on"].astype(bool)
    lines = [
        f"runs: {len(df)} ({len(broken)} breaks, {len(healthy)} healthy, "
        f"{int((df['error'] != '').sum())} errors), scripts: {df['script'].nunique()}",
        f"right cause: {int(right[counted].sum())} of {int(counted.sum())} breaks"
        + (f" ({right[counted].mean():.0%})" if counted.any() else "")
        + f" (harmless breaks left out: {int((~counted).sum())}; input_scale also right "
        f"for fp16_overflow on float inputs: {int((right & ~strict).sum())})",
        f"right cause, strict (every break, expected cause only): {int(strict.sum())} of "
        f"{len(broken)}" + (f" ({strict.mean():.0%})" if len(broken) else ""),
        f"breaks with an event: {int((broken['events'] > 0).sum())} of {len(broken)}",
        f"breaks that harmed the model (NaN, or under half its healthy runs' skill on the "
        f"clean data): {int(broken['harmed'].sum())}; right cause on "
        f"{int(right[broken['harmed']].sum())} of them; no event on "
        f"{int((broken['harmed'] & (broken['events'] == 0)).sum())}",
        f"breaks that leave the model NaN or at chance with no event: {len(silent)}"
        f" (NaN weights: {int((~silent['weights_finite'].astype(bool)).sum())}; at chance "
        f"on a script whose healthy runs end at chance too: {int(void.sum())})",
        f"single bad batches named bad_data, skipped and training going on to the last "
        f"epoch: {int((named & skipped & went_on).sum())} of {len(single)} (named "
        f"bad_data: {int(named.sum())}; action skip: {int(skipped.sum())}; went on: "
        f"{int(went_on.sum())})",
        f"healthy runs with any event (warnings included): "
        f"{int((healthy['events'] > 0).sum())} of {len(healthy)}; healthy runs at chance "
        f"after their short fit (the reference for 'at chance'): "
        f"{int(healthy['at_chance'].astype(bool).sum())} of {len(healthy)}",
        "",
        "confusion matrix (rows: expected cause, columns: named cause; (none) = no event; "
        "(none, harmless) = no event on a break that did no harm)",
        "",
    ]
    named = ok["cause"].replace("", "(none)").where(~ok["harmless"], "(none, harmless)")
    matrix = pd.crosstab(ok["expected"], named)
    lines.append(matrix.to_markdown())
    errors = df[df["error"] != ""]
    if len(errors):
        lines += ["", "errors (runs that raised; not counted above)", "",
                  errors[["script", "brk", "seed", "error"]].to_markdown(index=False)]
    return "\n".join(lines)


def not_applicable(scripts) -> pd.DataFrame:
    rows = []
    for s in scripts:
        for brk, why in keras_io.load(s).NOT_APPLICABLE.items():
            rows.append(dict(script=s, brk=brk, why=why))
    return pd.DataFrame(rows)


def report(df: pd.DataFrame, scripts, tag: str | None, note: str = "") -> str:
    cols = ["script", "brk", "seed", "expected", "events", "step", "trigger", "cause",
            "action", "weights_finite", "at_chance", "skill", "went_on", "harmed", "harmless",
            "final_loss",
            "seconds"]
    sources = "\n".join(f"- `{s}`: keras-io `{keras_io.load(s).SOURCE}` at "
                        f"{keras_io.load(s).COMMIT[:10]}" for s in scripts)
    df = mark_harm(df)
    na = not_applicable(scripts)
    text = "\n\n".join([
        f"# NaNGuard on keras-io scripts ({tag or 'untagged'})",
        note or "`python -m benchmarks.diagnosis --scripts`",
        "## Summary", summarize(df),
        "## Per run", df[[c for c in cols if c in df]].to_markdown(
            index=False, floatfmt=".3g"),
        "## Breaks not run (the script cannot carry them)",
        na.to_markdown(index=False) if len(na) else "none",
        "## Scripts", sources,
    ])
    return text + "\n"


def main(argv=None) -> pd.DataFrame:
    from gradguard.recipes.cli import program

    parser = argparse.ArgumentParser(prog=program("benchmarks.diagnosis_scripts"), description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated script names")
    parser.add_argument("--quick", action="store_true",
                        help="per script: lr_x100, lr_x1000, one bad batch, one healthy run")
    parser.add_argument("--breaks", default=None, help="comma-separated breaks to run")
    parser.add_argument("--quick-first", action="store_true",
                        help="run --quick's runs of every script before the others")
    parser.add_argument("--tag", default=None,
                        help="write benchmarks/results/diagnosis_scripts_<tag>.md/.csv")
    parser.add_argument("--note", default="", help="a line for the report's head")
    parser.add_argument("--csv", default=None,
                        help="report on rows saved earlier (a results .csv), no training")
    parser.add_argument("--match", default=None,
                        help="with --csv: keep only the runs (script, break, seed) in this .csv")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # the scripts' own (input_shape=)
    scripts = args.only.split(",") if args.only else list(keras_io.SCRIPTS)
    runs = [(s, b, seed) for s in scripts for b, seed in plan(s, args.quick)]
    if args.quick_first:  # --quick's runs of every script first: a run cut short covers all
        first = [(s, b, seed) for s in scripts for b, seed in plan(s, True)]
        runs = first + [r for r in runs if r not in first]
    if args.breaks:
        wanted = args.breaks.split(",")
        runs = [r for r in runs if r[1] in wanted]
    folder = os.path.join(os.path.dirname(__file__), "results")
    if args.csv:  # a subset of a saved run, e.g. the runs a later, shorter run also made
        df = pd.read_csv(args.csv, keep_default_na=False, na_values=["", "nan"])
        if args.match:
            keys = pd.read_csv(args.match)[["script", "brk", "seed"]]
            df = df.merge(keys, on=["script", "brk", "seed"])
        for column in ("error", "cause", "trigger", "action"):
            df[column] = df[column].astype(object).fillna("")
        if "also" not in df:  # rows saved before `also` was recorded
            df["also"] = [also_right(s, b) for s, b in zip(df["script"], df["brk"])]
        df["also"] = df["also"].astype(object).fillna("")
        for column in ("weights_finite", "at_chance", "went_on"):
            df[column] = df[column].map({True: True, False: False, "True": True,
                                         "False": False}).fillna(False).astype(bool)
        scripts = [s for s in scripts if s in set(df["script"])]
        runs = []
    rows = []
    for i, (script, brk, seed) in enumerate(runs):
        row = run_one(script, brk, seed)
        rows.append(row)
        print(wrap(f"[{i + 1}/{len(runs)}] {script:24s} {brk:14s} s{seed} -> "
                   f"{row['cause'] or '-':14s} {row['trigger']:18s} {row['action']:6s} "
                   f"step {row['step']:3d} {row['error'][:60]} ({row['seconds']}s)", indent="    "), flush=True)
        if args.tag:  # written as it goes: a run cut short keeps its rows
            os.makedirs(folder, exist_ok=True)
            pd.DataFrame(rows).to_csv(os.path.join(
                folder, f"diagnosis_scripts_{args.tag}.csv"), index=False)
    if not args.csv:
        df = pd.DataFrame(rows)
    text = report(df, scripts, args.tag, args.note)
    print(terminal(text))
    if args.tag:
        with open(os.path.join(folder, f"diagnosis_scripts_{args.tag}.md"), "w") as f:
            f.write(text)
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
