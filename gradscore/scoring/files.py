"""File-level entry point: export file(s) in, keep-list (and score table) out.

This is what ``gradscore score`` runs; training-loop integrations and the
benchmarks call it too, so every user goes through the same code path.
"""

from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
import dataclasses
import hashlib
import os
import shutil
import tempfile

import numpy as np

from .._validation import check_choice
from .._version import __version__
from ..errors import GradscoreError
from ..history import read_history
from ..io import read_epoch
from ..io.reader import declared_id_bytes
from ..io._atomic import atomic_path
from ..io.keeplist import (KEEPLIST_FORMATS, SCORES_FORMATS, _ext, _write_keeplist_to,
                          _write_scores_to, check_free_space, keep_mask, output_bytes,
                          read_keeplist)
from ..io.partition import (create_spill_files, join_indexes, load_class, read_index,
                           spill_piece, spill_pieces)
from .._threads import n_threads, one_blas_thread
from .memory import (check_features_given, check_history, check_n_jobs, check_params,
                     class_budgets, score_checked)
from .methods import METHODS, needs_features
from .tasks import gather, score_spilled_class
from .crossclass import spilled_cross_class_votes
from ..review import review_by_class

SPILL_CHOICES = ("auto", "always", "never")
#: ``spill="auto"`` spills when the arrays an in-memory run would hold
#: (float32 logits, and features when the method needs them) exceed this.
SPILL_ABOVE_BYTES = 512 * 2**20
#: Rows per spill task: one file is spilled in pieces of this many rows (whole
#: read blocks), so that a single large file uses every worker.
SPILL_PIECE_ROWS = 4 * 65536


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


