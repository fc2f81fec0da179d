"""NaNGuard judged on a population: broken set-ups and healthy runs that look alarming.

Every run is labelled by construction: a set-up broken on purpose carries
the cause that was built into it (`learning_rate`, `input_scale`, `depth`,
`recurrence`, `bad_data`, `loss_scale`); a healthy run carries `healthy`.
Each trains once, tiny (a few hundred samples, a few epochs), with the
default `NaNGuard()` (action `"stop"`). The table reports:

- detection: the share of broken runs with at least one event;
- the cause confusion matrix (built cause x named cause, of the decisive
  event: the first that stopped training, else the first);
- false events on healthy runs, stops and skips apart;
- the step of the decisive event (time to detection; for bad data, how
  many steps after the first bad batch);
- on a stop, whether the model holds finite weights from before the event's
  step (compared exactly with an independent per-step copy).

Run from the repository root (writes benchmarks/results/diagnosis_<tag>.txt):

    python -m benchmarks.diagnosis --tag after          # the whole population
    python -m benchmarks.diagnosis --quick --tag quick  # one seed, a few runs
    python -m benchmarks.diagnosis --scripts --tag T    # keras-io scripts (diagnosis_scripts.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import pandas as pd
from gradguard.recipes.console import terminal, wrap

# Keras (and TensorFlow) load inside the functions that train, so that
# `--help` answers at once; run as a program, TensorFlow's start-up notes
# are filtered out (`quiet_start`) unless only help is asked for.
if __name__ == "__main__" and not {"-h", "--help"} & set(sys.argv[1:]):
    from gradguard.recipes.console import quiet_start

    quiet_start()
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .diagnosis_population import Case, build, constant_loss, loss_of, population  # noqa: E402


# -- one run -------------------------------------------------------------


def _recorders():
    """`(_Weights(), _Trace())`: the run's per-step weights and its trace (Keras loaded here)."""
    import keras

    class _Weights(keras.callbacks.Callback):
        """Host copies of the weights before training and after every batch."""

        def on_train_begin(self, logs=None):
            self.copies = [self.model.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            self.copies.append(self.model.get_weights())


    class _Trace(keras.callbacks.Callback):
        """Per-step running loss and the monitor's record, saved for offline study.

        Passive: reads what the guard reads. `save` writes one `.npz` per run
        (`--traces DIR`), so rules can be replayed on the runs without training.
        """

        def on_train_begin(self, logs=None):
            from gradguard.callbacks.model_evidence import initial_gains, weights_norm

            self.gains, self.recurrent_gain = initial_gains(self.model)
            self.start_norm = weights_norm(self.model)
            self.losses, self.loss_steps, self.rows, self._seen = [], [], [], 0

        def on_train_batch_end(self, batch, logs=None):
            from gradguard.callbacks.attach import find_monitor

            monitor = find_monitor(self.model.optimizer)
            record = monitor.read()
            new = record.since(self._seen)
            self._seen = record.count
            self.rows.append(new)
            self.record = record
            self.losses.append(float((logs or {}).get("loss", np.nan)))
            self.loss_steps.append(int(monitor.last_step))

        def save(self, path):
            from gradguard.callbacks.model_evidence import input_columns

            rows = [r for r in getattr(self, "rows", []) if len(r.steps)]
            if not rows:
                return
            paths = self.record.variable_paths
            columns = input_columns(self.model, paths)
            np.savez(
                path, loss=np.asarray(self.losses), loss_steps=np.asarray(self.loss_steps),
                steps=np.concatenate([r.steps for r in rows]),
                norm=np.concatenate([r.norm for r in rows]),
                status=np.concatenate([r.status for r in rows]),
                variable_norms=np.concatenate([r.variable_norms for r in rows]),
                weights_finite=np.concatenate([r.weights_finite for r in rows]),
                paths=np.asarray(paths), gains=np.asarray(self.gains, dtype=float),
                recurrent_gain=np.nan if self.recurrent_gain is None else self.recurrent_gain,
                input_columns=np.asarray(columns if columns else (-1, -1, 0)),
            )

    return _Weights(), _Trace()


def _get(event, key):
    return event[key] if isinstance(event, dict) else getattr(event, key)


def decisive(events):
    """The first event that stopped or rolled back training, else the first."""
    for e in events:
        if _get(e, "action") in ("stop", "raise", "rollback"):
            return e
    return events[0] if events else None


def run_case(case: Case, traces: str | None = None) -> dict:
    """Trains one case with the default `NaNGuard()`; one row of results.

    With `traces`, a folder: the run's per-step loss and record go to
    `<traces>/<label>-<family>-<variant>-<optimizer>-s<seed>.npz`.
    """
    import keras

    keras.backend.clear_session()
    from gradguard.callbacks import NaNGuard

    start = time.perf_counter()
    row = dataclasses.asdict(case)
    try:
        x, y, model, optimizer, batch, epochs, policy = build(case)
        # Eager where the model has no recurrent loop: the same numbers as
        # the compiled step, without seconds of tracing for a few steps.
        model.compile(optimizer=optimizer, loss=loss_of(case),
                      run_eagerly=case.family not in ("simplernn", "gru", "lstm"))
        (copies, trace), guard = _recorders(), NaNGuard(verbose=False)
        history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0,
                            callbacks=[copies, guard, trace])
        if traces:
            os.makedirs(traces, exist_ok=True)
            trace.save(os.path.join(traces, "-".join(
                str(v) for v in dataclasses.astuple(case)) + ".npz"))
    except Exception as error:  # noqa: BLE001  (a row, not a crash)
        row.update(error=f"{type(error).__name__}: {error}"[:200])
        return row
    finally:
        keras.config.set_dtype_policy("float32")
    events = guard.events
    e = decisive(events)
    actions = [_get(x_, "action") for x_ in events]
    row.update(
        error="",
        events=len(events),
        stops=sum(a in ("stop", "raise", "rollback") for a in actions),
        skips=sum(a not in ("stop", "raise", "rollback") for a in actions),
        trigger=_get(e, "trigger") if e else "",
        cause=_get(e, "cause") if e else "",
        step=_get(e, "step") if e else -1,
        final_loss=float(history.history["loss"][-1]),
        constant_loss=constant_loss(y, loss_of(case)),
        seconds=time.perf_counter() - start,
    )
    final = model.get_weights()
    row["weights_finite"] = all(np.isfinite(w).all() for w in final if w.dtype.kind == "f")
    if e is not None and _get(e, "action") == "stop":
        before = copies.copies[: max(int(_get(e, "step")), 1)]
        same = [all(np.array_equal(a, b) for a, b in zip(final, c)) for c in before]
        row["held_finite"] = all(np.isfinite(w).all() for w in final)
        row["held_pre_event"] = bool(any(same)) and row["held_finite"]
    return row


