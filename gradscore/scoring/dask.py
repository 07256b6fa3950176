"""Run the partition and per-class tasks on a Dask cluster (``gradscore[dask]``).

Dask's ``distributed`` scheduler runs gradscore's plain task functions as
they are, on a local cluster or one deployed on Kubernetes, SLURM/PBS
(dask-jobqueue) or YARN. gradscore only needs a client:
:func:`connect` makes one from a scheduler address or a scheduler file (as
Dask's own tools take), and :func:`client_executor` turns it into a
:class:`concurrent.futures.Executor` whose ``map`` returns results in
submission order, which is all :func:`gradscore.score_files` asks of the
thing that runs its tasks.

Inputs and the spill folder must be on storage that every worker sees, at
the same path (a shared filesystem): each worker opens the shards it is
given itself. The client makes every path absolute before submitting.

A worker meets gradscore's numba kernels the first time a class task runs;
without numba's on-disk cache (a fresh installation) compiling them takes
tens of seconds. :func:`warm_up` compiles them on one worker while the
export is being spilled, so that workers sharing the installation (and its
cache) load them instead of each compiling the same code.
"""

import os
import time
import weakref

from ..errors import GradscoreError

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 10


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise GradscoreError(
            "running on a Dask cluster needs the 'distributed' package: "
            'pip install "gradscore[dask]"') from None
    return distributed


def connect(scheduler=None, *, scheduler_file=None, timeout=CONNECT_TIMEOUT):
    """A Dask client for a running scheduler.

    Parameters
    ----------
    scheduler : str, default=None
        Scheduler address, e.g. ``"tcp://10.0.0.5:8786"``.
    scheduler_file : str or path-like, default=None
        JSON file the scheduler wrote (``dask scheduler --scheduler-file``).
        Give exactly one of ``scheduler`` and ``scheduler_file``.
    timeout : float, default=10
        Seconds to wait for the scheduler.

    Returns
    -------
    client : distributed.Client

    Raises
    ------
    GradscoreError
        When the scheduler cannot be reached in ``timeout`` seconds.
    """
    if (scheduler is None) == (scheduler_file is None):
        raise GradscoreError("give exactly one of a scheduler address and a scheduler file; "
                             f"got scheduler={scheduler!r}, scheduler_file={scheduler_file!r}")
    distributed = _import_distributed()
    if scheduler_file is not None:
        scheduler_file = os.fspath(scheduler_file)
        if not os.path.exists(scheduler_file):
            raise GradscoreError(f"{scheduler_file}: no such scheduler file")
        where = f"the Dask scheduler in {scheduler_file}"
        kwargs = dict(scheduler_file=scheduler_file)
    else:
        where = f"the Dask scheduler at {scheduler}"
        kwargs = dict(address=scheduler)
    try:
        return distributed.Client(timeout=timeout, set_as_default=False, **kwargs)
    except (OSError, TimeoutError, ValueError) as exc:
        raise GradscoreError(
            f"could not reach {where} within {timeout:g} s ({type(exc).__name__}: {exc}); "
            "is the scheduler running, and is the address right?") from None


def client_executor(client):
    """A :class:`concurrent.futures.Executor` that runs tasks on ``client``'s cluster.

    Every task is submitted as impure (never deduplicated by Dask); a task
    whose worker dies is rescheduled by Dask on another worker.
    """
    return client.get_executor(pure=False)


def describe_client(client):
    """``'Dask cluster at ADDRESS (N workers)'``, for messages."""
    try:
        n = len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - only decorates a message
        n = "?"
    return f"Dask cluster at {client.scheduler.address} ({n} workers)"


#: The (method, gradient) pairs warmed up on each client so far.
_WARMED = weakref.WeakKeyDictionary()


def compile_kernels(method="epic", gradient="logits"):
    """Run the per-class task once on a tiny class along every path that
    ``method`` and ``gradient`` take, so that numba compiles its code now
    (or loads it from its cache). Returns the seconds it took."""
    import numpy as np

    from .memory import check_params
    from .methods import METHODS
    from .tasks import ClassData, score_class

    if METHODS[method].cross_class:
        return 0.0  # their per-class task only reads votes
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 3)).astype(np.float32)
    features = rng.normal(size=(64, 4)).astype(np.float32)
    for dense_max in (0, 64):  # with and without the kernel matrix
        params = check_params(num_classes=3, method=method, gradient=gradient, k=5,
                              dense_max=dense_max)
        score_class(ClassData(0, logits, features, n_medoids=12), params)
    return time.perf_counter() - t


def warm_up(client, method="epic", gradient="logits"):
    """Start compiling the class task's kernels on one worker of ``client``.

    Returns a future (of the seconds it took) to wait for before the class
    tasks are submitted, or None when there is nothing to warm (done
    before on this client, or no worker yet). Meanwhile the spill tasks run
    on the other workers and threads. (To run on a client without it, pass
    ``executor=client_executor(client)`` to :func:`gradscore.score_files`.)
    """
    done = _WARMED.setdefault(client, set())
    workers = sorted(client.scheduler_info().get("workers", {}))
    if (method, gradient) in done or not workers:
        return None
    done.add((method, gradient))
    return client.submit(compile_kernels, method, gradient, workers=workers[:1],
                         allow_other_workers=True, pure=False, priority=10)