def score_files(paths, *, output=None, scores_path=None, previous=None, history=None,
                progress=False, max_memory=None, spill="auto", spill_dir=None, client=None,
                executor=None, **params):
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
    history : list of (str or path-like, or list of them), default=None
        For ``method="trajectory"``: earlier exports of the run, the
        reference (the model before training on this data: an export at
        epoch 0) first. Each is reduced to its rows' margins and losses,
        matched by id (:func:`gradscore.history.read_history`).
    progress : bool, default=False
    max_memory : int or str, default=None
        Bytes the in-memory read of the export may hold (``'4G'``,
        ``'512MiB'``); default the memory available. A larger export is
        refused before anything is allocated (see :func:`gradscore.read_epoch`);
        use ``spill`` for exports larger than memory.
    spill : {"auto", "always", "never"}, default="auto"
        ``"always"``: read the inputs once, in blocks, into a class-partitioned
        spill on disk (:mod:`gradscore.io.partition`) and score class by class
        from it, so memory holds one block and a few classes, not the whole
        export. ``"never"``: hold the export in memory. ``"auto"``: spill
        when the in-memory arrays would exceed 512 MiB, or when ``client`` or
        ``executor`` is given (their workers read the inputs themselves).
    spill_dir : str or path-like, default=None
        Folder for the spill (a temporary folder is made in it and removed
        afterwards); default: the output's folder. With ``client``, it must
        be on storage every worker sees.
    client : distributed.Client, default=None
        Run the partitioning and the per-class tasks on this Dask cluster
        (see :mod:`gradscore.scoring.dask`). Inputs and ``spill_dir`` must be
        on storage every worker sees, at the same paths.
    executor : concurrent.futures.Executor, default=None
        Run them with this executor instead (a ``ProcessPoolExecutor``, say).
        Default: ``n_jobs`` local threads. The keep-list is the same whatever
        runs the tasks.
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
    # Absolute paths, resolved here: the workers that open the inputs (and
    # the spill) may run in another folder, on another machine.
    paths = [os.path.abspath(p) for p in paths]
    # Check output names before the heavy work, so a typo costs nothing.
    out_ext = _ext(output, KEEPLIST_FORMATS, "keep-list")
    sc_ext = _ext(scores_path, SCORES_FORMATS, "scores table") if scores_path else None
    for p in [output] + ([scores_path] if scores_path else []):
        if os.path.abspath(p) in {os.path.abspath(q) for q in paths}:
            raise GradscoreError(f"{p}: output would overwrite an input file")
        folder = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(folder):
            raise GradscoreError(f"{p}: folder {folder} does not exist")
    if client is None:
        # What the run will write, bounded from the files' metadata before
        # reading them: a .txt keep-list (or .csv scores) of at most every id
        # and a newline each. Checked again, exactly, before writing.
        rows, id_bytes = declared_id_bytes(paths, max_memory=max_memory)
        if out_ext == ".txt":
            check_free_space(output, id_bytes + rows)
        if sc_ext == ".csv":
            check_free_space(scores_path, id_bytes + 64 * rows)
    n_jobs = check_n_jobs(params.pop("n_jobs", None))
    check_choice("spill", spill, SPILL_CHOICES)
    if client is not None and executor is not None:
        raise GradscoreError("give at most one of 'client' and 'executor'")
    # Parameters are checked before reading; the arrays are checked by the
    # reader, so the private scorer runs on them without a second pass.
    num_classes = params.pop("num_classes", None)
    in_memory_why = METHODS[check_params(**params)["method"]].in_memory_why
    prev_ids = read_keeplist(previous) if previous is not None else None
    method, gradient = params.get("method", "epic"), params.get("gradient", "logits")
    remote = client is not None or executor is not None
    if in_memory_why is not None and (remote or spill == "always"):
        raise GradscoreError(f"method={method!r} {in_memory_why}")
    check_history(method, history)
    if isinstance(history, (str, os.PathLike)):
        history = [history]
    if remote and spill == "never":
        raise GradscoreError("spill='never' holds the export in this process, so it cannot "
                             "run on a client or executor; use spill='auto'")
    own_pool = None
    blas = nullcontext()
    warm = None
    if client is not None:
        from .dask import client_executor, warm_up
        executor = client_executor(client)
        warm = warm_up(client, method, gradient)
    else:
        if executor is None:
            own_pool = executor = ThreadPoolExecutor(n_threads(n_jobs, 1 << 30))
        # One BLAS thread in this process while its threads run tasks (each
        # task sets it too, for processes; set here first, so that tasks on
        # threads do not undo each other's limit): a product's last bits
        # depend on how BLAS splits it over threads (issue 24).
        blas = one_blas_thread()
    try:
        if in_memory_why is not None:
            indexes = None
        else:
            indexes = _map(executor, partial(read_index, max_memory=max_memory), paths,
                           remote=client is not None)
        if indexes is None or not _should_spill(spill, remote, indexes, method, gradient):
            result, epoch = _score_in_memory(paths, num_classes, params, prev_ids, previous,
                                             progress=progress, n_jobs=n_jobs,
                                             max_memory=max_memory, history=history)
        else:
            with blas:
                result, epoch = _score_spilled(
                    indexes, num_classes, params, prev_ids, previous, executor=executor,
                    remote=client is not None, progress=progress, warm=warm,
                    spill_dir=spill_dir if spill_dir is not None
                    else os.path.dirname(os.path.abspath(output)))
    finally:
        if own_pool is not None:
            own_pool.shutdown()
    metadata = None
    if out_ext == ".json":
        metadata = run_metadata(result, epoch, previous=previous)
    kept_ids = epoch.ids[result.keep]
    # What the run writes is bounded too: at most rows x (the id limit + 1)
    # bytes of keep-list; checked against the destination's free space.
    need = {output: output_bytes(kept_ids, out_ext)}
    if scores_path:
        need[scores_path] = need.get(scores_path, 0) + output_bytes(epoch.ids, ".txt") + \
            64 * epoch.ids.size
    for p, b in need.items():
        check_free_space(p, b)
    with ExitStack() as stack:
        tmp_out = stack.enter_context(atomic_path(output))
        tmp_sc = stack.enter_context(atomic_path(scores_path)) if scores_path else None
        _write_keeplist_to(tmp_out, out_ext, kept_ids, metadata)
        if tmp_sc:
            _write_scores_to(tmp_sc, sc_ext, epoch.ids, epoch.labels, result)
    return result, epoch, output


def _should_spill(spill, remote, indexes, method, gradient):
    if spill != "auto":
        return spill == "always"
    if remote:
        return True
    n = sum(ix.n for ix in indexes)
    width = indexes[0].num_classes
    if needs_features(method, gradient) and indexes[0].n_features:
        width += indexes[0].n_features
    return n * width * 4 > SPILL_ABOVE_BYTES


def _check_classes(num_classes, epoch):
    if num_classes is not None and num_classes != epoch.num_classes:
        raise GradscoreError(f"num_classes={num_classes} but the export has "
                             f"{epoch.num_classes} classes")


def _active(epoch, prev_ids, previous):
    if prev_ids is None:
        return None
    return keep_mask(epoch.ids, prev_ids, source=f"previous keep-list {previous}")


