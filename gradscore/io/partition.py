"""Class-partitioned spill: read an export once, in blocks, and group its rows by class.

This is the out-of-core read. Memory then holds one block of rows and one
class at a time, never the N x C logits:

1. :func:`read_index` reads one file's structure, labels and ids (16 bytes
   a row). The caller joins the files' indexes (:func:`join_indexes`): id
   order, duplicate ids, class sizes, and where each class's rows will lie
   in each file's spill.
2. :func:`spill_shard` streams one file's logits (and features, when the
   run needs them), or one piece of its rows, in blocks, checks each block as
   :func:`~gradscore.io.read_epoch` does, and writes
   every row into a raw binary file beside the others of its class.
3. :func:`load_class` reads one class's rows back: one contiguous read per
   input file.

Every step is a plain function of picklable values, run per file or per
class, so local threads, processes or Dask workers can run it. The spill
folder must then be on storage every worker sees (as the inputs must).

Spill files are raw row-major arrays in the storage dtype when that is
float16 (float16 -> float32 is exact, so nothing is lost), else float32:
the same float32 values :func:`~gradscore.io.read_epoch` returns.
"""

from dataclasses import dataclass, field
import os

import numpy as np

from ..errors import GradscoreError
from . import schema as S
from .reader import (Epoch, _Source, _check_allocated, _check_shards_agree, _check_size,
                     _epoch_of, _join_ids, _read_block, _read_ids, _read_labels, _read_linear,
                     parse_memory)


@dataclass
class ShardIndex:
    """One input file's structure, labels and ids (what pass 1 reads).

    Has the attributes the reader's shard checks look at (``path``, ``n``,
    ``num_classes``, ``n_features``, ``id_kind``, ``ds``, ``epoch``).
    """

    path: str
    n: int
    num_classes: int
    n_features: int
    id_kind: str
    epoch: object
    ds: dict
    labels: np.ndarray = field(repr=False)
    ids: np.ndarray = field(repr=False)


def read_index(path, *, max_memory=None):
    """Pass 1 on one file: check its structure, read and check labels and ids.

    Parameters
    ----------
    path : str or path-like
    max_memory : int, default=None
        Bytes this pass may hold (labels and ids); default the memory the
        machine has available. A file that declares more rows than that is
        refused before anything is allocated.

    Returns
    -------
    index : ShardIndex
        ``ds`` maps each dataset present to its storage dtype (a str).
    """
    src = _Source(path)
    try:
        _check_size([src], keep_features=False, block_rows=S.BLOCK_ROWS,
                    max_memory=parse_memory(max_memory), only=(S.LABELS, S.IDS))
        # Storage never written reads back as fill values: refused up front,
        # from the chunk index, as read_epoch does.
        for dset in src.ds.values():
            _check_allocated(dset, src.path)
        labels = _read_labels(src, src.num_classes)
        ids = _read_ids(src)
        return ShardIndex(path=src.path, n=src.n, num_classes=src.num_classes,
                          n_features=src.n_features, id_kind=src.id_kind,
                          epoch=src.epoch, ds={k: str(v.dtype) for k, v in src.ds.items()},
                          labels=labels, ids=ids)
    finally:
        src.close()


@dataclass
class SpillSpec:
    """What :func:`spill_shard` writes for one file (picklable)."""

    path: str
    logits_out: str
    features_out: str
    num_classes: int
    n_features: int
    logits_dtype: str
    features_dtype: str
    class_offsets: np.ndarray
    block_rows: int = S.BLOCK_ROWS