# -- report --------------------------------------------------------------


def summarize(df: pd.DataFrame) -> str:
    """The report: detection, confusion matrix, healthy runs' false events."""
    lines = []
    ok = df[df["error"] == ""]
    broken = ok[ok["label"] != "healthy"]
    healthy = ok[ok["label"] == "healthy"]
    detected = broken["events"] > 0
    correct = broken["cause"] == broken["label"]
    lines.append(f"runs: {len(df)} ({len(broken)} broken, {len(healthy)} healthy, "
                 f"{int((df['error'] != '').sum())} errors)")
    lines.append(f"detection: {detected.sum()}/{len(broken)} = "
                 f"{detected.mean():.1%}")
    lines.append(f"cause accuracy (of all broken): {correct.sum()}/{len(broken)} = "
                 f"{correct.mean():.1%}; of detected: "
                 f"{correct[detected].mean() if detected.any() else 0:.1%}")
    missed = broken[~detected]
    stuck = missed["final_loss"] <= 1.1 * missed["constant_loss"]
    lines.append(f"undetected broken runs: {len(missed)}; of them stuck at the constant "
                 f"prediction's loss (final loss <= 1.1x the targets' variance, "
                 f"nothing exploded): {int(stuck.sum())}")
    lines.append(f"healthy runs with a false event: {(healthy['events'] > 0).sum()}"
                 f"/{len(healthy)}; stopped: {(healthy['stops'] > 0).sum()}; "
                 f"skip-only: {((healthy['skips'] > 0) & (healthy['stops'] == 0)).sum()}"
                 f" (skipped steps in all: {int(healthy['skips'].sum())})")
    stopped = broken[broken.get("held_pre_event").notna()] if "held_pre_event" in broken else broken.iloc[:0]
    if len(stopped):
        lines.append(f"stops that left finite pre-event weights: "
                     f"{int(stopped['held_pre_event'].sum())}/{len(stopped)}")
    lines.append("")
    lines.append("cause confusion matrix (rows: built, columns: named; '' = no event)")
    matrix = pd.crosstab(broken["label"], broken["cause"].replace("", "(none)"))
    lines.append(matrix.to_string())
    lines.append("")
    lines.append("step of the decisive event (median, max) by built cause")
    steps = broken[detected].groupby("label")["step"].agg(["median", "max"])
    lines.append(steps.to_string())
    lines.append("")
    lines.append("detection and cause accuracy by family")
    fam = broken.assign(detected=detected, correct=correct).groupby("family")[
        ["detected", "correct"]].mean()
    lines.append(fam.to_string(float_format="%.2f"))
    misses = broken[~correct]
    if len(misses):
        lines.append("")
        lines.append("misses (no event or another cause)")
        cols = ["label", "family", "variant", "optimizer", "seed", "trigger",
                "cause", "step", "final_loss", "constant_loss"]
        lines.append(misses[cols].to_string(index=False, float_format="%.3g"))
    false = healthy[healthy["events"] > 0]
    if len(false):
        lines.append("")
        lines.append("healthy runs with events")
        cols = ["family", "variant", "optimizer", "seed", "trigger", "cause",
                "step", "stops", "skips", "final_loss", "constant_loss"]
        lines.append(false[cols].to_string(index=False, float_format="%.3g"))
    errors = df[df["error"] != ""]
    if len(errors):
        lines.append("")
        lines.append("errors")
        lines.append(errors[["label", "family", "variant", "error"]].to_string(index=False))
    lines.append("")
    lines.append(f"total seconds: {df['seconds'].sum():.0f}")
    return "\n".join(lines)


