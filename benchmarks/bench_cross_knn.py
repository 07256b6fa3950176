"""k-NN backends for the cross-class search of deep-knn and groups: time, memory, agreement.

Each row's ``k`` nearest other rows among *all* rows (every class), self
excluded, on a synthetic export (``synth.py``, float16 on disk) with planted
poisons: 0.5% of labels flipped (dirty-label singles) and 10 clumps of 30
rows of one class moved onto a target of another (clean-label groups).
Every backend runs in a fresh process under ``/usr/bin/time`` (wall, CPU,
peak RSS of that process); its lists are compared with the exact search's:

- recall: the share of the exact k nearest a backend finds;
- decisions: deep-knn's and groups' drop sets from the backend's lists
  against those from the exact lists (Jaccard), for the backends that
  also give each class's own lists (``exact``, ``cells``).

Backends: ``exact`` (gradscore's blocked BLAS search, every cell probed),
``cells`` (gradscore's default: k-means cells, the row's nearest cells of
its class and of other classes), ``faiss-flat`` (IndexFlatL2, exact),
``faiss-ivf`` (IndexIVFFlat, nlist = N / 1024, nprobe 3), ``hnswlib``
(M 16, ef 100), ``pynndescent`` (NNDescent's graph). faiss-cpu and hnswlib
are not gradscore dependencies: ``pip install faiss-cpu hnswlib``.

    python benchmarks/bench_cross_knn.py --n 100000 --features 512 --write-docs
    python benchmarks/bench_cross_knn.py --blas-rate   # float32 BLAS GFLOP/s, one thread

``--probes P,C ...`` runs the cells search in this process with ``P`` cells
of the row's class and ``C`` of other classes, against the exact lists a
plain run saved (benchmarks/out/cross-exact-NxD.npz); ``--profile FILE``
profiles one single-threaded cells search over an export's features:

    python benchmarks/bench_cross_knn.py --n 100000 --features 512 --probes 2,1 2,2 2,4 4,4
    python benchmarks/bench_cross_knn.py --n 100000 --features 512 --probes 2,1 --min-cell-divisor 1024
    python benchmarks/bench_cross_knn.py --profile benchmarks/data/s120k-120000x10x512-float16.h5
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

K = 20
BACKENDS = ["exact", "cells", "faiss-flat", "faiss-ivf", "hnswlib", "pynndescent"]


def planted(n, d, seed=0, classes=10, flip=0.005, n_groups=10, group_size=30):
    """The synthetic export with poisons planted; cached in benchmarks/data/ (float16)."""
    path = os.path.join(HERE, "data", f"cross-planted-{n}x{classes}x{d}-s{seed}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["x"], z["y"], z["poison"]
    import h5py
    import synth
    h5 = os.path.join(HERE, "data", f"cross-{n}x{classes}x{d}-float16.h5")
    if not os.path.exists(h5):
        synth.make(h5, n=n, classes=classes, features=d, dtype="float16", seed=seed)
    with h5py.File(h5) as f:
        x, y = f["features"][:], f["labels"][:].astype(np.int64)
    rng = np.random.default_rng(seed)
    poison = np.zeros(n, bool)
    f = rng.choice(n, int(flip * n), replace=False)
    y[f] = (y[f] + rng.integers(1, classes, f.size)) % classes
    poison[f] = True
    for g in range(n_groups):
        t = rng.choice(np.flatnonzero(~poison))
        b = (y[t] + 1 + g % (classes - 1)) % classes
        mem = rng.choice(np.flatnonzero((y == b) & ~poison), group_size, replace=False)
        x[mem] = (x[t].astype(np.float32)
                  + 0.15 * rng.standard_normal((group_size, d))).astype(np.float16)
        poison[mem] = True
    np.savez(path, x=x, y=y, poison=poison)
    return x, y, poison


def child(backend, n, d, out):
    """Run one backend on the planted export; save its lists to ``out``."""
    x16, y, _ = planted(n, d)
    x = x16.astype(np.float32)
    own = None
    if backend in ("exact", "cells"):
        from threadpoolctl import threadpool_limits
        from concurrent.futures import ThreadPoolExecutor
        from gradscore.neighbors._cross import ClassInput, cross_neighbors
        inputs = [ClassInput(c, np.flatnonzero(y == c), features=x) for c in np.unique(y)]
        with ThreadPoolExecutor(os.cpu_count()) as pool, threadpool_limits(1, "blas"):
            r = cross_neighbors(inputs, k=K, n_rows=n, n_features=d, executor=pool,
                                probes="all" if backend == "exact" else "auto")
        idx = r.indices
        own_idx = np.empty_like(idx)
        own_d2 = np.empty(idx.shape, np.float32)
        for c, (rows, oi, od) in r.own.items():
            own_idx[rows], own_d2[rows] = oi, od
        own = (own_idx, own_d2)
    elif backend.startswith("faiss"):
        import faiss
        if backend == "faiss-flat":
            index = faiss.IndexFlatL2(d)
        else:
            q = faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(q, d, max(1, n // 1024))
            index.train(x[np.random.default_rng(0).choice(n, min(n, 64 * (n // 1024 + 1)),
                                                          replace=False)])
            index.nprobe = 3
        index.add(x)
        _, idx = index.search(x, K + 1)
        idx = _drop_self(idx)
    elif backend == "hnswlib":
        import hnswlib
        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=0)
        index.add_items(x, np.arange(n))
        index.set_ef(100)
        idx, _ = index.knn_query(x, k=K + 1)
        idx = _drop_self(idx.astype(np.int64))
    elif backend == "pynndescent":
        from pynndescent import NNDescent
        idx = _drop_self(NNDescent(x, n_neighbors=K + 1, random_state=0, low_memory=True,
                                   compressed=True).neighbor_graph[0])
    np.savez(out, idx=idx, **({} if own is None else {"own_idx": own[0], "own_d2": own[1]}))


def _drop_self(idx):
    """Remove each row's own index from K + 1 candidates (or the last, if absent)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = np.ones_like(is_self)
    keep[np.arange(n), np.argmax(is_self, axis=1)] = False
    return idx[keep].reshape(n, -1).astype(np.int64)


