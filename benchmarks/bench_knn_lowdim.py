"""Exact k-NN within one class of low-dimensional gradients: which backend.

EPIC's density score needs each row's k nearest other rows of its class. For
classes that keep EPIC's kernel matrix (up to ``--dense-max`` rows) they are
read off the pass that fills it; above that a search runs. This times, on
one class of logit gradients (C = 10, k = 20), scipy's cKDTree (one worker
and every core), faiss-cpu's exact ``IndexFlatL2``, and hnswlib (approximate:
its recall against the exact answer is reported), side by side in one
process, median of ``--repeat``.

    python benchmarks/bench_knn_lowdim.py --sizes 12000 30000 100000 --write-docs
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench_score  # noqa: E402
import synth  # noqa: E402
from gradscore.gradients import DenseGradients, logit_gradients  # noqa: E402
from gradscore.neighbors._exact import kdtree_kneighbors, remove_self  # noqa: E402


def kdtree(x, k, workers):
    from scipy.spatial import cKDTree
    dist, idx = cKDTree(x, leafsize=64, balanced_tree=False,
                        compact_nodes=False).query(x, k=k + 1, workers=workers)
    return remove_self(idx, dist ** 2, k)


def faiss_flat(x, k):
    import faiss
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x.astype(np.float32))
    d2, idx = index.search(x.astype(np.float32), k + 1)
    return remove_self(idx, d2.astype(np.float64), k)


def hnsw(x, k):
    import hnswlib
    index = hnswlib.Index(space="l2", dim=x.shape[1])
    index.init_index(max_elements=x.shape[0], ef_construction=200, M=16, random_seed=0)
    index.add_items(x.astype(np.float32))
    index.set_ef(max(50, 2 * k))
    idx, d2 = index.knn_query(x.astype(np.float32), k=k + 1)
    return remove_self(idx.astype(np.int64), d2.astype(np.float64), k)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12_000, 30_000, 100_000])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    backends = [("cKDTree, 1 worker", lambda x: kdtree(x, a.k, 1)),
                ("cKDTree, every core", lambda x: kdtree(x, a.k, -1)),
                ("faiss-cpu IndexFlatL2 (float32)", lambda x: faiss_flat(x, a.k)),
                ("hnswlib (M 16, ef 200/50, approximate)", lambda x: hnsw(x, a.k))]
    lines = ["| rows | backend | time (median) | exact neighbour sets |", "|---|---|---|---|"]
    for n in a.sizes:
        rng = np.random.default_rng(0)
        y = np.zeros(n, dtype=np.int64)
        g = logit_gradients(y, synth.logits_batch(rng, y, 10))
        ref, ref_d2 = kdtree_kneighbors(DenseGradients(g), a.k)
        for name, run in backends:
            times = []
            for _ in range(a.repeat):
                t = time.perf_counter()
                idx, d2 = run(g)
                times.append(time.perf_counter() - t)
            same = float(np.mean([len(set(p) & set(q)) / a.k for p, q in zip(idx, ref)]))
            lines.append(f"| {n:,} | {name} | {statistics.median(times):.3f} s | "
                         f"{100 * same:.2f}% |")
            print(lines[-1], flush=True)
    bench_score.publish(
        f"One class of 10-class logit gradients (synthetic, half-trained), k = {a.k}; "
        f"'exact neighbour sets': share of each row's k neighbours that are the k-d tree's "
        f"(ties at the k-th distance can make an exact method differ). Other work paused; "
        f"1-minute load average at the end {os.getloadavg()[0]:.1f}.", lines,
        key="bench_knn_lowdim", write=a.write_docs)


if __name__ == "__main__":
    main()