def main(argv=None) -> pd.DataFrame:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--scripts" in argv:  # the keras-io population: its own module and flags
        from .diagnosis_scripts import main as scripts_main

        argv.remove("--scripts")
        return scripts_main(argv)
    from gradguard.recipes.cli import program

    parser = argparse.ArgumentParser(prog=program("benchmarks.diagnosis"), description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, one run per cause and healthy variant")
    parser.add_argument("--tag", default=None,
                        help="results file suffix (none: print only)")
    parser.add_argument("--limit", type=int, default=None,
                        help="run only the first N cases")
    parser.add_argument("--only", default=None,
                        help="run only cases whose label or family is this")
    parser.add_argument("--shard", default=None,
                        help="i/n: run every n-th case from the i-th (0-based) "
                             "and write diagnosis_<tag>_<i>of<n>.csv; "
                             "--merge reads the shards back")
    parser.add_argument("--traces", default=None,
                        help="folder: save each run's per-step loss and "
                             "gradient record (.npz) for offline study")
    parser.add_argument("--merge", type=int, default=None,
                        help="n: summarize the n shards of --tag")
    args = parser.parse_args(argv)
    folder = os.path.join(os.path.dirname(__file__), "results")
    if args.merge:
        df = pd.concat([pd.read_csv(os.path.join(
            folder, f"diagnosis_{args.tag}_{i}of{args.merge}.csv"),
            keep_default_na=False, na_values=[""])
            for i in range(args.merge)])
        for column in ("error", "cause", "trigger"):
            df[column] = df[column].astype(object).fillna("")
        return _report(df, args.tag, folder)
    cases = population(args.quick)
    if args.only:
        cases = [c for c in cases if args.only in (c.label, c.family, c.variant)]
    cases = cases[: args.limit]
    if args.shard:  # in a fixed random order: a shard cut short is still a sample
        i, n = (int(v) for v in args.shard.split("/"))
        order = np.random.default_rng(0).permutation(len(cases))
        cases = [cases[j] for j in order][i::n]
    rows = []
    for i, case in enumerate(cases):
        row = run_case(case, args.traces)
        rows.append(row)
        print(wrap(f"[{i + 1}/{len(cases)}] {case.label:13s} {case.family:9s} "
                   f"{case.variant:16s} {case.optimizer:8s} s{case.seed} -> "
                   f"{row.get('cause', '') or '-':13s} {row.get('trigger', '')} "
                   f"{row.get('error', '')} ({row.get('seconds', 0):.1f}s)", indent="    "),
              flush=True)
        if args.shard:  # written as it goes
            i_, n_ = args.shard.split("/")
            os.makedirs(folder, exist_ok=True)
            pd.DataFrame(rows).to_csv(os.path.join(
                folder, f"diagnosis_{args.tag}_{i_}of{n_}.csv"), index=False)
    df = pd.DataFrame(rows)
    if args.shard:
        os.makedirs(folder, exist_ok=True)
        i, n = args.shard.split("/")
        df.to_csv(os.path.join(folder, f"diagnosis_{args.tag}_{i}of{n}.csv"), index=False)
        return df
    return _report(df, args.tag, folder)


def _report(df: pd.DataFrame, tag: str | None, folder: str) -> pd.DataFrame:
    text = summarize(df)
    print(terminal(text))
    if tag:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"diagnosis_{tag}.txt"), "w") as f:
            f.write(text + "\n")
        df.to_csv(os.path.join(folder, f"diagnosis_{tag}.csv"), index=False)
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
