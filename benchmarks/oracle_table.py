"""Issue 20's table: every attributor against the exact oracle, on the same retrained subsets.

    python benchmarks/oracle_table.py --demo /tmp/demo --window 3375 3475 --work /tmp/table --phase all

On a trained demo run (``mda_fast.demo.train_demo``: corpus + ``step{N}`` checkpoints every 25
steps) and one window of it, for the demo's induction head L1.H1 under the copy-target probe:

- ``attributors``: the score of every window row by gradient dot product, single-checkpoint MDA
  (EK-FAC at the window's end, whole-window fit), trajectory-aware MDA with S segments
  (``attribution.trajectory``, independent segments and SOURCE propagation) and the exact oracle
  (``mda_fast.oracle``) on the *same* targets the LDS measures: the copy-target probe on the scores'
  probe data, and the head's induction score on the experiment's tracking sequences. Seconds of
  each, and of retraining the window, are recorded (costs as multiples of training and of MDA).
- ``lds``: ``intervene.lds`` on random subsets removing 2%, 10% and 50% of the window's rows,
  each retrained under row-order seeds 0 and 1 (the noise ceiling); the retraining is shared by
  every attributor. Seed 0 is the original order, the one every attributor (the oracle included)
  was computed on, and its changes are exact (deterministic retraining).
- ``deletions``: per attributor, delete its top 10% and its most negative 10%, beside deleting as
  many random rows of the top set's kinds (``kind-random-delete``): the head's emergence step
  (threshold 0.5) and its score at the window's end, under several row-order seeds.
- ``table``: ``table.json`` and ``table.md`` in ``--work``.

Every phase reuses what an earlier (killed) run finished. One torch thread per process. The demo
run, window and targets: ``oracle_setup.py``; the research variants: ``oracle_variants.py``; the
table's rows and markdown: ``oracle_report.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mda_fast.attribution.store.scores import ScoreTable
from mda_fast.attribution.trajectory import TrajectoryRun
from mda_fast.attribution.unrolled import adam_step_size
from mda_fast.demo.experiment import machine
from mda_fast.demo.train_demo import new_model
from mda_fast.intervene.experiment import run_conditions, summarize
from mda_fast.intervene.lds import Attributor, LdsTarget, format_lds, run_lds
from mda_fast.intervene.summary import TrackedUnit
from mda_fast.io import read_json, write_json
from mda_fast.oracle import InductionScore, ProbeTarget, exact_metagradient
from mda_fast.probes import parse_probe
from mda_fast.training import load_weights, read_state, train
from mda_fast.training.optim import OptimConfig
from oracle_report import markdown, table
from oracle_setup import COLUMN, HEAD, LAYER, PROBE, UNIT, Setup
from oracle_variants import LINEARS, adam_scores, tracin_steps, wide_scores

REMOVED = (0.01, 0.02, 0.1, 0.5)   # LDS: share of the window's rows removed per subset
SEEDED = (0.02, 0.1, 0.5)          # ... retrained under several row-order seeds too (the noise ceiling)
SEGMENTS = (2, 4)
SOURCE_ETA = (0.1, 10.0)           # SOURCE's step size scaled (sensitivity to the Adam-derived eta)


# -- attributors ------------------------------------------------------------------------------------
def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def pipeline_scores(st: Setup, name: str, **settings) -> np.ndarray:
    return st.pipeline(name, **settings).run(top_k=None).column(COLUMN)


def trajectory_scores(st: Setup, segments: int, propagation: str, tag: str = "", step_size=None,
                      **settings) -> np.ndarray:
    run = TrajectoryRun(st.load, st.source, st.window, st.rps,
                        str(st.work / "attr" / f"{propagation}{segments}{tag}"), [PROBE], [UNIT], segments,
                        list(st.ckpts), st.settings(**settings), log=None, propagation=propagation,
                        checkpoints=st.ckpts, step_size=step_size)
    return run.run().column(COLUMN)


def end_step_size(st: Setup) -> float:
    """SOURCE's eta read from the Adam state at the window's end (what the default uses there)."""
    m = st.pipeline("unused").mda                # nothing is written: only its model, adapter, blocks
    return adam_step_size(st.ckpts[st.window[1]], m.model, m.adapter, m.blocks, st.window)


def oracle_scores(st: Setup, target, name: str) -> np.ndarray:
    a, b = st.window
    start = st.ckpts[a]
    state = read_state(start)
    model = new_model(st.cfg)                        # the demo's model as trained (sdpa): its exact states
    load_weights(start, model)
    torch.manual_seed(int(state.get("seed", 0)))
    mg = exact_metagradient(model, st.source, (a, b), st.rps, OptimConfig.from_dict(state["optim"]), target,
                            init_from=start, out_dir=st.work / "attr" / name)
    return np.asarray(mg.weight_grad, dtype=np.float64)


def train_seconds(st: Setup) -> float:
    """Seconds to retrain the window from its start checkpoint (the cost unit)."""
    a, b = st.window
    model = new_model(st.cfg)
    state = read_state(st.ckpts[a])
    _, sec = timed(lambda: train(model, st.source, (a, b), st.rps, OptimConfig.from_dict(state["optim"]),
                                 init_from=st.ckpts[a]))
    return sec


def attributors(st: Setup) -> dict:
    """{name: scores [window rows]} (cached in attr/all.npz) and {name: seconds} (attr/costs.json)."""
    path, cpath = st.work / "attr" / "all.npz", st.work / "attr" / "costs.json"
    have = dict(np.load(path)) if path.is_file() else {}
    costs = read_json(cpath) if cpath.is_file() else {}
    exp = st.experiment()
    jobs = {"graddot": lambda: pipeline_scores(st, "graddot", preconditioner="identity"),
            "mda": lambda: st.mda_table().column(COLUMN)}
    for s in SEGMENTS:
        jobs[f"mda_seg{s}"] = lambda s=s: trajectory_scores(st, s, "independent")
        jobs[f"source_seg{s}"] = lambda s=s: trajectory_scores(st, s, "source")
    jobs["graddot_seg4"] = lambda: trajectory_scores(st, 4, "independent", "-graddot", preconditioner="identity")
    for mult in SOURCE_ETA:
        jobs[f"source_seg4_eta{mult:g}x"] = lambda m=mult: trajectory_scores(st, 4, "source", f"-eta{m:g}x",
                                                                         step_size=m * end_step_size(st))
    jobs["mda_qkvo"] = lambda: wide_scores(st, "mda_qkvo", [f"L{LAYER}.H{HEAD}.qkvo"])
    jobs["mda_wide"] = lambda: wide_scores(st, "mda_wide", LINEARS)
    jobs["adam_wide"] = lambda: adam_scores(st, "adam_wide", LINEARS)
    jobs["tracin_steps"] = lambda: tracin_steps(st)
    jobs["oracle_probe"] = lambda: oracle_scores(st, ProbeTarget(parse_probe(PROBE), st.probe_tokens()), "oracle_probe")
    jobs["oracle_head"] = lambda: oracle_scores(st, InductionScore(LAYER, HEAD, exp.shared.probe_tokens), "oracle_head")
    for name, fn in jobs.items():
        if name in have:
            continue
        scores, sec = timed(fn)
        have[name], costs[name] = np.asarray(scores, dtype=np.float64), sec
        np.savez(path, **have)
        write_json(cpath, costs)
        print(f"[attributors] {name}: {sec:.0f} s", flush=True)
    if "train" not in costs:
        costs["train"] = train_seconds(st)
        write_json(cpath, costs)
    return have, costs


def fresh_costs(st: Setup) -> dict:
    """Seconds of training the window and of each attributor computed from nothing (a scratch
    work directory), one after the other in this process: the cost columns (attr/costs_fresh.json)."""
    path = st.work / "attr" / "costs_fresh.json"
    if path.is_file():
        return read_json(path)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Setup(st.demo, st.window, Path(tmp))
        jobs = {"train": lambda: train_seconds(fresh),
                "graddot": lambda: pipeline_scores(fresh, "graddot", preconditioner="identity"),
                "mda": lambda: pipeline_scores(fresh, "mda")}
        for s in SEGMENTS:
            jobs[f"mda_seg{s}"] = lambda s=s: trajectory_scores(fresh, s, "independent")
            jobs[f"source_seg{s}"] = lambda s=s: trajectory_scores(fresh, s, "source")
        jobs["mda_wide"] = lambda: wide_scores(fresh, "mda_wide", LINEARS)
        jobs["tracin_steps"] = lambda: tracin_steps(fresh)
        jobs["oracle_probe"] = lambda: oracle_scores(fresh, ProbeTarget(parse_probe(PROBE), fresh.probe_tokens()),
                                                     "oracle_probe")
        cached = dict(np.load(st.work / "attr" / "all.npz"))
        costs, again = {}, {}
        for name, fn in jobs.items():
            out, costs[name] = timed(fn)
            if name in cached:            # recomputed from nothing: the cached scores are reproduced
                diff = np.abs(np.asarray(out, dtype=np.float64) - cached[name]).max()
                again[name] = float(diff / np.abs(cached[name]).max())
    costs["reproduced_max_rel_diff"] = again
    costs["machine"] = machine()
    write_json(path, costs)
    return costs


# -- LDS -------------------------------------------------------------------------------------------
def lds(st: Setup, scores: dict, subsets: int, seeds, jobs: int, exact_subsets: int = 0, removed_shares=REMOVED) -> dict:
    """{removed share: {"seeds": run_lds over ``subsets`` subsets x row-order ``seeds`` (the noise
    ceiling; not at 1%), "exact": run_lds over ``exact_subsets`` subsets in the original order only}}.
    Both draw the same subsets (their first ones coincide): retraining is shared."""
    exp = st.experiment()
    ids = st.mda_table().row_ids
    atts = [Attributor(n, ids, s) for n, s in scores.items()]
    target = LdsTarget(st.unit, parse_probe(PROBE), st.probe_tokens(), atts)
    out = {}
    for removed in removed_shares:
        where = st.work / f"lds-removed{removed:g}"
        run = lambda n, sd: run_lds(where, exp.shared, st.window, st.rps, [target], n_subsets=n,  # noqa: E731
                                    fraction=1.0 - removed, seed=0, jobs=jobs, log=print, seeds=sd)
        res = {}
        if removed in SEEDED:
            res["seeds"] = run(subsets, seeds)
            print(format_lds(res["seeds"]), flush=True)
        if exact_subsets:
            res["exact"] = run(exact_subsets, (0,))
            print(format_lds(res["exact"]), flush=True)
        out[f"{removed:g}"] = res
    return out


# -- deletions --------------------------------------------------------------------------------------
def deletion_plans(names) -> list[str]:
    plans = ["baseline", "random-delete:top=10%,column=mda,name=random-10%"]
    for n in names:
        plans += [f"delete:top=10%,column={n},name=top-{n}", f"delete:top=10%,tail=negative,column={n},name=neg-{n}",
                  f"kind-random-delete:top=10%,column={n},name=kind-{n}"]
    return plans


def combined_table(st: Setup, scores: dict) -> ScoreTable:
    """Every attributor as a column of one table carrying the MDA scores' manifest (same window,
    weights of the window's end): what ``prepare_experiment`` checks and ranks by."""
    t = st.mda_table()
    names = list(scores)
    return ScoreTable(t.row_ids, np.stack([scores[n] for n in names], 1).astype(np.float32), names, t.loss,
                      t.manifest)


