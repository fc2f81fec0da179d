"""Reading an experiment table: spread over seeds, factor effects, a summary.

Pure pandas/numpy on the table `Experiment.run` returns (one row per
variant x cell x seed) and on the per-row gradient norms it saved. A
difference between two configurations is called real only when it is larger
than the spread over seeds of the configurations compared; with one seed
the spread is unknown and the summary says so.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .experiment import LEARNED_RATIO, Row
from .variants import MODIFIERS, Variant


def exploded(row: pd.Series | Mapping) -> bool:
    """Whether a row exploded: a non-finite gradient, a NaNGuard stop, or non-finite weights."""
    return bool(not pd.isna(row["exploded_step"]) or not row["finite_weights"])


def spread_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per variant x cell: mean and min..max over seeds.

    Columns: variant, cell, optimizer, learning_rate, seeds, `val/trivial`
    (mean), val_loss mean / min / max, learned and exploded (counts over
    seeds), learned_epoch (earliest), max_grad_norm mean / min / max.
    """
    lines = []
    for (variant, cell), g in table.groupby(["variant", "cell"], sort=False):
        val, top = g["val_loss"].astype(float), g["max_grad_norm"].astype(float)
        lines.append({
            "variant": variant, "cell": cell, "optimizer": g["optimizer"].iloc[0],
            "learning_rate": g["learning_rate"].iloc[0], "seeds": len(g),
            "val/trivial": float(g["val/trivial"].astype(float).mean()),
            "val_loss": val.mean(), "val_loss_min": val.min(), "val_loss_max": val.max(),
            "learned": f"{int(g['learned'].sum())}/{len(g)}",
            "learned_epoch": None if g["learned_epoch"].isna().all() else int(g["learned_epoch"].min()),
            "exploded": f"{sum(exploded(r) for _, r in g.iterrows())}/{len(g)}",
            "max_grad_norm": top.mean(), "max_grad_norm_min": top.min(),
            "max_grad_norm_max": top.max(),
        })
    return pd.DataFrame(lines).astype({"learned_epoch": "Int64"})


def _ratios(table: pd.DataFrame, variant: str, cell: str) -> np.ndarray:
    rows = table[(table["variant"] == variant) & (table["cell"] == cell)]
    return rows["val/trivial"].to_numpy(dtype=np.float64)


