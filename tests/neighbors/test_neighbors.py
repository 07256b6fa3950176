import numpy as np
import pytest

from gradscore import neighbors as nb
from gradscore.errors import GradscoreError
from gradscore.gradients import DenseGradients, OuterGradients


def exact_knn(x, k):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d2, idx, 1)


@pytest.mark.parametrize("backend", ["kdtree", "brute"])
def test_exact_backends_match_brute_force_reference(backend):
    x = np.random.default_rng(0).normal(size=(300, 6))
    idx, d2, used = nb.kneighbors(DenseGradients(x), 7, backend=backend)
    ref_idx, ref_d2 = exact_knn(x, 7)
    assert used == backend
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-9, atol=1e-12)
    assert (idx == ref_idx).mean() > 0.999  # only exact ties may reorder


def test_nndescent_recall_against_exact():
    x = np.random.default_rng(1).normal(size=(2000, 12)).astype(np.float64)
    idx, d2, used = nb.kneighbors(DenseGradients(x), 10, backend="nndescent", random_state=0)
    ref_idx, _ = exact_knn(x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref_idx)])
    assert used == "nndescent"
    assert recall > 0.9
    assert not (idx == np.arange(2000)[:, None]).any()


def test_self_removed_by_index_even_with_exact_duplicates():
    x = np.repeat(np.random.default_rng(2).normal(size=(50, 3)), 3, axis=0)
    for backend in ["kdtree", "brute"]:
        idx, d2, _ = nb.kneighbors(DenseGradients(x), 2, backend=backend)
        assert not (idx == np.arange(150)[:, None]).any()
        # each point's two nearest others are its two copies, at distance 0
        assert (d2 == 0).all()
        assert ((idx // 3) == (np.arange(150) // 3)[:, None]).all()


def test_outer_product_distances_equal_materialised_vectors():
    rng = np.random.default_rng(3)
    og = OuterGradients(rng.normal(size=(120, 4)), rng.normal(size=(120, 9)))
    idx, d2, used = nb.kneighbors(og, 5)
    ref_idx, ref_d2 = exact_knn(og.dense(), 5)
    assert used == "brute"
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-8, atol=1e-10)
    assert (idx == ref_idx).all()
    full = nb.pairwise_sqdist(og)
    np.testing.assert_allclose(full, ((og.dense()[:, None] - og.dense()[None]) ** 2).sum(-1),
                               rtol=1e-8, atol=1e-10)


def test_auto_picks_kdtree_low_dim_and_brute_high_dim():
    rng = np.random.default_rng(4)
    assert nb.resolve_backend(DenseGradients(rng.normal(size=(10, 10)))) == "kdtree"
    assert nb.resolve_backend(DenseGradients(rng.normal(size=(10, 100)))) == "brute"
    assert nb.resolve_backend(OuterGradients(np.ones((10, 2)), np.ones((10, 2)))) == "brute"


def test_unknown_backend_is_an_error():
    with pytest.raises(GradscoreError, match="'neighbors' must be one of"):
        nb.kneighbors(DenseGradients(np.zeros((5, 2))), 2, backend="faiss")
