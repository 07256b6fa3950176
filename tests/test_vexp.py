"""The vectorised exp of the hot loops against libm (numpy's exp)."""

import numpy as np
import pytest

from gradscore._vexp import exp_inplace, exp_one


@pytest.mark.parametrize("low", [1e-3, 0.35, 1.0, 50.0, 700.0, 745.0, 760.0, 2000.0])
def test_within_one_ulp_of_numpy_for_nonpositive_x(low):
    rng = np.random.default_rng(0)
    x = -rng.random(100_000) * low
    x[:3] = [0.0, -0.0, -low]
    got = x.copy()
    exp_inplace(got)
    ref = np.exp(x)
    ulp = np.abs(got - ref) / np.spacing(np.maximum(ref, np.finfo(float).tiny))
    assert ulp.max() <= 1.0
    assert np.array_equal(got == 0, ref == 0)
    assert got[0] == 1.0 and got[1] == 1.0


def test_scalar_and_array_versions_give_the_same_bits():
    rng = np.random.default_rng(1)
    x = np.concatenate([-rng.random(2000) * 0.01, -rng.random(2000) * 800, [0.0, -1100.5]])
    got = x.copy()
    exp_inplace(got)
    assert np.array_equal(got, [exp_one(v) for v in x])


def test_lengths_that_are_not_a_multiple_of_the_chunk():
    for n in (0, 1, 255, 256, 257, 1000):
        x = -np.linspace(0, 3, n)
        got = x.copy()
        exp_inplace(got)
        np.testing.assert_allclose(got, np.exp(x), rtol=3e-16)
