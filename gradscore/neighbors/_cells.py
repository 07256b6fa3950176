"""Kernels of the cross-class neighbour search (:mod:`gradscore.scoring.crossclass`).

Cells are k-means cells of one class's features; a search scans a block
of query rows against whole cells with one BLAS product per (query cell,
probed cell) pair and keeps, for each query row, two sorted lists: its
nearest rows of any class and its nearest rows of its own class.

Everything here is a plain function of arrays, deterministic for the same
arrays in the same order: ties are broken by row number, k-means draws its
sample from a ``SeedSequence``.
"""

import numpy as np
from numba import njit

from ._dense import insert_knn

#: k-means on a class: Lloyd iterations, and sampled rows per centroid.
KMEANS_ITERS, KMEANS_SAMPLE = 8, 48


def sqdist(a, b, sq_a=None, sq_b=None):
    """Squared euclidean distances (float32, clipped at 0) between rows of ``a`` and ``b``."""
    sq_a = rownorms(a) if sq_a is None else sq_a
    sq_b = rownorms(b) if sq_b is None else sq_b
    d = a @ b.T
    d *= -2.0
    d += sq_a[:, None]
    d += sq_b[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def rownorms(x):
    """Squared norms of the rows of ``x`` (float32 in, float32 out)."""
    return np.einsum("ij,ij->i", x, x)


def nearest_centroids(x, cents, p, *, block=4096):
    """Each row's ``p`` nearest centroids, nearest first, ties by centroid number.

    Returns
    -------
    idx : ndarray of shape (n, min(p, m)), int64
    d2 : ndarray of shape (n, min(p, m)), float32
    """
    n, m = x.shape[0], cents.shape[0]
    p = min(p, m)
    idx = np.empty((n, p), np.int64)
    d2 = np.empty((n, p), np.float32)
    sq_c = rownorms(cents)
    for a in range(0, n, block):
        d = sqdist(np.asarray(x[a:a + block], dtype=np.float32), cents, sq_b=sq_c)
        part = np.argpartition(d, p - 1, axis=1)[:, :p] if p < m else \
            np.broadcast_to(np.arange(m), d.shape)
        v = np.take_along_axis(d, part, axis=1)
        order = np.lexsort((part, v), axis=1)
        idx[a:a + block] = np.take_along_axis(part, order, axis=1)
        d2[a:a + block] = np.take_along_axis(v, order, axis=1)
    return idx, d2


def kmeans(x, m, rng, *, iters=KMEANS_ITERS, sample=KMEANS_SAMPLE):
    """Lloyd's k-means on a sample of ``sample * m`` rows: ``m`` float32 centroids.

    Starts from ``m`` distinct sampled rows; a centroid left empty is moved
    to the sampled row farthest from its own centroid.
    """
    n = x.shape[0]
    m = max(1, min(m, n))
    rows = np.sort(rng.choice(n, min(n, sample * m), replace=False))
    xs = np.ascontiguousarray(x[rows], dtype=np.float32)
    cents = xs[np.sort(rng.choice(xs.shape[0], m, replace=False))].copy()
    for _ in range(iters):
        a, d = (v[:, 0] for v in nearest_centroids(xs, cents, 1))
        cents = cell_means(xs, a, m, cents)
        empty = np.flatnonzero(np.bincount(a, minlength=m) == 0)
        if empty.size:
            far = np.argsort(-d, kind="stable")[:empty.size]
            cents[empty] = xs[far]
    return cents


def cell_means(x, cell, m, fallback, *, block=65536):
    """Mean of each cell's rows (float64 sums), ``fallback`` rows for empty cells."""
    sums = np.zeros((m, x.shape[1]), np.float64)
    count = np.zeros(m, np.int64)
    for a in range(0, x.shape[0], block):
        _cell_sums(np.asarray(x[a:a + block], dtype=np.float32), cell[a:a + block], sums,
                   count)
    out = np.array(fallback, dtype=np.float32, copy=True)
    full = count > 0
    out[full] = (sums[full] / count[full, None]).astype(np.float32)
    return out


@njit(cache=True, nogil=True)
def _cell_sums(x, cell, sums, count):
    n, d = x.shape
    for i in range(n):
        c = cell[i]
        count[c] += 1
        for j in range(d):
            sums[c, j] += x[i, j]


def split_direction(x, rng, iters=12):
    """Top principal direction of ``x``'s rows (power iteration), unit float64."""
    c = x.astype(np.float64) - x.mean(axis=0)
    v = rng.standard_normal(x.shape[1])
    for _ in range(iters):
        v = c.T @ (c @ v)
        norm = np.linalg.norm(v)
        if norm == 0:
            break
        v /= norm
    return v


@njit(cache=True, nogil=True)
def row_hashes(x):
    """64-bit FNV-1a of each float32 row's bits (+0.0 and -0.0 alike), for
    finding exact duplicate rows."""
    n, d = x.shape
    out = np.empty(n, np.uint64)
    bits = x.view(np.uint32)
    for i in range(n):
        h = np.uint64(14695981039346656037)
        for j in range(d):
            b = bits[i, j]
            if b == np.uint32(0x80000000):
                b = np.uint32(0)
            h = (h ^ np.uint64(b)) * np.uint64(1099511628211)
        out[i] = h
    return out


@njit(cache=True, nogil=True)
def scan_block(gram, xq, xd, sq_q, sq_d, q_row, q_id, d_id, q_hash, d_hash, same_class,
               g_d2, g_idx, g_thr, w_d2, w_idx, w_thr):
    """Fold one block of candidates into the queries' neighbour lists.

    ``gram[r, j]`` is ``<xq[r], xd[j]>``; query ``r`` keeps its lists in
    row ``q_row[r]`` of ``g_*`` (any class) and ``w_*`` (own class, only
    when ``same_class``). A candidate with the query's own id is skipped;
    equal rows (same hash, same values) lie at distance exactly 0.
    """
    b, m = gram.shape
    dim = xq.shape[1]
    for r in range(b):
        h = q_row[r]
        qi = q_id[r]
        s = sq_q[r]
        qh = q_hash[r]
        for j in range(m):
            v = gram[r, j] * np.float32(-2.0)
            v += s + sq_d[j]
            if v < 0.0:
                v = np.float32(0.0)
            if d_hash[j] == qh and v > 0.0:
                equal = True
                for t in range(dim):
                    if xq[r, t] != xd[j, t]:
                        equal = False
                        break
                if equal:
                    v = np.float32(0.0)
            if v > g_thr[h] and not (same_class and v <= w_thr[h]):
                continue
            jj = d_id[j]
            if jj == qi:
                continue
            if v <= g_thr[h]:
                insert_knn(g_d2, g_idx, g_thr, h, v, jj)
            if same_class and v <= w_thr[h]:
                insert_knn(w_d2, w_idx, w_thr, h, v, jj)


@njit(cache=True, nogil=True)
def smallest_per_row(d2, ids, p, out_ids, out_d2):
    """Each row's ``p`` smallest ``d2`` entries, ties by ``ids``, folded into
    ``out_*`` (sorted lists, ``inf``/-1 where empty)."""
    n, m = d2.shape
    thr = np.empty(n, np.float32)
    for r in range(n):
        thr[r] = out_d2[r, p - 1]
        for j in range(m):
            v = d2[r, j]
            if v <= thr[r]:
                insert_knn(out_d2, out_ids, thr, r, v, ids[j])
