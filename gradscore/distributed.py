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
given itself.
"""

import os

from .errors import GradscoreError

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
