"""The trajectory rule: groups that training pulled far towards their label."""

import numpy as np

from gradscore import neighbors as nb
from gradscore.gradients import DenseGradients
from gradscore.selection.groups import tree_edges
from gradscore.selection.trajectory import gain_spread, group_lifts, trajectory_drop


def _trees(labels, features, k=10):
    trees = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        idx, d2, _ = nb.kneighbors(DenseGradients(features[rows]), min(k, rows.size - 1))
        trees.append((int(c), rows) + tree_edges(idx, d2)[:2])
    return trees


def _blobs(seed=0, n=60, c=3, d=8):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(c), n)
    centres = rng.normal(scale=6.0, size=(c, d))
    features = centres[labels] + rng.normal(size=(labels.size, d))
    gain = rng.normal(scale=1.0, size=labels.size)
    return rng, labels, features, gain


def test_group_lifts_equal_a_brute_force_walk_of_the_tree():
    rng, labels, features, gain = _blobs(seed=3, n=40, c=1)
    (_, rows, ei, ej), = _trees(labels, features)
    got = group_lifts(gain, ei, ej)
    # Brute force: every node of the merge tree, medians from scratch.
    n = gain.size
    want = np.full(n, np.nan)
    comp = {i: {i} for i in range(n)}
    where = list(range(n))
    for a, b in zip(ei, ej):
        ra, rb = where[a], where[b]
        if ra == rb:
            continue
        merged = comp.pop(ra) | comp.pop(rb)
        comp[ra] = merged
        for m in merged:
            where[m] = ra
        if 3 <= len(merged) <= n // 2:
            inside = np.zeros(n, bool)
            inside[list(merged)] = True
            lift = np.median(gain[inside]) - np.median(gain[~inside])
            for m in merged:
                want[m] = np.fmax(want[m], lift)
    np.testing.assert_allclose(got, want)


def test_a_pulled_group_is_dropped_and_nothing_else():
    rng, labels, features, gain = _blobs()
    # Ten rows of class 1 sit together (a tight group between classes) and
    # gained 20 nats more than the rest of their class.
    group = np.flatnonzero(labels == 1)[:10]
    features[group] = features[group].mean(0) + 0.05 * rng.normal(size=(10, features.shape[1]))
    gain[group] += 20.0
    agrees = np.ones(labels.size, bool)
    res = trajectory_drop(gain, agrees, labels, _trees(labels, features))
    assert res.acted
    np.testing.assert_array_equal(np.flatnonzero(res.drop), np.sort(group))
    assert 0.5 < res.spread < 1.5


def test_clean_data_is_left_alone():
    for seed in range(5):
        _, labels, features, gain = _blobs(seed=seed)
        res = trajectory_drop(gain, np.ones(labels.size, bool), labels,
                              _trees(labels, features))
        assert res.acted and not res.drop.any()


def test_lone_outliers_are_not_a_group():
    rng, labels, features, gain = _blobs(seed=1)
    # Two scattered rows per class gained a lot: single examples, not a group.
    for c in range(3):
        gain[np.flatnonzero(labels == c)[[5, 40]]] += 30.0
    res = trajectory_drop(gain, np.ones(labels.size, bool), labels, _trees(labels, features))
    assert not res.drop.any()


def test_a_reference_without_signal_drops_nothing():
    rng, labels, features, gain = _blobs()
    group = np.flatnonzero(labels == 1)[:10]
    features[group] = features[group].mean(0)
    gain[group] += 20.0
    # The reference predicted the label for a third of the rows: chance for 3 classes.
    agrees = rng.random(labels.size) < 1 / 3
    res = trajectory_drop(gain, agrees, labels, _trees(labels, features))
    assert not res.acted and not res.drop.any()
    assert np.isnan(res.lift).all()


def test_spread_ignores_one_class_full_of_pulled_rows():
    rng, labels, features, gain = _blobs(c=5)
    base = gain_spread(gain, labels)
    gain[labels == 2] = rng.normal(scale=15.0, size=60)
    assert abs(gain_spread(gain, labels) - base) < 0.3
