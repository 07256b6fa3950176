"""numba kernels for greedy facility location (lazy greedy with a binary heap).

Both kernels maximise :math:`F(S) = \\sum_i \\max_{j \\in S} s(i, j)` (with
:math:`\\max_\\emptyset = 0`) and
break ties in marginal gain by the lowest row index, so they pick exactly
what the plain greedy algorithm picks: a stale bound is only ever an upper
bound on the true gain (submodularity), and a freshly evaluated entry at the
top of the heap beats every other (bound, index) pair.
"""

import numpy as np
from numba import njit

from .._vexp import exp_inplace, exp_one


@njit(cache=True, inline="always")
def _before(g1, i1, g2, i2):
    # Higher gain first; lower index first among equal gains.
    return g1 > g2 or (g1 == g2 and i1 < i2)


@njit(cache=True)
def _push(hg, hi, size, g, i):
    pos = size
    hg[pos] = g
    hi[pos] = i
    while pos > 0:
        parent = (pos - 1) // 2
        if _before(hg[pos], hi[pos], hg[parent], hi[parent]):
            hg[pos], hg[parent] = hg[parent], hg[pos]
            hi[pos], hi[parent] = hi[parent], hi[pos]
            pos = parent
        else:
            break
    return size + 1


@njit(cache=True)
def _pop(hg, hi, size):
    g, i = hg[0], hi[0]
    size -= 1
    hg[0] = hg[size]
    hi[0] = hi[size]
    pos = 0
    while True:
        left = 2 * pos + 1
        right = left + 1
        best = pos
        if left < size and _before(hg[left], hi[left], hg[best], hi[best]):
            best = left
        if right < size and _before(hg[right], hi[right], hg[best], hi[best]):
            best = right
        if best == pos:
            break
        hg[pos], hg[best] = hg[best], hg[pos]
        hi[pos], hi[best] = hi[best], hi[pos]
        pos = best
    return g, i, size


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _gain(row, cur):
    # sum_i max(0, row[i] - cur[i]). One function for the first bounds and
    # every re-evaluation, so a fresh gain is never above its stale bound;
    # the sum may be vectorised (its order is fixed by the compiled code).
    g = 0.0
    for i in range(row.shape[0]):
        s = row[i] - cur[i]
        g += s if s > 0.0 else 0.0
    return g


@njit(cache=True, nogil=True)
def dense_facility_location(sim, budget):
    """Greedy facility location on a dense similarity matrix.

    Parameters
    ----------
    sim : ndarray of shape (n, n), float64, symmetric, >= 0
        ``sim[j, i]``: how well candidate ``j`` represents example ``i``.
    budget : int
        Number of medoids to pick (<= n).

    Returns
    -------
    medoids : ndarray of shape (budget,), int64, in selection order.
    """
    n = sim.shape[0]
    cur = np.zeros(n)
    hg = np.empty(n)
    hi = np.empty(n, dtype=np.int64)
    stamp = np.full(n, -1, dtype=np.int64)
    size = 0
    for j in range(n):
        size = _push(hg, hi, size, _gain(sim[j], cur), j)
        stamp[j] = 0
    medoids = np.empty(budget, dtype=np.int64)
    picked = 0
    while picked < budget:
        g, j, size = _pop(hg, hi, size)
        if stamp[j] == picked:
            medoids[picked] = j
            picked += 1
            for i in range(n):
                s = sim[j, i]
                if s > cur[i]:
                    cur[i] = s
            continue
        g = _gain(sim[j], cur)
        stamp[j] = picked
        size = _push(hg, hi, size, g, j)
    return medoids


@njit(cache=True, inline="always")
def _distance(a, h, sqn, i, j):
    # ||g_i - g_j|| for g = a (x) h, from the factors:
    # ||g_i - g_j||^2 = |g_i|^2 + |g_j|^2 - 2 (a_i . a_j)(h_i . h_j).
    aa = 0.0
    for c in range(a.shape[1]):
        aa += a[i, c] * a[j, c]
    hh = 0.0
    for c in range(h.shape[1]):
        hh += h[i, c] * h[j, c]
    d2 = sqn[i] + sqn[j] - 2.0 * aa * hh
    return np.sqrt(d2) if d2 > 0.0 else 0.0


#: Uncovered examples are scanned in blocks of this many, by gradient norm.
_BLOCK = 128


