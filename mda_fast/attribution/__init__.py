"""EK-FAC attribution of units (attention heads) to training rows: fit, score, store, top rows.

Layering: api (front door) -> ekfac / queries / scoring (orchestration over batches and ranks)
-> forward (one captured pass) -> factors + mda_fast.ops (math). Scores on disk: store.
"""

from mda_fast.attribution.api import MDA, report_top
from mda_fast.attribution.factors import BlockFactors, FactorSet
from mda_fast.attribution.settings import Settings
from mda_fast.attribution.store import ScoreTable, load_scores
from mda_fast.attribution.top import cumulative_share, format_report, top_rows, top_share

__all__ = ["MDA", "Settings", "FactorSet", "BlockFactors", "ScoreTable", "load_scores", "top_rows", "top_share",
           "cumulative_share", "format_report", "report_top"]
