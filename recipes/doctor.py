"""
Title: The doctor: every cure family, searched on your own model, proven to learn
Description: Check a compiled Keras model against its loss and data, train a
faithful copy under NaNGuard, name what is wrong, then search the cures of
every family, ranked by that evidence and stacked, until one learns.

`examine(model, x, y)` never trains or changes `model`. Every trial is a
faithful copy: the model as `model.save` + `keras.saving.load_model` give
it back (adapted preprocessing layers included), with the same initial
weights (the model's own, or the seed's for a trained model):

1. Static checks (`static_checks.py`, no training): output activation vs
   loss, targets vs output range, scale and finiteness of inputs and
   targets, target columns vs output units. Each finding names its cure.
2. Trial 0 trains the set-up as given under `NaNGuard()`'s defaults. No
   event and a model that learns (or clearly beats the constant prediction
   and is still improving): `cause="healthy"`, one trial, nothing changed.
   Else a guard event, the data or the absolute evidence of `symptoms.py`
   name the cause and `problem` (`exploding`, `vanishing`, `dying_relu`,
   `none`). A trial 0 with no event, no symptom and no static finding that
   beats the constant prediction, and that no cure of the search does
   clearly better than, is healthy after all: its data limit it.
3. The search (`search.py`): the static findings' cures, the cause's own
   list, then every other family; a cure that improves without learning is
   kept and the next is stacked on it; within `max_trials` and
   `max_seconds`, stopping at the first that learns (or all, `try_all`).

A trial *learns* when its validation loss is at most 0.1 x the constant
prediction's (regression) or its accuracy is at least majority + 0.5 x
(1 - majority) (classification); or, without a guard event and with a curve
no longer falling, when val/trivial is at most 0.5 and 0.5 x trial 0's. The
bar used is printed.

What you will see: the static findings, the bar, a table, one row per trial
(trial, change, exploded_step, val_loss, val/trivial, accuracy, trend,
learned, wall_time_s), and the block of code to paste, in the order it goes
(ending with the compile call). With `out_dir`: results.csv (appended per
trial), summary.txt, a TensorBoard run per trial and the repaired model; an
interrupted examination resumes from the trials already in results.csv.

Run it with `python -m recipes.doctor --model m.keras --data d.npz` from the
repository root, or `python -m gradguard.recipes.doctor` from anywhere
(`--import MODULE` for registered custom layers and losses; `.h5` accepted).

References:
    - Zhang et al., "AUTOTRAINER: An Automatic DNN Training Problem
      Detection and Repair System", ICSE 2021.
    - Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013.
    - Kim et al., "Repairing DNN Architecture: Are We There Yet?", ICST 2023
      (a random choice of cure as the baseline to beat).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import warnings

import numpy as np
import pandas as pd

from .cli import program
from .console import quiet_start, text_table, wrap
from .doctor_inputs import check_files, check_model, check_model_file, claim_out


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What the doctor found and what fixed it."""

    cause: str  # "healthy", a NaNGuard cause, or "activation" (dead ReLUs)
    evidence: str  # the sentence behind the cause
    problem: str  # "exploding", "vanishing", "dying_relu" or "none"
    trials: pd.DataFrame  # one row per trial, COLUMNS (+ "note")
    cure: str | None  # the winning change, or None
    code: tuple[str, ...]  # the lines to paste into the user's script, in order
    model: object  # the repaired (or healthy) trained copy; None without a cure
    bar: object = None  # the trials.Bar every trial was judged by
    findings: tuple = ()  # static_checks.Finding: what was wrong before training


