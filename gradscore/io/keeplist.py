"""Keep-lists (the ids to keep training on) and per-example score tables.

Keep-list formats, chosen by the file's extension:

``.txt``
    One id per line, sorted (numerically for int ids, by code point for str).
``.npy``
    A 1-D array of the sorted ids (int64, or unicode for str ids).
``.json``
    ``{"ids": [...], "metadata": {...}}``, metadata holding the gradscore
    version, method and every parameter, seed, epoch, sha256 of each input
    file and per-class counts.
"""

import csv
import json
import os

import h5py
import numpy as np

from ..errors import GradscoreError
from ._atomic import atomic_path

KEEPLIST_FORMATS = (".txt", ".npy", ".json")

#: Lines of a .txt keep-list joined per write.
_WRITE_LINES = 65536
SCORES_FORMATS = (".csv", ".h5")


def _ext(path, allowed, what):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in allowed:
        raise GradscoreError(f"{path}: a {what} must end in {', '.join(allowed)}; got "
                             f"'{ext or '(no extension)'}'")
    return ext


def _sorted_ids(ids):
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return np.sort(ids.astype(np.int64))
    return np.array(sorted(str(v) for v in ids.tolist()), dtype=object)


def write_keeplist(path, ids, *, metadata=None):
    """Write the ids to keep, sorted, atomically; format by extension.

    Parameters
    ----------
    path : str or path-like
        Ending in ``.txt``, ``.npy`` or ``.json``.
    ids : array-like of shape (n_kept,)
        Int or str ids.
    metadata : dict, default=None
        Stored in ``.json`` keep-lists only.
    """
    ext = _ext(path, KEEPLIST_FORMATS, "keep-list")
    with atomic_path(path) as tmp:
        _write_keeplist_to(tmp, ext, ids, metadata)


def _write_keeplist_to(tmp, ext, ids, metadata):
    ids = _sorted_ids(ids)
    if ext == ".txt":
        lines = [str(v) for v in ids.tolist()]
        if ids.dtype.kind != "i":
            for s in lines:
                if "\n" in s or "\r" in s:
                    raise GradscoreError(f"id {s!r} contains a newline; use .json or .npy")
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            # One write per block of lines: a loop of 1M small writes took
            # 2.5 s on the ImageNet shape; one write of all of them holds a
            # second copy of every id in memory.
            for start in range(0, len(lines), _WRITE_LINES):
                fh.write("".join(s + "\n" for s in lines[start:start + _WRITE_LINES]))
    elif ext == ".npy" and ids.dtype.kind == "i":
        with open(tmp, "wb") as fh:
            np.save(fh, ids, allow_pickle=False)
    elif ext == ".npy":
        # A unicode array is as wide as its longest id (4 bytes a character)
        # for every row: filled in blocks through a memory map, so one long
        # id costs disk (checked against the free space), not memory.
        width = max((len(v) for v in ids.tolist()), default=0)
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=f"<U{max(width, 1)}",
                                        shape=ids.shape)
        for start in range(0, ids.size, _WRITE_LINES):
            arr[start:start + _WRITE_LINES] = ids[start:start + _WRITE_LINES].tolist()
        arr.flush()
        del arr
    else:
        doc = {"ids": ids.tolist(), "metadata": metadata or {}}
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.write("\n")


def output_bytes(ids, ext):
    """Bytes a keep-list of ``ids`` takes in format ``ext``, at most.

    Exact for ``.txt`` (UTF-8 and a newline per id); an upper bound for
    ``.npy`` (UTF-32 at the widest id) and ``.json`` (every byte escaped).
    """
    ids = np.asarray(ids)
    n = ids.size
    if ids.dtype.kind in "iu":
        return 21 * n + 4096
    if ext == ".npy":
        return 4 * n * max((len(str(v)) for v in ids.tolist()), default=0) + 4096
    text = sum(len(str(v).encode("utf-8", "surrogatepass")) for v in ids.tolist())
    if ext == ".txt":
        return text + n
    return 6 * text + 8 * n + 2**20  # \uXXXX escapes, quotes, indent; metadata


def check_free_space(path, need):
    """Refuse to write ``need`` bytes to ``path`` when its folder has less free."""
    import shutil

    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise GradscoreError(
            f"{path}: the output needs up to {need} bytes but {folder} has {free} bytes free; "
            "refused before writing (nothing written)")


