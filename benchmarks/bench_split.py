"""Where the time of one ``score_files`` run goes: read, gradients, neighbours, selection, write.

Runs the real :func:`gradscore.score_files` in this process with one thread
(``n_jobs=1``, so stage times add up to the wall time) and wraps the stage
functions it calls with timers:

- read: ``read_epoch`` (in memory), or ``read_index`` + ``spill_piece`` +
  ``load_class`` (spilled);
- gradients: ``class_gradients`` and the canonical row order;
- neighbours: k-NN search (k-d tree, brute force, or, on EPIC's exact path,
  the one pass that computes the k-NN and EPIC's kernel from the Gram
  matrix) and the density score;
- selection: EPIC, the drop rules and the cap;
- write: the keep-list;
- other: the rest (joining ids, gathering, Python).

    python benchmarks/bench_split.py --n 1000000 --classes 10 --features 512 --dtype float16 --write-docs
"""

import argparse
from collections import defaultdict
import functools
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_score  # noqa: E402

import gradscore  # noqa: E402
from gradscore.scoring import files, rules, tasks  # noqa: E402
from gradscore.selection import epic as epic_mod  # noqa: E402
from gradscore.io import partition  # noqa: E402
import gradscore.neighbors as nb  # noqa: E402

TIMES = defaultdict(float)

WRAP = [
    ("read", files, ["read_epoch", "read_index", "spill_piece"]),
    ("read", partition, []),
    ("read", tasks, ["load_class"]),
    ("gradients", rules, ["class_gradients"]),
    ("gradients", tasks, ["canonical_order"]),
    ("neighbours", nb, ["kneighbors", "similarity_and_knn"]),
    ("neighbours", rules, ["knn_density"]),
    # EPIC's greedy (and, for classes that keep the kernel matrix, the pass
    # that fills it).
    ("selection", epic_mod, ["epic_exact"]),
    ("selection", tasks, ["apply_cap"]),
    ("selection", rules, ["drop_by_fraction", "drop_by_robust_threshold"]),
    ("write", files, ["_write_keeplist_to", "_write_scores_to"]),
]


def _timed(stage, func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            TIMES[stage] += time.perf_counter() - t
    return wrapper


def install():
    for stage, module, names in WRAP:
        for name in names:
            setattr(module, name, _timed(stage, getattr(module, name)))


def run(path, spill, out_dir):
    TIMES.clear()
    t = time.perf_counter()
    result, _, _ = gradscore.score_files(path, output=os.path.join(out_dir, "split.keep.txt"),
                                         spill=spill, n_jobs=1)
    total = time.perf_counter() - t
    row = {k: TIMES[k] for k in ("read", "gradients", "neighbours", "selection", "write")}
    row["other"] = total - sum(row.values())
    row["total"] = total
    row["dropped"] = int((~result.keep).sum())
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--spill", nargs="+", default=["never", "always"])
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    path = bench_score.ensure("million" if a.n == 1_000_000 else "split", a.n, a.classes,
                              a.features, a.dtype)
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    install()
    # numba kernels compile (or load from cache) on first use: warm them on a
    # small export so the first timed run does not pay for it.
    small = bench_score.ensure("quick", 5_000, 5, 16, "float32")
    gradscore.score_files(small, output=os.path.join(out_dir, "warm.keep.txt"), n_jobs=1)
    rows = []
    for spill in a.spill:
        load = os.getloadavg()[0]
        print(f"spill={spill} ...", file=sys.stderr)
        rows.append(dict(run(path, spill, out_dir), spill=spill, load=load))
    lines = ["| spill | read | gradients | neighbours | selection | write | other | total "
             "| dropped | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['spill']} | " + " | ".join(
                f"{r[k]:.1f} s" for k in ("read", "gradients", "neighbours", "selection",
                                          "write", "other", "total"))
            + f" | {r['dropped']:,} | {r['load']:.1f} |")
    bench_score.publish(
        f"One thread (n_jobs=1), in-process, numba kernels warmed. Export: {a.n:,} x "
        f"{a.classes} classes x {a.features} features, {a.dtype}; default method (epic, "
        "logits gradient, which does not read the features). 'load avg': 1-minute load "
        "average before the row ran (2 cores).", lines, key="bench_split", write=a.write_docs)

if __name__ == "__main__":
    main()
