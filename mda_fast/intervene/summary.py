"""Emergence statistics over conditions and seeds, and the emergence-curve plot.

curves: ``{condition: {seed(str): {"steps": [...], "induction": [...], ...}}}``.
Deltas are paired by seed (same data order) and given in % of the window length; a run whose
curve never reaches the threshold is *censored*: its emergence is taken as the last tracked step
(a lower bound, so reported delays are then underestimates) and counted in ``censored``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mda_fast.errors import ConfigError
from mda_fast.intervene.io import pyplot, save_figure
from mda_fast.intervene.track import emergence, mean_std

COLORS = {"baseline": "#212529", "delete": "#d9480f", "random-delete": "#f59f00", "duplicate": "#1971c2",
          "random-duplicate": "#74c0fc", "insert-synthetic": "#2f9e44"}


def resolve_threshold(threshold, curves: dict, metric: str) -> float:
    """A float, or ``"50%"`` = 50% of the baseline's maximum (mean over seeds)."""
    s = str(threshold).strip()
    if not s.endswith("%"):
        try:
            return float(s)
        except ValueError:
            raise ConfigError(f"threshold {threshold!r} is neither a number nor a percentage") from None
    base = curves.get("baseline")
    if not base:
        raise ConfigError(f"a relative threshold ({threshold}) needs the baseline condition among the plans")
    peak = np.mean([np.nanmax(c[metric]) for c in base.values()])
    return float(s[:-1]) / 100.0 * float(peak)


def summarize(curves: dict, window: tuple[int, int], metric: str = "induction", threshold="50%") -> dict:
    """Per condition: emergence (cross / steepest) per seed, mean ± std, paired deltas (% of window)."""
    a, b = window
    thr = resolve_threshold(threshold, curves, metric)
    width = max(1, b - a)
    em = {cond: {seed: emergence(c["steps"], c[metric], thr) for seed, c in runs.items()}
          for cond, runs in curves.items()}
    last = {cond: {seed: float(c["steps"][-1]) for seed, c in runs.items()} for cond, runs in curves.items()}
    out = {"metric": metric, "threshold": thr, "threshold_spec": str(threshold), "window": [a, b],
           "conditions": {}}
    for cond, runs in em.items():
        cross = {s: (e["cross"] if e["cross"] is not None else last[cond][s]) for s, e in runs.items()}
        censored = sum(e["cross"] is None for e in runs.values())
        m, sd = mean_std(list(cross.values()))
        ms, sds = mean_std([e["steepest"] for e in runs.values()])
        mf, sdf = mean_std([e["final"] for e in runs.values()])
        row = {"seeds": sorted(runs), "cross": cross, "steepest": {s: e["steepest"] for s, e in runs.items()},
               "cross_mean": m, "cross_std": sd, "steepest_mean": ms, "steepest_std": sds,
               "final_mean": mf, "final_std": sdf, "censored": censored, "suppressed": censored == len(runs)}
        if "baseline" in em and cond != "baseline":
            base = em["baseline"]
            pairs = [s for s in runs if s in base]
            d = [100.0 * (cross[s] - (base[s]["cross"] if base[s]["cross"] is not None else last["baseline"][s]))
                 / width for s in pairs]
            ds = [100.0 * (runs[s]["steepest"] - base[s]["steepest"]) / width for s in pairs
                  if runs[s]["steepest"] is not None and base[s]["steepest"] is not None]
            row["delta_cross_pct"], row["delta_cross_pct_std"] = mean_std(d)
            row["delta_steepest_pct"], row["delta_steepest_pct_std"] = mean_std(ds)
            row["delta_cross_pct_per_seed"] = dict(zip(pairs, d))
        out["conditions"][cond] = row
    return out


def plot_curves(curves: dict, window: tuple[int, int], path, threshold: float | None = None,
                metrics=("induction", "prev_token", "probe", "icl")) -> Path:
    """One panel per metric: thin line per seed, thick mean per condition, window shaded."""
    plt = pyplot()
    metrics = [m for m in metrics if any(m in c for runs in curves.values() for c in runs.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        ax.axvspan(window[0], window[1], color="#f1f3f5", zorder=0)
        for i, (cond, runs) in enumerate(curves.items()):
            col = COLORS.get(cond.split(":")[0], f"C{i}")
            ys = []
            for c in runs.values():
                ax.plot(c["steps"], c[m], color=col, alpha=0.25, lw=0.8)
                ys.append(c[m])
            steps = next(iter(runs.values()))["steps"]
            if all(len(y) == len(steps) for y in ys):
                ax.plot(steps, np.nanmean(np.asarray(ys, dtype=float), axis=0), color=col, lw=2,
                        label=f"{cond} ({len(runs)} seeds)")
        if m == "induction" and threshold is not None:
            ax.axhline(threshold, color="#868e96", ls="--", lw=0.8)
        ax.set_title({"induction": "induction score", "prev_token": "previous-token score",
                      "probe": "probe (mean log p)", "icl": "ICL score (late - early loss)"}.get(m, m))
        ax.set_xlabel("step")
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