def _range(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if finite.size > 1 else math.nan


def compare(on: np.ndarray, off: np.ndarray) -> tuple[float, float, bool | None]:
    """`(difference of means, seed spread, real?)` of two sets of val/trivial.

    The spread is the larger min..max range of the two sets; the difference
    is real when it exceeds that spread. `real` is None when the spread is
    unknown (one seed) or a mean is not finite.
    """
    diff = float(np.mean(on) - np.mean(off))
    spread = max(_range(on), _range(off)) if min(len(on), len(off)) > 1 else math.nan
    real = None if not (math.isfinite(diff) and math.isfinite(spread)) else abs(diff) > spread
    return diff, spread, real


def _verdict(diff: float, spread: float, real: bool | None) -> str:
    if not math.isfinite(diff):
        return "not comparable (a run exploded)"
    if real is None:
        return f"{diff:+.3g} (spread unknown)"
    if real:
        return f"{diff:+.3g}, larger than the seed spread {spread:.3g}: a real difference"
    return f"{diff:+.3g}, within the seed spread {spread:.3g}: not a real difference"


def effects(table: pd.DataFrame) -> list[dict]:
    """The effect of each factor, from pairs of variants that differ only in it.

    A factor is a modifier (`batchnorm`, `standardize`, a clipping mode,
    `lower_lr`) or an `@optimizer`. For each cell, every variant with the
    factor is paired with the variant without it (same other modifiers);
    the effect is mean val/trivial with it minus without, over pairs and
    seeds, and `compare` decides whether it exceeds the seed spread.

    Returns:
        Dicts: factor, cell, pairs, without, with (mean val/trivial),
        exploded_without, exploded_with (counts), diff, spread, real.
    """
    parsed = {v: Variant.parse(v) for v in table["variant"].unique()}
    index = {(p.mods, p.optimizer): v for v, p in parsed.items()}
    factors = [m for m in MODIFIERS if any(m in p.mods for p in parsed.values())]
    factors += sorted({f"@{p.optimizer}" for p in parsed.values() if p.optimizer})
    out = []
    for cell in table["cell"].unique():
        for factor in factors:
            pairs = []
            for v, p in parsed.items():
                if factor.startswith("@") and p.optimizer == factor[1:]:
                    partner = index.get((p.mods, None))
                elif factor in p.mods and not factor.startswith("@"):
                    partner = index.get((p.mods - {factor}, p.optimizer))
                else:
                    continue
                if partner is not None:
                    pairs.append((v, partner))
            if not pairs:
                continue
            on = np.concatenate([_ratios(table, v, cell) for v, _ in pairs])
            off = np.concatenate([_ratios(table, w, cell) for _, w in pairs])
            spreads = [_range(_ratios(table, n, cell)) for pair in pairs for n in pair]
            blew = lambda names: sum(exploded(r) for _, r in table[  # noqa: E731
                table["variant"].isin(names) & (table["cell"] == cell)].iterrows())
            any_blew = blew([n for pair in pairs for n in pair]) > 0
            with np.errstate(invalid="ignore"):  # an exploded run's loss says nothing about the model
                diff = math.nan if any_blew else float(np.mean(on) - np.mean(off))
            spread = max(spreads) if all(math.isfinite(s) for s in spreads) else math.nan
            real = None if not (math.isfinite(diff) and math.isfinite(spread)) else abs(diff) > spread
            out.append({
                "factor": factor, "cell": cell, "pairs": len(pairs),
                "without": float(np.mean(off)), "with": float(np.mean(on)),
                "exploded_without": blew([w for _, w in pairs]),
                "exploded_with": blew([v for v, _ in pairs]), "runs": len(on),
                "diff": diff, "spread": spread, "real": real,
            })
    return out


def load_norms(out_dir: str | pathlib.Path, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Row name -> its saved `rows/<row>/grad_norms.csv`."""
    out_dir = pathlib.Path(out_dir)
    names = [Row(r.variant, r.cell, int(r.seed)).name for r in table.itertuples()]
    return {n: pd.read_csv(out_dir / "rows" / n / "grad_norms.csv") for n in names}


def suggest_clip_threshold(table: pd.DataFrame, norms: Mapping[str, pd.DataFrame],
                           percentile: float = 90.0) -> tuple[float, list[str]]:
    """One clipping threshold for the whole run, from its stable runs.

    Following the Deep Learning Tuning Playbook: clip at about the 90th
    percentile of the unclipped gradient norms of healthy training. The norms
    pooled are every step of the rows that neither exploded nor clipped
    (falling back to the stable clipped rows, whose logged norms are also
    the unclipped ones).

    Returns:
        `(threshold, row names used)`; NaN and `[]` when no row was stable.

    References:
        Godbole, Dahl, Gilmer, Shallue & Nado, "Deep Learning Tuning
        Playbook", 2023, https://github.com/google-research/tuning_playbook.
    """
    stable = [r for _, r in table.iterrows() if not exploded(r)]
    rows = [Row(r["variant"], r["cell"], int(r["seed"])) for r in stable]
    names = [row.name for row in [row for row in rows if row.spec.clip is None] or rows]
    values = np.concatenate([norms[n]["grad_norm"].to_numpy(np.float64) for n in names] or [[]])
    values = values[np.isfinite(values)]
    return (float(np.percentile(values, percentile)) if values.size else math.nan), names


def guard_reports(out_dir: str | pathlib.Path, table: pd.DataFrame) -> dict[str, dict]:
    """Row name -> the first NaNGuard event of its `rows/<row>/nan_guard.json`.

    Each value holds `step`, `cause`, `action` and `clip` (the global-norm
    threshold its cure suggests, or None). Rows without a report are left out.
    """
    reports = {}
    for r in table.itertuples():
        name = Row(r.variant, r.cell, int(r.seed)).name
        path = pathlib.Path(out_dir) / "rows" / name / "nan_guard.json"
        if path.is_file():
            event = json.loads(path.read_text())["events"][0]
            reports[name] = {"step": event["step"], "cause": event["cause"],
                             "action": event["action"], "clip": cure_clip(event.get("cure", ""))}
    return reports


def cure_clip(cure: str) -> float | None:
    """The threshold in a NaNGuard cure's `global_clipnorm=X`, or None."""
    found = re.search(r"global_clipnorm=([0-9.]+(?:e[+-]?\d+)?)", cure)
    return float(found.group(1)) if found else None


def _names(frame: pd.DataFrame) -> str:
    return ", ".join(f"{g['variant']} / {g['cell']} ({g['val/trivial']:.3g})" for _, g in frame.iterrows())


def summarize(table: pd.DataFrame, threshold: float, threshold_rows: list[str],
              guard: Mapping[str, dict] | None = None) -> list[str]:
    """What the run shows, in at most about eight sentences computed from the table.

    One line each: the rows that exploded, the stable rows that did not
    learn (and those that ended worse than the constant prediction), the
    rows that learned, the best two compared against the seed spread, the
    factors' effects (one line per factor when several seeds measure the
    spread, else one line saying why none is called real), the suggested
    clipping threshold and, when NaNGuard's report for an exploded row
    names another clip value, why the two differ.

    Args:
        table: The experiment table.
        threshold: The run's suggested clipping threshold (`suggest_clip_threshold`).
        threshold_rows: The rows it pooled.
        guard: Row name -> `guard_reports` entry. Defaults to None: none.
    """
    guard = guard or {}
    spread = spread_table(table)
    trivial = float(table["trivial_mse"].iloc[0])
    blew, calm = [], []
    for _, g in spread.iterrows():
        rows = table[(table["variant"] == g["variant"]) & (table["cell"] == g["cell"])]
        bad = [r for _, r in rows.iterrows() if exploded(r)]
        (blew if bad else calm).append(g)
        if bad:
            steps = [int(r["exploded_step"]) for r in bad if not pd.isna(r["exploded_step"])]
            causes = sorted({guard[n]["cause"] for n in (Row(r["variant"], r["cell"], int(r["seed"])).name
                                                          for r in bad) if n in guard})
            how = re.sub(r" at step \d+ \(([^)]*)\)", r" (\1)", str(bad[0]["nan_guard"]))
            blew[-1] = (f"{g['variant']} / {g['cell']} exploded in {g['exploded']} seeds: first at step "
                        f"{min(steps) if steps else '?'} (NaNGuard: {how}"
                        f"{', cause ' + ', '.join(causes) if causes else ''}); "
                        f"max gradient norm {g['max_grad_norm']:.3g}")
    lines = ["; ".join(blew) + "."] if blew else []
    base = spread[spread["variant"] == "baseline"]
    if len(base) and base["exploded"].str.startswith("0/").all():
        lines.append("baseline did NOT explode (no non-finite gradient, no NaNGuard stop); "
                     "raise --lr or use --optimizer sgd to see an explosion.")
    calm = pd.DataFrame(calm)
    learned = spread["learned"].str.split("/").str[0].astype(int) > 0
    good = spread[learned]
    if len(calm):
        keys = set(zip(good["variant"], good["cell"]))
        idle = calm[[k not in keys for k in zip(calm["variant"], calm["cell"])]]
        worse = idle[idle["val/trivial"] > 10]
        if len(idle):
            ratios = idle["val/trivial"]
            lines.append(f"stable but not learned: {_names(idle)}." if len(idle) <= 4 else
                         f"stable but not learned: the {len(idle)} other rows (val/trivial "
                         f"{ratios.min():.3g} to {ratios.max():.3g})."
                         + (f" Worse than the constant prediction by 10x or more, without a non-finite "
                            f"gradient: {_names(worse)}." if len(worse) else ""))
    bar = f"val <= {LEARNED_RATIO:g} x the constant prediction's {trivial:.4g}"
    if len(good):
        lines.append(f"learned ({bar}): " + ", ".join(
            f"{g['variant']} / {g['cell']} in {g['learned']} seeds (val/trivial {g['val/trivial']:.3g}, "
            f"first at epoch {'?' if pd.isna(g['learned_epoch']) else int(g['learned_epoch'])})"
            for _, g in good.iterrows()) + ".")
    else:
        lines.append(f"no configuration learned ({bar}).")
    ranked = spread[np.isfinite(spread["val/trivial"])].sort_values("val/trivial")
    if len(ranked) >= 2:
        a, b = ranked.iloc[0], ranked.iloc[1]
        diff, s, real = compare(_ratios(table, b["variant"], b["cell"]), _ratios(table, a["variant"], a["cell"]))
        lines.append(f"lowest val/trivial: {a['variant']} / {a['cell']} ({a['val/trivial']:.3g}); next "
                     f"{b['variant']} / {b['cell']} ({b['val/trivial']:.3g}): {_verdict(diff, s, real)}.")
    if table["seed"].nunique() == 1:
        lines.append("one seed per row: the spread over seeds is unknown, so no difference is called "
                     "real (results.md lists each factor's effect); --seeds 3 measures it.")
    else:
        lines += [effect_line(e) for e in effects(table)]
    if math.isfinite(threshold):
        lines.append(f"suggested clipping threshold: {threshold:.3g} (90th percentile of the unclipped "
                     f"gradient norms of {len(threshold_rows)} stable row"
                     f"{'s' * (len(threshold_rows) != 1)}, Deep Learning Tuning Playbook; the dashed "
                     f"line in grad_norms.png).")
        other = [(n, e) for n, e in guard.items() if e["clip"] is not None
                 and not math.isclose(e["clip"], threshold, rel_tol=0.05)]
        if other:
            name, e = other[0]
            lines.append(
                f"NaNGuard's report for {name} (rows/{name}/nan_guard.json) suggests clipping at "
                f"{e['clip']:.3g} instead: the 90th percentile of that row's own norms before its onset, "
                f"already on the way up; {threshold:.3g} pools the rows that stayed stable, so use it"
                + (f" ({len(other) - 1} other report{'s' * (len(other) > 2)} differ the same way)."
                   if len(other) > 1 else "."))
    return lines


def effect_line(e: dict) -> str:
    """One sentence for one `effects` entry."""
    return (f"effect of {e['factor']} on {e['cell']} ({e['pairs']} pair{'s' * (e['pairs'] > 1)}, "
            f"{e['runs']} run{'s' * (e['runs'] > 1)} each side): exploded {e['exploded_without']} "
            f"without, {e['exploded_with']} with; val/trivial {e['without']:.3g} without, "
            f"{e['with']:.3g} with: {_verdict(e['diff'], e['spread'], e['real'])}.")
