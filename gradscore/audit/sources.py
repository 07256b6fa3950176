"""Datasets an auditor is handed: listed and checked before any image is decoded.

:func:`open_source` recognises

- an **image folder**, ``DATA/<class name>/<file>`` as torchvision's
  ``ImageFolder`` reads it: classes are the subfolders sorted by name
  (label = position), files are found recursively (symbolic links
  followed) and kept when their name ends in one of torchvision's image
  extensions, in torchvision's order. Each example's id is its path
  relative to ``DATA`` with ``/`` separators (``circle/img_00042.png``);
- a **Hugging Face dataset** saved with ``save_to_disk`` (a folder with
  ``dataset_info.json``/``state.json``; a ``DatasetDict`` needs ``split``);
- **Parquet** file(s): one ``.parquet`` file, or a folder of them (sorted
  by name, one schema);
- today's **array files**, ``.h5``/``.hdf5``/``.npz`` holding ``inputs``
  (see :mod:`gradscore.onnx.extract`).

For the last three, images come from ``image_column`` (a Hugging Face
``Image`` feature, i.e. a struct of ``bytes`` and ``path``, or plain
binary) and labels from ``label_column`` (integers; class names from a
``ClassLabel`` feature where there is one). Ids are row numbers, or the
values of ``id_column``.

Listing never decodes an image: it reads names, labels and ids only.
Problems it finds (a class folder with no images, ids that repeat) are
returned as :class:`Problem` records; the caller refuses them or skips
them (``skip_bad``). Files that are not examples by the rules above
(names without an image extension, hidden files, files at the top level)
are listed in ``ignored``, never dropped silently.
"""

from dataclasses import dataclass, field
import json
import os

import numpy as np

from .._validation import format_rows
from ..errors import GradscoreError
from ..limits import MAX_ID_BYTES, arrow_byte_lengths, check_cell_bytes, check_id_bytes
from ..limits import max_cell_bytes as _cell_limit

#: torchvision's ``IMG_EXTENSIONS`` (``ImageFolder`` keeps only these).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARRAY_FORMATS = (".h5", ".hdf5", ".npz")
KINDS = ("image-folder", "hf-dataset", "parquet", "arrays")


@dataclass
class Problem:
    """One example (or class) the audit cannot use, and the rule it breaks."""

    id: str
    reason: str
    where: str = ""
    #: Row to leave out under ``skip_bad`` (None: nothing to leave out).
    row: int = None

    def as_dict(self):
        return {"id": self.id, "reason": self.reason, "where": self.where}


@dataclass
class Source:
    """A listed dataset: ids, labels and class names, payloads read on demand.

    Attributes
    ----------
    kind : {"image-folder", "hf-dataset", "parquet", "arrays"}
    path : str
    ids : ndarray of shape (n,)
        str (object) or int64.
    labels : ndarray of shape (n,), int64
    class_names : list of str
        ``class_names[label]``; ``str(label)`` where the data names none.
    problems : list of Problem
        Found while listing (empty class folders, repeated ids).
    ignored : list of Problem
        Files that are not examples (not an image name, hidden, top level).
    images : bool
        True when payloads are encoded images (to decode); False for
        ``arrays``, whose payloads are model inputs already.
    """

    kind: str
    path: str
    ids: np.ndarray
    labels: np.ndarray
    class_names: list
    problems: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    images: bool = True
    _reader: object = None

    @property
    def n(self):
        return int(self.labels.size)

    @property
    def num_classes(self):
        return len(self.class_names)

    def describe(self):
        """Where the classes come from, for messages."""
        return {"image-folder": "its class folders", "hf-dataset": "its label feature",
                "parquet": "its label column", "arrays": "its labels"}.get(
                    self.kind, "its label column")

    def payloads(self, rows):
        """Encoded images (bytes or a file path) of ``rows``, or model inputs for arrays."""
        return self._reader(np.asarray(rows, dtype=np.int64))

    def drop(self, keep):
        """A copy holding only the rows where ``keep`` is True (same class names)."""
        keep = np.asarray(keep, dtype=bool)
        rows = np.flatnonzero(keep)
        parent = self._reader

        def reader(r):
            return parent(rows[r])

        return Source(self.kind, self.path, self.ids[keep], self.labels[keep],
                      self.class_names, self.problems, self.ignored, self.images, reader)


