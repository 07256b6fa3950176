"""Cross-class neighbours, out of core: each row's k nearest rows over all classes,
and its k nearest rows of its own class.

``deep-knn`` and ``groups`` compare an example with its nearest neighbours in
feature space over *all* classes, and ``groups`` also builds each class's
single-linkage tree from its neighbours *within* the class. Both lists come
from this stage, in one search, class by class, with memory bounded by a
class (for its cells) or a batch of rows (for the search), never by the
whole export:

1. :func:`class_cells` (one task per class): k-means cells of the class's
   features, each row's nearest cells of its class, and, for a spilled
   run, the class's features rewritten in cell order (one contiguous read
   per cell afterwards).
2. :func:`build_index` (the caller): every class's cell centroids in one
   small table, and a coarse level over them (k-means of the centroids)
   that finds a row's nearest cells of other classes without measuring
   every centroid.
3. :func:`search_cells` (one task per batch of cells of one class): each
   query row against the cells it probes, one BLAS product per (query
   cell, probed cell) pair, folded into the row's two sorted lists.
4. :func:`cross_neighbors` runs the three over any executor and gathers the
   lists by row number.

Exact or approximate
--------------------
With ``probes="all"`` every query row is compared with every row (blocked
brute force): the exact answer, at ``n^2 d`` multiply-adds. Otherwise a
row is compared with the rows of its ``probes`` nearest cells of its own
class and of its ``cross_probes`` nearest cells of other classes (an
inverted-file search, as FAISS's IVF); ``"auto"`` picks the exact search
when it costs at most :data:`EXACT_MAX_MACS`. How close the approximate
lists come, and how often they change a decision, is measured in
docs/benchmarks.md ("Cross-class neighbours").

Determinism
-----------
Cells depend only on the class's rows in row-number order and on
``SeedSequence([seed, label])``. Each distance is computed in a BLAS
product over one query cell and one probed cell, both centred on the probed
cell's centroid, so its value depends on those two cells, not on how tasks
batch them or which worker runs them. Ties are broken by row number; exact
duplicate rows lie at distance 0. In-memory, spilled and distributed runs
therefore give the same lists.
"""

from dataclasses import dataclass, field
import os
import pickle

import numpy as np

from .._threads import one_blas_thread
from ..errors import GradscoreError
from ._cells import (kmeans, nearest_centroids, cell_means, row_hashes, rownorms,
                               scan_block, smallest_per_row, split_direction)

#: Rows per cell the k-means aims at.
CELL_SIZE = 1024
#: k-means cells under ``cell_size // MIN_CELL_DIVISOR`` rows (and never
#: under ``k + 1``) are dissolved into their nearest larger cell.
MIN_CELL_DIVISOR = 4
#: Nearest cells of a row's own class it is compared with (its own included).
PROBES = 2
#: Nearest cells of other classes it is compared with.
CROSS_PROBES = 1
#: Coarse groups (of centroids) a row looks into for those cells.
SUPER_PROBES = 3
#: ``probes="auto"`` searches exactly when that costs at most this many
#: multiply-adds (n^2 d): about 10 CPU seconds of float32 BLAS here.
EXACT_MAX_MACS = 4 * 10**11
#: Rows of query cells one search task holds (a batch of whole cells).
BATCH_ROWS = 16384


