"""Time exact per-class k-NN: NumPy brute force vs the ONNX Runtime backend.

Per-class shapes of the 50k case (10 classes of 5000: logit gradients of
dimension 10, and 512-wide feature-like vectors) and of the 1M case (10
classes of 100000, dimension 10). Each timing is the median of ``--repeat``
runs on one class; the total column multiplies by the number of classes.
The ONNX backend gets one untimed warm-up call per shape (session creation,
CUDA context), since a real run pays that once, not per class.

Usage::

    python benchmarks/bench_onnx_backend.py --device cpu
    python benchmarks/bench_onnx_backend.py --device cuda --cases 50k-logits,50k-wide,1M-logits

Prints a markdown table on stdout; progress goes to stderr.
"""

import argparse
import platform
import statistics
import sys
import time

import numpy as np

from gradscore.gradients import DenseGradients, logit_gradients
from gradscore.neighbors import brute_kneighbors

#: name -> (rows per class, dimension, classes, kind)
CASES = {
    "50k-logits": (5000, 10, 10, "logits"),
    "50k-wide": (5000, 512, 10, "features"),
    "1M-logits": (100_000, 10, 10, "logits"),
}


def make_class(n, d, kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "logits":
        logits = rng.normal(size=(n, d))
        logits[:, 0] += 3.0
        return DenseGradients(logit_gradients(np.zeros(n, dtype=np.int64), logits))
    return DenseGradients(np.maximum(rng.normal(size=(n, d)), 0.0))


def time_it(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, from {', '.join(CASES)}")
    ap.add_argument("--backends", default="brute,onnx", help="brute and/or onnx")
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=None,
                    help="override rows per class (quick checks)")
    args = ap.parse_args(argv)

    from gradscore.onnx import onnx_kneighbors
    from gradscore.onnx.providers import choose_device

    device, providers, reason = choose_device(args.device)
    print(f"# onnx device: {device} ({reason})", file=sys.stderr)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in CASES:
            ap.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        n, d, classes, kind = CASES[name]
        n = args.rows or n
        g = make_class(n, d, kind)
        ref = None
        for backend in backends:
            if backend == "brute":
                fn = lambda: brute_kneighbors(g, args.k)  # noqa: E731
                dev = "numpy"
            elif backend == "onnx":
                fn = lambda: onnx_kneighbors(g, args.k, device=device)  # noqa: E731
                dev = device
                onnx_kneighbors(make_class(min(n, 256), d, kind, seed=1), min(args.k, 10),
                                device=device)  # warm-up: session, CUDA context
            else:
                ap.error(f"unknown backend {backend!r}")
            print(f"# {name}: {backend} on {dev}, n={n}, d={d} ...", file=sys.stderr)
            med, (idx, d2) = time_it(fn, args.repeat)
            if ref is None:
                agree, dmax = "ref", 0.0
                ref = (idx, d2)
            else:
                agree = f"{np.mean(np.sort(idx, 1) == np.sort(ref[0], 1)):.4%}"
                dmax = float(np.max(np.abs(d2 - ref[1])))
            rows.append((name, n, d, backend, dev, med, med * classes, classes, agree, dmax))
    print(f"Exact k-NN per class, k={args.k}, median of {args.repeat}; "
          f"{platform.node()}, {platform.processor() or platform.machine()}\n")
    print("| case | rows/class | dim | backend | device | s/class | s total (classes) "
          "| index agreement | max abs diff d2 |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    for name, n, d, b, dev, med, tot, classes, agree, dmax in rows:
        print(f"| {name} | {n} | {d} | {b} | {dev} | {med:.3f} | {tot:.2f} ({classes}) "
              f"| {agree} | {dmax:.2e} |")


if __name__ == "__main__":
    main()
