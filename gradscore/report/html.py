"""Render one scored epoch as a self-contained HTML page.

Everything the page shows is inside it: CSS inline, plots and thumbnails as
base64 PNG ``data:`` URIs drawn with matplotlib's Agg canvas (no pyplot, so
no global backend is touched). No script, no remote resource. The page is
the Jinja2 template ``templates/audit.html.j2`` rendered with autoescaping,
so every string from the data (ids, paths, tensor names) is HTML-escaped.
"""

import base64
from datetime import datetime, timezone
import io
import os

import numpy as np

from .._version import __version__
from ..errors import GradscoreError
from ..io._atomic import atomic_path
from ..result import DROPPED
from ..scoring.methods import METHODS
from ._templates import render

#: Classes drawn in the score-distribution grid; beyond this, those with
#: most drops.
MAX_PLOTTED_CLASSES = 20


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise GradscoreError(f"the HTML report needs matplotlib ({exc}); install it "
                             "with: pip install 'gradscore[report]'") from None
    return Figure(**kw)


def image_shape_of(input_shape, image_shape=None):
    """How to show one example's input as an image, or None when it is not one.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one example (without the batch axis).
    image_shape : tuple of int, default=None
        Explicit ``(H, W)`` or ``(H, W, 3)`` for flat inputs.

    Returns
    -------
    layout : tuple or None
        ``("hw", H, W)``, ``("chw", C, H, W)`` or ``("hwc", H, W, C)``.
    """
    s = tuple(int(v) for v in input_shape)
    if image_shape is not None:
        image_shape = tuple(int(v) for v in image_shape)
        if int(np.prod(image_shape)) != int(np.prod(s)):
            raise GradscoreError(f"'image_shape' {image_shape} holds {int(np.prod(image_shape))}"
                                 f" values but one input has shape {s} "
                                 f"({int(np.prod(s))} values)")
        if len(image_shape) == 2:
            return ("hw",) + image_shape
        if len(image_shape) == 3 and image_shape[2] in (1, 3):
            return ("hwc",) + image_shape
        raise GradscoreError(f"'image_shape' must be (H, W) or (H, W, 1|3); got {image_shape}")
    if len(s) == 2 and min(s) >= 4:
        return ("hw",) + s
    if len(s) == 3 and s[0] in (1, 3) and min(s[1:]) >= 4:
        return ("chw",) + s
    if len(s) == 3 and s[2] in (1, 3) and min(s[:2]) >= 4:
        return ("hwc",) + s
    return None


def _to_image(x, layout):
    kind = layout[0]
    x = np.asarray(x, dtype=np.float64)
    if kind == "hw":
        img = x.reshape(layout[1:])
    elif kind == "chw":
        img = np.moveaxis(x.reshape(layout[1:]), 0, -1)
    else:
        img = x.reshape(layout[1:])
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    lo, hi = np.nanmin(img), np.nanmax(img)
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.clip(np.nan_to_num(img), 0.0, 1.0)


