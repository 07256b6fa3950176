"""numba kernels for greedy facility location (lazy greedy with a binary heap).

Both kernels maximise :math:`F(S) = \\sum_i \\max_{j \\in S} s(i, j)` and
break ties in marginal gain by the lowest row index, so they pick exactly
what the plain greedy algorithm picks: a stale bound is only ever an upper
bound on the true gain (submodularity), and a freshly evaluated entry at the
top of the heap beats every other (bound, index) pair.
"""

import numpy as np
from numba import njit


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


@njit(cache=True, nogil=True)
def dense_facility_location(d2, big_m, budget):
    """Greedy facility location on a dense kernel ``s = big_m - d2``.

    Parameters
    ----------
    d2 : ndarray of shape (n, n), float64, symmetric
    big_m : float
        ``max(d2)``, so that every similarity is >= 0.
    budget : int
        Number of medoids to pick (<= n).

    Returns
    -------
    medoids : ndarray of shape (budget,), int64, in selection order.
    """
    n = d2.shape[0]
    cur = np.zeros(n)
    hg = np.empty(n)
    hi = np.empty(n, dtype=np.int64)
    stamp = np.full(n, -1, dtype=np.int64)
    size = 0
    for j in range(n):
        g = 0.0
        for i in range(n):
            g += big_m - d2[j, i]
        size = _push(hg, hi, size, g, j)
        stamp[j] = 0
    medoids = np.empty(budget, dtype=np.int64)
    picked = 0
    while picked < budget:
        g, j, size = _pop(hg, hi, size)
        if stamp[j] == picked:
            medoids[picked] = j
            picked += 1
            for i in range(n):
                s = big_m - d2[j, i]
                if s > cur[i]:
                    cur[i] = s
            continue
        g = 0.0
        for i in range(n):
            s = big_m - d2[j, i] - cur[i]
            if s > 0.0:
                g += s
        stamp[j] = picked
        size = _push(hg, hi, size, g, j)
    return medoids


@njit(cache=True, nogil=True)
def sparse_facility_location(indptr, members, member_d2, dnear0, budget):
    """Greedy facility location on a sparse neighbour graph.

    Candidate ``j`` covers the examples ``members[indptr[j]:indptr[j+1]]``
    (those that list ``j`` among their neighbours, and ``j`` itself) at
    squared distances ``member_d2``. The gain of ``j`` is
    :math:`\\sum_i \\max(0, dnear_i - d^2(i, j))`, where :math:`dnear_i`
    starts at ``dnear0[i]`` and becomes the squared distance to the nearest
    chosen medoid among ``i``'s neighbours. With ``dnear0 = max(d2)`` and the
    full graph this is the dense kernel.
    """
    n = indptr.shape[0] - 1
    dnear = dnear0.copy()
    hg = np.empty(n)
    hi = np.empty(n, dtype=np.int64)
    stamp = np.full(n, -1, dtype=np.int64)
    size = 0
    for j in range(n):
        g = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            s = dnear[members[p]] - member_d2[p]
            if s > 0.0:
                g += s
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
                if member_d2[p] < dnear[i]:
                    dnear[i] = member_d2[p]
            continue
        g = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            s = dnear[members[p]] - member_d2[p]
            if s > 0.0:
                g += s
        stamp[j] = picked
        size = _push(hg, hi, size, g, j)
    return medoids
