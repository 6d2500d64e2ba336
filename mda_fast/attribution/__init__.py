"""EK-FAC attribution of units (attention heads) to training rows: fit, score, store, top rows.

Layering (a module imports only from those after it):
pipeline (a run's stages into one directory) -> api (MDA: fit, score, index) -> index (build, query)
-> context (RunContext: the run's checked parts, built once by build_context) -> ekfac / shared_pass
(the fit's passes) / queries (probe gradients, preconditioned) -> scorer (the one inner-product
scorer: one batch loop, one scatter, one store path; op 1 and op 2) -> forward (one captured pass)
-> factors, index_basis + mda_fast.ops (math). On disk: store (scores), index_store (the index);
identity (what each stage was computed from), settings (every knob, by stage).
The names below are imported on first use (``mda_fast.lazy``), so reading a config
(``attribution.settings``) or the rank (``attribution.dist``) does not load the model code.
"""

from mda_fast.lazy import lazy_attributes

_HOME = {"MDA": "api", "report_top": "api", "FactorSet": "factors", "BlockFactors": "factors",
         "Settings": "settings", "ScoreTable": "store", "load_scores": "store", "top_rows": "top",
         "top_share": "top", "cumulative_share": "top", "format_report": "top"}
__all__ = list(_HOME)
__getattr__ = lazy_attributes(__name__, _HOME)
