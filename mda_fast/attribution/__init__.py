"""EK-FAC attribution of units (attention heads) to training rows: fit, score, store, top rows.

Layering: api (front door) -> ekfac / queries / scoring (orchestration over batches and ranks)
-> forward (one captured pass) -> factors + mda_fast.ops (math). Scores on disk: store.
The names below are imported on first use (``mda_fast.lazy``), so reading a config
(``attribution.settings``) or the rank (``attribution.dist``) does not load the model code.
"""

from mda_fast.lazy import lazy_attributes

_HOME = {"MDA": "api", "report_top": "api", "FactorSet": "factors", "BlockFactors": "factors",
         "Settings": "settings", "ScoreTable": "store", "load_scores": "store", "top_rows": "top",
         "top_share": "top", "cumulative_share": "top", "format_report": "top"}
__all__ = list(_HOME)
__getattr__ = lazy_attributes(__name__, _HOME)
