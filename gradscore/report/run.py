"""``gradscore report RUN_DIR``: one HTML page for a whole scheduled run.

A run folder holds a :class:`~gradscore.schedule.DropSchedule` state file
(``schedule.json``) and the keep-list of each scored epoch, and, while they
are kept, the epoch exports. From these the page shows

- the drops of each scored epoch and the examples still kept;
- the drops per class, cumulative (needs an export, for the labels);
- which examples were dropped at which epoch;
- the score distribution of each scored epoch, and the classes where the
  drop cap bit: the exports are scored again with the schedule's own
  parameters and the previous keep-list, and the decisions are checked
  against the keep-list on disk (the page says whether they agree).

Like the audit report, the page is self-contained: plots are embedded
PNGs, no script, rendered from the Jinja2 template ``templates/run.html.j2``
with autoescaping.
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone
import glob
import json
import os
import tempfile
import warnings

import numpy as np

from .._version import __version__
from ..scoring.files import score_files
from ..errors import GradscoreError
from ..io._atomic import atomic_path
from ..io.keeplist import read_keeplist
from ..schedule import STATE_FORMAT, read_state
from ._templates import render
from .html import _figure, _png

#: Dropped examples listed by id on the page; the rest are counted.
MAX_LISTED = 400
#: Classes drawn one by one in the per-class plot; the others are summed.
MAX_PLOTTED_CLASSES = 20
_KEEP_SUFFIXES = (".keep.txt", ".keep.json", ".keep.npy", ".txt", ".json", ".npy")


@dataclass
class ScoredEpoch:
    """One scored epoch of the run, as far as the folder tells it."""

    epoch: int
    entry: dict
    keeplist: str = None
    keep_ids: np.ndarray = None
    exports: list = field(default_factory=list)
    result: object = None
    data: object = None
    reproduced: bool = None


def find_state(run_dir):
    """The DropSchedule state file of ``run_dir``: ``schedule.json``, or the only
    JSON file in it that is one."""
    default = os.path.join(run_dir, "schedule.json")
    if os.path.isfile(default):
        return default
    found = []
    for path in sorted(glob.glob(os.path.join(run_dir, "*.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("format") == STATE_FORMAT:
            found.append(path)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise GradscoreError(f"{run_dir}: found {what} DropSchedule state files; the run "
                             "report needs exactly one (name it with --state)")
    return found[0]


def _locate(path, run_dir):
    """``path`` if it exists, else the file of that name in ``run_dir`` (moved runs)."""
    if not path:
        return None
    if os.path.isfile(path):
        return path
    here = os.path.join(run_dir, os.path.basename(path))
    return here if os.path.isfile(here) else None


def _exports_for(keeplist):
    """The export(s) a keep-list was scored from, found by name: ``epoch_004.keep.txt``
    comes from ``epoch_004.h5`` or its shards ``epoch_004.rank*.h5``."""
    if keeplist is None:
        return []
    stem = keeplist
    for suffix in _KEEP_SUFFIXES:
        if keeplist.endswith(suffix):
            stem = keeplist[: -len(suffix)]
            break
    if os.path.isfile(stem + ".h5"):
        return [stem + ".h5"]
    shards = {}
    for p in glob.glob(glob.escape(stem) + ".rank*.h5"):
        rank = p[len(stem) + len(".rank"):-len(".h5")]
        if rank.isdigit():
            shards[int(rank)] = p
    return [shards[r] for r in sorted(shards)]


def collect_run(run_dir, *, state_path=None, rescore=True):
    """Read a run folder: the state, each scored epoch's keep-list and exports.

    Parameters
    ----------
    run_dir : str or path-like
    state_path : str or path-like, default=None
        Default :func:`find_state`.
    rescore : bool, default=True
        Score each epoch's export again (schedule parameters, previous
        keep-list) for scores, cluster sizes and cap hits.

    Returns
    -------
    doc : dict
        The state file's content.
    epochs : list of ScoredEpoch
        In epoch order.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise GradscoreError(f"{run_dir}: not a folder")
    state_path = find_state(run_dir) if state_path is None else os.fspath(state_path)
    doc = read_state(state_path)
    params = dict(doc.get("score_params") or {})
    epochs = []
    for entry in sorted(doc.get("history") or [], key=lambda h: h["epoch"]):
        se = ScoredEpoch(epoch=int(entry["epoch"]), entry=dict(entry))
        se.keeplist = _locate(entry.get("keeplist"), run_dir)
        if se.keeplist is not None:
            se.keep_ids = read_keeplist(se.keeplist)
        se.exports = _exports_for(se.keeplist)
        epochs.append(se)
    if rescore:
        previous = None
        with tempfile.TemporaryDirectory(prefix="gradscore-report-") as tmp:
            for i, se in enumerate(epochs):
                if se.exports and (i == 0 or previous is not None):
                    out = os.path.join(tmp, f"{se.epoch}.keep.txt")
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        se.result, se.data, _ = score_files(se.exports, output=out,
                                                            previous=previous, **params)
                    if se.keep_ids is not None:
                        se.reproduced = _same(se.data.ids[se.result.keep], se.keep_ids)
                previous = se.keeplist
    return doc, epochs


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.size != b.size:
        return False
    return bool(np.array_equal(np.sort(a.astype(str)), np.sort(b.astype(str))))


