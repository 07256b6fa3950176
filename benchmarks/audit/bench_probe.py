"""The probe's solver: gradscore's joint K-fold L-BFGS against scikit-learn's solvers.

Usage::

    nice -n 19 python -m benchmarks.audit.bench_probe                  # 6,000 x 128
    nice -n 19 python -m benchmarks.audit.bench_probe --n 100000 --d 2048 --only ours

Every solver does the same job: 5-fold cross-fitting (the same folds) of a
multinomial logistic head, out-of-fold logits for every row. scikit-learn
runs once per fold on that fold's rows, (a) as a user would call it
(defaults, raw features) and (b) on standardised features with the same
penalty as gradscore's (``C = 1 / (alpha * n_train)``), so both solve the
same problem, with scikit-learn's tolerance (1e-4) and with gradscore's
(``sklearn-lbfgs-tol``: 1e-6, the same gradient test, both objectives being
means over the rows). Reported: the median wall time of ``--repeat`` runs
(solvers interleaved, so load changes hit all alike), out-of-fold accuracy
and log loss, and the largest difference of (row-centred) out-of-fold
logits from gradscore's.

Data: a Gaussian mixture with overlapping classes (out-of-fold accuracy
around 92%), float32, or the features of a cached audit case
(``--case benchmarks/out/audit/cases/<name>.npz``).
"""

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benchmarks.audit"


def mixture(n, d, c, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    # Class centres of norm 3.5 in random directions: a linear head gets
    # about 92% of 6,000 x 128 right out of fold.
    centres = rng.normal(size=(c, d))
    centres *= 3.5 / np.linalg.norm(centres, axis=1, keepdims=True)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x += centres.astype(np.float32)[labels]
    x *= rng.uniform(0.5, 5, d).astype(np.float32)        # unscaled columns
    return labels, x


def _score(labels, logits):
    z = logits - logits.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float(np.mean(logits.argmax(1) == labels)), float(np.mean(lse - z[np.arange(
        labels.size), labels]))


def sklearn_cross_fit(labels, x, fold, *, solver, standardise, alpha, max_iter, tol=1e-4):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if standardise:
        x = (x - x.mean(0)) / x.std(0)
    out = np.zeros((labels.size, int(labels.max()) + 1))
    n_iter = []
    for f in range(int(fold.max()) + 1):
        tr = fold != f
        kw = {} if alpha is None else {"C": 1.0 / (alpha * tr.sum())}
        m = LogisticRegression(solver=solver, max_iter=max_iter, tol=tol, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(x[tr], labels[tr])
        out[~tr] = m.decision_function(x[~tr])
        n_iter.append(int(np.max(m.n_iter_)))
    return out, n_iter


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--case", default=None)
    ap.add_argument("--alpha", type=float, default=1e-3)
    ap.add_argument("--only", nargs="+", default=None,
                    help="subset of: ours sklearn-default sklearn-lbfgs sklearn-lbfgs-tol "
                         "sklearn-newton-cholesky sklearn-saga")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per solver (median wall time)")
    ap.add_argument("--memory", action="store_true",
                    help="also run gradscore's probe once under tracemalloc: its peak of "
                         "NumPy/Python memory beyond the features")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from gradscore.audit import cross_fit_probe
    from gradscore.audit.probe import stratified_folds

    if args.case:
        z = np.load(args.case)
        labels, x = z["labels"], z["features"].astype(np.float32)
        shape = f"{args.case}: {x.shape[0]} x {x.shape[1]}, {int(labels.max()) + 1} classes"
    else:
        labels, x = mixture(args.n, args.d, args.classes)
        shape = f"mixture {args.n} x {args.d}, {args.classes} classes, float32"
    print(f"# {shape}; machine {platform.platform()}, {os.cpu_count()} CPUs, load before "
          f"{os.getloadavg()[0]:.1f}")
    fold = stratified_folds(labels, 5, random_state=0)
    runs = {
        "ours": None,
        "sklearn-default": dict(solver="lbfgs", standardise=False, alpha=None, max_iter=100),
        "sklearn-lbfgs": dict(solver="lbfgs", standardise=True, alpha=args.alpha,
                              max_iter=500),
        "sklearn-lbfgs-tol": dict(solver="lbfgs", standardise=True, alpha=args.alpha,
                                  max_iter=500, tol=1e-6),
        "sklearn-newton-cholesky": dict(solver="newton-cholesky", standardise=True,
                                        alpha=args.alpha, max_iter=100),
        "sklearn-saga": dict(solver="saga", standardise=True, alpha=args.alpha, max_iter=100),
    }
    names = [n for n in runs if not args.only or n in args.only]
    walls, out, failed = {n: [] for n in names}, {}, {}
    with threadpool_limits(args.threads):
        for _ in range(args.repeat):
            for name in names:
                if name in failed:
                    continue
                kw = runs[name]
                t0 = time.perf_counter()
                if kw is None:
                    res = cross_fit_probe(labels, x, alpha=args.alpha, random_state=0)
                    out[name] = res.logits.astype(np.float64), [res.n_iter]
                else:
                    try:
                        out[name] = sklearn_cross_fit(labels, x, fold, **kw)
                    except Exception as exc:  # a solver that refuses the problem
                        failed[name] = f"{type(exc).__name__}: {exc}"
                        continue
                walls[name].append(time.perf_counter() - t0)
    print(f"| solver | wall s (median of {args.repeat}) | OOF accuracy | OOF log loss | "
          "iterations | max logit diff |")
    print("|---|---|---|---|---|---|")
    ref = None
    for name in names:
        if name in failed:
            print(f"| {name} | failed: {failed[name]} | | | | |")
            continue
        logits, iters = out[name]
        acc, ll = _score(labels, logits)
        centred = logits - logits.mean(1, keepdims=True)
        if ref is None:
            ref = centred
        diff = float(np.abs(centred - ref).max())
        print(f"| {name} | {np.median(walls[name]):.2f} | {acc:.4f} | {ll:.4f} | "
              f"{'/'.join(map(str, iters))} | {diff:.3g} |", flush=True)
    if args.memory:
        import tracemalloc
        tracemalloc.start()
        with threadpool_limits(args.threads):
            cross_fit_probe(labels, x, alpha=args.alpha, random_state=0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"# gradscore's probe: peak {peak / 2**20:.0f} MiB allocated beyond the "
              f"features ({x.nbytes / 2**20:.0f} MiB)")
    print(f"# load after {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