@dataclass
class ClassInput:
    """One class's rows for :func:`class_cells` (picklable).

    Attributes
    ----------
    label : int
    rows : ndarray of shape (n,), int64
        Row numbers of the rows to search, ascending.
    features : ndarray of shape (N, d) or None
        In memory: the whole feature matrix; the class is ``features[rows]``.
    pieces : list or None
        Spilled: ``(path, first_row, n_rows)`` of the class in the spill's
        feature files, in spill order, with ``dtype`` and ``n_features``;
        ``take`` picks and orders the rows (positions in spill order).
    """

    label: int
    rows: np.ndarray
    features: np.ndarray = field(default=None, repr=False)
    pieces: list = None
    dtype: str = None
    n_features: int = None
    take: np.ndarray = field(default=None, repr=False)

    def load(self):
        """The class's features, in ``rows`` order, in their storage dtype."""
        if self.features is not None:
            return self.features[self.rows]
        from ..io.partition import _read_rows
        dt = np.dtype(self.dtype)
        parts = [_read_rows(path, dt, self.n_features, first, count)
                 for path, first, count in self.pieces]
        x = np.concatenate(parts) if len(parts) != 1 else parts[0]
        return x[self.take]


@dataclass
class CellParams:
    """How cells are made and searched (one value for every task of a run)."""

    k: int
    cell_size: int = CELL_SIZE
    probes: object = PROBES
    cross_probes: int = CROSS_PROBES
    super_probes: int = SUPER_PROBES
    seed: int = 0
    folder: str = None

    @property
    def exact(self):
        return self.probes == "all"


@dataclass
class ClassCells:
    """One class's cells (what :func:`class_cells` returns).

    Attributes
    ----------
    label : int
    rows : ndarray of shape (n,), int64
        Row numbers in cell order (cell 0's rows first, each cell's rows
        ascending).
    bounds : ndarray of shape (m + 1,), int64
        Cell ``q`` holds ``rows[bounds[q]:bounds[q + 1]]``.
    centroids : ndarray of shape (m, d), float32
    near : ndarray of shape (n, p), int32
        Each row's nearest cells of the class (its own first), following
        ``rows``; empty when the search is exact.
    """

    label: int
    rows: np.ndarray
    bounds: np.ndarray
    centroids: np.ndarray
    near: np.ndarray