def _thumb(x, layout):
    from matplotlib.image import imsave

    buf = io.BytesIO()
    img = x if layout is None else _to_image(x, layout)
    imsave(buf, img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0,
           format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _method(result):
    """The scored method's record (its score's name and meaning, its threshold line)."""
    return METHODS[result.params.get("method", "epic")]


def drop_thresholds(result, labels):
    """The score line drawn per class, and what it means.

    For ``label-support``, its fixed threshold. For ``knn-density`` without
    ``drop_fraction``, the robust rule's own threshold
    ``median - z * 1.4826 * MAD`` (None when the MAD is 0).
    Otherwise the highest score among the class's dropped examples (None
    when none was dropped): EPIC drops by cluster size, not by score, so
    there the line marks the boundary the decisions happened to draw.

    Returns
    -------
    thresholds : dict of int to float or None
    meaning : str
    """
    p, method = result.params, _method(result)
    if method.threshold_line == "fixed":
        t = method.fixed_threshold
        return ({c.label: t for c in result.classes}, f"{method.name} threshold {t}")
    robust = method.threshold_line == "robust" and p.get("drop_fraction") is None
    out = {}
    for c in result.classes:
        rows = np.flatnonzero(labels == c.label)
        s = result.scores[rows]
        finite = np.isfinite(s)
        dropped = result.decision[rows] == DROPPED
        if robust:
            if finite.sum() < 2:
                out[c.label] = None
                continue
            med = np.median(s[finite])
            mad = 1.4826 * np.median(np.abs(s[finite] - med))
            out[c.label] = None if mad == 0 else float(med - p["z_threshold"] * mad)
        else:
            out[c.label] = float(np.max(s[dropped & finite])) if np.any(dropped & finite) \
                else None
    meaning = ("robust threshold median - z * 1.4826 * MAD (z = "
               f"{p.get('z_threshold')})" if robust else
               "highest score among dropped examples")
    return out, meaning


def _distribution_plot(result, labels, thresholds, meaning):
    classes = [c for c in result.classes if c.n_scored >= 2]
    if len(classes) > MAX_PLOTTED_CLASSES:
        classes = sorted(classes, key=lambda c: (-c.dropped, c.label))[:MAX_PLOTTED_CLASSES]
        classes.sort(key=lambda c: c.label)
    if not classes:
        return None
    cols = min(5, len(classes))
    nrows = -(-len(classes) // cols)
    fig = _figure(figsize=(2.3 * cols, 1.9 * nrows + 0.5), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.ravel()[len(classes):]:
        ax.set_visible(False)
    for ax, c in zip(axes.ravel(), classes):
        rows = np.flatnonzero(labels == c.label)
        s = result.scores[rows]
        dec = result.decision[rows]
        ok = np.isfinite(s)
        if not ok.any():
            ax.set_visible(False)
            continue
        bins = np.histogram_bin_edges(s[ok], bins=25)
        ax.hist([s[ok & (dec != DROPPED)], s[ok & (dec == DROPPED)]], bins=bins,
                stacked=True, color=["#5b8def", "#c0392b"], label=["kept", "dropped"])
        t = thresholds.get(c.label)
        if t is not None:
            ax.axvline(t, color="#222", linestyle="--", linewidth=1.2)
        ax.set_title(f"class {c.label}: {c.dropped} of {c.n_scored} dropped", fontsize=9)
        ax.tick_params(labelsize=7)
    handles, names = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper right", fontsize=8, ncols=2)
    fig.suptitle(f"{_method(result).score_name} per class "
                 f"(higher = more typical); dashed: {meaning}",
                 fontsize=10)
    return _png(fig)


def _suspicious(result, labels, c, per_class):
    rows = np.flatnonzero(labels == c)
    s = result.scores[rows]
    dropped = result.decision[rows] == DROPPED
    # Dropped first, then least dense; unscored (NaN) last; ties by row.
    key_s = np.where(np.isfinite(s), s, np.inf)
    order = np.lexsort((rows, key_s, ~dropped))
    return rows[order[:per_class]]


def write_report(path, *, result, epoch, model_path=None, data_path=None,
                 extract_info=None, files=None, image_shape=None, per_class=8,
                 title="gradscore audit", images=None, summary=None, texts=None):
    """Write the audit report for one scored epoch, atomically.

    Parameters
    ----------
    path : str or path-like
        ``.html`` file to write.
    result : ScoreResult
    epoch : Epoch
        The epoch ``result`` was computed from (rows in the same order).
    model_path, data_path : str, default=None
        Shown in the header; ``data_path`` also supplies thumbnails.
    extract_info : dict, default=None
        From :func:`gradscore.onnx.extract` (device, tensor names).
    files : dict of str to str, default=None
        Files to link (``keep``, ``scores``, ``export``), relative to the report.
    image_shape : tuple of int, default=None
        Show flat inputs as images of this shape.
    per_class : int, default=8
        Most suspicious examples listed per class (dropped first, then by
        lowest score).
    title : str, default="gradscore audit"
    images : callable, default=None
        ``images(rows)`` gives, for export rows, the images to show (RGB
        or grey uint8 arrays, None where there is none); used instead of
        reading ``data_path``'s inputs (image folders, Hugging Face
        datasets).
    texts : callable, default=None
        ``texts(rows)`` gives, for export rows, the text to show (a text
        audit): shown escaped and cut to :data:`TEXT_CHARS` characters
        where images show thumbnails.
    summary : dict, default=None
        The audit's JSON summary (:func:`gradscore.audit.audit`): class
        names, the probe, head agreement, skipped and ignored files.

    Returns
    -------
    path : str
    """
    path = os.fspath(path)
    labels = epoch.labels
    info = extract_info or {}
    layout, inputs_for = None, {}
    picks = {c.label: _suspicious(result, labels, c.label, per_class) for c in result.classes}
    if images is not None:
        wanted = np.concatenate([p for p in picks.values()] or [np.zeros(0, np.int64)])
        got = images(wanted) if wanted.size else []
        inputs_for = {int(r): im for r, im in zip(wanted, got) if im is not None}
        layout = "image" if inputs_for else None
    elif data_path is not None:
        from ..onnx.extract import dataset_rows, read_dataset_info, read_inputs

        dinfo = read_dataset_info(data_path)
        layout = image_shape_of(dinfo["input_shape"], image_shape)
        if layout is not None:
            wanted = np.concatenate([p for p in picks.values()] or [np.zeros(0, np.int64)])
            if wanted.size:
                drows = dataset_rows(data_path, epoch.ids[wanted])
                xs = read_inputs(data_path, drows)
                inputs_for = {int(r): x for r, x in zip(wanted, xs)}
    texts_for = {}
    if texts is not None:
        wanted = np.concatenate([p for p in picks.values()] or [np.zeros(0, np.int64)])
        got = texts(wanted) if wanted.size else []
        texts_for = {int(r): shorten_text(t) for r, t in zip(wanted, got)}
    thresholds, meaning = drop_thresholds(result, labels)
    page = render(
        "audit.html.j2", title=title, version=__version__,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **_summary_context(result, epoch, model_path, data_path, info, summary),
        meaning=meaning, plot=_distribution_plot(result, labels, thresholds, meaning),
        score_meaning=_method(result).score_meaning,
        per_class=per_class,
        suspicious=_suspicious_context(result, epoch, picks, inputs_for, layout,
                                       _names(summary), texts_for),
        flagged=flagged_context(result, epoch, _names(summary)),
        files=file_links(path, files, FILE_LABELS), audit=_audit_context(summary))
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
    return path


def _summary_context(result, epoch, model_path, data_path, info, audit=None):
    p = result.params
    summary = result.summary()
    meta = [("model", model_path), ("dataset", data_path),
            ("logits tensor", info.get("logits_output")),
            ("features tensor", info.get("features_output")),
            ("onnxruntime device", f"{info['device']} ({info.get('reason', '')})"
             if info.get("device") else None),
            ("method", f"{p.get('method')} (gradient={p.get('gradient')}, k={p.get('k')}, "
                       f"fraction={p.get('fraction')}, cluster_threshold="
                       f"{p.get('cluster_threshold')}, max_drop_fraction="
                       f"{p.get('max_drop_fraction')})")]
    cards = [("examples", summary["n"]), ("classes", epoch.num_classes),
             ("features", epoch.n_features if epoch.n_features is not None else "none"),
             ("kept", summary["kept"]), ("dropped", summary["dropped"]),
             ("dropped before", summary["dropped_before"])]
    if audit:
        cards = cards[:5]
        if audit.get("probe"):
            cards.append(("probe accuracy (out of fold)", f"{audit['probe']['accuracy']:.1%}"))
        cards.append(("skipped files", len(audit.get("skipped") or [])))
    if result.bad_share is not None:
        cards.append(("estimated bad rows", f"{result.bad_share:.1%}"))
    return {"meta": [(k, v) for k, v in meta if v is not None], "cards": cards,
            "classes": result.classes}


#: Flagged rows listed in the report's table (scores.csv has all of them).
MAX_FLAGGED_ROWS = 5000


def flagged_context(result, epoch, names=None):
    """Every flagged row (up to :data:`MAX_FLAGGED_ROWS`): its label, the suggested
    label, how sure, and which signal flagged it; least sure of its own label first."""
    rows = np.flatnonzero(result.flagged)
    if result.suggested_label is None:
        return {"rows": [], "n": int(rows.size), "shown": 0, "known": False}
    conf = result.suggestion_confidence[rows]
    order = np.lexsort((rows, -np.where(np.isfinite(conf), conf, -1.0)))
    rows = rows[order]

    def name(c):
        return names[c] if names and 0 <= c < len(names) else None

    out = []
    for r in rows[:MAX_FLAGGED_ROWS].tolist():
        lab, sug = int(epoch.labels[r]), int(result.suggested_label[r])
        c = float(result.suggestion_confidence[r])
        out.append({"id": epoch.ids[r], "label": lab, "label_name": name(lab),
                    "suggested": sug if sug >= 0 else None,
                    "suggested_name": name(sug) if sug >= 0 else None,
                    "confidence": f"{c:.2f}" if np.isfinite(c) else "",
                    "signal": str(result.signal[r]),
                    "decision": str(result.decision[r])})
    return {"rows": out, "n": int(rows.size), "shown": len(out), "known": True}


def _names(summary):
    return (summary or {}).get("class_names") or None


def _audit_context(summary):
    """Probe, head agreement, skipped and ignored files (empty without a summary)."""
    if not summary:
        return None
    probe = summary.get("probe")
    agree = summary.get("head_agreement")
    return {
        "probe": probe, "agreement": agree, "image": summary.get("image"),
        "text": summary.get("text"),
        "features": summary.get("features") or {},
        "classes": list(enumerate(summary.get("class_names") or [])),
        "skipped": summary.get("skipped") or [],
        "ignored": summary.get("ignored") or [],
        "source": summary.get("source"), "n_listed": summary.get("n_listed"),
    }


#: Characters of a text example shown in the report (the rest cut, marked with ...).
TEXT_CHARS = 300


def shorten_text(value, limit=TEXT_CHARS):
    """A dataset's text value as the report shows it: a string of at most ``limit`` chars.

    Non-strings are shown by their ``repr``; control characters as escapes
    (HTML escaping is the template engine's).
    """
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in
                   text[:limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def _suspicious_context(result, epoch, picks, inputs_for, layout, names=None, texts_for=None):
    thumbs = layout is not None and bool(inputs_for)
    blocks = []
    for c in result.classes:
        rows = picks[c.label]
        if rows.size == 0:
            continue
        examples = []
        for r in rows.tolist():
            sc = float(result.scores[r])
            pred = int(np.argmax(epoch.logits[r]))
            examples.append({
                "id": epoch.ids[r], "decision": str(result.decision[r]),
                "score_repr": repr(sc),
                "score_text": f"{sc:.4f}" if np.isfinite(sc) else "unscored",
                "cluster": int(result.cluster_size[r]), "pred": pred,
                "mispredicted": pred != c.label,
                "thumb": (_thumb(inputs_for[r], None if layout == "image" else layout)
                          if thumbs and r in inputs_for else None),
                "pred_name": names[pred] if names and pred < len(names) else None,
                "text": (texts_for or {}).get(r)})
        blocks.append({"label": c.label, "dropped": c.dropped, "n_scored": c.n_scored,
                       "examples": examples,
                       "name": names[c.label] if names and c.label < len(names) else None})
    return blocks


#: What each linked file of the audit report is.
FILE_LABELS = {"keep": "keep-list (ids to keep, one per line)",
               "keep_json": "keep-list with provenance (class names, probe, skipped files)",
               "scores": "per-example scores (id, label, score, cluster_size, decision, "
                         "suggested_label, suggestion_confidence, signal)",
               "export": "schema-v1 export (labels, logits, features)"}


def file_links(path, files, labels):
    """Links, relative to the report at ``path``, to the ``files`` named in ``labels``."""
    out = []
    folder = os.path.dirname(os.path.abspath(path))
    for key, text in labels.items():
        f = (files or {}).get(key)
        if not f:
            continue
        size = os.path.getsize(f) if os.path.exists(f) else 0
        out.append({"href": os.path.relpath(os.path.abspath(f), folder), "text": text,
                    "size": size})
    return out
