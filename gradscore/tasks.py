"""The per-class task and the gather: one class's rows in, its decisions out.

:func:`score_class` is the unit of parallel work. It is a plain function of
one class's rows (:class:`ClassData`) and the run's parameters (one dict,
from :func:`gradscore.pipeline.check_params`), returning a small
:class:`ClassOutcome` of arrays aligned with its input rows: no globals, no
open files, everything picklable. Local threads, local processes and Dask
workers run the same function; :func:`score_spilled_class` is the same task
reading its rows from a class-partitioned spill first
(:mod:`gradscore.io.partition`).

:func:`gather` puts the outcomes back into one :class:`ScoreResult`, in
class order, so the result never depends on which worker ran what, or when.
"""

from dataclasses import dataclass
import warnings

import numpy as np

from ._progress import progress_bar
from .errors import GradscoreError, GradscoreWarning
from .io.partition import load_class
from .pipeline import _score_class, assemble_result


@dataclass
class ClassData:
    """One class's rows, in any order (results do not depend on it).

    Attributes
    ----------
    label : int
    logits : ndarray of shape (n, n_classes), float32
    features : ndarray of shape (n, n_features), float32, or None
    active : ndarray of shape (n,), bool, or None
        False for rows dropped at an earlier round; None: all kept so far.
        Under ``cumulative="survivors"`` those rows are not scored.
    n_medoids : int or None
        EPIC's medoid budget for this class, from :func:`class_budgets`
        (the budget is global, so it is computed over all classes first).
    votes : tuple or None
        For the methods that look across classes (``deep-knn``, ``groups``):
        ``(agreement, drop, k_used, neighbors)`` computed over all classes
        first, the two arrays aligned with the rows.
    """

    label: int
    logits: np.ndarray
    features: np.ndarray = None
    active: np.ndarray = None
    n_medoids: int = None
    votes: tuple = None


@dataclass
class ClassOutcome:
    """What :func:`score_class` returns, aligned with its input rows.

    Attributes
    ----------
    report : ClassReport
    scores : ndarray of shape (n,), float64
        Higher = more typical; NaN where not scored.
    cluster_size : ndarray of shape (n,), int64
        EPIC cluster size; -1 where EPIC did not run.
    flagged : ndarray of shape (n,), bool
        This round's rule would drop the row (False for rows not scored).
    drop : ndarray of shape (n,), bool
        Dropped now: flagged, kept before, and within both caps.
    messages : list of str
        Warnings for the caller to raise (a worker's warnings would be lost).
    """

    report: object
    scores: np.ndarray
    cluster_size: np.ndarray
    flagged: np.ndarray
    drop: np.ndarray
    messages: list


def score_class(data, params):
    """Score one class.

    Parameters
    ----------
    data : ClassData
    params : dict
        The run's parameters, from :func:`gradscore.pipeline.check_params`
        with ``num_classes`` set. Methods that look across classes
        (``deep-knn``, ``groups``) need ``data.votes``.

    Returns
    -------
    outcome : ClassOutcome

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.pipeline import check_params
    >>> from gradscore.tasks import ClassData, score_class
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(50, 3)).astype(np.float32)
    >>> out = score_class(ClassData(0, logits, n_medoids=10), check_params(num_classes=3))
    >>> out.scores.shape, out.drop.dtype
    ((50,), dtype('bool'))
    """
    if params["method"] == "epic" and data.n_medoids is None:
        raise GradscoreError(f"class {data.label}: EPIC needs the class's medoid budget "
                             "(ClassData.n_medoids, from class_budgets); got None")
    cross = {}
    if params["method"] in ("deep-knn", "groups"):
        if data.votes is None:
            raise GradscoreError(f"class {data.label}: method {params['method']!r} looks "
                                 "across classes; its votes (ClassData.votes) come from "
                                 "all classes first")
        agreement, deep_drop, k_all, used = data.votes
        cross = dict(agreement=agreement, deep_drop=deep_drop, k_all=k_all, used=used)
    n = data.logits.shape[0]
    every = np.arange(n)
    active = np.ones(n, dtype=bool) if data.active is None else data.active
    # The authors' rule scores every row; "survivors" only those still kept.
    rows = every if params["cumulative"] == "intersect" else every[active]
    labels = np.full(n, data.label, dtype=np.int64)
    report, rows, s, csize, f, d, messages = _score_class(
        int(data.label), every, rows, active[rows], labels=labels, logits=data.logits,
        features=data.features, n_medoids=data.n_medoids, **params, **cross)
    scores = np.full(n, np.nan)
    cluster_size = np.full(n, -1, dtype=np.int64)
    flagged = np.zeros(n, dtype=bool)
    drop = np.zeros(n, dtype=bool)
    if s is not None:
        scores[rows] = s
        flagged[rows] = f
        drop[rows] = d
    if csize is not None:
        cluster_size[rows] = csize
    return ClassOutcome(report=report, scores=scores, cluster_size=cluster_size,
                        flagged=flagged, drop=drop, messages=messages)


def score_spilled_class(slices, active, n_medoids, params):
    """:func:`score_class` on a class read from the spill.

    Parameters
    ----------
    slices : ClassSlices
        From :meth:`gradscore.io.partition.Partition.class_slices`.
    active : ndarray of shape (slices.n,), bool, or None
    n_medoids : int or None
    params : dict
    """
    logits, features = load_class(slices)
    return score_class(ClassData(slices.label, logits, features, active, n_medoids), params)


def gather(outcomes, class_rows, *, n, active, params, progress=False, total=None):
    """Assemble per-class outcomes, in class order, into one :class:`ScoreResult`.

    Parameters
    ----------
    outcomes : iterable of ClassOutcome
        In the order of ``class_rows``.
    class_rows : iterable of ndarray
        Each class's row numbers in the whole epoch, in the order its task
        saw them.
    n : int
        Rows in the epoch.
    active : ndarray of shape (n,), bool, or None
    params : dict
    """
    scores = np.full(n, np.nan)
    cluster_size = np.full(n, -1, dtype=np.int64)
    flagged = np.zeros(n, dtype=bool)
    drop = np.zeros(n, dtype=bool)
    reports = []
    bar = progress_bar(outcomes, enabled=progress, total=total, desc="classes", unit="class")
    for out, rows in zip(bar, class_rows):
        for m in out.messages:
            warnings.warn(m, GradscoreWarning, stacklevel=4)
        reports.append(out.report)
        scores[rows] = out.scores
        cluster_size[rows] = out.cluster_size
        flagged[rows] = out.flagged
        drop[rows] = out.drop
    return assemble_result(active, drop, scores=scores, cluster_size=cluster_size,
                           flagged=flagged, classes=reports, params=params)
