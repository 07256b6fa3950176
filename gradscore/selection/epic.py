"""EPIC: drop examples that greedy facility location leaves in tiny clusters.

Following Yang et al., "Not All Poisons are Created Equal" (ICML 2022): per
class, greedy facility location picks ``ceil(fraction * n)`` medoids with
similarity :math:`s(i, j) = \\max d^2 - d^2(i, j)` over squared euclidean
gradient distances; every example joins its most similar medoid (ties: the
medoid picked first); examples in clusters of at most ``cluster_threshold``
members are dropped.

Two ways to run it:

``epic_dense``
    The full n x n kernel, exactly the reference semantics (the authors'
    code builds the same dense kernel). O(n^2) memory.
``epic_sparse``
    The same greedy restricted to the k-NN graph (O(n k) memory): candidate
    j only covers examples that list j among their k nearest neighbours.
    An example not yet covered by any medoid counts as lying at
    ``uncovered_scale`` times its k-NN radius from the nearest medoid. Once
    medoids are chosen, each example joins its exact nearest medoid.
"""

from dataclasses import dataclass
import math

import numpy as np

from ._kernels import dense_facility_location, sparse_facility_location
from ..neighbors._exact import nearest_target


@dataclass
class EpicResult:
    """EPIC outcome for one class.

    Attributes
    ----------
    medoids : ndarray of shape (n_medoids,)
        Row numbers of the medoids, in selection order.
    cluster : ndarray of shape (n,)
        Position in ``medoids`` of each row's medoid.
    cluster_size : ndarray of shape (n,)
        Size of the cluster each row belongs to.
    drop : ndarray of shape (n,), bool
    mode : str
        ``"dense"`` or ``"sparse"``.
    """

    medoids: np.ndarray
    cluster: np.ndarray
    cluster_size: np.ndarray
    drop: np.ndarray
    mode: str


def n_medoids(n, fraction):
    return max(1, min(n, math.ceil(fraction * n - 1e-9)))


def _finish(medoids, cluster, cluster_threshold, mode):
    sizes = np.bincount(cluster, minlength=medoids.size)
    size = sizes[cluster]
    return EpicResult(medoids, cluster, size, size <= cluster_threshold, mode)


def epic_dense(d2, *, fraction, cluster_threshold):
    """EPIC on a full squared-distance matrix ``d2`` of shape (n, n)."""
    n = d2.shape[0]
    budget = n_medoids(n, fraction)
    medoids = dense_facility_location(d2, float(d2.max()), budget)
    # argmin returns the first minimum: the earliest-picked medoid wins ties.
    cluster = np.argmin(d2[:, medoids], axis=1)
    return _finish(medoids, cluster, cluster_threshold, "dense")


#: Default for ``uncovered_scale`` in :func:`epic_sparse` (see docs/method.md).
UNCOVERED_SCALE = 1.5


def epic_sparse(grads, knn_idx, knn_d2, *, fraction, cluster_threshold,
                uncovered_scale=UNCOVERED_SCALE):
    """EPIC on a k-NN graph (``knn_idx``, ``knn_d2`` of shape (n, k))."""
    n, k = knn_idx.shape
    budget = n_medoids(n, fraction)
    # Reverse graph: candidate j covers i when j is among i's neighbours;
    # every candidate also covers itself at distance 0.
    cand = np.concatenate([knn_idx.ravel(), np.arange(n)])
    members = np.concatenate([np.repeat(np.arange(n), k), np.arange(n)])
    dist = np.concatenate([knn_d2.ravel(), np.zeros(n)])
    order = np.argsort(cand, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(cand, minlength=n), out=indptr[1:])
    radius = knn_d2[:, -1] if k else np.zeros(n)
    dnear0 = uncovered_scale * radius
    dnear0[dnear0 <= 0] = np.finfo(np.float64).tiny  # duplicates: any cover suffices
    medoids = sparse_facility_location(
        indptr, members[order].astype(np.int64), dist[order], dnear0, budget)
    cluster, _ = nearest_target(grads, grads.take(medoids))
    return _finish(medoids, cluster, cluster_threshold, "sparse")
