import math

import numpy as np
import pytest

import gradscore
from gradscore.gradients import DenseGradients, OuterGradients, logit_gradients
from gradscore.neighbors import kneighbors, pairwise_sqdist
from gradscore.selection.epic import (epic_dense, epic_sparse, medoid_budgets,
                                      similarity_from_sqdist)


def reference_epic(x, n_medoids, threshold):
    """Plain greedy facility location written out from the authors' code:
    submodlib's euclidean kernel exp(-||x_i - x_j|| / dim), naive greedy
    (ties: lowest index), each point joins its most similar medoid (ties:
    earliest picked)."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    s = np.exp(-d / x.shape[1])
    cur = np.zeros(len(x))
    picked = []
    for _ in range(n_medoids):
        gains = np.array([np.maximum(s[:, j] - cur, 0).sum() for j in range(len(x))])
        j = int(np.flatnonzero(gains == gains.max())[0])
        picked.append(j)
        cur = np.maximum(cur, s[:, j])
    sim = s[:, picked]
    cluster = np.array([int(np.flatnonzero(row == row.max())[0]) for row in sim])
    sizes = np.bincount(cluster, minlength=len(picked))
    return np.array(picked), sizes[cluster] <= threshold


@pytest.mark.parametrize("seed,n,n_medoids,threshold", [
    (0, 40, 8, 1), (1, 120, 12, 1), (2, 90, 27, 2), (3, 60, 30, 1)])
def test_dense_epic_reproduces_reference_greedy(seed, n, n_medoids, threshold):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[: n // 10] *= 2.5  # a few isolated points (not so far that their gains tie)
    res = epic_dense(pairwise_sqdist(DenseGradients(x)), n_medoids=n_medoids, dim=3,
                     cluster_threshold=threshold)
    picked, drop = reference_epic(x, n_medoids, threshold)
    assert res.medoids.tolist() == picked.tolist()
    assert (res.drop == drop).all()


def test_kernel_is_submodlibs_euclidean_similarity():
    # submodlib's euclidean_similarity: exp(-sqrt(sum (a - b)^2) / len(a)).
    a, b = np.array([0.0, 3.0, 1.0, 0.0]), np.array([4.0, 0.0, 1.0, 0.0])
    d2 = ((a - b) ** 2).sum()  # 25
    assert similarity_from_sqdist(np.array([d2]), 4)[0] == pytest.approx(math.exp(-5 / 4))


def test_hand_worked_one_dimensional_case():
    # Points 0, 0.1, 0.2 (a group), 5.0 (isolated), 10, 10.1, 10.25 (a group);
    # dim 1, so s(i, j) = exp(-|x_i - x_j|).
    x = np.array([[0.0], [0.1], [0.2], [5.0], [10.0], [10.1], [10.25]])
    res = epic_dense(pairwise_sqdist(DenseGradients(x)), n_medoids=3, dim=1,
                     cluster_threshold=1)
    # Pick 1: gain = sum_i s(i, j). Row 1 (0.1): 1 + 2 e^-0.1 + e^-4.9 + ... = 2.818;
    # row 5 (10.1): 1 + e^-0.1 + e^-0.15 + ... = 1.771; row 3 (5.0): about 1.04.
    # Pick 2: row 5 gains 1 - e^-10 + (e^-0.1 - e^-9.9) + (e^-0.15 - e^-10.15) = 2.76.
    # Pick 3: the isolated row 3 gains 1 - e^-4.9 + (tiny) = 0.99, more than any
    # other row (row 4: 1 - e^-0.1 = 0.095), so it becomes a cluster of one.
    assert res.medoids.tolist() == [1, 5, 3]
    assert res.cluster_size.tolist() == [3, 3, 3, 1, 3, 3, 3]
    assert res.drop.tolist() == [False, False, False, True, False, False, False]


def test_duplicated_data_drops_nothing():
    x = np.random.default_rng(5).normal(size=(100, 4))
    x2 = np.repeat(x, 2, axis=0)
    g = DenseGradients(x2)
    res = epic_dense(pairwise_sqdist(g), n_medoids=40, dim=4, cluster_threshold=1)
    assert not res.drop.any()
    idx, d2, _ = kneighbors(g, 10)
    res = epic_sparse(g, idx, d2, n_medoids=40, cluster_threshold=1)
    assert not res.drop.any()


def test_medoid_budgets_follow_the_authors_split():
    # B = int(0.2 * 100) = 20; ceil(n_c / N * B) = 10, 6, 4: no surplus.
    assert medoid_budgets([50, 30, 20], 0.2).tolist() == [10, 6, 4]
    # B = int(0.2 * 21) = 4; ceil(7 / 21 * 4) = 2 each, surplus 2 taken back
    # from two distinct classes chosen by the seed.
    for seed in range(20):
        b = medoid_budgets([7, 7, 7], 0.2, random_state=seed)
        assert b.sum() == 4 and sorted(b.tolist()) == [1, 1, 2]
    assert medoid_budgets([0, 5, 0], 0.5).tolist() == [0, 2, 0]
    assert medoid_budgets([0, 0], 0.5).tolist() == [0, 0]
    # The same seed gives the same split.
    assert (medoid_budgets([3] * 10, 0.15, random_state=4)
            == medoid_budgets([3] * 10, 0.15, random_state=4)).all()


def test_score_uses_the_global_budget():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 30, 21])
    logits = rng.normal(size=(labels.size, 3)) + 4 * np.eye(3)[labels]
    r = gradscore.score(labels, logits, fraction=0.2, random_state=3)
    want = medoid_budgets([50, 30, 21], 0.2, random_state=3)
    assert [c.n_medoids for c in r.classes] == want.tolist()
    assert sum(c.n_medoids for c in r.classes) == int(0.2 * labels.size)


def test_sparse_uses_the_factored_gradient_dimension():
    rng = np.random.default_rng(2)
    a, h = rng.normal(size=(60, 3)), rng.normal(size=(60, 5))
    og = OuterGradients(a, h)
    explicit = DenseGradients(og.dense())
    assert og.dim == explicit.dim == 15
    for g in (og, explicit):
        idx, d2, _ = kneighbors(g, 8, backend="brute")
        res = epic_sparse(g, idx, d2, n_medoids=12, cluster_threshold=1)
        if g is og:
            first = res
    assert (res.medoids == first.medoids).all()


def test_sparse_with_the_full_graph_is_the_dense_greedy():
    # With every other point as a neighbour every candidate is credited for
    # every example: the graph greedy is the dense one exactly.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(80, 4))
    x[:6] *= 4
    g = DenseGradients(x)
    d2 = pairwise_sqdist(g)
    dense = epic_dense(d2, n_medoids=16, dim=4, cluster_threshold=1)
    idx, kd2, _ = kneighbors(g, 79, backend="brute")
    sparse = epic_sparse(g, idx, kd2, n_medoids=16, cluster_threshold=1)
    assert sparse.medoids.tolist() == dense.medoids.tolist()
    assert (sparse.drop == dense.drop).all()


def test_sparse_agrees_with_dense_on_structured_gradients():
    """The k-NN-graph greedy should mostly drop what the dense kernel drops
    (measured agreement is reported in docs/method.md; this guards a floor)."""
    rng = np.random.default_rng(1)
    n, c = 1500, 10
    z = rng.normal(size=(n, c))
    z[:, 0] += rng.choice([8, 5, 2], size=n, p=[0.7, 0.2, 0.1])
    z[:20, 0] -= 6
    g = DenseGradients(logit_gradients(np.zeros(n, dtype=int), z))
    dense = epic_dense(pairwise_sqdist(g), n_medoids=300, dim=c, cluster_threshold=1)
    idx, d2, _ = kneighbors(g, 20)
    sparse = epic_sparse(g, idx, d2, n_medoids=300, cluster_threshold=1)
    jaccard = (dense.drop & sparse.drop).sum() / max(1, (dense.drop | sparse.drop).sum())
    assert jaccard > 0.9
    assert sparse.medoids.size == dense.medoids.size


def test_class_whose_budget_rounds_to_zero_is_kept_with_a_warning():
    # 3 classes of 7: B = int(0.1 * 21) = 2, each class rounds up to 1, and
    # one class gives its medoid back.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 7)
    logits = rng.normal(size=(21, 3)) + 3 * np.eye(3)[labels]
    with pytest.warns(gradscore.GradscoreWarning, match="got no EPIC medoid"):
        r = gradscore.score(labels, logits, fraction=0.1, k=3)
    empty = [c for c in r.classes if c.n_medoids is None]
    assert len(empty) == 1 and empty[0].dropped == 0
    assert r.keep[labels == empty[0].label].all()
    assert sum(c.n_medoids or 0 for c in r.classes) == 2
