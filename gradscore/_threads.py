"""How many threads a run uses, and BLAS's threads inside them."""

from contextlib import nullcontext
import os

from threadpoolctl import threadpool_limits


def n_threads(n_jobs, n_tasks):
    """Threads for ``n_tasks`` tasks: ``n_jobs`` (None or -1: one per CPU core), at most one a task."""
    if n_jobs is None or n_jobs < 0:
        n_jobs = os.cpu_count() or 1
    return max(1, min(n_jobs, n_tasks))


def one_blas_thread_each(jobs):
    """Context for running tasks on ``jobs`` threads: one BLAS thread each.

    As scikit-learn does for nested parallelism: with classes on several
    threads, BLAS's own threads would compete with them for the same cores
    (OpenBLAS threads spin while they wait). Measured on the ImageNet shape
    on 2 cores: 250 CPU s and 136 s wall with BLAS's default threads, 181 CPU
    s and 109 s with one (docs/benchmarks.md, issue 10). With one task
    thread, BLAS keeps its threads.
    """
    if jobs > 1:
        return threadpool_limits(limits=1, user_api="blas")
    return nullcontext()


def one_blas_thread():
    """One BLAS thread for the caller's products, unless BLAS already has one.

    For kernels whose results must not depend on how BLAS splits a product
    over threads (the cross-class search's distances): the split changes the
    last bits of the values. Set only when needed: a process whose tasks run
    on several threads at once (local threads, Dask workers) has one BLAS
    thread already.
    """
    from threadpoolctl import threadpool_info
    if all(p.get("num_threads", 1) <= 1 for p in threadpool_info()
           if p.get("user_api") == "blas"):
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
