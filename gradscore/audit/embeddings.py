"""Precomputed embeddings as an audit source: ``gradscore audit --features FILE``.

Auditors often hold vectors already (CLIP or sentence-transformer
embeddings stored next to the data). :func:`open_features` lists such a
file as a :class:`~gradscore.audit.sources.Source` whose payloads are
feature rows, so the audit runs the same probe, methods, report and
keep-list writers on them as on an encoder's features (no model).

Files read:

- **Parquet**: a list column of numbers (``features_column``; default the
  first of ``features``, ``embedding``, ``embeddings`` present), an integer
  ``label_column`` and optionally ``id_column`` and a ``logits`` list column;
- **.npz / HDF5**: arrays ``features`` (n, d), ``labels`` (n,), optional
  ``ids`` (n,) and ``logits`` (n, classes) -- a gradscore export is one;
- **.npy**: the (n, d) features alone; the labels come from
  ``labels_path`` (an ``.npy`` of n integers), ids are row numbers.

The whole matrix is read into memory (float32): a million 768-wide
vectors are 3 GB. Rows with a non-finite value are problems (refused, or
skipped with ``skip_bad``) found while listing, before anything runs.
"""

import os

import numpy as np

from .._validation import format_rows
from ..errors import GradscoreError
from .sources import Problem, Source, _class_names_from_features, _labels_and_ids, \
    repeated_ids

FORMATS = (".parquet", ".npy", ".npz", ".h5", ".hdf5")
#: Names tried, in order, for the embedding column or array when none is given.
FEATURE_NAMES = ("features", "embedding", "embeddings")
LOGITS = "logits"