def class_cells(inp, params):
    """Cells of one class, and (spilled) its features written in cell order.

    Parameters
    ----------
    inp : ClassInput
    params : CellParams
        With ``params.folder`` set, the features are written to
        ``<folder>/cells-<label>.bin`` (storage dtype) and the row numbers to
        ``cells-<label>.rows`` for :func:`search_cells` to read.

    Returns
    -------
    cells : ClassCells
    """
    x = inp.load()
    n = x.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, inp.label]))
    min_size = max(params.k + 1, params.cell_size // MIN_CELL_DIVISOR)
    m = max(1, int(round(n / params.cell_size)))
    if params.exact:
        # Cells are only blocks here: consecutive rows, cell_size at most.
        cell = np.arange(n, dtype=np.int64) // params.cell_size
    elif m == 1:
        cell = np.zeros(n, np.int64)
    else:
        cents = kmeans(x, m, rng)
        cell = nearest_centroids(x, cents, 1)[0][:, 0]
        cell = _dissolve_small(x, cell, cents, min_size)
        cell = _split_large(x, cell, 2 * params.cell_size, rng)
    order = np.lexsort((np.arange(n), cell))
    cell = cell[order]
    m = int(cell[-1]) + 1 if n else 0
    bounds = np.searchsorted(cell, np.arange(m + 1))
    x = x[order]
    rows = inp.rows[order]
    cents = cell_means(x, cell, m, np.zeros((m, x.shape[1]), np.float32))
    if params.exact or m == 1:
        near = np.empty((n, 0), np.int32)
    else:
        p = min(params.probes, m)
        near_all = nearest_centroids(x, cents, p)[0]
        near = _own_first(near_all, cell).astype(np.int32)
    if params.folder is not None:
        _write_cells(params.folder, inp.label, x, rows)
    del x
    return ClassCells(label=int(inp.label), rows=rows, bounds=bounds, centroids=cents,
                      near=near)


def _dissolve_small(x, cell, cents, min_size):
    """Move the rows of cells under ``min_size`` rows to their nearest larger cell."""
    m = cents.shape[0]
    size = np.bincount(cell, minlength=m)
    alive = size >= min_size
    if alive.all() or not alive.any():
        return cell
    ids = np.flatnonzero(alive)
    moved = ~alive[cell]
    cell = cell.copy()
    cell[moved] = ids[nearest_centroids(x[moved], cents[ids], 1)[0][:, 0]]
    return np.searchsorted(ids, cell)  # renumber 0..m'-1, same order


def _split_large(x, cell, max_size, rng):
    """Cut cells over ``max_size`` rows in halves at the median of their top
    principal direction, until none is over; cells keep their order, halves
    follow their parent."""
    m = int(cell.max()) + 1
    size = np.bincount(cell, minlength=m)
    if size.max() <= max_size:
        return cell
    new = np.empty_like(cell)
    nxt = 0
    for c in range(m):
        members = np.flatnonzero(cell == c)
        for part in _halves(x, members, max_size, rng):
            new[part] = nxt
            nxt += 1
    return new


def _halves(x, members, max_size, rng):
    if members.size <= max_size:
        return [members]
    v = split_direction(np.asarray(x[members], dtype=np.float32), rng)
    proj = np.asarray(x[members], dtype=np.float64) @ v
    order = np.lexsort((members, proj))
    half = members.size // 2
    lo, hi = np.sort(members[order[:half]]), np.sort(members[order[half:]])
    return _halves(x, lo, max_size, rng) + _halves(x, hi, max_size, rng)


def _own_first(near, own):
    """Each row's own cell first, then the others nearest first (the own cell
    replaces the farthest where it was not among them)."""
    near = near.copy()
    mine = near == own[:, None]
    missing = ~mine.any(axis=1)
    near[missing, -1] = own[missing]
    mine[missing, -1] = True
    return np.take_along_axis(near, np.argsort(~mine, axis=1, kind="stable"), axis=1)


def _cells_path(folder, label, what):
    return os.path.join(folder, f"cells-{label:06d}.{what}")


def _write_cells(folder, label, x, rows):
    for what, arr in (("bin", x), ("rows", rows.astype(np.int64))):
        path = _cells_path(folder, label, what)
        with open(path, "wb") as fh:
            np.ascontiguousarray(arr).tofile(fh)


@dataclass
class CellIndex:
    """Every class's cells in one table (what :func:`build_index` returns).

    Cell ``g`` (global number) is cell ``g - offset[label]`` of class
    ``cell_label[g]``.
    """

    centroids: np.ndarray
    cell_label: np.ndarray
    offset: dict
    bounds: dict
    coarse: np.ndarray
    coarse_ptr: np.ndarray
    coarse_cells: np.ndarray
    n_features: int
    dtype: str


def build_index(cells, params, *, n_features, dtype="float32"):
    """One table of all cells, with a coarse level over the centroids.

    Parameters
    ----------
    cells : list of ClassCells
        In class order.
    params : CellParams

    Returns
    -------
    index : CellIndex
    """
    cents = np.concatenate([c.centroids for c in cells]) if cells else \
        np.zeros((0, n_features), np.float32)
    cell_label = np.concatenate([np.full(c.centroids.shape[0], c.label, np.int64)
                                 for c in cells]) if cells else np.zeros(0, np.int64)
    offset, bounds, at = {}, {}, 0
    for c in cells:
        offset[c.label] = at
        bounds[c.label] = c.bounds
        at += c.centroids.shape[0]
    m = cents.shape[0]
    g = max(1, int(np.ceil(np.sqrt(m))))
    if params.exact or m <= 1:
        coarse = cents[:1].copy()
        group = np.zeros(m, np.int64)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([params.seed, -1 & 0xFFFFFFFF]))
        coarse = kmeans(cents, g, rng, sample=m)
        group = nearest_centroids(cents, coarse, 1)[0][:, 0]
    order = np.argsort(group, kind="stable")
    ptr = np.searchsorted(group[order], np.arange(coarse.shape[0] + 1))
    return CellIndex(centroids=cents, cell_label=cell_label, offset=offset, bounds=bounds,
                     coarse=coarse, coarse_ptr=ptr, coarse_cells=order,
                     n_features=n_features, dtype=dtype)


