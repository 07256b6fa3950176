"""numba kernels for EPIC's exact greedy, with or without an n x n matrix.

Greedy facility location maximises :math:`F(S) = \\sum_i \\max_{j \\in S} s(i, j)`
with EPIC's kernel :math:`s(i, j) = e^{-d_{ij} / m}`, a decreasing function of
the distance. Candidate ``j``'s marginal gain is therefore

.. math::

    \\Delta_j(S) = \\sum_{i \\,:\\, d_{ij} < d_i(S)} \\left(e^{-d_{ij}/m} - e^{-d_i(S)/m}\\right)

where :math:`d_i(S)` is row ``i``'s distance to its nearest medoid
(:math:`\\infty` before the first): only the rows that ``j`` would bring
closer than their medoid count. The kernels keep :math:`d_i(S)` for every
row and visit the rows in blocks of ``BLOCK`` nearby rows (consecutive rows
of a spatially coherent order), each with what bounds the distance from a
candidate to any of its rows (a bounding box for explicit gradients, the
range of gradient norms for factored ones) and the largest :math:`d_i(S)` of
its rows. A block whose bound is at least that largest distance holds no
row the candidate would bring closer, and is skipped whole; every other
row's term is computed exactly.

Every gain is summed in one fixed order, whichever way it is computed: a
block's terms in four interleaved running sums (row ``t`` of the block into
sum ``t % 4``, combined as ``(s0 + s1) + (s2 + s3)``), and the blocks' sums
in block order (a skipped block's sum is exactly 0). So one candidate's gain
computed on its own (:func:`_gain`), all gains recomputed in one pass over
pairs of blocks (:func:`_refresh`), and a gain read off a kept n x n kernel
matrix (:func:`_row_gain`, filled by :func:`_fill` with the very values the
other two compute) are the same bits: keeping the matrix (for small classes)
changes the speed, never a decision.

The greedy is the lazy one of :mod:`._kernels` (stale gains are upper
bounds by submodularity; ties in gain go to the lower row number, in the
caller's order). After the first medoid every stale gain is far above the
fresh ones, so the lazy loop would re-evaluate nearly every candidate; when
computing kernel values (no matrix), a step that has re-evaluated more than
``n / REFRESH_DIVISOR`` candidates recomputes all gains at once instead, in
one pass over pairs of blocks whose distances serve both directions.
"""

import numpy as np
from numba import njit

from .._vexp import exp_chunk
from ._kernels import _pop, _push

#: ``stats`` for :func:`exact_facility_location` that keeps no counters.
NO_STATS = np.zeros((0, 4), dtype=np.int64)
#: Rows per block (a multiple of 4).
BLOCK = 64
#: Without the matrix, a step re-evaluating more than n / REFRESH_DIVISOR
#: candidates recomputes all gains in one pass.
REFRESH_DIVISOR = 8


@njit(cache=True, nogil=True, inline="always")
def _sqdist_rows(xt, at, ht, sqn, explicit, j, s, e, q, q2):
    # q[t] = squared distance of rows s + t (t < e - s) to row j, from the
    # explicit rows (xt: features x rows) or from the factors of a (x) h:
    # ||g_i - g_j||^2 = |g_i|^2 + |g_j|^2 - 2 (a_i.a_j)(h_i.h_j). Loops run
    # over rows innermost, on slices, so that they vectorise.
    n_rows = e - s
    qq = q[:n_rows]
    qq[:] = 0.0
    if explicit:
        for c in range(xt.shape[0]):
            v = xt[c, j]
            row = xt[c, s:e]
            for t in range(n_rows):
                d = row[t] - v
                qq[t] += d * d
        return
    q2q = q2[:n_rows]
    q2q[:] = 0.0
    for c in range(at.shape[0]):
        v = at[c, j]
        row = at[c, s:e]
        for t in range(n_rows):
            qq[t] += row[t] * v
    for c in range(ht.shape[0]):
        v = ht[c, j]
        row = ht[c, s:e]
        for t in range(n_rows):
            q2q[t] += row[t] * v
    sq = sqn[s:e]
    sj = sqn[j]
    for t in range(n_rows):
        d = sq[t] + sj - 2.0 * qq[t] * q2q[t]
        qq[t] = d if d > 0.0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _kernel_rows(xt, at, ht, sqn, explicit, j, s, e, inv_dim, q, q2, kv, work):
    # q[t], kv[t]: squared distance and kernel exp(-sqrt(q) / m) of row s + t to row j.
    _sqdist_rows(xt, at, ht, sqn, explicit, j, s, e, q, q2)
    n_rows = e - s
    qq = q[:n_rows]
    kk = kv[:n_rows]
    for t in range(n_rows):
        kk[t] = -np.sqrt(qq[t]) * inv_dim
    exp_chunk(kk, work)


