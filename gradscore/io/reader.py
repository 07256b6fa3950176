"""Read and validate schema-v1 epoch exports (one file or several shards).

Every rule is checked here, once, while the data streams through in blocks:
each dataset is read a single time. Files are opened read-only and treated
as untrusted: external links, soft links, virtual datasets and external raw
storage are refused, since h5py would silently follow them (a virtual
dataset whose source file is missing reads back as fill values, no error).

Before any bulk data is read, two more checks run on what the file declares:
storage that was never written (chunks missing from the chunk index, or
contiguous storage never allocated) is refused, because HDF5 would read it
back as the fill value; and the memory the run needs to hold the arrays is
compared with the memory it may use, so a few-KB file that declares 10^10
rows gets an error, not a ``MemoryError``.
"""

from dataclasses import dataclass, field
import math
import os

import h5py
import numpy as np

from .._threads import one_blas_thread
from .._validation import check_finite, format_rows
from ..errors import GradscoreError
from ..limits import ID_RULE, MAX_ID_BYTES, check_id_bytes, parse_memory
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


#: What h5py raises on a damaged file, besides OSError (KeyError for an
#: unreadable link, ValueError/TypeError for a damaged datatype or dataspace).
_CORRUPT = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError,
            OverflowError, UnicodeDecodeError, SystemError)


