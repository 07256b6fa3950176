"""Cost of one per-class task, the unit the scale-out design multiplies.

Times :func:`gradscore.scoring.tasks.score_class` on one synthetic class of the
ImageNet shape (1,281 rows x 1,000 logits, the kernel matrix kept, 20%
medoids), with ``--large`` also of the 1M x 10 shape (100,000 rows x 10
logits: k-d tree and EPIC without the matrix) and with ``--shape N C`` of
any other, in CPU seconds of this process (one BLAS thread), median of
``--repeat`` (one run for classes over 10,000 rows), plus the parts of the
ImageNet class and of a CIFAR-10 class (5,000 x 10). CPU time, not wall time: on
a shared machine it is the figure that says what a dedicated core would take.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_class_task.py
    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_class_task.py \
        --shape 100000 100 --no-parts      # one class of the 10M x 100 export
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_score  # noqa: E402

from gradscore import neighbors as nb  # noqa: E402
from gradscore.gradients import class_gradients  # noqa: E402
from gradscore.scoring.memory import check_params  # noqa: E402
from gradscore.scoring.tasks import canonical_order as _canonical_order  # noqa: E402
from gradscore.neighbors._dense import _similarity_and_knn, lower_gram  # noqa: E402
from gradscore.selection.epic import epic_exact  # noqa: E402
from gradscore.selection._exact import (BLOCK as EXACT_BLOCK, NO_STATS,  # noqa: E402
                                        exact_facility_location, kd_order)
from gradscore.scoring.tasks import ClassData, score_class  # noqa: E402


def cpu(func, repeat, first=None):
    """Median CPU time of ``repeat`` calls after a warm-up call; the warm-up's
    own time (numba compilation included) goes to ``first`` when given."""
    t = time.process_time()
    func()  # warm (numba, caches)
    if first is not None:
        first.append(time.process_time() - t)
    times = []
    for _ in range(repeat):
        t = time.process_time()
        func()
        times.append(time.process_time() - t)
    return statistics.median(times)


def synthetic_class(n, c, label, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)).astype(np.float32)
    z[:, label] += rng.choice([8.0, 5.0, 2.0], size=n, p=[0.7, 0.2, 0.1])
    return z


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--large", action="store_true",
                    help="also the 100,000 x 10 class (minutes of CPU)")
    ap.add_argument("--shape", nargs=2, type=int, action="append", default=[],
                    metavar=("N", "C"), help="also one class of N rows x C logits (repeatable)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--no-parts", action="store_true",
                    help="skip the parts of the 1,281 x 1,000 and 5,000 x 10 classes")
    a = ap.parse_args()
    rows = []
    shapes = [(1281, 1000)] + ([(100_000, 10)] if a.large else []) + [tuple(s) for s in a.shape]
    for n, c in shapes:
        z = synthetic_class(n, c, 3)
        params = check_params(num_classes=c)
        budget = int(0.2 * n)
        first = []
        t = cpu(lambda: score_class(ClassData(3, z, n_medoids=budget), params),
                1 if n > 10_000 else a.repeat, first)
        rows.append((f"score_class, {n:,} x {c}", t, t / n * 1e3))
        rows.append((f"score_class, {n:,} x {c}, first call in this process (compiles "
                     "the numba code it meets first)", first[0], first[0] / n * 1e3))
    z = synthetic_class(1281, 1000, 3)
    g = class_gradients(np.full(1281, 3), z, num_classes=1000)
    gram = lower_gram(g)
    sim = nb.similarity_and_knn(g, 20, 1.0 / g.dim)[0]
    sq = g.sqnorms()
    groups = np.arange(g.n)
    knn = (np.empty((g.n, 20), dtype=np.int64), np.empty((g.n, 20)))
    parts = [
        ("gradients (softmax)", lambda: class_gradients(np.full(1281, 3), z, num_classes=1000)),
        ("canonical row order", lambda: _canonical_order(z)),
        ("Gram matrix g @ g.T (BLAS)", lambda: lower_gram(g)),
        ("duplicate rows (hash)", lambda: g.duplicate_groups()),
        ("one pass: distances, k-NN, EPIC kernel (copy of the Gram included)",
         lambda: _similarity_and_knn(gram.copy(), sq, groups, 1e-3, *knn)),
        ("EPIC greedy and assignment, 256 medoids, on the kernel matrix",
         lambda: epic_exact(g, n_medoids=256, cluster_threshold=1, sim=sim)),
    ]
    for name, func in [] if a.no_parts else parts:
        t = cpu(func, a.repeat)
        rows.append((f"1,281 x 1,000 part: {name}", t, t / 1281 * 1e3))
    # The CIFAR-10 class: 5,000 x 10, explicit gradients, the kernel matrix kept.
    z = synthetic_class(5000, 10, 3)
    g = class_gradients(np.full(5000, 3), z, num_classes=10)
    order = kd_order(g.values, EXACT_BLOCK // 2)
    xt = np.ascontiguousarray(g.values[order].T)
    sqn = np.ascontiguousarray((xt ** 2).sum(axis=0))
    none = np.zeros((0, 5000))
    sim = np.zeros((5000, 5000))
    small = [
        ("k-d tree leaf order", lambda: kd_order(g.values, EXACT_BLOCK // 2)),
        ("density k-NN (k-d tree, k = 20)", lambda: nb.kneighbors(g, 20, backend="kdtree")),
        ("EPIC kernel matrix (fill)", lambda: exact_facility_location(
            xt, none, none, sqn, True, 1, 0.1, order, True, sim, True, NO_STATS)),
        ("EPIC greedy on the matrix, 1,000 medoids", lambda: exact_facility_location(
            xt, none, none, sqn, True, 1000, 0.1, order, True, sim, False, NO_STATS)),
    ]
    for name, func in [] if a.no_parts else small:
        t = cpu(func, a.repeat)
        rows.append((f"5,000 x 10 part: {name}", t, t / 5000 * 1e3))
    load = os.getloadavg()[0]
    lines = ["| task | CPU s | CPU ms per row |", "|---|---|---|"]
    lines += [f"| {name} | {t:.3f} | {per:.3f} |" for name, t, per in rows]
    text = (f"Machine: {bench_score.machine()}. Date: {time.strftime('%Y-%m-%d')}. 1-minute "
            f"load average at the end: {load:.1f} (2 cores; CPU seconds grow too when the "
            f"cores are shared).\nCommand: `OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')} python "
            f"benchmarks/bench_class_task.py {' '.join(sys.argv[1:])}`\n\n" + "\n".join(lines))
    print(text)
    if a.write_docs:
        bench_score.write_docs(text, key="bench_class_task")


if __name__ == "__main__":
    main()
