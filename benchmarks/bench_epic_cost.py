"""Where EPIC's exact greedy spends its work: the cost model a faster engine must beat.

For one class of synthetic logit gradients (``--kind plain|fitted|saturated``,
as ``benchmarks/synth.py`` makes them) of each ``--n``, runs today's exact
greedy without the kernel matrix (``epic_exact(cache_max=0)``) with its work
counters, and prints per phase of the greedy (step 0, steps 1-9, 10-99,
100-999, 1000 on): candidates evaluated, full refreshes, and kernel values
computed by each (as a share of n^2). It also prints how close the first
step's gains are to each other (the gap between the best candidate and the
10th / 100th / 1000th, relative to the best), the precision an upper bound
would need to spare a candidate its exact evaluation, next to the slack of
the bounds a block of ``BLOCK`` rows allows (n * median block radius / m).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_epic_cost.py --n 5000 10000 20000 \\
        --kind plain fitted --write-docs
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from gradscore.gradients import DenseGradients  # noqa: E402
from gradscore.selection._exact import BLOCK, kd_order  # noqa: E402
from gradscore.selection.epic import epic_exact  # noqa: E402
from synth import logits_batch  # noqa: E402

PHASES = [(0, 1), (1, 10), (10, 100), (100, 1000), (1000, None)]


def class_gradients(n, classes, kind, seed=0, label=3):
    """One class's logit gradients ``softmax(z) - onehot(label)``."""
    rng = np.random.default_rng(seed)
    y = np.full(n, label)
    z = logits_batch(rng, y, classes, fitted=False if kind == "plain" else kind).astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[:, label] -= 1.0
    return p


def first_step_gaps(g, ranks=(10, 100, 1000), chunk=2048):
    """The first step's gains F(j) = sum_i exp(-||g_i - g_j|| / m): the best,
    and its relative gap to the candidates ranked ``ranks``."""
    n, m = g.shape
    f = np.empty(n)
    sq = (g * g).sum(1)
    for s in range(0, n, chunk):
        d2 = sq[s:s + chunk, None] + sq[None, :] - 2.0 * g[s:s + chunk] @ g.T
        f[s:s + chunk] = np.exp(-np.sqrt(np.maximum(d2, 0.0)) / m).sum(1)
    top = np.sort(f)[::-1]
    return top[0], [(top[0] - top[k]) / top[0] for k in ranks if k < n]


def block_slack(g):
    """n * (median radius of a block of BLOCK rows in the k-d order) / m,
    relative to n: what a bound from block geometry can tell apart."""
    n, m = g.shape
    x = g[kd_order(g, BLOCK // 2)]
    rad = [np.sqrt(((x[s:s + BLOCK] - x[s:s + BLOCK].mean(0)) ** 2).sum(1)).max()
           for s in range(0, n, BLOCK)]
    return float(np.median(rad)) / m


def measure(n, classes, kind):
    g = class_gradients(n, classes, kind)
    budget = int(0.2 * n)
    stats = np.zeros((budget, 4), dtype=np.int64)
    grads = DenseGradients(g)
    epic_exact(DenseGradients(g[:256]), n_medoids=50, cluster_threshold=1, cache_max=0)  # JIT
    t = time.process_time()
    epic_exact(grads, n_medoids=budget, cluster_threshold=1, cache_max=0, stats=stats)
    cpu = time.process_time() - t
    best, gaps = first_step_gaps(g)
    phases = []
    for lo, hi in PHASES:
        if lo >= budget:
            break
        s = stats[lo:hi]
        phases.append(dict(steps=f"{lo}-{(hi or budget) - 1}", evals=int(s[:, 0].sum()),
                           refreshes=int(s[:, 1].sum()),
                           eval_share=s[:, 2].sum() / n ** 2, refresh_share=s[:, 3].sum() / n ** 2))
    return dict(n=n, kind=kind, budget=budget, cpu=cpu, gaps=gaps, slack=block_slack(g),
                phases=phases, total_share=stats[:, 2:].sum() / n ** 2)


def table(rows):
    out = ["| class | CPU s | phase (steps) | evaluated | refreshes | kernel values by "
           "evaluations / refreshes (x n^2) |", "|---|---|---|---|---|---|"]
    for r in rows:
        for i, p in enumerate(r["phases"]):
            head = (f"{r['n']:,} x 10 {r['kind']} ({r['budget']:,} medoids)", f"{r['cpu']:.2f}") \
                if i == 0 else ("", "")
            out.append(f"| {head[0]} | {head[1]} | {p['steps']} | {p['evals']:,} | "
                       f"{p['refreshes']} | {p['eval_share']:.2f} / {p['refresh_share']:.2f} |")
        out.append(f"| | | all | | | {r['total_share']:.2f} |")
    out += ["", "| class | first step: relative gap from the best gain to the 10th / 100th / "
            "1000th | block-bound slack (median block radius / m) |", "|---|---|---|"]
    for r in rows:
        gaps = " / ".join(f"{x:.1e}" for x in r["gaps"])
        out.append(f"| {r['n']:,} x 10 {r['kind']} | {gaps} | {r['slack']:.1e} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 10000])
    ap.add_argument("--kind", nargs="+", default=["plain", "fitted"],
                    choices=["plain", "fitted", "saturated"])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    rows = []
    for kind in a.kind:
        for n in a.n:
            rows.append(measure(n, a.classes, kind))
            print(f"done n={n} {kind}: {rows[-1]['cpu']:.2f} CPU s", file=sys.stderr)
    text = table(rows)
    print(text)
    if a.write_docs:
        from bench_score import machine, write_docs as _write
        load = open("/proc/loadavg").read().split()[:3]
        cmd = ("OPENBLAS_NUM_THREADS=1 python benchmarks/bench_epic_cost.py --n "
               + " ".join(map(str, a.n)) + " --kind " + " ".join(a.kind))
        _write(f"{machine()}; `{cmd}` (load average {' '.join(load)} at the end)\n\n{text}\n",
               key="bench_epic_cost")


if __name__ == "__main__":
    main()
