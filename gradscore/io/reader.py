"""Read and validate schema-v1 epoch exports (one file or several shards).

Every rule is checked here, once, while the data streams through in blocks:
each dataset is read a single time. Files are opened read-only and treated
as untrusted: external links, soft links, virtual datasets and external raw
storage are refused, since h5py would silently follow them (a virtual
dataset whose source file is missing reads back as fill values, no error).
"""

from dataclasses import dataclass, field
import os

import h5py
import numpy as np

from .._validation import check_finite, format_rows
from ..errors import GradscoreError
from . import schema as S


@dataclass
class Epoch:
    """One epoch's validated arrays, rows sorted by id.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,), int64
    logits : ndarray of shape (n_samples, n_classes), float32
    features : ndarray of shape (n_samples, n_features), float32, or None
        None when the file has none, or when the reader was told they are
        not needed (they are still validated).
    ids : ndarray of shape (n_samples,), int64 or object (str)
    num_classes : int
    epoch : int or None
    sources : list of dict
        Per input file: ``path``, ``n``.
    """

    labels: np.ndarray
    logits: np.ndarray
    features: np.ndarray
    ids: np.ndarray
    num_classes: int
    epoch: int = None
    sources: list = field(default_factory=list)
    n_features: int = None
    dtypes: dict = field(default_factory=dict)
    id_kind: str = None


