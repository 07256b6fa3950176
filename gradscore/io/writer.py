"""Write schema-v1 epoch exports: all at once, or streamed batch by batch."""

import os

import h5py
import numpy as np

from .._validation import check_finite, check_ids, check_labels, format_rows
from ..errors import GradscoreError
from ..limits import check_id_bytes
from . import schema as S
from ._atomic import atomic_path


class EpochWriter:
    """Stream one epoch's export to HDF5, batch by batch, finalised atomically.

    The file appears at ``path`` only when :meth:`close` succeeds (or the
    ``with`` block exits cleanly); a crash mid-epoch leaves no file that looks
    complete, and never damages an earlier file at ``path``.

    Parameters
    ----------
    path : str or path-like
    num_classes : int, default=None
        Columns of ``logits``. None: the first batch fixes it, and whether
        features and ids are written (then ``n_features`` and ``id_kind``
        may be left out too).
    n_features : int, default=None
        Width of ``features``; None when no features are written.
    n_rows : int, default=None
        Expected number of rows; when given, :meth:`close` checks it.
    id_kind : {"int", "str", None}, default=None
        Type of the ids given to :meth:`append`; None for no ids
        (readers then use 0..N-1).
    epoch : int, default=None
        Stored as the root attribute ``epoch``.
    dtype : numpy dtype, default=numpy.float32
        Storage dtype of logits and features (float16 halves the file).
    chunk_rows : int, default=4096
    attrs : dict, default=None
        Extra root attributes to store (name to str, number or list of
        str), e.g. ``{"class_names": [...]}``; the schema's own names are
        refused.

    Examples
    --------
    >>> import numpy as np, gradscore
    >>> with gradscore.EpochWriter("/tmp/ep.h5", num_classes=3) as w:
    ...     w.append(np.array([0, 2]), np.zeros((2, 3)))
    >>> gradscore.read_epoch("/tmp/ep.h5").labels
    array([0, 2])
    """

    def __init__(self, path, *, num_classes=None, n_features=None, n_rows=None,
                 id_kind=None, epoch=None, dtype=np.float32, chunk_rows=4096, attrs=None):
        attrs = dict(attrs or {})
        clash = sorted(set(attrs) & {S.ATTR_SCHEMA, S.ATTR_NUM_CLASSES, S.ATTR_EPOCH})
        if clash:
            raise GradscoreError(f"'attrs' may not set the schema's own attributes "
                                 f"({', '.join(clash)})")
        self.attrs = attrs
        if id_kind not in (None, "int", "str"):
            raise GradscoreError(f"'id_kind' must be 'int', 'str' or None; got {id_kind!r}")
        self.path = os.fspath(path)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.n_features = n_features
        self.n_rows = n_rows
        self.id_kind = id_kind
        self.epoch = epoch
        self.dtype = dtype
        self.chunk_rows = chunk_rows
        self.n = 0
        self._f = None
        self._closed = False
        self._seen_ids = None
        # Without num_classes, the first batch fixes the layout (classes,
        # features or none, kind of ids); until then no file exists.
        if self.num_classes is not None:
            self._create()

    def _create(self):
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        # The 1.10 file format checksums its superblock, object headers and
        # chunk indexes, and Fletcher-32 checksums every chunk: a flipped
        # byte anywhere that holds data or structure is a read error, not
        # silently different data (see docs/reliability.md).
        self._f = h5py.File(self._tmp, "w", libver=("v110", "latest"))
        self._f.attrs[S.ATTR_SCHEMA] = S.SCHEMA_VERSION
        self._f.attrs[S.ATTR_NUM_CLASSES] = self.num_classes
        if self.epoch is not None:
            self._f.attrs[S.ATTR_EPOCH] = int(self.epoch)
        for name, value in self.attrs.items():
            if isinstance(value, (list, tuple)):
                value = np.array([str(v) for v in value], dtype=h5py.string_dtype("utf-8"))
            self._f.attrs[name] = value
        n_rows = self.n_rows
        rows = n_rows if n_rows is not None else 0
        chunk = max(1, min(self.chunk_rows, n_rows or self.chunk_rows))

        def make(name, cols, dt):
            shape = (rows,) if cols is None else (rows, cols)
            maxshape = (n_rows,) if cols is None else (n_rows, cols)
            chunks = (chunk,) if cols is None else (chunk, cols)
            return self._f.create_dataset(name, shape=shape, maxshape=maxshape,
                                          dtype=dt, chunks=chunks, fletcher32=True)

        self._d = {S.LABELS: make(S.LABELS, None, np.int64),
                   S.LOGITS: make(S.LOGITS, self.num_classes, self.dtype)}
        if self.n_features is not None:
            self._d[S.FEATURES] = make(S.FEATURES, int(self.n_features), self.dtype)
        if self.id_kind == "int":
            self._d[S.IDS] = make(S.IDS, None, np.int64)
        # Str ids are kept (the writer holds them anyway, to refuse repeats)
        # and written at close as fixed-length UTF-8: variable-length strings
        # live in a heap that no checksum covers, and a damaged heap can make
        # HDF5 loop for ever (found by benchmarks/fuzz_reader.py).
        self._str_ids = [] if self.id_kind == "str" else None
        self._seen_ids = set() if self.id_kind else None
        self._ids_hash = S.ids_digest([]) if self.id_kind == "str" else None

    def _create_from(self, logits, features, ids):
        logits = np.asarray(logits)
        if logits.ndim != 2:
            raise GradscoreError(f"{self.path}: first batch: logits must be 2-D "
                                 f"(batch, n_classes); got shape {logits.shape}")
        self.num_classes = logits.shape[1]
        if features is not None:
            features = np.asarray(features)
            if features.ndim != 2:
                raise GradscoreError(f"{self.path}: first batch: features must be 2-D "
                                     f"(batch, n_features); got shape {features.shape}")
            self.n_features = features.shape[1]
        if ids is not None and self.id_kind is None:
            self.id_kind = "int" if np.asarray(ids).dtype.kind in "iu" else "str"
        self._create()

    def append(self, labels, logits, features=None, ids=None):
        """Add one batch of rows (arrays in the order labels, logits, features, ids)."""
        if self._closed:
            raise GradscoreError(f"{self.path}: writer is closed")
        if self._f is None:
            self._create_from(logits, features, ids)
        at = f"{self.path}: batch at row {self.n}"
        labels = np.asarray(labels)
        m = labels.shape[0] if labels.ndim == 1 else -1
        labels = check_labels(labels, num_classes=self.num_classes, where=f"{at}: labels")
        logits = np.asarray(logits)
        if logits.shape != (m, self.num_classes):
            raise GradscoreError(f"{at}: logits must have shape ({m}, {self.num_classes}) "
                                 f"like earlier batches; got {logits.shape}")
        if logits.dtype.kind != "f":
            raise GradscoreError(f"{at}: logits must be floating point; got {logits.dtype}")
        check_finite(logits, f"{at}: logits")
        if (features is None) != (self.n_features is None):
            raise GradscoreError(f"{at}: features {'missing' if features is None else 'given'}"
                                 f" but the writer was made with n_features={self.n_features}")
        if features is not None:
            features = np.asarray(features)
            if features.shape != (m, self.n_features) or features.dtype.kind != "f":
                raise GradscoreError(f"{at}: features must be float of shape "
                                     f"({m}, {self.n_features}); got {features.dtype} "
                                     f"{features.shape}")
            check_finite(features, f"{at}: features")
        if (ids is None) != (self.id_kind is None):
            raise GradscoreError(f"{at}: ids {'missing' if ids is None else 'given'} but "
                                 f"the writer was made with id_kind={self.id_kind!r}")
        if ids is not None:
            ids = check_ids(ids, m, where=f"{at}: ids")
            kind = "int" if ids.dtype.kind == "i" else "str"
            if kind != self.id_kind:
                raise GradscoreError(f"{at}: ids are {kind} but the writer expects "
                                     f"{self.id_kind}")
            repeated = [i for i, v in enumerate(ids.tolist()) if v in self._seen_ids]
            if repeated:
                raise GradscoreError(f"{at}: ids repeat ids of earlier batches in "
                                     f"{format_rows(repeated)} (first: {ids[repeated[0]]!r})")
            if self._str_ids is not None:
                bad = [i for i, v in enumerate(ids.tolist()) if "\0" in v]
                if bad:
                    raise GradscoreError(f"{at}: ids hold a NUL character in "
                                         f"{format_rows(bad)}; str ids may not")
                # The reader refuses longer ids (schema v1): never write a
                # file that gradscore itself would refuse.
                check_id_bytes([len(v.encode("utf-8")) for v in ids.tolist()],
                               where=f"{at}: ids")
            self._seen_ids.update(ids.tolist())
            if self._ids_hash is not None:
                S.ids_digest(ids.tolist(), self._ids_hash)
            if self._str_ids is not None:
                self._str_ids.extend(v.encode("utf-8") for v in ids.tolist())
                ids = None
        stop = self.n + m
        if self.n_rows is not None and stop > self.n_rows:
            raise GradscoreError(f"{at}: {m} rows would make {stop}, more than the "
                                 f"n_rows={self.n_rows} the writer was made with")
        for name, arr in ((S.LABELS, labels), (S.LOGITS, logits),
                          (S.FEATURES, features), (S.IDS, ids)):
            if arr is None:
                continue
            d = self._d[name]
            if self.n_rows is None:
                d.resize(stop, axis=0)
            d[self.n:stop] = arr
        self.n = stop

    def close(self):
        """Finalise: check the row count, then move the file into place."""
        if self._closed:
            return
        if self._f is None:
            self._closed = True
            raise GradscoreError(f"{self.path}: no rows were appended")
        try:
            if self.n_rows is not None and self.n != self.n_rows:
                raise GradscoreError(f"{self.path}: writer was made with n_rows="
                                     f"{self.n_rows} but got {self.n} rows")
            if self.n == 0:
                raise GradscoreError(f"{self.path}: no rows were appended")
        except GradscoreError as exc:
            self.abort(exc)
            raise
        if self._str_ids is not None:
            width = max(1, max(len(b) for b in self._str_ids))
            dt = h5py.string_dtype("utf-8", width)
            d = self._f.create_dataset(
                S.IDS, data=np.array(self._str_ids, dtype=dt), dtype=dt,
                chunks=(max(1, min(self.chunk_rows, self.n)),), fletcher32=True)
            d.attrs[S.ATTR_IDS_SHA256] = self._ids_hash.hexdigest()
        self._f.close()
        self._f = None
        self._closed = True
        self._ctx.__exit__(None, None, None)

    def abort(self, exc=None):
        """Discard the partial file; an earlier file at ``path`` stays as it was."""
        self._closed = True
        if self._f is None:
            return
        self._f.close()
        self._f = None
        err = exc or GradscoreError("aborted")
        try:
            self._ctx.__exit__(type(err), err, None)
        except BaseException:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)
        return False


