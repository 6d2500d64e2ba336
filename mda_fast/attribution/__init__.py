"""EK-FAC attribution of units (attention heads) to training rows: fit, score, index, store.

The folders are the stages (a module imports only from those after it in this list)::

    trajectory.py TrajectoryRun: S segments of a window, each a Pipeline at its own end checkpoint
    unrolled.py   SOURCE propagation between segments (each segment's EK-FAC, Adam's step size)
    pipeline.py   Pipeline: a run's stages (heads -> fit -> score -> top, index, query) into one directory
    api.py        MDA: the Python front door, a thin view on one RunContext (fit, score, index, top)
    index/        build (one pass writing per-row index coordinates), query (Index: any probe, in
                  seconds), basis (whitened EK-FAC coordinates, op 1), store (resumable chunks)
    fit/          ekfac (two passes over a subsample), shared_pass (whole-window fit sharing its second
                  pass with scoring), factors (a block's EK-FAC factors: math, file format)
    score/        queries (probe gradients, preconditioned), scorer (the one inner-product scorer: one
                  batch loop, one scatter, one store path; op 1 and op 2), forward (one captured pass)
    store/        scores (the resumable score store, ScoreTable), top (top rows decoded, figures),
                  parts (a window scored in parts by independent jobs, then merged)
    run/          context (RunContext, built once by build_context), inputs (checks), settings (every
                  knob, by stage), identity (what each output was computed from), dist (ranks)

The names below are imported on first use (``mda_fast.lazy``), so reading a config
(``attribution.run.settings``) or the rank (``attribution.run.dist``) does not load the model code.
"""

from mda_fast.lazy import lazy_attributes

_HOME = {"MDA": "api", "report_top": "api", "Pipeline": "pipeline", "FactorSet": "fit.factors",
         "BlockFactors": "fit.factors", "Settings": "run.settings", "ScoreTable": "store.scores",
         "load_scores": "store.scores", "top_rows": "store.top", "top_share": "store.top",
         "cumulative_share": "store.top", "format_report": "store.top"}
__all__ = list(_HOME)
__getattr__ = lazy_attributes(__name__, _HOME)
