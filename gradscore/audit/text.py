"""Text datasets as an audit source, and their tokenisation.

:func:`open_text` lists a text classification dataset -- a Hugging Face
dataset (``save_to_disk``), Parquet file(s), CSV, or JSON Lines -- as a
:class:`~gradscore.audit.sources.Source` whose payloads are the text of
each row. Every row is checked while listing, before any model runs: a
row whose text is missing (null), empty, not a string, not valid UTF-8
or over the cell limit (:data:`gradscore.limits.MAX_CELL_BYTES`, raised
with ``max_cell_bytes``), or whose label is missing or out of
range, is a :class:`~gradscore.audit.sources.Problem` naming the row; the
audit refuses it with one ``Error:`` line, or skips and lists it with
``skip_bad``.

Labels are integers (class names from a ``ClassLabel`` feature where
there is one) or strings (classes = the distinct strings, sorted; label =
position). Ids are row numbers, or the values of ``id_column``.

:class:`TextBatcher` tokenises with the Hugging Face ``tokenizers``
library from a ``tokenizer.json``: padding per batch (to its longest row),
truncation at the model's maximum length, counted.
"""

import json
import os

import numpy as np

from .._validation import format_rows
from ..errors import GradscoreError
from ..limits import check_file_bytes, max_cell_bytes as _cell_limit
from .sources import (Problem, Source, _class_names_from_features, load_hf_dataset,
                      repeated_ids)

TEXT_FORMATS = (".parquet", ".csv", ".jsonl", ".json")
#: A tokenizer.json may be this many times the cell limit (32 MiB by
#: default: the largest common ones, multilingual vocabularies, are ~10-20 MB).
TOKENIZER_CELLS = 4
#: Sequence length used when neither the model nor the tokenizer fixes one.
DEFAULT_MAX_LENGTH = 512
#: Share of unknown tokens above which the audit warns that the tokenizer
#: may not fit the text.
UNKNOWN_WARN = 0.25


def check_text_size(n_bytes, *, limit=None):
    """Why a text cell of ``n_bytes`` UTF-8 bytes is refused, or None when it is not.

    ``limit``: bytes one cell may take (default: the shared cell limit,
    :data:`gradscore.limits.MAX_CELL_BYTES`), so a hostile row cannot make
    the tokenizer work on gigabytes.
    """
    limit = _cell_limit(limit)
    if n_bytes > limit:
        return (f"text is {n_bytes:,} bytes, over the {limit:,}-byte limit on one cell "
                "(raise it with --max-cell-bytes / max_cell_bytes=)")
    return None


def open_text(path, *, text_column="text", label_column="label", id_column=None, split=None,
              max_cell_bytes=None):
    """List a text dataset (Hugging Face folder, Parquet, CSV, JSON Lines).

    Parameters
    ----------
    path : str or path-like
    text_column, label_column : str, default="text", "label"
    id_column : str, default=None
        Unique ids (int or str); default: row numbers.
    split : str, default=None
        Split of a Hugging Face ``DatasetDict``.
    max_cell_bytes : int or str, default=None
        Bytes one text cell may take (default
        :data:`gradscore.limits.MAX_CELL_BYTES`, 8 MiB).

    Returns
    -------
    source : Source
        ``content="text"``; ``payloads(rows)`` gives the rows' text (str).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GradscoreError(f"{path}: no such file or folder")
    limit = _cell_limit(max_cell_bytes)
    table, kind, names = _read_table(path, text_column, label_column, id_column, split, limit)
    for what, col, flag in (("text", text_column, "--text-column"),
                            ("label", label_column, "--label-column"),
                            ("id", id_column, "--id-column")):
        if col is not None and col not in table.column_names:
            raise GradscoreError(f"{path}: has no column '{col}' for the {what}s (columns: "
                                 f"{', '.join(table.column_names)}); name it with {flag}")
    text, problems = _check_text(path, table.column(text_column), text_column, limit)
    labels, names, label_problems = _labels(path, table.column(label_column), label_column,
                                            names)
    problems += label_problems
    if id_column is None:
        ids = np.arange(table.num_rows, dtype=np.int64)
    else:
        ids, id_problems = _ids(path, table.column(id_column), id_column)
        problems += id_problems
    by_row = {}
    for p in problems:                      # one problem per row: the first found
        by_row.setdefault(p.row, p)
    problems = [by_row[r] for r in sorted(by_row)]
    if table.num_rows == 0:
        raise GradscoreError(f"{path}: has no rows")

    def reader(rows):
        return [text[r] for r in rows.tolist()]

    src = Source(kind, path, ids, labels, names, problems, [], False, reader)
    src.content = "text"
    return src


def _read_table(path, text_column, label_column, id_column, split, limit):
    """``(arrow table, kind, class names or None)`` of the dataset's needed columns."""
    try:
        import pyarrow as pa  # noqa: F401
    except ImportError as exc:
        raise GradscoreError(f"{path}: reading text datasets needs pyarrow ({exc}); pip "
                             "install 'gradscore[audit]'") from None
    cols = [c for c in (text_column, label_column, id_column) if c is not None]
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if names & {"dataset_info.json", "state.json", "dataset_dict.json"}:
            return _hf_table(path, cols, label_column, split)
        files = sorted(os.path.join(path, n) for n in names if n.lower().endswith(".parquet"))
        if not files:
            raise GradscoreError(f"{path}: a folder without a Hugging Face dataset "
                                 "(save_to_disk) or Parquet files; a text dataset is one of "
                                 f"those, or a {', '.join(TEXT_FORMATS)} file")
        return _parquet_table(path, files, cols, label_column)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        return _parquet_table(path, [path], cols, label_column)
    if ext == ".csv":
        return _csv_table(path, text_column, cols, limit), "csv", None
    if ext in (".jsonl", ".json"):
        return _jsonl_table(path, cols, limit), "jsonl", None
    raise GradscoreError(f"{path}: not a text dataset gradscore reads; give a Hugging Face "
                         f"dataset folder, Parquet, CSV or JSON Lines ({', '.join(TEXT_FORMATS)})")


