"""Run an ONNX model over a dataset and write a schema-v1 epoch export.

The dataset file (``.h5``/``.hdf5`` or ``.npz``) holds ``inputs`` of shape
``(n_samples, ...)`` in the model's input layout, integer ``labels`` of shape
``(n_samples,)`` and optionally unique ``ids`` (int or str). HDF5 inputs are
read batch by batch, so memory stays bounded by ``batch_size``; an ``.npz``
is read whole (NumPy cannot read part of one).

Logits are the model's output; features are the input of its final linear
layer, found by :func:`gradscore.onnx.graph.find_features` or named, and
exposed as an extra output of an in-memory copy of the model.
"""

import os

import h5py
import numpy as np

from .._progress import progress_bar
from .._validation import check_int, format_rows
from ..errors import GradscoreError
from ..limits import ID_RULE, MAX_ID_BYTES, check_id_bytes
from ..io import EpochWriter
from .encoder import Encoder

INPUTS, LABELS, IDS = "inputs", "labels", "ids"
DATA_FORMATS = (".h5", ".hdf5", ".npz")


class _Data:
    """One dataset file, checked; inputs read by row range."""

    def __init__(self, path):
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in DATA_FORMATS:
            raise GradscoreError(f"{self.path}: a dataset must end in "
                                 f"{', '.join(DATA_FORMATS)}; got '{ext or '(none)'}'")
        if not os.path.isfile(self.path):
            raise GradscoreError(f"{self.path}: no such file")
        self._f = None
        if ext == ".npz":
            self._open_npz()
        else:
            self._open_h5()
        self._check()

    def _open_npz(self):
        try:
            with np.load(self.path, allow_pickle=False) as z:
                present = set(z.files)
                self._require(present)
                self._check_npz_declared(z)
                self.inputs = z[INPUTS]
                self.labels = z[LABELS]
                self.ids = z[IDS] if IDS in present else None
        except (OSError, ValueError) as exc:
            if isinstance(exc, GradscoreError):
                raise
            raise GradscoreError(f"{self.path}: not a readable .npz file: {exc}") from None

    def _check_npz_declared(self, z):
        """Refuse, from each array's .npy header (nothing decompressed), ids
        wider than the id limit and arrays that together exceed the memory
        available: a compressed .npz of zeros can declare any size."""
        from ..io.reader import _fmt_bytes, available_memory

        total = 0
        for name in (INPUTS, LABELS, IDS):
            if name not in z.files:
                continue
            with z.zip.open(name + ".npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
            total += int(np.prod(shape, dtype=object)) * dtype.itemsize
            width = dtype.itemsize // (4 if dtype.kind == "U" else 1)
            if name == IDS and dtype.kind in "SU" and width > MAX_ID_BYTES:
                raise GradscoreError(
                    f"{self.path}: array 'ids' declares {dtype.kind}{width} strings, wider "
                    f"than the {MAX_ID_BYTES}-byte id limit; {ID_RULE}. Refused before "
                    "reading")
        avail = available_memory()
        if avail is not None and total > avail:
            raise GradscoreError(
                f"{self.path}: its arrays 'inputs', 'labels' and 'ids' declare "
                f"{_fmt_bytes(total)} but the memory available is {_fmt_bytes(avail)}; "
                "refused before decompressing (an .npz is read whole; use .h5 for larger "
                "data)")

    def _open_h5(self):
        try:
            self._f = f = h5py.File(self.path, "r")
        except OSError as exc:
            raise GradscoreError(f"{self.path}: not a readable HDF5 file: {exc}") from None
        try:
            self._require(set(f))
            for name in (INPUTS, LABELS, IDS):
                if name not in f:
                    continue
                link = f.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise GradscoreError(f"{self.path}: dataset '{name}' is a link; links "
                                         "are refused")
                d = f[name]
                if not isinstance(d, h5py.Dataset) or d.is_virtual or d.external:
                    raise GradscoreError(f"{self.path}: '{name}' must be a plain dataset "
                                         "(not a group, virtual dataset or external storage)")
            self.inputs = f[INPUTS]
            self.labels = f[LABELS][()]
            self.ids = None
            if IDS in f:
                width = getattr(h5py.check_string_dtype(f[IDS].dtype), "length", None)
                if width is not None and width > MAX_ID_BYTES:
                    raise GradscoreError(
                        f"{self.path}: dataset 'ids' stores fixed-length strings of {width} "
                        f"bytes, wider than the {MAX_ID_BYTES}-byte id limit; {ID_RULE}. "
                        "Refused before reading")
                raw = f[IDS][()]
                if raw.dtype.kind == "O":
                    check_id_bytes([len(v) if isinstance(v, bytes) else
                                    len(str(v).encode("utf-8")) for v in raw.tolist()],
                                   where=f"{self.path}: dataset 'ids'")
                self.ids = raw if raw.dtype.kind in "iu" else np.array(
                    [v.decode("utf-8") if isinstance(v, bytes) else str(v)
                     for v in raw.tolist()], dtype=object)
        except BaseException:
            f.close()
            raise

    def _require(self, present):
        for name in (INPUTS, LABELS):
            if name not in present:
                raise GradscoreError(f"{self.path}: has no dataset '{name}' (found: "
                                     f"{', '.join(sorted(present)) or 'nothing'})")

    def _check(self):
        n = self.inputs.shape[0] if self.inputs.ndim else 0
        if self.inputs.ndim < 2:
            raise GradscoreError(f"{self.path}: dataset 'inputs' must have shape "
                                 f"(n_samples, ...); got {self.inputs.shape}")
        if self.inputs.dtype.kind not in "fiub":
            raise GradscoreError(f"{self.path}: dataset 'inputs' must be numeric; got "
                                 f"dtype {self.inputs.dtype}")
        if self.labels.ndim != 1 or self.labels.shape[0] != n:
            raise GradscoreError(f"{self.path}: dataset 'labels' must have shape ({n},) to "
                                 f"match 'inputs'; got {self.labels.shape}")
        if self.labels.dtype.kind not in "iu":
            raise GradscoreError(f"{self.path}: dataset 'labels' must hold integers; got "
                                 f"dtype {self.labels.dtype}")
        if n == 0:
            raise GradscoreError(f"{self.path}: dataset 'inputs' has 0 rows")
        if self.ids is not None and (self.ids.ndim != 1 or self.ids.shape[0] != n):
            raise GradscoreError(f"{self.path}: dataset 'ids' must have shape ({n},) to "
                                 f"match 'inputs'; got {self.ids.shape}")
        self.n = n

    def batch(self, start, stop):
        return np.asarray(self.inputs[start:stop])

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


def read_dataset_info(path):
    """Shape, dtype and size of a dataset file's ``inputs`` (for reports).

    Returns
    -------
    info : dict
        ``n``, ``input_shape`` (per example), ``input_dtype``, ``has_ids``.
    """
    d = _Data(path)
    try:
        return {"n": int(d.n), "input_shape": tuple(int(s) for s in d.inputs.shape[1:]),
                "input_dtype": str(d.inputs.dtype), "has_ids": d.ids is not None}
    finally:
        d.close()


def read_inputs(path, rows):
    """``inputs[rows]`` of a dataset file (rows: sorted or not, int array)."""
    d = _Data(path)
    try:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= d.n):
            raise GradscoreError(f"{d.path}: rows must be in [0, {d.n}); got {rows.min()}"
                                 f"..{rows.max()}")
        # h5py reads fancy indices only in increasing order, without repeats.
        uniq = np.unique(rows)
        block = np.asarray(d.inputs[uniq.tolist()] if uniq.size else d.inputs[:0])
        return block[np.searchsorted(uniq, rows)]
    finally:
        d.close()


