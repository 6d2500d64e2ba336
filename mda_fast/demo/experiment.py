"""The demo's causal experiment in one call: ``mda demo --experiment``.

    from mda_fast.demo.experiment import run_demo_experiment
    run_demo_experiment("demo_out")          # after (or including) run_demo("demo_out")

On the demo's induction head and its previous-token head, over the induction head's formation
window [a, b), retrained from the checkpoint at a to b + ``margin`` (b - a) (each run stops once
both heads have emerged), for every row-order seed (0 = the original order):

- ``baseline``;
- ``delete-top-10%`` (the induction head's copy-target scores) against three controls of the same
  count: ``random-delete-10%`` (uniform), ``kind-random-delete-10%`` (random rows of the top rows'
  kinds, same proportions: does the ranking beat the kind?) and ``feature-delete-10%`` (the top 10%
  by :data:`FEATURE`, a ranking a user could write without MDA);
- ``delete-negative-10%`` (the most negative rows); ``duplicate-top-10%`` against
  ``kind-random-duplicate-10%`` (copies in place of random other rows of the window);
- ``delete-top-10%-prev`` against ``kind-random-delete-10%-prev``: the previous-token head's own probe;
- ``delete-stratum-<name>``: as many rows of one driving stratum (the corpus's planted strength),
  the same count for each stratum: the ground truth a ranking should recover;
- ``long``: the dose response (K in :data:`DOSES`, each with its three controls), uniform
  ``random-duplicate-10%``, ``insert-synthetic`` (fresh tiled rows inserted mid-window), and the
  previous-token head's negative and duplicate conditions.

Both heads are tracked in every run, so every condition is reported for both units; ``contrasts``
pairs conditions seed by seed (:data:`CONTRASTS`); ``ranking`` says what each ranking (EK-FAC,
gradient dot product, the feature) puts in its top 10%, by kind and stratum. Then the LDS check
(:mod:`mda_fast.intervene.lds`): random subsets of the window, each retrained to b under every
row-order seed of ``lds_seeds`` (the noise ceiling), the measured change of each probe and head
score against the change predicted by the EK-FAC scores and by plain gradient dot products. Output
in ``<demo>/experiment/``: ``summary.json``, ``curves.png``, ``effects.png``, ``dose.png``
(``long``), ``report.html``, ``lds-keep<fraction>/lds.json``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from mda_fast.data import MMIdxSource
from mda_fast.demo.config import DemoConfig
from mda_fast.demo.corpus import load_row_kinds, load_row_strata
from mda_fast.demo.pipeline import column, demo_pipeline
from mda_fast.demo.train_demo import corpus_prefix
from mda_fast.errors import ConfigError
from mda_fast.intervene.augment import write_synthetic
from mda_fast.intervene.experiment import prepare_experiment, run_conditions, summarize, write_outputs
from mda_fast.intervene.lds import Attributor, LdsTarget, format_lds, run_lds
from mda_fast.intervene.plans import window_rows
from mda_fast.intervene.report import write_report
from mda_fast.intervene.rowlabels import window_labels
from mda_fast.intervene.stats import rankdata
from mda_fast.intervene.summary import (
    TrackedUnit,
    contrasts,
    format_contrasts,
    format_summary,
    plot_curves,
    plot_effects,
)
from mda_fast.intervene.track import curve_key
from mda_fast.io import pyplot, save_figure, write_json
from mda_fast.probes import make_data, parse_probe
from mda_fast.vocab import resolve_count

DOSES = ("2.5", "5", "10", "20")
LDS_FRACTIONS = (0.9,)                    # kept share: 10% of the window removed (--long: 50%, 10%, 2%)
LDS_FRACTIONS_LONG = (0.5, 0.9, 0.98)
FEATURE = "copy_share"                    # the feature baseline (mda_fast.intervene.rowlabels)


def demo_plans(ind_col: str, prev_col: str | None, synthetic: str, strata=(), stratum_count: int | None = None,
               long: bool = False) -> list[str]:
    """The experiment's conditions as plan specs (see the module doc). By default the 10% conditions
    that separate the ranking from the row kind; ``long`` adds the dose response, the uniform random
    duplicate, the synthetic insertion and the previous-token head's negative and duplicate conditions."""
    plans = ["baseline"]
    for k in (DOSES if long else ("10",)):
        plans += [f"delete:top={k}%,column={ind_col},name=delete-top-{k}%",
                  f"random-delete:top={k}%,column={ind_col},name=random-delete-{k}%",
                  f"kind-random-delete:top={k}%,column={ind_col},name=kind-random-delete-{k}%",
                  f"delete:top={k}%,column=feature:{FEATURE},name=feature-delete-{k}%"]
    plans += [f"delete:top=10%,tail=negative,column={ind_col},name=delete-negative-10%",
              f"duplicate:top=10%,replace=random,column={ind_col},name=duplicate-top-10%",
              f"kind-random-duplicate:top=10%,replace=random,column={ind_col},name=kind-random-duplicate-10%"]
    if long:
        plans += [f"random-duplicate:top=10%,replace=random,column={ind_col},name=random-duplicate-10%",
                  f"insert-synthetic:path={synthetic},column={ind_col},name=insert-synthetic"]
    if prev_col:
        plans += [f"delete:top=10%,column={prev_col},name=delete-top-10%-prev",
                  f"kind-random-delete:top=10%,column={prev_col},name=kind-random-delete-10%-prev"]
        if long:
            plans += [f"delete:top=10%,tail=negative,column={prev_col},name=delete-negative-10%-prev",
                      f"duplicate:top=10%,replace=random,column={prev_col},name=duplicate-top-10%-prev"]
    if len(strata) > 1 and stratum_count:
        plans += [f"random-delete:top={stratum_count},among=stratum:{st},column={ind_col},name=delete-stratum-{st}"
                  for st in strata]
    return plans