def open_features(path, *, features_column=None, label_column="label", id_column=None,
                  labels_path=None):
    """List a file of precomputed embeddings (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        ``.parquet``, ``.npy``, ``.npz``, ``.h5``/``.hdf5``.
    features_column : str, default=None
        Column (Parquet) or array (npz/HDF5) of embeddings; default the
        first of :data:`FEATURE_NAMES` present.
    label_column : str, default="label"
        Integer labels; in npz/HDF5 ``labels`` is used when ``label`` is absent.
    id_column : str, default=None
        Unique ids (int or str); npz/HDF5 use ``ids`` when present.
    labels_path : str, default=None
        ``.npy`` of integer labels, for ``.npy`` features (only).

    Returns
    -------
    source : Source
        ``kind="embeddings"``, ``content="features"``; ``logits`` (or None),
        ``n_features`` and ``features_from`` (for the report) set on it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GradscoreError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise GradscoreError(f"{path}: --features reads {', '.join(FORMATS)}; got "
                             f"'{ext or '(none)'}'")
    if labels_path is not None and ext != ".npy":
        raise GradscoreError(f"{path}: --labels applies to .npy features only; this file "
                             "holds its own labels")
    if ext == ".parquet":
        x, labels, ids, names, logits, col, problems = _parquet(path, features_column,
                                                                label_column, id_column)
    elif ext == ".npy":
        x, labels, ids, names, logits, col, problems = _npy(path, labels_path)
    else:
        x, labels, ids, names, logits, col, problems = _arrays(path, ext, features_column,
                                                               label_column, id_column)
    if x.ndim != 2 or x.shape[0] != labels.size or x.shape[1] < 1:
        raise GradscoreError(f"{path}: '{col}' must have shape ({labels.size}, n_features) to "
                             f"match the labels; got {x.shape}")
    if x.dtype.kind not in "fiu":
        raise GradscoreError(f"{path}: '{col}' must hold numbers; got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if logits is not None:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[0] != labels.size or \
                logits.shape[1] < len(names):
            raise GradscoreError(f"{path}: '{LOGITS}' must have shape ({labels.size}, >= "
                                 f"{len(names)}) to match the labels; got {logits.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if logits is not None:
        bad |= ~np.isfinite(logits).all(axis=1)
    for r in np.flatnonzero(bad).tolist():
        problems.append(Problem(str(ids[r]), f"row {r}: '{col}' holds NaN or Inf",
                                "non-finite features", r))
    problems.sort(key=lambda p: p.row)

    def reader(rows):
        return x[rows]

    src = Source("embeddings", path, ids, labels, names, problems, [], False, reader)
    src.content = "features"
    src.logits = logits
    src.n_features = int(x.shape[1])
    src.features_from = (f"precomputed embeddings: '{col}' of {os.path.basename(path)} "
                         f"({x.shape[0]} x {x.shape[1]}); no model ran")
    return src


def _pick(where, present, given, candidates, what, flag):
    if given is not None:
        if given not in present:
            raise GradscoreError(f"{where}: has no {what} '{given}' (found: "
                                 f"{', '.join(sorted(present)) or 'nothing'})")
        return given
    for c in candidates:
        if c in present:
            return c
    raise GradscoreError(f"{where}: has none of {', '.join(repr(c) for c in candidates)} "
                         f"for the {what} (found: {', '.join(sorted(present)) or 'nothing'}); "
                         f"name it with {flag}")


def _parquet(path, features_column, label_column, id_column):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise GradscoreError(f"{path}: reading Parquet needs pyarrow ({exc}); pip install "
                             "'gradscore[audit]'") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise GradscoreError(f"{path}: not a readable Parquet file: {exc}") from None
    schema = pf.schema_arrow
    names = list(schema.names)
    col = _pick(path, names, features_column, FEATURE_NAMES, "embedding column",
                "--features-column")
    _pick(path, names, label_column, (), "label column", "--label-column")
    if id_column is not None:
        _pick(path, names, id_column, (), "id column", "--id-column")
    t = schema.field(label_column).type
    if not pa.types.is_integer(t):
        raise GradscoreError(f"{path}: column '{label_column}' must hold integer class labels; "
                             f"got type {t}")
    cols = [col, label_column] + ([id_column] if id_column else []) + \
        ([LOGITS] if LOGITS in names and LOGITS not in (col, label_column, id_column) else [])
    try:
        table = pf.read(columns=cols)
    except Exception as exc:  # a damaged column chunk
        raise GradscoreError(f"{path}: could not read columns {', '.join(cols)}: {exc}") \
            from None
    class_names = None
    meta = schema.metadata or {}
    if b"huggingface" in meta:
        import json
        try:
            class_names = _class_names_from_features(
                json.loads(meta[b"huggingface"]).get("info", {}).get("features"), label_column)
        except (ValueError, AttributeError):
            class_names = None
    labels, ids, class_names, problems = _labels_and_ids(
        path, table.column(label_column), table.column(id_column) if id_column else None,
        class_names, label_column, id_column)
    x = _list_matrix(path, table.column(col), col)
    logits = _list_matrix(path, table.column(LOGITS), LOGITS) if LOGITS in cols else None
    return x, labels, ids, class_names, logits, col, problems


def _list_matrix(path, column, name):
    """An (n, d) array from a Parquet list column whose rows all have d numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or
            pa.types.is_fixed_size_list(arr.type)):
        raise GradscoreError(f"{path}: column '{name}' must hold a list of numbers per row "
                             f"(an embedding); got type {arr.type}")
    vt = arr.type.value_type
    if not (pa.types.is_floating(vt) or pa.types.is_integer(vt)):
        raise GradscoreError(f"{path}: column '{name}' must hold numbers; got lists of {vt}")
    nulls = np.flatnonzero(np.asarray(pc.is_null(arr)))
    if nulls.size:
        raise GradscoreError(f"{path}: column '{name}' is empty (null) in {format_rows(nulls)}")
    lengths = np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
    if lengths.size and (lengths != lengths[0]).any():
        odd = np.flatnonzero(lengths != lengths[0])
        raise GradscoreError(f"{path}: column '{name}' must have the same length in every row; "
                             f"row 0 has {lengths[0]} numbers but {format_rows(odd)} "
                             f"differ (row {odd[0]} has {lengths[odd[0]]})")
    d = int(lengths[0]) if lengths.size else 0
    flat = pc.list_flatten(arr)
    if flat.null_count:
        raise GradscoreError(f"{path}: column '{name}' holds null entries inside its lists")
    return np.asarray(flat.to_numpy(zero_copy_only=False)).reshape(len(arr), d)