def open_source(path, *, image_column="image", label_column="label", id_column=None,
                split=None, max_cell_bytes=None):
    """List a dataset (image folder, Hugging Face dataset, Parquet, or array file).

    Parameters
    ----------
    path : str or path-like
    image_column, label_column : str, default="image", "label"
        Columns of a Hugging Face dataset or Parquet file.
    id_column : str, default=None
        Column of unique ids (int or str); default: row numbers.
    split : str, default=None
        Split of a Hugging Face ``DatasetDict``.
    max_cell_bytes : int or str, default=None
        Bytes one cell (an encoded image, a string) may take; default
        :data:`gradscore.limits.MAX_CELL_BYTES` (8 MiB). Ids are at most
        :data:`gradscore.limits.MAX_ID_BYTES` bytes. Parquet is checked
        from its metadata (each column chunk's uncompressed size) before
        anything is read, and cell by cell as read.

    Returns
    -------
    source : Source

    Raises
    ------
    GradscoreError
        Nothing there, an unrecognised layout, columns missing or of the
        wrong type, labels out of range or missing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GradscoreError(f"{path}: no such file or folder")
    limit = _cell_limit(max_cell_bytes)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isfile(path):
        if ext in ARRAY_FORMATS:
            return _array_source(path)
        if ext == ".parquet":
            return _parquet_source([path], path, image_column, label_column, id_column,
                                   limit)
        raise GradscoreError(
            f"{path}: not a dataset gradscore reads; give an image folder (DATA/<class>/"
            f"<image>), a Hugging Face dataset folder (save_to_disk), Parquet file(s), or "
            f"{', '.join(ARRAY_FORMATS)} holding 'inputs' and 'labels'")
    names = set(os.listdir(path))
    if names & {"dataset_info.json", "state.json", "dataset_dict.json"}:
        return _hf_source(path, image_column, label_column, id_column, split, limit)
    parquet = sorted(n for n in names if n.lower().endswith(".parquet")
                     and os.path.isfile(os.path.join(path, n)))
    if parquet:
        return _parquet_source([os.path.join(path, n) for n in parquet], path, image_column,
                               label_column, id_column, limit)
    return _image_folder(path)


# ------------------------------------------------------------- image folders

def _image_folder(root):
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    ignored = [Problem(e.name, "hidden file or folder" if e.name.startswith(".")
                       else "at the top level, not in a class folder", root)
               for e in entries if e.name.startswith(".") or not e.is_dir()]
    if not classes:
        raise GradscoreError(f"{root}: no class folders; an image folder holds one subfolder "
                             "per class (DATA/<class name>/<image file>)")
    ids, labels, problems = [], [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(root, name)
        found = 0
        # torchvision's make_dataset order: os.walk sorted, names sorted.
        for folder, dirs, files in sorted(os.walk(class_dir, followlinks=True)):
            rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
            for d in dirs:
                if d.startswith("."):
                    ignored.append(Problem(f"{rel_folder}/{d}", "hidden folder"))
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            if any(part.startswith(".") for part in rel_folder.split("/")):
                continue
            for f in sorted(files):
                rel = f"{rel_folder}/{f}"
                if f.startswith("."):
                    ignored.append(Problem(rel, "hidden file"))
                elif not f.lower().endswith(IMAGE_EXTENSIONS):
                    ignored.append(Problem(rel, "not an image file name (torchvision's "
                                                "ImageFolder skips it too)"))
                else:
                    ids.append(rel)
                    labels.append(label)
                    found += 1
        if found == 0:
            problems.append(Problem(f"{name}/", f"class folder '{name}' (label {label}) holds "
                                                "no image files", "empty class"))
    ids_arr = np.array(ids, dtype=object)
    paths = [os.path.join(root, *i.split("/")) for i in ids]

    def reader(rows):
        return [paths[r] for r in rows.tolist()]

    return Source("image-folder", root, ids_arr, np.array(labels, dtype=np.int64), classes,
                  problems, ignored, True, reader)


# --------------------------------------------------- Hugging Face and Parquet

def _class_names_from_features(features, label_column):
    """ClassLabel names of ``label_column`` in a ``datasets`` features dict, or None."""
    feat = (features or {}).get(label_column)
    if isinstance(feat, dict) and feat.get("_type") == "ClassLabel" and feat.get("names"):
        return [str(n) for n in feat["names"]]
    return None


def _table_columns(where, schema, image_column, label_column, id_column):
    import pyarrow as pa

    names = list(schema.names)
    for what, col in (("image", image_column), ("label", label_column), ("id", id_column)):
        if col is not None and col not in names:
            flag = {"image": "--image-column", "label": "--label-column",
                    "id": "--id-column"}[what]
            raise GradscoreError(f"{where}: has no column '{col}' for the {what}s (columns: "
                                 f"{', '.join(names)}); name it with {flag}")
    t = schema.field(image_column).type
    ok_image = pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
        pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)
    if not ok_image:
        raise GradscoreError(f"{where}: column '{image_column}' must hold encoded images (a "
                             "Hugging Face Image feature: struct of bytes and path; or binary); "
                             f"got type {t}")
    t = schema.field(label_column).type
    if not pa.types.is_integer(t):
        raise GradscoreError(f"{where}: column '{label_column}' must hold integer class labels "
                             f"(a ClassLabel or int column); got type {t}")
    if id_column is not None:
        t = schema.field(id_column).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise GradscoreError(f"{where}: column '{id_column}' must hold int or string ids; "
                                 f"got type {t}")


def _labels_and_ids(where, label_array, id_array, class_names, label_column, id_column):
    import pyarrow.compute as pc

    nulls = np.flatnonzero(np.asarray(pc.is_null(label_array)))
    if nulls.size:
        raise GradscoreError(f"{where}: column '{label_column}' is empty (null) in "
                             f"{format_rows(nulls)}; every example needs a label")
    labels = np.asarray(label_array.to_numpy(zero_copy_only=False)).astype(np.int64)
    n_classes = len(class_names) if class_names else None
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes if n_classes else labels < 0))
    if bad.size:
        rule = f"[0, {n_classes}) (its ClassLabel has {n_classes} names)" if n_classes \
            else ">= 0"
        raise GradscoreError(f"{where}: column '{label_column}' must be in {rule}; "
                             f"{format_rows(bad)} are not (first value: {labels[bad[0]]})")
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    problems = []
    if id_array is None:
        ids = np.arange(labels.size, dtype=np.int64)
    else:
        nulls = np.flatnonzero(np.asarray(pc.is_null(id_array)))
        if nulls.size:
            raise GradscoreError(f"{where}: column '{id_column}' is empty (null) in "
                                 f"{format_rows(nulls)}")
        vals = id_array.to_pylist()
        ids = np.array(vals, dtype=np.int64 if isinstance(vals[0], int) else object)
        problems = repeated_ids(ids, id_column)
    return labels, ids, class_names, problems


def repeated_ids(ids, where):
    """A Problem for each row whose id repeats an earlier row's (first kept)."""
    seen, out = {}, []
    for row, v in enumerate(ids.tolist()):
        if v in seen:
            out.append(Problem(str(v), f"id {v!r} in row {row} repeats row {seen[v]}'s; ids "
                                       "must be unique", f"duplicate id ({where})", row))
        else:
            seen[v] = row
    return out


