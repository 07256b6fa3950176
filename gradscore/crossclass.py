"""Votes over all classes, for the methods that look across classes.

``deep-knn`` and ``groups`` judge an example (or a group) by the labels of
its nearest neighbours in feature space among *all* classes, so their
decisions cannot come from one class's rows alone. This stage runs after the
read and before the per-class tasks: it computes each scored row's votes
once, over the whole epoch, and the per-class tasks
(:func:`gradscore.tasks.score_class`) take their class's rows of them
(:class:`CrossClassVotes`), apply the caps and report.

The data's way for these methods is therefore
read -> cross-class votes -> per-class task -> gather.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import warnings

import numpy as np

from . import neighbors as nb
from ._threads import n_threads, one_blas_thread_each
from .errors import GradscoreWarning
from .gradients import DenseGradients
from .history import margin_gain
from .selection.feature_space import deep_knn_agreement
from .selection.groups import foreign_groups, tree_edges
from .selection.trajectory import trajectory_drop
from .tasks import canonical_order


@dataclass
class CrossClassVotes:
    """Votes of some rows (an epoch's, or one class's slice of them).

    Attributes
    ----------
    agreement : ndarray of shape (n,), float64
        Share of the row's neighbours (over all classes) that carry its
        label, lowered for members of dropped groups to the share of their
        label around the group; NaN for rows not scored. Higher = more
        typical.
    drop : ndarray of shape (n,), bool
        The method's rule: the row's label is not a plurality of its votes,
        or (``groups``) it belongs to a group judged foreign.
    k_used : int
        Neighbours per row actually used.
    neighbors : str
        The neighbour backend that ran.
    """

    agreement: np.ndarray
    drop: np.ndarray
    k_used: int
    neighbors: str

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
    features : ndarray of shape (n, n_features)
    scored : ndarray of shape (n,), bool
        Rows that vote and are judged (all rows under the ``"intersect"``
        rule, the rows still kept under ``"survivors"``).
    params : dict
        From :func:`gradscore.pipeline.check_params`; ``method`` is
        ``"deep-knn"``, ``"groups"`` or ``"trajectory"``.
    n_jobs : int, default=None
        Threads for the per-class trees of ``groups``.
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
    n = labels.size
    k, neighbors, random_state = params["k"], params["neighbors"], params["random_state"]
    act = np.flatnonzero(scored)
    k_all = min(k, act.size - 1)
    agreement = np.full(n, np.nan)
    drop = np.zeros(n, dtype=bool)
    if k_all < 1:
        return CrossClassVotes(agreement, drop, max(k_all, 0), "none")
    idx, _, used = nb.kneighbors(DenseGradients(features[act]), k_all, backend=neighbors,
                                 random_state=random_state)
    group_drop = share = moved = None
    if params["method"] in ("groups", "trajectory"):
        trees = _class_trees(labels[act], logits[act], features[act], k=k, neighbors=neighbors,
                             random_state=random_state, num_classes=params["num_classes"],
                             n_jobs=n_jobs)
        group_drop, share = foreign_groups(labels[act], idx, trees,
                                           num_classes=params["num_classes"],
                                           features=np.asarray(features[act], dtype=np.float64))
        if params["method"] == "trajectory":
            moved = _trajectory(labels[act], logits[act], history.take(act), trees)
    agreement[act], drop[act] = deep_knn_agreement(labels[act], idx, params["num_classes"],
                                                   ignore=group_drop)
    if group_drop is not None:
        agreement[act] = np.fmin(agreement[act], share)
        drop[act] |= group_drop
    if moved is not None and moved.drop.any():
        agreement[act] = np.where(moved.drop, np.fmin(agreement[act], -moved.lift),
                                  agreement[act])
        drop[act] |= moved.drop
    return CrossClassVotes(agreement, drop, k_all, used)


def _trajectory(labels, logits, history, trees):
    """The trajectory rule on the scored rows, warning when the reference carries no signal."""
    # The reference predicts a row's label where its own-label margin is positive.
    res = trajectory_drop(margin_gain(history, labels, logits), history.margin[0] > 0,
                          labels, trees)
    if not res.acted:
        warnings.warn(
            f"trajectory: the reference export gives only {100 * res.reference_agreement:.0f}% "
            "of the rows their label (a freshly initialised head or network?), so its margins "
            "carry no signal and only groups' rule ran", GradscoreWarning, stacklevel=2)
    return res


def _class_trees(labels, logits, features, *, k, neighbors, random_state, num_classes, n_jobs):
    """Every class's single-linkage tree over its k-NN graph in feature space:
    ``[(label, rows, ei, ej), ...]``, the candidate groups of ``groups``."""
    def one(c):
        rows = np.flatnonzero(labels == c)
        if rows.size < 3:
            return None
        # Canonical order, as for EPIC: permuting the input permutes the result.
        rows = rows[canonical_order(logits[rows], features[rows])]
        k_c = min(k, rows.size - 1)
        idx, d2, _ = nb.kneighbors(DenseGradients(features[rows]), k_c, backend=neighbors,
                                   random_state=random_state)
        return (c, rows) + tree_edges(idx, d2)[:2]

    jobs = n_threads(n_jobs, num_classes)
    with ThreadPoolExecutor(max_workers=jobs) as pool, one_blas_thread_each(jobs):
        return [t for t in (pool.map(one, range(num_classes)) if jobs > 1
                            else map(one, range(num_classes))) if t is not None]