@njit(cache=True, nogil=True, inline="always")
def _block_sum(kv, cur, n_rows):
    # sum_t max(kv[t] - cur[t], 0) in the fixed order: four interleaved sums.
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    t = 0
    while t + 4 <= n_rows:
        v = kv[t] - cur[t]
        a0 += v if v > 0.0 else 0.0
        v = kv[t + 1] - cur[t + 1]
        a1 += v if v > 0.0 else 0.0
        v = kv[t + 2] - cur[t + 2]
        a2 += v if v > 0.0 else 0.0
        v = kv[t + 3] - cur[t + 3]
        a3 += v if v > 0.0 else 0.0
        t += 4
    if t < n_rows:
        v = kv[t] - cur[t]
        a0 += v if v > 0.0 else 0.0
    if t + 1 < n_rows:
        v = kv[t + 1] - cur[t + 1]
        a1 += v if v > 0.0 else 0.0
    if t + 2 < n_rows:
        v = kv[t + 2] - cur[t + 2]
        a2 += v if v > 0.0 else 0.0
    return (a0 + a1) + (a2 + a3)


@njit(cache=True, nogil=True, inline="always")
def _bound_sq(xt, nrm, box_lo, box_hi, norm_lo, norm_hi, explicit, j, b):
    # A lower bound on the squared distance from row j to any row of block b.
    if explicit:
        s = 0.0
        for c in range(xt.shape[0]):
            v = xt[c, j]
            e = box_lo[b, c] - v
            if e < 0.0:
                e = v - box_hi[b, c]
            if e > 0.0:
                s += e * e
        return s
    e = norm_lo[b] - nrm[j]
    if e < 0.0:
        e = nrm[j] - norm_hi[b]
    return e * e if e > 0.0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _block_pair_bound_sq(box_lo, box_hi, norm_lo, norm_hi, explicit, b1, b2):
    if explicit:
        s = 0.0
        for c in range(box_lo.shape[1]):
            e = box_lo[b2, c] - box_hi[b1, c]
            if e < 0.0:
                e = box_lo[b1, c] - box_hi[b2, c]
            if e > 0.0:
                s += e * e
        return s
    e = norm_lo[b2] - norm_hi[b1]
    if e < 0.0:
        e = norm_lo[b1] - norm_hi[b2]
    return e * e if e > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _block_bounds(xt, nrm, explicit, n_blocks):
    n = nrm.shape[0]
    m = xt.shape[0] if explicit else 0
    box_lo = np.full((n_blocks, m), np.inf)
    box_hi = np.full((n_blocks, m), -np.inf)
    norm_lo = np.full(n_blocks, np.inf)
    norm_hi = np.full(n_blocks, -np.inf)
    for b in range(n_blocks):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            norm_lo[b] = min(norm_lo[b], nrm[i])
            norm_hi[b] = max(norm_hi[b], nrm[i])
            for c in range(m):
                box_lo[b, c] = min(box_lo[b, c], xt[c, i])
                box_hi[b, c] = max(box_hi[b, c], xt[c, i])
    return box_lo, box_hi, norm_lo, norm_hi


