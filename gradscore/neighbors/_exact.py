"""Exact neighbour search: k-d tree and blocked Gram-matrix brute force."""

from numba import njit
import numpy as np

from ._dense import gram_sqdist, insert_knn, lower_gram

#: Bytes of distance block the brute-force search holds at once.
_BLOCK_BYTES = 64 * 2**20
#: An unbalanced tree with larger leaves queries faster than scipy's defaults
#: on 100k x 10 logit gradients (7.3 s vs 10.1 s CPU; benchmarks/bench_kdtree.py).
_KDTREE_OPTIONS = dict(leafsize=64, balanced_tree=False, compact_nodes=False)
#: Explicit gradient vectors up to this dimension go to the k-d tree.
KDTREE_MAX_DIM = 16


def pairwise_sqdist(grads):
    """Dense (n, n) squared euclidean distances, exact zeros on the diagonal."""
    sq = grads.sqnorms()
    # The Gram matrix as similarity_and_knn computes it (BLAS syrk, lower
    # triangle, mirrored), and |a|^2 + |b|^2 summed first: the result is
    # exactly symmetric, and the same numbers as similarity_and_knn's.
    low = np.tril(lower_gram(grads))
    d2 = low + np.tril(low, -1).T
    d2 *= -2.0
    d2 += np.add.outer(sq, sq)
    np.maximum(d2, 0.0, out=d2)
    groups = grads.duplicate_groups()
    if groups is not None:
        _zero_duplicates(d2, groups, groups)
    np.fill_diagonal(d2, 0.0)
    return d2


def _zero_duplicates(block, row_groups, col_groups):
    """Exact duplicates lie at distance exactly 0.

    The Gram-matrix identity |a|^2 + |b|^2 - 2 a.b leaves rounding residue
    for equal rows; equal rows are found by value instead (np.unique) and
    their distance set to 0, so duplicates always count as nearest.
    """
    block[row_groups[:, None] == col_groups[None, :]] = 0.0


def knn_from_sqdist(d2, k):
    """k nearest other rows from a full distance matrix, self excluded by index."""
    n = d2.shape[0]
    block = max(1, min(n, _BLOCK_BYTES // (8 * max(n, 1))))
    idx = np.empty((n, k), dtype=np.int64)
    out = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        work = d2[start:stop].copy()
        local = np.arange(stop - start)
        work[local, local + start] = np.inf  # self, by index
        idx[start:stop], out[start:stop] = _smallest_k(work, k)
    return idx, out


def _smallest_k(work, k):
    """The k smallest entries of each row, sorted by (distance, column)."""
    part = np.argpartition(work, k - 1, axis=1)[:, :k] if k < work.shape[1] else \
        np.broadcast_to(np.arange(work.shape[1]), work.shape).copy()
    vals = np.take_along_axis(work, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(vals, order, axis=1)


def brute_kneighbors(grads, k, *, random_state=None):
    """Exact search by blocks of rows against all rows (BLAS Gram products).

    Each block's Gram product is turned into distances and searched in one
    numba pass (:func:`_block_knn`), never sorted.
    """
    n = grads.n
    sq = np.ascontiguousarray(grads.sqnorms(), dtype=np.float64)
    groups = grads.duplicate_groups()
    if groups is None:
        groups = np.arange(n, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    block = max(1, min(n, _BLOCK_BYTES // (8 * max(n, 1))))
    idx = np.empty((n, k), dtype=np.int64)
    d2 = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        g = np.ascontiguousarray(grads.inner(slice(start, stop)), dtype=np.float64)
        _block_knn(g, sq, groups, start, idx[start:stop], d2[start:stop])
    return idx, d2


@njit(cache=True, nogil=True)
def _block_knn(gram, sq, groups, row0, idx, d2):
    # Rows row0.. of the whole: each row's k nearest others by (distance,
    # column), from its Gram row; the same numbers as pairwise_sqdist's.
    b, n = gram.shape
    k = idx.shape[1]
    thr = np.full(b, np.inf)
    for r in range(b):
        i = row0 + r
        for t in range(k):
            d2[r, t] = np.inf
            idx[r, t] = -1
        gi = groups[i]
        sqi = sq[i]
        for j in range(n):
            v = gram_sqdist(gram[r, j], sqi, sq[j], groups[j] == gi)
            if v <= thr[r] and j != i:
                insert_knn(d2, idx, thr, r, v, j)


def kdtree_kneighbors(grads, k, *, random_state=None):
    """Exact search with scipy's cKDTree on explicit vectors."""
    from scipy.spatial import cKDTree  # on first use: scipy.spatial is slow to import
    x = grads.dense()
    tree = cKDTree(x, **_KDTREE_OPTIONS)
    dist, idx = tree.query(x, k=k + 1, workers=-1)
    return remove_self(idx.reshape(len(x), -1), dist.reshape(len(x), -1) ** 2, k)


def remove_self(idx, d2, k):
    """Drop each row's own index from k+1 candidates (or the farthest if absent).

    A point with exact duplicates may not be listed among its own k+1 nearest
    (its duplicates tie with it at distance 0); the row then keeps its k
    nearest others.
    """
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    # Every row now has at least one True; keep the first True only.
    first = np.argmax(is_self, axis=1)
    keep = np.ones_like(is_self)
    keep[np.arange(n), first] = False
    idx = idx[keep].reshape(n, -1)[:, :k].astype(np.int64)
    d2 = d2[keep].reshape(n, -1)[:, :k].astype(np.float64)
    order = np.lexsort((idx, d2), axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(d2, order, axis=1)