def at_step(curve: dict, unit: TrackedUnit, step: int) -> float | None:
    steps, vals = curve["steps"], unit.series(curve)
    return float(vals[steps.index(step)]) if step in steps else None


def deletions(st: Setup, scores: dict, seeds, jobs: int) -> dict:
    """Retrain every (condition, seed); {summary, end-of-window score per condition and seed}."""
    exp = st.experiment(deletion_plans(scores), seeds, combined_table(st, scores))
    curves = run_conditions(exp, jobs=jobs, log=print)
    summary = summarize(exp, curves)
    b = st.window[1]
    end = {c: {s: at_step(cv, st.unit, b) for s, cv in runs.items()} for c, runs in curves.items()}
    plans = {name: {**{k: v for k, v in plan.info.items() if k != "spec"}, "deleted": int(len(plan.delete))}
             for (name, s), (plan, _) in exp.resolved.items() if s == seeds[0]}
    return {"summary": summary, "end_score": end, "plans": plans}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=Path, required=True)
    ap.add_argument("--window", type=int, nargs=2, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--phase", default="all", choices=("mda", "lds-runs", "attributors", "costs", "lds", "deletions",
                                                       "table", "lds-table", "all"))
    ap.add_argument("--subsets", type=int, default=16)
    ap.add_argument("--lds-seeds", type=int, default=2)
    ap.add_argument("--exact-subsets", type=int, default=48, help="LDS subsets retrained in the original order only")
    ap.add_argument("--deletion-attributors", nargs="*", default=None, help="default: every attributor")
    ap.add_argument("--removed", type=float, nargs="*", default=list(REMOVED), help="LDS removal shares")
    ap.add_argument("--seeds", type=int, default=3, help="row-order seeds of the deletion conditions")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    st = Setup(args.demo, args.window, args.work)
    seeds = tuple(range(args.lds_seeds))
    if args.phase == "mda":
        st.mda_table()
    if args.phase == "lds-runs":      # the retraining alone (attributor-independent), e.g. while scoring
        lds(st, {}, args.subsets, seeds, args.jobs, args.exact_subsets, args.removed)
    if args.phase in ("attributors", "lds", "deletions", "table", "lds-table", "all"):
        scores, costs = attributors(st)
    if args.phase in ("costs", "all"):
        fresh_costs(st)
    if args.phase in ("table", "all"):
        costs = fresh_costs(st)
    if args.phase in ("lds", "table", "lds-table", "all"):
        lds_res = lds(st, scores, args.subsets, seeds, args.jobs, args.exact_subsets, args.removed)
    if args.phase == "lds-table":       # the LDS part alone (deletions still running elsewhere)
        print(markdown(table(st.window, scores, costs, lds_res, None)))
    dele = None
    if args.phase in ("deletions", "table", "all"):
        chosen = {n: scores[n] for n in (args.deletion_attributors or scores)}
        dele = deletions(st, chosen, tuple(range(args.seeds)), args.jobs)
    if args.phase in ("table", "all"):
        res = table(st.window, scores, costs, lds_res, dele)
        res["machine"] = machine()
        write_json(args.work / "table.json", res)
        (args.work / "table.md").write_text(markdown(res))
        print(markdown(res))


if __name__ == "__main__":
    main()