@njit(cache=True, nogil=True)
def _fill(xt, at, ht, sqn, explicit, inv_dim, sim, q, q2, kv, work, tile):
    """The n x n kernel matrix (the values every path computes), each pair
    computed once: the kernel is symmetric to the bit (see _sqdist_rows).
    Tile by tile (BLOCK x BLOCK), the mirrored half through ``tile``, so
    that every write runs along a row."""
    n = sqn.shape[0]
    for s2 in range(0, n, BLOCK):
        e2 = min(n, s2 + BLOCK)
        for s1 in range(0, s2 + 1, BLOCK):
            e1 = min(n, s1 + BLOCK)
            for i in range(s1, e1):
                j0 = max(s2, i)
                if j0 >= e2:
                    continue
                _kernel_rows(xt, at, ht, sqn, explicit, i, j0, e2, inv_dim, q, q2, kv, work)
                m = e2 - j0
                sim[i, j0:e2] = kv[:m]
                for t in range(m):
                    tile[j0 - s2 + t, i - s1] = kv[t]
            if s1 != s2:
                for r in range(e2 - s2):
                    sim[s2 + r, s1:e1] = tile[r, :e1 - s1]
            else:
                for r in range(e2 - s2):
                    for c in range(r):
                        sim[s2 + r, s1 + c] = tile[r, c]


