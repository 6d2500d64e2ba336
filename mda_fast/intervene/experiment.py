"""One causal-validation experiment: plans x seeds retrained from a checkpoint, tracked, summarized.

Four stages, each its own function: :func:`prepare_experiment` checks every input and resolves every
plan for every seed before any training; :func:`run_conditions` retrains them (``runner``, in
parallel worker processes, reusing finished runs); :func:`summarize` gives each tracked unit's
emergence under each condition with paired effects (``summary``); :func:`write_outputs` writes the
plots, the all-heads table, the kind enrichment and the HTML report. :func:`run_experiment` runs
the four. Experiment directory::

    config.json                  the arguments (resolved)
    plans/<cond>-seed<k>.json    resolved row ids of each plan
    runs/<cond>/seed<k>/curve.json (+ train/metrics.jsonl)   reused when its inputs are unchanged
                                 (content, not paths: fingerprint.py; the starting checkpoint
                                 and the training rows included)
    curves.json, curves.png      all tracked curves
    heads.json                   all heads' induction/previous-token scores at the window's end
    kinds.json, kinds.png        data-kind enrichment of the top rows (``analyze=True``)
    summary.json                 emergence per unit and condition: per seed, mean ± std, paired shift
                                 in % of the window with 95% interval and p-value; ICL score changes
    report.html                  (``report=True``)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mda_fast.attribution.store.scores import load_scores
from mda_fast.data import open_source, select_steps
from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.digest import array_digest
from mda_fast.errors import ConfigError
from mda_fast.intervene.analyze import run_analyze
from mda_fast.intervene.augment import load_synthetic
from mda_fast.intervene.fingerprint import inputs_fingerprint, run_fingerprint
from mda_fast.intervene.plans import FEATURE_PREFIX, PlanSpec, build_plan, needs_labels, parse_plan_spec
from mda_fast.intervene.report import write_report
from mda_fast.intervene.retrain import load_checkpoint_model, optim_from_checkpoint
from mda_fast.intervene.rowlabels import window_labels
from mda_fast.intervene.runner import RunShared, RunTask, run_tasks
from mda_fast.intervene.summary import TrackedUnit, plot_curves
from mda_fast.intervene.summary import summarize as summarize_curves
from mda_fast.intervene.track import StopRule, all_head_scores, curve_key, default_token_range, repeated_random_tokens
from mda_fast.intervene.validate import check_scores_match, check_window, manifest_units
from mda_fast.io import write_json
from mda_fast.lock import claim
from mda_fast.training import list_checkpoints, read_state

DEFAULT_PLANS = ("baseline", "delete", "random-delete", "kind-random-delete", "duplicate", "random-duplicate",
                 "kind-random-duplicate")


@dataclass
class Experiment:
    """Everything resolved before training: inputs checked, plans resolved, tasks listed."""

    out: Path
    window: tuple[int, int]
    end_step: int
    units: list[TrackedUnit]
    threshold: float | str
    specs: list[PlanSpec]
    seeds: list[int]
    tasks: list[RunTask]
    shared: RunShared
    config: dict
    table: object                     # ScoreTable
    source: object                    # RowSource
    end_checkpoint: Path | None
    resolved: dict = field(default_factory=dict)   # (label, seed) -> (Plan, synthetic rows)


def _specs(plans) -> list[PlanSpec]:
    specs = [p if isinstance(p, PlanSpec) else parse_plan_spec(p) for p in plans]
    names = [s.label() for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"plans {sorted(dup)} appear twice; give them distinct name=... options")
    return specs


def _heldout(source, rps: int, end: int, n: int, window_start: int) -> tuple[torch.Tensor | None, str]:
    """Held-out rows for the ICL score: after the last trained row if any, else before the window."""
    total = len(source)
    if n <= 0:
        return None, "none"
    if total - rps * end >= n:
        pos = np.arange(total - n, total)
        where = f"last {n} rows of the source (after step {end})"
    elif rps * window_start >= n:
        pos = np.arange(rps * window_start - n, rps * window_start)
        where = f"{n} rows just before the window (already trained on)"
    else:
        return None, "none"
    return torch.as_tensor(source.read(pos), dtype=torch.long), where


def _units(units, table, metric: str) -> list[TrackedUnit]:
    metric = curve_key(metric)
    if units:
        return [u if isinstance(u, TrackedUnit) else TrackedUnit.of(f"L{u[0]}.H{u[1]}", int(u[0]), int(u[1]), metric)
                for u in units]
    found = manifest_units(table.manifest)
    if not found:
        raise ConfigError("the scores manifest names no unit; pass units=[(layer, head)]")
    return [TrackedUnit.of(metric, found[0].layer, found[0].head, metric)]


def _resolve_plans(specs, seeds, window, rps, table, unit, source, vocab_size=None) -> dict:
    """(label, seed) -> (Plan, synthetic rows or None), synthetic files read once; the window's row
    labels are computed once, only when a plan needs them."""
    feats = {s.column.split(":", 1)[1] for s in specs if str(s.column or "").startswith(FEATURE_PREFIX)}
    labels = (window_labels(source, window, rps, vocab_size, features=sorted(feats))
              if any(needs_labels(s) for s in specs) else None)
    synth, resolved = {}, {}
    for spec in specs:
        syn = None
        if spec.kind == "insert-synthetic":
            if spec.synthetic not in synth:
                synth[spec.synthetic] = load_synthetic(spec.synthetic, source.seq_len)
            syn = synth[spec.synthetic]
        for s in seeds:
            plan = build_plan(spec, window, rps, table.row_ids, table.scores, table.columns, unit=unit,
                              seed=s, n_synthetic=None if syn is None else len(syn), labels=labels)
            resolved[(spec.label(), s)] = (plan, syn)
    return resolved


def _heldout_rows(heldout, source, rps: int, end: int, window_start: int):
    """(held-out rows or {name: rows} or None, a description) for the ICL score."""
    if isinstance(heldout, dict):
        held = {k: v for k, v in heldout.items() if v is not None}
        return held or None, ", ".join(f"{k}: {len(v)} rows given by the caller" for k, v in held.items()) or "none"
    if isinstance(heldout, torch.Tensor):
        return heldout, f"{len(heldout)} rows given by the caller"
    return _heldout(source, rps, end, int(heldout), window_start)


def _stop_rule(units, threshold, stop_after, cadence: int, window) -> StopRule | None:
    """Stop a run once every unit has emerged (default margin: 3 measurements or a fifth of the
    window), never before the window's end plus that margin; None for a relative threshold or -1."""
    if str(threshold).endswith("%") or stop_after == -1:
        return None
    a, b = window
    after = int(stop_after) if stop_after is not None else max(3 * cadence, (b - a) // 5)
    return StopRule(tuple((u.metric, u.layer, u.head) for u in units), float(threshold), after, b + after)


def _run_key_settings(shared: RunShared, probe_n: int, probe_len: int, probe_range, inputs: str) -> tuple:
    """Everything besides the plan that a finished run depends on (its fingerprint); ``inputs``:
    ``fingerprint.inputs_fingerprint`` of the starting checkpoint and the rows trained on."""
    held, stop = shared.heldout, shared.stop
    held_key = None if held is None else ({k: array_digest(v.numpy()) for k, v in held.items()}
                                          if isinstance(held, dict) else array_digest(held.numpy()))
    return (shared.end_step, shared.cadence, shared.shuffle_block, shared.optim.to_dict(), probe_n, probe_len,
            list(probe_range), held_key,
            None if stop is None else [list(map(list, stop.targets)), stop.threshold, stop.after, stop.not_before],
            inputs)


def _check_inputs(checkpoints, source, scores, window, end: int, rows_per_step, units, metric, device):
    """(checkpoints {step: dir}, source, table, rows per step, units, model config), all checked."""
    a, b = window
    ckpts = list_checkpoints(checkpoints)
    if not ckpts:
        raise ConfigError(f"{checkpoints} holds no step<N> checkpoints written by mda_fast.training")
    source = open_source(source)
    table = load_scores(str(scores)) if isinstance(scores, (str, Path)) else scores
    rps = int(rows_per_step or (read_state(ckpts[a]).get("rows_per_step") if a in ckpts else 1) or 0)
    check_window((a, b), ckpts, len(source), max(rps, 1), end, where=str(checkpoints))
    if rps <= 0:
        raise ConfigError(f"rows per step are unknown for checkpoint {ckpts[a]}; pass rows_per_step")
    units = _units(units, table, metric)
    check_scores_match(table.manifest, checkpoints=ckpts, data=window_fingerprint(select_steps(source, a, b, rps)),
                       window=(a, b), unit=(units[0].layer, units[0].head), rows_per_step=rps,
                       where=f"scores {scores if isinstance(scores, (str, Path)) else 'table'}")
    cfg = load_checkpoint_model(ckpts[a], device).config
    for u in units:
        if not (u.layer < cfg.num_hidden_layers and u.head < cfg.num_attention_heads):
            raise ConfigError(f"unit {u.head_name} is outside the model ({cfg.num_hidden_layers} layers, "
                              f"{cfg.num_attention_heads} heads)")
    return ckpts, source, table, rps, units, cfg


def prepare_experiment(out_dir, checkpoints, source, scores, window, plans=DEFAULT_PLANS, seeds=(0, 1, 2),
                       units=None, metric: str = "induction", cadence: int = 10, end_step: int | None = None,
                       threshold=0.5, stop_after: int | None = None, optim: dict | None = None,
                       shuffle_block: int = 8, probe_n: int = 32, probe_len: int = 32,
                       probe_range: tuple[int, int] | None = None, heldout=32, rows_per_step: int | None = None,
                       device: str = "cpu") -> Experiment:
    """Check the inputs and resolve every plan (see :func:`run_experiment` for the arguments)."""
    out = Path(out_dir)
    a, b = int(window[0]), int(window[1])
    end = int(end_step if end_step is not None else b)
    specs, seeds = _specs(plans), [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("at least one seed is needed")
    ckpts, source, table, rps, units, cfg = _check_inputs(checkpoints, source, scores, (a, b), end, rows_per_step,
                                                          units, metric, device)
    optim_cfg = optim_from_checkpoint(ckpts[a], optim)
    resolved = _resolve_plans(specs, seeds, (a, b), rps, table, (units[0].layer, units[0].head), source,
                              cfg.vocab_size)
    low, high = probe_range or default_token_range(cfg.vocab_size)
    held, held_where = _heldout_rows(heldout, source, rps, end, a)
    shared = RunShared(checkpoint=str(ckpts[a]), source=source, end_step=end, optim=optim_cfg, cadence=cadence,
                       shuffle_block=shuffle_block, probe_tokens=repeated_random_tokens(probe_n, probe_len, low, high,
                                                                                         seed=777),
                       heldout=held, stop=_stop_rule(units, threshold, stop_after, cadence, (a, b)), device=device)
    settings = _run_key_settings(shared, probe_n, probe_len, (low, high),
                                 inputs_fingerprint(ckpts[a], source, a, end, rps))
    tasks = [RunTask(name, s, plan, syn, out / "runs" / name / f"seed{s}", run_fingerprint(plan, syn, *settings))
             for (name, s), (plan, syn) in resolved.items()]
    config = {"checkpoints": str(checkpoints), "source": getattr(source, "name", str(source)),
              "scores": str(scores) if isinstance(scores, (str, Path)) else None, "window": [a, b],
              "end_step": end, "rows_per_step": rps, "vocab_size": int(cfg.vocab_size),
              "units": [u.to_dict() for u in units], "plans": [s.label() for s in specs],
              "plan_specs": [vars(s) for s in specs], "seeds": seeds, "cadence": cadence, "threshold": str(threshold),
              "stop_after": None if shared.stop is None else shared.stop.after, "optim": optim_cfg.to_dict(),
              "shuffle_block": shuffle_block, "probe_n": probe_n, "probe_len": probe_len, "probe_range": [low, high],
              "heldout": held_where, "seed_meaning":
              "seed 0 = original data order; seed k > 0 = window rows permuted within blocks of "
              f"{shuffle_block} steps (seeded), same order for every condition; random controls drawn per seed"}
    return Experiment(out, (a, b), end, units, threshold, specs, seeds, tasks, shared, config, table, source,
                      ckpts.get(b), resolved)


def run_conditions(exp: Experiment, jobs: int = 1, log=print) -> dict:
    """Retrain every (condition, seed); returns curves {condition: {seed(str): curve}}. The
    experiment directory is claimed meanwhile (``mda_fast.lock``: one experiment writes it)."""
    with claim(exp.out):
        write_json(exp.out / "config.json", exp.config)
        for (name, s), (plan, _) in exp.resolved.items():
            plan.save(exp.out / "plans" / f"{name}-seed{s}.json")
        done = run_tasks(exp.tasks, exp.shared, jobs=jobs, log=log)
    curves: dict = {}
    for spec in exp.specs:                       # conditions in the order the user gave them
        for s in exp.seeds:
            curves.setdefault(spec.label(), {})[str(s)] = done[(spec.label(), s)]
    write_json(exp.out / "curves.json", curves)
    return curves


def summarize(exp: Experiment, curves: dict) -> dict:
    """summary.json: every unit's emergence under every condition, the plans, the ICL change."""
    summary = summarize_curves(curves, exp.window, exp.units, exp.threshold)
    first = exp.seeds[0]
    summary.update({"end_step": exp.end_step, "seeds": exp.seeds, "heldout": exp.config["heldout"],
                    "plans": {name: {k: v for k, v in plan.info.items() if k != "spec"}
                              for (name, s), (plan, _) in exp.resolved.items() if s == first},
                    "run_seconds": sum(c.get("sec", 0.0) for runs in curves.values() for c in runs.values())})
    write_json(exp.out / "summary.json", summary)
    return summary


def write_outputs(exp: Experiment, curves: dict, summary: dict, analyze: bool = True, report: bool = True,
                  tokenizer=None) -> None:
    """curves.png, heads.json, and optionally kinds.json/png and report.html."""
    plot_curves(curves, exp.window, exp.out / "curves.png", exp.units, summary["threshold"])
    device = exp.shared.device
    ck = exp.end_checkpoint or exp.shared.checkpoint
    heads = all_head_scores(load_checkpoint_model(ck, device).eval(), exp.shared.probe_tokens.to(device))
    heads.update({"step": exp.window[1] if exp.end_checkpoint else exp.window[0],
                  "units": [u.to_dict() for u in exp.units]})
    write_json(exp.out / "heads.json", heads)
    if analyze:
        spec0 = next((sp for sp in exp.specs if sp.kind in ("delete", "duplicate")), PlanSpec("delete"))
        col = exp.resolved.get((spec0.label(), exp.seeds[0]), (None,))[0]
        run_analyze(None, exp.source, exp.out, column=(col.info.get("column") if col else None), top=spec0.top,
                    tail=spec0.tail, tokenizer=tokenizer, table=exp.table,
                    vocab_size=exp.config["vocab_size"])
    if report:
        write_report(exp.out, scores=exp.table, source=exp.source, tokenizer=tokenizer)


def run_experiment(out_dir, checkpoints, source, scores, window, plans=DEFAULT_PLANS, seeds=(0, 1, 2),
                   analyze: bool = True, report: bool = True, tokenizer=None, jobs: int = 1, log=print,
                   **options) -> dict:
    """Run (or resume) an experiment; returns the summary dict (also ``out_dir/summary.json``).

    checkpoints: dir with ``step{N}/`` subdirs (mda_fast.training format); source: RowSource or
    spec for ``open_source``; scores: score run dir or a ScoreTable; window: (a, b) steps whose rows
    the plans modify; plans: specs like ``"delete"``, ``"duplicate:replace=random"``,
    ``"insert-synthetic:path=syn,at=120"``; seeds: see ``retrain`` (0 = original data order);
    jobs: worker processes. ``options`` (see :func:`prepare_experiment`): units (TrackedUnit list or
    (layer, head) pairs; default the scores' first unit), metric, cadence, end_step (train until
    here, default b), threshold (emergence score, or "50%" of the baseline's peak), stop_after
    (steps trained after every unit has emerged, and at least past b + stop_after; -1 = never
    stop early), optim, shuffle_block, probe_n, probe_len, probe_range, heldout (row count, a tensor,
    or {name: tensor} of held-out sets for the ICL score), rows_per_step, device. The scores must
    have been computed from one of the run's checkpoints on the window's rows (by content:
    ``validate.check_scores_match``).
    """
    t0 = time.perf_counter()
    exp = prepare_experiment(out_dir, checkpoints, source, scores, window, plans, seeds, **options)
    curves = run_conditions(exp, jobs=jobs, log=log)
    summary = summarize(exp, curves)
    write_outputs(exp, curves, summary, analyze=analyze, report=report, tokenizer=tokenizer)
    summary["seconds"] = time.perf_counter() - t0
    write_json(exp.out / "summary.json", summary)
    return summary