@dataclass
class CellStore:
    """Where :func:`search_cells` reads cells: the spill folder, or memory.

    In memory, ``features`` is the whole matrix and ``rows[label]`` the
    class's row numbers in cell order.
    """

    folder: str = None
    dtype: str = "float32"
    n_features: int = None
    features: np.ndarray = field(default=None, repr=False)
    rows: dict = field(default=None, repr=False)

    def read(self, label, start, stop):
        """Rows ``start:stop`` (cell order) of class ``label``: float32 features, row numbers."""
        if self.features is not None:
            ids = self.rows[label][start:stop]
            return np.asarray(self.features[ids], dtype=np.float32), ids
        from ..io.partition import _read_rows
        x = _read_rows(_cells_path(self.folder, label, "bin"), np.dtype(self.dtype),
                       self.n_features, start, stop - start)
        ids = _read_rows(_cells_path(self.folder, label, "rows"), np.dtype(np.int64), 1,
                         start, stop - start)[:, 0]
        return x.astype(np.float32), ids


@dataclass
class SearchTask:
    """One batch of cells of one class to search (picklable)."""

    label: int
    first_cell: int
    stop_cell: int
    near: np.ndarray
    index: object
    store: CellStore
    params: CellParams
    k_all: int
    k_own: int


@dataclass
class CellNeighbors:
    """What :func:`search_cells` returns for its rows (cell order).

    ``all_*``: nearest rows of any class; ``own_*``: of the row's class.
    Indices are row numbers (-1 where fewer were found), distances squared
    (float32, ``inf`` where none).
    """

    rows: np.ndarray
    all_idx: np.ndarray
    all_d2: np.ndarray
    own_idx: np.ndarray
    own_d2: np.ndarray


def search_cells(task):
    """Nearest rows of one batch of cells: each query cell against the cells it probes.

    BLAS runs on one thread here (as on Dask's workers): how a product is
    split over threads changes the last bits of its values.

    Returns
    -------
    result : CellNeighbors
    """
    with one_blas_thread():
        return _search_cells(task)


