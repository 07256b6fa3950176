import json
import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


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
