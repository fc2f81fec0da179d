"""
Title: The doctor: the named cure, tried on your own model, proven to learn
Description: Train a copy of a compiled Keras model under NaNGuard, name what
is wrong, then try the cures for that cause one by one until one learns.

`examine(model, x, y)` never trains or changes `model`. Every trial is a
fresh copy built from the model's config and compile config, with the same
initial weights (from `seed`):

1. Trial 0 trains the set-up as given under `NaNGuard`. No event, finite
   weights and a model that learns: `cause="healthy"`, one trial, nothing
   changed. A guard event names the cause (`bad_data` when the data hold
   NaN/inf). A run that neither trips the guard nor learns is named from
   absolute evidence (`symptoms.py`): loss against the constant
   prediction's, the kernels' gains product, per-layer gradient norms, dead
   ReLUs. `problem` is `exploding`, `vanishing`, `dying_relu` or `none`.
2. The cures for that cause (`cures.CURES`, in the order given there and
   argued in docs/doctor.md), each on a fresh copy, until one learns (or
   all of them, ranked, with `try_all=True`).

A trial *learns* when its validation loss is at most 0.1 x the constant
prediction's (regression), or its error rate is at most half the majority
class's (classification: accuracy >= majority + 0.5 x (1 - majority)).

What you will see: a table, one row per trial (trial, change,
exploded_step, val_loss, val/trivial, learned, wall_time_s), and the lines
of code to change. With `out_dir`: results.csv (appended per trial),
summary.txt, a TensorBoard run per trial and the repaired model; an
interrupted examination resumes from the trials already in results.csv.

Run it with `python -m recipes.doctor --model m.keras --data d.npz` from the
repository root, or `python -m gradguard.recipes.doctor` from anywhere.

References:
    - Zhang et al., "AUTOTRAINER: An Automatic DNN Training Problem
      Detection and Repair System", ICSE 2021.
    - Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013.
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
from .console import WIDTH, quiet_start, wrap
from .doctor_inputs import check_files, check_model, check_model_file, claim_out


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What the doctor found and what fixed it."""

    cause: str  # "healthy", a NaNGuard cause, or "activation" (dead ReLUs)
    evidence: str  # the sentence behind the cause
    problem: str  # "exploding", "vanishing", "dying_relu" or "none"
    trials: pd.DataFrame  # one row per trial, COLUMNS (+ "note")
    cure: str | None  # the winning change, or None
    code: tuple[str, ...]  # the lines to paste into the user's script
    model: object  # the repaired (or healthy) trained copy; None without a cure


def examine(model, x, y, *, validation_data: tuple | None = None,
            validation_split: float = 0.2, epochs: int = 3, batch_size: int = 32,
            out_dir: str | os.PathLike | None = None, seed: int = 0,
            max_trials: int = 8, try_all: bool = False,
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
    from .trials import Bar, Trainer, split_data
    from .symptoms import name_problem

    _check(model, epochs, batch_size, max_trials, validation_split, validation_data, target)
    data = split_data(x, y, validation_data, validation_split)
    bar = Bar.measure(model, data, target)
    out = pathlib.Path(out_dir) if out_dir is not None else None
    trainer = Trainer(model, data, bar, seed=seed, epochs=epochs,
                      batch_size=batch_size, out_dir=out)
    say = (lambda line: print(wrap(line))) if verbose else (lambda *_: None)
    done = trainer.finished()

    first = trainer.first_findings()
    if first is None:
        result = trainer.train(0, "as given", trainer.patient())
        first = name_problem(result, bar, data, C.finite_rows)
        trainer.save_findings(first)
        done = trainer.finished()
    say(f"trial 0 (as given): {first['cause']}, problem {first['problem']}: {first['evidence']}")
    if first["cause"] == "healthy":
        return trainer.finish(first, None)

    context = C.Context(clip_norm=first["clip_norm"], bad_rows=tuple(first["bad_rows"]))
    trained = int((done["note"].fillna("") == "").sum())
    for number, cure in enumerate(C.cures_for(first["cause"], first["problem"]), start=1):
        if trained >= max_trials or (not try_all and trainer.winner() is not None):
            break
        if number in set(done["trial"]):
            continue
        try:
            patient = cure.apply(trainer.patient(), context)
        except C.NotApplicable as reason:
            trainer.record_not_applicable(number, cure.name, str(reason))
            say(f"trial {number} ({cure.name}): not applicable: {reason}")
            continue
        row = trainer.train(number, cure.name, patient).row
        trained += 1
        say(f"trial {number} ({cure.name}): val/trivial {row['val/trivial']:.3g}, "
            f"learned {row['learned']}")
    return trainer.finish(first, trainer.winner())


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
    parser.add_argument("--model", required=True, help="a compiled model saved as .keras")
    parser.add_argument("--data", required=True,
                        help=".npz with arrays x, y (optional x_val, y_val), or a .csv series")
    parser.add_argument("--target-column", help="CSV: the column to predict")
    parser.add_argument("--seq-len", type=int, help="CSV: time steps per window")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--max-trials", type=int, default=8, help="trials at most (default 8)")
    parser.add_argument("--try-all", action="store_true", help="rank every cure")
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
    if not args.model.endswith(".keras"):
        parser.error(f"--model {args.model!r}: expected a .keras file (model.save('m.keras')).")
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
    import keras

    try:
        with warnings.catch_warnings():
            # A model saved before training has no optimizer variables yet:
            # Keras says it skips loading them, which is what the doctor wants.
            warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer")
            model = keras.saving.load_model(args.model)
    except Exception as error:  # keras raises many kinds for a bad file
        sys.exit(f"{prog}: error: could not load --model {args.model!r}: "
                 f"{str(error).splitlines()[0] if str(error) else type(error).__name__}")
    try:
        check_model(model, y, args.model)  # before any trial
        claim_out(args)
    except (ValueError, OSError) as error:
        sys.exit(f"{prog}: error: {error}")
    found = examine(model, x, y, validation_data=val, epochs=args.epochs,
                    batch_size=args.batch_size, out_dir=args.out, seed=args.seed,
                    max_trials=args.max_trials, try_all=args.try_all, target=args.target)
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


def report(found: Diagnosis) -> str:
    """The summary: cause, evidence, the table and the code to change."""
    trials = found.trials.astype(object).where(found.trials.notna(), "")
    lines = [f"cause: {found.cause} (problem: {found.problem})", wrap(f"evidence: {found.evidence}"), "",
             trials.to_string(index=False, line_width=WIDTH), ""]
    if found.cause == "healthy":
        lines.append("Nothing to change: the set-up trains as given.")
    elif found.cure is None:
        lines.append("No cure tried learned; see docs/doctor.md for what the doctor cannot fix.")
    else:
        lines += [f"cure: {found.cure}", "change in your script:", *[f"    {c}" for c in found.code]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
