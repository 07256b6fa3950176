"""How far results move between CPUs' BLAS kernels (docs/reliability.md, issue 24).

    python benchmarks/bench_blas_kernels.py --coretypes Haswell Sandybridge Nehalem

Runs the same work in one child process per ``OPENBLAS_CORETYPE`` (OpenBLAS
then uses that CPU's kernels, as it would on that CPU; a coretype the CPU
cannot run would crash its child) and prints, against the first, the
largest difference of
- the probe's out-of-fold logits (6,000 x 128 float32 features, 10 classes);
- the scores of ``gradscore.score`` (3,000 rows, 4 classes, 64 features)
  for knn-density and EPIC on last-layer gradients, spectral, and EPIC on
  logit gradients, and how many keep decisions differ.
Every child runs BLAS on one thread (gradscore sets it), so only the
kernels differ.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

RUNS = (("knn-density", "last-layer"), ("epic", "last-layer"), ("spectral", "logits"),
        ("epic", "logits"))


def child(path):
    import gradscore
    from gradscore.audit.probe import cross_fit_probe

    out = {}
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 6000)
    x = (rng.normal(size=(6000, 128)) + 1.5 * np.eye(10, 128)[labels]).astype(np.float32)
    out["probe logits"] = cross_fit_probe(labels, x).logits
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 3000)
    logits = rng.normal(size=(3000, 4)) + 4.0 * np.eye(4)[labels]
    feats = rng.normal(size=(3000, 64)) + 2.0 * np.eye(4, 64)[labels]
    for method, gradient in RUNS:
        r = gradscore.score(labels, logits, feats, method=method, gradient=gradient)
        out[f"{method} {gradient} scores"] = r.scores
        out[f"{method} {gradient} keep"] = r.keep
    np.savez(path, **out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coretypes", nargs="+", default=["Haswell", "Sandybridge", "Nehalem"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for ct in args.coretypes:
            path = os.path.join(tmp, f"{ct}.npz")
            env = dict(os.environ, OPENBLAS_CORETYPE=ct)
            subprocess.run([sys.executable, __file__, "--child", path], env=env, check=True,
                           stderr=subprocess.DEVNULL)
            res[ct] = dict(np.load(path))
    base = args.coretypes[0]
    print(f"| result | {' | '.join(f'{c} vs {base}' for c in args.coretypes[1:])} |")
    print("|---|" + "---|" * (len(args.coretypes) - 1))
    for key, a in res[base].items():
        cells = []
        for ct in args.coretypes[1:]:
            b = res[ct][key]
            if a.dtype == bool:
                cells.append(f"{int((a != b).sum())} of {a.size} decisions differ")
            else:
                d = np.abs(a.astype(np.float64) - b)
                cells.append(f"{int((a != b).sum())} of {a.size} differ, largest "
                             f"{d.max():.2g} (values up to {np.abs(a).max():.3g})")
        print(f"| {key} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