def examine(model, x, y, *, validation_data: tuple | None = None,
            validation_split: float = 0.2, epochs: int = 3, batch_size: int = 32,
            out_dir: str | os.PathLike | None = None, seed: int = 0,
            max_trials: int = 8, try_all: bool = False, max_seconds: float | None = None,
            target: float | None = None, verbose: bool = True) -> Diagnosis:
    """Names what stops a compiled Keras model from learning and proves a cure.

    Args:
        model: a compiled Keras model (Sequential, functional, or a
            registered subclass with `get_config`). Never trained or changed.
        x: training inputs (an array, or a list of arrays).
        y: training targets.
        validation_data: `(x_val, y_val)`, or `None` to hold out the last
            `validation_split` of `x`. Defaults to `None`.
        validation_split: float in (0, 1). Defaults to 0.2.
        epochs: int >= 1, epochs per trial. Defaults to 3.
        batch_size: int >= 1. Defaults to 32.
        out_dir: folder for results.csv, summary.txt, TensorBoard runs and
            the repaired model; reused (resumed) if it holds an examination
            already. Defaults to `None` (nothing written).
        seed: the initial weights and shuffling of every trial. Defaults to 0.
        max_trials: int >= 1, trials trained at most, trial 0 included.
            Defaults to 8.
        try_all: train every cure and rank them, instead of stopping at the
            first that learns. Defaults to `False`.
        max_seconds: wall-clock budget of the search after trial 0 (a
            trial under way is finished). Defaults to `None` (no limit).
        target: the bar to reach: `val/trivial` at most this (regression,
            default 0.1) or validation accuracy at least this
            (classification). Defaults to `None`.
        verbose: print one line per trial. Defaults to `True`.

    Returns:
        A `Diagnosis`. With `try_all`, `cure` is the best of the trials that
        learned (lowest val/trivial, or highest accuracy); the table keeps
        the order the cures were tried in.

    Raises:
        ValueError: for a bad argument or an uncompiled model.

    Example:

    ```python
    found = examine(model, x, y, out_dir="runs/doctor")
    print(found.trials.to_string(index=False))
    print("\\n".join(found.code))
    ```
    """
    from . import cures as C
    from .search import search
    from .static_checks import check_setup
    from .symptoms import judge_after_search, name_problem
    from .trials import Bar, Trainer, split_data

    _check(model, epochs, batch_size, max_trials, validation_split, validation_data, target)
    say = (lambda line: print(wrap(line))) if verbose else (lambda *_: None)
    findings = check_setup(model, x, y)
    for finding in findings:
        say(f"static check ({finding.check}): {finding.message}"
            + (f" -> cure: {finding.cure}" if finding.cure else ""))
    data = split_data(x, y, validation_data, validation_split)
    bar = Bar.measure(model, data, target)
    say(f"bar: {describe_bar(bar)}")
    out = pathlib.Path(out_dir) if out_dir is not None else None
    trainer = Trainer(model, data, bar, seed=seed, epochs=epochs,
                      batch_size=batch_size, out_dir=out)

    first = trainer.first_findings()
    if first is None:
        result = trainer.train(0, "as given", trainer.patient())
        first = name_problem(result, bar, data, C.finite_rows)
        trainer.save_findings(first)
    say(f"trial 0 (as given): {first['cause']}, problem {first['problem']}: {first['evidence']}")
    if first["cause"] == "healthy":
        return trainer.finish(first, None, findings)

    context = C.Context(clip_norm=first["clip_norm"], bad_rows=tuple(first["bad_rows"]),
                        loss=model.loss, batch_size=batch_size)
    search(trainer, first, findings, context, max_trials=max_trials, max_seconds=max_seconds,
           try_all=try_all, say=say)
    winner = trainer.winner()
    if winner is None and not findings:
        first = judge_after_search(first, trainer.finished())
        if first["cause"] == "healthy":
            say(f"after the search: healthy: {first['evidence']}")
    return trainer.finish(first, winner, findings)


def describe_bar(bar) -> str:
    """The bar in words, as printed before trial 0."""
    from .trials import RELATIVE

    relative = (f"; or, without a guard event and no longer improving, val/trivial <= "
                f"{RELATIVE:g} and <= {RELATIVE:g} x trial 0's")
    if bar.kind == "regression":
        return (f"learned = val_loss <= {bar.target:g} x the constant prediction's "
                f"({bar.trivial:.4g}){relative}")
    return (f"learned = val accuracy >= {bar.target:.3f} (majority class {bar.majority:.3f}; "
            f"constant prediction's loss {bar.trivial:.4g}){relative}")


