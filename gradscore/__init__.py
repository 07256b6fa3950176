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
``gradscore.scoring``
    the scoring stages, one package with two entry points (:func:`score`
    in memory, :func:`score_files` from files): read -> partition by class
    (in memory, or spilled to disk by ``gradscore.io.partition``) ->
    cross-class votes -> one task per class -> gather -> keep-list, on
    threads, an executor or a Dask cluster. Every fact about a method is in
    its record in ``gradscore.scoring.methods``.
``gradscore.heads``
    multinomial logistic heads on features (the audit's probe, label-support).
``gradscore.audit``, ``gradscore.report``
    auditing a dataset through an ONNX encoder; HTML reports.
"""

from ._version import __version__
from .errors import GradscoreError, GradscoreWarning
from .io import (Epoch, EpochWriter, describe, keep_mask, read_epoch, read_keeplist,
                 write_epoch, write_keeplist, write_scores)
from .result import ClassReport, ScoreResult
from .scoring.memory import score
from .scoring.files import score_files
from .schedule import DropSchedule

__all__ = [
    "__version__", "GradscoreError", "GradscoreWarning", "Epoch", "EpochWriter",
    "describe", "keep_mask", "read_epoch", "read_keeplist", "write_epoch",
    "write_keeplist", "write_scores", "ClassReport", "ScoreResult", "score",
    "score_files", "DropSchedule",
]
