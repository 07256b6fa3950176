"""Input checks shared by the file reader and the in-memory API.

Everything a user hands to gradscore passes through here once; the private
functions behind the public API assume what these checks guarantee.
"""

import numbers

import numpy as np

from .errors import GradscoreError

#: How many offending rows an error message lists.
MAX_LISTED = 10


def format_rows(rows):
    """``'3 rows (first: 12, 40, 77)'`` for an array of row numbers."""
    rows = np.asarray(rows)
    shown = ", ".join(str(int(r)) for r in rows[:MAX_LISTED])
    more = ", ..." if rows.size > MAX_LISTED else ""
    noun = "row" if rows.size == 1 else "rows"
    return f"{rows.size} {noun} (first: {shown}{more})"


def check_int(name, value, *, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GradscoreError(f"'{name}' must be an int; got {value!r}")
    if minimum is not None and value < minimum:
        raise GradscoreError(f"'{name}' must be an int >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise GradscoreError(f"'{name}' must be an int <= {maximum}; got {value}")
    return int(value)


def check_fraction(name, value, *, low=0.0, high=1.0, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GradscoreError(f"'{name}' must be a number; got {value!r}")
    value = float(value)
    ok_low = value > low if low_open else value >= low
    if not (ok_low and value <= high and np.isfinite(value)):
        bracket = "(" if low_open else "["
        raise GradscoreError(
            f"'{name}' must be in {bracket}{low}, {high}]; got {value}"
        )
    return value


def check_choice(name, value, choices):
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise GradscoreError(f"'{name}' must be one of {listed}; got {value!r}")
    return value


def check_labels(labels, *, num_classes=None, where="labels"):
    """Return labels as int64 of shape (n,), checked against ``num_classes``."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise GradscoreError(
            f"{where} must have shape (n_samples,); got shape {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise GradscoreError(
            f"{where} must hold integers; got dtype {labels.dtype}"
        )
    labels = labels.astype(np.int64, copy=False)
    bad = np.flatnonzero(labels < 0)
    if num_classes is not None:
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        rule = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise GradscoreError(
            f"{where} must be in {rule}; {format_rows(bad)} are not "
            f"(first value: {labels[bad[0]]})"
        )
    return labels


def check_float_matrix(x, name, *, n_rows, n_cols=None, where=None):
    """Return ``x`` as a float32 array of shape (n_rows, n_cols).

    Inputs are rounded to float32 once, here, so that float32 and float64
    exports of the same model give identical decisions; the maths downstream
    runs in float64.
    """
    where = where or name
    x = np.asarray(x)
    if x.ndim != 2:
        raise GradscoreError(f"{where} must be 2-D (n_samples, n_{name}); got shape {x.shape}")
    if x.dtype.kind != "f":
        raise GradscoreError(f"{where} must be floating point; got dtype {x.dtype}")
    if x.shape[0] != n_rows:
        raise GradscoreError(f"labels has {n_rows} rows but {where} has {x.shape[0]}")
    if n_cols is not None and x.shape[1] != n_cols:
        raise GradscoreError(
            f"{where} must have {n_cols} columns; got {x.shape[1]}"
        )
    check_finite(x, where)
    return x.astype(np.float32, copy=False)


def check_finite(x, where, *, row_offset=0, block_rows=65536):
    """Raise if any row of ``x`` holds NaN or Inf.

    Works in row blocks so the temporary masks stay small whatever ``x``'s size.
    """
    bad, kind = [], None
    for start in range(0, x.shape[0], block_rows):
        blk = x[start:start + block_rows]
        nonfinite = _nonfinite(blk)
        if nonfinite.any():  # the common case stops here, with one flat pass
            rows = nonfinite.reshape(blk.shape[0], -1).any(axis=1)
            bad.append(np.flatnonzero(rows) + start + row_offset)
            kind = kind or ("NaN" if np.isnan(blk).any() else "Inf")
    if bad:
        raise GradscoreError(f"{where} contains {kind} in {format_rows(np.concatenate(bad))}")


def _nonfinite(x):
    if x.dtype == np.float16:
        # np.isfinite on float16 has no SIMD loop; the exponent bits do
        # (all ones: Inf or NaN), several times faster on a 2.5 GB export.
        return (x.view(np.uint16) & 0x7C00) == 0x7C00
    return ~np.isfinite(x)


def check_ids(ids, n_rows, *, where="ids"):
    """Return ids as int64 or str (object) of shape (n,), unique."""
    if ids is None:
        return np.arange(n_rows, dtype=np.int64)
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != n_rows:
        raise GradscoreError(
            f"{where} must have shape ({n_rows},) to match labels; got {ids.shape}"
        )
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64, copy=False)
    elif ids.dtype.kind in "OUS":
        ids = np.array([_as_str(v, where) for v in ids.tolist()], dtype=object)
    else:
        raise GradscoreError(
            f"{where} must hold integers or UTF-8 strings; got dtype {ids.dtype}"
        )
    check_unique_ids(ids, where)
    return ids


def check_unique_ids(ids, where="ids"):
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        rows = np.sort(order[dup + 1])
        raise GradscoreError(
            f"{where} must be unique; {format_rows(rows)} repeat an earlier id "
            f"(first repeated id: {ids[rows[0]].item() if hasattr(ids[rows[0]], 'item') else ids[rows[0]]!r})"
        )


def _as_str(v, where):
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GradscoreError(f"{where} holds bytes that are not UTF-8: {v[:40]!r}") from exc
    if not isinstance(v, str):
        raise GradscoreError(f"{where} must hold integers or strings; found {type(v).__name__}")
    return v
