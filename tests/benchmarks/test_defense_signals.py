"""benchmarks/defense/signals.py on synthetic classes with a planted group.

The signals are diagnostics of the defence benchmark; these tests check that
they measure what their docstrings say, on data whose answer is known.
"""


import numpy as np
import pytest


pytest.importorskip("sklearn")

from benchmarks.defense import signals  # noqa: E402


def _class(rng, n, d, centre):
    return centre + rng.normal(size=(n, d))


def test_node_lifts_finds_a_planted_group_leaning_towards_another_class():
    rng = np.random.default_rng(0)
    d, n, g = 8, 80, 20
    feats = _class(rng, n, d, np.zeros(d))
    # A tight group far from the bulk, whose logits lean towards class 2.
    feats[:g] = 12.0 + 0.1 * rng.normal(size=(g, d))
    logits = np.zeros((n, 3))
    logits[:, 0] = 10.0
    logits[:g, 2] = 8.0
    is_poison = np.zeros(n, bool)
    is_poison[:g] = True
    poison_lift, clean_lift = signals.node_lifts(logits, 0, feats, is_poison)
    assert poison_lift == pytest.approx(8.0, abs=1e-9)
    # Every other group of the class leans by at most the poisons' pull on it.
    assert clean_lift < poison_lift


def test_margin_rule_drops_a_large_leaning_group_and_leaves_a_few_outliers():
    rng = np.random.default_rng(1)
    n = 100
    labels = np.zeros(n, np.int64)
    logits = np.zeros((n, 3))
    logits[:, 0] = 10.0 + 0.1 * rng.normal(size=n)
    logits[:20, 1] = 9.0            # 20% of the class leans 9 nats towards class 1
    logits[20:22, 2] = 9.0          # 2 members lean towards class 2: below the 10% floor
    drop = signals.margin_rule(labels, logits, delta=6.0)
    assert drop[:20].all()
    assert not drop[20:].any()


def test_two_means_isolates_a_large_separate_group():
    rng = np.random.default_rng(2)
    feats = _class(rng, 60, 12, np.zeros(12))
    feats[:25] += 15.0
    small, sil = signals.two_means(feats)
    assert small[:25].all() and not small[25:].any()
    assert sil > 0.5


def test_target_class_names_the_runner_up_and_the_start_share():
    labels = np.array([0, 0, 0, 0, 1, 2])
    is_poison = np.array([True, True, True, False, False, False])
    logits = np.array([[5.0, 1.0, 3.0], [5.0, 0.0, 4.0], [5.0, 4.5, 1.0],
                       [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    start = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0],
                      [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    out = signals.target_class(logits, labels, is_poison, 2, start)
    assert out == dict(runner_up_is_target=True, start_target_share=pytest.approx(2 / 3))
    assert not signals.target_class(logits, labels, is_poison, 1)["runner_up_is_target"]


def test_miss_lines_split_recall_by_whether_the_attack_still_succeeds(tmp_path):
    import json
    from benchmarks.defense import report
    rows = [dict(attack="bullseye-polytope", defence="groups", target=t, success=s,
                 poison_recall=r)
            for t, (s, r) in enumerate([(1.0, 0.1), (0.0, 0.9), (0.0, 1.0), (1.0, 0.0)])]
    rows.append(dict(attack="backdoor", defence="groups", target=0, success=0.4,
                     poison_recall=0.8))
    (tmp_path / "results_x.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    lines = report.miss_lines(str(tmp_path), "groups").splitlines()
    assert lines[2] == "| bullseye-polytope | 2 / 4 | 0.00, 0.10 | 0.95 (0.90) |"
    assert len(lines) == 3   # the backdoor's success is a rate: no row
