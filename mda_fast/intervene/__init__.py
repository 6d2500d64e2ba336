"""Causal validation of attribution scores: retrain with rows removed, duplicated or inserted.

Public API::

    run_experiment(out_dir, checkpoints, source, scores, window, plans, seeds, jobs, ...)  # experiment.py
    prepare_experiment / run_conditions / summarize / write_outputs   # its four stages
    run_lds(out_dir, shared, window, rows_per_step, targets)   # lds.py: do scores predict retraining?
    PlanSpec, parse_plan_spec, build_plan, Plan    # plans.py: which rows are deleted / duplicated / replaced
    retrain(ckpt_dir, source, plan, end_step, optim, run_dir, callbacks, seed)   # retrain.py
    Tracker, StopRule, emergence, TrackedUnit      # track.py / summary.py
    detect_kinds, repeated_spans, run_analyze      # kinds.py / analyze.py  (`mda analyze`)
    synth_rows, write_synthetic, load_synthetic    # augment.py             (`mda augment`)
    write_report(exp_dir)                          # report.py              (`mda report`)
"""

from mda_fast.intervene.plans import Plan, PlanSpec, build_plan, parse_plan_spec


def __getattr__(name):  # heavier modules load on first use
    import importlib

    where = {"run_experiment": "experiment", "prepare_experiment": "experiment", "run_conditions": "experiment",
             "run_lds": "lds", "retrain": "retrain", "Tracker": "track", "StopRule": "track", "emergence": "track",
             "TrackedUnit": "summary", "summarize": "experiment", "detect_kinds": "kinds",
             "repeated_spans": "kinds", "run_analyze": "analyze", "synth_rows": "augment",
             "write_synthetic": "augment", "load_synthetic": "augment", "write_report": "report"}
    if name in where:
        return getattr(importlib.import_module(f"mda_fast.intervene.{where[name]}"), name)
    raise AttributeError(name)


__all__ = ["Plan", "PlanSpec", "build_plan", "parse_plan_spec", "run_experiment", "prepare_experiment",
           "run_conditions", "run_lds", "retrain", "Tracker", "StopRule", "TrackedUnit", "emergence", "summarize", "detect_kinds", "repeated_spans", "run_analyze",
           "synth_rows", "write_synthetic", "load_synthetic", "write_report"]