def _score_in_memory(paths, num_classes, params, prev_ids, previous, *, progress, n_jobs,
                     max_memory=None, history=None):
    """Read the whole export into memory and score it with local threads."""
    method, gradient = params.get("method", "epic"), params.get("gradient", "logits")
    epoch = read_epoch(paths, need_features=needs_features(method, gradient),
                       max_memory=max_memory)
    check_features_given(method, gradient, epoch.features)
    _check_classes(num_classes, epoch)
    params = check_params(num_classes=epoch.num_classes, **params)
    if history is not None:
        history = read_history(history, ids=epoch.ids, labels=epoch.labels,
                               num_classes=epoch.num_classes, epoch=epoch.epoch,
                               max_memory=max_memory)
    result = score_checked(epoch.labels, epoch.logits, epoch.features, params,
                    active=_active(epoch, prev_ids, previous), history=history,
                    progress=progress, n_jobs=n_jobs)
    return result, epoch


def _score_spilled(indexes, num_classes, params, prev_ids, previous, *, executor, remote,
                   progress, spill_dir, warm=None):
    """Partition the export into a spill, score class by class, gather in class order."""
    method, gradient = params.get("method", "epic"), params.get("gradient", "logits")
    need_f = needs_features(method, gradient)
    if need_f and indexes[0].n_features is None:
        check_features_given(method, gradient, None)
    spill_dir = os.path.abspath(os.fspath(spill_dir))
    if not os.path.isdir(spill_dir):
        raise GradscoreError(f"spill_dir {spill_dir} is not a folder")
    tmp = tempfile.mkdtemp(prefix=".gradscore-spill-", dir=spill_dir)
    try:
        part = join_indexes(indexes, tmp, need_features=need_f)
        epoch = part.epoch
        _check_classes(num_classes, epoch)
        params = check_params(num_classes=epoch.num_classes, **params)
        active = _active(epoch, prev_ids, previous)
        # Pieces of a few blocks, so that one large file spills on every worker.
        pieces = []
        for spec, ix in zip(part.specs, indexes):
            create_spill_files(spec, ix.n)
            pieces += spill_pieces(spec, ix.n, SPILL_PIECE_ROWS)
        _map(executor, spill_piece, pieces, remote=remote)
        present = [c for c in range(epoch.num_classes) if part.class_rows[c].size]
        rows = [part.class_rows[c] for c in present]
        actives = [None if active is None else active[r] for r in rows]
        budgets = class_budgets(epoch.labels, active, params)
        votes = None
        if METHODS[params["method"]].cross_class:
            # Votes over all classes first, from the spill, by the same tasks.
            scored = np.ones(epoch.labels.size, dtype=bool) \
                if params["cumulative"] == "intersect" or active is None else active
            with _where_hint(remote):
                votes = spilled_cross_class_votes(part, scored, params, executor=executor,
                                                  folder=tmp)
        if warm is not None:
            # One worker has compiled the kernels (and written numba's cache).
            warm.result()
        outcomes = _in_order([
            executor.submit(score_spilled_class, _task_slices(part, c, votes), act,
                            None if budgets is None else int(budgets[c]), params,
                            None if votes is None else votes.take(part.class_rows[c]))
            for c, act in zip(present, actives)])
        with _where_hint(remote):
            result = gather(outcomes, rows, n=epoch.labels.size, active=active,
                            params=params, progress=progress, total=len(present))
        # Suggestions and the bad share from the spill's logits, a class at a time.
        result.attach_review(*review_by_class(
            epoch.labels, result.flagged, present, rows,
            lambda i: load_class(_logits_only(part.class_slices(present[i])))[0],
            num_classes=epoch.num_classes, signal=params["method"],
            review=None if votes is None else votes.review))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result, epoch


def _logits_only(slices):
    return dataclasses.replace(slices, features_dtype=None)


def _task_slices(part, c, votes):
    """Class ``c``'s slices for its task; without features when the votes
    (computed from them already) are all the task needs."""
    slices = part.class_slices(c)
    return slices if votes is None else dataclasses.replace(slices, features_dtype=None)


def _map(executor, func, items, *, remote):
    """``[func(item) for item in items]`` on ``executor``, with :func:`_where_hint` on errors."""
    with _where_hint(remote):
        return list(_in_order([executor.submit(func, item) for item in items]))


def _in_order(futures):
    """Yield the futures' results in order. On the first error, cancel what has
    not started and wait for what has before raising it, so that no task is
    still writing into the spill when the caller removes it."""
    for i, fut in enumerate(futures):
        try:
            yield fut.result()
        except BaseException:
            rest = futures[i + 1:]
            for f in rest:
                f.cancel()
            wait(rest)
            raise


@contextmanager
def _where_hint(remote):
    """On a cluster, say where inputs and spill must be when a worker fails to read one."""
    try:
        yield
    except (GradscoreError, OSError) as exc:
        if not remote:
            raise
        raise GradscoreError(
            f"{exc} (on a Dask worker: inputs and the spill folder must be on storage every "
            "worker sees, at the same path)") from None


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
        "estimated_bad_share": result.bad_share,
        "classes": counts,
    }