def _search_cells(task):
    index = _load_index(task.index)
    p = task.params
    c = task.label
    b = index.bounds[c]
    base = index.offset[c]
    q_cells = np.arange(task.first_cell, task.stop_cell)
    start, stop = int(b[task.first_cell]), int(b[task.stop_cell])
    x, ids = task.store.read(c, start, stop)
    n = ids.size
    local = np.repeat(q_cells - task.first_cell, np.diff(b[task.first_cell:task.stop_cell + 1]))
    all_d2 = np.full((n, task.k_all), np.inf, np.float32)
    all_idx = np.full((n, task.k_all), -1, np.int64)
    own_d2 = np.full((n, task.k_own), np.inf, np.float32)
    own_idx = np.full((n, task.k_own), -1, np.int64)
    # A list of length 0 takes nothing: its threshold is below every distance.
    all_thr = np.full(n, np.inf if task.k_all else -np.inf, np.float32)
    own_thr = np.full(n, np.inf if task.k_own else -np.inf, np.float32)
    if task.k_all == 0:
        return CellNeighbors(ids, all_idx, all_d2, own_idx, own_d2)
    # probe[i, j]: global cell numbers row i is compared with.
    m = index.centroids.shape[0]
    if p.exact:
        probe = None
    else:
        same = task.near.astype(np.int64) + base
        cross = _cross_probes(x, c, index, p.cross_probes, p.super_probes)
        probe = np.concatenate([same, cross], axis=1)
    # Visit probed cells in one fixed order (global number); for each, the
    # query cells that have rows probing it.
    if probe is None:
        visit, ptr, who = np.arange(m), None, None
    else:
        # Inverted lists: for each probed cell, the rows probing it (ascending).
        g_of = probe.ravel()
        r_of = np.repeat(np.arange(n), probe.shape[1])
        keep = g_of >= 0
        pairs = np.unique(g_of[keep] * n + r_of[keep])
        g_of, who = pairs // n, pairs % n
        visit, first = np.unique(g_of, return_index=True)
        ptr = np.append(first, g_of.size)
    hq = row_hashes(np.ascontiguousarray(x))
    for t, g in enumerate(visit):
        lab = int(index.cell_label[g])
        gb = index.bounds[lab]
        lq = g - index.offset[lab]
        y, yid = task.store.read(lab, int(gb[lq]), int(gb[lq + 1]))
        if y.shape[0] == 0:
            continue
        hy = row_hashes(y)
        # Both sides centred on the probed cell's centroid (smaller norms,
        # smaller rounding), once per cell.
        mu = index.centroids[g]
        yc = y - mu
        sq_y = rownorms(yc)
        rows_g = np.arange(n) if ptr is None else who[ptr[t]:ptr[t + 1]]
        qcell = local[rows_g]
        cuts = np.flatnonzero(np.diff(qcell)) + 1
        # One product per (query cell, probed cell): its shape, so its bits,
        # do not depend on how cells were batched into tasks.
        for sel in np.split(rows_g, cuts):
            xq = x[sel] - mu
            gram = xq @ yc.T
            scan_block(gram, xq, yc, rownorms(xq), sq_y, sel, ids[sel], yid,
                       hq[sel], hy, lab == c, all_d2, all_idx, all_thr,
                       own_d2, own_idx, own_thr)
    return CellNeighbors(ids, all_idx, all_d2, own_idx, own_d2)


def _cross_probes(x, label, index, n_probes, super_probes):
    """Each row's ``n_probes`` nearest cells of other classes (global numbers, -1 if none).

    Looks only into the cells of the ``super_probes`` coarse groups nearest
    the row; centroids there are measured exactly.
    """
    n = x.shape[0]
    out_ids = np.full((n, n_probes), -1, np.int64)
    out_d2 = np.full((n, n_probes), np.inf, np.float32)
    if n_probes == 0 or n == 0:
        return out_ids
    groups = nearest_centroids(x, index.coarse, super_probes)[0]
    for grp in np.unique(groups):
        cells = index.coarse_cells[index.coarse_ptr[grp]:index.coarse_ptr[grp + 1]]
        cells = cells[index.cell_label[cells] != label]
        if cells.size == 0:
            continue
        sel = np.flatnonzero((groups == grp).any(axis=1))
        d2 = _sqd(x[sel], index.centroids[cells])
        ids_sel, d2_sel = out_ids[sel], out_d2[sel]
        smallest_per_row(d2, cells, n_probes, ids_sel, d2_sel)
        out_ids[sel], out_d2[sel] = ids_sel, d2_sel
    return out_ids


def _sqd(a, b):
    from ._cells import sqdist
    return sqdist(np.ascontiguousarray(a, dtype=np.float32), b)


def _load_index(index):
    if isinstance(index, (str, os.PathLike)):
        with open(index, "rb") as fh:
            return pickle.load(fh)
    return index


@dataclass
class CrossNeighbors:
    """Every row's nearest rows over all classes, and within its class.

    Attributes
    ----------
    indices : ndarray of shape (N, k_all), int64
        Row numbers, nearest first (ties by row number); -1 for rows not
        searched (and where fewer than ``k_all`` were found).
    sqdist : ndarray of shape (N, k_all), float32
    own : dict
        ``label -> (rows, indices, sqdist)``: the class's rows (ascending)
        and their nearest rows of the class (``min(k, n_class - 1)`` each).
    k_all : int
    method : str
        ``"exact"`` or ``"cells"``.
    """

    indices: np.ndarray
    sqdist: np.ndarray
    own: dict
    k_all: int
    method: str
    store: object = None
    cells: list = None


