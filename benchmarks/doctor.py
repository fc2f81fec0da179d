"""The doctor on a generated population of broken and healthy set-ups, beside a random-cure baseline.

The population (`benchmarks/doctor_population.py`) is kinds x variations:
22 broken kinds (the learning rate too high under SGD and under Adam or
RMSprop, inputs or targets or both in the thousands, deep ReLU stacks with
large gains, deep sigmoid/tanh stacks, dead ReLUs, an exploding SimpleRNN,
NaN rows in x or in y, a custom loss taking log(p) without an epsilon,
inputs that overflow float16, the three model/loss mismatches, SGD at batch
size 1, two faults at once, and Embedding, Conv2D, LSTM/GRU and attention
models with their own fault), 8 variations each (seeds, rows, widths,
features, how strong the fault, which optimizer): 176 broken set-ups; and
8 healthy kinds (MLPs, an adapted `Normalization` in front, classifiers,
data-limited classifiers with 25-35% label noise, a registered custom
layer, a `Rescaling` Conv2D, an Embedding model, an LSTM/GRU), 5 each: 40.
Every broken set-up carries a reference fix; `--check-references` proves
it (trial 0 of the set-up does not learn or NaNGuard steps in; the
reference's trial 0 learns, by the doctor's own trial and bar).

For each set-up the doctor runs with the defaults its tests use (20% held
out, 3 epochs, batch 16, `max_trials=8`), and so does a **random-cure
baseline** (Kim et al., ICST 2023): trial 0, then cures drawn at random
from the same catalogue (`search.CATALOGUE`), one at a time on fresh
copies, no stacking, within the same trial budget, stopping at the first
that learns. A broken set-up counts as repaired when a trial learned (by
the doctor's own bar); a healthy one when it was left alone (the doctor
named it `healthy`; the baseline's trial 0 learned).

Run from the repository root (rows are appended to `--csv` as they finish):

    python -m benchmarks.doctor --csv benchmarks/results/doctor_population.csv
    python -m benchmarks.doctor --every 4 --shard 0/2 --csv a.csv   # every 4th variation, half of them
    python -m benchmarks.doctor --kinds lr_sgd,target_scale --no-baseline
    python -m benchmarks.doctor --check-references --csv refs.csv
    python -m benchmarks.doctor --table a.csv b.csv --md table.md   # the per-kind table of finished rows
    python -m benchmarks.doctor --table after.csv --before before.csv   # the same set-ups, two runs

To measure an older doctor, run this file with `PYTHONPATH` pointing at a
tree whose `gradguard` package is that version, with `--no-baseline`.
"""

from __future__ import annotations

import argparse
import os
import time

from .doctor_population import BATCH, BUDGET, EPOCHS, KINDS, build, population


def _trainer(model, x, y, batch_size):
    from gradguard.recipes.trials import Bar, Trainer, split_data

    data = split_data(x, y, None, 0.2)
    return Trainer(model, data, Bar.measure(model, data, None), seed=0, epochs=EPOCHS,
                   batch_size=batch_size, out_dir=None)


# -- the random-cure baseline ----------------------------------------------------------


def random_cures(user_model, x, y, *, seed: int, batch_size: int) -> tuple[bool, int]:
    """(learned, trials trained): trial 0, then random single cures within the budget."""
    import numpy as np

    from gradguard.recipes import cures as C
    from gradguard.recipes.search import CATALOGUE
    from gradguard.recipes.symptoms import clip_norm

    trainer = _trainer(user_model, x, y, batch_size)
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


# -- one set-up ---------------------------------------------------------------------------


def measure(kind: str, index: int, baseline: bool) -> dict:
    """The doctor (and the baseline) on one set-up: one row."""
    import keras

    from gradguard.recipes.doctor import examine

    user_model, x, y, options = build(kind, index)
    batch_size = options.get("batch_size", BATCH)
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
    result = {"kind": kind, "variation": index, "repaired": bool(ok), **row, "time_s": round(wall, 1)}
    if baseline:
        start = time.perf_counter()
        try:
            learned, tried = random_cures(user_model, x, y, seed=index, batch_size=batch_size)
        except Exception:  # noqa: BLE001
            learned, tried = False, 0
        result.update(baseline=bool(learned), baseline_trials=tried,
                      baseline_time_s=round(time.perf_counter() - start, 1))
    keras.config.set_dtype_policy("float32")
    return result


def check_reference(kind: str, index: int) -> dict:
    """Is the fault real (trial 0 does not learn, or an event) and does the reference fix learn?"""
    import keras

    row = {"kind": kind, "variation": index, "reference_learned": None, "reference_event": None,
           "reference_val/trivial": None}  # every row the same columns: one CSV header fits all
    for name in ("broken", "reference"):
        if name == "reference" and kind.startswith("healthy"):
            break
        user_model, x, y, options = build(kind, index, reference=name == "reference")
        trainer = _trainer(user_model, x, y, options.get("batch_size", BATCH))
        result = trainer.train(0, name, trainer.patient())
        row[f"{name}_learned"] = bool(result.row["learned"]) and not result.events
        row[f"{name}_event"] = bool(result.events)
        row[f"{name}_val/trivial"] = round(float(result.row["val/trivial"]), 4)
    keras.config.set_dtype_policy("float32")
    row = {k: row[k] for k in ("kind", "variation", "broken_learned", "broken_event", "broken_val/trivial",
                               "reference_learned", "reference_event", "reference_val/trivial")}
    # healthy: trains without an event and beats the constant prediction (a
    # data-limited one need not reach the bar)
    row["proven"] = (row["broken_val/trivial"] < 1 and row["broken_event"] is False
                     if kind.startswith("healthy")
                     else not row["broken_learned"] and row["reference_learned"])
    return row