def _missing(path, present, cols):
    for c in cols:
        if c not in present:
            flag = "--text-column / --label-column / --id-column"
            raise GradscoreError(f"{path}: has no column '{c}' (columns: "
                                 f"{', '.join(present)}); name the columns with {flag}")


def _hf_table(path, cols, label_column, split):
    ds = load_hf_dataset(path, split)
    _missing(path, ds.column_names, cols)
    names = _class_names_from_features(ds.features.to_dict(), label_column)
    return ds.with_format("arrow").select_columns(cols)[:], "hf-dataset", names


def _parquet_table(path, files, cols, label_column):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, names = [], None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            _missing(f, pf.schema_arrow.names, cols)
            tables.append(pf.read(columns=cols))
        except GradscoreError:
            raise
        except Exception as exc:  # pyarrow's ArrowInvalid and friends
            raise GradscoreError(f"{f}: not a readable Parquet file: {exc}") from None
        meta = pf.schema_arrow.metadata or {}
        if names is None and b"huggingface" in meta:
            try:
                names = _class_names_from_features(
                    json.loads(meta[b"huggingface"]).get("info", {}).get("features"),
                    label_column)
            except (ValueError, AttributeError):
                names = None
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise GradscoreError(f"{path}: its Parquet files do not share one schema: {exc}") \
            from None
    return table, "parquet", names


def _csv_table(path, text_column, cols, limit):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # The text is read as bytes, so a row of invalid UTF-8 is named (and can be
    # skipped) instead of failing the whole file; blocks hold the largest row.
    import csv

    with open(path, "rb") as fh:
        header = fh.readline(1 << 20).decode("utf-8", "replace")
    present = next(csv.reader([header]), [])
    _missing(path, present, cols)
    try:
        return pcsv.read_csv(
            path, read_options=pcsv.ReadOptions(block_size=4 * limit),
            convert_options=pcsv.ConvertOptions(include_columns=cols,
                                                column_types={text_column: pa.large_binary()},
                                                strings_can_be_null=True))
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise GradscoreError(f"{path}: not a readable CSV file: {_block_hint(exc, limit)}") \
            from None


def _block_hint(exc, limit):
    # pyarrow reads in blocks of 4 x the cell limit; a row that does not fit
    # one is over the limit on one cell (the rule), not a malformed file.
    if "straddl" in str(exc) or "block size" in str(exc):
        return (f"a row is longer than {4 * limit:,} bytes (4 x the {limit:,}-byte limit on "
                "one cell); raise the limit with --max-cell-bytes / max_cell_bytes= if the "
                "data is legitimate")
    return str(exc)


def _jsonl_table(path, cols, limit):
    import pyarrow.json as pjson

    try:
        table = pjson.read_json(path, read_options=pjson.ReadOptions(
            block_size=4 * limit))
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise GradscoreError(f"{path}: not readable JSON Lines (one JSON object per line, "
                             f"UTF-8): {_block_hint(exc, limit)}") from None
    _missing(path, table.column_names, cols)
    return table.select(cols)


