"""The "onnx" neighbour backend against the NumPy brute force (the reference)."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import gradscore  # noqa: E402
from gradscore import GradscoreError  # noqa: E402
from gradscore.gradients import DenseGradients, OuterGradients, class_gradients  # noqa: E402
from gradscore.neighbors import (backend_names, brute_kneighbors, kneighbors,  # noqa: E402
                                 pairwise_sqdist)
from gradscore.onnx import onnx_kneighbors  # noqa: E402


def _with_duplicates(rng, n, d):
    x = rng.normal(size=(n, d))
    x[10] = x[11] = x[12] = x[3]  # exact duplicates tie at distance 0
    return x


def test_registered_and_listed():
    assert "onnx" in backend_names()


def _full_sort_reference(g, k):
    """k nearest others by a full sort of each row on (distance, index)."""
    d2 = pairwise_sqdist(g)
    np.fill_diagonal(d2, np.inf)
    cols = np.broadcast_to(np.arange(g.n), d2.shape)
    order = np.lexsort((cols, d2), axis=1)[:, :k]
    return order, np.take_along_axis(d2, order, axis=1)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_dense_same_as_numpy(k):
    rng = np.random.default_rng(k)
    g = DenseGradients(_with_duplicates(rng, 700, 10))
    got_i, got_d, used = kneighbors(g, k, backend="onnx")
    assert used == "onnx"
    assert got_i.dtype == np.int64 and got_d.dtype == np.float64
    ref_i, ref_d = _full_sort_reference(g, k)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_d, ref_d, rtol=1e-9, atol=1e-12)
    # "brute" picks among exact ties at the k-th place by argpartition, so
    # only its distances are compared.
    _, brute_d = brute_kneighbors(g, k)
    np.testing.assert_allclose(got_d, brute_d, rtol=1e-9, atol=1e-12)
    assert not np.any(got_i == np.arange(700)[:, None])  # self excluded
    # duplicates: row 3 finds its three copies first, lowest index first
    np.testing.assert_array_equal(got_i[3, :min(k, 3)], [10, 11, 12][:k])
    np.testing.assert_allclose(got_d[3, :min(k, 3)], 0.0, atol=1e-12)


def test_small_blocks_and_wide_vectors():
    rng = np.random.default_rng(5)
    g = DenseGradients(rng.normal(size=(301, 96)))
    want_i, want_d = brute_kneighbors(g, 7)
    # ~3 rows per block: many calls, a ragged last block
    got_i, got_d = onnx_kneighbors(g, 7, device="cpu", block_bytes=3 * 8 * 301)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-9, atol=1e-12)


def test_outer_gradients_factored_gram():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 10))
    h = np.hstack([rng.normal(size=(400, 16)), np.ones((400, 1))])
    g = OuterGradients(a, h)
    want_i, want_d = brute_kneighbors(g, 10)
    got_i, got_d = onnx_kneighbors(g, 10, device="cpu")
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-9, atol=1e-12)
    # and against explicit vectors
    dense_i, dense_d = brute_kneighbors(DenseGradients(g.dense()), 10)
    np.testing.assert_allclose(got_d, dense_d, rtol=1e-8, atol=1e-10)


def _poisoned_dataset(seed=0, n_per_class=400, c=5, d=12):
    """Fixture-like: confident clusters per class, a few mislabeled outliers."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(c), n_per_class)
    logits = rng.normal(scale=0.7, size=(labels.size, c))
    logits[np.arange(labels.size), labels] += 4.0
    poison = rng.choice(labels.size, 15, replace=False)
    logits[poison] = rng.normal(scale=0.5, size=(15, c))
    logits[poison, (labels[poison] + 1) % c] += 5.0
    features = rng.normal(size=(labels.size, d)) + labels[:, None]
    return labels, logits, features


@pytest.mark.parametrize("method,gradient", [("epic", "logits"), ("knn-density", "logits"),
                                             ("epic", "last-layer")])
def test_same_decisions_as_numpy(method, gradient):
    labels, logits, features = _poisoned_dataset()
    kw = dict(method=method, gradient=gradient, k=15, dense_max=0)  # kNN from the backend
    ref = gradscore.score(labels, logits, features, neighbors="brute", **kw)
    got = gradscore.score(labels, logits, features, neighbors="onnx", **kw)
    # Two arithmetics (onnxruntime's Gram product, BLAS's): scores equal to
    # rounding (rtol 1e-9), not bit for bit; decisions equal because no score
    # here sits within that of a threshold (docs/reliability.md, "Same bits").
    np.testing.assert_array_equal(got.keep, ref.keep)
    np.testing.assert_array_equal(got.decision, ref.decision)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-9)
    np.testing.assert_array_equal(got.cluster_size, ref.cluster_size)
    assert {c.neighbors for c in got.classes} == {"onnx"}
    assert (~got.keep).sum() > 0


def test_float32_and_float64_same_decisions():
    labels, logits, _ = _poisoned_dataset(seed=3)
    kw = dict(method="knn-density", k=10, neighbors="onnx", dense_max=0)
    a = gradscore.score(labels, logits.astype(np.float32), **kw)
    b = gradscore.score(labels, logits.astype(np.float32).astype(np.float64), **kw)
    np.testing.assert_array_equal(a.keep, b.keep)


def test_errors(monkeypatch):
    g = class_gradients(np.zeros(5, int), np.zeros((5, 3)))
    with pytest.raises(GradscoreError, match=r"'k' must be in \[1, n - 1\] = \[1, 4\]; got 5"):
        onnx_kneighbors(g, 5, device="cpu")
    monkeypatch.setenv("GRADSCORE_ONNX_DEVICE", "tpu")
    with pytest.raises(GradscoreError, match="GRADSCORE_ONNX_DEVICE.*got 'tpu'"):
        kneighbors(g, 2, backend="onnx")
    with pytest.raises(GradscoreError, match="DenseGradients or OuterGradients; got ndarray"):
        onnx_kneighbors(np.zeros((5, 3)), 2, device="cpu")
