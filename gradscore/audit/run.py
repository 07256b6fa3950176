"""``gradscore audit``: dataset + ONNX model in, report folder out.

The stages, each in its own module::

    sources (list, check) -> decode (Pillow) -> encoder (ONNX Runtime)
      -> probe (cross-fitted head, with --probe) -> export (schema v1)
      -> score -> report

Everything is written into a staging folder inside the output folder and
moved into place only when every stage has succeeded, ``keep.txt`` last: a
run that fails (a hostile file, a model that does not fit the data) leaves
an earlier good result in the folder as it was, and no new keep-list.

The folder receives

``export.h5``
    the schema-v1 export (labels, logits, features, ids, class names);
``keep.txt`` / ``keep.json``
    ids to keep (sorted, one per line) / the same with provenance: class
    names, the probe, the skipped and ignored files, every parameter;
``scores.csv``
    per example: id, label, score (higher = more typical), cluster_size,
    flagged, decision, and for the flagged rows suggested_label,
    suggestion_confidence and signal (:mod:`gradscore.review`);
``report.html``
    the self-contained report.
"""

import os
import shutil
import tempfile

import numpy as np

from .._version import __version__
from ..scoring.files import run_metadata, score_files, sha256_file
from ..errors import GradscoreError
from ..io import write_keeplist
from .decode import MAX_PIXELS, thumbnail
from .export import content_of, extract_dataset, open_for_audit

EXPORT, KEEP, KEEP_JSON, SCORES, REPORT = ("export.h5", "keep.txt", "keep.json", "scores.csv",
                                           "report.html")
#: Written last, so that its presence means the rest is there.
ORDER = (EXPORT, SCORES, KEEP_JSON, REPORT, KEEP)

#: The audit's default scoring method, chosen from the measurement in
#: docs/audit.md (``gradscore score``'s default stays EPIC).
DEFAULT_METHOD = "label-support"

#: Options of :func:`open_for_audit`.
SOURCE_OPTIONS = ("image_column", "label_column", "id_column", "split", "max_cell_bytes",
                  "text_column", "features_column", "labels_path")
#: Options of :func:`extract_dataset` that :func:`audit` passes through.
EXTRACT_OPTIONS = ("logits_output", "features_output", "image_column", "label_column",
                   "id_column", "split", "size", "layout", "mean", "std", "max_pixels",
                   "skip_bad", "n_folds", "probe_alpha", "batch_size", "device", "workers",
                   "max_cell_bytes", "text_column", "tokenizer", "pooling", "features_column",
                   "labels_path")


def _prepare(report_dir):
    report_dir = os.fspath(report_dir)
    parent = os.path.dirname(os.path.abspath(report_dir))
    if not os.path.isdir(parent):
        raise GradscoreError(f"{report_dir}: parent folder {parent} does not exist")
    if os.path.exists(report_dir) and not os.path.isdir(report_dir):
        raise GradscoreError(f"{report_dir}: exists and is not a folder")
    made = not os.path.exists(report_dir)
    os.makedirs(report_dir, exist_ok=True)
    return report_dir, made