# -- report -------------------------------------------------------------------------------


def per_kind(rows):
    """repaired / baseline / median trials / median and max time, per kind."""
    agg = {"n": ("variation", "size"), "repaired": ("repaired", "sum"),
           "median_trials": ("trials", "median"), "median_time_s": ("time_s", "median"),
           "max_time_s": ("time_s", "max")}
    if "baseline" in rows:
        agg["baseline"] = ("baseline", "sum")
        agg["baseline_median_trials"] = ("baseline_trials", "median")
    return rows.groupby("kind", sort=False).agg(**agg).reset_index()


def totals(rows) -> str:
    """The line to read against the targets: broken repaired, baseline, healthy, trials, time."""
    healthy = rows["kind"].str.startswith("healthy")
    broken = rows[~healthy]
    line = (f"broken repaired {int(broken['repaired'].sum())}/{len(broken)} "
            f"({broken['repaired'].mean():.0%})" if len(broken) else "no broken set-ups")
    if "baseline" in rows and len(broken):
        line += (f", random baseline {int(broken['baseline'].sum())}/{len(broken)} "
                 f"({broken['baseline'].mean():.0%})")
    line += f"; healthy left alone {int(rows[healthy]['repaired'].sum())}/{int(healthy.sum())}"
    return line + (f"; median trials {rows['trials'].median():g}, median time "
                   f"{rows['time_s'].median():.1f} s, max {rows['time_s'].max():.1f} s")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", help="comma-separated kinds (default: all)")
    parser.add_argument("--every", type=int, default=1,
                        help="every k-th variation of each kind: a stratified subset (default 1)")
    parser.add_argument("--shard", default="0/1", help="I/N: the I-th of N interleaved slices (default 0/1)")
    parser.add_argument("--limit", type=int, help="at most this many set-ups")
    parser.add_argument("--no-baseline", action="store_true", help="skip the random-cure baseline")
    parser.add_argument("--check-references", action="store_true",
                        help="instead of the doctor: prove each fault real and each reference fix learns")
    parser.add_argument("--csv", help="append one row per set-up here as it finishes; finished rows "
                                      "already there are skipped (a resume)")
    parser.add_argument("--table", nargs="+", metavar="CSV", help="only print the per-kind table of these")
    parser.add_argument("--before", nargs="+", metavar="CSV",
                        help="with --table: an earlier run of the same set-ups, shown beside it")
    parser.add_argument("--md", help="with --table: append the table here too")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds received {unknown}; expected some of {sorted(KINDS)}.")
    try:
        shard, shards = map(int, args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        parser.error(f"--shard received {args.shard!r}; expected I/N with 0 <= I < N.")
    if args.every < 1:
        parser.error(f"--every received {args.every}; expected an int >= 1.")
    if args.table:
        return report(args.table, args.md, args.before)

    if __name__ == "__main__":  # run as a program: TensorFlow's start-up notes filtered out
        from gradguard.recipes.console import quiet_start

        quiet_start()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import pandas as pd

    from gradguard.recipes.console import terminal, wrap

    pairs = population(kinds, every=args.every)[shard::shards][:args.limit]
    done = set()
    if args.csv and os.path.exists(args.csv):
        old = pd.read_csv(args.csv)
        done = set(zip(old["kind"], old["variation"]))
    rows = []
    for kind, index in pairs:
        if (kind, index) in done:
            continue
        rows.append(check_reference(kind, index) if args.check_references
                    else measure(kind, index, not args.no_baseline))
        print(wrap(", ".join(f"{k} {v}" for k, v in rows[-1].items() if v not in ("", None)), indent="    "),
              flush=True)
        if args.csv:
            pd.DataFrame(rows[-1:]).to_csv(args.csv, mode="a", index=False,
                                           header=not os.path.exists(args.csv))
    table = pd.DataFrame(rows)
    if len(table) and not args.check_references:
        print(terminal(per_kind(table).to_markdown(index=False)))
        print(wrap(totals(table)))
    return table


def report(paths: list[str], md: str | None, before: list[str] | None = None):
    """The per-kind table and totals of finished CSVs (several shards read as one), beside `before`'s."""
    import pandas as pd

    from gradguard.recipes.console import terminal

    def read(files):
        return pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in files])

    rows = read(paths)
    table = per_kind(rows)
    text = totals(rows) + "\n"
    if before:
        old = read(before)
        old = old.merge(rows[["kind", "variation"]], on=["kind", "variation"])  # the same set-ups
        earlier = per_kind(old).drop(columns="n")
        if "baseline" in old and "baseline" not in table:  # the baseline ran once, with the before run
            table = table.merge(earlier[["kind", "baseline", "baseline_median_trials"]], on="kind")
            rows = rows.merge(old[["kind", "variation", "baseline"]], on=["kind", "variation"])
            text = totals(rows) + "\n"
        earlier = earlier.drop(columns=[c for c in earlier if c.startswith("baseline")])
        table = earlier.add_prefix("before_").rename(columns={"before_kind": "kind"}).merge(table, on="kind")
        text = f"before: {totals(old)}\nafter: {text}"
    text = table.to_markdown(index=False) + "\n\n" + text
    print(terminal(text))
    if md:
        with open(md, "a") as file:
            file.write(text)
    return rows


if __name__ == "__main__":
    main()
