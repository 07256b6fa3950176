import math

import numpy as np
import pytest

import gradscore
from gradscore.gradients import DenseGradients, OuterGradients, logit_gradients
from gradscore.neighbors import pairwise_sqdist
from gradscore.selection.epic import (DENSE_MAX, epic_class, epic_dense, epic_exact,
                                      medoid_budgets, similarity_from_sqdist)


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
    (0, 40, 8, 1), (1, 120, 12, 1), (2, 90, 27, 2), (3, 60, 30, 1), (4, 150, 75, 1)])
def test_epic_reproduces_reference_greedy(seed, n, n_medoids, threshold):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[: n // 10] *= 2.5  # a few isolated points (not so far that their gains tie)
    picked, drop = reference_epic(x, n_medoids, threshold)
    g = DenseGradients(x)
    for res in (epic_dense(pairwise_sqdist(g), n_medoids=n_medoids, dim=3,
                           cluster_threshold=threshold),
                epic_exact(g, n_medoids=n_medoids, cluster_threshold=threshold),
                epic_exact(g, n_medoids=n_medoids, cluster_threshold=threshold, cache_max=0)):
        assert res.medoids.tolist() == picked.tolist()
        assert (res.drop == drop).all()


def _class_gradients(kind, n, c=10, seed=0):
    """One class's logit gradients: a well-fit model's (margins 10-20, 0.5% of
    rows pulled towards another class) or a half-trained one's."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c))
    if kind == "fitted":
        z[:, 0] += rng.uniform(10, 20, n)
        moved = rng.choice(n, max(1, n // 200), replace=False)
        z[moved, 0] -= 12
        z[moved, rng.integers(1, c, moved.size)] += 6
    else:
        z[:, 0] += rng.choice([8.0, 5.0, 2.0], size=n, p=[0.7, 0.2, 0.1])
    return DenseGradients(logit_gradients(np.zeros(n, dtype=int), z))


@pytest.mark.parametrize("kind", ["fitted", "unfitted"])
def test_exact_greedy_is_the_dense_greedy_without_the_matrix(kind):
    # The regime users are in: late-epoch exports whose gradients sit near
    # zero (where the k-NN graph approximation dropped 9x too much) and
    # half-trained ones.
    g = _class_gradients(kind, 1500)
    dense = epic_dense(pairwise_sqdist(g), n_medoids=300, dim=g.dim, cluster_threshold=1)
    streamed = epic_exact(g, n_medoids=300, cluster_threshold=1, cache_max=0)
    kept = epic_exact(g, n_medoids=300, cluster_threshold=1, cache_max=10**6)
    assert streamed.medoids.tolist() == dense.medoids.tolist()
    assert (streamed.cluster == dense.cluster).all() and (streamed.drop == dense.drop).all()
    # Keeping the matrix changes nothing, to the bit: the same medoids in the
    # same order and the same clusters.
    assert kept.medoids.tolist() == streamed.medoids.tolist()
    assert (kept.cluster == streamed.cluster).all()


@pytest.mark.parametrize("which", ["wide logits", "last-layer"])
def test_exact_greedy_on_wide_and_factored_gradients(which):
    rng = np.random.default_rng(3)
    n = 400
    if which == "wide logits":
        z = rng.normal(size=(n, 40))
        z[:, 0] += 4
        g = DenseGradients(logit_gradients(np.zeros(n, dtype=int), z))
    else:
        g = OuterGradients(rng.normal(size=(n, 3)), rng.normal(size=(n, 6)))
    dense = epic_dense(pairwise_sqdist(g), n_medoids=80, dim=g.dim, cluster_threshold=1)
    for dense_max in (0, DENSE_MAX):
        res, _, _ = epic_class(g, n_medoids=80, cluster_threshold=1, k=10, dense_max=dense_max)
        # Distances from factors and from a BLAS Gram matrix differ in the
        # last bits. Two rows nearer to each other than to any medoid have
        # equal gains (1 + s_ij - cur_i - cur_j), so which of them becomes
        # the medoid can differ; the other joins it either way.
        assert len(set(res.medoids.tolist()) & set(dense.medoids.tolist())) >= 76
        assert (res.drop == dense.drop).all()


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
    for cache_max in (0, DENSE_MAX):
        res = epic_exact(g, n_medoids=40, cluster_threshold=1, cache_max=cache_max)
        assert not res.drop.any()
    # Duplicates of a medoid join it (distance 0), never a later medoid.
    res = epic_exact(g, n_medoids=100, cluster_threshold=1, cache_max=0)
    assert (res.cluster_size >= 2).all()


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


def test_exact_uses_the_factored_gradient_dimension():
    rng = np.random.default_rng(2)
    a, h = rng.normal(size=(60, 3)), rng.normal(size=(60, 5))
    og = OuterGradients(a, h)
    explicit = DenseGradients(og.dense())
    assert og.dim == explicit.dim == 15
    first = epic_exact(og, n_medoids=12, cluster_threshold=1, cache_max=0)
    res = epic_exact(explicit, n_medoids=12, cluster_threshold=1, cache_max=0)
    assert sorted(res.medoids.tolist()) == sorted(first.medoids.tolist())


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


def test_work_counters_leave_the_decisions_alone():
    # The counters behind benchmarks/bench_epic_cost.py: the first step is a
    # full refresh over every pair, and counting changes no decision.
    g = _class_gradients("unfitted", 700)
    plain = epic_exact(g, n_medoids=140, cluster_threshold=1, cache_max=0)
    stats = np.zeros((140, 4), dtype=np.int64)
    counted = epic_exact(g, n_medoids=140, cluster_threshold=1, cache_max=0, stats=stats)
    assert counted.medoids.tolist() == plain.medoids.tolist()
    assert (counted.drop == plain.drop).all()
    assert stats[0, 1] == 1 and stats[0, 3] == 700 * 700
    assert stats[:, 0].sum() > 0 and (stats[:, 2] <= stats[:, 0] * 700).all()
