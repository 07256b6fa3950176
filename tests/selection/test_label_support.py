"""``label-support``: the neighbours' vote and a head fitted without the suspects."""

import numpy as np
import pytest

import gradscore
from gradscore import GradscoreError
from gradscore.selection.label_support import SUSPECT_SHARE, _label_support, label_support


def test_hand_worked_support():
    # Six points on a line, k = 2. Row 2 (label 1) sits among label 0;
    # neighbours by distance, ties to the lower index:
    #   row: 0    1    2    3    4    5
    #   x:   0.0  1.0  1.5  3.0  9.0  10.0
    #   y:   0    0    1    0    1    1
    # 0: {1, 2} -> share 1/2;  1: {2, 0} -> 1/2;  2: {1, 3} -> 0;
    # 3: {2, 1} -> 1/2;        4: {5, 3} -> 1/2;  5: {4, 3} -> 1/2.
    x = np.array([[0.0], [1.0], [1.5], [3.0], [9.0], [10.0]])
    y = np.array([0, 0, 1, 0, 1, 1])
    idx = np.array([[1, 2], [2, 0], [1, 3], [2, 1], [5, 3], [4, 3]])
    support, drop = _label_support(y, x, idx, num_classes=2)
    share = np.array([0.5, 0.5, 0.0, 0.5, 0.5, 0.5])
    # Every row is a suspect (share <= 1/2): no head can be fitted, the vote alone.
    assert SUSPECT_SHARE == 0.5
    np.testing.assert_allclose(support, share)
    np.testing.assert_array_equal(drop, share < 0.15)



def test_support_is_the_mean_of_the_vote_and_a_head_fitted_without_suspects():
    # Three classes on a line; row 9 is labelled 0 but sits among class 1, and
    # its two neighbours (given by hand) are class 1's: share 0, a suspect.
    # Every other row's neighbours are its own class's: share 1. The head is
    # fitted on rows 0-8 only, on x standardised over all ten rows; the
    # reference is scikit-learn's multinomial fit of the same objective
    # (C * sum of cross-entropies + |W|^2 / 2, C = 1 / (alpha * 9)).
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [0.5], [1.0], [5.0], [5.5], [6.0], [10.0], [10.5], [11.0], [5.2]])
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    idx = np.array([[1, 2], [0, 2], [1, 0], [4, 5], [3, 5], [4, 3], [7, 8], [6, 8], [7, 6],
                    [3, 4]])
    support, drop = _label_support(y, x, idx, num_classes=3, alpha=1e-2)
    xs = (x - x.mean()) / x.std()
    ref = LogisticRegression(C=1 / (1e-2 * 9), tol=1e-12, max_iter=10000).fit(xs[:9], y[:9])
    p = ref.predict_proba(xs)[np.arange(10), y]
    share = np.array([1.0] * 9 + [0.0])
    np.testing.assert_allclose(support, (share + p) / 2, atol=1e-4)
    assert p[9] < 0.3 and np.flatnonzero(drop).tolist() == [9]


def backdoor(seed=0, trigger=1.5, n=400, poisons=24):
    """Four classes in 8-d; poisons of classes 1-3 carry a trigger and label 0."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n // 4)
    x = rng.normal(size=(n, 8)) + 5 * np.eye(4, 8)[y]
    rows = rng.choice(np.flatnonzero(y != 0), poisons, replace=False)
    x[rows, 7] += trigger                   # the trigger: one shared direction
    y = y.copy()
    y[rows] = 0
    return y, x, rows


def test_a_head_fitted_without_the_suspects_does_not_learn_the_trigger():
    from gradscore.heads import fit_without
    from gradscore.neighbors import kneighbors
    from gradscore.gradients import DenseGradients
    from gradscore.selection.feature_space import deep_knn_agreement

    y, x, rows = backdoor(trigger=2.5)
    # An out-of-fold head, trained on the other folds' poisons, reads the
    # trigger as class 0 for half of them ...
    probe = gradscore.audit.cross_fit_probe(y, x)
    assert np.mean(probe.logits[rows].argmax(1) == 0) >= 0.5
    # ... a head fitted without the suspects (share <= 1/2) for hardly any.
    idx = kneighbors(DenseGradients(x.astype(np.float32)), 10, backend="brute")[0]
    share, _ = deep_knn_agreement(y, idx, 4)
    suspect = share <= SUSPECT_SHARE
    assert suspect[rows].mean() > 0.9
    head = fit_without(y, x, suspect, num_classes=4)
    assert np.mean(head[rows[suspect[rows]]].argmax(1) == 0) <= 0.1


def test_label_support_drops_a_backdoor_and_little_else():
    for seed in (0, 1):
        y, x, rows = backdoor(seed)
        support, drop = label_support(y, x, k=10)
        assert drop[rows].mean() >= 0.85
        clean = np.setdiff1d(np.arange(y.size), rows)
        assert drop[clean].mean() <= 0.01
        assert support.min() >= 0 and support.max() <= 1


def test_same_decisions_through_score_permuted_and_in_float32():
    y, x, rows = backdoor(seed=1)
    support, drop = label_support(y, x, k=10)
    res = gradscore.score(y, np.zeros((y.size, 4)), x, method="label-support", k=10)
    np.testing.assert_array_equal(~res.keep, drop)
    np.testing.assert_allclose(res.scores, support)
    perm = np.random.default_rng(0).permutation(y.size)
    s_p, d_p = label_support(y[perm], x[perm], k=10)
    np.testing.assert_array_equal(d_p, drop[perm])
    np.testing.assert_allclose(s_p, support[perm], atol=1e-5)
    s32, d32 = label_support(y, x.astype(np.float32), k=10)
    np.testing.assert_array_equal(d32, drop)


def test_label_support_refuses_bad_input():
    y, x, _ = backdoor()
    with pytest.raises(GradscoreError, match=r"'threshold' must be in \[0.0, 1.0\]; got 2.0"):
        label_support(y, x, threshold=2.0)
    with pytest.raises(GradscoreError, match="labels has 400 rows but features has 3"):
        label_support(y, x[:3])
    with pytest.raises(GradscoreError, match="'k' must be an int >= 1; got 0"):
        label_support(y, x, k=0)