def cross_neighbors(inputs, *, k, n_rows, n_features, dtype="float32", probes="auto",
                    cell_size=None, cross_probes=None, seed=0, folder=None,
                    executor=None, batch_rows=None):
    """Each row's ``k`` nearest rows over all classes and within its class.

    Parameters
    ----------
    inputs : list of ClassInput
        One per class (classes with no row to search may be left out).
    k : int
        Neighbours per row; clamped to the rows there are (``N - 1`` over
        all classes, ``n_class - 1`` within a class).
    n_rows : int
        Row numbers run over ``[0, n_rows)``.
    n_features : int
    dtype : str, default="float32"
        Storage dtype of spilled features (``"float16"`` stays float16 on disk).
    probes : int, "all" or "auto", default="auto"
        Cells of its own class each row is compared with; ``"all"``: exact
        search; ``"auto"``: exact when it costs at most
        :data:`EXACT_MAX_MACS` multiply-adds, else :data:`PROBES`.
    cell_size : int, default=None
        Rows per cell aimed at; default :data:`CELL_SIZE`.
    cross_probes : int, default=None
        Cells of other classes per row; default :data:`CROSS_PROBES`.
    seed : int, default=0
    folder : str, default=None
        Write cells here (a spilled or distributed run); None: in memory.
    executor : concurrent.futures.Executor, default=None
        Runs the tasks; None runs them here, one after another.
    batch_rows : int, default=None
        Rows of query cells per search task; default :data:`BATCH_ROWS`.

    Returns
    -------
    result : CrossNeighbors
    """
    cell_size = CELL_SIZE if cell_size is None else cell_size
    cross_probes = CROSS_PROBES if cross_probes is None else cross_probes
    batch_rows = BATCH_ROWS if batch_rows is None else batch_rows
    total = int(sum(inp.rows.size for inp in inputs))
    k_all = max(0, min(k, total - 1))
    if probes == "auto":
        probes = "all" if total * total * n_features <= EXACT_MAX_MACS else PROBES
    if probes != "all" and (not isinstance(probes, int) or probes < 1):
        raise GradscoreError(f"'probes' must be an int >= 1, 'all' or 'auto'; got {probes!r}")
    params = CellParams(k=k, cell_size=cell_size, probes=probes, cross_probes=cross_probes,
                        seed=seed, folder=folder)
    run = _runner(executor)
    cells = run(class_cells, [(inp, params) for inp in inputs])
    index = build_index(cells, params, n_features=n_features, dtype=dtype)
    if folder is not None:
        path = os.path.join(folder, "cells-index.pickle")
        with open(path, "wb") as fh:
            pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
        index_ref = path
        store = CellStore(folder=folder, dtype=dtype, n_features=n_features)
    else:
        index_ref = index
        store = CellStore(features=inputs[0].features if inputs else None,
                          rows={c.label: c.rows for c in cells}, n_features=n_features)
    tasks = []
    for cc in cells:
        n_c = cc.rows.size
        k_own = max(0, min(k, n_c - 1))
        for first, stop in _batches(cc.bounds, batch_rows):
            a, b = cc.bounds[first], cc.bounds[stop]
            tasks.append(SearchTask(label=cc.label, first_cell=first, stop_cell=stop,
                                    near=cc.near[a:b], index=index_ref, store=store,
                                    params=params, k_all=k_all, k_own=k_own))
    found = run(search_cells, [(t,) for t in tasks])
    if not params.exact:
        # Cells whose probes held fewer than k rows for some row (tiny
        # classes around it) are searched again against every cell.
        short = [(t, q) for t, res in zip(tasks, found)
                 for q in _short_cells(t, res, cells)]
        exact = CellParams(**{**params.__dict__, "probes": "all"})
        redo = [SearchTask(label=t.label, first_cell=q, stop_cell=q + 1, near=None,
                           index=index_ref, store=store, params=exact, k_all=k_all,
                           k_own=t.k_own) for t, q in short]
        tasks, found = tasks + redo, found + run(search_cells, [(t,) for t in redo])
    indices = np.full((n_rows, k_all), -1, np.int64)
    sqdist = np.full((n_rows, k_all), np.inf, np.float32)
    own = {}
    for cc in cells:
        k_own = max(0, min(k, cc.rows.size - 1))
        own[cc.label] = (np.sort(cc.rows), np.full((cc.rows.size, k_own), -1, np.int64),
                         np.full((cc.rows.size, k_own), np.inf, np.float32))
    # In task order: a cell searched again overwrites its first lists.
    for t, res in zip(tasks, found):
        indices[res.rows] = res.all_idx
        sqdist[res.rows] = res.all_d2
        rows, own_idx, own_d2 = own[t.label]
        at = np.searchsorted(rows, res.rows)
        own_idx[at], own_d2[at] = res.own_idx, res.own_d2
    for cc in cells:
        cc.near = None  # only the search needed them
    return CrossNeighbors(indices=indices, sqdist=sqdist, own=own, k_all=k_all,
                          method="exact" if params.exact else "cells", store=store,
                          cells=cells)