MAIN_CONDITIONS = ("baseline", "delete-top-10%", "random-delete-10%", "kind-random-delete-10%", "feature-delete-10%",
                   "delete-negative-10%", "duplicate-top-10%", "kind-random-duplicate-10%")
CONTRASTS = (("delete-top-10%", "kind-random-delete-10%"), ("delete-top-10%", "feature-delete-10%"),
             ("feature-delete-10%", "kind-random-delete-10%"), ("duplicate-top-10%", "kind-random-duplicate-10%"),
             ("delete-top-10%-prev", "kind-random-delete-10%-prev"),
             ("delete-top-10%", "random-delete-10%"), ("delete-negative-10%", "kind-random-delete-10%"))


def dose_table(summary: dict) -> dict:
    """{unit: [{"k", "delete_top", "random_delete"}]} shifts (paired effects) by dose."""
    out = {}
    for name, u in summary["units"].items():
        rows = []
        for k in DOSES:
            c = u["conditions"]
            rows.append({"k": float(k), "delete_top": c.get(f"delete-top-{k}%", {}).get("shift_pct"),
                         "random_delete": c.get(f"random-delete-{k}%", {}).get("shift_pct"),
                         "kind_random_delete": c.get(f"kind-random-delete-{k}%", {}).get("shift_pct"),
                         "feature_delete": c.get(f"feature-delete-{k}%", {}).get("shift_pct")})
        out[name] = rows
    return out