class _Source:
    """One opened, structurally checked file (no bulk data read yet)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise GradscoreError(f"{self.path}: no such file")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as exc:
            raise GradscoreError(
                f"{self.path}: not a readable HDF5 file (truncated, or another "
                f"format): {exc}") from None
        try:
            self._check_structure()
        except BaseException:
            self.f.close()
            raise

    def err(self, dataset, message):
        where = f"{self.path}: dataset '{dataset}'" if dataset else self.path
        return GradscoreError(f"{where} {message}")

    def _check_structure(self):
        f = self.f
        for name in f:
            link = f.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise self.err(name, f"is an external link to {link.filename}:{link.path}; "
                               "links out of the file are refused")
            if isinstance(link, h5py.SoftLink):
                raise self.err(name, f"is a soft link to {link.path}; links are refused")
        self.ds = {}
        for name in S.DATASETS:
            if name not in f:
                continue
            obj = f[name]
            if not isinstance(obj, h5py.Dataset):
                raise self.err(name, "must be a dataset; found a group")
            if obj.is_virtual:
                raise self.err(name, "is a virtual dataset; virtual datasets are refused "
                               "(a missing source would read back as fill values)")
            if obj.external:
                raise self.err(name, "uses external raw storage; refused")
            self.ds[name] = obj
        if S.LABELS not in self.ds:
            present = ", ".join(sorted(f)) or "nothing"
            raise self.err(None, f"has no dataset 'labels' (found: {present})")
        lab = self.ds[S.LABELS]
        if lab.ndim != 1:
            raise self.err(S.LABELS, f"must be 1-D (n_samples,); got shape {lab.shape}")
        if lab.dtype.kind not in "iu":
            raise self.err(S.LABELS, f"must hold integers; got dtype {lab.dtype}")
        self.n = lab.shape[0]
        if self.n == 0:
            raise self.err(S.LABELS, "has 0 rows; the export is empty")
        for name in (S.LOGITS, S.FEATURES):
            if name in self.ds:
                d = self.ds[name]
                if d.ndim != 2:
                    raise self.err(name, f"must be 2-D (n_samples, n); got shape {d.shape}")
                if d.dtype.kind != "f":
                    raise self.err(name, f"must be float16/32/64; got dtype {d.dtype}")
                if d.shape[0] != self.n:
                    raise self.err(name, f"has {d.shape[0]} rows but 'labels' has {self.n}")
        if S.IDS in self.ds:
            d = self.ds[S.IDS]
            if d.ndim != 1 or d.shape[0] != self.n:
                raise self.err(S.IDS, f"must have shape ({self.n},) to match 'labels'; "
                               f"got {d.shape}")
            if d.dtype.kind in "iu":
                self.id_kind = "int"
            elif h5py.check_string_dtype(d.dtype) is not None:
                self.id_kind = "str"
            else:
                raise self.err(S.IDS, f"must hold int64 or UTF-8 strings; got dtype {d.dtype}")
        else:
            self.id_kind = None
        self._resolve_shapes()
        self.epoch = self.f.attrs.get(S.ATTR_EPOCH)

    def _resolve_shapes(self):
        ds = self.ds
        attr_c = self.f.attrs.get(S.ATTR_NUM_CLASSES)
        has_wb = S.WEIGHT in ds or S.BIAS in ds
        if has_wb and not (S.WEIGHT in ds and S.BIAS in ds):
            raise self.err(None, "has only one of 'weight' and 'bias'; give both or neither")
        if S.LOGITS not in ds and not (has_wb and S.FEATURES in ds):
            raise self.err(None, "has no dataset 'logits' (and no 'features', 'weight' "
                           "and 'bias' to compute it from)")
        c_sources = []
        if S.LOGITS in ds:
            c_sources.append(("dataset 'logits' columns", ds[S.LOGITS].shape[1]))
        if has_wb:
            w, b = ds[S.WEIGHT], ds[S.BIAS]
            if w.ndim != 2 or b.ndim != 1:
                raise self.err(S.WEIGHT, f"must be 2-D (n_classes, n_features) with 'bias' "
                               f"1-D (n_classes,); got {w.shape} and {b.shape}")
            c_sources += [("dataset 'weight' rows", w.shape[0]),
                          ("dataset 'bias' length", b.shape[0])]
            if S.FEATURES in ds and w.shape[1] != ds[S.FEATURES].shape[1]:
                raise self.err(S.WEIGHT, f"has {w.shape[1]} columns but 'features' has "
                               f"{ds[S.FEATURES].shape[1]}")
        if attr_c is not None:
            c_sources.append(("attribute 'num_classes'", int(attr_c)))
        values = {c for _, c in c_sources}
        if len(values) != 1:
            listed = ", ".join(f"{w} = {c}" for w, c in c_sources)
            raise self.err(None, f"disagrees on the number of classes: {listed}")
        self.num_classes = values.pop()
        if self.num_classes < 1:
            raise self.err(None, "has 0 classes")
        self.n_features = ds[S.FEATURES].shape[1] if S.FEATURES in ds else None

    def read(self, name, sl=slice(None)):
        try:
            return self.ds[name][sl]
        except (OSError, RuntimeError) as exc:
            raise self.err(name, f"could not be read (file truncated or corrupt?): {exc}") from None

    def close(self):
        self.f.close()


def _read_ids(src):
    if src.id_kind is None:
        return None
    raw = src.read(S.IDS)
    if src.id_kind == "int":
        return raw.astype(np.int64)
    try:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else v
                         for v in raw.tolist()], dtype=object)
    except UnicodeDecodeError:
        raise src.err(S.IDS, "holds strings that are not UTF-8") from None


def read_epoch(paths, *, need_features=True, block_rows=S.BLOCK_ROWS):
    """Read, validate and join one epoch's export file(s).

    Parameters
    ----------
    paths : str or path-like, or list of them
        One file, or the shards of one epoch (rows are joined and sorted by id).
    need_features : bool, default=True
        Keep ``features`` in memory. When False they are still checked
        (finite, right shape) block by block, then let go.
    block_rows : int, default=65536
        Rows per streamed block.

    Returns
    -------
    epoch : Epoch

    Raises
    ------
    GradscoreError
        Naming the file, dataset, rule and first offending rows.

    Examples
    --------
    >>> import gradscore
    >>> ep = gradscore.read_epoch("fixtures/digits_epoch.h5")  # doctest: +SKIP
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise GradscoreError("no input files given")
    sources = []
    try:
        for p in paths:
            sources.append(_Source(p))
        return _read_sources(sources, need_features, block_rows)
    finally:
        for s in sources:
            s.close()


def _check_shards_agree(sources):
    first = sources[0]
    for s in sources[1:]:
        for attr, what in (("num_classes", "number of classes"),
                           ("n_features", "number of features"),
                           ("id_kind", "kind of ids")):
            a, b = getattr(first, attr), getattr(s, attr)
            if a != b:
                raise GradscoreError(
                    f"shards disagree on the {what}: {first.path} has {a}, {s.path} has {b}")
        if (S.LOGITS in first.ds) != (S.LOGITS in s.ds):
            raise GradscoreError(f"shards disagree: only one of {first.path} and {s.path} "
                                 "has dataset 'logits'")
    if len(sources) > 1 and first.id_kind is None:
        raise GradscoreError(
            f"{len(sources)} shards given but they have no dataset 'ids'; shards need "
            "ids to be joined (default ids 0..N-1 would repeat across shards)")


