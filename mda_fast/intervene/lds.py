"""Linear datamodeling score (LDS): do the scores predict what retraining does?

``n_subsets`` random subsets of the window's rows, each keeping ``fraction`` of them (seeded), are
retrained from the window's first checkpoint through the window with the other rows deleted
(masked loss, as the delete plans do); one more run keeps every row (the reference). At the
window's end each run measures

- the probe exactly as it was attributed (``probes.probe_forward`` on the scores' probe data,
  averaged over the probe set): the f in I(z) = -grad L(z)^T H^-1 grad f;
- the tracked head's score (``induction`` or ``prev_token``).

An attributor with scores s(z) predicts subset m's change as -sum of s over the rows it removed (a
removed row that strengthens f lowers it). LDS = Spearman(measured, predicted) over the subsets
(TRAK, Park et al. 2023; dattri), with a bootstrap interval over subsets. Comparing attributors on
the same retrained subsets isolates what each adds, e.g. EK-FAC against a plain gradient dot
product (``Settings(preconditioner="identity")``).

Retraining noise. Each subset (and the full reference) is retrained under every row-order seed of
``seeds`` (seed 0 = the original order, k > 0 = rows permuted within blocks of steps, as in the
experiment); a change is measured against the full run of the same seed, and LDS is taken against
the seed-averaged change. The **noise ceiling** is the Spearman correlation between two seeds'
measured changes over the same subsets (mean over seed pairs), r: how far retraining reproduces
itself. By the Spearman-Brown formula the mean of k seeds has reliability R = k r / (1 + (k - 1) r),
and no attributor's correlation with it can be expected above sqrt(R) (classical test theory,
exact for Pearson correlations of linear-Gaussian noise, approximate for Spearman).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.fingerprint import inputs_fingerprint, run_fingerprint
from mda_fast.intervene.plans import Plan, window_rows
from mda_fast.intervene.runner import RunShared, RunTask, run_tasks
from mda_fast.intervene.stats import spearman, spearman_ci
from mda_fast.intervene.summary import TrackedUnit
from mda_fast.io import write_json
from mda_fast.lock import claim


@dataclass
class Attributor:
    """Scores of one attributor over the window: row ids [N] and their scores [N]."""

    name: str
    row_ids: np.ndarray
    scores: np.ndarray

    def removed_sum(self, removed: np.ndarray) -> float:
        return float(self.scores[np.isin(self.row_ids, removed)].sum())


def subsets(window: tuple[int, int], rows_per_step: int, n: int, fraction: float, seed: int) -> list[np.ndarray]:
    """``n`` arrays of removed row ids, each the complement of a uniform ``fraction`` of the window."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"LDS subset fraction must be in (0, 1), got {fraction}")
    if n < 3:
        raise ConfigError(f"LDS needs at least 3 subsets for a rank correlation, got {n}")
    rows = window_rows(window, rows_per_step)
    keep = int(round(fraction * rows.size))
    out = []
    for m in range(n):
        rng = np.random.default_rng([seed, m, 0x1D5])
        kept = rng.choice(rows.size, size=keep, replace=False)
        out.append(np.sort(np.setdiff1d(rows, rows[kept])))
    return out


def lds_tasks(out: Path, window, rows_per_step: int, removed: list[np.ndarray], settings: tuple,
              seeds=(0,)) -> list[RunTask]:
    """One task per (subset or the full reference, seed); seed 0 runs in ``runs/<name>``, seed k in
    ``runs/<name>.seed<k>``."""
    tasks = []
    for m, rem in enumerate([np.zeros(0, np.int64)] + removed):
        name = "full" if m == 0 else f"subset{m - 1:03d}"
        plan = Plan(name=name, kind="delete", window=tuple(window), rows_per_step=rows_per_step, delete=rem,
                    info={"lds_subset": m - 1})
        for s in seeds:
            run = out / "runs" / (name if s == 0 else f"{name}.seed{s}")
            tasks.append(RunTask(name, int(s), plan, None, run, run_fingerprint(plan, None, *settings)))
    return tasks


@dataclass
class LdsTarget:
    """What one LDS measures: ``unit``'s head score and ``probe`` (on ``probe_tokens``) at the window's
    end, predicted by each of ``attributors`` (scores of that probe for that unit)."""

    unit: TrackedUnit
    probe: object                 # mda_fast.probes.Probe
    probe_tokens: torch.Tensor    # [n, L] the probe data the scores were computed with
    attributors: list[Attributor]


def _changes(curves: dict, n_subsets: int, target: LdsTarget) -> tuple[np.ndarray, np.ndarray]:
    """(probe change [M], head change [M]) of each subset against the full run, one seed's curves."""
    name, unit = target.probe.name, target.unit
    full = curves["full"]
    runs = [curves[f"subset{m:03d}"] for m in range(n_subsets)]
    d_probe = np.asarray([c["end_probes"][name] - full["end_probes"][name] for c in runs])
    d_head = np.asarray([unit.series(c)[-1] - unit.series(full)[-1] for c in runs])
    return d_probe, d_head


def noise_ceiling(per_seed: list[np.ndarray]) -> dict:
    """How far retraining reproduces itself: the mean Spearman r between two seeds' changes over the
    same subsets, the reliability R of their mean (Spearman-Brown) and sqrt(R), the LDS a perfect
    attributor could expect against the seed mean. None entries with fewer than 2 seeds."""
    k = len(per_seed)
    pairs = [spearman(per_seed[i], per_seed[j]) for i in range(k) for j in range(i + 1, k)]
    pairs = [r for r in pairs if r is not None]
    if not pairs:
        return {"seeds": k, "r_between_seeds": None, "reliability_of_mean": None, "max_expected_lds": None}
    r = float(np.mean(pairs))
    rel = k * r / (1 + (k - 1) * r) if r > 0 else 0.0
    return {"seeds": k, "r_between_seeds": r, "r_pairs": pairs, "reliability_of_mean": rel,
            "max_expected_lds": float(np.sqrt(rel))}


