"""Groups: find poisons that sit together, as well as alone, by what surrounds them.

Deep k-NN (:mod:`gradscore.selection.feature_space`) drops an example whose
nearest neighbours in feature space mostly carry another label. That catches
a dirty-label poison sitting alone among the class it looks like, but not a
*group* of clean-label poisons: when more poisons than ``k`` sit together,
their neighbours are mostly each other, and they share a label. The
``groups`` method asks deep k-NN's question of whole groups:

1. Per class, single linkage over the class's k-NN graph in feature space
   (its minimum spanning tree; no dense n x n): every node of the merge
   tree is a candidate group, from pairs up to ``max_group_fraction`` of
   the class.
2. A group's *votes* are the labels at the far end of the k-NN edges (over
   all classes) that leave it, from a member to a non-member: what
   surrounds the group. For a single example these are deep k-NN's votes.
3. A group of at least 2 members whose own label is not a plurality of its
   votes is dropped whole.

The votes of every node come from one replay of the merges, small group
into large (:func:`_replay_merges`), in O(n log n * k) per class.

Why this signal, measured on the defence benchmark's exports, is in
docs/method.md ("Groups").
"""

from dataclasses import dataclass

import numpy as np
from numba import njit

#: Largest candidate group, as a fraction of its class (see docs/method.md).
MAX_GROUP_FRACTION = 0.5


@dataclass
class GroupsResult:
    """Groups outcome for one class.

    Attributes
    ----------
    drop : ndarray of shape (n,), bool
        Rows of the class in a group judged foreign to its label.
    own_share : ndarray of shape (n,), float64
        For dropped rows, the lowest share of the class's own label among
        the votes on a foreign group holding them (lower = more foreign);
        NaN elsewhere.
    n_judged : int
        Groups (merge-tree nodes of 2 to ``max_group_fraction * n``
        members) judged.
    n_foreign : int
        Of those, groups judged foreign.
    """

    drop: np.ndarray
    own_share: np.ndarray
    n_judged: int
    n_foreign: int


