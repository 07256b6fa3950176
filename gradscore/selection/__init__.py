"""Keep/drop decisions within one class, from gradients, neighbours and density."""

from .epic import (epic_class, epic_dense, epic_exact, epic_from_similarity, medoid_budgets,
                   EpicResult)
from .rules import apply_cap, drop_by_fraction, drop_by_robust_threshold, limit_drops

__all__ = ["epic_class", "epic_dense", "epic_exact", "epic_from_similarity", "medoid_budgets", "EpicResult",
           "apply_cap", "limit_drops", "drop_by_fraction", "drop_by_robust_threshold"]
