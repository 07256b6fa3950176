"""Dataset -> decoder -> encoder -> (probe) -> schema-v1 export.

:func:`extract_dataset` streams a dataset through an ONNX model in batches:
memory holds one batch of decoded images, never the dataset. Without a
probe the model's logits and features go straight to the export. With
``probe=True`` the features go to a temporary memory-mapped file, the
cross-fitted head (:mod:`gradscore.audit.probe`) gives each example logits
from a head that never saw it, and the export is written from those.

The export carries the class names (root attribute ``class_names``), so a
label can always be read back as the class it means.
"""

from dataclasses import dataclass, field
import functools
import os
import tempfile
import warnings

import numpy as np

from .._progress import progress_bar
from .._validation import check_int
from ..errors import GradscoreError, GradscoreWarning
from ..io import EpochWriter
from ..onnx.encoder import Encoder
from .decode import MAX_PIXELS, Decoder, image_spec
from .probe import cross_fit_probe
from .sources import open_source
from .text import UNKNOWN_WARN

#: Head agreement below ``chance + NEAR_CHANCE * (1 - chance)`` is "near
#: chance" (chance: the largest class's share): a quarter of the way from
#: guessing the largest class to perfect.
NEAR_CHANCE = 0.25


@dataclass
class Skipped:
    """Rows and classes left out under ``skip_bad``, and files not examples."""

    skipped: list = field(default_factory=list)
    ignored: list = field(default_factory=list)


def _refuse(src, problem):
    where = f" ({problem.where})" if problem.where else ""
    raise GradscoreError(f"{src.path}: {problem.id}{where}: {problem.reason}. Stopped; nothing "
                         "was written. --skip-bad skips such files and lists them in the "
                         "report")


def check_head(enc, src, model_path):
    """Refuse a classifier whose output count is not the dataset's class count."""
    k = enc.num_outputs
    if k is None:
        return
    exact = src.kind in ("image-folder",) or (src.kind in ("hf-dataset", "parquet") and
                                              not all(n == str(i) for i, n in
                                                      enumerate(src.class_names)))
    if (exact and k != src.num_classes) or k < src.num_classes:
        raise GradscoreError(
            f"{model_path or src.path}: the model's output {enc.logits_name!r} has {k} columns "
            f"but {src.path} has {src.num_classes} classes (from {src.describe()}). Without "
            "--probe the model must be a classifier over this dataset's own classes (its "
            "output i is label i); a head over other classes pairs labels with the wrong "
            "classes. Use --probe to treat the model as an encoder and fit a head on its "
            "features")


def head_agreement(labels, pred):
    """``(agreement, chance, near_chance)`` of a head's argmax with the labels."""
    agreement = float(np.mean(pred == labels))
    chance = float(np.bincount(labels).max() / labels.size)
    return agreement, chance, agreement < chance + NEAR_CHANCE * (1.0 - chance)


