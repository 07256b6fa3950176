"""How far EPIC on the k-NN graph (``epic_mode=sparse``) agrees with the exact
dense kernel, on classes where both run, and what each costs.

For each dataset and fraction, every class is scored both ways through the
public API (``dense_max`` large vs 0); the table gives the Jaccard index of
the two drop sets, the share of examples with the same decision, the drop
counts and the median per-run time.

    python benchmarks/bench_epic_agreement.py --write-docs
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gradscore  # noqa: E402
import synth  # noqa: E402
from bench_score import machine, write_docs as _write  # noqa: E402


def datasets(quick):
    ep = gradscore.read_epoch(os.path.join(ROOT, "fixtures", "digits_epoch.h5"))
    with open(os.path.join(ROOT, "fixtures", "digits_poisons.json")) as fh:
        poisons = np.isin(ep.ids, json.load(fh)["poison_ids"])
    yield "digits fixture (10 x ~150)", ep.labels, ep.logits, poisons
    if not quick:
        # A real model's export with classes of about 2,000 (both paths run).
        from real_exports import make_exports
        ep = gradscore.read_epoch(make_exports(25_000, (5, 7))[0])
        yield "mnist1d MLP, epoch 5 (10 x ~2,000)", ep.labels, ep.logits, None
    n = 4_000 if quick else 20_000
    path = os.path.join(HERE, "data", f"agree-{n}.h5")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        synth.make(path, n=n, classes=10 if not quick else 4, features=0)
    ep = gradscore.read_epoch(path)
    c = ep.num_classes
    yield f"synthetic, {c} x ~{n // c}", ep.labels, ep.logits, None


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    # warm the numba kernels so timings exclude compilation
    lab = np.repeat([0, 1], 30)
    gradscore.score(lab, np.random.default_rng(0).normal(size=(60, 2)), dense_max=0)
    gradscore.score(lab, np.random.default_rng(0).normal(size=(60, 2)))
    rows = []
    for name, labels, logits, poisons in datasets(a.quick):
        for fraction in (0.1, 0.2, 0.3):
            td, dense = timed(lambda: gradscore.score(labels, logits, fraction=fraction,
                                                      dense_max=10**9), a.repeat)
            ts, sparse = timed(lambda: gradscore.score(labels, logits, fraction=fraction,
                                                       dense_max=0), a.repeat)
            dd, sd = ~dense.keep, ~sparse.keep
            row = {"data": name, "fraction": fraction,
                   "jaccard": (dd & sd).sum() / max(1, (dd | sd).sum()),
                   "same_decision": float((dd == sd).mean()),
                   "dropped_dense": int(dd.sum()), "dropped_sparse": int(sd.sum()),
                   "time_dense_s": td, "time_sparse_s": ts}
            if poisons is not None:
                row["poisons"] = f"{int(dd[poisons].sum())} / {int(sd[poisons].sum())} of {int(poisons.sum())}"
            rows.append(row)
    lines = ["| data | fraction | Jaccard(drop sets) | same decision | dropped dense | "
             "dropped sparse | poisons dropped dense / sparse | time dense | time sparse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['fraction']} | {r['jaccard']:.3f} | "
                     f"{100 * r['same_decision']:.1f}% | {r['dropped_dense']} | "
                     f"{r['dropped_sparse']} | {r.get('poisons', '-')} | "
                     f"{r['time_dense_s']:.2f} s | {r['time_sparse_s']:.2f} s |")
    text = (f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. In-process, numba "
            f"kernels warmed, median of {a.repeat}; load average {os.getloadavg()[0]:.1f} "
            "at the end (other work running).\n"
            f"Command: `python benchmarks/bench_epic_agreement.py {' '.join(sys.argv[1:])}`\n\n"
            + "\n".join(lines))
    print(text)
    if a.write_docs:
        _write(text, "bench_epic_agreement")


if __name__ == "__main__":
    main()
