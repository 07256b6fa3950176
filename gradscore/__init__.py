"""gradscore: find likely poisons by their isolation in last-layer gradient space.

Stages, each in its own module:

``gradscore.io``
    read and validate epoch exports (HDF5, schema v1); write exports,
    keep-lists and score tables.
``gradscore.gradients``
    closed-form cross-entropy gradients of the final layer.
``gradscore.neighbors``
    per-class nearest neighbours (exact or pynndescent).
``gradscore.density``
    k-NN density score (higher = denser = more typical).
``gradscore.selection``
    EPIC facility-location clusters, density drop rules, the safety cap.
``gradscore.tasks``
    the per-class task (gradients -> neighbours -> density -> selection ->
    caps) and the gather, in class order.
``gradscore.crossclass``
    votes over all classes, for the methods that look across classes.
``gradscore.pipeline``
    :func:`score`: parameters checked once, then the stages class by class.
``gradscore.io.partition``, ``gradscore.distributed``
    the out-of-core way for large exports: one pass into a class-partitioned
    spill, then the same per-class tasks on threads, processes or a Dask
    cluster.
"""

from ._version import __version__
from .errors import GradscoreError, GradscoreWarning
from .io import (Epoch, EpochWriter, describe, keep_mask, read_epoch, read_keeplist,
                 write_epoch, write_keeplist, write_scores)
from .result import ClassReport, ScoreResult
from .pipeline import score
from .api import score_files
from .schedule import DropSchedule

__all__ = [
    "__version__", "GradscoreError", "GradscoreWarning", "Epoch", "EpochWriter",
    "describe", "keep_mask", "read_epoch", "read_keeplist", "write_epoch",
    "write_keeplist", "write_scores", "ClassReport", "ScoreResult", "score",
    "score_files", "DropSchedule",
]