def decisions(y, idx, own_idx, own_d2, x):
    """deep-knn's and groups' drop masks from the lists."""
    from gradscore.selection.feature_space import deep_knn_agreement
    from gradscore.selection.groups import foreign_groups, tree_edges
    num = int(y.max()) + 1
    _, deep = deep_knn_agreement(y, idx, num)
    trees = []
    for c in range(num):
        rows = np.flatnonzero(y == c)
        loc = np.full(y.size, -1)
        loc[rows] = np.arange(rows.size)
        trees.append((c, rows) + tree_edges(loc[own_idx[rows]],
                                            own_d2[rows].astype(np.float64))[:2])
    group, _ = foreign_groups(y, idx, trees, num_classes=num, features=x)
    _, deep2 = deep_knn_agreement(y, idx, num, ignore=group)
    return deep, group | deep2


def blas_rate(m=4096, n=8192, d=512, repeat=5):
    """GFLOP/s of a float32 (m x d) @ (d x n) product on one BLAS thread (median of ``repeat``)."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, d)).astype(np.float32)
    b = rng.standard_normal((n, d)).astype(np.float32)
    times = []
    with threadpool_limits(1, "blas"):
        a @ b.T
        for _ in range(repeat):
            t = time.perf_counter()
            a @ b.T
            times.append(time.perf_counter() - t)
    rate = 2 * m * n * d / np.median(times) / 1e9
    print(f"float32 BLAS, one thread: {rate:.1f} GFLOP/s (load avg {os.getloadavg()[0]:.1f})")
    return rate


def jaccard(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else (a & b).sum() / u


def run(backend, n, d, out_dir):
    out = os.path.join(out_dir, f"cross-{backend}-{n}x{d}.npz")
    load = os.getloadavg()[0]
    cmd = ["/usr/bin/time", "-f", "%e %M %U %S", sys.executable, __file__, "--child", backend,
           "--n", str(n), "--features", str(d), "--out", out]
    # OpenMP threads (faiss) sleep instead of spinning while they wait: on a
    # shared machine spinning threads stall each other for minutes.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        return dict(backend=backend, error=proc.stderr.strip().splitlines()[-1])
    wall, rss, user, system = proc.stderr.strip().splitlines()[-1].split()
    return dict(backend=backend, wall=float(wall), cpu=float(user) + float(system),
                rss=int(rss) / 1024, load=load, out=out)


def _cells_search(inputs, n, d, **kw):
    from threadpoolctl import threadpool_limits
    from gradscore.neighbors._cross import cross_neighbors
    with threadpool_limits(1, "blas"):
        return cross_neighbors(inputs, k=K, n_rows=n, n_features=d, **kw)


def probes_sweep(n, d, settings):
    """Decisions of the cells search at other probe counts, against the saved exact lists."""
    from concurrent.futures import ThreadPoolExecutor
    from gradscore.neighbors._cross import ClassInput
    ref_path = os.path.join(HERE, "out", f"cross-exact-{n}x{d}.npz")
    if not os.path.exists(ref_path):
        sys.exit(f"{ref_path} is missing: run the benchmark with the exact backend first")
    x16, y, _ = planted(n, d)
    x = x16.astype(np.float32)
    ref = dict(np.load(ref_path))
    ref_dec = decisions(y, ref["idx"], ref["own_idx"], ref["own_d2"], x)
    inputs = [ClassInput(c, np.flatnonzero(y == c), features=x) for c in np.unique(y)]
    for setting in settings:
        p, c = (int(v) for v in setting.split(","))
        t = time.perf_counter()
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            r = _cells_search(inputs, n, d, executor=pool, probes=p, cross_probes=c)
        wall = time.perf_counter() - t
        own_idx = np.empty_like(r.indices)
        own_d2 = np.empty(r.indices.shape, np.float32)
        for _, (rows, oi, od) in r.own.items():
            own_idx[rows], own_d2[rows] = oi, od
        dec = decisions(y, r.indices, own_idx, own_d2, x)
        print(f"probes {p}, cross probes {c}: {wall:.1f} s; deep-knn {int(dec[0].sum())} "
              f"(Jaccard {jaccard(dec[0], ref_dec[0]):.3f}), groups {int(dec[1].sum())} "
              f"(Jaccard {jaccard(dec[1], ref_dec[1]):.3f}); load avg {os.getloadavg()[0]:.1f}")


def profile_search(path):
    """cProfile of one single-threaded cells search over an export's features."""
    import cProfile
    import pstats
    import gradscore
    from gradscore.neighbors._cross import ClassInput
    ep = gradscore.read_epoch(path)
    x = np.asarray(ep.features, dtype=np.float32)
    n, d = x.shape
    inputs = [ClassInput(c, np.flatnonzero(ep.labels == c), features=x)
              for c in np.unique(ep.labels)]
    _cells_search(inputs[:1], n, d)                # compile the kernels first
    prof = cProfile.Profile()
    prof.enable()
    _cells_search(inputs, n, d)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--blas-rate", action="store_true",
                    help="print one thread's float32 BLAS rate (what an exact search costs)")
    ap.add_argument("--probes", nargs="+", metavar="P,C",
                    help="cells search in process at these probe counts, against the exact lists")
    ap.add_argument("--min-cell-divisor", type=int, default=None,
                    help="with --probes: dissolve k-means cells under cell_size // this many "
                         "rows (gradscore.neighbors._cross.MIN_CELL_DIVISOR; never under k + 1)")
    ap.add_argument("--profile", metavar="FILE", help="profile one cells search over FILE")
    a = ap.parse_args()
    if a.min_cell_divisor is not None:
        import gradscore.neighbors._cross as cross
        cross.MIN_CELL_DIVISOR = a.min_cell_divisor
    if a.blas_rate:
        return blas_rate()
    if a.probes:
        return probes_sweep(a.n, a.features, a.probes)
    if a.profile:
        return profile_search(a.profile)
    if a.child:
        return child(a.child, a.n, a.features, a.out)
    import bench_score
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    x16, y, poison = planted(a.n, a.features)
    backends = ["exact"] + [b for b in a.backends if b != "exact"]
    rows = []
    ref = None
    for b in backends:
        print(f"{b} ...", file=sys.stderr)
        r = run(b, a.n, a.features, out_dir)
        rows.append(r)
        if "error" in r:
            continue
        z = dict(np.load(r["out"]))  # read once (NpzFile reads on every access)
        if b == "exact":
            ref = z
            x = x16.astype(np.float32)
            ref_dec = decisions(y, z["idx"], z["own_idx"], z["own_d2"], x)
        hit = np.mean([np.isin(ref["idx"][i], z["idx"][i]).mean()
                       for i in range(0, a.n, max(1, a.n // 20000))])
        r["recall"] = hit
        if "own_idx" in z:
            dec = decisions(y, z["idx"], z["own_idx"], z["own_d2"], x)
            r["jaccard_deep"] = jaccard(dec[0], ref_dec[0])
            r["jaccard_groups"] = jaccard(dec[1], ref_dec[1])
            r["dropped"] = (int(dec[0].sum()), int(dec[1].sum()))
            r["poisons_dropped"] = float(dec[1][poison].mean())
        print(json.dumps({k: v for k, v in r.items() if k != "out"}), file=sys.stderr)
    lines = ["| backend | wall | CPU user+sys | peak RSS | recall of the exact 20-NN | "
             "deep-knn drops (Jaccard vs exact) | groups drops (Jaccard vs exact) | "
             "poisons dropped by groups | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | failed: {r['error']} |||||||")
            continue
        dec = (f"{r['dropped'][0]:,} ({r['jaccard_deep']:.3f})", f"{r['dropped'][1]:,} "
               f"({r['jaccard_groups']:.3f})", f"{r['poisons_dropped']:.1%}") \
            if "dropped" in r else ("-", "-", "-")
        lines.append(f"| {r['backend']} | {r['wall']:.1f} s | {r['cpu']:.1f} s | "
                     f"{r['rss']:.0f} MiB | {r['recall']:.3f} | {dec[0]} | {dec[1]} | "
                     f"{dec[2]} | {r['load']:.1f} |")
    bench_score.publish(
        f"Export: {a.n:,} rows x 10 classes x {a.features} features (synth.py, float16) "
        f"with {int(poison.sum())} planted poisons; k = {K}; each backend in a fresh "
        "process. 'load avg': 1-minute load average before the row ran (2 cores).",
        lines, key=f"bench_cross_knn_{a.n}x{a.features}", write=a.write_docs)


if __name__ == "__main__":
    main()
