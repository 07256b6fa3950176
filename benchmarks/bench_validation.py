"""Cost of the input checks on the ImageNet-shaped export (1,281,167 x 1000 logits).

    python benchmarks/bench_validation.py   # data from: bench_score.py --configs imagenet

Compares a whole-array finiteness check with the blockwise one gradscore uses,
and times the array validation that score() runs and score_files skips (the
reader has already checked the same rules). Medians of 3; peak temporary
allocations as seen by tracemalloc.
"""

import os
import time
import tracemalloc

import numpy as np

import gradscore
from gradscore._validation import check_float_matrix, check_labels, check_finite
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "imagenet-1281167x1000x0-float16.h5")
ep = gradscore.read_epoch(DATA, need_features=False)
x, y = ep.logits, ep.labels
def old_check(x):
    finite = np.isfinite(x).all(axis=1)
    assert finite.all()
def measure(fn):
    tracemalloc.start(); t = time.perf_counter(); fn(); w = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop(); return w, peak / 2**20
for name, fn in [("old full-array finiteness check", lambda: old_check(x)),
                 ("new blockwise check_finite", lambda: check_finite(x, "logits")),
                 ("pass score_files no longer makes (check_labels + check_float_matrix)",
                  lambda: (check_labels(y, num_classes=1000), check_float_matrix(x, "classes", n_rows=y.size, n_cols=1000, where="logits")))]:
    r = [measure(fn) for _ in range(3)]
    print(f"{name}: median {sorted(a for a,_ in r)[1]:.2f} s, peak temp {max(b for _,b in r):.0f} MiB")