def tree_edges(knn_idx, knn_d2):
    """Minimum spanning tree (forest) of one class's symmetrised k-NN graph.

    Parameters
    ----------
    knn_idx, knn_d2 : ndarray of shape (n, k)
        Each row's neighbours within the class (row numbers in ``[0, n)``)
        and squared distances.

    Returns
    -------
    ei, ej : ndarray of shape (m,), int64
        The tree's edges in merge order (by length, ties by ``(ei, ej)``).
    length : ndarray of shape (m,), float64
        Euclidean edge lengths, non-decreasing. ``m = n - 1`` when the graph
        is connected, fewer otherwise (components are never merged).
    """
    # On first use: scipy.sparse is slow to import, and EPIC never needs it.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    n, k = knn_idx.shape
    if n < 2 or k == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    rows = np.repeat(np.arange(n), k)
    cols = knn_idx.ravel()
    # Zero-length edges (duplicate rows) would vanish from a sparse matrix:
    # give them the smallest positive weight instead.
    w = np.sqrt(np.maximum(knn_d2.ravel().astype(np.float64), 0.0))
    w = np.where(w > 0, w, np.finfo(np.float64).tiny)
    a = np.minimum(rows, cols)
    b = np.maximum(rows, cols)
    keep = a != b
    a, b, w = a[keep], b[keep], w[keep]
    # Each edge is listed from both ends; a sparse matrix would add the two.
    pair, first = np.unique(a * n + b, return_index=True)
    g = coo_matrix((w[first], (pair // n, pair % n)), shape=(n, n)).tocsr()
    mst = minimum_spanning_tree(g).tocoo()
    order = np.lexsort((mst.col, mst.row, mst.data))
    length = mst.data[order].astype(np.float64)
    length[length <= np.finfo(np.float64).tiny] = 0.0
    return mst.row[order].astype(np.int64), mst.col[order].astype(np.int64), length


def single_linkage(knn_idx, knn_d2):
    """Single-linkage merge heights and sizes of one class over its k-NN graph.

    Returns
    -------
    height : ndarray of shape (m,)
        Distance of each merge (as column 2 of scipy's ``linkage``).
    size : ndarray of shape (m,), int64
        Members of the node made at each merge (as column 3).
    """
    ei, ej, length = tree_edges(knn_idx, knn_d2)
    n = knn_idx.shape[0]
    parent = np.arange(n)
    sizes = np.ones(n, np.int64)
    size = np.empty(ei.size, np.int64)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for t in range(ei.size):
        a, b = find(ei[t]), find(ej[t])
        parent[b] = a
        sizes[a] += sizes[b]
        size[t] = sizes[a]
    return length, size


def tree_nodes(ei, ej, n):
    """The single-linkage tree's nodes in merge order: each merge's member list.

    Replays one class's tree edges (:func:`tree_edges`, in merge order) with
    a union-find, the smaller node merged into the larger. The list yielded
    is the new node's own and grows at later merges: copy it to keep it.
    """
    parent = np.arange(n)
    members = {i: [i] for i in range(n)}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(ei, ej):
        a, b = find(a), find(b)
        if a == b:
            continue
        if len(members[a]) < len(members[b]):
            a, b = b, a
        parent[b] = a
        members[a] += members.pop(b)
        yield members[a]


def reverse_graph(nbr_idx):
    """CSR of the reversed k-NN graph: ``src[ptr[j]:ptr[j+1]]`` list ``j``."""
    n, k = nbr_idx.shape
    dst = nbr_idx.ravel()
    order = np.argsort(dst, kind="stable")
    src = np.repeat(np.arange(n, dtype=np.int64), k)[order]
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=ptr[1:])
    return ptr, src


@njit(cache=True, nogil=True)
def _replay_merges(ei, ej, rows, loc, labels, ignore, nbr_idx, rev_ptr, rev_src, label,
                   max_size, num_classes):
    """Replay one class's merges, judging every node of 2..max_size members.

    ``rows`` are the class's rows among all voters, ``loc`` maps a voter to
    its position in ``rows`` (-1 for other classes), ``nbr_idx`` is every
    voter's k-NN list and ``rev_*`` its reverse. A node's votes count the
    labels at the far end of edges leaving it; merging ``b`` into the larger
    ``a`` makes the edges between them inner ones, found by visiting only
    ``b``'s members. Edges that end at an ``ignore``d voter never count.
    """
    n = rows.size
    k = nbr_idx.shape[1]
    comp = np.arange(n)
    size = np.ones(n, np.int64)
    head = np.arange(n)
    tail = np.arange(n)
    nxt = np.full(n, -1, np.int64)
    votes = np.zeros((n, num_classes), np.int64)
    for i in range(n):
        for q in range(k):
            j = nbr_idx[rows[i], q]
            if not ignore[j]:
                votes[i, labels[j]] += 1
    drop = np.zeros(n, np.bool_)
    share = np.full(n, np.nan)
    isolated = np.full(n, -1, np.int64)
    n_judged = 0
    n_foreign = 0
    for t in range(ei.size):
        a = comp[ei[t]]
        b = comp[ej[t]]
        if a == b:
            continue
        if size[a] < size[b]:
            a, b = b, a
        m = head[b]
        while m != -1:
            g = rows[m]
            for q in range(k):
                j = nbr_idx[g, q]
                other = loc[j]
                if other >= 0 and comp[other] == a and not ignore[j]:
                    votes[b, label] -= 1      # b -> a edge is now inside
            if not ignore[g]:
                for p in range(rev_ptr[g], rev_ptr[g + 1]):
                    other = loc[rev_src[p]]
                    if other >= 0 and comp[other] == a:
                        votes[a, label] -= 1  # a -> b edge is now inside
            m = nxt[m]
        m = head[b]
        while m != -1:
            comp[m] = a
            m = nxt[m]
        for c in range(num_classes):
            votes[a, c] += votes[b, c]
        size[a] += size[b]
        nxt[tail[a]] = head[b]
        tail[a] = tail[b]
        if size[a] > max_size:
            continue
        n_judged += 1
        own = votes[a, label]
        best = 0
        total = 0
        for c in range(num_classes):
            total += votes[a, c]
            if c != label and votes[a, c] > best:
                best = votes[a, c]
        if total == 0:
            # No edge leaves the group (a clump larger than k): the caller
            # judges it by what lies nearest its centre instead.
            m = head[a]
            while m != -1:
                isolated[m] = t
                m = nxt[m]
        elif own < best:
            n_foreign += 1
            s = own / total
            m = head[a]
            while m != -1:
                drop[m] = True
                if not s >= share[m]:         # NaN-safe minimum
                    share[m] = s
                m = nxt[m]
    return drop, share, isolated, n_judged, n_foreign


def _judge_tree(class_rows, labels, label, nbr_idx, knn_idx, knn_d2, *, num_classes,
                ignore=None, rev=None, max_group_fraction=MAX_GROUP_FRACTION, max_size=None):
    """Groups of one class judged by the labels around them (one pass), except
    the clumps no k-NN edge leaves: ``(result, clumps)``, ``clumps`` a list of
    member positions (in ``class_rows``), one per clump, for :func:`_judge_clumps`."""
    n = class_rows.size
    if max_size is None:
        max_size = int(np.floor(max_group_fraction * n))
    class_rows = np.asarray(class_rows, dtype=np.int64)
    if knn_d2 is None:
        ei, ej = knn_idx
    else:
        ei, ej, _ = tree_edges(knn_idx, knn_d2)
    loc = np.full(labels.size, -1, np.int64)
    loc[class_rows] = np.arange(n)
    rev_ptr, rev_src = reverse_graph(nbr_idx) if rev is None else rev
    if ignore is None:
        ignore = np.zeros(labels.size, dtype=bool)
    drop, share, isolated, n_judged, n_foreign = _replay_merges(
        ei, ej, class_rows, loc, np.asarray(labels, dtype=np.int64), ignore,
        np.ascontiguousarray(nbr_idx, dtype=np.int64), rev_ptr, rev_src, int(label),
        int(max_size), int(num_classes))
    clumps = [np.flatnonzero(isolated == t) for t in np.unique(isolated[isolated >= 0])]
    return GroupsResult(drop, share, int(n_judged), int(n_foreign)), clumps


def _judge_clumps(res, clumps, near, labels, label, num_classes):
    """Judge each clump by the labels of the voters nearest its centre (in place)."""
    for mem, voters in zip(clumps, near):
        res.n_judged += 1
        kk = voters.size
        if kk == 0:
            continue
        votes = np.bincount(labels[voters], minlength=num_classes)
        own = votes[label]
        votes[label] = -1
        if own < votes.max():
            res.n_foreign += 1
            res.drop[mem] = True
            res.own_share[mem] = np.fmin(res.own_share[mem], own / kk)


def in_memory_clump_voters(features):
    """``clump_voters`` for :func:`foreign_groups` over features held in memory."""
    def voters(members, ignore, k):
        return nearest_to_centres(features, members, ignore, k)
    return voters


def nearest_to_centres(features, members, ignore, k):
    """For each member set, the ``k`` rows nearest its centre that are neither
    members nor ``ignore``d (ties by row number), nearest first.

    Parameters
    ----------
    features : ndarray of shape (N, d)
    members : list of ndarray of int
    ignore : ndarray of shape (N,), bool
    k : int

    Returns
    -------
    voters : list of ndarray of int64
    """
    out = []
    x = np.asarray(features, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    for mem in members:
        centre = x[mem].mean(axis=0)
        d2 = sq - 2.0 * (x @ centre)
        d2[mem] = np.inf
        d2[ignore] = np.inf
        kk = min(k, int(np.isfinite(d2).sum()))
        order = np.lexsort((np.arange(d2.size), d2))[:kk]
        out.append(order.astype(np.int64))
    return out


#: Passes of :func:`foreign_groups` at most, and how far above the most
#: foreign group's share of its own label a group is accepted in one pass.
MAX_PASSES, ACCEPT_MARGIN = 6, 0.05


def foreign_groups(labels, nbr_idx, trees, *, num_classes, features=None, clump_voters=None,
                   max_group_fraction=MAX_GROUP_FRACTION, max_passes=MAX_PASSES,
                   accept_margin=ACCEPT_MARGIN):
    """Foreign groups over every class, most foreign first.

    A foreign group makes the true-label examples around it look foreign
    too (their neighbours are the group's members): a clean-label group
    collided on a target of class A makes A's examples near the target look
    like a group of another label. So groups are accepted in passes: each
    pass judges every class with the rows accepted so far no longer voting,
    and accepts the foreign groups whose share of their own label is within
    ``accept_margin`` of the lowest share found. The last pass's foreign
    groups are dropped too. Accepted rows also leave their class's count:
    a group is judged only while it is at most ``max_group_fraction`` of the
    rows of its class not yet accepted, so once a large group of poisons is
    accepted, the clean rest of its class (which then *is* the class) is not
    judged as a group of its own.

    Parameters
    ----------
    labels : ndarray of shape (N,)
    nbr_idx : ndarray of shape (N, k)
        Every row's k-NN list in feature space over all classes.
    trees : list of (label, rows, ei, ej)
        Per class: its rows (in ``labels``) and its tree edges
        (:func:`tree_edges`, positions in ``rows``).
    features : ndarray of shape (N, d), default=None
        Every row's features. A group with no k-NN edge leaving it (a clump
        of more than k near-identical rows) is then judged by the k rows
        nearest its centre that are not members; without features (or
        ``clump_voters``) such a clump is kept.
    clump_voters : callable, default=None
        Instead of ``features``: ``clump_voters(members, ignore, k)`` takes a
        list of member-row arrays and returns, for each, the rows of the
        ``k`` voters nearest the members' centre that are neither members
        nor ``ignore``d (see :func:`nearest_to_centres`); called once per
        pass with the clumps of every class.

    Returns
    -------
    drop : ndarray of shape (N,), bool
    own_share : ndarray of shape (N,), float64
        For dropped rows, the lowest share of their label around a foreign
        group holding them; NaN elsewhere.
    """
    n = labels.size
    if clump_voters is None and features is not None:
        clump_voters = in_memory_clump_voters(features)
    rev = reverse_graph(nbr_idx)
    accepted = np.zeros(n, dtype=bool)
    share = np.full(n, np.nan)
    for _ in range(max_passes):
        drop = np.zeros(n, dtype=bool)
        pass_share = np.full(n, np.nan)
        judged = []
        for c, rows, ei, ej in trees:
            remaining = rows.size - int(accepted[rows].sum())
            res, clumps = _judge_tree(rows, labels, c, nbr_idx, (ei, ej), None,
                                      num_classes=num_classes, ignore=accepted, rev=rev,
                                      max_size=int(np.floor(max_group_fraction * remaining)))
            judged.append((c, rows, res, clumps))
        # Every class's clumps in one query (one pass over the features out of core).
        every = [rows[m] for _, rows, _, clumps in judged for m in clumps]
        near = clump_voters(every, accepted, nbr_idx.shape[1]) \
            if every and clump_voters is not None else []
        at = 0
        for c, rows, res, clumps in judged:
            if clump_voters is not None and clumps:
                _judge_clumps(res, clumps, near[at:at + len(clumps)], labels, c, num_classes)
                at += len(clumps)
            drop[rows] = res.drop
            pass_share[rows] = res.own_share
        new = drop & ~accepted
        if not new.any():
            break
        low = np.nanmin(pass_share[new])
        take = new & (pass_share <= low + accept_margin)
        accepted |= take
        share = np.fmin(share, pass_share)
    final = accepted | drop
    share = np.fmin(share, pass_share)
    share[~final] = np.nan
    return final, share
