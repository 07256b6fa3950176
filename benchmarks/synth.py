"""Synthetic epoch exports with class structure, for speed and memory benchmarks.

Logits look like a trained model's: the true class gets a margin drawn from
a mixture (70% confident, 20% medium, 10% unsure) plus Gaussian noise, and
0.1% of examples are "misfits" with scattered logits. ``--fitted`` makes a
well-fit model's export instead, as at EPIC's later drop epochs: margins of
10-20 (nearly every softmax output within 1e-3 of one-hot, so the gradients
crowd near zero) and 0.5% of rows pulled towards another class;
``--saturated`` the same with margins of 40-60, where the softmax of most
rows is one-hot to float64 precision and EPIC's kernel is exactly 1 between
them (a model trained far past zero training error). Features are
a class mean plus noise. Written batch by batch with gradscore's streaming
writer, so memory stays bounded however large N is.

    python benchmarks/synth.py OUT.h5 --n 50000 --classes 10 --features 512
    python benchmarks/synth.py OUT.h5 --n 120000 --classes 10 --features 0 --fitted
"""

import argparse
import time

import numpy as np

import gradscore

BATCH = 65536


#: Margin range of the true class's logit in a well-fit ("fitted") and an
#: over-fit ("saturated") export.
MARGINS = {"fitted": (10.0, 20.0), "saturated": (40.0, 60.0)}


def logits_batch(rng, y, classes, *, fitted=False):
    """One batch of logits for labels ``y`` (see the module docstring);
    ``fitted`` is False, "fitted" (or True) or "saturated"."""
    m = y.size
    z = rng.normal(size=(m, classes)).astype(np.float32)
    if fitted:
        lo, hi = MARGINS["fitted" if fitted is True else fitted]
        z[np.arange(m), y] += rng.uniform(lo, hi, size=m)
        moved = np.flatnonzero(rng.random(m) < 0.005)
        other = (y[moved] + rng.integers(1, classes, moved.size)) % classes
        z[moved, y[moved]] -= lo + 2.0
        z[moved, other] += 6.0
        return z
    margin = rng.choice([8.0, 5.0, 2.0], size=m, p=[0.7, 0.2, 0.1])
    z[np.arange(m), y] += margin
    misfit = rng.random(m) < 0.001
    z[misfit] = rng.normal(scale=3.0, size=(misfit.sum(), classes))
    return z


def make(path, *, n, classes, features, dtype="float32", seed=0, id_start=None, fitted=False):
    """Write one export; with ``id_start``, store ids ``id_start + row`` (for shards)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, features)) if features else None
    dt = np.dtype(dtype)
    with gradscore.EpochWriter(path, num_classes=classes, n_features=features or None,
                               n_rows=n, dtype=dt, epoch=5,
                               id_kind=None if id_start is None else "int") as w:
        for start in range(0, n, BATCH):
            m = min(BATCH, n - start)
            y = rng.integers(0, classes, m)
            z = logits_batch(rng, y, classes, fitted=fitted)
            f = None
            if features:
                f = (means[y] + rng.normal(size=(m, features))).astype(dt)
            ids = None if id_start is None else np.arange(id_start + start,
                                                          id_start + start + m)
            w.append(y, z.astype(dt), f, ids)
    return path


def make_shards(folder, *, n, classes, features, dtype="float32", shards=8, seed=0):
    """One export in ``shards`` files of contiguous id ranges (as ranks write them)."""
    paths = []
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for r in range(shards):
        paths.append(f"{folder}/shard-{r:03d}-of-{shards:03d}.h5")
        make(paths[-1], n=int(bounds[r + 1] - bounds[r]), classes=classes, features=features,
             dtype=dtype, seed=seed * 1000 + r, id_start=int(bounds[r]))
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--features", type=int, default=512, help="0 for none")
    ap.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    ap.add_argument("--seed", type=int, default=0)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--fitted", action="store_const", const="fitted", dest="fitted",
                      help="a well-fit model's export (margins 10-20, 0.5%% of rows moved)")
    kind.add_argument("--saturated", action="store_const", const="saturated", dest="fitted",
                      help="an over-fit model's export (margins 40-60, 0.5%% of rows moved)")
    a = ap.parse_args()
    t = time.perf_counter()
    make(a.out, n=a.n, classes=a.classes, features=a.features, dtype=a.dtype, seed=a.seed,
         fitted=a.fitted or False)
    print(f"wrote {a.out} in {time.perf_counter() - t:.1f}s")


if __name__ == "__main__":
    main()
