"""Causal validation of attribution scores (issue 5).

Public API::

    run_experiment(out_dir, checkpoints, source, scores, window, plans, seeds, cadence, ...)  # experiment.py
    run_demo_experiment(out)                       # demo_exp.py: the demo's full experiment in one call
    PlanSpec, parse_plan_spec, build_plan, Plan    # plans.py: which rows are deleted / duplicated / replaced
    retrain(ckpt_dir, source, plan, end_step, optim, run_dir, callbacks, seed)   # retrain.py
    Tracker, emergence, summarize                  # track.py / summary.py
    detect_kinds, repeated_spans, run_analyze      # kinds.py / analyze.py  (`mda analyze`)
    synth_rows, write_synthetic, load_synthetic    # augment.py             (`mda augment`)
    write_report(exp_dir)                          # report.py              (`mda report`)
"""

from mda_fast.intervene.plans import Plan, PlanSpec, build_plan, parse_plan_spec


def __getattr__(name):  # heavier modules load on first use
    import importlib

    where = {"run_experiment": "experiment", "run_demo_experiment": "demo_exp", "retrain": "retrain",
             "Tracker": "track", "emergence": "track", "summarize": "summary", "detect_kinds": "kinds",
             "repeated_spans": "kinds", "run_analyze": "analyze", "synth_rows": "augment",
             "write_synthetic": "augment", "load_synthetic": "augment", "write_report": "report"}
    if name in where:
        return getattr(importlib.import_module(f"mda_fast.intervene.{where[name]}"), name)
    raise AttributeError(name)


__all__ = ["Plan", "PlanSpec", "build_plan", "parse_plan_spec", "run_experiment", "run_demo_experiment",
           "retrain", "Tracker", "emergence", "summarize", "detect_kinds", "repeated_spans", "run_analyze",
           "synth_rows", "write_synthetic", "load_synthetic", "write_report"]
