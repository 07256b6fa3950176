"""How many threads a run uses, and BLAS's threads inside them."""

from contextlib import nullcontext
import os

from threadpoolctl import threadpool_limits


def n_threads(n_jobs, n_tasks):
    """Threads for ``n_tasks`` tasks: ``n_jobs`` (None or -1: one per CPU core), at most one a task."""
    if n_jobs is None or n_jobs < 0:
        n_jobs = os.cpu_count() or 1
    return max(1, min(n_jobs, n_tasks))


def one_blas_thread():
    """One BLAS thread for the caller's products, unless BLAS already has one.

    For every product whose bits gradscore promises (the probe, the per-class
    scores, the cross-class search's distances): how BLAS splits a product
    over threads changes the last bits of its values (on OpenBLAS, a
    matrix-vector product or a thin matrix product split along its inner
    dimension; an SVD), so without it the results would depend on the
    runner's cores and on ``n_jobs`` (issue 24). It is also the faster
    choice with classes on several threads, as scikit-learn does for nested
    parallelism: BLAS's own threads would compete with them for the same
    cores (OpenBLAS threads spin while they wait). Measured on the ImageNet
    shape on 2 cores: 250 CPU s and 136 s wall with BLAS's default threads,
    181 CPU s and 109 s with one (docs/benchmarks.md, issue 10).

    Only the BLAS libraries already loaded are limited (threadpoolctl): load
    SciPy's linear algebra before entering where it is used. Set only when
    needed: a process whose tasks run on several threads at once (local
    threads, Dask workers) has one BLAS thread already, and a limit entered
    and left by each of those threads would undo the others'.
    """
    from threadpoolctl import threadpool_info
    if all(p.get("num_threads", 1) <= 1 for p in threadpool_info()
           if p.get("user_api") == "blas"):
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
