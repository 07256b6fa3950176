"""Scaling on a local Dask cluster: 1, 2, 4 worker processes on a sharded export.

Generates the export once (benchmarks/data/, git-ignored), in ``--shards``
files of contiguous id ranges, scores it with local threads (reference),
then on a ``distributed.LocalCluster`` of 1, 2 and 4 single-threaded worker
processes on 127.0.0.1, and checks that every run wrote the same keep-list.
Wall time covers the whole ``score_files`` call (partition, class tasks,
gather, keep-list), not the cluster's start.

    python benchmarks/bench_dask.py --n 10000000 --classes 100 --shards 8 --write-docs

``--method`` scores with another method (``groups`` and ``deep-knn`` need
``--features``); its table goes to its own section of the docs:

    python benchmarks/bench_dask.py --n 120000 --classes 10 --features 512 --shards 4 --workers 2 --method groups --write-docs

``--cold`` instead measures what warming the first worker saves on workers
that start with an empty numba cache (a fresh installation): a new
2-worker cluster whose workers share a new, empty ``NUMBA_CACHE_DIR`` scores
the export with and without :func:`gradscore.scoring.dask.warm_up`, in
alternation, ``--repeat`` times each.

    python benchmarks/bench_dask.py --n 1000000 --classes 10 --shards 8 --cold --write-docs
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_score  # noqa: E402
import synth  # noqa: E402

import gradscore  # noqa: E402


def ensure_shards(n, classes, features, dtype, shards):
    folder = os.path.join(HERE, "data", f"shards-{n}x{classes}x{features}-{dtype}-{shards}")
    done = os.path.join(folder, "DONE")
    if not os.path.exists(done):
        os.makedirs(folder, exist_ok=True)
        t = time.perf_counter()
        synth.make_shards(folder, n=n, classes=classes, features=features, dtype=dtype,
                          shards=shards)
        open(done, "w").close()
        print(f"  generated {shards} shards in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".h5"))


def timed(paths, out, **kw):
    load = os.getloadavg()[0]
    t = time.perf_counter()
    gradscore.score_files(paths, output=out, **kw)
    return time.perf_counter() - t, load


def cold(paths, a):
    """Wall and CPU of score_files on cold workers, with and without warm-up."""
    import distributed
    import psutil

    import gradscore.scoring.dask as gd

    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    walls = {True: [], False: []}
    cpus = {True: [], False: []}
    for _ in range(a.repeat):
        for warm in (True, False):
            with tempfile.TemporaryDirectory() as cache:
                # Worker processes inherit this (LocalCluster's env= did not
                # reach numba in them once this process had imported it).
                os.environ["NUMBA_CACHE_DIR"] = cache
                lc = distributed.LocalCluster(host="127.0.0.1", processes=True, n_workers=2,
                                              threads_per_worker=1, dashboard_address=None,
                                              worker_dashboard_address=None)
                del os.environ["NUMBA_CACHE_DIR"]
                with lc, distributed.Client(lc, set_as_default=False) as client:
                    client.wait_for_workers(2, timeout=120)
                    pids = list(client.run(os.getpid).values())
                    cpu0 = sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)
                    # Without warm-up: the same tasks on the same workers, through
                    # the client's executor (score_files warms up a client only).
                    run_on = dict(client=client) if warm else \
                        dict(executor=gd.client_executor(client))
                    wall, _ = timed(paths, os.path.join(out_dir, "dask-cold.keep.txt"),
                                    **run_on)
                    cpus[warm].append(sum(sum(psutil.Process(p).cpu_times()[:2])
                                          for p in pids) - cpu0)
                    walls[warm].append(wall)
                    if not os.listdir(cache):
                        raise RuntimeError("the workers did not use the new numba cache")
            print(f"warm-up={warm}: {wall:.1f} s", file=sys.stderr)
    lines = ["| first worker warmed | wall (median) | workers' CPU (median) | runs |",
             "|---|---|---|---|"]
    for warm in (True, False):
        lines.append(f"| {'yes' if warm else 'no'} | {statistics.median(walls[warm]):.1f} s | "
                     f"{statistics.median(cpus[warm]):.1f} s | "
                     f"{', '.join(f'{w:.1f}' for w in walls[warm])} s |")
    bench_score.publish(
        f"Cold workers: a new 2-worker LocalCluster (1 thread each) whose workers share a "
        f"new, empty NUMBA_CACHE_DIR, scoring {a.n:,} rows x {a.classes} classes in "
        f"{a.shards} shards (default method).", lines, key="bench_dask_cold",
        write=a.write_docs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--features", type=int, default=0)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--cold", action="store_true",
                    help="measure warm-up on cold workers instead (see the docstring)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--method", default="epic", help="scoring method (not with --cold)")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    import distributed

    paths = ensure_shards(a.n, a.classes, a.features, a.dtype, a.shards)
    if a.cold:
        cold(paths, a)
        return
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    ref = os.path.join(out_dir, "dask-ref.keep.txt")
    print("local threads ...", file=sys.stderr)
    wall, load = timed(paths, ref, spill="always", method=a.method)
    rows.append(("local threads (n_jobs=-1), spill", wall, load, "reference"))
    ref_bytes = open(ref, "rb").read()
    for w in a.workers:
        print(f"{w} workers ...", file=sys.stderr)
        with distributed.LocalCluster(host="127.0.0.1", processes=True, n_workers=w,
                                      threads_per_worker=1, dashboard_address=None,
                                      worker_dashboard_address=None) as lc, \
                distributed.Client(lc, set_as_default=False) as client:
            client.wait_for_workers(w, timeout=120)
            out = os.path.join(out_dir, f"dask-{w}.keep.txt")
            wall, load = timed(paths, out, client=client, method=a.method)
        same = open(out, "rb").read() == ref_bytes
        rows.append((f"Dask LocalCluster, {w} worker process(es) x 1 thread", wall, load,
                     "identical" if same else "DIFFERENT"))
    lines = ["| runner | wall | load avg | keep-list vs reference |", "|---|---|---|---|"]
    for name, wall, load, same in rows:
        lines.append(f"| {name} | {wall:.1f} s | {load:.1f} | {same} |")
    bench_score.publish(
        f"Export: {a.n:,} rows x {a.classes} classes, {a.features or 'no'} features, "
        f"{a.dtype}, in {a.shards} shards. Method: {a.method}. 'load avg': 1-minute load "
        "average before the row ran.", lines,
        key="bench_dask" if a.method == "epic" else f"bench_dask_{a.method}",
        write=a.write_docs)

if __name__ == "__main__":
    main()
