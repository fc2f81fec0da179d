"""What NaNGuard's replays cost: time from an event to its report, and nothing without one.

On the keras-io script population (`diagnosis_scripts.py`: lr x1000, the script's first single bad batch, a
healthy run), each run trains
twice from the same seed: with `NaNGuard()` as it ships (the failing step
replayed under counterfactuals on a copy) and with `NaNGuard(replay=False)`
(its rules alone). Per run it records the guard's events, how many times
the guard's event response ran (`_handle`, counted by wrapping it: the
replays run only inside it), and each event's `replay_seconds` (from the
event to its diagnosis: rules, replays and the float32 check). Reported:

- time from event to report, with and without replays (median, max), and
  the causes each named;
- healthy runs: event responses (and so replays) run, and the fit's wall
  time with replays on over off (one fit each: rough on a shared machine).

Run from the repository root:

    python -m benchmarks.replay_cost                               # every script (18) x 3 breaks x 2: ~20 min on 2 cores for the first 13
    python -m benchmarks.replay_cost --only vae,text_cnn --breaks lr_x1000,healthy
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay_cost",
                                     description="Time NaNGuard's replays on the keras-io script population.")
    parser.add_argument("--only", default=None, help="comma-separated script names (default: all 13)")
    parser.add_argument("--breaks", default="lr_x1000,bad_batch,healthy",
                        help="comma-separated breaks (default lr_x1000,bad_batch,healthy; bad_batch: the script's "
                             "first single bad batch, a NaN input or, where its inputs are token ids, a NaN label)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser, log_level="3")  # flags first as a program, then Keras, quietly

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.recipes.console import terminal, wrap  # noqa: E402

from . import keras_io  # noqa: E402
from .diagnosis_scripts import BREAKS, SINGLE_BAD, plan, run_one  # noqa: E402


def one(script: str, brk: str, seed: int, replay: bool) -> dict:
    """One run with the guard's replays on or off; its events' costs and the responses counted."""
    from gradguard.callbacks import NaNGuard

    guard = NaNGuard(verbose=False, replay=replay)
    calls = []
    handle = guard._handle

    def counted(*args, **kwargs):
        calls.append(1)
        return handle(*args, **kwargs)

    guard._handle = counted
    started = time.perf_counter()
    row = run_one(script, brk, seed, callbacks=[guard])
    seconds = [e.replay_seconds for e in guard.events if e.replay_seconds is not None]
    return {
        "script": script, "brk": brk, "replay": replay, "error": row.get("error", ""),
        "events": len(guard.events), "responses": len(calls),
        "causes": " ".join(sorted({str(e.cause) for e in guard.events})),
        "event_to_report_s": float(np.sum(seconds)) if seconds else np.nan,
        "event_to_report_max_s": float(np.max(seconds)) if seconds else np.nan,
        "fit_s": round(time.perf_counter() - started, 2),
    }


def summary(df: pd.DataFrame) -> str:
    """The report: per run, then the medians and the healthy runs' counts."""
    ok = df[df["error"] == ""]
    lines = ["# NaNGuard's replays: cost per event, none without one", "",
             df.drop(columns=["error"]).to_markdown(index=False, floatfmt=".3f"), ""]
    for replay, part in ok.groupby("replay"):
        fired = part[part["events"] > 0]
        per_event = fired["event_to_report_max_s"]
        lines.append(f"- replays {'on' if replay else 'off'}: {len(fired)} runs with events; time from event to "
                     f"report per run (all its events) median {fired['event_to_report_s'].median():.3f} s, "
                     f"max {fired['event_to_report_s'].max():.3f} s; slowest single event {per_event.max():.3f} s")
    healthy = ok[ok["brk"] == "healthy"]
    if len(healthy):
        pivot = healthy.pivot_table(index="script", columns="replay", values="fit_s")
        ratio = (pivot[True] / pivot[False]).median() if {True, False} <= set(pivot.columns) else np.nan
        lines.append(f"- healthy runs: {len(healthy)}; events {int(healthy['events'].sum())}; event responses "
                     f"(the only place replays run) {int(healthy['responses'].sum())}; fit wall time replays on "
                     f"over off, median {ratio:.3f} (one fit each)")
    errors = df[df["error"] != ""]
    for _, r in errors.iterrows():
        lines.append(f"- error: {r['script']} {r['brk']} replay={r['replay']}: {r['error'][:100]}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> pd.DataFrame:
    # The published scripts' own `input_shape=` (boston_regression): Keras' advice, not this benchmark's.
    warnings.filterwarnings("ignore", message=r"Do not pass an `input_shape`", category=UserWarning)
    scripts = args.only.split(",") if args.only else list(keras_io.SCRIPTS)
    breaks = args.breaks.split(",")
    unknown = [b for b in breaks if b not in BREAKS and b not in ("healthy", "bad_batch")]
    if unknown:
        sys.exit(f"--breaks {unknown[0]!r}: expected one of {sorted(BREAKS)}, bad_batch or healthy.")
    rows = []
    for script in scripts:
        applicable = [name for name, _ in plan(script)]
        first_bad = next((name for name in applicable if name in SINGLE_BAD), "no single bad batch")
        for brk in [first_bad if b == "bad_batch" else b for b in breaks]:
            if brk not in applicable:
                print(f"{script:24s} {brk:10s} not applicable to this script: skipped", flush=True)
                continue
            for replay in (True, False):
                rows.append(one(script, brk, args.seed, replay))
                r = rows[-1]
                print(wrap(f"{script:24s} {brk:10s} replay {'on ' if replay else 'off'} events {r['events']} "
                           f"responses {r['responses']} {r['causes'] or '-':14s} event->report "
                           f"{r['event_to_report_s']:.3f} s  fit {r['fit_s']:.1f} s {r['error'][:40]}", indent="    "),
                      flush=True)
    df = pd.DataFrame(rows)
    print(terminal(summary(df)))
    return df


if __name__ == "__main__":
    main(build_parser().parse_args())
