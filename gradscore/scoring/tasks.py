"""The per-class task and the gather: one class's rows in, its decisions out.

:func:`score_class` is the one home of the per-class computation (gradients
-> neighbours -> density -> selection -> caps) and the unit of parallel
work. It is a plain function of one class's rows (:class:`ClassData`) and
the run's parameters (one dict, from :func:`gradscore.scoring.memory.check_params`),
returning a small :class:`ClassOutcome` of arrays aligned with its input
rows: no globals, no open files, everything picklable. The in-memory run
(:func:`gradscore.score`), local threads and processes, and Dask workers all
call it; :func:`score_spilled_class` is the same task reading its rows from
a class-partitioned spill first (:mod:`gradscore.io.partition`).

:func:`gather` puts the outcomes back into one :class:`ScoreResult`, in
class order, so the result never depends on which worker ran what, or when.
"""

from dataclasses import dataclass
import warnings

import numpy as np

from .._progress import progress_bar
from .._threads import one_blas_thread
from ..errors import GradscoreError, GradscoreWarning
from ..io.partition import load_class
from ..result import ClassReport, assemble_result
from ..selection import apply_cap, limit_drops
from .methods import METHODS


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
        EPIC's medoid budget for this class, from
        :func:`gradscore.scoring.memory.class_budgets` (the budget is global, so it
        is computed over all classes first).
    votes : CrossClassVotes or None
        For the methods that look across classes (``deep-knn``, ``groups``):
        this class's rows of the votes computed over all classes first
        (:func:`gradscore.scoring.crossclass.cross_class_votes`).
    """

    label: int
    logits: np.ndarray
    features: np.ndarray = None
    active: np.ndarray = None
    n_medoids: int = None
    votes: object = None


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


def canonical_order(logits, features=None):
    """Order rows by content: lexicographic for narrow rows, else by a fixed
    random projection (ties there mean equal rows, or practically so).

    Every per-class rule runs on its rows in this order, so greedy ties and
    floating-point sums come out the same however the caller ordered the
    rows: permuting the input permutes the decisions, and a spilled run
    matches an in-memory one bit for bit.
    """
    x = logits if features is None else np.concatenate([logits, features], axis=1)
    if x.shape[1] <= 32:
        return np.lexsort(x.T[::-1])
    w = np.random.default_rng(12345).standard_normal(x.shape[1])
    return np.argsort(x.astype(np.float64) @ w, kind="stable")


def score_class(data, params):
    """Score one class.

    Parameters
    ----------
    data : ClassData
    params : dict
        The run's parameters, from :func:`gradscore.scoring.memory.check_params`
        with ``num_classes`` set. Methods that look across classes
        (``deep-knn``, ``groups``) need ``data.votes``.

    Returns
    -------
    outcome : ClassOutcome

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.scoring.memory import check_params
    >>> from gradscore.scoring.tasks import ClassData, score_class
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(50, 3)).astype(np.float32)
    >>> out = score_class(ClassData(0, logits, n_medoids=10), check_params(num_classes=3))
    >>> out.scores.shape, out.drop.dtype
    ((50,), dtype('bool'))
    """
    method, label = METHODS[params["method"]], int(data.label)
    if method.medoid_budget and data.n_medoids is None:
        raise GradscoreError(f"class {label}: EPIC needs the class's medoid budget "
                             "(ClassData.n_medoids, from class_budgets); got None")
    if method.cross_class and data.votes is None:
        raise GradscoreError(f"class {label}: method {method.name!r} decides from votes over "
                             "all classes (gradscore.scoring.crossclass.cross_class_votes); "
                             "ClassData.votes is None")
    n = data.logits.shape[0]
    active = np.ones(n, dtype=bool) if data.active is None else np.asarray(data.active)
    # The authors' rule scores every row; "survivors" only those still kept.
    rows = np.arange(n) if params["cumulative"] == "intersect" else np.flatnonzero(active)
    dropped_before = int(n - np.count_nonzero(active))
    report = ClassReport(label=label, n=n, n_scored=rows.size, k_used=0, neighbors="none",
                         dropped=0, dropped_before=dropped_before, cap_hit=False,
                         dropped_total=dropped_before)
    outcome = ClassOutcome(report=report, scores=np.full(n, np.nan),
                           cluster_size=np.full(n, -1, dtype=np.int64),
                           flagged=np.zeros(n, dtype=bool), drop=np.zeros(n, dtype=bool),
                           messages=[])
    if rows.size < 2:
        if rows.size:
            outcome.messages.append(f"class {label} has {rows.size} example to score; "
                                    "it is kept unscored")
        return outcome
    if method.cross_class:
        report.k_used, report.neighbors = data.votes.k_used, data.votes.neighbors
        s, d = data.votes.agreement[rows], data.votes.drop[rows]
    else:
        # Canonical order within the class (by content, not input position).
        with_features = method.needs_features or params["gradient"] != "logits"
        order = canonical_order(data.logits[rows],
                                data.features[rows] if with_features else None)
        rows = rows[order]
        s, d, csize = method.rule(data, rows, params, report, outcome.messages)
        if csize is not None:
            outcome.cluster_size[rows] = csize
    flagged, report.cap_hit = apply_cap(d, s, params["max_drop_fraction"])
    new = flagged & active[rows]
    # The cumulative cap: drops before plus new drops stay within the limit.
    room = max(0, int(np.floor(params["max_total_drop_fraction"] * n)) - dropped_before)
    new, report.total_cap_hit = limit_drops(new, s, room)
    report.flagged = int(flagged.sum())
    report.dropped = int(new.sum())
    report.dropped_total = dropped_before + report.dropped
    outcome.scores[rows] = s
    outcome.flagged[rows] = flagged
    outcome.drop[rows] = new
    return outcome


def score_spilled_class(slices, active, n_medoids, params, votes=None):
    """:func:`score_class` on a class read from the spill.

    Parameters
    ----------
    slices : ClassSlices
        From :meth:`gradscore.io.partition.Partition.class_slices`.
    active : ndarray of shape (slices.n,), bool, or None
    n_medoids : int or None
    params : dict
    votes : CrossClassVotes or None
        This class's rows of the cross-class votes, in the spill's row order.
    """
    logits, features = load_class(slices)
    # One BLAS thread wherever the task runs (a thread, a process, a Dask
    # worker): the scores' bits then do not depend on the runner (issue 24).
    with one_blas_thread():
        return score_class(ClassData(slices.label, logits, features, active, n_medoids,
                                     votes), params)


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