@njit(cache=True, nogil=True)
def kd_order(x, leaf):
    """A spatially coherent order of the rows of ``x`` (n, m): split at the
    median of the widest coordinate until ranges hold at most ``leaf`` rows
    (a k-d tree's leaf order; ties kept in row order)."""
    n, m = x.shape
    order = np.arange(n)
    starts = np.empty(2 * (n // max(1, leaf)) + 2, dtype=np.int64)
    stops = np.empty_like(starts)
    starts[0], stops[0] = 0, n
    top = 1
    while top > 0:
        top -= 1
        a, b = starts[top], stops[top]
        if b - a <= leaf:
            continue
        best, width = 0, -1.0
        for c in range(m):
            lo, hi = np.inf, -np.inf
            for t in range(a, b):
                v = x[order[t], c]
                lo = min(lo, v)
                hi = max(hi, v)
            if hi - lo > width:
                best, width = c, hi - lo
        if width <= 0.0:
            continue
        vals = np.empty(b - a)
        for t in range(a, b):
            vals[t - a] = x[order[t], best]
        sub = order[a:b][np.argsort(vals, kind="mergesort")]
        order[a:b] = sub
        mid = a + (b - a) // 2
        starts[top], stops[top] = a, mid
        starts[top + 1], stops[top + 1] = mid, b
        top += 2
    return order


@njit(cache=True, nogil=True)
def _row_gain(row, cur):
    """A candidate's gain from its whole row of the kernel matrix: the
    block sums of :func:`_gain` over every block (a block :func:`_gain`
    skips sums to exactly 0, so both give the same bits)."""
    n = row.shape[0]
    g = 0.0
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        g += _block_sum(row[s:e], cur[s:e], e - s)
    return g


@njit(cache=True, nogil=True)
def _gain(xt, at, ht, sqn, nrm, explicit, bounds, cov2, block_cov2, cur, inv_dim, j, q, q2,
          kv, work, count):
    """Exact marginal gain of candidate j, without the kernel matrix (see the
    module docstring)."""
    box_lo, box_hi, norm_lo, norm_hi = bounds
    n = cov2.shape[0]
    g = 0.0
    for b in range(block_cov2.shape[0]):
        lim = block_cov2[b]
        if lim <= 0.0:
            continue
        if _bound_sq(xt, nrm, box_lo, box_hi, norm_lo, norm_hi, explicit, j, b) >= lim:
            continue
        s = b * BLOCK
        e = min(n, s + BLOCK)
        _kernel_rows(xt, at, ht, sqn, explicit, j, s, e, inv_dim, q, q2, kv, work)
        g += _block_sum(kv, cur[s:e], e - s)
        count[0] += e - s
    return g


@njit(cache=True, nogil=True)
def _accept(xt, at, ht, sqn, nrm, explicit, bounds, sim, cached, cov2, block_cov2, cur, inv_dim,
            j, pos, cluster, q, q2, kv, work):
    """Make j the medoid number ``pos``: the rows more similar to it than to
    their medoid join it (ties stay with the earlier medoid). With the
    kernel matrix, j's row is scanned whole and no distance is kept (the
    blocks' largest distances stay infinite: nothing is ever skipped)."""
    n = cov2.shape[0]
    if cached:
        row = sim[j]
        for i in range(n):
            if row[i] > cur[i]:
                cur[i] = row[i]
                cluster[i] = pos
        return
    box_lo, box_hi, norm_lo, norm_hi = bounds
    for b in range(block_cov2.shape[0]):
        lim = block_cov2[b]
        if lim <= 0.0:
            continue
        if _bound_sq(xt, nrm, box_lo, box_hi, norm_lo, norm_hi, explicit, j, b) >= lim:
            continue
        s = b * BLOCK
        e = min(n, s + BLOCK)
        _kernel_rows(xt, at, ht, sqn, explicit, j, s, e, inv_dim, q, q2, kv, work)
        top = 0.0
        for t in range(e - s):
            i = s + t
            if kv[t] > cur[i]:
                cov2[i] = q[t]
                cur[i] = kv[t]
                cluster[i] = pos
            if cov2[i] > top:
                top = cov2[i]
        block_cov2[b] = top


@njit(cache=True, nogil=True)
def _refresh(xt, at, ht, sqn, nrm, explicit, bounds, cov2, block_cov2, cur, inv_dim, gains, q,
             q2, kv, work, acc, count):
    """Every candidate's exact gain without the kernel matrix, in one pass
    over pairs of blocks.

    Block pair (b1, b2), b1 < b2: each pair of rows' kernel value is computed
    once and serves both directions; row i of b1 adds its four interleaved
    sums over b2 as :func:`_gain` would, and the rows of b2 collect theirs
    over b1 in ``acc`` (one running sum per row of b2 and residue of i's
    position), added once b1 is done. Pairs of blocks are visited in the
    order that adds each candidate's block sums in block order.
    """
    box_lo, box_hi, norm_lo, norm_hi = bounds
    n = cov2.shape[0]
    nb = block_cov2.shape[0]
    gains[:] = 0.0
    for b1 in range(nb):
        s1, e1 = b1 * BLOCK, min(n, (b1 + 1) * BLOCK)
        # The block itself: each candidate's own sum (no symmetry to use).
        if block_cov2[b1] > 0.0:
            for j in range(s1, e1):
                _kernel_rows(xt, at, ht, sqn, explicit, j, s1, e1, inv_dim, q, q2, kv, work)
                gains[j] += _block_sum(kv, cur[s1:e1], e1 - s1)
            count[0] += (e1 - s1) * (e1 - s1)
        for b2 in range(b1 + 1, nb):
            lim = max(block_cov2[b1], block_cov2[b2])
            if lim <= 0.0:
                continue
            if _block_pair_bound_sq(box_lo, box_hi, norm_lo, norm_hi, explicit, b1, b2) >= lim:
                continue
            s2, e2 = b2 * BLOCK, min(n, (b2 + 1) * BLOCK)
            m = e2 - s2
            count[0] += 2 * m * (e1 - s1)
            acc[:, :m] = 0.0
            cs = cur[s2:e2]
            for i in range(s1, e1):
                _kernel_rows(xt, at, ht, sqn, explicit, i, s2, e2, inv_dim, q, q2, kv, work)
                ki = kv[:m]
                # Row i as a candidate: its sum over b2.
                gains[i] += _block_sum(ki, cs, m)
                # Row i's term in each b2 candidate's sum over b1.
                lane = acc[(i - s1) & 3]
                cu = cur[i]
                for t in range(m):
                    v = ki[t] - cu
                    lane[t] += v if v > 0.0 else 0.0
            for t in range(m):
                gains[s2 + t] += (acc[0, t] + acc[1, t]) + (acc[2, t] + acc[3, t])


@njit(cache=True, nogil=True)
def exact_facility_location(xt, at, ht, sqn, explicit, budget, inv_dim, rank, cached, sim,
                            fill, stats):
    """EPIC's greedy, exact, on rows in a spatially coherent order.

    Parameters
    ----------
    xt : ndarray of shape (m, n)
        Explicit gradients, transposed (``explicit``), else unused (shape (0, n)).
    at, ht : ndarray of shape (C, n), (D, n)
        Factors of the gradients ``a_i (x) h_i``, transposed, when not
        ``explicit`` (else unused, shape (0, n)).
    sqn : ndarray of shape (n,)
        Squared gradient norms.
    explicit : bool
    budget : int
        Medoids to pick, 1 <= budget <= n.
    inv_dim : float
        1 / the gradient's dimension (the kernel's scale).
    rank : ndarray of shape (n,), int64
        Each row's number in the caller's order (a permutation of 0..n-1):
        ties in gain go to the lower number, as in the dense greedy.
    cached : bool
        Read kernel values from an n x n matrix (8 n^2 bytes) instead of
        computing them: faster for small classes.
    sim : ndarray of shape (n, n)
        That matrix, in the rows' order (unused without ``cached``: shape
        (0, 0) will do).
    fill : bool
        Fill ``sim`` here, with the very numbers the kernels compute
        otherwise (explicit gradients), so that keeping it never changes a
        bit.
    stats : ndarray of shape (budget, 4), int64
        Per step, added to: candidates evaluated, full refreshes, kernel
        values the evaluations computed, kernel values the refreshes used
        (each pair counted in both directions); shape (0, 4) keeps none.
        ``benchmarks/bench_epic_cost.py`` reads them.

    Returns
    -------
    medoids : ndarray of shape (budget,), int64
        Rows picked (positions in ``xt``'s columns), in order.
    cluster : ndarray of shape (n,), int64
        Position in ``medoids`` of each row's most similar medoid (ties:
        the earliest picked).
    """
    n = sqn.shape[0]
    nrm = np.sqrt(sqn)
    where = np.empty(n, dtype=np.int64)
    for i in range(n):
        where[rank[i]] = i
    n_blocks = (n + BLOCK - 1) // BLOCK
    bounds = _block_bounds(xt, nrm, explicit, n_blocks)
    q = np.empty(BLOCK)
    q2 = np.empty(BLOCK)
    kv = np.empty(BLOCK)
    work = np.empty(BLOCK)
    acc = np.empty((4, BLOCK))
    # With the matrix, whole rows are scanned (no distance is compared, so a
    # given matrix need not hold the kernels' very bits); without it, blocks
    # a candidate cannot reach are skipped.
    if cached and fill:
        _fill(xt, at, ht, sqn, explicit, inv_dim, sim, q, q2, kv, work, np.empty((BLOCK, BLOCK)))
    cov2 = np.full(n, np.inf)
    block_cov2 = np.full(n_blocks, np.inf)
    cur = np.zeros(n)
    cluster = np.full(n, -1, dtype=np.int64)
    is_medoid = np.zeros(n, dtype=np.bool_)
    gains = np.empty(n)
    # The heap holds rank numbers, so that ties go to the lower one.
    hg = np.empty(n)
    hr = np.empty(n, dtype=np.int64)
    stamp = np.empty(n, dtype=np.int64)
    medoids = np.empty(budget, dtype=np.int64)
    picked = 0
    size = 0
    refresh = True
    evals = 0
    keep = stats.shape[0] >= budget
    count = np.zeros(1, dtype=np.int64)
    while picked < budget:
        if refresh:
            count[0] = 0
            if cached:
                # Reading the matrix row by row is cheaper than the pair pass
                # (whose point is to compute each kernel value once).
                for j in range(n):
                    gains[j] = _row_gain(sim[j], cur)
            else:
                _refresh(xt, at, ht, sqn, nrm, explicit, bounds, cov2, block_cov2, cur, inv_dim,
                         gains, q, q2, kv, work, acc, count)
            if keep:
                stats[picked, 1] += 1
                stats[picked, 3] += count[0]
            size = 0
            for r in range(n):
                j = where[r]
                if not is_medoid[j]:
                    size = _push(hg, hr, size, gains[j], r)
                    stamp[j] = picked
            refresh = False
            evals = 0
        g, r, size = _pop(hg, hr, size)
        j = where[r]
        if stamp[j] == picked:
            medoids[picked] = j
            is_medoid[j] = True
            _accept(xt, at, ht, sqn, nrm, explicit, bounds, sim, cached, cov2, block_cov2, cur,
                    inv_dim, j, picked, cluster, q, q2, kv, work)
            picked += 1
            evals = 0
            continue
        if cached:
            g = _row_gain(sim[j], cur)
        else:
            count[0] = 0
            g = _gain(xt, at, ht, sqn, nrm, explicit, bounds, cov2, block_cov2, cur, inv_dim, j,
                      q, q2, kv, work, count)
            if keep:
                stats[picked, 2] += count[0]
        stamp[j] = picked
        size = _push(hg, hr, size, g, r)
        evals += 1
        if keep:
            stats[picked, 0] += 1
        if not cached and evals * REFRESH_DIVISOR > n:
            refresh = True
    return medoids, cluster