def _check_text(path, column, name, limit):
    """The rows' text (list of str or None) and a Problem for each unusable row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    t = arr.type
    n = len(arr)
    problems = []

    def add(rows, reason):
        for r in np.asarray(rows).tolist():
            problems.append(Problem(str(r), f"row {r}: column '{name}' {reason}",
                                    "text", int(r)))

    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)):
        if pa.types.is_null(t):
            add(np.arange(n), "is empty (null)")
            return [None] * n, problems
        # A column of numbers, lists...: no row holds text.
        add(np.arange(n), f"is not a string (type {t})")
        return [None] * n, problems
    nulls = np.asarray(pc.is_null(arr))
    add(np.flatnonzero(nulls), "is empty (null)")
    sizes = np.asarray(pc.binary_length(arr).fill_null(0))
    too_big = np.zeros(n, bool)
    for r in np.flatnonzero(sizes > limit).tolist():
        add([r], check_text_size(int(sizes[r]), limit=limit))
        too_big[r] = True
    binary = pa.types.is_binary(t) or pa.types.is_large_binary(t)
    if binary:
        raw = arr.to_pylist()
        text = [None] * n
        for r, b in enumerate(raw):
            if b is None or too_big[r]:
                continue
            try:
                text[r] = b.decode("utf-8")
            except UnicodeDecodeError as exc:
                add([r], f"is not valid UTF-8 (byte {exc.start}: {b[exc.start:exc.start + 4]!r})")
    else:
        text = arr.to_pylist()
        for r in np.flatnonzero(too_big).tolist():
            text[r] = None
    empty = [r for r, s in enumerate(text) if s is not None and not s.strip()]
    add(empty, "is empty (only whitespace)" if any(text[r] for r in empty) else "is empty")
    return text, problems


def _labels(path, column, name, names):
    """``(labels int64, class names, problems)``: ints or strings; bad rows are problems."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    t = arr.type
    n = len(arr)
    problems = []
    nulls = np.asarray(pc.is_null(arr))
    labels = np.full(n, -1, dtype=np.int64)
    if pa.types.is_integer(t):
        vals = np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64)
        labels[:] = vals
        high = len(names) if names else None
        bad = (~nulls) & ((vals < 0) | ((vals >= high) if high else False))
        rule = f"in [0, {high}) (its ClassLabel has {high} names)" if high else ">= 0"
        for r in np.flatnonzero(bad).tolist():
            problems.append(Problem(str(r), f"row {r}: label {vals[r]} is out of range; "
                                            f"column '{name}' must be {rule}", "label", r))
        ok = ~nulls & ~bad
        if names is None:
            names = [str(i) for i in range(int(vals[ok].max()) + 1 if ok.any() else 0)]
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        vals = arr.to_pylist()
        names = sorted({v for v in vals if v is not None})
        pos = {v: i for i, v in enumerate(names)}
        labels[:] = [pos.get(v, -1) for v in vals]
    else:
        raise GradscoreError(f"{path}: column '{name}' must hold integer or string class "
                             f"labels; got type {t}")
    for r in np.flatnonzero(nulls).tolist():
        problems.append(Problem(str(r), f"row {r}: column '{name}' is empty (null); every "
                                        "example needs a label", "label", r))
    labels[nulls] = 0
    labels[labels < 0] = 0          # rows already problems; never used
    if not names:
        raise GradscoreError(f"{path}: column '{name}' holds no usable label")
    return labels, list(names), problems


def _ids(path, column, name):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise GradscoreError(f"{path}: column '{name}' must hold int or string ids; got "
                             f"type {t}")
    nulls = np.flatnonzero(np.asarray(pc.is_null(column)))
    if nulls.size:
        raise GradscoreError(f"{path}: column '{name}' is empty (null) in {format_rows(nulls)}")
    vals = column.to_pylist()
    ids = np.array(vals, dtype=np.int64 if pa.types.is_integer(t) else object)
    return ids, repeated_ids(ids, name)


# ------------------------------------------------------------------ tokenising