def _check(model, epochs, batch_size, max_trials, validation_split, validation_data, target):
    for name, value in [("epochs", epochs), ("batch_size", batch_size), ("max_trials", max_trials)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"examine received {name}={value!r}; expected an int >= 1.")
    if validation_data is None and not 0 < validation_split < 1:
        raise ValueError(f"examine received validation_split={validation_split!r}; "
                         "expected a float in (0, 1), or pass validation_data.")
    if target is not None and not (isinstance(target, (int, float)) and target > 0):
        raise ValueError(f"examine received target={target!r}; expected a number > 0 "
                         "(val/trivial for regression, accuracy for classification), or None.")
    if getattr(model, "optimizer", None) is None or not model.get_compile_config():
        raise ValueError("examine received an uncompiled model; call model.compile(optimizer=..., "
                         "loss=...) first, as you would before fit.")


# ---------------------------------------------------------------------------
# Command line: arguments are checked before Keras is imported.
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=program("recipes.doctor"),  # or gradguard.recipes.doctor, as the user ran it
        description="Names what stops a saved Keras model from learning on your data, "
                    "tries the cures for it and prints the code to change.")
    parser.add_argument("--model", required=True, help="a compiled model saved as .keras (or .h5)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module to import first, so that the custom layers and losses it "
                             "registers load (repeatable)")
    parser.add_argument("--data", required=True,
                        help=".npz with arrays x, y (optional x_val, y_val), or a .csv series")
    parser.add_argument("--target-column", help="CSV: the column to predict")
    parser.add_argument("--seq-len", type=int, help="CSV: time steps per window")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--max-trials", type=int, default=8, help="trials at most (default 8)")
    parser.add_argument("--try-all", action="store_true", help="rank every cure")
    parser.add_argument("--max-seconds", type=float, help="wall-clock budget of the search")
    parser.add_argument("--target", type=float, help="the bar: val/trivial (regression) or accuracy")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and shuffling (default 0)")
    parser.add_argument("--out", help="folder for results.csv, summary.txt, TensorBoard runs")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "max_trials"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} received {getattr(args, name)}; expected an int >= 1.")
    for flag, path in (("--model", args.model), ("--data", args.data)):
        if not pathlib.Path(path).is_file():
            parser.error(f"{flag} {path!r}: no such file.")
    if not args.model.endswith((".keras", ".h5")):
        parser.error(f"--model {args.model!r}: expected a .keras or .h5 file (model.save('m.keras')).")
    suffix = pathlib.Path(args.data).suffix
    if suffix not in (".npz", ".csv"):
        parser.error(f"--data {args.data!r}: expected a .npz or a .csv file.")
    if suffix == ".csv" and (args.target_column is None or args.seq_len is None):
        parser.error("--data is a CSV: give --target-column and --seq-len too.")
    return args


def load_data(args) -> tuple:
    """`(x, y, validation_data)` from the file; ValueError names what is wrong."""
    if args.data.endswith(".csv"):
        from gradguard.datasets import load_csv_windows

        x, y = load_csv_windows(args.data, target=args.target_column, seq_len=args.seq_len)
        return x, y, None
    try:
        arrays = dict(np.load(args.data, allow_pickle=False))
    except Exception as error:  # a corrupt or non-npz file
        raise ValueError(f"could not read {args.data!r} as .npz: {error}") from error
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing or ("x_val" in arrays) != ("y_val" in arrays):
        raise ValueError(f"{args.data!r} holds {sorted(arrays)}; expected x and y "
                         "(and x_val with y_val, or neither).")
    for a, b in (("x", "y"), ("x_val", "y_val")):
        if a in arrays and len(arrays[a]) != len(arrays[b]):
            raise ValueError(f"{args.data!r}: {a} has {len(arrays[a])} rows but {b} has "
                             f"{len(arrays[b])}; expected one target per input row.")
    val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays else None
    return arrays["x"], arrays["y"], val


