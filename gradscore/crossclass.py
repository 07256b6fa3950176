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

import numpy as np

from . import neighbors as nb
from ._threads import n_threads, one_blas_thread_each
from .gradients import DenseGradients
from .selection.feature_space import deep_knn_agreement
from .selection.groups import foreign_groups, tree_edges
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


def cross_class_votes(labels, logits, features, scored, params, *, n_jobs=None):
    """Deep k-NN's (and ``groups``') votes over every class, in memory.

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
        ``"deep-knn"`` or ``"groups"``.
    n_jobs : int, default=None
        Threads for the per-class trees of ``groups``.

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
    group_drop = share = None
    if params["method"] == "groups":
        group_drop, share = _foreign_groups(
            labels[act], logits[act], features[act], idx, k=k, neighbors=neighbors,
            random_state=random_state, num_classes=params["num_classes"], n_jobs=n_jobs)
    agreement[act], drop[act] = deep_knn_agreement(labels[act], idx, params["num_classes"],
                                                   ignore=group_drop)
    if group_drop is not None:
        agreement[act] = np.fmin(agreement[act], share)
        drop[act] |= group_drop
    return CrossClassVotes(agreement, drop, k_all, used)


def _foreign_groups(labels, logits, features, nbr_idx, *, k, neighbors, random_state,
                    num_classes, n_jobs):
    """The ``groups`` method's group pass over every class.

    ``nbr_idx`` is every row's k-NN list in feature space over all classes.
    Returns ``(drop, own_share)`` over the given rows: members of groups
    judged foreign to their label, and the lowest share of their own label
    around such a group (NaN for rows in no dropped group).
    """
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
        trees = [t for t in (pool.map(one, range(num_classes)) if jobs > 1
                             else map(one, range(num_classes))) if t is not None]
    return foreign_groups(labels, nbr_idx, trees, num_classes=num_classes,
                          features=np.asarray(features, dtype=np.float64))
