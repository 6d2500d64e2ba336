"""Issue 20's table from the phases' results (``oracle_table.py``): per-attributor LDS rows,
deletion effects, agreement with the oracle, costs; as JSON and as markdown."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from oracle_setup import PROBE, UNIT


def lds_rows(results: dict) -> dict:
    """{attributor: {removed share: {probe/head: {exact, exact_ci95, mean, ci95, n}}}} and the noise
    ceilings: "exact" is the original row order (the order every attributor and the oracle saw;
    deterministic retraining, no noise), "mean" the mean change over row-order seeds 0 and 1,
    "other_order" row-order seed 1 alone (rows permuted within blocks of 8 steps)."""
    rows, ceiling, counts = {}, {}, {}
    for key, res in results.items():
        if "seeds" in res:
            nc = res["seeds"]["targets"][0]["noise_ceiling"]
            ceiling[key] = {k: nc[k]["r_between_seeds"] for k in ("probe", "head")}
        counts[key] = {k: r["n_subsets"] for k, r in res.items()}
        for kind, r in res.items():
            for name, a in r["targets"][0]["attributors"].items():
                cell = rows.setdefault(name, {}).setdefault(key, {"probe": {}, "head": {}})
                for k in ("probe", "head"):
                    tag = "exact" if kind == "exact" else "mean"
                    cell[k][tag], cell[k][f"{tag}_ci95"] = a[f"lds_{k}"]["rho"], a[f"lds_{k}"]["ci95"]
                    if kind == "seeds":          # another row order than the one the attributors saw
                        cell[k]["other_order"] = a["per_seed"].get("1", {}).get(f"lds_{k}")
    return {"attributors": rows, "noise_ceiling": ceiling, "subsets": counts}


def deletion_rows(dele: dict, names) -> dict:
    """Per attributor: emergence shift (% of the window) and end-of-window score change of its top
    10%, of random rows of the top set's kinds, and of its most negative 10%; seed by seed."""
    cond = dele["summary"]["units"]["induction"]["conditions"]
    end = dele["end_score"]
    base = end["baseline"]

    def cell(c):
        sp = cond.get(c, {}).get("shift_pct") or {}
        d = [end[c][s] - base[s] for s in base if end[c].get(s) is not None and base[s] is not None]
        return {"shift_pct": sp.get("mean"), "shift_ci95": sp.get("ci95"), "end_change": float(np.mean(d)),
                "end_change_per_seed": d, "censored": cond.get(c, {}).get("censored")}
    out = {"random-10%": cell("random-10%")}
    for n in [n for n in names if f"top-{n}" in dele["plans"]]:
        out[n] = {"top": cell(f"top-{n}"), "kind_random": cell(f"kind-{n}"), "negative": cell(f"neg-{n}"),
                  "top_kinds": dele["plans"][f"kind-{n}"].get("composition")}
    return out


def table(window, scores: dict, costs: dict, lds_res: dict, dele: dict | None) -> dict:
    """The whole table: ``window`` (a, b), ``scores`` {attributor: [rows]}, ``costs`` (seconds, with
    "train" and "mda"), ``lds_res`` from ``oracle_table.lds``, ``dele`` from ``oracle_table.deletions``."""
    names = list(scores)
    res = {"window": list(window), "unit": UNIT, "probe": PROBE, "costs_seconds": costs,
           "rows": int(len(next(iter(scores.values())))),
           "cost_x_train": {n: costs[n] / costs["train"] for n in names if isinstance(costs.get(n), float)},
           "cost_x_mda": {n: costs[n] / costs["mda"] for n in names if isinstance(costs.get(n), float)},
           "seeds_lds": [0, 1],
           "spearman_vs_oracle": {n: {o: float(spearmanr(scores[n], scores[o])[0]) for o in ("oracle_probe", "oracle_head")}
                                  for n in names},
           "lds": lds_rows(lds_res)}
    if dele is not None:
        res["deletions"] = deletion_rows(dele, names)
    return res


def _f(x, fmt="{:+.2f}"):
    return "-" if x is None else fmt.format(x)