def main(argv: list[str] | None = None) -> Diagnosis:
    args = parse_args(argv)
    prog = program("recipes.doctor")
    try:
        check_files(args)  # the files and --out, before Keras loads them
        x, y, val = load_data(args)
        check_model_file(args.model)
    except (ValueError, OSError) as error:
        sys.exit(f"{prog}: error: {error}")
    quiet_start()  # the backend loads here, after the arguments were checked
    import importlib

    import keras  # noqa: F401 - loaded before the --import modules that register with it

    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as error:
            sys.exit(f"{prog}: error: --import {module!r}: {error}; give a module importable "
                     "from the current folder or sys.path (e.g. my_layers for my_layers.py).")

    try:
        with warnings.catch_warnings():
            # A model saved before training has no optimizer variables yet:
            # Keras says it skips loading them, which is what the doctor wants.
            warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer")
            model = load_user_model(args.model)
    except Exception as error:  # keras raises many kinds for a bad file
        sys.exit(f"{prog}: error: could not load --model {args.model!r}: "
                 f"{str(error).splitlines()[0] if str(error) else type(error).__name__}")
    try:
        check_model(model, y, args.model)  # before any trial
        claim_out(args)
    except (ValueError, OSError) as error:
        sys.exit(f"{prog}: error: {error}")
    from .run_files import RunFolderInvalid

    try:
        found = examine(model, x, y, validation_data=val, epochs=args.epochs,
                        batch_size=args.batch_size, out_dir=args.out, seed=args.seed,
                        max_trials=args.max_trials, try_all=args.try_all, target=args.target,
                        max_seconds=args.max_seconds)
    except RunFolderInvalid as error:  # the folder's files, refused before any trial
        sys.exit(f"{prog}: error: {error}")
    print(report(found))
    if args.out:
        from .report import _tensorboard_command

        out = pathlib.Path(args.out).resolve()
        pictures = ", ".join(str(p) for p in sorted(out.glob("gradient_flow-trial-*.png")))
        print(wrap(f"Results in {out}: results.csv, summary.txt, models/ (trial 0 and any trial that learned)"))
        if pictures:
            print(wrap(f"Gradient flow per trial: {pictures}"))
        print(f"TensorBoard (untick \"Ignore outliers in chart scaling\" in Scalars and Time Series):\n"
              f"  {_tensorboard_command()} --logdir {out / 'tensorboard'}")
    return found


def load_user_model(path: str):
    """`keras.saving.load_model(path)`; for a legacy `.h5` whose compile
    config Keras 3 cannot read back (a loss saved as the string "mse" fails
    with "Could not deserialize 'keras.metrics.mse'"), the model without
    it, compiled from the file's own `training_config`."""
    import json

    import keras

    try:
        return keras.saving.load_model(path)
    except Exception:  # noqa: BLE001 - retried below for .h5 only
        if not path.endswith(".h5"):
            raise
    import h5py

    model = keras.saving.load_model(path, compile=False)
    with h5py.File(path, "r") as file:
        config = json.loads(file.attrs["training_config"])
    loss = config["loss"]
    loss = keras.losses.deserialize(loss) if isinstance(loss, dict) else loss
    model.compile(optimizer=keras.optimizers.deserialize(config["optimizer_config"]), loss=loss)
    return model


def report(found: Diagnosis) -> str:
    """The summary: findings, cause, evidence, the bar, the table and the code to change."""
    table = found.trials.copy()
    if found.bar is not None and found.bar.kind == "regression":
        table = table.drop(columns="accuracy")
    if table["note"].eq("").all():
        table = table.drop(columns="note")
    lines = [*(wrap(f"static check ({f.check}): {f.message}") for f in found.findings),
             f"cause: {found.cause} (problem: {found.problem})", wrap(f"evidence: {found.evidence}")]
    if found.bar is not None:
        lines.append(wrap(f"bar: {describe_bar(found.bar)}"))
    lines += ["", text_table(table.astype(object).where(table.notna(), None), last="change"), ""]
    if found.cause == "healthy":
        lines.append("Nothing to change: the set-up trains as given.")
    elif found.cure is None:
        lines.append("No cure tried learned; see docs/doctor.md for what the doctor cannot fix.")
    else:
        lines += [f"cure: {found.cure}",
                  "change in your script, in this order, after building `model` and in place "
                  "of your compile call:", *[f"    {c}" for c in found.code]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