def spill_shard(spec, start=0, stop=None):
    """Pass 2 on one file (or rows ``[start, stop)`` of it): stream, check and
    scatter its rows into class order.

    Row ``r`` of class ``c`` (in file order) lands at row
    ``spec.class_offsets[c] + r`` of the spill files. Raises
    :class:`GradscoreError` naming the file, dataset and rows on a
    non-finite value, as :func:`~gradscore.io.read_epoch` does. Pieces of
    one file (:func:`spill_pieces`) write disjoint rows, so they may run side
    by side once :func:`create_spill_files` has made the files.

    Returns
    -------
    n : int
        Rows written.
    """
    src = _Source(spec.path)
    try:
        # Called without a range, it spills the whole file and makes its files;
        # pieces write into files create_spill_files made beforehand.
        whole = stop is None
        stop = src.n if stop is None else min(stop, src.n)
        labels = _read_labels(src, spec.num_classes)
        computed = S.LOGITS not in src.ds
        # As read_epoch: features are read only when spilled or needed to
        # compute the logits; weight and bias only for the latter.
        read_f = spec.features_out is not None or computed
        linear = _read_linear(src) if computed else None
        outs = _outputs(spec)
        if whole:
            create_spill_files(spec, src.n)
        fds = [os.open(p, os.O_WRONLY) for p, _, _ in outs]
        try:
            # Each class's next free row: its offset plus its rows before start.
            nxt = np.asarray(spec.class_offsets[:-1], dtype=np.int64) + \
                np.bincount(labels[:start], minlength=spec.num_classes)
            for first in range(start, stop, spec.block_rows):
                last = min(stop, first + spec.block_rows)
                lg, feat = _read_block(src, first, last, linear, read_features=read_f)
                lab = labels[first:last]
                # One stable sort groups the block's rows by class; each
                # class's run is then one write at its next free row.
                order = np.argsort(lab, kind="stable")
                counts = np.bincount(lab, minlength=spec.num_classes)
                bounds = np.concatenate([[0], np.cumsum(counts)])
                arrays = [lg, feat]
                for i, (fd, (_, dt, width)) in enumerate(zip(fds, outs)):
                    block = np.ascontiguousarray(arrays[i][order], dtype=dt)
                    for c in np.flatnonzero(counts):
                        part = block[bounds[c]:bounds[c + 1]]
                        _pwrite_all(fd, part, int(nxt[c]) * width * dt.itemsize)
                nxt += counts
        finally:
            for fd in fds:
                os.close(fd)
        return stop - start
    finally:
        src.close()


def _outputs(spec):
    outs = [(spec.logits_out, np.dtype(spec.logits_dtype), spec.num_classes)]
    if spec.features_out is not None:
        outs.append((spec.features_out, np.dtype(spec.features_dtype), spec.n_features))
    return outs


def create_spill_files(spec, n):
    """Create (or truncate) one file's spill files at their final size, ``n`` rows."""
    for path, dt, width in _outputs(spec):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, n * width * dt.itemsize)
        finally:
            os.close(fd)


def spill_piece(piece):
    """:func:`spill_shard` on one ``(spec, start, stop)`` of :func:`spill_pieces`."""
    return spill_shard(*piece)