def _image_payloads(where, column, base):
    """Payloads (bytes, a file path, or None) of one arrow image column chunk."""
    import pyarrow as pa

    if pa.types.is_struct(column.type):
        data = column.field("bytes").to_pylist()
        idx = column.type.get_field_index("path")
        paths = column.field("path").to_pylist() if idx >= 0 else [None] * len(data)
        out = []
        for b, p in zip(data, paths):
            if b is not None:
                out.append(bytes(b))
            elif p:
                out.append(p if os.path.isabs(p) else os.path.join(base, p))
            else:
                out.append(None)
        return out
    return [None if b is None else bytes(b) for b in column.to_pylist()]


def load_hf_dataset(path, split):
    """The ``datasets.Dataset`` saved at ``path`` (``save_to_disk``); a
    ``DatasetDict`` needs ``split``. Every failure is a :class:`GradscoreError`."""
    try:
        import datasets
    except ImportError as exc:
        raise GradscoreError(f"{path}: reading a Hugging Face dataset folder needs the "
                             f"'datasets' package ({exc}); pip install 'gradscore[audit]'") \
            from None
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as fh:
            splits = json.load(fh).get("splits", [])
        if split is None:
            raise GradscoreError(f"{path}: a Hugging Face DatasetDict with splits "
                                 f"{', '.join(splits)}; choose one with --split NAME")
        if split not in splits:
            raise GradscoreError(f"{path}: has no split '{split}' (splits: "
                                 f"{', '.join(splits)})")
        path = os.path.join(path, split)
    try:
        ds = datasets.load_from_disk(path)
    except Exception as exc:  # datasets raises many kinds on a damaged folder
        raise GradscoreError(f"{path}: not a readable Hugging Face dataset (save_to_disk): "
                             f"{type(exc).__name__}: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise GradscoreError(f"{path}: a DatasetDict; choose a split with --split NAME")
    return ds


def _hf_source(path, image_column, label_column, id_column, split, limit):
    ds = load_hf_dataset(path, split)
    table = ds.with_format("arrow")[:0]
    _table_columns(path, table.schema, image_column, label_column, id_column)
    feats = ds.features.to_dict()
    names = _class_names_from_features(feats, label_column)
    cols = ds.with_format("arrow").select_columns(
        [label_column] + ([id_column] if id_column else []))[:]
    if id_column:
        # Saved datasets are memory-mapped Arrow: lengths come from the offsets.
        check_id_bytes(arrow_byte_lengths(cols.column(id_column)),
                       where=f"{path}: column '{id_column}'")
    labels, ids, names, problems = _labels_and_ids(
        path, cols.column(label_column), cols.column(id_column) if id_column else None,
        names, label_column, id_column)
    img = ds.with_format("arrow").select_columns([image_column])
    check_cell_bytes(arrow_byte_lengths(img[:].column(image_column)),
                     where=f"{path}: column '{image_column}'", limit=limit)
    base = os.path.dirname(os.path.abspath(path))

    def reader(rows):
        if rows.size == 0:
            return []
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo == rows.size and np.all(np.diff(rows) == 1):
            chunk = img[lo:hi].column(image_column)
        else:
            chunk = img.select(rows.tolist())[:].column(image_column)
        return _image_payloads(path, chunk.combine_chunks() if hasattr(chunk, "combine_chunks")
                               else chunk, base)

    return Source("hf-dataset", path, ids, labels, names, problems, [], True, reader)


def _is_bytes_like(t):
    import pyarrow as pa

    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t))


