"""EK-FAC attribution of units (attention heads) to training rows: fit, score, store, top rows.

Layering: api (front door) -> ekfac / queries / scoring (orchestration over batches and ranks)
-> forward (one captured pass) -> factors + mda_fast.ops (math). Scores on disk: store.
The names below are imported on first use, so reading a config (``attribution.settings``) or
the rank (``attribution.dist``) does not load the model code.
"""

import importlib

_HOME = {"MDA": "api", "report_top": "api", "FactorSet": "factors", "BlockFactors": "factors",
         "Settings": "settings", "ScoreTable": "store", "load_scores": "store", "top_rows": "top",
         "top_share": "top", "cumulative_share": "top", "format_report": "top"}

__all__ = ["MDA", "Settings", "FactorSet", "BlockFactors", "ScoreTable", "load_scores", "top_rows", "top_share",
           "cumulative_share", "format_report", "report_top"]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