def read_keeplist(path):
    """Read a keep-list written by :func:`write_keeplist` (or by hand).

    Returns
    -------
    ids : ndarray of shape (n_kept,)
        int64 when every id is an integer, else object array of str.
    """
    ext = _ext(path, KEEPLIST_FORMATS, "keep-list")
    if not os.path.exists(path):
        raise GradscoreError(f"{path}: no such file")
    try:
        if ext == ".txt":
            with open(path, encoding="utf-8") as fh:
                values = [line.rstrip("\n").rstrip("\r") for line in fh]
            values = [v for v in values if v != ""]
        elif ext == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 1:
                raise GradscoreError(f"{path}: keep-list array must be 1-D; got {arr.shape}")
            return arr.astype(np.int64) if arr.dtype.kind in "iu" else \
                np.array([str(v) for v in arr.tolist()], dtype=object)
        else:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list):
                raise GradscoreError(f"{path}: JSON keep-list must be an object with a list 'ids'")
            values = doc["ids"]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                return np.array(values, dtype=np.int64)
            return np.array([str(v) for v in values], dtype=object)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, GradscoreError):
            raise
        raise GradscoreError(f"{path}: cannot read keep-list: {exc}") from None
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values, dtype=object)


def keep_mask(ids, keep_ids, *, source="keep-list"):
    """Boolean mask over ``ids`` of the rows whose id is in ``keep_ids``.

    Every id in ``keep_ids`` must occur in ``ids``; int keep-list ids match
    str ids by their decimal text.
    """
    ids = np.asarray(ids)
    keep_ids = np.asarray(keep_ids)
    if ids.dtype.kind not in "iu" and keep_ids.dtype.kind in "iu":
        keep_ids = np.array([str(v) for v in keep_ids.tolist()], dtype=object)
    if ids.dtype.kind in "iu" and keep_ids.dtype.kind not in "iu":
        raise GradscoreError(f"{source} holds string ids but the export's ids are integers")
    mask = np.isin(ids, keep_ids)
    found = np.isin(keep_ids, ids)
    if not found.all():
        missing = keep_ids[~found]
        shown = ", ".join(repr(v) for v in missing[:10].tolist())
        raise GradscoreError(f"{source} has {missing.size} id(s) that the export lacks "
                             f"(first: {shown})")
    return mask


def write_scores(path, *, ids, labels, result):
    """Write the per-example table.

    Columns: id, label, score (higher = more typical), cluster_size,
    flagged, decision, and for the flagged rows suggested_label,
    suggestion_confidence and signal (:mod:`gradscore.review`; empty in
    CSV, -1 / NaN / "" in HDF5, where not flagged or not known).

    Parameters
    ----------
    path : str or path-like
        Ending in ``.csv`` or ``.h5``.
    ids, labels : ndarray of shape (n_samples,)
    result : ScoreResult
    """
    ext = _ext(path, SCORES_FORMATS, "scores table")
    with atomic_path(path) as tmp:
        _write_scores_to(tmp, ext, ids, labels, result)


#: Columns of the scores table, in order.
SCORES_COLUMNS = ("id", "label", "score", "cluster_size", "flagged", "decision",
                  "suggested_label", "suggestion_confidence", "signal")


def _review_columns(result):
    n = result.keep.size
    if result.suggested_label is None:
        return np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, "", dtype=object)
    return result.suggested_label, result.suggestion_confidence, result.signal


def _write_scores_to(tmp, ext, ids, labels, result):
    suggested, confidence, signal = _review_columns(result)
    if ext == ".csv":
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(SCORES_COLUMNS)
            for row in zip(ids.tolist(), labels.tolist(), result.scores.tolist(),
                           result.cluster_size.tolist(), result.flagged.tolist(),
                           result.decision.tolist(), suggested.tolist(),
                           confidence.tolist(), signal.tolist()):
                i, lab, sc, cs, fl, dec, sug, conf, sig = row
                w.writerow([i, lab, "" if sc != sc else repr(sc), cs, int(fl), dec,
                            "" if sug < 0 else sug, "" if conf != conf else repr(conf), sig])
    else:
        with h5py.File(tmp, "w") as f:
            if ids.dtype.kind in "iu":
                f.create_dataset("id", data=ids)
            else:
                f.create_dataset("id", data=ids.astype(object),
                                 dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("label", data=labels)
            f.create_dataset("score", data=result.scores)
            f.create_dataset("cluster_size", data=result.cluster_size)
            f.create_dataset("flagged", data=result.flagged)
            f.create_dataset("decision", data=result.decision.astype(object),
                             dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("suggested_label", data=suggested)
            f.create_dataset("suggestion_confidence", data=confidence)
            f.create_dataset("signal", data=signal.astype(object),
                             dtype=h5py.string_dtype("utf-8"))
            if result.bad_share is not None:
                f.attrs["estimated_bad_share"] = result.bad_share
            f.attrs["score_direction"] = "higher = denser = more typical"
