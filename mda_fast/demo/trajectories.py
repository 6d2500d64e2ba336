"""The demo over several trajectories: ``mda demo --trajectories 0,1,2 --experiment``.

One seed's demo is one training trajectory (its own model init, corpus draw, induction head and
formation window), and the experiment's seeds only reshuffle rows inside that trajectory's window.
A claim about attribution should hold across trajectories, so this runs the demo (and, with
``experiment``, the experiment) once per seed ``s`` into ``<out>/seed<s>`` with ``model_seed =
corpus_seed = s``, then pools: for every condition and every contrast of the experiment, the
per-trajectory effect and the pooled effect over all runs of all trajectories (paired differences,
so each run is compared with its own baseline). Written to ``<out>/trajectories.json``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mda_fast.demo.experiment import machine, run_demo_experiment
from mda_fast.demo.pipeline import run_demo
from mda_fast.intervene.stats import paired_effect
from mda_fast.intervene.summary import _fmt_effect
from mda_fast.io import write_json


def pool(summaries: dict) -> dict:
    """{"conditions": {unit: {cond: {"pooled", "per_trajectory"}}}, "contrasts": {...}} over
    ``summaries`` ({seed: experiment summary}); a condition missing in a trajectory is left out there."""
    out = {"conditions": {}, "contrasts": {}}
    for seed, s in summaries.items():
        for unit, u in s["units"].items():
            for cond, row in u["conditions"].items():
                if "shift_pct_per_seed" in row:
                    _add(out["conditions"], unit, cond, seed, list(row["shift_pct_per_seed"].values()))
        for unit, rows in s.get("contrasts", {}).items():
            for label, e in rows.items():
                _add(out["contrasts"], unit, label, seed, list(e["per_seed"].values()))
    for table in out.values():
        for rows in table.values():
            for entry in rows.values():
                runs = [x for xs in entry["runs"].values() for x in xs]
                entry["pooled"] = paired_effect(runs)
                entry["per_trajectory"] = {k: paired_effect(v) for k, v in entry.pop("runs").items()}
    return out


def _add(table: dict, unit: str, key: str, seed, values: list) -> None:
    table.setdefault(unit, {}).setdefault(key, {"runs": {}})["runs"][str(seed)] = values


def format_pooled(pooled: dict, keys=None) -> str:
    lines = ["Across trajectories (shift in % of each trajectory's window; pooled over all runs):"]
    for what in ("conditions", "contrasts"):
        for unit, rows in pooled[what].items():
            for key, e in rows.items():
                if keys is None or key in keys:
                    per = ", ".join(f"seed {t}: {_fmt_effect(v)}" for t, v in e["per_trajectory"].items())
                    lines.append(f"  {unit:<15s} {key:<50s} pooled {_fmt_effect(e['pooled'])}   ({per})")
    return "\n".join(lines)


def run_trajectories(out, cfg, trajectory_seeds, experiment: bool = False, top_k: int = 8, progress: bool = True, log=print,
                     **experiment_options) -> dict:
    """The demo (and the experiment, ``experiment_options`` as :func:`run_demo_experiment` takes them)
    for each of ``trajectory_seeds``, then the pooled table."""
    out = Path(out)
    demos, summaries = {}, {}
    for s in trajectory_seeds:
        where = out / f"seed{s}"
        log(f"=== trajectory {s}: model and corpus seed {s} -> {where}")
        demo = run_demo(where, replace(cfg, model_seed=s, corpus_seed=s), top_k=top_k, progress=progress, log=log)
        demos[str(s)] = {k: demo.get(k) for k in ("unit", "window", "formation_step", "formed",
                                                  "top10_share_of_positive_influence")}
        if experiment and demo.get("formed"):
            summaries[str(s)] = run_demo_experiment(where, log=log, **experiment_options)
    result = {"seeds": [int(s) for s in trajectory_seeds], "demos": demos, "machine": machine()}
    if summaries:
        result["pooled"] = pool(summaries)
        log(format_pooled(result["pooled"]))
    write_json(out / "trajectories.json", result)
    return result