def _universe(epochs):
    """ids and labels of the training set, from the latest export read."""
    for se in reversed(epochs):
        if se.data is not None:
            return se.data.ids, se.data.labels
    for se in reversed(epochs):
        if se.exports:
            from ..io.reader import read_epoch

            data = read_epoch(se.exports, need_features=False)
            return data.ids, data.labels
    return None, None


def _drop_epochs(epochs, ids):
    """For each id of ``ids``: the epoch it was dropped at (0 = kept to the end)."""
    when = np.zeros(ids.size, dtype=np.int64)
    key = ids.astype(str)
    for se in epochs:
        if se.keep_ids is None:
            continue
        kept = np.isin(key, np.asarray(se.keep_ids).astype(str))
        when[(when == 0) & ~kept] = se.epoch
    return when


def run_context(run_dir, *, state_path=None, rescore=True, max_listed=MAX_LISTED):
    """Everything the run page shows, as plain values (see :func:`write_run_report`)."""
    doc, epochs = collect_run(run_dir, state_path=state_path, rescore=rescore)
    ids, labels = _universe(epochs)
    rows = []
    previous_kept = None
    for se in epochs:
        e = se.entry
        n = int(e.get("n", 0))
        before = n if previous_kept is None else previous_kept
        kept = int(e.get("kept", before - int(e.get("dropped", 0))))
        # Caps and flags: from the state file (gradscore >= the intersect rule
        # records them), else from the rescoring.
        res = se.result
        cap = e.get("cap_hit_classes")
        if cap is None:
            cap = [c.label for c in res.classes if c.cap_hit] if res is not None else []
        total_cap = e.get("total_cap_hit_classes")
        if total_cap is None:
            total_cap = [c.label for c in res.classes
                         if getattr(c, "total_cap_hit", False)] if res is not None else []
        flagged = e.get("flagged")
        if flagged is None and res is not None and hasattr(res, "flagged"):
            flagged = int(np.sum(res.flagged))
        rows.append({"epoch": se.epoch, "n": n, "kept_before": before, "flagged": flagged,
                     "dropped": int(e.get("dropped", before - kept)), "kept": kept,
                     "dropped_total": n - kept, "cap": list(cap),
                     "total_cap": list(total_cap),
                     "keeplist": os.path.basename(se.keeplist) if se.keeplist else None,
                     "exports": [os.path.basename(p) for p in se.exports],
                     "reproduced": se.reproduced})
        previous_kept = kept
    per_class, listed, n_dropped = None, [], 0
    if ids is not None:
        when = _drop_epochs(epochs, ids)
        classes = np.unique(labels)
        per_class = []
        for c in classes:
            in_c = labels == c
            cum = [int(np.sum(in_c & (when > 0) & (when <= se.epoch))) for se in epochs]
            now = [int(np.sum(in_c & (when == se.epoch))) for se in epochs]
            per_class.append({"label": int(c), "n": int(in_c.sum()), "now": now,
                              "cumulative": cum, "cells": list(zip(cum, now))})
        dropped_rows = np.flatnonzero(when > 0)
        n_dropped = int(dropped_rows.size)
        info = {se.epoch: se for se in epochs}
        order = np.lexsort((ids[dropped_rows].astype(str), labels[dropped_rows],
                            when[dropped_rows]))
        for r in dropped_rows[order][:max_listed]:
            se = info[int(when[r])]
            score, cluster, pred = None, None, None
            if se.result is not None:
                j = _row_of(se.data.ids, ids[r])
                if j is not None:
                    s = float(se.result.scores[j])
                    score = f"{s:.4f}" if np.isfinite(s) else "unscored"
                    cluster = int(se.result.cluster_size[j])
                    pred = int(np.argmax(se.data.logits[j]))
            listed.append({"id": ids[r].item() if hasattr(ids[r], "item") else ids[r],
                           "label": int(labels[r]), "epoch": int(when[r]), "score": score,
                           "cluster": cluster if cluster is not None and cluster >= 0
                           else None, "pred": pred})
    scored = [se for se in epochs if se.result is not None]
    return {
        "title": f"gradscore run report: {os.path.basename(os.path.abspath(run_dir))}",
        "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": os.fspath(run_dir),
        "schedule": {"warmup": doc.get("warmup"), "freq": doc.get("freq"),
                     "stop": doc.get("stop"), "params": doc.get("score_params") or {}},
        "cards": _cards(rows, per_class),
        "epochs": rows,
        "per_class": per_class,
        "epoch_numbers": [se.epoch for se in epochs],
        "progress_plot": _progress_plot(rows, per_class, [se.epoch for se in epochs])
        if rows else None,
        "score_plot": _score_plot(scored) if scored else None,
        "rescored": bool(scored),
        "not_reproduced": [se.epoch for se in epochs if se.reproduced is False],
        "dropped_listed": listed,
        "n_dropped": n_dropped,
        "missing_exports": [se.epoch for se in epochs if not se.exports],
    }