def write_epoch(path, *, labels, logits=None, features=None, ids=None,
                weight=None, bias=None, epoch=None, num_classes=None,
                dtype=np.float32):
    """Write one epoch's export in one call (schema v1), atomically.

    Parameters
    ----------
    path : str or path-like
    labels : array-like of shape (n_samples,)
    logits : array-like of shape (n_samples, n_classes), default=None
        May be omitted when ``features``, ``weight`` and ``bias`` are given.
    features : array-like of shape (n_samples, n_features), default=None
    ids : array-like of shape (n_samples,), int or str, default=None
    weight : array-like of shape (n_classes, n_features), default=None
    bias : array-like of shape (n_classes,), default=None
    epoch : int, default=None
    num_classes : int, default=None
        Defaults to ``logits.shape[1]`` (or ``weight.shape[0]``).
    dtype : numpy dtype, default=numpy.float32
        Storage dtype of logits and features.

    Examples
    --------
    >>> import numpy as np, gradscore
    >>> gradscore.write_epoch("/tmp/e.h5", labels=np.array([0, 1]),
    ...                       logits=np.array([[2.0, 0.0], [0.0, 2.0]]))
    >>> gradscore.read_epoch("/tmp/e.h5").num_classes
    2
    """
    labels = np.asarray(labels)
    if logits is None and (features is None or weight is None or bias is None):
        raise GradscoreError("give logits, or features with weight and bias")
    if num_classes is None:
        num_classes = np.shape(logits)[1] if logits is not None else np.shape(weight)[0]
    if logits is None:
        logits = np.asarray(features, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T \
            + np.asarray(bias, dtype=np.float64)
    n_features = None if features is None else np.shape(features)[1]
    id_kind = None
    if ids is not None:
        ids = check_ids(ids, labels.shape[0] if labels.ndim == 1 else -1)
        id_kind = "int" if ids.dtype.kind == "i" else "str"
    with EpochWriter(path, num_classes=num_classes, n_features=n_features,
                     n_rows=labels.shape[0] if labels.ndim == 1 else None,
                     id_kind=id_kind, epoch=epoch, dtype=dtype) as w:
        w.append(labels, logits, features, ids)
        if weight is not None:
            w._f.create_dataset(S.WEIGHT, data=np.asarray(weight, dtype=dtype),
                                fletcher32=True)
            w._f.create_dataset(S.BIAS, data=np.asarray(bias, dtype=dtype), fletcher32=True)
