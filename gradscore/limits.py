"""Resource limits on untrusted inputs, in one place.

Every input gradscore reads may come from someone else: an export handed
over by a third party, a dataset to audit. A file can be small on disk and
huge once read (a compressed string, a gzip chunk of zeros), so each input
has a stated rule, checked from metadata before the data is read where
the format has metadata, and from each block as it streams in otherwise.

- :data:`MAX_ID_BYTES`: an example id (export ``ids``, an audit's
  ``--id-column``) is at most 1,024 bytes of UTF-8. A rule of schema v1,
  not an option: ids are "dataset indices, file names, hashes", and the
  keep-list a run writes is at most ``rows x (MAX_ID_BYTES + 1)`` bytes.
- :data:`MAX_CELL_BYTES`: one string, binary cell or attribute of an
  audit's input (a Parquet or Hugging Face image/text cell, a CSV or JSON
  Lines field, a tokenizer file) is at most 8 MiB by default; the CLI's
  ``--max-cell-bytes`` (``max_cell_bytes=``) raises it.

See docs/reliability.md ("Resource limits") for every limit, its default
and the option that changes it.

Examples
--------
>>> from gradscore.limits import check_cell_bytes, max_cell_bytes
>>> max_cell_bytes("16MiB")
16777216
>>> check_cell_bytes([3, 5, 2], where="data.csv: column 'text'", limit=4)
Traceback (most recent call last):
...
gradscore.errors.GradscoreError: data.csv: column 'text' has 1 cell longer than the 4-byte limit on one cell: 1 row (first: 1) (longest: 5 bytes); raise the limit with --max-cell-bytes / max_cell_bytes= if the data is legitimate
"""

import os
import re

import numpy as np

from ._validation import format_rows
from .errors import GradscoreError

#: Bytes of UTF-8 one id may take (schema v1; not configurable).
MAX_ID_BYTES = 1024

#: Default bytes one cell, string or attribute of an audit's input may take.
MAX_CELL_BYTES = 8 * 2**20

ID_RULE = f"ids must be at most {MAX_ID_BYTES} bytes of UTF-8 each (schema v1, docs/schema.md)"


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def parse_memory(value, *, name="max_memory"):
    """Bytes from an int or a string such as ``'512M'``, ``'4GiB'``, ``'2.5G'``.

    Decimal units (k, M, G, T, with or without B) are powers of 1000,
    binary ones (KiB, MiB, GiB, TiB) powers of 1024.

    Examples
    --------
    >>> parse_memory("4GiB"), parse_memory("1.5k"), parse_memory(100)
    (4294967296, 1500, 100)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise GradscoreError(f"'{name}' must be a number of bytes or a size like '4G'; "
                             f"got {value!r}")
    if isinstance(value, (int, np.integer)):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise GradscoreError(f"'{name}' must be a number of bytes or a size like '4G', "
                                 f"'512MiB'; got {value!r}")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise GradscoreError(f"'{name}' must be at least 1 byte; got {value!r}")
    return n


def max_cell_bytes(value=None):
    """The cell limit in bytes: :data:`MAX_CELL_BYTES` for None, else ``value``
    parsed as a size (an int, or ``'16MiB'``, ``'20M'``)."""
    if value is None:
        return MAX_CELL_BYTES
    return parse_memory(value, name="max_cell_bytes")


def _lengths(lengths):
    return np.asarray(lengths, dtype=np.int64).reshape(-1)


def check_cell_bytes(lengths, *, where, limit=None, row_offset=0):
    """Refuse when any of ``lengths`` (bytes of consecutive cells) is over the limit.

    Parameters
    ----------
    lengths : array-like of int, shape (n_cells,)
        Byte length of each cell, in row order (``pyarrow.compute.binary_length``
        of a column, ``len`` of each field).
    where : str
        The file and column, for the message (``"data.csv: column 'text'"``).
    limit : int, default=None
        Bytes one cell may take; None: :data:`MAX_CELL_BYTES`.
    row_offset : int, default=0
        Row number of ``lengths[0]``, so the message names rows of the file.
    """
    limit = MAX_CELL_BYTES if limit is None else limit
    n = _lengths(lengths)
    bad = np.flatnonzero(n > limit)
    if bad.size:
        raise GradscoreError(
            f"{where} has {bad.size} cell{'s' if bad.size > 1 else ''} longer than the "
            f"{limit}-byte limit on one cell: {format_rows(bad + row_offset)} (longest: "
            f"{int(n[bad].max())} bytes); raise the limit with --max-cell-bytes / "
            "max_cell_bytes= if the data is legitimate")


def check_id_bytes(lengths, *, where, row_offset=0):
    """Refuse ids longer than :data:`MAX_ID_BYTES` bytes (``lengths`` in bytes,
    consecutive rows from ``row_offset``)."""
    n = _lengths(lengths)
    bad = np.flatnonzero(n > MAX_ID_BYTES)
    if bad.size:
        raise GradscoreError(
            f"{where} holds ids longer than {MAX_ID_BYTES} bytes in "
            f"{format_rows(bad + row_offset)} (longest: {int(n[bad].max())} bytes); {ID_RULE}")


def check_file_bytes(path, *, what, limit=None):
    """Refuse a whole-file input (a tokenizer.json, a JSON config) larger than
    the cell limit before reading it; returns its size in bytes."""
    limit = MAX_CELL_BYTES if limit is None else limit
    size = os.path.getsize(path)
    if size > limit:
        raise GradscoreError(
            f"{path}: {what} is {size} bytes, over the {limit}-byte limit on one input "
            "string; raise the limit with --max-cell-bytes / max_cell_bytes= if it is "
            "legitimate")
    return size


def arrow_byte_lengths(array):
    """Byte length of each cell of a pyarrow string/binary array (0 for null),
    computed from its offsets, without copying the data.

    A dictionary-encoded array (Parquet's ``read_dictionary``) is measured
    without decoding it: a dictionary of one 1 MB string referenced by
    every row is a few KB on disk and rows x 1 MB once decoded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        parts = [arrow_byte_lengths(c) for c in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if pa.types.is_dictionary(array.type):
        values = arrow_byte_lengths(array.dictionary)
        idx = pc.fill_null(array.indices, 0).to_numpy(zero_copy_only=False)
        out = values[idx] if values.size else np.zeros(len(array), dtype=np.int64)
        out[np.asarray(array.is_null().to_numpy(zero_copy_only=False))] = 0
        return out
    if pa.types.is_struct(array.type):
        array = array.field("bytes")
    lengths = pc.fill_null(pc.binary_length(array), 0)
    return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)
