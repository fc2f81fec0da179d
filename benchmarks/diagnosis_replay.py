"""Replays NaNGuard's loss rules on a population's saved traces, without training.

`python -m benchmarks.diagnosis --traces DIR` saves each run's running loss
and gradient record. Up to a run's first event the guard only watches, so
the rules that need no running median (`loss_rise`, `stalled`) can be
replayed on those traces exactly: a run that had no event gets the new
events its whole trace holds (a `stalled` warning lets training go on, so
a later `loss_rise` is the decisive one); a run that had one gets a new
decisive event only where `loss_rise` stops it earlier (a warning before
its own stop leaves the stop decisive; the events are not recounted). Causes are named by `diagnosis.name_cause`
as the guard would, from the structure measured on the record.

The traces hold running losses without epoch boundaries, so the replay
cannot undo them into batch losses: `loss_rise` is replayed on the running
losses, and the stall's second judgment (`diagnosis.windows_flat`, step 16)
and `loss_growth` (batch losses 3 in a row) are not replayed. It can miss
what the guard catches there; the real run (`benchmarks.diagnosis`) is the
measure.

    python -m benchmarks.diagnosis_replay --traces DIR --results 'benchmarks/results/diagnosis_TAG_*of2.csv' --tag TAG_replayed
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import pandas as pd
from gradguard.recipes.console import terminal

from .diagnosis import summarize

WINDOW = 50  # NaNGuard's default window
KEY = ["label", "family", "variant", "optimizer", "seed"]


def replay(trace) -> dict | None:
    """The first `loss_rise` or `stalled` event in one trace: step and cause."""
    from gradguard.callbacks import diagnosis as dg  # Keras: loaded here, not for --help

    loss, steps = trace["loss"], trace["loss_steps"]
    vn, status = trace["variable_norms"], trace["status"]
    kernel, bias, fan_in = (int(v) for v in trace["input_columns"])
    rg = float(trace["recurrent_gain"])
    rg = None if np.isnan(rg) else rg
    gains = [float(g) for g in trace["gains"]]
    finite = np.isfinite(loss)
    n = len(loss) if finite.all() else int(np.argmin(finite))
    applied = (trace["status"] == 0) & np.isfinite(trace["norm"])
    rise = None
    for i in range(dg.RECENT, n):  # as the guard: only while the norms are not growing
        norms = trace["norm"][applied & (trace["steps"] <= steps[i])]
        growth = dg.measure_growth(norms, WINDOW)["growth"]
        if dg.loss_has_risen(loss[: i + 1]) and (growth is None or growth < dg.GROWTH_FACTOR):
            rise = i
            break
    stall = None
    if n >= dg.STALL_STEPS and steps[0] == 1:
        k = dg.STALL_STEPS
        ratio = None if kernel < 0 else dg.input_ratio(vn[:k][status[:k] == 0],
                                                       kernel, bias, fan_in)
        structure = dg.structural_sign(gains, rg, ratio)
        first = trace["steps"] == 1
        sensitivity = (dg.first_step_sensitivity(float(trace["norm"][first][0]), loss[0])
                       if first.any() else None)
        if dg.find_stall(loss[:k], structure, sensitivity):
            stall = k - 1
    fired = [(i, t) for i, t in ((rise, "loss_rise"), (stall, "stalled")) if i is not None]
    if not fired:
        return None
    # A stall is warned about and training goes on: a later rise still stops.
    i, trigger = (rise, "loss_rise") if rise is not None else min(fired)
    k = min(i + 1, len(vn))
    ratio = None if kernel < 0 else dg.input_ratio(vn[:k][status[:k] == 0],
                                                   kernel, bias, fan_in)
    signs = {"growth": None, "short": False, "earlier_suspects": [], "spikes": 0,
             "weight_growth": None, "gains": gains, "recurrent_gain": rg,
             "input_ratio": ratio}
    cause = dg.name_cause(trigger, signs, suspects=[], repeated=False, clip=None,
                          learning_rate=0.0, epoch=0, batch=0)[0]
    return {"step": int(steps[i]), "trigger": trigger, "cause": cause,
            "events": len(fired), "stops": int(trigger == "loss_rise")}


def main(argv=None) -> pd.DataFrame:
    from gradguard.recipes.cli import program

    parser = argparse.ArgumentParser(prog=program("benchmarks.diagnosis_replay"), description=__doc__.splitlines()[0])
    parser.add_argument("--traces", required=True, help="the --traces folder")
    parser.add_argument("--results", required=True,
                        help="glob of the run's CSV files (shards)")
    parser.add_argument("--tag", default=None, help="results file suffix")
    args = parser.parse_args(argv)
    df = pd.concat([pd.read_csv(f, keep_default_na=False, na_values=[""])
                    for f in sorted(glob.glob(args.results))], ignore_index=True)
    for column in ("error", "cause", "trigger"):
        df[column] = df[column].astype(object).fillna("")
    changed = 0
    for i, row in df.iterrows():
        path = os.path.join(args.traces, "-".join(str(row[k]) for k in KEY) + ".npz")
        if row["error"] or not os.path.exists(path):
            continue
        new = replay(np.load(path))
        if new is None or (row["events"] > 0 and (
                new["step"] >= row["step"] or not new["stops"])):
            continue  # the run's own event came first, or a warning before its stop
        changed += 1
        df.loc[i, ["trigger", "cause", "step"]] = new["trigger"], new["cause"], new["step"]
        df.loc[i, ["events", "stops", "skips"]] = (
            new["events"], new["stops"], new["events"] - new["stops"])
    text = summarize(df) + f"\nruns whose decisive event the replay changed: {changed}"
    print(terminal(text))
    if args.tag:
        folder = os.path.join(os.path.dirname(__file__), "results")
        with open(os.path.join(folder, f"diagnosis_{args.tag}.txt"), "w") as f:
            f.write(text + "\n")
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
