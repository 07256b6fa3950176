"""Scoring: one epoch's export in, a keep-list out.

Entry points: :func:`score_files` (export files in, keep-list and score
table written) and :func:`score` (arrays in memory in, a
:class:`~gradscore.ScoreResult` out). Both check the parameters once
(:func:`check_params`, from the method registry :mod:`.methods`) and then
pass the data along one way::

    read (gradscore.io)                          files.py
      -> partition by class, in memory or        memory.py / files.py
         spilled to disk (gradscore.io.partition)
      -> cross-class votes, for the methods      crossclass.py
         that look across classes
      -> one task per class (gradients ->         tasks.py
         neighbours -> score -> rule -> caps)
      -> gather, in class order                  tasks.py
      -> keep-list (and score table)             files.py (gradscore.io.keeplist)

The per-class tasks and the cross-class search tasks are plain functions of
their inputs; they run on local threads, on a ``concurrent.futures``
executor, or on a Dask cluster (:mod:`.dask`). Which method needs what
(features, a history, other classes' rows), whether it runs spilled and on
Dask, and how its scores read in reports, is said once, in :mod:`.methods`.
"""

from .files import score_files
from .memory import check_params, score
from .methods import METHODS

__all__ = ["score", "score_files", "check_params", "METHODS"]
