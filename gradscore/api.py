"""File-level entry point: export file(s) in, keep-list (and score table) out.

This is what ``gradscore score`` runs; training-loop integrations and the
benchmarks call it too, so every user goes through the same code path.
"""

from contextlib import ExitStack
import hashlib
import os

import numpy as np

from ._version import __version__
from .errors import GradscoreError
from .io import read_epoch
from .io._atomic import atomic_path
from .io.keeplist import (KEEPLIST_FORMATS, SCORES_FORMATS, _ext, _write_keeplist_to,
                          _write_scores_to, keep_mask, read_keeplist)
from .pipeline import _score, check_features_given, check_n_jobs, check_params, needs_features


def default_output(paths):
    """``epoch_05.h5`` -> ``epoch_05.keep.txt``, beside the (first) input."""
    first = os.fspath(paths[0])
    stem = os.path.splitext(first)[0]
    return stem + ".keep.txt"


def sha256_file(path, chunk=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def score_files(paths, *, output=None, scores_path=None, previous=None,
                progress=False, max_memory=None, **params):
    """Score export file(s) and write the keep-list, atomically.

    Parameters
    ----------
    paths : str or path-like, or list of them
        One epoch's export, or its shards.
    output : str or path-like, default=None
        Keep-list path (``.txt``, ``.npy`` or ``.json``); default beside the
        first input, ``<stem>.keep.txt``.
    scores_path : str or path-like, default=None
        Also write the per-example table (``.csv`` or ``.h5``).
    previous : str or path-like, default=None
        Keep-list of an earlier round: examples it lacks stay dropped. Under
        the default ``cumulative="intersect"`` (the authors' rule) every
        example is still scored and clustered, and an example is kept only if
        this round keeps it too; under ``"survivors"`` only the examples it
        keeps are scored. Every id in it must be in the export.
    progress : bool, default=False
    max_memory : int or str, default=None
        Bytes the read of the export may hold (``'4G'``, ``'512MiB'``);
        default the memory available. A larger export is refused before
        anything is allocated (see :func:`gradscore.read_epoch`).
    **params
        Passed to :func:`gradscore.score` (``method``, ``fraction``, ...).

    Returns
    -------
    result : ScoreResult
    epoch : Epoch
    output : str
        The keep-list path written.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    output = os.fspath(output) if output is not None else default_output(paths)
    # Check output names before the heavy work, so a typo costs nothing.
    out_ext = _ext(output, KEEPLIST_FORMATS, "keep-list")
    sc_ext = _ext(scores_path, SCORES_FORMATS, "scores table") if scores_path else None
    for p in [output] + ([scores_path] if scores_path else []):
        if os.path.abspath(p) in {os.path.abspath(q) for q in paths}:
            raise GradscoreError(f"{p}: output would overwrite an input file")
        folder = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(folder):
            raise GradscoreError(f"{p}: folder {folder} does not exist")
    n_jobs = check_n_jobs(params.pop("n_jobs", None))
    # Parameters are checked before reading; the arrays are checked by the
    # reader, so the private scorer runs on them without a second pass.
    num_classes = params.pop("num_classes", None)
    check_params(**params)
    prev_ids = read_keeplist(previous) if previous is not None else None
    method, gradient = params.get("method", "epic"), params.get("gradient", "logits")
    epoch = read_epoch(paths, need_features=needs_features(method, gradient),
                       max_memory=max_memory)
    check_features_given(method, gradient, epoch.features)
    if num_classes is not None and num_classes != epoch.num_classes:
        raise GradscoreError(f"num_classes={num_classes} but the export has "
                             f"{epoch.num_classes} classes")
    params = check_params(num_classes=epoch.num_classes, **params)
    active = None
    if prev_ids is not None:
        active = keep_mask(epoch.ids, prev_ids, source=f"previous keep-list {previous}")
    result = _score(epoch.labels, epoch.logits, epoch.features, params, active=active,
                    progress=progress, n_jobs=n_jobs)
    metadata = None
    if out_ext == ".json":
        metadata = run_metadata(result, epoch, previous=previous)
    kept_ids = epoch.ids[result.keep]
    with ExitStack() as stack:
        tmp_out = stack.enter_context(atomic_path(output))
        tmp_sc = stack.enter_context(atomic_path(scores_path)) if scores_path else None
        _write_keeplist_to(tmp_out, out_ext, kept_ids, metadata)
        if tmp_sc:
            _write_scores_to(tmp_sc, sc_ext, epoch.ids, epoch.labels, result)
    return result, epoch, output


def run_metadata(result, epoch, *, previous=None):
    """Provenance stored in JSON keep-lists (deterministic: no timestamps)."""
    counts = {}
    for c in result.classes:
        counts[str(c.label)] = {"n": c.n, "kept": c.n - c.dropped_total,
                                "dropped": c.dropped, "dropped_before": c.dropped_before,
                                "dropped_total": c.dropped_total, "flagged": c.flagged,
                                "n_medoids": c.n_medoids, "k_used": c.k_used,
                                "cap_hit": c.cap_hit, "total_cap_hit": c.total_cap_hit}
    return {
        "gradscore_version": __version__,
        "params": result.params,
        "seed": result.params.get("random_state"),
        "epoch": None if epoch.epoch is None else int(epoch.epoch),
        "inputs": [{"path": s["path"], "n": s["n"], "sha256": sha256_file(s["path"])}
                   for s in epoch.sources],
        "previous": None if previous is None else os.fspath(previous),
        "n": int(result.keep.size),
        "kept": int(np.sum(result.keep)),
        "classes": counts,
    }
