"""One pass over the Gram matrix: EPIC's kernel and the k-NN, as the separate steps give them."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from gradscore import neighbors as nb
from gradscore.gradients import class_gradients
from gradscore._threads import one_blas_thread
from gradscore.selection.epic import similarity_from_sqdist


def gradients(kind, n, c, seed, duplicates):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c))
    h = rng.normal(size=(n, 4))
    if duplicates:
        for a, b in ((2, 5), (2, n - 1), (8, 7)):
            z[b], h[b] = z[a], h[a]
    labels = np.zeros(n, dtype=int)
    if kind == "logits":
        return class_gradients(labels, z, num_classes=c)
    return class_gradients(labels, z, h, gradient="last-layer", num_classes=c)


@pytest.mark.parametrize("kind", ["logits", "last-layer"])
@pytest.mark.parametrize("n", [12, 64, 65, 200])  # around the 64-row tile
@pytest.mark.parametrize("duplicates", [False, True])
def test_matches_distance_matrix_kernel_and_partial_sort(kind, n, duplicates):
    g = gradients(kind, n, 7, n, duplicates)
    k = 5
    d2 = nb.pairwise_sqdist(g)
    sim, idx, kd2 = nb.similarity_and_knn(g, k, 1.0 / g.dim)
    assert np.array_equal(sim, similarity_from_sqdist(d2, g.dim))
    assert np.array_equal(sim, sim.T)
    assert np.all(np.diag(sim) == 1.0)
    ref_idx, ref_d2 = nb.knn_from_sqdist(d2, k)
    assert np.array_equal(kd2, ref_d2)
    # Equal distances are listed by column; self never appears.
    assert not np.any(idx == np.arange(n)[:, None])
    assert np.array_equal(d2[np.arange(n)[:, None], idx], kd2)
    order = np.lexsort((idx, kd2), axis=1)
    assert np.array_equal(order, np.broadcast_to(np.arange(k), (n, k)))
    if duplicates:
        assert sim[2, 5] == sim[5, 2] == sim[2, n - 1] == 1.0
        assert list(idx[2, :2]) == [5, n - 1] and kd2[2, 0] == 0.0


def test_k_zero_skips_the_search():
    g = gradients("logits", 30, 4, 0, False)
    sim, idx, kd2 = nb.similarity_and_knn(g, 0, 0.25)
    assert idx.shape == (30, 0) and kd2.shape == (30, 0)
    assert np.array_equal(sim, similarity_from_sqdist(nb.pairwise_sqdist(g), 4))


def test_class_tasks_get_one_blas_thread():
    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    assert before, "threadpoolctl finds no BLAS library to limit"
    with threadpool_limits(limits=2, user_api="blas"):
        with one_blas_thread():
            assert all(t == 1 for t in blas_threads())
        assert all(t == 2 for t in blas_threads())
    assert blas_threads() == before