def _row_of(ids, ident):
    hit = np.flatnonzero(ids.astype(str) == str(ident))
    return int(hit[0]) if hit.size else None


def _cards(rows, per_class):
    if not rows:
        return [("scored epochs", 0)]
    last = rows[-1]
    n = last["n"]
    return [("examples", n), ("classes", "?" if per_class is None else len(per_class)),
            ("scored epochs", len(rows)), ("kept now", last["kept"]),
            ("dropped in all", last["dropped_total"]),
            ("dropped %", f"{100.0 * last['dropped_total'] / n:.1f}" if n else "0")]


def _progress_plot(rows, per_class, epoch_numbers):
    ncols = 2 if per_class else 1
    fig = _figure(figsize=(5.2 * ncols, 3.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False).ravel()
    x = np.arange(len(rows))
    ax = axes[0]
    ax.bar(x, [r["dropped"] for r in rows], color="#c0392b", label="dropped at this epoch")
    ax.set_ylabel("dropped at this epoch")
    ax.set_xticks(x, [str(r["epoch"]) for r in rows])
    ax.set_xlabel("scored epoch")
    ax2 = ax.twinx()
    ax2.plot(x, [r["kept"] for r in rows], "o-", color="#2c6fd6", label="kept after")
    ax2.set_ylabel("kept after scoring")
    ax.set_title("Drops per scored epoch", fontsize=10)
    if per_class:
        ax = axes[1]
        shown = sorted(per_class, key=lambda c: -c["cumulative"][-1])[:MAX_PLOTTED_CLASSES]
        shown.sort(key=lambda c: c["label"])
        bottom = np.zeros(len(rows))
        cmap = _colors(len(shown))
        for color, c in zip(cmap, shown):
            vals = np.array(c["cumulative"], dtype=float)
            ax.bar(x, vals, bottom=bottom, color=color, label=f"class {c['label']}")
            bottom += vals
        rest = [c for c in per_class if c not in shown]
        if rest:
            vals = np.sum([c["cumulative"] for c in rest], axis=0).astype(float)
            ax.bar(x, vals, bottom=bottom, color="#bbbbbb", label=f"{len(rest)} other classes")
        ax.set_xticks(x, [str(e) for e in epoch_numbers])
        ax.set_xlabel("scored epoch")
        ax.set_ylabel("dropped so far")
        ax.set_title("Cumulative drops per class", fontsize=10)
        ax.legend(fontsize=7, ncols=2, loc="upper left")
    return _png(fig)


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def _score_plot(scored):
    cols = min(4, len(scored))
    nrows = -(-len(scored) // cols)
    fig = _figure(figsize=(3.0 * cols, 2.4 * nrows + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax in axes[len(scored):]:
        ax.set_visible(False)
    for ax, se in zip(axes, scored):
        s, dec = se.result.scores, se.result.decision
        ok = np.isfinite(s)
        if not ok.any():
            ax.set_visible(False)
            continue
        bins = np.histogram_bin_edges(s[ok], bins=30)
        ax.hist([s[ok & (dec == "kept")], s[ok & (dec == "dropped")],
                 s[ok & (dec == "dropped-before")]], bins=bins, stacked=True,
                color=["#5b8def", "#c0392b", "#aaaaaa"],
                label=["kept", "dropped now", "dropped before"])
        n_now = int(np.sum(dec == "dropped"))
        ax.set_title(f"epoch {se.epoch}: {n_now} dropped of {int(ok.sum())} scored",
                     fontsize=9)
        ax.tick_params(labelsize=7)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=8)
    fig.suptitle("Density score at each scored epoch (higher = more typical)", fontsize=10)
    return _png(fig)


def write_run_report(run_dir, output=None, *, state_path=None, rescore=True,
                     max_listed=MAX_LISTED):
    """Write the run report of ``run_dir``, atomically.

    Parameters
    ----------
    run_dir : str or path-like
        Folder with the schedule's state file and keep-lists (and exports).
    output : str or path-like, default=None
        ``.html`` file; default ``<run_dir>/run-report.html``.
    state_path : str or path-like, default=None
        The state file; default :func:`find_state`.
    rescore : bool, default=True
        Score the exports again for score distributions and cap hits.
    max_listed : int, default=400
        Dropped examples listed by id.

    Returns
    -------
    path : str
    context : dict
        What the page shows (epochs, per-class counts, listed drops).
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise GradscoreError(f"{run_dir}: not a folder")
    output = os.path.join(run_dir, "run-report.html") if output is None else os.fspath(output)
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise GradscoreError(f"{output}: folder {folder} does not exist")
    context = run_context(run_dir, state_path=state_path, rescore=rescore,
                          max_listed=max_listed)
    page = render("run.html.j2", **context)
    with atomic_path(output) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
    return output, context