def plot_dose(dose: dict, path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(dose), figsize=(4.4 * len(dose), 3.4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], dose.items()):
        for key, col, label in (("delete_top", "#d9480f", "delete top k"), ("random_delete", "#f59f00", "random delete k"),
                                ("kind_random_delete", "#845ef7", "random rows of the top kinds"),
                                ("feature_delete", "#0ca678", f"top k by {FEATURE}")):
            ks = [r["k"] for r in rows if r.get(key) and r[key]["mean"] is not None]
            m = [r[key]["mean"] for r in rows if r.get(key) and r[key]["mean"] is not None]
            lo = [r[key]["mean"] - r[key]["ci95"][0] for r in rows if r.get(key) and r[key]["ci95"][0] is not None]
            hi = [r[key]["ci95"][1] - r[key]["mean"] for r in rows if r.get(key) and r[key]["ci95"][1] is not None]
            if ks:
                ax.errorbar(ks, m, yerr=[lo, hi] if len(lo) == len(ks) else None, color=col, marker="o",
                            capsize=3, label=label)
        ax.axhline(0, color="#868e96", lw=0.8)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([float(k) for k in DOSES], [f"{k}%" for k in DOSES])
        ax.set_xlabel("rows removed (% of the window)")
        ax.set_ylabel("emergence shift (% of the window)")
        ax.set_title(f"{name}: dose response (95% CI)")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def heldout_sets(source, row_kind: np.ndarray, kinds: list[str], start: int, n: int) -> dict:
    """Held-out rows (never trained on: positions >= ``start``) for the ICL score: ``mix``, the last
    ``n`` rows of the corpus (the training distribution, driving rows included), and ``natural``,
    the last ``n`` whose dominant kind is code or prose (ordinary text, as the paper's WikiText-2).
    A set with fewer than 8 rows available is left out."""
    natural = [kinds.index(k) for k in ("code", "prose") if k in kinds]
    pick = {"mix": np.arange(len(row_kind)), "natural": np.flatnonzero(np.isin(row_kind, natural))}
    out = {}
    for name, pos in pick.items():
        pos = pos[pos >= start][-n:]
        if pos.size >= min(n, 8):
            out[name] = torch.as_tensor(source.read(pos), dtype=torch.long)
    return out


def graddot_scores(demo_dir: Path, cfg, info: dict, window, columns: list[str]):
    """Gradient-dot-product scores (no curvature: ``preconditioner="identity"``) of the demo's units
    over the window, for the LDS baseline, into ``<demo>/mda_graddot`` (resumable)."""
    units = list(dict.fromkeys(c.split("/")[0] for c in columns))
    p = demo_pipeline(demo_dir, cfg, info, window, progress=False, log=None, run="mda_graddot", units=units,
                      preconditioner="identity")
    return p.score(factors=str(demo_dir / "mda" / "factors"))


def demo_units_tracked(info: dict) -> tuple[list, list[str]]:
    """(TrackedUnit per demo unit, its scores column), induction head first."""
    units = [TrackedUnit.of("induction" if u["metric"] == "induction" else "previous-token", int(u["layer"]),
                         int(u["head"]), curve_key(u["metric"]))
             for u in info["units"]]
    return units, [column(u) for u in info["units"]]


def stratum_count(prefix: Path, window, rows_per_step: int) -> tuple[list[str], int]:
    """(driving strata names, rows deleted per stratum condition): 10% of the window or the smallest
    stratum's rows in it, so every stratum loses the same number of rows."""
    strata, row_stratum = load_row_strata(prefix)
    per = np.bincount(row_stratum[window_rows(window, rows_per_step)] + 1, minlength=len(strata) + 1)[1:]
    n_win = (window[1] - window[0]) * rows_per_step
    return [st["name"] for st in strata], int(min([resolve_count("10%", n_win)] + per.tolist()))


