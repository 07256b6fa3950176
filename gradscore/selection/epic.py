"""EPIC: drop examples that greedy facility location leaves in tiny clusters.

Following Yang et al., "Not All Poisons are Created Equal" (ICML 2022) and
the authors' code (``utils/coreset.py``, which calls submodlib's
``FacilityLocationFunction(mode="dense", metric="euclidean")``): per class,
greedy facility location picks ``n_medoids`` medoids with the similarity

.. math::

    s(i, j) = \\exp\\left(-\\frac{\\lVert g_i - g_j \\rVert}{m}\\right)

over plain (not squared) euclidean gradient distances, ``m`` being the
gradient's dimension; every example joins its most similar medoid (ties:
the medoid picked first); examples in clusters of at most
``cluster_threshold`` members are dropped. :func:`medoid_budgets` splits
the medoid budget over classes as the authors do.

``epic_exact`` (what scoring runs, at every class size)
    The greedy with exact gains in memory linear in ``n``: a candidate's
    gain only counts the rows it would bring closer than their medoid, so
    blocks of rows that are certainly farther are skipped and the rest is
    computed (see :mod:`gradscore.selection._exact`). Small classes keep the
    n x n kernel matrix instead of recomputing it, with the same numbers.
``epic_dense``
    The plain lazy greedy on a full n x n kernel, the reference semantics
    written out (O(n^2) memory): the tests' and benchmarks' yardstick.
"""

from dataclasses import dataclass
import threading

import numpy as np

from ._exact import BLOCK as _EXACT_BLOCK, exact_facility_location, kd_order
from ._kernels import assign_to_medoids, dense_facility_location, sqdist_to_similarity
from .. import neighbors as nb
from ..gradients import DenseGradients
from ..neighbors._exact import KDTREE_MAX_DIM