class _Source:
    """One opened, structurally checked file (no bulk data read yet)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise GradscoreError(f"{self.path}: no such file")
        try:
            self.f = h5py.File(self.path, "r")
        except _CORRUPT as exc:
            raise GradscoreError(
                f"{self.path}: not a readable HDF5 file (truncated, or another "
                f"format): {exc}") from None
        try:
            self._check_structure()
        except GradscoreError:
            self.f.close()
            raise
        except _CORRUPT as exc:
            # A damaged object header, attribute or link table surfaces from
            # h5py as any of these; the file is what is wrong, not the code.
            self.f.close()
            raise GradscoreError(f"{self.path}: not a readable export (its HDF5 structure "
                                 f"is damaged: {type(exc).__name__}: {exc})") from None
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
                self._check_id_width(d)
            else:
                raise self.err(S.IDS, f"must hold int64 or UTF-8 strings; got dtype {d.dtype}")
        else:
            self.id_kind = None
        self._resolve_shapes()
        try:
            self.epoch = _small_attr(self.f, S.ATTR_EPOCH, self.path)
        except (OSError, RuntimeError, TypeError, ValueError) as exc:
            raise self.err(None, f"attribute 'epoch' could not be read: {exc}") from None
        if self.epoch is not None:
            e = np.asarray(self.epoch)
            if e.ndim != 0 or e.dtype.kind not in "iu":
                raise self.err(None, f"attribute 'epoch' must be one integer; got "
                               f"{self.epoch!r}")

    def _resolve_shapes(self):
        ds = self.ds
        attr_c = _small_attr(self.f, S.ATTR_NUM_CLASSES, self.path)
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
            a = np.asarray(attr_c)
            if a.ndim != 0 or a.dtype.kind not in "iu":
                raise self.err(None, f"attribute 'num_classes' must be one integer; got "
                               f"{attr_c!r}")
            c_sources.append(("attribute 'num_classes'", int(a)))
        values = {c for _, c in c_sources}
        if len(values) != 1:
            listed = ", ".join(f"{w} = {c}" for w, c in c_sources)
            raise self.err(None, f"disagrees on the number of classes: {listed}")
        self.num_classes = values.pop()
        if self.num_classes < 1:
            raise self.err(None, "has 0 classes")
        self.n_features = ds[S.FEATURES].shape[1] if S.FEATURES in ds else None

    def _check_id_width(self, d):
        """Refuse fixed-length string ids wider than the id rule, from the
        datatype alone: a gzip chunk of 200,000-byte strings of one letter
        is a few hundred bytes on disk and 200 KB a row in memory."""
        width = h5py.check_string_dtype(d.dtype).length
        if width is None or width <= MAX_ID_BYTES:
            return  # variable length: checked block by block as read
        # Name the first offending rows when a small read can (a few rows,
        # one small chunk); otherwise the declared width alone refuses.
        rows = ""
        chunk = _chunk_bytes(d) if d.chunks is not None else width * d.shape[0]
        if width <= 2**20 and chunk <= 16 * 2**20:
            k = min(d.shape[0], max(1, 2**20 // width))
            try:
                head = d[:k]
            except _CORRUPT:
                head = None
            if head is not None:
                lengths = np.char.str_len(head) if head.dtype.kind == "S" else \
                    np.array([len(v) for v in head.tolist()])
                bad = np.flatnonzero(lengths > MAX_ID_BYTES)
                if bad.size:
                    rows = (f"; longer ids in {format_rows(bad)} (longest: "
                            f"{int(lengths[bad].max())} bytes; the first {k} rows read)")
        raise self.err(S.IDS, f"stores fixed-length strings of {width} bytes, wider than "
                       f"the {MAX_ID_BYTES}-byte id limit, for its {d.shape[0]} rows "
                       f"(0..{d.shape[0] - 1}){rows}; {ID_RULE}. Refused before reading")

    def read(self, name, sl=slice(None)):
        try:
            return self.ds[name][sl]
        except GradscoreError:
            raise
        except _CORRUPT as exc:
            raise self.err(name, f"could not be read (file truncated or corrupt?): "
                           f"{type(exc).__name__}: {exc}") from None

    def close(self):
        self.f.close()


# ------------------------------------------------------- pre-read checks

#: Bytes an attribute gradscore reads (``epoch``, ``num_classes``,
#: ``sha256``) may take in the file; checked before it is read.
MAX_ATTR_BYTES = 4096


def _small_attr(obj, name, path):
    """``obj.attrs.get(name)``, refusing an attribute larger than
    :data:`MAX_ATTR_BYTES` before reading it (dense attribute storage lets
    one attribute take gigabytes)."""
    try:
        if name not in obj.attrs:
            return None
        aid = obj.attrs.get_id(name)
        size = aid.get_storage_size()
        shape = aid.shape or ()
        declared = math.prod(shape) * aid.dtype.itemsize
    except _CORRUPT as exc:
        raise GradscoreError(f"{path}: attribute '{name}' could not be read: {exc}") from None
    if max(size, declared) > MAX_ATTR_BYTES:
        where = f"dataset '{obj.name.lstrip('/')}' " if obj.name != "/" else ""
        raise GradscoreError(
            f"{path}: {where}attribute '{name}' takes {max(size, declared)} bytes; attributes "
            f"gradscore reads are limited to {MAX_ATTR_BYTES} bytes. Refused before reading")
    try:
        return obj.attrs.get(name)
    except _CORRUPT as exc:
        raise GradscoreError(f"{path}: attribute '{name}' could not be read: {exc}") from None

#: Bytes of one id held in memory: int64, or a Python str object (an
#: estimate: CPython's str header is 49 bytes, plus the text and a pointer).
_ID_BYTES = {"int": 8, "str": 96, None: 8}

def available_memory():
    """Memory this process may still take, in bytes: ``MemAvailable`` from
    /proc/meminfo (Linux), capped by what is left of an address-space limit
    (``ulimit -v``) and by a cgroup limit when one is set; else the free
    physical pages; None when the platform tells nothing."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    # An address-space limit (ulimit -v, RLIMIT_AS) caps what this process
    # can map whatever the machine has: what is left of it counts too.
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as fh:
                vm = next((int(line.split()[1]) * 1024 for line in fh
                           if line.startswith("VmSize:")), 0)
            avail = min(avail, max(0, soft - vm))
    except (ImportError, OSError, ValueError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                raw = fh.read().strip()
            with open(usage_file) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if raw.isdigit() and int(raw) < 2**60:
            avail = min(avail, max(0, int(raw) - used))
        break
    return avail


def _fmt_bytes(n):
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _expected_chunks(dset):
    return math.prod(-(-n // c) for n, c in zip(dset.shape, dset.chunks))


def _allocated_chunk_offsets(dset):
    """Logical offsets of the chunks present in the chunk index."""
    offsets = []
    dsid = dset.id
    if hasattr(dsid, "chunk_iter"):
        try:
            dsid.chunk_iter(lambda info: offsets.append(info.chunk_offset))
            return offsets
        except (AttributeError, NotImplementedError):  # HDF5 older than 1.12.3
            offsets.clear()
    for i in range(dsid.get_num_chunks()):
        offsets.append(dsid.get_chunk_info(i).chunk_offset)
    return offsets


def _first_missing_rows(dset):
    """``(start, stop, n_missing_rows)``: the first run of rows some chunk of
    which is not allocated, and how many rows lack a chunk in all."""
    n, rows = dset.shape[0], dset.chunks[0]
    per_row_block = math.prod(-(-n_ // c) for n_, c in zip(dset.shape[1:], dset.chunks[1:]))
    n_blocks = -(-n // rows)
    have = np.zeros(n_blocks, dtype=np.int64)
    for off in _allocated_chunk_offsets(dset):
        b = off[0] // rows
        if 0 <= b < n_blocks:
            have[b] += 1
    missing = np.flatnonzero(have < per_row_block)
    if not missing.size:
        return None
    first = int(missing[0])
    last = first
    while last + 1 < n_blocks and have[last + 1] < per_row_block:
        last += 1
    stop = min(n, (last + 1) * rows)
    n_missing = int(sum(min(n, (b + 1) * rows) - b * rows for b in missing.tolist()))
    return first * rows, stop, n_missing


def _check_allocated(dset, path):
    """Refuse a dataset part of whose storage was never written.

    HDF5 reads unwritten chunks (and never-allocated contiguous storage) as
    the fill value without an error, so a writer that died halfway leaves a
    file whose missing rows read as zeros. The chunk index says exactly
    which chunks exist; nothing of the data is read here.
    """
    name = dset.name.lstrip("/")
    if dset.size == 0:
        return
    try:
        layout = dset.id.get_create_plist().get_layout()
        if layout == h5py.h5d.CHUNKED:
            expected = _expected_chunks(dset)
            have = dset.id.get_num_chunks()
            if have >= expected:
                return
            miss = _first_missing_rows(dset)
            where = ""
            if miss is not None:
                start, stop, n_missing = miss
                where = (f"; rows {start}..{stop - 1} (and {n_missing} rows in all) were "
                         "never written")
            raise GradscoreError(
                f"{path}: dataset '{name}' has {have} of its {expected} chunks written"
                f"{where}. HDF5 would read them back as the fill value; the export is "
                "incomplete (did its writer die?), refused")
        if layout == h5py.h5d.CONTIGUOUS and dset.id.get_storage_size() == 0:
            raise GradscoreError(
                f"{path}: dataset '{name}' was created but never written (no storage "
                f"allocated for its {dset.shape[0]} rows); HDF5 would read it back as the "
                "fill value; refused")
    except GradscoreError:
        raise
    except _CORRUPT as exc:
        raise GradscoreError(f"{path}: dataset '{name}': its storage index could not be "
                             f"read (file truncated or corrupt?): {exc}") from None


def _chunk_bytes(dset):
    if dset.chunks is None:
        return 0
    return math.prod(dset.chunks) * dset.dtype.itemsize


def _needed_bytes(sources, *, keep_features, block_rows):
    """Per dataset, the bytes the reader will hold in memory at its peak.

    Output arrays (int64 labels and ids, float32 logits and features) plus
    the sort order and one row of every other dataset read in blocks, plus
    the largest chunk HDF5 decompresses at once.
    """
    first = sources[0]
    total = sum(s.n for s in sources)
    c, d = first.num_classes, first.n_features
    parts = {S.LABELS: 8 * total,  # int64, read in blocks
             S.LOGITS: 4 * c * total}
    if first.id_kind == "str":
        parts[S.IDS] = sum(_str_id_bytes(s) for s in sources) + 8 * total  # + sort order
    elif first.id_kind is not None:
        parts[S.IDS] = (_ID_BYTES[first.id_kind] + 8) * total  # ids + sort order
    else:
        parts[S.IDS] = 2 * 8 * total  # default ids + sort order
    if keep_features and d is not None:
        parts[S.FEATURES] = 4 * d * total
    block = min(block_rows, max(s.n for s in sources))
    computed = any(S.LOGITS not in s.ds for s in sources)
    widest = max(c, d if (keep_features or computed) and d else 0)
    temp = 2 * 8 * block * widest  # a block as read, and its check's temporaries
    temp += max(_chunk_bytes(ds) for s in sources for ds in s.ds.values())
    for s in sources:
        if S.WEIGHT in s.ds:
            temp += 8 * (s.ds[S.WEIGHT].size + s.ds[S.BIAS].size)
            break
    parts["(block buffers)"] = temp
    return parts


def _str_id_bytes(src):
    """Bytes one file's string ids take as Python str objects, at most.

    Fixed-length: the declared width (at most :data:`MAX_ID_BYTES`, checked
    at open). Variable-length strings live uncompressed in the file's global
    heap, outside every dataset's storage, so together they take at most
    the file's size less that storage, and each at most the id limit once
    checked.
    """
    width = h5py.check_string_dtype(src.ds[S.IDS].dtype).length
    per_row = 57  # CPython's str header (49 bytes) and the array's pointer
    if width is not None:
        return src.n * (per_row + width)
    try:
        heap = os.path.getsize(src.path) - sum(d.id.get_storage_size()
                                                for d in src.ds.values())
    except (OSError, *_CORRUPT):
        heap = src.n * MAX_ID_BYTES
    return src.n * per_row + min(src.n * MAX_ID_BYTES, max(0, heap))


def declared_id_bytes(paths, *, max_memory=None):
    """``(rows, id_bytes)``: the export's rows, and at most how many bytes of
    UTF-8 its ids take together, from the files' metadata (nothing read).

    Each file is first held to what every run must hold of it, its labels
    and ids (the spill's first pass), against ``max_memory``: an input that
    declares more than the machine has is refused for what it is, before
    any output is sized from it.

    Integer ids: 20 characters each at most. Fixed-length strings: the
    declared width. Variable-length strings: the string heap, bounded by
    the file's size less its datasets' storage (and by the id limit). A
    ``.txt`` keep-list of these ids is at most ``id_bytes + rows`` bytes.
    """
    rows = id_bytes = 0
    for p in paths:
        src = _Source(p)
        try:
            _check_size([src], keep_features=False, block_rows=S.BLOCK_ROWS,
                        max_memory=parse_memory(max_memory), only=(S.LABELS, S.IDS))
            rows += src.n
            if src.id_kind != "str":
                id_bytes += 20 * src.n
                continue
            width = h5py.check_string_dtype(src.ds[S.IDS].dtype).length
            id_bytes += src.n * width if width is not None else \
                _str_id_bytes(src) - 57 * src.n
        finally:
            src.close()
    return rows, id_bytes


def _check_size(sources, *, keep_features, block_rows, max_memory, only=None):
    """Refuse, before allocating anything, a read that will not fit.

    The limit is ``max_memory`` when given, else the memory the machine has
    available now (:func:`available_memory`). ``only`` restricts the count
    to those datasets (and the block buffers), for a pass that holds only
    them (the spill's first pass holds labels and ids).
    """
    parts = _needed_bytes(sources, keep_features=keep_features, block_rows=block_rows)
    if only is not None:
        parts = {k: v for k, v in parts.items() if k in only or k not in S.DATASETS}
    need = sum(parts.values())
    if max_memory is not None:
        limit, what = max_memory, "the --max-memory / max_memory limit"
    else:
        limit, what = available_memory(), "the memory available on this machine"
    if limit is None or need <= limit:
        return
    present = {k for s in sources for k in s.ds}
    name, biggest = max(((k, v) for k, v in parts.items() if k in present),
                        key=lambda kv: kv[1])
    rows = sum(s.n for s in sources)
    files = sources[0].path if len(sources) == 1 else \
        f"{len(sources)} files ({sources[0].path}, ...)"
    listed = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in parts.items())
    raise GradscoreError(
        f"{files}: dataset '{name}' declares {rows} rows; reading the export needs "
        f"{_fmt_bytes(need)} ({listed}) but {what} is {_fmt_bytes(limit)}; refused "
        "before allocating (give a larger --max-memory if the machine really has it)")


#: Rows of variable-length string ids read at once, at first: the block
#: doubles while every id seen is within the limit, up to ``block_rows``,
#: so a file of 1 MB ids is refused after reading a few of them, not all.
_FIRST_STR_BLOCK = 64


def _utf8_len(v):
    return len(v) if isinstance(v, bytes) else len(str(v).encode("utf-8", "surrogatepass"))


def _read_ids(src, block_rows=S.BLOCK_ROWS):
    """One file's ids, read in blocks: int64, or str (object) checked
    against the id limit block by block, before the block is decoded."""
    if src.id_kind is None:
        return None
    if src.id_kind == "int":
        ids = np.empty(src.n, dtype=np.int64)
        for start in range(0, src.n, block_rows):
            stop = min(src.n, start + block_rows)
            ids[start:stop] = src.read(S.IDS, slice(start, stop))
        return ids
    want = _small_attr(src.ds[S.IDS], S.ATTR_IDS_SHA256, src.path)
    h = S.ids_digest([]) if want is not None else None
    ids = np.empty(src.n, dtype=object)
    start, block = 0, min(block_rows, _FIRST_STR_BLOCK)
    while start < src.n:
        stop = min(src.n, start + block)
        values = src.read(S.IDS, slice(start, stop)).tolist()
        if h5py.check_string_dtype(src.ds[S.IDS].dtype).length is None:
            # Variable length: each id's bytes, checked before decoding
            # (fixed-length ids are no wider than the limit, checked at open).
            check_id_bytes(np.fromiter(map(_utf8_len, values), dtype=np.int64,
                                       count=len(values)),
                           where=f"{src.path}: dataset '{S.IDS}'", row_offset=start)
        try:
            values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
        except UnicodeDecodeError:
            raise src.err(S.IDS, "holds strings that are not UTF-8") from None
        if h is not None:
            S.ids_digest(values, h)
        ids[start:stop] = values
        start, block = stop, min(block_rows, 2 * block)
    if want is not None:
        want = want.decode("ascii", "replace") if isinstance(want, bytes) else str(want)
        got = h.hexdigest()
        if got != want:
            raise src.err(S.IDS, f"does not match its attribute '{S.ATTR_IDS_SHA256}' "
                          f"(stored {want[:16]}..., computed {got[:16]}...): the strings "
                          "were changed after writing or the file is corrupt")
    return ids


def read_epoch(paths, *, need_features=True, block_rows=S.BLOCK_ROWS, deep=False,
               max_memory=None):
    """Read, validate and join one epoch's export file(s).

    Parameters
    ----------
    paths : str or path-like, or list of them
        One file, or the shards of one epoch (rows are joined and sorted by id).
    need_features : bool, default=True
        Keep ``features`` in memory. When False (and ``deep`` is False) they
        are checked for shape, dtype and written storage but not read, unless
        ``logits`` must be computed from them; ``weight`` and ``bias`` are
        read only then too.
    block_rows : int, default=65536
        Rows per streamed block.
    deep : bool, default=False
        Read and check every value of every dataset (finite ``features``,
        ``weight`` and ``bias`` too), whether the run uses it or not.
    max_memory : int or str, default=None
        Bytes the read may hold (``'4G'``, ``'512MiB'`` or an int). Default:
        the memory available on the machine. An export that needs more is
        refused before anything is allocated.

    Returns
    -------
    epoch : Epoch

    Raises
    ------
    GradscoreError
        Naming the file, dataset, rule and first offending rows; also for
        storage never written (the first missing rows) and for an export
        larger than ``max_memory`` (declared rows, bytes needed, bytes
        available).

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
    max_memory = parse_memory(max_memory)
    sources = []
    try:
        for p in paths:
            sources.append(_Source(p))
        return _read_sources(sources, need_features, block_rows, deep=deep,
                             max_memory=max_memory)
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


def _read_sources(sources, need_features, block_rows, *, deep=False, max_memory=None):
    _check_shards_agree(sources)
    first = sources[0]
    c, d = first.num_classes, first.n_features
    total = sum(s.n for s in sources)
    keep_f = need_features and d is not None
    # What the files declare is checked before anything is allocated or read.
    _check_size(sources, keep_features=keep_f, block_rows=block_rows, max_memory=max_memory)
    for src in sources:
        for dset in src.ds.values():
            _check_allocated(dset, src.path)
    labels = np.empty(total, dtype=np.int64)
    logits = np.empty((total, c), dtype=np.float32)
    features = np.empty((total, d), dtype=np.float32) if keep_f else None
    ids_parts = []
    offset = 0
    for src in sources:
        labels[offset:offset + src.n] = _read_labels(src, c)
        computed = S.LOGITS not in src.ds
        # Unused datasets are not read (their shape and dtype were checked):
        # features of a logits-gradient run are most of the file.
        read_f = S.FEATURES in src.ds and (keep_f or deep or computed)
        linear = _read_linear(src) if computed or deep else None
        for start in range(0, src.n, block_rows):
            stop = min(src.n, start + block_rows)
            out = slice(offset + start, offset + stop)
            lg, feat = _read_block(src, start, stop, linear, read_features=read_f)
            logits[out] = lg
            if keep_f:
                features[out] = feat
        ids = _read_ids(src)
        if ids is None:
            ids = np.arange(src.n, dtype=np.int64)
        ids_parts.append(ids)
        offset += src.n
    order, ids = _join_ids(sources, ids_parts)
    if not np.array_equal(order, np.arange(total)):
        labels, logits = labels[order], logits[order]
        if features is not None:
            features = features[order]
    return Epoch(labels=labels, logits=logits, features=features, ids=ids,
                 num_classes=c, epoch=_epoch_of(sources),
                 sources=[{"path": s.path, "n": s.n} for s in sources], n_features=d,
                 dtypes=_dtypes(sources),
                 id_kind=first.id_kind)


def _join_ids(sources, ids_parts):
    """Sort the files' ids (concatenated in file order), refusing duplicates.

    Returns ``(order, sorted_ids)``: row ``order[i]`` of the concatenated
    files has the i-th smallest id.
    """
    ids = np.concatenate(ids_parts) if len(ids_parts) > 1 else ids_parts[0]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        _raise_duplicates(sources, order, dup, sorted_ids)
    return order, sorted_ids


def _epoch_of(sources):
    """The files' common ``epoch`` attribute, or None."""
    epochs = {s.epoch.item() if hasattr(s.epoch, "item") else s.epoch for s in sources}
    epochs.discard(None)
    if len(epochs) > 1:
        raise GradscoreError(f"shards disagree on attribute 'epoch': {sorted(epochs)}")
    return epochs.pop() if epochs else None


def _read_labels(src, num_classes, block_rows=S.BLOCK_ROWS):
    """One file's labels as int64, read in blocks, checked to lie in ``[0, num_classes)``."""
    lab = np.empty(src.n, dtype=np.int64)
    for start in range(0, src.n, block_rows):
        stop = min(src.n, start + block_rows)
        lab[start:stop] = src.read(S.LABELS, slice(start, stop))
    bad = np.flatnonzero((lab < 0) | (lab >= num_classes))
    if bad.size:
        raise src.err(S.LABELS, f"must be in [0, {num_classes}); {format_rows(bad)} are not "
                      f"(first value: {lab[bad[0]]})")
    return lab


def _read_linear(src):
    """The file's final layer ``(weight, bias)`` as float64, checked; None if absent."""
    if S.WEIGHT not in src.ds:
        return None
    w = src.read(S.WEIGHT).astype(np.float64)
    b = src.read(S.BIAS).astype(np.float64)
    check_finite(w, f"{src.path}: dataset 'weight'")
    check_finite(b[:, None], f"{src.path}: dataset 'bias'")
    return w, b


def _read_block(src, start, stop, linear, *, read_features=True):
    """Rows ``[start, stop)`` of one file: ``(logits, features)``, both checked finite.

    ``logits`` is read, or computed from the features and ``linear`` (from
    :func:`_read_linear`) when the file has none; ``features`` is None when
    the file has none or ``read_features`` is False (then they must not be
    needed to compute the logits). Each array keeps its storage dtype,
    except computed logits (float64).
    """
    feat = None
    if read_features and S.FEATURES in src.ds:
        feat = src.read(S.FEATURES, slice(start, stop))
        check_finite(feat, f"{src.path}: dataset 'features'", row_offset=start)
    if S.LOGITS in src.ds:
        lg = src.read(S.LOGITS, slice(start, stop))
        check_finite(lg, f"{src.path}: dataset 'logits'", row_offset=start)
    else:
        lg = _linear_logits(src, start, stop, feat, *linear)
        check_finite(lg, f"{src.path}: logits computed from 'features', 'weight' "
                     "and 'bias'", row_offset=start)
    return lg, feat


#: Rows per product when logits are computed from the features: tiles
#: aligned to the file's row numbers.
LINEAR_TILE = 1024


def _linear_logits(src, start, stop, feat, w, b):
    """``features @ weight.T + bias`` of rows ``[start, stop)``, float64.

    A BLAS product's last bits depend on its shape and on how BLAS splits it
    over threads, and an in-memory run reads a file in other blocks than a
    spilled one. So the product runs on one BLAS thread over tiles of
    ``LINEAR_TILE`` rows aligned to the file's row numbers, reading the
    features of a tile's rows outside ``[start, stop)`` when a block cuts it:
    a row's logits have the same bits whatever the blocks (issue 24).
    """
    a0 = start - start % LINEAR_TILE
    a1 = min(src.n, -(-stop // LINEAR_TILE) * LINEAR_TILE)
    full = feat if (a0, a1) == (start, stop) else src.read(S.FEATURES, slice(a0, a1))
    out = np.empty((stop - start, w.shape[0]))
    with one_blas_thread():
        for a in range(a0, a1, LINEAR_TILE):
            z = min(a1, a + LINEAR_TILE)
            lo, hi = max(a, start), min(z, stop)
            out[lo - start:hi - start] = \
                (full[a - a0:z - a0].astype(np.float64) @ w.T + b)[lo - a:hi - a]
    return out


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


def describe(paths, *, deep=False, max_memory=None):
    """Validate the files and summarise what they hold, without scoring.

    Parameters
    ----------
    paths : str or path-like, or list of them
    deep : bool, default=False
        Also read and check every value of the datasets a logits-gradient
        run does not use (``features``, ``weight``, ``bias``); by default
        they are checked for shape, dtype and written storage only.
    max_memory : int or str, default=None
        See :func:`read_epoch`.

    Returns
    -------
    info : dict
        ``files``, ``n``, ``num_classes``, ``n_features``, ``dtypes``,
        ``id_kind``, ``class_sizes`` (list of int), ``epoch``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    epoch = read_epoch(paths, need_features=False, deep=deep, max_memory=max_memory)
    return {
        "files": epoch.sources,
        "n": int(epoch.labels.size),
        "num_classes": epoch.num_classes,
        "n_features": epoch.n_features,
        "dtypes": epoch.dtypes,
        "id_kind": epoch.id_kind or "default (0..N-1)",
        "class_sizes": np.bincount(epoch.labels, minlength=epoch.num_classes).tolist(),
        "epoch": None if epoch.epoch is None else int(epoch.epoch),
        "deep": bool(deep),
    }
