"""Summaries and Markdown for the callback overhead benchmark."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .timing import fit_exponent, spread

# Reported next to the numbers, never asserted: median ratio to plain fit.
TARGETS = {  # issue 10's, judged on the LSTM (the other models are shown)
    "logger every 50 steps": 1.02,
    "logger every step, per layer": 1.05,
    "logger every step, log_dir": 1.10,
    "logger + NaNGuard + AutoClip": 1.10,
}
EXPONENT_RANGE = (0.8, 1.2)  # "scaling exponent ~1"
EXPONENT_CHANGE = 0.1  # "the logger does not change it": |k_logger - k_plain|


def overhead_table(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per model and configuration: rates, ratios, targets.

    Each run's time per step is divided by the plain-fit run of the same
    model and round, so slow drifts of a shared machine cancel; the median
    and min-max are over rounds.
    """
    raw = raw.assign(per_step=raw["seconds"] / raw["steps"],
                     cpu_per_step=raw["cpu_seconds"] / raw["steps"])
    plain = raw[raw["config"] == "plain fit"].set_index(["model", "repeat"])
    for column, of in (("ratio", "per_step"), ("cpu_ratio", "cpu_per_step")):
        raw[column] = [
            getattr(row, of) / plain.loc[(row.model, row.repeat), of]
            for row in raw.itertuples()
        ]
    rows = []
    for (model, name), runs in raw.groupby(["model", "config"], sort=False):
        ms, ms_lo, ms_hi = spread(1e3 * runs["per_step"])
        ratio, r_lo, r_hi = spread(runs["ratio"])
        target = TARGETS.get(name)
        rows.append({
            "model": model,
            "configuration": name,
            "steps/s": 1e3 / ms,
            "ms/step": ms,
            "ms/step min-max": f"{ms_lo:.2f}-{ms_hi:.2f}",
            "ratio": ratio,
            "ratio min-max": f"{r_lo:.3f}-{r_hi:.3f}",
            "CPU-time ratio": spread(runs["cpu_ratio"])[0],
            "first step s": spread(runs["first_step_s"])[0],
            "target": "" if target is None else f"<= {target:.2f}",
            "met": "" if target is None else ("met" if ratio <= target else "missed"),
        })
    return pd.DataFrame(rows)


def scaling_table(raw: pd.DataFrame, config) -> tuple[pd.DataFrame, float, float]:
    """Median seconds per epoch by seq_len, and the fitted exponents."""
    med = raw.groupby(["seq_len", "config"])["seconds"].median().unstack("config")
    lo = raw.groupby(["seq_len", "config"])["seconds"].min().unstack("config")
    hi = raw.groupby(["seq_len", "config"])["seconds"].max().unstack("config")
    plain, logger = "plain fit", "logger every step, per layer"
    table = pd.DataFrame({
        "seq_len": med.index.astype(int),
        "plain s/epoch": med[plain].to_numpy(),
        "plain min-max": [f"{a:.3f}-{b:.3f}" for a, b in zip(lo[plain], hi[plain])],
        "logger s/epoch": med[logger].to_numpy(),
        "logger min-max": [f"{a:.3f}-{b:.3f}" for a, b in zip(lo[logger], hi[logger])],
        "ratio": (med[logger] / med[plain]).to_numpy(),
    })
    k_plain = fit_exponent(table["seq_len"], table["plain s/epoch"])
    k_logger = fit_exponent(table["seq_len"], table["logger s/epoch"])
    return table, k_plain, k_logger


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (floats to 3 decimals)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|")

    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in table.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def target_lines(table: pd.DataFrame, k_plain: float, k_logger: float) -> list[str]:
    """Met / missed, one bullet per target."""
    lines = []
    for name, target in TARGETS.items():
        rows = table[table["configuration"] == name]
        judged = rows[rows["model"] == "LSTM"] if (rows["model"] == "LSTM").any() else rows
        status = "met" if judged["ratio"].max() <= target else "missed"
        each = ", ".join(f"{m} {r:.3f}" for m, r in zip(rows["model"], rows["ratio"]))
        lines.append(f"- {name}: ratio <= {target:.2f} on the LSTM: "
                     f"**{status}** ({each})")
    lo, hi = EXPONENT_RANGE
    ok = lo <= k_plain <= hi and lo <= k_logger <= hi
    lines.append(f"- scaling exponent ~1 (in [{lo}, {hi}]): **{'met' if ok else 'missed'}** "
                 f"(plain k = {k_plain:.2f}, logger k = {k_logger:.2f})")
    same = abs(k_logger - k_plain) <= EXPONENT_CHANGE
    lines.append(f"- logger does not change the exponent (|dk| <= {EXPONENT_CHANGE}): "
                 f"**{'met' if same else 'missed'}** (dk = {k_logger - k_plain:+.2f})")
    return lines


def render(header: str, config, table: pd.DataFrame, scaling: pd.DataFrame,
           k_plain: float, k_logger: float, elapsed: float) -> str:
    """The whole report as Markdown."""
    settings = (
        f"Batch {config.batch_size}; {config.steps} timed steps per run after "
        f"one untimed tracing step; fresh model per run; {config.repeats} "
        f"round(s) in rotating round-robin order; median and min-max over "
        f"rounds; ratio = wall time per step / plain fit's in the same round "
        f"(targets judged on it); CPU-time ratio = the same with this "
        f"process's CPU time, less sensitive to other load on the machine. "
        f"RNNs: seq_len {config.seq_len}, {config.units} units, adding problem. "
        f"Deep dense: depth {config.depth}, width {config.width}, "
        f"{config.n_features} standardized poorly scaled features. "
        f"'first step s' is the untimed first step (tracing, and any rebuild a "
        f"callback forces in on_train_begin)."
    )
    return "\n".join([
        "# Callback overhead", "", header, "", settings, "",
        "## Time per step relative to plain fit", "",
        markdown(table),
        f"## Scaling: LSTM ({config.units} units) seconds per epoch of "
        f"{config.scaling_steps} steps, {config.scaling_repeats} round(s)", "",
        markdown(scaling),
        f"Fitted exponent (time ~ seq_len^k): plain fit k = {k_plain:.2f}, "
        f"with logger k = {k_logger:.2f}.", "",
        "## Targets (reported, not asserted)", "",
        *target_lines(table, k_plain, k_logger), "",
        f"Wall time of the runs above: {elapsed:.0f} s.", "",
    ])
