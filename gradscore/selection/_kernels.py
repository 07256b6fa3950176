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

from .._vexp import exp_inplace


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
