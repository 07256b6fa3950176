"""Internal choices, measured: k-d tree options and duplicate-row detection.

    python benchmarks/bench_kdtree.py

Prints CPU seconds (median of --repeat) for
- scipy cKDTree build + query (k=21) on one 100k-example class of logit
  gradients from the synthetic 1M export's generator: scipy's defaults vs
  the options gradscore uses;
- np.unique over rows (axis=0) vs over the rows' bytes, on 1281 x 1000
  (an ImageNet-sized class) and 100000 x 10.
"""

import argparse
import statistics
import time

import numpy as np
from scipy.spatial import cKDTree

from gradscore.gradients import logit_gradients
from gradscore.neighbors._exact import _KDTREE_OPTIONS


def cpu(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def class_gradients(n, c, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c))
    z[:, 0] += rng.choice([8.0, 5.0, 2.0], size=n, p=[0.7, 0.2, 0.1])
    # float16 storage, as in the 1M benchmark export
    z = z.astype(np.float16).astype(np.float32)
    return logit_gradients(np.zeros(n, dtype=int), z)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    x = class_gradients(100_000, 10)
    print("| k-d tree (100k x 10, k=21, workers=1) | CPU s |\n|---|---|")
    for name, opts in [("scipy defaults", {}), (f"gradscore {_KDTREE_OPTIONS}", _KDTREE_OPTIONS)]:
        t = cpu(lambda: cKDTree(x, **opts).query(x, k=21, workers=1), a.repeat)
        print(f"| {name} | {t:.2f} |")
    print("\n| duplicate rows | np.unique(axis=0) s | np.unique(bytes) s |\n|---|---|---|")
    rng = np.random.default_rng(1)
    for shape in [(1281, 1000), (100_000, 10)]:
        y = rng.normal(size=shape)
        v = np.ascontiguousarray(y).view(np.dtype((np.void, y.itemsize * y.shape[1]))).ravel()
        ta = cpu(lambda: np.unique(y, axis=0, return_inverse=True), a.repeat)
        tb = cpu(lambda: np.unique(v, return_inverse=True), a.repeat)
        print(f"| {shape[0]} x {shape[1]} | {ta:.4f} | {tb:.4f} |")


if __name__ == "__main__":
    main()
