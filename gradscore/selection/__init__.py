"""Keep/drop decisions within one class, from gradients, neighbours and density."""

from .epic import epic_dense, epic_sparse, EpicResult
from .rules import apply_cap, drop_by_fraction, drop_by_robust_threshold

__all__ = ["epic_dense", "epic_sparse", "EpicResult", "apply_cap",
           "drop_by_fraction", "drop_by_robust_threshold"]