def extract_dataset(model_path, data_path, output, *, probe=False, logits_output=None,
                    features_output=None, image_column="image", label_column="label",
                    id_column=None, split=None, size=None, layout=None, mean=None, std=None,
                    max_pixels=MAX_PIXELS, skip_bad=False, n_folds=5, probe_alpha=1e-3,
                    batch_size=256, device="auto", workers=None, epoch=None,
                    random_state=0, work_dir=None, progress=False, source=None,
                    max_cell_bytes=None, text_column=None, tokenizer=None, pooling=None,
                    features_column=None, labels_path=None):
    """Run an ONNX model over a dataset and write a schema-v1 export.

    Parameters
    ----------
    model_path : str or path-like
        ``.onnx`` model, treated as untrusted.
    data_path : str or path-like
        Image folder, Hugging Face dataset folder, Parquet file(s), or
        ``.h5``/``.npz`` (see :func:`gradscore.audit.sources.open_source`).
    output : str or path-like
        Export to write, atomically.
    probe : bool, default=False
        Treat the model as an encoder and fit a cross-fitted logistic head
        on its features (see :func:`gradscore.audit.probe.cross_fit_probe`).
        Without it the model must be a classifier over the dataset's classes.
    logits_output, features_output : str, default=None
        See :class:`gradscore.onnx.encoder.Encoder`.
    image_column, label_column, id_column, split : str
        See :func:`gradscore.audit.sources.open_source`.
    size, layout, mean, std, max_pixels
        See :func:`gradscore.audit.decode.image_spec`.
    skip_bad : bool, default=False
        Skip unusable files (and repeated ids, empty classes) and list them,
        instead of stopping at the first with an error.
    n_folds : int, default=5
    probe_alpha : float, default=1e-3
        The probe's L2 penalty.
    batch_size : int, default=256
    device : {"auto", "cpu", "cuda"}, default="auto"
    workers : int, default=None
        Decoding threads.
    epoch : int, default=None
    random_state : int, default=0
        Seeds the probe's folds.
    work_dir : str, default=None
        Folder for the probe's temporary feature file (default: the
        output's folder).
    progress : bool, default=False
    source : Source, default=None
        ``data_path`` already listed by :func:`open_for_audit` (with the
        same column options), to list it once only.
    max_cell_bytes : int or str, default=None
        Bytes one cell of a Parquet / Hugging Face / text input may take
        (default :data:`gradscore.limits.MAX_CELL_BYTES`, 8 MiB).
    text_column : str, default=None
        Audit text: the column of ``data_path`` holding it (Hugging Face
        dataset, Parquet, CSV, JSON Lines); ``model_path`` is then an ONNX
        text encoder or classifier (see :mod:`gradscore.audit.text`).
    tokenizer : str, default=None
        Text: ``tokenizer.json`` (default: the one beside the model).
    pooling : {"mean", "cls", "output"}, default=None
        Text: how features come from the model (default: ``mean`` when it
        outputs a last hidden state, else ``output``).
    features_column, labels_path : str, default=None
        Precomputed embeddings (``model_path=None``): see
        :func:`gradscore.audit.embeddings.open_features`.

    Returns
    -------
    info : dict
        ``output``, ``n`` (rows written), ``n_listed``, ``source`` (kind),
        ``class_names``, ``skipped`` and ``ignored`` (lists of
        ``{id, reason, where}``), ``rows`` (each written row's row in the
        listed dataset), the encoder's ``device``, ``providers``,
        ``logits_output``, ``features_output``, ``features_from``,
        ``image`` (how images were decoded), ``num_classes``,
        ``n_features``, and ``probe`` (its summary) or ``head_agreement``.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    data_path, output = map(os.fspath, (data_path, output))
    model_path = None if model_path is None else os.fspath(model_path)
    inputs = [p for p in (model_path, data_path, tokenizer, labels_path) if p is not None]
    if os.path.abspath(output) in [os.path.abspath(p) for p in inputs]:
        raise GradscoreError(f"{output}: output would overwrite an input file")
    src = source if source is not None else open_for_audit(
        model_path, data_path, image_column=image_column, label_column=label_column,
        id_column=id_column, split=split, max_cell_bytes=max_cell_bytes,
        text_column=text_column, features_column=features_column, labels_path=labels_path)
    content = content_of(src)
    report = Skipped(ignored=[p.as_dict() for p in src.ignored])
    keep = np.ones(src.n, dtype=bool)
    for p in src.problems:
        if not skip_bad:
            _refuse(src, p)
        report.skipped.append(p.as_dict())
        if p.row is not None:
            keep[p.row] = False
    if content != "images" and any(v is not None for v in (size, layout, mean, std)):
        raise GradscoreError(f"{data_path}: --size, --layout, --mean and --std apply to "
                             f"images; this dataset holds {content}")
    text_info = None
    if content == "features":
        # No model: the file's own logits, or (by default) the probe's.
        probe = probe or src.logits is None
        enc, prep = _Precomputed(src), None
        image_info = None
    elif content == "text":
        from ..onnx.text import TextEncoder
        from .text import TextBatcher, load_tokenizer

        tok, tok_path = load_tokenizer(tokenizer, model_path, max_cell_bytes=max_cell_bytes)
        enc = TextEncoder(model_path, logits_output=logits_output,
                          features_output=features_output, probe=probe, pooling=pooling,
                          device=device)
        batcher = TextBatcher(tok, tok_path, enc, where=src.path)
        text_info = batcher.info
        prep = lambda: batcher  # noqa: E731  (nothing to start or close)
        image_info = None
    else:
        enc = Encoder(model_path, logits_output=logits_output,
                      features_output=features_output, features=True, probe=probe,
                      device=device)
        if src.images:
            spec = image_spec(enc.dims, enc.input_dtype, size=size, layout=layout, mean=mean,
                              std=std, max_pixels=max_pixels, where=model_path)
            image_info = spec.describe()
            prep = functools.partial(Decoder, spec, workers)
        else:
            from ..onnx.extract import _check_shape
            _check_shape(enc.dims, src.input_shape, enc.input_name, model_path, data_path)
            prep, image_info = None, None
    if not probe:
        check_head(enc, src, model_path)
    info = dict(enc.info, output=output, n_listed=src.n, source=src.kind,
                class_names=list(src.class_names), image=image_info, text=text_info)
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise GradscoreError(f"{data_path}: no examples to audit")
    work_dir = work_dir or os.path.dirname(os.path.abspath(output))
    stream = _Stream(src, enc, prep, rows, batch_size, skip_bad, report)
    attrs = {"class_names": list(src.class_names)}
    if probe:
        written, labels, ids, feats, tmp = stream.to_memmap(work_dir, progress)
        try:
            res = cross_fit_probe(labels, feats, num_classes=src.num_classes, n_folds=n_folds,
                                  alpha=probe_alpha, random_state=random_state)
            with EpochWriter(output, n_rows=labels.size, epoch=epoch, attrs=attrs) as w:
                for a in range(0, labels.size, 65536):
                    b = a + 65536
                    w.append(labels[a:b], res.logits[a:b], np.asarray(feats[a:b]), ids[a:b])
        finally:
            del feats
            os.unlink(tmp)
        info["probe"] = res.summary()
        n_features = w.n_features
    else:
        written, labels, pred, n_features = stream.to_export(output, epoch, attrs, progress)
        what = "the file's logits" if content == "features" else "the model's argmax"
        agreement, chance, near = head_agreement(labels, pred)
        info["head_agreement"] = {"agreement": agreement, "chance": chance,
                                  "near_chance": near}
        if near:
            warnings.warn(
                f"{model_path or src.path}: {what} agrees with {src.path}'s labels on only "
                f"{agreement:.1%} of the examples (guessing the largest class gives "
                f"{chance:.1%}); its head may not be this dataset's. If it is a generic "
                "model, use --probe", GradscoreWarning, stacklevel=2)
    share = (text_info or {}).get("unknown_share")
    if share is not None and share > UNKNOWN_WARN:
        warnings.warn(f"{text_info['tokenizer']}: {share:.0%} of the tokens of {src.path} are "
                      "the tokenizer's unknown token; it may not be the model's tokenizer, "
                      "or the text may not be what the model was trained on",
                      GradscoreWarning, stacklevel=2)
    info.update(n=int(labels.size), rows=written, skipped=report.skipped,
                ignored=report.ignored, num_classes=src.num_classes,
                n_features=None if n_features is None else int(n_features))
    return info


#: What a source's payloads are, by ``content``: the noun for messages.
CONTENT_WORD = {"images": "image", "inputs": "row", "text": "text", "features": "row"}


def content_of(src):
    """``images``, ``inputs`` (model inputs in an array file), ``text`` or ``features``."""
    return getattr(src, "content", None) or ("images" if src.images else "inputs")


def open_for_audit(model_path, data_path, *, image_column="image", label_column="label",
                   id_column=None, split=None, max_cell_bytes=None, text_column=None,
                   features_column=None, labels_path=None):
    """List ``data_path`` as the audit reads it: images/arrays, text, or embeddings.

    ``model_path=None`` means ``data_path`` holds precomputed embeddings
    (:func:`gradscore.audit.embeddings.open_features`); ``text_column``
    means a text dataset (:func:`gradscore.audit.text.open_text`);
    otherwise :func:`gradscore.audit.sources.open_source`.
    """
    if model_path is None:
        if text_column is not None:
            raise GradscoreError("--text-column needs a MODEL (an ONNX text encoder); "
                                 "--features audits embeddings without one")
        from .embeddings import open_features
        return open_features(data_path, features_column=features_column,
                             label_column=label_column, id_column=id_column,
                             labels_path=labels_path)
    if features_column is not None or labels_path is not None:
        raise GradscoreError("--features-column and --labels apply to --features FILE "
                             "(embeddings, no MODEL)")
    if text_column is not None:
        from .text import open_text
        return open_text(data_path, text_column=text_column, label_column=label_column,
                         id_column=id_column, split=split, max_cell_bytes=max_cell_bytes)
    if os.fspath(data_path).lower().endswith((".csv", ".jsonl", ".json")):
        raise GradscoreError(f"{data_path}: CSV and JSON Lines are read as text datasets; "
                             "name the text with --text-column (MODEL: an ONNX text model)")
    return open_source(data_path, image_column=image_column, label_column=label_column,
                       id_column=id_column, split=split, max_cell_bytes=max_cell_bytes)


class _Precomputed:
    """Stands in for the encoder when the features are in the file already."""

    def __init__(self, src):
        self.src = src
        self.num_outputs = None if src.logits is None else int(src.logits.shape[1])
        self.logits_name = "logits" if src.logits is not None else None
        self.info = {"device": None, "providers": [], "reason": "no model",
                     "logits_output": self.logits_name, "features_output": None,
                     "features_from": src.features_from, "input_name": None}

    def run(self, x, *, row_offset=0, rows=None):
        logits = None if self.src.logits is None else self.src.logits[rows]
        return logits, x


def _where(src, row):
    """An example, as messages name it: its id (a path, for image files), and its row."""
    if src.kind == "image-folder":
        return str(src.ids[row])
    return f"row {row} (id {src.ids[row]})" if src.ids[row] != row else f"row {row}"


def _things(src):
    return "files" if src.images else "rows"


class _Stream:
    """The listed rows, prepared (decoded, tokenised) and encoded batch by batch."""

    def __init__(self, src, enc, prep, rows, batch_size, skip_bad, report):
        self.src, self.enc, self.prep, self.rows = src, enc, prep, rows
        self.batch_size, self.skip_bad = batch_size, skip_bad
        self.report = report

    def batches(self, progress):
        """Yield ``(source_rows, logits, features)`` for each batch of usable rows."""
        src = self.src
        word = CONTENT_WORD[content_of(src)]
        dec = self.prep() if self.prep is not None else None
        try:
            with progress_bar(total=self.rows.size, enabled=progress, desc="audit",
                              unit="img" if src.images else "row") as bar:
                for a in range(0, self.rows.size, self.batch_size):
                    rows = self.rows[a:a + self.batch_size]
                    payloads = src.payloads(rows)
                    if dec is None:
                        x, ok = np.asarray(payloads), np.ones(rows.size, dtype=bool)
                    else:
                        x, reasons = dec.batch(payloads)
                        ok = np.array([r is None for r in reasons], dtype=bool)
                        for r, why in zip(rows.tolist(), reasons):
                            if why is None:
                                continue
                            if not self.skip_bad:
                                raise GradscoreError(
                                    f"{src.path}: {_where(src, r)}: {why}. Stopped; nothing "
                                    f"was written. --skip-bad skips such {_things(src)} and "
                                    "lists them in the report")
                            self.report.skipped.append(
                                {"id": str(src.ids[r]), "reason": why, "where": word})
                    bar.update(rows.size)
                    if not ok.any():
                        continue
                    good = rows[ok]
                    logits, feats = self.enc.run(x, row_offset=int(good[0]), rows=good)
                    yield good, logits, feats
        finally:
            if dec is not None and hasattr(dec, "close"):
                dec.close()

    def to_export(self, output, epoch, attrs, progress):
        src = self.src
        written, labels, preds = [], [], []
        with EpochWriter(output, epoch=epoch, attrs=attrs) as w:
            for good, logits, feats in self.batches(progress):
                w.append(src.labels[good], logits, feats, src.ids[good])
                written.append(good)
                labels.append(src.labels[good])
                preds.append(np.argmax(logits, axis=1))
            if not written:
                w.abort()
                raise GradscoreError(f"{src.path}: no usable example (all were skipped)")
        return (np.concatenate(written), np.concatenate(labels), np.concatenate(preds),
                w.n_features)

    def to_memmap(self, work_dir, progress):
        """Features of every usable row in a temporary ``.npy`` (memory-mapped)."""
        src = self.src
        fd, tmp = tempfile.mkstemp(prefix=".gradscore-features-", suffix=".npy", dir=work_dir)
        os.close(fd)
        feats, m, written = None, 0, []
        try:
            for good, _, f in self.batches(progress):
                if feats is None:
                    feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                      shape=(self.rows.size, f.shape[1]))
                feats[m:m + good.size] = f
                m += good.size
                written.append(good)
            if feats is None:
                raise GradscoreError(f"{src.path}: no usable example (all were skipped)")
            feats.flush()
        except BaseException:
            del feats
            os.unlink(tmp)
            raise
        written = np.concatenate(written)
        return written, src.labels[written], src.ids[written], feats[:m], tmp
