"""Shared fixtures and helpers for the tests, which sit in folders laid out like
the package (``tests/selection/`` for ``gradscore/selection/``, ...), plus
``tests/benchmarks/`` and ``tests/docs/``. The repository root is put on
``sys.path`` here once, so tests import ``benchmarks`` as a package."""

import json
import os
import sys

import numpy as np
import pytest

import gradscore

#: The repository root (the folder holding gradscore/, benchmarks/, docs/).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
DOCS = os.path.join(ROOT, "docs")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def digits_path():
    return os.path.join(FIXTURES, "digits_epoch.h5")


@pytest.fixture
def digits_poisons():
    with open(os.path.join(FIXTURES, "digits_poisons.json")) as fh:
        return json.load(fh)


def make_data(n=600, c=4, d=8, seed=0, margin=4.0):
    """Labels, logits and features with class structure (a trained-model look)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + margin * np.eye(c)[labels]
    features = rng.normal(size=(n, d)) + 2.0 * np.eye(c, d)[labels]
    return labels, logits, features


def blas_threads(n):
    """Context: ``n`` BLAS threads in every BLAS library, to force what differs
    between runners (issue 24: a product's last bits depend on how BLAS splits
    it over threads). SciPy has its own OpenBLAS, which threadpoolctl sees only
    once SciPy's linear algebra is loaded: load it first, or the limit misses it.
    """
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n, user_api="blas")


@pytest.fixture
def torch_one_thread():
    """Torch on one thread for the test (tiny models: threads only contend)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def poisoned_blobs(seed=0, n_per=200, d=16, group=15, singles=3):
    """Three classes of blobs; a tight group labelled 0 sitting inside class 1
    (clean-label poisons collided on a target of class 1), and a few single
    examples labelled 2 lying among class 0 (dirty-label poisons)."""
    rng = np.random.default_rng(seed)
    centres = 6.0 * np.eye(3, d)
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    y = np.repeat(np.arange(3), n_per)
    target = centres[1] + 0.5 * rng.normal(size=d)
    g = target + 0.05 * rng.normal(size=(group, d))
    s = centres[0] + rng.normal(size=(singles, d))
    x = np.concatenate([x, g, s])
    y = np.concatenate([y, np.zeros(group, int), np.full(singles, 2)])
    is_p = np.zeros(y.size, bool)
    is_p[3 * n_per:] = True
    return x, y, is_p


def write_shards(folder, *, n=900, c=5, d=6, n_shards=3, dtype=np.float32, seed=0,
                 str_ids=False, linear=False):
    """An export in interleaved shards with shuffled ids (as DistributedSampler writes)."""
    labels, logits, feats = make_data(n=n, c=c, d=d, seed=seed)
    rng = np.random.default_rng(seed + 1)
    ids = rng.permutation(n) * 7 + 3
    if str_ids:
        ids = np.array([f"img-{i:06d}" for i in ids], dtype=object)
    w, b = rng.normal(size=(c, d)), rng.normal(size=c)
    paths = []
    for r in range(n_shards):
        p = np.arange(r, n, n_shards)
        path = os.path.join(folder, f"shard-{r}.h5")
        if linear:
            gradscore.write_epoch(path, labels=labels[p], features=feats[p], weight=w, bias=b,
                                  ids=ids[p], dtype=dtype, epoch=4)
        else:
            gradscore.write_epoch(path, labels=labels[p], logits=logits[p], features=feats[p],
                                  ids=ids[p], dtype=dtype, epoch=4)
        paths.append(path)
    return paths, ids


def blob_shards(folder, *, seed=0, n_shards=3, dtype=np.float32):
    """poisoned_blobs as an export in interleaved shards with shuffled ids."""
    x, y, is_p = poisoned_blobs(seed=seed, n_per=300)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(y.size) * 3 + 1
    logits = 3.0 * np.eye(3)[y] + rng.normal(size=(y.size, 3))
    paths = []
    for r in range(n_shards):
        p = np.arange(r, y.size, n_shards)
        paths.append(str(folder / f"shard-{r}.h5"))
        gradscore.write_epoch(paths[-1], labels=y[p], logits=logits[p], features=x[p],
                              ids=ids[p], dtype=dtype, epoch=3)
    return paths, ids, is_p
