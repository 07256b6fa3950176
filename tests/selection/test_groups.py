"""The 'groups' method: poisons that sit together or alone, judged by what surrounds them."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage

from conftest import FIXTURES, poisoned_blobs
from gradscore.gradients import DenseGradients
from gradscore.neighbors import brute_kneighbors
from gradscore.selection.groups import foreign_groups, single_linkage, tree_edges


def _class_knn(x, k):
    return brute_kneighbors(DenseGradients(np.asarray(x, dtype=np.float64)), k)


def test_single_linkage_matches_scipy_on_the_full_graph():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    idx, d2 = _class_knn(x, 39)
    height, size = single_linkage(idx, d2)
    z = linkage(x, method="single")
    np.testing.assert_allclose(height, z[:, 2], rtol=1e-10)
    np.testing.assert_array_equal(size, z[:, 3].astype(int))


def run_all_classes(x, y, k=20):
    nbr, _ = _class_knn(x, k)
    trees = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        idx, d2 = _class_knn(x[rows], min(k, rows.size - 1))
        trees.append((int(c), rows) + tree_edges(idx, d2)[:2])
    return foreign_groups(y, nbr, trees, num_classes=3, features=x)[0]


def test_finds_the_tight_group_in_another_class():
    x, y, is_p = poisoned_blobs()
    drop = run_all_classes(x, y)
    group = is_p & (y == 0)
    assert drop[group].all()
    assert drop[~is_p].mean() <= 0.02


def _score(x, y, **kw):
    import gradscore
    logits = 3.0 * np.eye(int(y.max()) + 1)[y]
    return gradscore.score(y, logits, x, method="groups", **kw)


def test_score_drops_groups_and_singletons_and_little_else():
    x, y, is_p = poisoned_blobs(seed=1)
    r = _score(x, y)
    assert (~r.keep)[is_p].all()               # the group and the lone poisons
    assert (~r.keep)[~is_p].mean() <= 0.01
    # Deep k-NN alone misses the group: its members vote for each other.
    import gradscore
    d = gradscore.score(y, 3.0 * np.eye(3)[y], x, method="deep-knn")
    assert (~d.keep)[is_p & (y == 0)].mean() < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_data_is_left_alone(seed):
    rng = np.random.default_rng(seed)
    centres = 5.0 * rng.normal(size=(4, 12))
    y = np.repeat(np.arange(4), 250)
    x = centres[y] + rng.normal(size=(y.size, 12))
    r = _score(x, y)
    assert (~r.keep).mean() <= 0.02


def test_a_tight_group_of_its_own_class_is_kept():
    # Near-duplicates of one clean example (augmentation) sit apart but among their own label.
    x, y, _ = poisoned_blobs(seed=3, group=0, singles=0)
    rng = np.random.default_rng(3)
    dup = x[5] + 0.01 * rng.normal(size=(12, x.shape[1]))
    x = np.concatenate([x, dup])
    y = np.concatenate([y, np.zeros(12, int)])
    r = _score(x, y)
    assert r.keep[-12:].all()


def test_float32_and_float64_give_the_same_decisions():
    x, y, _ = poisoned_blobs(seed=4)
    r64 = _score(x.astype(np.float64), y)
    r32 = _score(x.astype(np.float32), y)
    np.testing.assert_array_equal(r64.keep, r32.keep)


def test_permuting_rows_permutes_decisions():
    x, y, _ = poisoned_blobs(seed=5)
    perm = np.random.default_rng(5).permutation(y.size)
    r = _score(x, y)
    rp = _score(x[perm], y[perm])
    np.testing.assert_array_equal(rp.keep, r.keep[perm])
    np.testing.assert_allclose(rp.scores, r.scores[perm])


def test_dropped_before_rows_neither_scored_nor_voting():
    x, y, is_p = poisoned_blobs(seed=6)
    active = ~is_p
    r = _score(x, y, active=active)
    assert (r.decision[is_p] == "dropped-before").all()
    assert (~r.keep)[active].mean() <= 0.01


def test_groups_needs_features():
    import gradscore
    from gradscore.errors import GradscoreError
    with pytest.raises(GradscoreError, match="method='groups' needs features"):
        gradscore.score(np.array([0, 1, 0, 1]), np.eye(2)[[0, 1, 0, 1]], method="groups")


def test_cli_groups_catches_the_fixtures_feature_collision_poisons(tmp_path):
    # The shipped fixture: a real digits export with 20 feature-collision
    # poisons sitting together (13% of their class); deep k-NN finds none.
    import json
    import os
    from click.testing import CliRunner
    from gradscore_cli.main import main
    import gradscore
    here = FIXTURES
    poisons = set(json.load(open(os.path.join(here, "digits_poisons.json")))["poison_ids"])
    out = tmp_path / "keep.txt"
    res = CliRunner().invoke(main, ["score", os.path.join(here, "digits_epoch.h5"), "--method",
                                    "groups", "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    kept = set(gradscore.read_keeplist(str(out)).tolist())
    assert not poisons & kept
    n_clean = 1497 - len(poisons)
    assert n_clean - len(kept) <= 0.05 * n_clean


def test_a_group_that_is_almost_half_its_class_is_found_and_the_rest_kept():
    # 30 poisons in a class of 70 (the defence benchmark's digits settings):
    # the clean 40 must not be judged a foreign group once the poisons are.
    x, y, is_p = poisoned_blobs(seed=7, n_per=40, group=30, singles=0)
    rng = np.random.default_rng(7)
    # Classes 1 and 2 larger, as the target's class is in the benchmark.
    extra = np.concatenate([6.0 * np.eye(3, x.shape[1])[c] + rng.normal(size=(160, x.shape[1]))
                            for c in (1, 2)])
    x = np.concatenate([x, extra])
    y = np.concatenate([y, np.repeat([1, 2], 160)])
    is_p = np.concatenate([is_p, np.zeros(320, bool)])
    r = _score(x, y)
    assert (~r.keep)[is_p].mean() >= 0.9
    assert (~r.keep)[~is_p & (y == 0)].mean() <= 0.1