def _check_shape(dims, data_shape, input_name, model_path, data_path):
    if dims is None:
        return
    want = tuple(dims[1:])
    got = tuple(data_shape[1:])
    ok = len(want) == len(got) and all(w is None or w == g for w, g in zip(want, got))
    if not ok:
        shown = "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                                for i, d in enumerate(dims)) + ")"
        raise GradscoreError(
            f"{model_path}: model input '{input_name}' expects shape {shown} but "
            f"{data_path}: dataset 'inputs' has shape {tuple(data_shape)}; per example "
            f"{want} versus {got}. Reshape the inputs to the model's layout")


def extract(model_path, data_path, output, *, logits_output=None, features_output=None,
            features=True, batch_size=256, device="auto", epoch=None, dtype=np.float32,
            progress=False):
    """Run an ONNX model over a dataset file and write a schema-v1 export.

    Parameters
    ----------
    model_path : str or path-like
        ``.onnx`` file, treated as untrusted (see :func:`gradscore.onnx.graph.load_model`).
    data_path : str or path-like
        ``.h5``/``.hdf5``/``.npz`` with ``inputs`` (n_samples, ...), ``labels``
        (n_samples,) and optional ``ids`` (n_samples,).
    output : str or path-like
        Export to write (HDF5, schema v1), atomically.
    logits_output : str, default=None
        Name of the logits output; needed when the model has several outputs.
    features_output : str, default=None
        Name of the tensor to store as ``features``; default: the input of
        the final linear layer, found automatically.
    features : bool, default=True
        Store features at all.
    batch_size : int, default=256
    device : {"auto", "cpu", "cuda"}, default="auto"
        See :func:`gradscore.onnx.providers.choose_device`.
    epoch : int, default=None
        Stored as the export's ``epoch`` attribute.
    dtype : numpy dtype, default=numpy.float32
        Storage dtype of logits and features.
    progress : bool, default=False
        Progress bar over rows on stderr.

    Returns
    -------
    info : dict
        ``output``, ``n``, ``num_classes``, ``n_features``, ``logits_output``,
        ``features_output`` (None without features), ``input_name``,
        ``input_shape``, ``device`` ("cpu"/"cuda"), ``providers``, ``reason``.

    Raises
    ------
    GradscoreError
        Bad model or dataset, shapes that do not match, non-finite outputs.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    model_path, data_path, output = map(os.fspath, (model_path, data_path, output))
    if os.path.abspath(output) in (os.path.abspath(model_path), os.path.abspath(data_path)):
        raise GradscoreError(f"{output}: output would overwrite an input file")
    enc = Encoder(model_path, logits_output=logits_output, features_output=features_output,
                  features=features, device=device)
    data = _Data(data_path)
    try:
        _check_shape(enc.dims, data.inputs.shape, enc.input_name, model_path, data_path)
        info = dict(enc.info, output=output, n=int(data.n),
                    input_shape=tuple(int(s) for s in data.inputs.shape[1:]))
        _run(enc, data, output, batch_size, epoch, dtype, progress, info)
    finally:
        data.close()
    return info


def _run(enc, data, output, batch_size, epoch, dtype, progress, info):
    n = data.n
    # The writer takes its layout from the first batch and publishes the file
    # only if every batch went through.
    with progress_bar(total=n, enabled=progress, desc="extract", unit="row") as bar, \
            EpochWriter(output, n_rows=n, epoch=epoch, dtype=dtype) as writer:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            logits, feats = enc.run(data.batch(start, stop), row_offset=start)
            ids = None if data.ids is None else data.ids[start:stop]
            writer.append(data.labels[start:stop], logits, feats, ids)
            bar.update(stop - start)
    info["num_classes"] = writer.num_classes
    info["n_features"] = None if writer.n_features is None else int(writer.n_features)


def dataset_rows(path, ids):
    """Row numbers in a dataset file of the examples with these ``ids``.

    Without an ``ids`` dataset the ids are the row numbers themselves (as the
    export written by :func:`extract` has them).
    """
    d = _Data(path)
    try:
        ids = np.asarray(ids)
        if d.ids is None:
            rows = ids.astype(np.int64)
        else:
            where = {v: i for i, v in enumerate(d.ids.tolist())}
            missing = [v for v in ids.tolist() if v not in where]
            if missing:
                raise GradscoreError(f"{d.path}: dataset 'ids' lacks {len(missing)} id(s) "
                                     f"of the export (first: {missing[0]!r})")
            rows = np.array([where[v] for v in ids.tolist()], dtype=np.int64)
        bad = np.flatnonzero((rows < 0) | (rows >= d.n))
        if bad.size:
            raise GradscoreError(f"{d.path}: ids {format_rows(bad)} are not rows of "
                                 f"'inputs' (it has {d.n})")
        return rows
    finally:
        d.close()