#: Classes up to this size keep EPIC's n x n kernel matrix (8 n^2 bytes:
#: 275 MiB at 6,000, one per class scored at once) instead of recomputing
#: its values; the decisions are the same either way (see epic_exact). 6,000
#: keeps CIFAR-10's and MNIST's classes on the faster path.
DENSE_MAX = 6000


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
        ``"dense"`` (the kernel matrix held) or ``"exact"`` (its values recomputed).
    """

    medoids: np.ndarray
    cluster: np.ndarray
    cluster_size: np.ndarray
    drop: np.ndarray
    mode: str


def medoid_budgets(class_sizes, fraction, *, random_state=None):
    """Medoids per class, split as the authors' ``get_orders_and_weights`` does.

    The total budget is ``B = int(fraction * N)`` over the ``N`` scored
    examples; class ``c`` of ``n_c`` examples gets ``ceil(n_c / N * B)``,
    and the surplus of that rounding is taken back one medoid each from
    distinct classes (with a budget left) drawn at random.

    Parameters
    ----------
    class_sizes : array-like of shape (n_classes,)
        Scored examples per class (zeros allowed).
    fraction : float
        Medoids as a fraction of all scored examples, in (0, 1].
    random_state : int, default=None
        Seed for choosing the classes that give back a medoid (the authors'
        code draws them from NumPy's global random state).

    Returns
    -------
    budgets : ndarray of shape (n_classes,), int64
        Between 0 and ``class_sizes[c]``; they sum to ``int(fraction * N)``.

    Examples
    --------
    >>> medoid_budgets([50, 30, 20], 0.2).tolist()
    [10, 6, 4]
    >>> int(sum(medoid_budgets([7, 7, 7], 0.2, random_state=0)))
    4
    """
    sizes = np.asarray(class_sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(sizes.size, dtype=np.int64)
    b = int(fraction * total)
    # The authors' expression, in the same floating-point order.
    budgets = np.ceil(np.divide(sizes, total) * b).astype(np.int64)
    surplus = int(budgets.sum()) - b
    if surplus > 0:
        rng = np.random.default_rng(random_state)
        eligible = np.flatnonzero(budgets > 0)
        budgets[rng.choice(eligible, size=surplus, replace=False)] -= 1
    return budgets


def _finish(medoids, cluster, cluster_threshold, mode):
    sizes = np.bincount(cluster, minlength=medoids.size)
    size = sizes[cluster]
    return EpicResult(medoids, cluster, size, size <= cluster_threshold, mode)


def similarity_from_sqdist(d2, dim, *, overwrite=False):
    """EPIC's kernel ``exp(-sqrt(d2) / dim)``; in ``d2``'s memory if ``overwrite``."""
    d2 = np.asarray(d2, dtype=np.float64)
    if not overwrite or not d2.flags.c_contiguous:
        d2 = np.array(d2, dtype=np.float64, order="C")
    shape = d2.shape
    return sqdist_to_similarity(d2.reshape(shape[0] if d2.ndim else 1, -1),
                                1.0 / dim).reshape(shape)


def epic_dense(d2, *, n_medoids, dim, cluster_threshold, overwrite=False):
    """EPIC on a full squared-distance matrix.

    Parameters
    ----------
    d2 : ndarray of shape (n, n)
        Squared euclidean distances between the class's gradients.
    n_medoids : int
        Medoids to pick, 1 <= n_medoids <= n.
    dim : int
        Dimension of the gradient (the kernel's length scale).
    cluster_threshold : int
        Drop members of clusters of at most this size.
    overwrite : bool, default=False
        Turn ``d2`` into the similarity matrix in place (saves n^2 memory).

    Returns
    -------
    result : EpicResult
    """
    sim = similarity_from_sqdist(d2, dim, overwrite=overwrite)
    return epic_from_similarity(sim, n_medoids=n_medoids, cluster_threshold=cluster_threshold)


def epic_from_similarity(sim, *, n_medoids, cluster_threshold):
    """EPIC on a full similarity matrix (``sim[i, j] = exp(-||g_i - g_j|| / m)``).

    What :func:`epic_dense` runs after the kernel; the pipeline computes
    ``sim`` and the density score's neighbours in one pass
    (:func:`gradscore.neighbors.similarity_and_knn`) and calls this.

    Parameters
    ----------
    sim : ndarray of shape (n, n), float64
    n_medoids : int
    cluster_threshold : int

    Returns
    -------
    result : EpicResult
    """
    sim = np.ascontiguousarray(sim, dtype=np.float64)
    medoids = dense_facility_location(sim, int(n_medoids))
    # The first maximum: the earliest-picked medoid wins ties.
    cluster = assign_to_medoids(sim, medoids)
    return _finish(medoids, cluster, cluster_threshold, "dense")


def epic_exact(grads, *, n_medoids, cluster_threshold, sim=None, cache_max=DENSE_MAX):
    """EPIC's exact greedy, without an n x n matrix unless the class is small.

    Picks what :func:`epic_dense` picks (the same greedy on the same
    kernel; the gains are summed in another order, so only a tie to the
    last bit can go the other way): see :mod:`gradscore.selection._exact`.

    Parameters
    ----------
    grads : DenseGradients or OuterGradients
    n_medoids : int
        Medoids to pick, 1 <= n_medoids <= n.
    cluster_threshold : int
    sim : ndarray of shape (n, n), default=None
        The kernel matrix, if the caller has it (rows in ``grads``' order;
        :func:`gradscore.neighbors.similarity_and_knn`).
    cache_max : int, default=DENSE_MAX
        Without ``sim``, classes up to this size keep the n x n kernel
        matrix (8 n^2 bytes) instead of recomputing its values. For
        gradients of dimension <= ``KDTREE_MAX_DIM`` the kept values are
        bit for bit the recomputed ones, so this changes speed and memory,
        never a decision.

    Returns
    -------
    result : EpicResult
        ``mode`` is ``"exact"``.
    """
    n = grads.n
    sqn = np.ascontiguousarray(grads.sqnorms(), dtype=np.float64)
    explicit = isinstance(grads, DenseGradients) and grads.dim <= KDTREE_MAX_DIM
    fill = sim is None and explicit and n <= cache_max
    if sim is not None:
        # Rows stay in the caller's order; blocks are bounded by norms.
        order = np.arange(n, dtype=np.int64)
        explicit = False
        at, ht, xt = _factors_t(grads, order)
        sim = np.ascontiguousarray(sim, dtype=np.float64)
    elif explicit:
        # A k-d tree's leaf order: consecutive rows are close together.
        order = kd_order(grads.values, _EXACT_BLOCK // 2)
        xt = np.ascontiguousarray(grads.values[order].T)
        at = ht = np.zeros((0, n))
        sim = _kernel_matrix(n) if fill else np.zeros((0, 0))
    else:
        order = np.argsort(sqn, kind="stable")
        at, ht, xt = _factors_t(grads, order)
        sim = np.zeros((0, 0))
    medoids, cluster = exact_facility_location(
        xt, at, ht, sqn[order], explicit, int(n_medoids), 1.0 / grads.dim, order,
        sim.shape[0] == n, sim, fill)
    out = np.empty(n, dtype=np.int64)
    out[order] = cluster
    return _finish(order[medoids], out, cluster_threshold, "exact")


#: Each thread's room for a kernel matrix, kept from class to class (a new
#: 200 MB matrix for every class pays its page faults every time).
_SCRATCH = threading.local()


def _kernel_matrix(n):
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < n * n:
        buf = _SCRATCH.buf = np.empty(n * n)
    return buf[:n * n].reshape(n, n)


def _factors_t(grads, order):
    a, h = grads.factors()
    return (np.ascontiguousarray(a[order].T, dtype=np.float64),
            np.ascontiguousarray(h[order].T, dtype=np.float64), np.zeros((0, grads.n)))


def epic_class(grads, *, n_medoids, cluster_threshold, k, neighbors="auto",
               dense_max=DENSE_MAX, random_state=None):
    """EPIC on one class's gradients, with the k-NN the density score needs.

    The greedy is exact at every class size (:func:`epic_exact`); ``dense_max``
    only decides whether the n x n kernel matrix is kept (faster, 8 n^2
    bytes) or its values recomputed.

    Parameters
    ----------
    grads : DenseGradients or OuterGradients
    n_medoids : int
        Medoids to pick, 1 <= n_medoids <= n.
    cluster_threshold : int
    k : int
        Neighbours per row for the density score, 1 <= k < n.
    neighbors : str, default="auto"
        Neighbour backend (:mod:`gradscore.neighbors`).
    dense_max : int, default=DENSE_MAX
        Classes up to this size keep the kernel matrix.
    random_state : int, default=None

    Returns
    -------
    result : EpicResult
    knn_d2 : ndarray of shape (n, k)
        Squared distances of each row's k nearest other rows.
    used : str
        The neighbour backend that ran (``"dense"``: read off the pass that
        made the kernel matrix of wide gradients).
    """
    sim = knn_d2 = None
    used = "dense"
    if grads.n <= dense_max and not (isinstance(grads, DenseGradients)
                                     and grads.dim <= KDTREE_MAX_DIM):
        # Wide gradients: the matrix from one BLAS Gram matrix (much faster
        # than row by row), with the density score's k-NN on the way unless
        # another backend is asked for.
        brute = nb.resolve_backend(grads, neighbors) == "brute"
        sim, _, knn_d2 = nb.similarity_and_knn(grads, k if brute else 0, 1.0 / grads.dim)
        if not brute:
            knn_d2 = None
    if knn_d2 is None:
        _, knn_d2, used = nb.kneighbors(grads, k, backend=neighbors,
                                        random_state=random_state)
    res = epic_exact(grads, n_medoids=n_medoids, cluster_threshold=cluster_threshold,
                     sim=sim, cache_max=dense_max)
    return res, knn_d2, used