def load_tokenizer(tokenizer_path, model_path, *, max_cell_bytes=None):
    """``(tokenizers.Tokenizer, path)`` from ``tokenizer.json`` (default: beside the model),
    refused before reading when over ``TOKENIZER_CELLS`` times the cell limit."""
    path = tokenizer_path or os.path.join(os.path.dirname(os.path.abspath(model_path)),
                                          "tokenizer.json")
    if not os.path.isfile(path):
        raise GradscoreError(f"{path}: no tokenizer.json; a text model needs the tokenizer it "
                             "was trained with: put tokenizer.json beside the model or name it "
                             "with --tokenizer")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise GradscoreError(f"tokenising text needs the 'tokenizers' package ({exc}); pip "
                             "install 'gradscore[audit]'") from None
    check_file_bytes(path, what="tokenizer.json",
                     limit=TOKENIZER_CELLS * _cell_limit(max_cell_bytes))
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except UnicodeDecodeError as exc:
        raise GradscoreError(f"{path}: not a tokenizer.json (not UTF-8 text: {exc})") from None
    except ValueError as exc:
        raise GradscoreError(f"{path}: not a tokenizer.json (not JSON: {exc})") from None
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises Exception with serde's message
        raise GradscoreError(f"{path}: not a tokenizer.json the 'tokenizers' library reads: "
                             f"{exc}") from None
    return tok, path


class TextBatcher:
    """Tokenise batches of text for one text encoder: padded per batch, truncated, counted.

    ``batch(texts)`` returns ``(inputs, reasons)``: the model's inputs for
    the rows whose reason is None, and for each row None or why it cannot
    be used (a token id outside the model's vocabulary).
    """

    def __init__(self, tok, tok_path, enc, *, where=""):
        self.tok, self.enc, self.where = tok, enc, where
        vocab = tok.get_vocab_size(with_added_tokens=True)
        if enc.vocab_size is not None and vocab > enc.vocab_size:
            raise GradscoreError(
                f"{tok_path}: the tokenizer has {vocab} tokens but the model's token "
                f"embedding table ({enc.model_path}) has {enc.vocab_size} rows: this is not "
                "the model's tokenizer (ids past the table would fail or read garbage); give "
                "the tokenizer.json it was trained with (--tokenizer)")
        # The tokenizer's own settings, read once (before padding and
        # truncation are set here).
        spec = json.loads(tok.to_str())
        trunc = (spec.get("truncation") or {}).get("max_length")
        if enc.max_length is not None:
            max_length, source = enc.max_length, "the model's input length"
        elif trunc:
            max_length, source = int(trunc), "the tokenizer's truncation setting"
        else:
            max_length, source = DEFAULT_MAX_LENGTH, "default (neither model nor tokenizer " \
                                                     "fixes one)"
        pad = tok.padding or {}
        pad_id = pad.get("pad_id")
        pad_token = pad.get("pad_token")
        if pad_id is None:
            for t in ("[PAD]", "<pad>", "<PAD>"):
                if tok.token_to_id(t) is not None:
                    pad_id, pad_token = tok.token_to_id(t), t
                    break
        if pad_id is None:
            pad_id, pad_token = 0, tok.id_to_token(0) or "[PAD]"
        tok.enable_truncation(max_length)
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token)   # to each batch's longest
        self.max_length = max_length
        unk = (spec.get("model") or {}).get("unk_token")
        self.unk_id = tok.token_to_id(unk) if isinstance(unk, str) else None
        self.n_tokens = self.n_unknown = 0
        self.info = {"tokenizer": tok_path, "vocab_size": vocab, "max_length": max_length,
                     "max_length_from": source, "padding": "per batch (longest row)",
                     "pad_token": pad_token, "pooling": enc.pooling, "truncated": 0,
                     "unknown_share": None}

    def batch(self, texts):
        enc = self.tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        reasons = [None] * len(enc)
        if self.enc.vocab_size is not None:
            for i in np.flatnonzero((ids >= self.enc.vocab_size).any(axis=1)).tolist():
                bad = int(ids[i][ids[i] >= self.enc.vocab_size][0])
                reasons[i] = (f"token id {bad} is past the model's embedding table "
                              f"({self.enc.vocab_size} rows): the tokenizer does not match "
                              "the model's vocabulary")
        ok = np.array([r is None for r in reasons], dtype=bool)
        self.info["truncated"] += sum(1 for e, good in zip(enc, ok) if good and e.overflowing)
        if self.unk_id is not None:
            # A tokenizer that is not the model's (or text in another language)
            # shows as many unknown tokens; said once the run is done.
            self.n_tokens += int(mask[ok].sum())
            self.n_unknown += int(((ids[ok] == self.unk_id) & (mask[ok] > 0)).sum())
            self.info["unknown_share"] = self.n_unknown / max(self.n_tokens, 1)
        x = {"input_ids": ids[ok], "attention_mask": mask[ok], "token_type_ids": types[ok]}
        return x, reasons