def prepare(demo_dir: Path, seeds: int, margin: float, cadence: int, long: bool, conditions=None):
    """(Experiment, demo config, training summary) of the demo's experiment, every plan resolved;
    ``conditions``: only the conditions of these names (the baseline always)."""
    info = json.loads((demo_dir / "induction.json").read_text())
    demo = json.loads((demo_dir / "demo.json").read_text())
    cfg = DemoConfig(**{k: v for k, v in info["config"].items() if k in DemoConfig.__dataclass_fields__})
    if not demo.get("formed"):
        raise ConfigError(f"the demo run in {demo_dir} formed no head (no formation window) to experiment on")
    a, b = (int(x) for x in demo["window"])
    units, cols = demo_units_tracked(info)
    source = MMIdxSource(corpus_prefix(demo_dir), seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    end = min(b + int(round(margin * (b - a))), len(source) // cfg.rows_per_step)
    synthetic = demo_dir / "experiment" / "synthetic"
    if not Path(str(synthetic) + ".idx").is_file():
        write_synthetic(synthetic, resolve_count("10%", (b - a) * cfg.rows_per_step), cfg.seq_len, seed=0,
                        kinds=("tiled",))
    strata, per_stratum = stratum_count(corpus_prefix(demo_dir), (a, b), cfg.rows_per_step)
    plans = demo_plans(cols[0], cols[1] if len(cols) > 1 else None, str(synthetic), strata, per_stratum, long)
    if conditions:
        names = {p: p.rpartition("name=")[2] for p in plans}
        unknown = sorted(set(conditions) - set(names.values()))
        if unknown:
            raise ConfigError(f"unknown experiment conditions {unknown}; this demo has {sorted(names.values())}")
        plans = [p for p in plans if p == "baseline" or names[p] in conditions]
    kinds, row_kind = load_row_kinds(corpus_prefix(demo_dir))
    held = heldout_sets(source, row_kind, kinds, cfg.rows_per_step * end, 64)
    exp = prepare_experiment(demo_dir / "experiment", demo_dir / "checkpoints", source, demo_dir / "mda" / "scores",
                             (a, b), plans, range(seeds), units=units, cadence=cadence, end_step=end,
                             threshold=cfg.formation_high, probe_n=cfg.probe_n, probe_len=cfg.probe_len,
                             probe_range=(cfg.probe_low, cfg.probe_high), heldout=held or 32)
    return exp, cfg, info


def lds_check(demo_dir: Path, exp, cfg, info: dict, subsets: int, jobs: int, log, fraction: float = 0.5,
              seeds=(0, 1), gd=None) -> dict:
    """LDS of the EK-FAC scores and of gradient dot products for each demo unit and its probe, on the
    same retrained random subsets of the window, each keeping ``fraction`` of its rows and retrained
    under every row-order seed of ``seeds`` (into ``experiment/lds`` for half subsets,
    ``experiment/lds-keep<fraction>`` otherwise); returns the summary entry."""
    units, cols = demo_units_tracked(info)
    gd = gd or graddot_scores(demo_dir, cfg, info, exp.window, cols)
    st = exp.table.manifest["settings_score"]          # the probe data the scores were computed with
    tokens = make_data(st["probe_n"], st["probe_seq_len"], st["probe_vocab_low"], st["probe_vocab_high"],
                       st["probe_seed"])
    targets = [LdsTarget(u, parse_probe(uinfo["probe"]), tokens,
                         [Attributor("EK-FAC (MDA)", exp.table.row_ids, exp.table.column(col)),
                          Attributor("gradient dot product", gd.row_ids, gd.column(col))])
               for u, uinfo, col in zip(units, info["units"], cols)]
    where = demo_dir / "experiment" / ("lds" if fraction == 0.5 else f"lds-keep{fraction:g}")
    log(f"[experiment] LDS: {subsets} random subsets keeping {fraction:g} of the window, retrained to step "
        f"{exp.window[1]}")
    lds = run_lds(where, exp.shared, exp.window, cfg.rows_per_step, targets, n_subsets=subsets, fraction=fraction,
                  jobs=jobs, log=log, seeds=seeds)
    log(format_lds(lds))
    return {"path": str(where / "lds.json"), "fraction_kept": fraction, "fraction_removed": 1.0 - fraction,
            "n_subsets": subsets, "seeds": list(seeds), "runs": lds["runs"], "run_seconds": lds["run_seconds"],
            "targets": [{k: t[k] for k in ("unit", "probe", "noise_ceiling")} |
                        {"attributors": {n: {"lds_probe": r["lds_probe"], "lds_head": r["lds_head"],
                                             "per_seed": r["per_seed"]}
                                         for n, r in t["attributors"].items()}} for t in lds["targets"]]}


def ranking_report(labels, attributors: dict, share: float = 0.1) -> dict:
    """What each ranking puts in its top ``share``: per label of every labeling (kind, stratum), the
    share of the top set against the share of the window, and the label's mean percentile rank
    (1 = the top row). ``attributors``: {name: (row ids [N], values [N])}."""
    out = {}
    for name, (rid, vals) in attributors.items():
        pos = labels.positions(rid)
        pct = rankdata(vals) / len(vals)                              # 1 = largest value
        top = pct > 1 - share
        rep = {}
        for lname, lab in labels.labelings.items():
            idx = lab.index[pos]
            rep[lname] = {lab.names[k]: {"window": float(np.mean(idx == k)), "top": float(np.mean(idx[top] == k)),
                                         "mean_percentile": float(pct[idx == k].mean())}
                          for k in np.unique(idx) if k >= 0}
        out[name] = rep
    return out


def format_ranking(rep: dict, labeling: str = "stratum") -> str:
    lines = [f"Top 10% of each ranking by {labeling} (share of the top 10% / of the window; mean percentile rank):"]
    for name, r in rep.items():
        cells = [f"{k} {v['top']:.0%}/{v['window']:.0%} ({v['mean_percentile']:.2f})" for k, v in r.get(labeling, {}).items()]
        lines.append(f"  {name:<26s} " + ", ".join(cells))
    return "\n".join(lines)


def run_demo_experiment(demo_dir, seeds: int = 6, jobs: int = 2, margin: float = 1.0, cadence: int = 5,
                        lds_subsets: int = 16, long: bool = False, log=print, lds_fractions=LDS_FRACTIONS,
                        lds_seeds: int = 2, conditions=None) -> dict:
    """Run (or resume) the experiment on a finished demo in ``demo_dir``; returns the summary.
    ``long`` adds the dose response and more conditions; ``lds_fractions``: the kept share of each
    LDS check; ``lds_seeds``: row-order seeds per LDS subset (>= 2 gives the noise ceiling);
    ``conditions``: run only these conditions (names as in summary.json; the baseline always)."""
    demo_dir = Path(demo_dir)
    exp, cfg, info = prepare(demo_dir, seeds, margin, cadence, long, conditions)
    out = exp.out
    log(f"[experiment] {len(exp.specs)} conditions x {seeds} seeds on "
        f"{', '.join(u.name + ' ' + u.head_name for u in exp.units)}, window {exp.window[0]}-{exp.window[1]}, "
        f"retrained up to step {exp.end_step} ({jobs} worker processes)")
    curves = run_conditions(exp, jobs=jobs, log=log)
    summary = summarize(exp, curves)
    if long:
        summary["dose"] = dose_table(summary)
    summary["contrasts"] = contrasts(summary, CONTRASTS)
    write_outputs(exp, curves, summary, report=False)
    plot_curves(curves, exp.window, out / "curves.png", exp.units, summary["threshold"], conditions=list(MAIN_CONDITIONS))
    if long:
        plot_dose(summary["dose"], out / "dose.png")
    plot_effects(summary, out / "effects.png")
    log(format_summary(summary))
    log(format_contrasts(summary["contrasts"]))
    units, cols = demo_units_tracked(info)
    gd = graddot_scores(demo_dir, cfg, info, exp.window, cols)
    labels = window_labels(exp.source, exp.window, cfg.rows_per_step, cfg.vocab_size, features=(FEATURE,))
    summary["ranking"] = ranking_report(labels, {
        "EK-FAC (MDA)": (exp.table.row_ids, exp.table.column(cols[0])),
        "gradient dot product": (gd.row_ids, gd.column(cols[0])),
        f"feature {FEATURE}": (labels.row_ids, labels.feature(FEATURE))})
    log(format_ranking(summary["ranking"], "stratum" if "stratum" in labels.labelings else "kind"))
    if lds_subsets:
        summary["lds_by_fraction"] = [lds_check(demo_dir, exp, cfg, info, lds_subsets, jobs, log, f,
                                                seeds=tuple(range(lds_seeds)), gd=gd) for f in lds_fractions]
    summary["machine"] = machine()
    write_json(out / "summary.json", summary)
    write_report(out, scores=exp.table, source=exp.source)
    return summary


def machine() -> dict:
    """The machine a result was measured on (the demo's trajectory depends on the CPU and threads)."""
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines()
             if ln.startswith("model name")] if info.is_file() else []
    return {"cpu": names[0] if names else platform.processor(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