def _read_sources(sources, need_features, block_rows):
    _check_shards_agree(sources)
    first = sources[0]
    c, d = first.num_classes, first.n_features
    total = sum(s.n for s in sources)
    labels = np.empty(total, dtype=np.int64)
    logits = np.empty((total, c), dtype=np.float32)
    keep_f = need_features and d is not None
    features = np.empty((total, d), dtype=np.float32) if keep_f else None
    ids_parts = []
    offset = 0
    for src in sources:
        lab = src.read(S.LABELS).astype(np.int64)
        bad = np.flatnonzero((lab < 0) | (lab >= c))
        if bad.size:
            raise src.err(S.LABELS, f"must be in [0, {c}); {format_rows(bad)} are not "
                          f"(first value: {lab[bad[0]]})")
        labels[offset:offset + src.n] = lab
        if S.WEIGHT in src.ds:
            w = src.read(S.WEIGHT).astype(np.float64)
            b = src.read(S.BIAS).astype(np.float64)
            check_finite(w, f"{src.path}: dataset 'weight'")
            check_finite(b[:, None], f"{src.path}: dataset 'bias'")
        for start in range(0, src.n, block_rows):
            stop = min(src.n, start + block_rows)
            out = slice(offset + start, offset + stop)
            feat = None
            if S.FEATURES in src.ds:
                feat = src.read(S.FEATURES, slice(start, stop))
                check_finite(feat, f"{src.path}: dataset 'features'", row_offset=start)
                if keep_f:
                    features[out] = feat
            if S.LOGITS in src.ds:
                lg = src.read(S.LOGITS, slice(start, stop))
                check_finite(lg, f"{src.path}: dataset 'logits'", row_offset=start)
                logits[out] = lg
            else:
                lg = feat.astype(np.float64) @ w.T + b
                check_finite(lg, f"{src.path}: logits computed from 'features', 'weight' "
                             "and 'bias'", row_offset=start)
                logits[out] = lg
        ids = _read_ids(src)
        if ids is None:
            ids = np.arange(src.n, dtype=np.int64)
        ids_parts.append(ids)
        offset += src.n
    ids = np.concatenate(ids_parts) if len(ids_parts) > 1 else ids_parts[0]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        _raise_duplicates(sources, order, dup, sorted_ids)
    if not np.array_equal(order, np.arange(total)):
        labels, logits, ids = labels[order], logits[order], sorted_ids
        if features is not None:
            features = features[order]
    epochs = {s.epoch.item() if hasattr(s.epoch, "item") else s.epoch for s in sources}
    epochs.discard(None)
    if len(epochs) > 1:
        raise GradscoreError(f"shards disagree on attribute 'epoch': {sorted(epochs)}")
    return Epoch(labels=labels, logits=logits, features=features, ids=ids,
                 num_classes=c, epoch=epochs.pop() if epochs else None,
                 sources=[{"path": s.path, "n": s.n} for s in sources], n_features=d,
                 dtypes=_dtypes(sources),
                 id_kind=first.id_kind)


def _dtypes(sources):
    """Storage dtype of each dataset (the first file that has it)."""
    out = {}
    for src in sources:
        for name, ds in src.ds.items():
            out.setdefault(name, str(ds.dtype))
    return out


def _raise_duplicates(sources, order, dup, sorted_ids):
    starts = np.cumsum([0] + [s.n for s in sources])

    def where(row):
        i = int(np.searchsorted(starts, row, side="right") - 1)
        return f"{sources[i].path} row {row - starts[i]}"

    first_dup = sorted_ids[dup[0]]
    first_dup = first_dup.item() if hasattr(first_dup, "item") else first_dup
    a, b = sorted(order[sorted_ids == first_dup][:2].tolist())
    raise GradscoreError(
        f"dataset 'ids' must be unique across all inputs; {dup.size} duplicate(s), "
        f"first: id {first_dup!r} at {where(a)} and {where(b)}")


def describe(paths):
    """Validate the files and summarise what they hold, without scoring.

    Returns
    -------
    info : dict
        ``files``, ``n``, ``num_classes``, ``n_features``, ``dtypes``,
        ``id_kind``, ``class_sizes`` (list of int), ``epoch``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    epoch = read_epoch(paths, need_features=False)
    return {
        "files": epoch.sources,
        "n": int(epoch.labels.size),
        "num_classes": epoch.num_classes,
        "n_features": epoch.n_features,
        "dtypes": epoch.dtypes,
        "id_kind": epoch.id_kind or "default (0..N-1)",
        "class_sizes": np.bincount(epoch.labels, minlength=epoch.num_classes).tolist(),
        "epoch": None if epoch.epoch is None else int(epoch.epoch),
    }
