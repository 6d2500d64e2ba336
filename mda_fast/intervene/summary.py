"""Emergence statistics over conditions and seeds, and the emergence-curve plot.

curves: ``{condition: {seed(str): curve}}`` with curves as :meth:`Tracker.curve` returns them.
Every tracked unit (:class:`TrackedUnit`: a head and the metric that says it formed) is summarized
under every condition: the step its curve first crosses the threshold in each seed, and the paired
shift against the baseline under the same seed (same data order), in % of the window length,
with a Student-t 95% interval over seeds and a sign-flip p-value (:mod:`.stats`). A run whose curve never
reaches the threshold is *censored*: its emergence is taken as its last tracked step (a lower
bound, so a reported delay is then an underestimate) and counted in ``censored``.

The ICL score is compared at one step for all conditions: the baseline's mean emergence step of
the first unit (every run is tracked at least until it has emerged, so all have reached it unless
they emerged much earlier; then it is None for that run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mda_fast.errors import ConfigError
from mda_fast.io import pyplot, save_figure
from mda_fast.intervene.stats import paired_effect, spearman_ci
from mda_fast.intervene.track import emergence, mean_std, series
from mda_fast.units import Unit

COLORS = {"baseline": "#212529", "delete": "#d9480f", "delete-negative": "#ae3ec9", "random-delete": "#f59f00",
          "duplicate": "#1971c2",
          "random-duplicate": "#74c0fc", "insert-synthetic": "#2f9e44", "kind-random-delete": "#845ef7",
          "kind-random-duplicate": "#b197fc", "feature-delete": "#0ca678"}


@dataclass(frozen=True)
class TrackedUnit:
    """A head (``unit``) whose emergence the experiment measures under a display ``name``;
    ``metric`` (a curve key: "induction" or "prev_token", the stored name of ``previous_token``,
    :data:`track.CURVE_KEYS`) is the score that says it formed."""

    name: str
    unit: Unit
    metric: str = "induction"

    @classmethod
    def of(cls, name: str, layer: int, head: int, metric: str = "induction") -> "TrackedUnit":
        return cls(name, Unit(int(layer), int(head)), metric)

    @property
    def layer(self) -> int:
        return self.unit.layer

    @property
    def head(self) -> int:
        return self.unit.head

    @property
    def head_name(self) -> str:
        return self.unit.name.rsplit(".", 1)[0]

    def series(self, curve: dict) -> list[float]:
        return series(curve, self.metric, (self.layer, self.head))

    def to_dict(self) -> dict:
        return {"name": self.name, "head": self.head_name, "layer": self.layer, "head_index": self.head,
                "metric": self.metric}


def resolve_threshold(threshold, curves: dict, unit: TrackedUnit) -> float:
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
    peak = np.mean([np.nanmax(unit.series(c)) for c in base.values()])
    return float(s[:-1]) / 100.0 * float(peak)


def _crossings(runs: dict, unit: TrackedUnit, thr: float) -> tuple[dict, dict, int]:
    """({seed: emergence step or last step if censored}, {seed: emergence()}, censored count)."""
    em = {seed: emergence(c["steps"], unit.series(c), thr) for seed, c in runs.items()}
    cross = {s: (e["cross"] if e["cross"] is not None else float(runs[s]["steps"][-1])) for s, e in em.items()}
    return cross, em, sum(e["cross"] is None for e in em.values())


def unit_summary(curves: dict, window: tuple[int, int], unit: TrackedUnit, threshold) -> dict:
    """Per condition: emergence per seed, mean ± std, and the paired shift (% of window) vs baseline."""
    thr = resolve_threshold(threshold, curves, unit)
    width = max(1, window[1] - window[0])
    base = _crossings(curves["baseline"], unit, thr)[0] if "baseline" in curves else None
    conds = {}
    for cond, runs in curves.items():
        cross, em, censored = _crossings(runs, unit, thr)
        m, sd = mean_std(list(cross.values()))
        row = {"seeds": sorted(runs), "cross": cross, "cross_mean": m, "cross_std": sd, "censored": censored,
               "suppressed": censored == len(runs),
               "steepest": {s: e["steepest"] for s, e in em.items()},
               "final_mean": mean_std([e["final"] for e in em.values()])[0]}
        if base is not None and cond != "baseline":
            pairs = sorted(s for s in runs if s in base)
            d = [100.0 * (cross[s] - base[s]) / width for s in pairs]
            row["shift_pct"] = paired_effect(d)
            row["shift_pct_per_seed"] = dict(zip(pairs, d))
        conds[cond] = row
    return {**unit.to_dict(), "threshold": thr, "threshold_spec": str(threshold), "conditions": conds}


def _interp(curve: dict, metric: str, step: float) -> float | None:
    steps = np.asarray(curve["steps"], dtype=np.float64)
    vals = np.asarray(series(curve, metric), dtype=np.float64)
    if steps.size == 0 or step < steps[0] or step > steps[-1]:
        return None
    return float(np.interp(step, steps, vals))


def icl_summary(curves: dict, at_step: float | None, metric: str = "icl") -> dict | None:
    """ICL score (``metric``: "icl" or "icl/<set>") of every run at ``at_step``, and the paired
    change vs baseline per condition."""
    if at_step is None or "baseline" not in curves:
        return None
    base = {s: _interp(c, metric, at_step) for s, c in curves["baseline"].items()}
    out = {"step": float(at_step), "metric": metric, "conditions": {}}
    for cond, runs in curves.items():
        vals = {s: _interp(c, metric, at_step) for s, c in runs.items()}
        row = {"icl": vals, "icl_mean": mean_std(list(vals.values()))[0]}
        if cond != "baseline":
            d = [vals[s] - base[s] for s in sorted(runs) if s in base and vals[s] is not None and base[s] is not None]
            row["change"] = paired_effect(d)
        out["conditions"][cond] = row
    return out


def icl_follows_head(curves: dict, unit_summary_: dict, icl: dict | None) -> dict | None:
    """Spearman, over every run of every condition, between the unit's emergence step and the ICL
    score at the comparison step: positive = runs whose head emerged later use their context less."""
    if not icl:
        return None
    xs, ys = [], []
    for cond, runs in curves.items():
        for seed in runs:
            v = icl["conditions"][cond]["icl"].get(seed)
            if v is not None:
                xs.append(unit_summary_["conditions"][cond]["cross"][seed])
                ys.append(v)
    return {"n_runs": len(xs), **spearman_ci(xs, ys)}


def summarize(curves: dict, window: tuple[int, int], units: list[TrackedUnit], threshold=0.5) -> dict:
    """Every unit's emergence under every condition, and the ICL score at the first unit's
    baseline emergence step."""
    if not units:
        raise ConfigError("summarize needs at least one tracked unit")
    per_unit = {u.name: unit_summary(curves, window, u, threshold) for u in units}
    first = per_unit[units[0].name]["conditions"].get("baseline", {})
    at = first.get("cross_mean")
    out = {"window": list(window), "threshold": per_unit[units[0].name]["threshold"], "units": per_unit,
           "icl": icl_summary(curves, at)}
    some = next((c for runs in curves.values() for c in runs.values()), {})
    sets = sorted(k for k in some if k.startswith("icl/"))
    if sets:
        out["icl_sets"] = {k[4:]: icl_summary(curves, at, k) for k in sets}
    for icl in [out["icl"], *out.get("icl_sets", {}).values()]:
        if icl:
            icl["spearman_with_emergence"] = icl_follows_head(curves, per_unit[units[0].name], icl)
    return out


def contrasts(summary: dict, pairs) -> dict:
    """{unit: {"A - B": paired effect}}: per seed, condition A's shift minus condition B's (in % of
    the window), e.g. ("delete-top-10%", "kind-random-delete-10%"): does the ranking beat a random
    draw of the same kinds? Pairs with a missing condition are left out."""
    out = {}
    for name, u in summary["units"].items():
        conds, rows = u["conditions"], {}
        for a, b in pairs:
            sa, sb = (conds.get(c, {}).get("shift_pct_per_seed") for c in (a, b))
            if sa is None or sb is None:
                continue
            seeds = sorted(set(sa) & set(sb))
            diff = [sa[k] - sb[k] for k in seeds]
            rows[f"{a} - {b}"] = paired_effect(diff) | {"per_seed": dict(zip(seeds, diff))}
        out[name] = rows
    return out


def format_contrasts(con: dict) -> str:
    lines = ["Paired contrasts (per seed, shift A minus shift B, % of the window):"]
    for name, rows in con.items():
        for label, e in rows.items():
            lines.append(f"  {name:<16s} {label:<52s} {_fmt_effect(e)}")
    return "\n".join(lines)


def plot_curves(curves: dict, window: tuple[int, int], path, units: list[TrackedUnit], threshold: float | None = None,
                conditions: list[str] | None = None) -> Path:
    """One panel per tracked unit (+ probe and ICL): thin line per seed, thick mean per condition."""
    plt = pyplot()
    panels = [(u.name + f" {u.head_name}", lambda c, u=u: u.series(c)) for u in units]
    panels += [("probe (mean log p)", lambda c: series(c, "probe")), ("ICL score (late - early loss)",
                                                                     lambda c: series(c, "icl"))]
    conds = [c for c in (conditions or list(curves)) if c in curves]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for k, (ax, (title, get)) in enumerate(zip(axes[0], panels)):
        ax.axvspan(window[0], window[1], color="#f1f3f5", zorder=0)
        for i, cond in enumerate(conds):
            runs = curves[cond]
            col = color_of(cond)
            grid = np.arange(window[0], max(c["steps"][-1] for c in runs.values()) + 1)
            ys = []
            for c in runs.values():
                y = np.asarray(get(c), dtype=np.float64)
                ax.plot(c["steps"], y, color=col, alpha=0.2, lw=0.7)
                ys.append(np.interp(grid, c["steps"], y, right=np.nan))
            ax.plot(grid, np.nanmean(np.asarray(ys), axis=0), color=col, lw=2, label=f"{cond} ({len(runs)})")
        if k < len(units) and threshold is not None:
            ax.axhline(threshold, color="#868e96", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0][0].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_effects(summary: dict, path) -> Path:
    """Forest plot: each condition's emergence shift (% of the window) with its 95% interval, per unit."""
    plt = pyplot()
    units = list(summary["units"].items())
    conds = [c for c in next(iter(summary["units"].values()))["conditions"] if c != "baseline"]
    fig, axes = plt.subplots(1, len(units), figsize=(4.6 * len(units), 0.32 * len(conds) + 1.2), squeeze=False,
                             sharey=True)
    for ax, (name, u) in zip(axes[0], units):
        for i, cond in enumerate(conds):
            e = u["conditions"][cond].get("shift_pct") or {}
            if e.get("mean") is None:
                continue
            lo, hi = e["ci95"] if e["ci95"][0] is not None else (e["mean"], e["mean"])
            col = color_of(cond)
            ax.plot([lo, hi], [i, i], color=col, lw=2)
            ax.plot([e["mean"]], [i], "o", color=col)
            if e.get("p") is not None and e["p"] < 0.05:
                ax.text(hi, i, "  *", va="center", fontsize=8)
        ax.axvline(0, color="#868e96", lw=0.8)
        ax.set_yticks(range(len(conds)), conds, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("emergence shift, % of the window (95% CI)")
        ax.set_title(f"{name} {u['head']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def color_of(cond: str) -> str:
    """Plot colour of a condition from its plan kind (the longest kind its name starts with)."""
    hits = [k for k in COLORS if cond.startswith(k)]
    return COLORS[max(hits, key=len)] if hits else "#495057"


def _fmt_effect(e: dict | None, unit: str = "%", nd: int = 1) -> str:
    if not e or e.get("mean") is None:
        return "-"
    lo, hi = e["ci95"]
    ci = f" [{lo:+.{nd}f}, {hi:+.{nd}f}]" if lo is not None else ""
    p = f" p={e['p']:.3f}" if e.get("p") is not None else ""
    return f"{e['mean']:+.{nd}f}{unit}{ci}{p}"


def format_summary(summary: dict) -> str:
    """Plain-text tables: per unit, each condition's emergence and shift (mean [95% CI] p)."""
    lines = []
    for name, u in summary["units"].items():
        lines.append(f"{name} {u['head']} ({u['metric']} >= {u['threshold']:.2f}), window "
                     f"{summary['window'][0]}-{summary['window'][1]}: emergence step, shift in % of the window "
                     "(mean [95% Student-t CI over seeds], sign-flip p)")
        for cond, r in u["conditions"].items():
            cens = f"  ({r['censored']}/{len(r['seeds'])} never crossed)" if r["censored"] else ""
            em = f"{r['cross_mean']:.1f} ± {r['cross_std'] or 0:.1f}" if r["cross_mean"] is not None else "-"
            lines.append(f"  {cond:<30s} {em:>16s}   {_fmt_effect(r.get('shift_pct')) if cond != 'baseline' else ''}{cens}")
    sets = summary.get("icl_sets") or ({"held-out rows": summary["icl"]} if summary.get("icl") else {})
    for name, icl in sets.items():
        if not icl:
            continue
        rho = icl.get("spearman_with_emergence") or {}
        follows = (f"; Spearman with the emergence step over {rho['n_runs']} runs {rho['rho']:+.2f} "
                   f"[{rho['ci95'][0]:+.2f}, {rho['ci95'][1]:+.2f}]") if rho.get("rho") is not None else ""
        lines.append(f"ICL score on {name} at step {icl['step']:.0f} (late - early loss; negative = uses context{follows}), "
                     f"change vs baseline (baseline {icl['conditions']['baseline']['icl_mean']:+.3f}):")
        for cond, r in icl["conditions"].items():
            if cond != "baseline":
                lines.append(f"  {cond:<30s} {_fmt_effect(r.get('change'), unit='', nd=3):>16s}")
    return "\n".join(lines)
