"""Votes over all classes, for the methods that look across classes.

``deep-knn``, ``groups``, ``trajectory`` and ``label-support`` judge an example (or a group)
by the labels of its nearest neighbours in feature space among *all*
classes (``label-support`` also by a head fitted across classes), so their
decisions cannot come from one class's rows alone. This stage runs after the
read and before the per-class tasks: it computes each scored row's votes
once, over the whole epoch, and the per-class tasks
(:func:`gradscore.scoring.tasks.score_class`) take their class's rows of them
(:class:`CrossClassVotes`), apply the caps and report.

The data's way for these methods is therefore
read -> cross-class votes -> per-class task -> gather.

The votes come from one neighbour search (:mod:`gradscore.neighbors._cross`):
each row's ``k`` nearest rows over all classes (deep k-NN's votes) and
within its class (the single-linkage trees of ``groups``), exact when that
is cheap and over k-means cells otherwise. The search runs as plain tasks
on the class-partitioned spill, so an in-memory run
(:func:`cross_class_votes`), a spilled one and a Dask one
(:func:`spilled_cross_class_votes`) compute the same numbers, and the
group passes (:func:`gradscore.selection.groups.foreign_groups`) then run
on the neighbour lists alone, the rare clumps no edge leaves going back to
the features through the same store. Each method's own rule on these
neighbour lists is its vote rule in :mod:`gradscore.scoring.rules`, named
by its record in :mod:`gradscore.scoring.methods`.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .._threads import n_threads
from ..neighbors._cross import ClassInput, cross_neighbors
from ..review import Review, join_signals, neighbour_shares, suggest
from .methods import METHODS, check_cross_backend
from .rules import Voters


@dataclass
class CrossClassVotes:
    """Votes of some rows (an epoch's, or one class's slice of them).

    Attributes
    ----------
    agreement : ndarray of shape (n,), float64
        Share of the row's neighbours (over all classes) that carry its
        label, lowered for members of dropped groups to the share of their
        label around the group (``label-support``: the support, see
        :mod:`gradscore.selection.label_support`); NaN for rows not
        scored. Higher = more typical.
    drop : ndarray of shape (n,), bool
        The method's rule: the row's label is not a plurality of its votes
        (``label-support``: its support is below the threshold), or
        (``groups``) it belongs to a group judged foreign.
    k_used : int
        Neighbours per row actually used.
    neighbors : str
        The neighbour search that ran: ``"exact"`` or ``"cells"``.
    review : Review, default=None
        The dropped rows' suggested labels, confidence and signal
        (:mod:`gradscore.review`); only on the epoch's votes, not a
        class's slice of them.
    """

    agreement: np.ndarray
    drop: np.ndarray
    k_used: int
    neighbors: str
    review: Review = None

    def take(self, rows):
        """The votes of ``rows`` (an index array), e.g. one class's."""
        return CrossClassVotes(self.agreement[rows], self.drop[rows], self.k_used,
                               self.neighbors)


def cross_class_votes(labels, logits, features, scored, params, *, n_jobs=None, history=None):
    """Deep k-NN's (and ``groups``' and ``trajectory``'s) votes over every class, in memory.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    logits : ndarray of shape (n, n_classes)
        For ``trajectory``'s margins (the other methods vote from features).
    features : ndarray of shape (n, n_features)
    scored : ndarray of shape (n,), bool
        Rows that vote and are judged (all rows under the ``"intersect"``
        rule, the rows still kept under ``"survivors"``).
    params : dict
        From :func:`gradscore.scoring.memory.check_params`; ``method`` is
        ``"deep-knn"``, ``"groups"``, ``"trajectory"`` or ``"label-support"``.
    n_jobs : int, default=None
        Threads for the search tasks.
    history : History, default=None
        For ``trajectory``: the rows' margins in earlier exports
        (:mod:`gradscore.history`). Members of groups its rule drops get
        minus their lift (in gain spreads) as agreement, below every
        other row's.

    Returns
    -------
    votes : CrossClassVotes
        Aligned with all ``n`` rows.
    """
    features = np.asarray(features, dtype=np.float32)
    inputs = [ClassInput(c, np.flatnonzero(scored & (labels == c)), features=features)
              for c in range(params["num_classes"])]
    inputs = [inp for inp in inputs if inp.rows.size]
    jobs = n_threads(n_jobs, 1 << 30)
    # One BLAS thread per task, whatever the number of tasks: a distance's
    # bits then do not depend on how many threads BLAS splits a product over
    # (Dask's workers also run BLAS on one thread).
    with ThreadPoolExecutor(jobs) as pool, threadpool_limits(limits=1, user_api="blas"):
        return _votes(labels, scored, params, inputs, n_features=features.shape[1],
                      dtype="float32", folder=None, executor=pool, logits=logits,
                      history=history, features=features)