def _npy(path, labels_path):
    if labels_path is None:
        raise GradscoreError(f"{path}: a .npy holds the features only; give the labels with "
                             "--labels LABELS.npy (n integers), or use .npz/Parquet/HDF5 "
                             "holding both")
    x = _load_npy(path)
    y = _load_npy(labels_path)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise GradscoreError(f"{labels_path}: labels must be a 1-D array of integers; got "
                             f"shape {y.shape}, dtype {y.dtype}")
    labels, ids, names = _int_labels(labels_path, y, None)
    return x, labels, ids, names, None, "features", []


def _load_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise GradscoreError(f"{path}: not a readable .npy file: {exc}") from None


def _int_labels(where, y, ids):
    labels = np.asarray(y).astype(np.int64)
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        raise GradscoreError(f"{where}: labels must be >= 0; {format_rows(bad)} are not "
                             f"(first value: {labels[bad[0]]})")
    if labels.size == 0:
        raise GradscoreError(f"{where}: has 0 rows")
    names = [str(i) for i in range(int(labels.max()) + 1)]
    if ids is None:
        ids = np.arange(labels.size, dtype=np.int64)
    return labels, ids, names


def _arrays(path, ext, features_column, label_column, id_column):
    """features/labels/ids/logits of an .npz or HDF5 file (a gradscore export is one)."""
    if ext == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise GradscoreError(f"{path}: not a readable .npz file: {exc}") from None
        with z:
            present = list(z.files)
            names = _names(path, present, features_column, label_column, id_column)
            got = {k: z[v] for k, v in names.items() if v is not None}
        class_names = None
    else:
        import h5py
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise GradscoreError(f"{path}: not a readable HDF5 file: {exc}") from None
        with f:
            present = [k for k in f if isinstance(f.get(k, getlink=True), h5py.HardLink)
                       and isinstance(f[k], h5py.Dataset)]
            names = _names(path, present, features_column, label_column, id_column)
            got = {}
            for k, v in names.items():
                if v is None:
                    continue
                d = f[v]
                if d.is_virtual or d.external:
                    raise GradscoreError(f"{path}: '{v}' must be a plain dataset (not virtual "
                                         "or external storage)")
                got[k] = d[()]
            raw = f.attrs.get("class_names")
            class_names = None if raw is None else [
                v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]
    y = got["labels"]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise GradscoreError(f"{path}: '{names['labels']}' must be a 1-D array of integers; "
                             f"got shape {y.shape}, dtype {y.dtype}")
    ids = got.get("ids")
    if ids is not None:
        if ids.ndim != 1 or ids.shape[0] != y.shape[0]:
            raise GradscoreError(f"{path}: '{names['ids']}' must have shape ({y.shape[0]},) "
                                 f"to match the labels; got {ids.shape}")
        ids = ids if ids.dtype.kind in "iu" else np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ids.tolist()],
            dtype=object)
        if ids.dtype.kind in "iu":
            ids = ids.astype(np.int64)
    labels, ids, default_names = _int_labels(path, y, ids)
    if class_names is not None and int(labels.max()) >= len(class_names):
        raise GradscoreError(f"{path}: labels go up to {int(labels.max())} but its "
                             f"class_names attribute names {len(class_names)} classes")
    problems = repeated_ids(ids, f"'{names['ids']}'") if got.get("ids") is not None else []
    return (got["features"], labels, ids, class_names or default_names, got.get("logits"),
            names["features"], problems)


def _names(path, present, features_column, label_column, id_column):
    labels = label_column if label_column in present else None
    return {
        "features": _pick(path, present, features_column, FEATURE_NAMES, "embedding array",
                          "--features-column"),
        "labels": labels or _pick(path, present, None, ("labels",), "labels",
                                  "--label-column"),
        "ids": _pick(path, present, id_column, (), "id array", "--id-column") if id_column
        else ("ids" if "ids" in present else None),
        "logits": LOGITS if LOGITS in present else None,
    }