def _short_cells(task, res, cells):
    """Cells (of ``task``'s batch) holding a row whose lists came out short."""
    bad = (res.all_idx < 0).any(axis=1) | (res.own_idx < 0).any(axis=1)
    if not bad.any():
        return []
    b = next(c.bounds for c in cells if c.label == task.label)
    at = np.searchsorted(b, b[task.first_cell] + np.flatnonzero(bad), side="right") - 1
    return [int(q) for q in np.unique(at)]


def _batches(bounds, batch_rows):
    """Consecutive cells in batches of about ``batch_rows`` rows (at least one cell)."""
    m = bounds.size - 1
    out, first = [], 0
    while first < m:
        stop = first + 1
        while stop < m and bounds[stop + 1] - bounds[first] <= batch_rows:
            stop += 1
        out.append((first, stop))
        first = stop
    return out


def _runner(executor):
    def run(func, arglists):
        if executor is None:
            return [func(*a) for a in arglists]
        futures = [executor.submit(func, *a) for a in arglists]
        return [f.result() for f in futures]
    return run


#: Rows a clump query reads at once.
_READ_ROWS = 16384


def nearest_to_centres_in_store(store, cells, members, ignored, k, *, executor=None):
    """For each member set, the ``k`` rows nearest its centre, exactly, out of core.

    Rows that are members of the set, or ``ignored``, are not candidates;
    ties by row number. Two passes over the store: each class's task sums
    the members it holds (:func:`class_member_sums`), then each class's task
    measures its rows against every centre (:func:`class_nearest`).

    Parameters
    ----------
    store : CellStore
    cells : list of ClassCells
    members : list of ndarray of int
        Row numbers, one array per set (each within one class).
    ignored : ndarray of int
        Row numbers that are never candidates.
    k : int

    Returns
    -------
    voters : list of ndarray of int64
        Row numbers, nearest first.
    """
    run = _runner(executor)
    n_rows = max(int(c.rows.max()) for c in cells if c.rows.size) + 1
    label_of = np.full(n_rows, -1, np.int64)
    where = np.full(n_rows, -1, np.int64)
    for cc in cells:
        label_of[cc.rows] = cc.label
        where[cc.rows] = np.arange(cc.rows.size)
    sets = [np.asarray(m, dtype=np.int64) for m in members]
    by_class = {}
    for i, m in enumerate(sets):
        by_class.setdefault(int(label_of[m[0]]), []).append(i)
    jobs = [(store, cc.label, cc.rows.size, [np.sort(where[sets[i]]) for i in by_class[cc.label]])
            for cc in cells if cc.label in by_class]
    sums = run(class_member_sums, jobs)
    centres = np.empty((len(sets), cells[0].centroids.shape[1] if cells else 0))
    for (_, label, _, _), s in zip(jobs, sums):
        centres[by_class[label]] = s
    ignored = np.asarray(ignored, dtype=np.int64)
    jobs = []
    for cc in cells:
        excl = [np.union1d(where[m[label_of[m] == cc.label]],
                           where[ignored[label_of[ignored] == cc.label]]) for m in sets]
        jobs.append((store, cc.label, cc.rows.size, centres, excl, k))
    found = run(class_nearest, jobs)
    out = []
    for i in range(len(sets)):
        d2 = np.concatenate([f[0][i] for f in found])
        ids = np.concatenate([f[1][i] for f in found])
        order = np.lexsort((ids, d2))[:k]
        out.append(ids[order])
    return out