def lds_table(curves: dict, removed: list[np.ndarray], target: LdsTarget) -> dict:
    """Spearman of each attributor's predicted changes against the measured probe and head changes
    (averaged over seeds), per-seed LDS, and the noise ceiling. ``curves``: {seed: {name: curve}}."""
    seeds = sorted(curves)
    changes = [_changes(curves[s], len(removed), target) for s in seeds]
    d_probe = np.mean([c[0] for c in changes], axis=0)
    d_head = np.mean([c[1] for c in changes], axis=0)
    full = curves[seeds[0]]["full"]
    out = {"unit": target.unit.to_dict(), "probe": target.probe.name, "seeds": seeds,
           "reference": {"probe": full["end_probes"][target.probe.name], "head": target.unit.series(full)[-1]},
           "measured": {"probe_change": d_probe.tolist(), "head_change": d_head.tolist(),
                        "per_seed": {str(s): {"probe_change": c[0].tolist(), "head_change": c[1].tolist()}
                                     for s, c in zip(seeds, changes)}},
           "noise_ceiling": {"probe": noise_ceiling([c[0] for c in changes]),
                             "head": noise_ceiling([c[1] for c in changes])},
           "attributors": {}}
    for att in target.attributors:
        pred = np.asarray([-att.removed_sum(r) for r in removed])
        out["attributors"][att.name] = {
            "predicted": pred.tolist(), "lds_probe": spearman_ci(pred, d_probe), "lds_head": spearman_ci(pred, d_head),
            "per_seed": {str(s): {"lds_probe": spearman(pred, c[0]), "lds_head": spearman(pred, c[1])}
                         for s, c in zip(seeds, changes)}}
    return out


def run_lds(out_dir, shared: RunShared, window: tuple[int, int], rows_per_step: int, targets: list[LdsTarget],
            n_subsets: int = 24, fraction: float = 0.5, seed: int = 0, jobs: int = 1, log=print,
            seeds=(0,)) -> dict:
    """Retrain every subset under every row-order seed of ``seeds`` (reusing finished runs;
    ``out_dir`` claimed meanwhile), score every target; writes ``lds.json``. ``seed`` draws the
    subsets.

    ``shared`` is the experiment's run settings (checkpoint at the window start, source, optimizer,
    tracking data); its end step and stop rule are replaced here: every run ends at the window's end.
    """
    if not targets:
        raise ConfigError("LDS needs at least one target (unit, probe, attributors)")
    out = Path(out_dir)
    a, b = int(window[0]), int(window[1])
    probes = {t.probe.name: (t.probe, t.probe_tokens) for t in targets}
    shared = replace(shared, end_step=b, stop=None, end_probes=probes)
    removed = subsets((a, b), rows_per_step, n_subsets, fraction, seed)
    settings = ("lds-v1", b, shared.cadence, shared.optim.to_dict(), fraction, seed,
                {n: np.asarray(tok).tolist() for n, (_, tok) in sorted(probes.items())},
                inputs_fingerprint(shared.checkpoint, shared.source, a, b, rows_per_step))
    seeds = [int(s) for s in seeds]
    with claim(out):
        done = run_tasks(lds_tasks(out, (a, b), rows_per_step, removed, settings, seeds), shared, jobs=jobs, log=log)
    curves: dict = {}
    for (name, s), c in done.items():
        curves.setdefault(s, {})[name] = c
    result = {"window": [a, b], "fraction": fraction, "removed_fraction": 1.0 - fraction, "seed": seed,
              "seeds": seeds, "n_subsets": n_subsets, "targets": [lds_table(curves, removed, t) for t in targets],
              "run_seconds": sum(c.get("sec", 0.0) for c in done.values()), "runs": len(done)}
    write_json(out / "lds.json", result)
    return result


def format_lds(result: dict) -> str:
    """One line per target and attributor: LDS on the probe and on the head score, with intervals."""
    seeds = result.get("seeds", [0])
    lines = [f"LDS over {result['n_subsets']} random {result['fraction']:.0%} subsets of the window "
             f"{result['window'][0]}-{result['window'][1]} (Spearman, 95% bootstrap CI), each retrained under "
             f"{len(seeds)} row-order seed(s), against the seed-mean change:"]
    for t in result["targets"]:
        nc = t.get("noise_ceiling")
        if nc and nc["probe"]["r_between_seeds"] is not None:
            lines.append(f"  {t['unit']['name']:<16s} noise ceiling: seed-vs-seed r {nc['probe']['r_between_seeds']:+.2f} "
                         f"(probe), {nc['head']['r_between_seeds']:+.2f} (head); max expected LDS "
                         f"{nc['probe']['max_expected_lds']:.2f} / {nc['head']['max_expected_lds']:.2f}")
        for name, r in t["attributors"].items():
            cells = []
            for key, what in (("lds_probe", t["probe"]), ("lds_head", f"{t['unit']['head']} {t['unit']['metric']}")):
                e = r[key]
                ci = e["ci95"]
                cells.append(f"{what}: {e['rho']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if e["rho"] is not None
                             else f"{what}: -")
            lines.append(f"  {t['unit']['name']:<16s} {name:<22s} " + "   ".join(cells))
    return "\n".join(lines)