def _check_parquet_declared(f, pf, image_column, label_column, id_column, limit):
    """Refuse, from the file's metadata alone, a column chunk whose declared
    uncompressed size is more than its rows can hold within the limits.

    A cell of 20 MB of zeros compresses ~1,000-fold; the footer says how
    large every column chunk becomes once decompressed, so nothing is read.
    """
    per_cell = {label_column: 16, image_column: limit + 16}
    if id_column is not None:
        per_cell[id_column] = MAX_ID_BYTES + 16
    meta = pf.metadata
    first = 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        declared = dict.fromkeys(per_cell, 0)
        for i in range(rg.num_columns):
            col = rg.column(i)
            top = col.path_in_schema.split(".")[0]
            if top in declared:
                declared[top] += col.total_uncompressed_size
        for name, size in declared.items():
            leaves = sum(1 for i in range(rg.num_columns)
                         if rg.column(i).path_in_schema.split(".")[0] == name)
            allowed = rg.num_rows * per_cell[name] * max(1, leaves) + 2**20
            if size > allowed:
                rule = (f"ids are at most {MAX_ID_BYTES} bytes" if name == id_column else
                        f"one cell is at most {limit} bytes (raise with --max-cell-bytes / "
                        "max_cell_bytes=)")
                raise GradscoreError(
                    f"{f}: column '{name}' declares {size} bytes once decompressed in row "
                    f"group {g} (rows {first}..{first + rg.num_rows - 1}), more than its "
                    f"{rg.num_rows} rows can hold: {rule}. Refused before reading")
        first += rg.num_rows