def class_member_sums(store, label, n, member_positions):
    """Each member set's centre (float64 mean), from one class's rows in the store.

    ``member_positions`` are sorted positions in the class's cell order.
    """
    d = store.n_features
    sums = np.zeros((len(member_positions), d))
    for a in range(0, n, _READ_ROWS):
        b = min(n, a + _READ_ROWS)
        x, _ = store.read(label, a, b)
        for i, pos in enumerate(member_positions):
            inside = pos[(pos >= a) & (pos < b)] - a
            if inside.size:
                sums[i] += x[inside].astype(np.float64).sum(axis=0)
    counts = np.array([max(p.size, 1) for p in member_positions], dtype=np.float64)
    return sums / counts[:, None]


def class_nearest(store, label, n, centres, excluded, k):
    """Each centre's ``k`` nearest rows of one class (not ``excluded``), exactly.

    One BLAS product per block of rows gives every centre's distances up to
    rounding; the rows within rounding of each centre's ``k``-th smallest
    are then measured exactly (float64, elementwise), so the answer is the
    exact one, ties by row number, whatever the number of centres.

    Returns
    -------
    d2 : list of ndarray
        Per centre, squared distances (float64), ascending (ties by row).
    ids : list of ndarray
        Per centre, the rows' numbers.
    """
    centres = np.asarray(centres, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", centres, centres)
    best_d2 = [np.empty(0) for _ in centres]
    best_id = [np.empty(0, np.int64) for _ in centres]
    for a in range(0, n, _READ_ROWS):
        b = min(n, a + _READ_ROWS)
        x, ids = store.read(label, a, b)
        x = x.astype(np.float64)
        x_sq = np.einsum("ij,ij->i", x, x)
        approx = x_sq[:, None] - 2.0 * (x @ centres.T)
        approx += c_sq
        # Far more than the expansion's rounding error (about d * 2^-52 of
        # |x|^2 + |c|^2), so no row of the exact k nearest is left out.
        slack = 1e-9 * (x_sq.max() + c_sq)
        for i, c in enumerate(centres):
            col = approx[:, i]
            ex = excluded[i]
            ex = ex[(ex >= a) & (ex < b)] - a
            if ex.size:
                col = col.copy()
                col[ex] = np.inf
            m = min(k, col.size) - 1
            if m < 0:
                continue
            kth = np.partition(col, m)[m]
            if not np.isfinite(kth):
                cand = np.flatnonzero(np.isfinite(col))
            else:
                cand = np.flatnonzero(col <= kth + 2 * slack[i])
            d2 = ((x[cand] - c) ** 2).sum(axis=1)
            cand_d2 = np.concatenate([best_d2[i], d2])
            cand_id = np.concatenate([best_id[i], ids[cand]])
            order = np.lexsort((cand_id, cand_d2))[:k]
            best_d2[i], best_id[i] = cand_d2[order], cand_id[order]
    return best_d2, best_id