def audit(model_path, data_path, report_dir, *, probe=False, method=DEFAULT_METHOD,
          per_class=8, image_shape=None, progress=False, random_state=0, **options):
    """Audit a dataset with an ONNX model: export, score, keep-list and report.

    Parameters
    ----------
    model_path : str or path-like or None
        ``.onnx`` model (treated as untrusted): a classifier over the
        dataset's classes, or with ``probe=True`` any encoder; with
        ``text_column``, a text model (:mod:`gradscore.audit.text`).
        None: ``data_path`` holds precomputed embeddings
        (:mod:`gradscore.audit.embeddings`), probed unless it holds logits.
    data_path : str or path-like
        Image folder, Hugging Face dataset folder, Parquet file(s), or
        ``.h5``/``.npz`` with ``inputs`` and ``labels``; a text dataset
        (with ``text_column``: also CSV, JSON Lines); or an embeddings file.
    report_dir : str or path-like
        Folder to write into; made if missing (its parent must exist).
    probe : bool, default=False
        Fit a cross-fitted logistic head on the model's features.
    method : str, default=DEFAULT_METHOD
        Scoring method (:data:`gradscore.scoring.methods.METHODS`).
    per_class : int, default=8
        Most suspicious examples shown per class.
    image_shape : tuple of int, default=None
        Show flat array inputs as images of this shape.
    progress : bool, default=False
    random_state : int, default=0
        Seeds the probe's folds and randomised neighbour search.
    **options
        Extraction options (:data:`EXTRACT_OPTIONS`, see
        :func:`gradscore.audit.export.extract_dataset`) and scoring
        parameters (passed to :func:`gradscore.score`: ``k``, ...).

    Returns
    -------
    out : dict
        Paths written (``report``, ``export``, ``keep``, ``keep_json``,
        ``scores``), ``extract`` (what :func:`extract_dataset` returned,
        without its row map) and ``summary`` (the JSON summary: counts,
        parameters, class names, probe, skipped and ignored files).
    """
    from ..report.html import write_report

    extract_opts = {k: options.pop(k) for k in list(options) if k in EXTRACT_OPTIONS}
    report_dir, made = _prepare(report_dir)
    stage = tempfile.mkdtemp(prefix=".gradscore-audit-", dir=report_dir)
    staged = {name: os.path.join(stage, name) for name in ORDER}
    try:
        src = open_for_audit(model_path, data_path, **{k: extract_opts[k]
                                                       for k in SOURCE_OPTIONS
                                                       if k in extract_opts})
        info = extract_dataset(model_path, data_path, staged[EXPORT], probe=probe,
                               random_state=random_state, work_dir=stage, progress=progress,
                               source=src, **extract_opts)
        result, epoch, _ = score_files(staged[EXPORT], output=staged[KEEP],
                                       scores_path=staged[SCORES], progress=progress,
                                       method=method, random_state=random_state, **options)
        rows = info.pop("rows")
        summary = _summary(result, info, model_path, data_path, probe, method)
        meta = dict(run_metadata(result, epoch), audit=summary)
        write_keeplist(staged[KEEP_JSON], epoch.ids[result.keep], metadata=meta)
        images = _image_reader(src, rows, extract_opts)
        write_report(staged[REPORT], result=result, epoch=epoch, model_path=model_path,
                           data_path=data_path, extract_info=info, summary=summary,
                           files={k: staged[v] for k, v in _FILE_KEYS.items()},
                           images=images, image_shape=image_shape, per_class=per_class,
                           texts=_text_reader(src, rows))
        for name in ORDER:
            os.replace(staged[name], os.path.join(report_dir, name))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if made:
            try:
                os.rmdir(report_dir)
            except OSError:
                pass
        raise
    shutil.rmtree(stage, ignore_errors=True)
    paths = {k: os.path.join(report_dir, v) for k, v in _FILE_KEYS.items()}
    paths["report"] = os.path.join(report_dir, REPORT)
    return dict(paths, extract=info, summary=summary)


_FILE_KEYS = {"keep": KEEP, "keep_json": KEEP_JSON, "scores": SCORES, "export": EXPORT}


def _summary(result, info, model_path, data_path, probe, method):
    """The JSON summary: what was audited, how, and what came out."""
    s = result.summary()
    return {
        "gradscore_version": __version__,
        "model": None if model_path is None else os.fspath(model_path),
        "model_sha256": None if model_path is None else sha256_file(model_path),
        "data": os.fspath(data_path), "source": info["source"],
        "n_listed": info["n_listed"], "n": s["n"], "kept": s["kept"], "dropped": s["dropped"],
        "method": method, "probe": info.get("probe"),
        "mode": "probe" if info.get("probe") else "classifier",
        "head_agreement": info.get("head_agreement"),
        "class_names": info["class_names"],
        "features": {"tensor": info.get("features_output"), "from": info.get("features_from"),
                     "n_features": info.get("n_features")},
        "image": info.get("image"), "text": info.get("text"), "device": info.get("device"),
        "skipped": info["skipped"], "ignored": info["ignored"],
    }


def _image_reader(src, rows, opts):
    """Thumbnails of export rows (RGB uint8 arrays), or None for array files.

    Text and embeddings have no picture: every row gets None (and the
    report shows the text, or nothing, instead of reading inputs).
    """
    if content_of(src) in ("text", "features"):
        return lambda export_rows: [None] * len(export_rows)
    if not src.images:
        return None
    max_pixels = opts.get("max_pixels") or MAX_PIXELS

    def read(export_rows):
        payloads = src.payloads(rows[np.asarray(export_rows, dtype=np.int64)])
        return [thumbnail(p, max_pixels=max_pixels) for p in payloads]

    return read


def _text_reader(src, rows):
    """The text of export rows (as the dataset holds it), or None for other content."""
    if content_of(src) != "text":
        return None

    def read(export_rows):
        return src.payloads(rows[np.asarray(export_rows, dtype=np.int64)])

    return read
