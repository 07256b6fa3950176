"""One class's full neighbour structure from its Gram matrix, in one pass.

EPIC's exact path needs, for a class of ``n`` gradients, the kernel
``exp(-||g_i - g_j|| / m)`` between every pair and each row's ``k`` nearest
others (for the density score). Computing the distance matrix, then a
partial sort of every row, then the kernel, walks the n x n matrix several
times; :func:`similarity_and_knn` does it in one numba pass over the lower
triangle of the Gram matrix, in its memory, with one ``exp`` per pair. The
distances are the numbers :func:`~gradscore.neighbors.pairwise_sqdist`
computes.
"""

import numpy as np
from numba import njit

from .._vexp import exp_chunk


@njit(cache=True, nogil=True)
def insert_knn(kd, ki, thr, row, v, j):
    # Keep row's k smallest (distance, column) pairs, sorted, in any order of
    # arrival; thr[row] is the k-th distance (callers turn most candidates
    # away by it before calling).
    last = kd.shape[1] - 1
    if v < kd[row, last] or j < ki[row, last]:
        p = last
        while p > 0 and (kd[row, p - 1] > v or (kd[row, p - 1] == v and ki[row, p - 1] > j)):
            kd[row, p] = kd[row, p - 1]
            ki[row, p] = ki[row, p - 1]
            p -= 1
        kd[row, p] = v
        ki[row, p] = j
        thr[row] = kd[row, last]


@njit(cache=True, nogil=True, inline="always")
def gram_sqdist(gram_ij, sqi, sqj, same):
    # |g_i|^2 + |g_j|^2 - 2 g_i.g_j, in an order symmetric in i and j, so the
    # dense pass, the brute search and pairwise_sqdist give the same numbers;
    # 0 for exact duplicates (``same``: one duplicate group).
    v = gram_ij * -2.0
    v += sqi + sqj
    if v < 0.0 or same:
        v = 0.0
    return v


#: Side of the square tiles the pass walks (the mirrored writes stay in cache).
_TILE = 64


@njit(cache=True, nogil=True)
def _similarity_and_knn(gram, sq, groups, inv_dim, knn_idx, knn_d2):
    # gram: C-ordered, lower triangle (j <= i) valid; overwritten in full.
    n = gram.shape[0]
    k = knn_d2.shape[1]
    for i in range(n):
        for t in range(k):
            knn_d2[i, t] = np.inf
            knn_idx[i, t] = -1
    thr = np.full(n, np.inf if k > 0 else -np.inf)
    tile = np.empty((_TILE, _TILE))
    seg = np.empty(_TILE)
    work = np.empty(_TILE)
    for i0 in range(0, n, _TILE):
        i1 = min(n, i0 + _TILE)
        for j0 in range(0, i0 + 1, _TILE):
            j1 = min(n, j0 + _TILE)
            for i in range(i0, i1):
                m = min(j1, i) - j0
                if m <= 0:
                    continue
                gi = groups[i]
                sqi = sq[i]
                for t in range(m):
                    j = j0 + t
                    seg[t] = gram_sqdist(gram[i, j], sqi, sq[j], groups[j] == gi)
                for t in range(m):
                    v = seg[t]
                    j = j0 + t
                    if v <= thr[i]:
                        insert_knn(knn_d2, knn_idx, thr, i, v, j)
                    if v <= thr[j]:
                        insert_knn(knn_d2, knn_idx, thr, j, v, i)
                for t in range(m):
                    seg[t] = -np.sqrt(seg[t]) * inv_dim
                exp_chunk(seg[:m], work)
                for t in range(m):
                    gram[i, j0 + t] = seg[t]
                    tile[t, i - i0] = seg[t]
            # The mirror image, row by row.
            for j in range(j0, j1):
                for i in range(max(i0, j + 1), i1):
                    gram[j, i] = tile[j - j0, i - i0]
    for i in range(n):
        gram[i, i] = 1.0


def lower_gram(grads):
    """Inner products of every pair of rows; only the lower triangle is read.

    Returns a C-ordered (n, n) float64 array whose entries ``[i, j]`` with
    ``j <= i`` hold ``<g_i, g_j>``. (NumPy's ``a @ a.T`` calls BLAS syrk and
    releases the GIL, so classes on several threads overlap; scipy's
    ``dsyrk`` wrapper holds the GIL.)
    """
    return np.ascontiguousarray(grads.inner(slice(None)), dtype=np.float64)


def similarity_and_knn(grads, k, inv_dim):
    """Every pair's similarity ``exp(-dist * inv_dim)`` and each row's k nearest others.

    Parameters
    ----------
    grads : DenseGradients or OuterGradients
        One class's gradients (``n`` rows).
    k : int
        Neighbours per row, self excluded (``0 <= k < n``); 0 skips the search.
    inv_dim : float
        The kernel's inverse length scale (EPIC: 1 / the gradient's dimension).

    Returns
    -------
    sim : ndarray of shape (n, n), float64
        Symmetric; 1 on the diagonal and between exact duplicates.
    indices : ndarray of shape (n, k), int64
        Nearest first; equal distances by column.
    sqdist : ndarray of shape (n, k), float64
    """
    n = grads.n
    sq = np.ascontiguousarray(grads.sqnorms(), dtype=np.float64)
    gram = lower_gram(grads)
    groups = grads.duplicate_groups()
    if groups is None:
        groups = np.arange(n, dtype=np.int64)
    knn_idx = np.empty((n, k), dtype=np.int64)
    knn_d2 = np.empty((n, k), dtype=np.float64)
    _similarity_and_knn(gram, sq, np.asarray(groups, dtype=np.int64), float(inv_dim),
                        knn_idx, knn_d2)
    return gram, knn_idx, knn_d2
