"""One causal-validation experiment: plans x seeds retrained from a checkpoint, tracked, summarized.

Experiment directory::

    config.json                  the arguments (resolved)
    plans/<cond>-seed<k>.json    resolved row ids of each plan
    runs/<cond>/seed<k>/curve.json (+ metrics.jsonl)   a finished run is skipped when re-run with the
                                 same inputs (content, not paths: fingerprint.py)
    curves.json, curves.png      all tracked curves
    heads.json                   all heads' induction/previous-token scores at the window's end
    kinds.json, kinds.png        data-kind enrichment of the top rows (``analyze=True``)
    summary.json                 emergence per condition, mean ± std over seeds, deltas in % of window
    report.html                  (``report=True``)

Everything that can be wrong with the inputs is checked before the first training step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.fingerprint import legacy_fingerprint, run_fingerprint
from mda_fast.intervene.io import read_json, write_json
from mda_fast.intervene.plans import PlanSpec, build_plan, parse_plan_spec
from mda_fast.intervene.retrain import load_checkpoint_model, optim_from_checkpoint, retrain
from mda_fast.intervene.summary import plot_curves, summarize
from mda_fast.intervene.track import (Tracker, all_head_scores, default_token_range, repeated_random_tokens)
from mda_fast.intervene.validate import check_scores_match, check_window, manifest_units

DEFAULT_PLANS = ("baseline", "delete", "random-delete", "duplicate", "random-duplicate")


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


def run_experiment(out_dir, checkpoints, source, scores, window, plans=DEFAULT_PLANS, seeds=(0, 1, 2),
                   cadence: int = 10, end_step: int | None = None, unit=None, metric: str = "induction",
                   threshold="50%", optim: dict | None = None, shuffle_block: int = 8, model_name=None,
                   probe_n: int = 32, probe_len: int = 32, heldout: int = 32, tokenizer=None,
                   rows_per_step: int | None = None, analyze: bool = True, report: bool = True,
                   device: str = "cpu", log=print) -> dict:
    """Run (or resume) an experiment; returns the summary dict (also ``out_dir/summary.json``).

    checkpoints: dir with ``step{N}/`` subdirs (mda_fast.training format); source: RowSource or
    spec for ``open_source``; scores: score run dir or a ScoreTable; window: (a, b) steps whose rows
    the plans modify; end_step: train until here (default b; may go past b to see late emergence);
    plans: specs like ``"delete"``, ``"duplicate:replace=random"``,
    ``"insert-synthetic:path=syn,at=120"``; seeds: see ``retrain`` (0 = original data order).
    """
    from mda_fast.attribution.store import load_scores
    from mda_fast.data import open_source
    from mda_fast.training import list_checkpoints, read_state

    t_start = time.perf_counter()
    out = Path(out_dir)
    a, b = int(window[0]), int(window[1])
    end = int(end_step if end_step is not None else b)
    specs = _specs(plans)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("at least one seed is needed")
    ckpts = list_checkpoints(checkpoints)
    if not ckpts:
        raise ConfigError(f"{checkpoints} holds no step<N> checkpoints written by mda_fast.training")
    source = open_source(source)
    table = load_scores(str(scores)) if isinstance(scores, (str, Path)) else scores
    if a in ckpts:
        st = read_state(ckpts[a])
        rps = int(rows_per_step or st.get("rows_per_step") or 0)
    else:
        rps = int(rows_per_step or 1)
    check_window((a, b), ckpts, len(source), max(rps, 1), end, where=str(checkpoints))
    if rps <= 0:
        raise ConfigError(f"rows per step are unknown for checkpoint {ckpts[a]}; pass rows_per_step")
    if unit is None:
        units = manifest_units(table.manifest) or []
        if not units:
            raise ConfigError("the scores manifest names no unit; pass unit=(layer, head)")
        unit = units[0]
    unit = (int(unit[0]), int(unit[1]))
    check_scores_match(table.manifest, model=model_name or checkpoints, window=(a, b), unit=unit,
                       rows_per_step=rps, where=f"scores {scores if isinstance(scores, (str, Path)) else 'table'}")
    model0 = load_checkpoint_model(ckpts[a], device)
    cfg = model0.config
    if not (unit[0] < cfg.num_hidden_layers and unit[1] < cfg.num_attention_heads):
        raise ConfigError(f"unit L{unit[0]}.H{unit[1]} is outside the model ({cfg.num_hidden_layers} layers, "
                          f"{cfg.num_attention_heads} heads)")
    optim_cfg = optim_from_checkpoint(ckpts[a], optim)

    # resolve every plan for every seed (and read synthetic rows) before any training
    synth_cache, resolved = {}, {}
    for spec in specs:
        syn = None
        if spec.kind == "insert-synthetic":
            from mda_fast.intervene.augment import load_synthetic

            if spec.synthetic not in synth_cache:
                synth_cache[spec.synthetic] = load_synthetic(spec.synthetic, source.seq_len)
            syn = synth_cache[spec.synthetic]
        for s in seeds:
            plan = build_plan(spec, (a, b), rps, table.row_ids, table.scores, table.columns, unit=unit,
                              seed=s, n_synthetic=None if syn is None else len(syn))
            resolved[(spec.label(), s)] = (plan, syn)
    config = {"checkpoints": str(checkpoints), "source": getattr(source, "name", str(source)),
              "scores": str(scores) if isinstance(scores, (str, Path)) else None, "window": [a, b],
              "end_step": end, "rows_per_step": rps, "unit": list(unit), "plans": [s.label() for s in specs],
              "plan_specs": [vars(s) for s in specs], "seeds": seeds, "cadence": cadence, "metric": metric,
              "threshold": str(threshold), "optim": optim_cfg.to_dict(), "shuffle_block": shuffle_block,
              "probe_n": probe_n, "probe_len": probe_len, "seed_meaning":
              "seed 0 = original data order; seed k > 0 = window rows permuted within blocks of "
              f"{shuffle_block} steps (seeded), same order for every condition; random controls drawn per seed"}
    write_json(out / "config.json", config)
    for (name, s), (plan, _) in resolved.items():
        plan.save(out / "plans" / f"{name}-seed{s}.json")

    low, high = default_token_range(cfg.vocab_size)
    probe_tokens = repeated_random_tokens(probe_n, probe_len, low, high, seed=777)
    held, held_where = _heldout(source, rps, end, heldout, a)
    curves: dict = {}
    for spec in specs:
        name = spec.label()
        for s in seeds:
            run_dir = out / "runs" / name / f"seed{s}"
            done = run_dir / "curve.json"
            plan, syn = resolved[(name, s)]
            settings = (end, cadence, shuffle_block, optim_cfg.to_dict(), probe_n, probe_len, heldout)
            key = run_fingerprint(plan, syn, *settings)
            prev = read_json(done) if done.is_file() else {}
            if prev.get("fingerprint") in (key, legacy_fingerprint(plan, *settings)):
                if prev["fingerprint"] != key:              # re-stamp an older run with its content key
                    prev["fingerprint"] = key
                    write_json(done, prev)
                curves.setdefault(name, {})[str(s)] = prev
                continue
            tracker = Tracker(unit, probe_tokens, held, cadence, end_step=end)
            t0 = time.perf_counter()
            retrain(ckpts[a], source, plan, end, optim_cfg, run_dir / "train", callbacks=[tracker], seed=s,
                    shuffle_block=shuffle_block, synthetic=syn, device=device)
            curve = tracker.curve()
            curve["sec"] = time.perf_counter() - t0
            curve["fingerprint"] = key
            write_json(done, curve)
            curves.setdefault(name, {})[str(s)] = curve
            if log:
                log(f"[intervene] {name} seed {s}: {metric} {curve[metric][0]:.3f} -> {curve[metric][-1]:.3f} "
                    f"({curve['sec']:.0f}s)")
    write_json(out / "curves.json", curves)
    summary = summarize(curves, (a, b), metric, threshold)
    plot_curves(curves, (a, b), out / "curves.png", summary["threshold"])

    end_model = load_checkpoint_model(ckpts[b], device) if b in ckpts else model0
    heads = all_head_scores(end_model.eval(), probe_tokens.to(device))
    heads.update({"step": b if b in ckpts else a, "unit": list(unit)})
    write_json(out / "heads.json", heads)
    if analyze:
        from mda_fast.intervene.analyze import run_analyze

        spec0 = next((sp for sp in specs if sp.kind in ("delete", "duplicate")), PlanSpec("delete"))
        col = resolved.get((spec0.label(), seeds[0]), (None,))[0]
        run_analyze(None, source, out, column=(col.info.get("column") if col else None), top=spec0.top,
                    tail=spec0.tail, tokenizer=tokenizer, table=table, vocab_size=cfg.vocab_size)
    summary.update({"unit": list(unit), "end_step": end, "seeds": seeds, "heldout": held_where,
                    "plans": {name: {k: v for k, v in plan.info.items() if k != "spec"}
                              for (name, s), (plan, _) in resolved.items() if s == seeds[0]},
                    "seconds": time.perf_counter() - t_start})
    write_json(out / "summary.json", summary)
    if report:
        from mda_fast.intervene.report import write_report

        write_report(out, scores=table, source=source, tokenizer=tokenizer)
    return summary