def _parquet_source(files, path, image_column, label_column, id_column, limit=None):
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise GradscoreError(f"{path}: reading Parquet needs pyarrow ({exc}); pip install "
                             "'gradscore[audit]'") from None
    limit = _cell_limit(None) if limit is None else limit
    pfs, schema = [], None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow's ArrowInvalid and friends
            raise GradscoreError(f"{f}: not a readable Parquet file: {exc}") from None
        s = pf.schema_arrow
        if schema is None:
            schema = s
            _table_columns(f, s, image_column, label_column, id_column)
        elif not s.remove_metadata().equals(schema.remove_metadata()):
            raise GradscoreError(f"{f}: its schema differs from {files[0]}'s; the Parquet "
                                 "files of one dataset must share one schema")
        _check_parquet_declared(f, pf, image_column, label_column, id_column, limit)
        # String and binary columns are read dictionary-encoded, so each
        # cell's length is checked before any cell is decoded (the footer's
        # sizes are of the encoded data: one dictionary entry can stand for
        # every row).
        dict_cols = [c for c in (id_column, image_column) if c is not None and
                     _is_bytes_like(s.field(c).type)]
        if dict_cols:
            pf = pq.ParquetFile(f, read_dictionary=dict_cols)
        pfs.append(pf)
    names = None
    meta = schema.metadata or {}
    if b"huggingface" in meta:
        try:
            info = json.loads(meta[b"huggingface"])
            names = _class_names_from_features(info.get("info", {}).get("features"),
                                               label_column)
        except (ValueError, AttributeError):
            names = None
    import pyarrow as pa
    label_parts, id_parts, sizes = [], [], []
    for f, pf in zip(files, pfs):
        t = pf.read(columns=[label_column] + ([id_column] if id_column else []))
        label_parts.append(t.column(label_column))
        if id_column:
            col = t.column(id_column)
            if _is_bytes_like(schema.field(id_column).type):
                check_id_bytes(arrow_byte_lengths(col), where=f"{f}: column '{id_column}'")
                col = col.cast(schema.field(id_column).type)
            id_parts.append(col)
        sizes.append(t.num_rows)
    label_arr = pa.chunked_array([c for part in label_parts for c in part.chunks],
                                 type=schema.field(label_column).type)
    id_arr = pa.chunked_array([c for part in id_parts for c in part.chunks],
                              type=schema.field(id_column).type) if id_column else None
    labels, ids, names, problems = _labels_and_ids(path, label_arr, id_arr, names,
                                                   label_column, id_column)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    base = os.path.dirname(os.path.abspath(files[0]))

    def reader(rows):
        # Row groups hold the rows; read each needed group's image column once.
        out = [None] * rows.size
        order = np.argsort(rows, kind="stable")
        pos = 0
        for fi, pf in enumerate(pfs):
            lo, hi = starts[fi], starts[fi + 1]
            group_starts = np.concatenate([[0], np.cumsum(
                [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])])
            while pos < order.size and rows[order[pos]] < hi:
                local = rows[order[pos]] - lo
                g = int(np.searchsorted(group_starts, local, side="right") - 1)
                col = pf.read_row_group(g, columns=[image_column]).column(image_column)
                check_cell_bytes(arrow_byte_lengths(col),
                                 where=f"{files[fi]}: column '{image_column}'", limit=limit,
                                 row_offset=int(group_starts[g]))
                col = col.cast(schema.field(image_column).type)  # decoded once checked
                vals = _image_payloads(files[fi], col.combine_chunks(), base)
                g_hi = group_starts[g + 1] + lo
                while pos < order.size and rows[order[pos]] < g_hi:
                    out[order[pos]] = vals[rows[order[pos]] - lo - group_starts[g]]
                    pos += 1
        return out

    return Source("parquet", path, ids, labels, names, problems, [], True, reader)


# ---------------------------------------------------------------- array files

def _array_source(path):
    from ..onnx.extract import _Data

    d = _Data(path)
    ids = d.ids if d.ids is not None else np.arange(d.n, dtype=np.int64)
    labels = np.asarray(d.labels).astype(np.int64)
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        d.close()
        raise GradscoreError(f"{path}: dataset 'labels' must be >= 0; {format_rows(bad)} are "
                             f"not (first value: {labels[bad[0]]})")
    problems = repeated_ids(np.asarray(ids), "dataset 'ids'") if d.ids is not None else []
    names = [str(i) for i in range(int(labels.max()) + 1)]
    shape = tuple(int(s) for s in d.inputs.shape)
    dtype = d.inputs.dtype
    d.close()

    def reader(rows):
        from ..onnx.extract import read_inputs
        if rows.size and rows[-1] - rows[0] + 1 == rows.size and np.all(np.diff(rows) == 1):
            d = _Data(path)
            try:
                return d.batch(int(rows[0]), int(rows[-1]) + 1)
            finally:
                d.close()
        return read_inputs(path, rows)

    src = Source("arrays", path, np.asarray(ids), labels, names, problems, [], False, reader)
    src.input_shape, src.input_dtype = shape, dtype
    return src
