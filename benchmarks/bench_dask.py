"""Scaling on a local Dask cluster: 1, 2, 4 worker processes on a sharded export.

Generates the export once (benchmarks/data/, git-ignored), in ``--shards``
files of contiguous id ranges, scores it with local threads (reference),
then on a ``distributed.LocalCluster`` of 1, 2 and 4 single-threaded worker
processes on 127.0.0.1, and checks that every run wrote the same keep-list.
Wall time covers the whole ``score_files`` call (partition, class tasks,
gather, keep-list), not the cluster's start.

    python benchmarks/bench_dask.py --n 10000000 --classes 100 --shards 8 --write-docs
"""

import argparse
import os
import sys
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--features", type=int, default=0)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    import distributed

    paths = ensure_shards(a.n, a.classes, a.features, a.dtype, a.shards)
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    ref = os.path.join(out_dir, "dask-ref.keep.txt")
    print("local threads ...", file=sys.stderr)
    wall, load = timed(paths, ref, spill="always")
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
            wall, load = timed(paths, out, client=client)
        same = open(out, "rb").read() == ref_bytes
        rows.append((f"Dask LocalCluster, {w} worker process(es) x 1 thread", wall, load,
                     "identical" if same else "DIFFERENT"))
    lines = ["| runner | wall | load avg | keep-list vs reference |", "|---|---|---|---|"]
    for name, wall, load, same in rows:
        lines.append(f"| {name} | {wall:.1f} s | {load:.1f} | {same} |")
    bench_score.publish(
        f"Export: {a.n:,} rows x {a.classes} classes, {a.features or 'no'} features, "
        f"{a.dtype}, in {a.shards} shards. Default method (epic, logits gradient). 'load "
        "avg': 1-minute load average before the row ran.", lines, key="bench_dask",
        write=a.write_docs)

if __name__ == "__main__":
    main()