def spilled_cross_class_votes(part, scored, params, *, executor, folder):
    """:func:`cross_class_votes` on a class-partitioned spill, with ``executor``'s workers.

    Parameters
    ----------
    part : Partition
        From :func:`gradscore.io.partition.join_indexes`, spilled with features.
    scored : ndarray of shape (N,), bool
        Over the epoch's rows (id order).
    params : dict
    executor : concurrent.futures.Executor
        Runs the search tasks (local threads, processes, or a Dask client's).
    folder : str
        Where the search writes its cells (inside the spill folder, on
        storage every worker sees).

    Returns
    -------
    votes : CrossClassVotes
        Aligned with the epoch's rows (id order).
    """
    epoch = part.epoch
    inputs = []
    for c in range(epoch.num_classes):
        spill_rows = part.class_rows[c]
        if not spill_rows.size:
            continue
        order = np.argsort(spill_rows, kind="stable")
        take = order[scored[spill_rows[order]]]
        if not take.size:
            continue
        pieces = [(fpath, first, count) for _, fpath, first, count in
                  part.class_slices(c).pieces]
        inputs.append(ClassInput(c, spill_rows[take], pieces=pieces,
                                 dtype=part.features_dtype, n_features=epoch.n_features,
                                 take=take))
    with threadpool_limits(limits=1, user_api="blas"):
        return _votes(epoch.labels, scored, params, inputs, n_features=epoch.n_features,
                      dtype=part.features_dtype, folder=folder, executor=executor)


def _votes(labels, scored, params, inputs, *, n_features, dtype, folder, executor,
           logits=None, history=None, features=None):
    """The votes from one cross-class neighbour search (see the module docstring).

    ``label-support`` also fits a head on the scored rows' features
    (``features``, or read from the spill: :func:`_scored_features`).
    """
    check_cross_backend(params["method"], params["neighbors"])
    n, num_classes = labels.size, params["num_classes"]
    act = np.flatnonzero(scored)
    agreement = np.full(n, np.nan)
    drop = np.zeros(n, dtype=bool)
    if act.size < 2:
        return CrossClassVotes(agreement, drop, 0, "none")
    found = cross_neighbors(
        inputs, k=params["k"], n_rows=n, n_features=n_features, dtype=dtype,
        probes="all" if params["neighbors"] == "brute" else "auto",
        seed=params["random_state"] or 0, folder=folder, executor=executor)
    # Voters are numbered by their position in ``act``.
    pos = np.full(n, -1, np.int64)
    pos[act] = np.arange(act.size)
    idx = pos[found.indices[act]]
    del found.indices, found.sqdist
    v = Voters(labels[act], idx, found, act, pos, num_classes, executor, logits=logits,
               features=features, history=history,
               scored_features=lambda: _scored_features(inputs, act, pos, n_features,
                                                        features))
    # The method's vote rule (gradscore.scoring.rules), on the scored rows; the
    # rule names the signals behind its drops (and label-support its head).
    agreement[act], drop[act] = METHODS[params["method"]].rule(v)
    review = Review.empty(n)
    _review(review, act, v.labels, idx, drop[act], num_classes, probs=v.probs,
            signals=v.signals)
    return CrossClassVotes(agreement, drop, found.k_all, found.method, review)


def _scored_features(inputs, act, pos, n_features, features=None):
    """The scored rows' features, float32, in ``act`` order: ``label-support``'s head.

    In memory, ``features[act]``; spilled, each class's rows read from the
    spill (the same float32 values, in the same order, so the head and the
    keep-list are the in-memory run's). The head is fitted in this process:
    it holds ``len(act) * n_features`` float32 values, as an in-memory run does.
    """
    if features is not None:
        return features[act]
    x = np.empty((act.size, n_features), dtype=np.float32)
    for inp in inputs:
        x[pos[inp.rows]] = inp.load()
    return x


def _review(review, act, lab, idx, drop, num_classes, *, probs, signals):
    """Fill ``review`` for the dropped scored rows (positions in ``act``).

    ``probs``: the head's probabilities of the scored rows (n_act, C)
    (``label-support``'s own head), or None: the suggestion then waits for
    the export's logits (``pending``, completed by
    :func:`gradscore.review.review_by_class`, in memory or from the spill).
    """
    where = np.flatnonzero(drop)
    if not where.size:
        return
    rows = act[where]
    # The neighbours' labels; rows outside the scored set (-1) do not vote.
    shares = neighbour_shares(np.where(idx[where] >= 0, lab[idx[where]], -1), num_classes)
    p = None if probs is None else probs[where]
    review.suggested[rows], review.confidence[rows] = suggest(
        lab, where, num_classes=num_classes, shares=shares, probs=p)
    review.signal[rows] = join_signals(*[(name, m[where]) for name, m in signals])
    if probs is None:
        review.pending_rows, review.pending_share = rows, shares