def spill_pieces(spec, n, rows_per_piece):
    """``(spec, start, stop)`` pieces of one file of ``n`` rows, for :func:`spill_shard`.

    A file is cut into pieces of whole blocks so that several workers can
    spill it side by side (call :func:`create_spill_files` first).
    """
    step = max(1, rows_per_piece // spec.block_rows) * spec.block_rows
    return [(spec, a, min(n, a + step)) for a in range(0, n, step)] or [(spec, 0, 0)]


def _pwrite_all(fd, array, offset):
    view = memoryview(array).cast("B")
    while view.nbytes:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


@dataclass
class ClassSlices:
    """Where one class's rows lie in the spill (picklable; see :func:`load_class`).

    ``pieces`` lists ``(logits_file, features_file, first_row, n_rows)``,
    one per input file that has rows of the class, in file order.
    """

    label: int
    n: int
    pieces: list
    num_classes: int
    n_features: int
    logits_dtype: str
    features_dtype: str


def load_class(slices):
    """One class's rows from the spill.

    Returns
    -------
    logits : ndarray of shape (n, n_classes), float32
    features : ndarray of shape (n, n_features), float32, or None
    """
    ldt = np.dtype(slices.logits_dtype)
    logits = np.empty((slices.n, slices.num_classes), dtype=np.float32)
    features = None
    if slices.features_dtype is not None:
        fdt = np.dtype(slices.features_dtype)
        features = np.empty((slices.n, slices.n_features), dtype=np.float32)
    at = 0
    for lpath, fpath, first, count in slices.pieces:
        logits[at:at + count] = _read_rows(lpath, ldt, slices.num_classes, first, count)
        if features is not None:
            features[at:at + count] = _read_rows(fpath, fdt, slices.n_features, first, count)
        at += count
    return logits, features


def _read_rows(path, dtype, width, first, count):
    try:
        out = np.fromfile(path, dtype=dtype, count=count * width,
                          offset=first * width * dtype.itemsize)
    except OSError as exc:
        raise GradscoreError(f"{path}: spill file could not be read: {exc}") from None
    if out.size != count * width:
        raise GradscoreError(f"{path}: spill file is short: wanted rows {first}..{first + count}"
                             f" of width {width}, got {out.size // max(width, 1)} rows")
    return out.reshape(count, width)


@dataclass
class Partition:
    """The joined index of a class-partitioned export.

    Attributes
    ----------
    epoch : Epoch
        Labels and ids sorted by id, as :func:`~gradscore.io.read_epoch`
        returns them, with ``logits`` and ``features`` None (they are in
        the spill).
    class_rows : list of ndarray
        For each class, the (id-sorted) row numbers of its rows in spill
        order.
    specs : list of SpillSpec
        One per input file, for :func:`spill_shard`.
    """

    epoch: Epoch
    class_rows: list
    specs: list
    logits_dtype: str
    features_dtype: str
    _counts: np.ndarray = field(repr=False)

    def class_slices(self, c):
        """Where class ``c``'s rows lie in the spill: a :class:`ClassSlices`."""
        pieces = [(s.logits_out, s.features_out, int(s.class_offsets[c]),
                   int(s.class_offsets[c + 1] - s.class_offsets[c])) for s in self.specs]
        pieces = [p for p in pieces if p[3]]
        return ClassSlices(label=c, n=int(self.class_rows[c].size), pieces=pieces,
                           num_classes=self.epoch.num_classes,
                           n_features=self.epoch.n_features,
                           logits_dtype=self.logits_dtype,
                           features_dtype=self.features_dtype)


#: Bytes of input rows a spill task holds at once (with its sorted copy and
#: checks, about three times this): wide rows get blocks of fewer rows.
SPILL_BLOCK_BYTES = 32 * 2**20


def join_indexes(indexes, spill_dir, *, need_features=True, block_rows=None):
    """Join the files' indexes: check they agree, sort ids, lay out the spill.

    Parameters
    ----------
    indexes : list of ShardIndex
        From :func:`read_index`, one per input file, in input order.
    spill_dir : str
        Folder for the spill files (created by the caller).
    need_features : bool, default=True
        Spill features too (when the files have them). When False they are
        not read, unless the logits are computed from them.
    block_rows : int, default=None
        Rows per read block; default as many as fit in
        ``SPILL_BLOCK_BYTES`` (at most ``BLOCK_ROWS``, at least 1,024).

    Returns
    -------
    partition : Partition
    """
    _check_shards_agree(indexes)
    first = indexes[0]
    c, d = first.num_classes, first.n_features
    ids_parts = [ix.ids if ix.ids is not None else np.arange(ix.n, dtype=np.int64)
                 for ix in indexes]
    order, sorted_ids = _join_ids(indexes, ids_parts)
    labels_cat = np.concatenate([ix.labels for ix in indexes])
    total = labels_cat.size
    rank = np.empty(total, dtype=np.int64)
    rank[order] = np.arange(total)
    # Spill order: class, then file, then row in file -- what one stable sort
    # of the concatenated labels gives.
    grouped = np.argsort(labels_cat, kind="stable")
    counts = np.bincount(labels_cat, minlength=c)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    in_spill = rank[grouped]
    class_rows = [in_spill[bounds[k]:bounds[k + 1]] for k in range(c)]
    ldt = "float16" if all(ix.ds.get(S.LOGITS) == "float16" for ix in indexes) else "float32"
    spill_f = need_features and d is not None
    fdt = None
    if spill_f:
        fdt = "float16" if all(ix.ds.get(S.FEATURES) == "float16" for ix in indexes) \
            else "float32"
    if block_rows is None:
        row_bytes = np.dtype(ldt).itemsize * c + (np.dtype(fdt).itemsize * d if spill_f else 0)
        block_rows = int(min(S.BLOCK_ROWS, max(1024, SPILL_BLOCK_BYTES // row_bytes)))
    specs = []
    for i, ix in enumerate(indexes):
        offs = np.concatenate([[0], np.cumsum(np.bincount(ix.labels, minlength=c))])
        specs.append(SpillSpec(
            path=ix.path, logits_out=os.path.join(spill_dir, f"shard{i:05d}.logits.bin"),
            features_out=os.path.join(spill_dir, f"shard{i:05d}.features.bin")
            if spill_f else None,
            num_classes=c, n_features=d, logits_dtype=ldt, features_dtype=fdt,
            class_offsets=offs, block_rows=block_rows))
    labels_sorted = labels_cat[order]
    epoch = Epoch(labels=labels_sorted, logits=None, features=None, ids=sorted_ids,
                  num_classes=c, epoch=_epoch_of(indexes),
                  sources=[{"path": ix.path, "n": ix.n} for ix in indexes], n_features=d,
                  dtypes=_index_dtypes(indexes), id_kind=first.id_kind)
    return Partition(epoch=epoch, class_rows=class_rows, specs=specs, logits_dtype=ldt,
                     features_dtype=fdt, _counts=counts)


def _index_dtypes(indexes):
    out = {}
    for ix in indexes:
        for name, dt in ix.ds.items():
            out.setdefault(name, dt)
    return out