@njit(cache=True, nogil=True)
def sparse_facility_location(indptr, members, member_sim, budget, a, h, sqn, inv_dim,
                             order, box_x):
    """Greedy facility location on a k-NN graph, with exact coverage.

    Candidate ``j`` is credited only for the examples
    ``members[indptr[j]:indptr[j+1]]`` (those that list ``j`` among their
    k nearest neighbours, and ``j`` itself, at similarities ``member_sim``).
    Each example's current coverage ``cur[i]`` (its similarity to the
    nearest chosen medoid) is kept *exact*: once a medoid among ``i``'s k
    nearest neighbours is chosen, the nearest medoid is among them (every
    other example lies beyond ``i``'s k-NN radius); until then ``i`` is
    "uncovered" and its distance to the nearest medoid is updated against
    every new medoid from the gradient factors ``a`` (n, C) and ``h``
    (n, m), ``sqn`` being the squared gradient norms. The update skips a
    medoid that cannot be nearer than the example's current one: examples
    are kept in blocks of consecutive rows of ``order`` (a spatially
    coherent order, e.g. a k-d tree's), each with the range of its norms,
    the bounding box of its rows of ``box_x`` (explicit gradients; zero
    columns to go by norms alone) and the largest current distance of its
    uncovered members, and a block whose norm range or box lies at least
    that far from the new medoid is skipped whole. So the only
    approximation is in the gains: a candidate is not credited for
    uncovered examples outside its reverse neighbour list.
    """
    n = indptr.shape[0] - 1
    cur = np.zeros(n)
    near = np.full(n, np.inf)
    nrm = np.sqrt(sqn)
    covered = np.zeros(n, dtype=np.bool_)
    by_norm = order
    m = box_x.shape[1]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    block_of = np.empty(n, dtype=np.int64)
    block_lo = np.full(n_blocks, np.inf)
    block_hi = np.full(n_blocks, -np.inf)
    box_lo = np.full((n_blocks, m), np.inf)
    box_hi = np.full((n_blocks, m), -np.inf)
    block_near = np.full(n_blocks, np.inf)
    block_live = np.zeros(n_blocks, dtype=np.int64)
    for b in range(n_blocks):
        start = b * _BLOCK
        stop = min(n, start + _BLOCK)
        block_live[b] = stop - start
        for t in range(start, stop):
            i = by_norm[t]
            block_of[i] = b
            block_lo[b] = min(block_lo[b], nrm[i])
            block_hi[b] = max(block_hi[b], nrm[i])
            for c in range(m):
                box_lo[b, c] = min(box_lo[b, c], box_x[i, c])
                box_hi[b, c] = max(box_hi[b, c], box_x[i, c])
    hg = np.empty(n)
    hi = np.empty(n, dtype=np.int64)
    stamp = np.full(n, -1, dtype=np.int64)
    size = 0
    for j in range(n):
        g = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            g += member_sim[p]
        size = _push(hg, hi, size, g, j)
        stamp[j] = 0
    medoids = np.empty(budget, dtype=np.int64)
    picked = 0
    while picked < budget:
        g, j, size = _pop(hg, hi, size)
        if stamp[j] == picked:
            medoids[picked] = j
            picked += 1
            for p in range(indptr[j], indptr[j + 1]):
                i = members[p]
                if not covered[i]:
                    covered[i] = True
                    block_live[block_of[i]] -= 1
                if member_sim[p] > cur[i]:
                    cur[i] = member_sim[p]
            nj = nrm[j]
            for b in range(n_blocks):
                if block_live[b] == 0:
                    continue
                gap = max(block_lo[b] - nj, nj - block_hi[b], 0.0)
                if gap >= block_near[b]:
                    continue  # no uncovered member can be nearer to j
                if m:
                    g2 = 0.0
                    for c in range(m):
                        v = box_x[j, c]
                        e = max(box_lo[b, c] - v, v - box_hi[b, c], 0.0)
                        g2 += e * e
                    if g2 >= block_near[b] * block_near[b]:
                        continue
                worst = 0.0
                for t in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
                    i = by_norm[t]
                    if covered[i]:
                        continue
                    if abs(nrm[i] - nj) < near[i]:
                        d = _distance(a, h, sqn, i, j)
                        if d < near[i]:
                            near[i] = d
                            s = exp_one(-d * inv_dim)
                            if s > cur[i]:
                                cur[i] = s
                    if near[i] > worst:
                        worst = near[i]
                block_near[b] = worst
            continue
        g = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            s = member_sim[p] - cur[members[p]]
            if s > 0.0:
                g += s
        stamp[j] = picked
        size = _push(hg, hi, size, g, j)
    return medoids


@njit(cache=True, nogil=True)
def sqdist_to_similarity(d2, inv_dim):
    """EPIC's kernel ``exp(-sqrt(d2) * inv_dim)``, in place, in one pass."""
    n, m = d2.shape
    for i in range(n):
        row = d2[i]
        for j in range(m):
            row[j] = -np.sqrt(max(row[j], 0.0)) * inv_dim
        exp_inplace(row)
    return d2


@njit(cache=True, nogil=True)
def assign_to_medoids(sim, medoids):
    """Position in ``medoids`` of each row's most similar medoid (ties: the earliest)."""
    n = sim.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        best = -1.0
        arg = 0
        for k in range(medoids.shape[0]):
            s = sim[i, medoids[k]]
            if s > best:
                best = s
                arg = k
        out[i] = arg
    return out