def markdown(res: dict) -> str:
    """The table as markdown: LDS (seed 0 = the oracle's row order, exact; seed mean with its 95%
    interval), the top / kind-matched / negative deletions, agreement with the oracle, costs."""
    lds, names = res["lds"], list(res["lds"]["attributors"])
    shares = sorted(lds["subsets"], key=float)
    seeded = [k for k in shares if k in lds["noise_ceiling"]]

    def ci(c, tag):
        if c.get(tag) is None:
            return "-"
        lo, hi = c[f"{tag}_ci95"]
        return f"{_f(c[tag])} [{_f(lo)}, {_f(hi)}]"
    out = [f"### Window {res['window'][0]}-{res['window'][1]} ({res['rows']} rows), {res['unit']} / {res['probe']}", ""]
    for what, label in (("probe", "the probe (copy_target) change"), ("head", "the head's induction-score change")):
        out += [f"LDS against {label}, original row order (exact retraining; the order every attributor saw), "
                "Spearman [95% bootstrap interval] over " + ", ".join(
                    f"{float(k):.0%}: {lds['subsets'][k].get('exact')}" for k in shares) + " subsets:", "",
                "| attributor | " + " | ".join(f"{float(k):.0%} removed" for k in shares) + " |",
                "|---|" + "---|" * len(shares)]
        out += [f"| {n} | " + " | ".join(ci(lds["attributors"][n][k][what], "exact") for k in shares) + " |"
                for n in names]
        out.append("")
    out += ["Row order: LDS against the probe change averaged over row-order seeds 0 and 1 (seed 1 permutes the "
            "rows within blocks of 8 steps; " + ", ".join(f"{float(k):.0%}: {lds['subsets'][k]['seeds']}"
                                                          for k in seeded) + " subsets), and against seed 1 alone:", "",
            "| attributor | " + " | ".join(f"{float(k):.0%}: seed mean | seed 1" for k in seeded) + " |",
            "|---|" + "---|---|" * len(seeded)]
    out += [f"| {n} | " + " | ".join(f"{ci(lds['attributors'][n][k]['probe'], 'mean')} | "
                                     f"{_f(lds['attributors'][n][k]['probe'].get('other_order'))}" for k in seeded) + " |"
            for n in names]
    out.append("| noise ceiling: seed-vs-seed r (probe) | " + " | ".join(
        f"{_f(lds['noise_ceiling'][k]['probe'])} | " for k in seeded) + " |")
    if "deletions" in res:
        d = res["deletions"]
        out += ["", "Deleting 10% of the window (emergence shift, % of the window, mean [95% CI] over seeds; "
                "change of the induction score at the window's end):", "",
                "| attributor | top 10% | random rows of the top's kinds | most negative 10% | top 10% kinds |",
                "|---|---|---|---|---|"]

        def cell(c):
            ci = c["shift_ci95"] or [None, None]
            sp, end = _f(c["shift_pct"], "{:+.1f}"), _f(c["end_change"], "{:+.3f}")
            return f"{sp}% [{_f(ci[0], '{:+.1f}')}, {_f(ci[1], '{:+.1f}')}]; {end}"
        for n in names:
            if n in d:
                out.append(f"| {n} | {cell(d[n]['top'])} | {cell(d[n]['kind_random'])} | {cell(d[n]['negative'])} | "
                           f"{d[n]['top_kinds']} |")
        out.append(f"| (uniform random 10%) | {cell(d['random-10%'])} | | | |")
    out += ["", "| attributor | Spearman with oracle (probe) | with oracle (head) | seconds | x training | x MDA |",
            "|---|---|---|---|---|---|"]
    for n in names:
        sp = res["spearman_vs_oracle"][n]
        sec = res["costs_seconds"].get(n)
        out.append(f"| {n} | {_f(sp['oracle_probe'])} | {_f(sp['oracle_head'])} | {_f(sec, '{:.0f}')} | "
                   f"{_f(res['cost_x_train'].get(n), '{:.1f}')} | {_f(res['cost_x_mda'].get(n), '{:.1f}')} |")
    out.append(f"| (training the window) | | | {res['costs_seconds']['train']:.0f} | 1.0 | |")
    return "\n".join(out) + "\n"
