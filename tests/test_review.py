"""What a reviewer sees for each flagged row: suggested label, confidence, signal; the bad share."""

import csv
from html.parser import HTMLParser

import numpy as np
import pytest

import gradscore
from gradscore import GradscoreError
from gradscore.review import estimate_bad_share, join_signals, suggest


def test_bad_share_hand_worked():
    # t0 = mean p0 over label 0 = (.9 + .8 + .1) / 3 = .6, t1 = (.8 + .9 + .3) / 3 = .667.
    # Row 2 (label 0, p1 = .9) counts as C[0, 1], row 5 (label 1, p0 = .7) as C[1, 0]:
    # C = [[2, 1], [1, 2]], rows already sum to the class counts, off-diagonal 2 / 6.
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.1, .9], [.7, .3]])
    assert estimate_bad_share(labels, np.log(probs)) == pytest.approx(1 / 3)
    # No row reaches a threshold of another class: nothing looks bad.
    probs = np.array([[.9, .1], [.8, .2], [.7, .3], [.2, .8], [.1, .9], [.3, .7]])
    assert estimate_bad_share(labels, np.log(probs)) == 0.0
    labels = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[.95, .05], [.5, .5], [.5, .5], [.05, .95], [.1, .9], [.1, .9]])
    # t0 = (.95 + .5 + .5 + .05) / 4 = .5, t1 = .9: rows 0-2 -> class 0 (row 1, 2 have
    # p0 = .5 >= t0 and p1 = .5 < t1), row 3 -> class 1, rows 4-5 -> class 1.
    # C = [[3, 1], [0, 2]]: its rows already sum to the class counts; share = 1 / 6.
    assert estimate_bad_share(labels, np.log(probs)) == pytest.approx(1 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_share_matches_cleanlab(seed):
    count = pytest.importorskip("cleanlab.count")
    rng = np.random.default_rng(seed)
    n, c = 3000, 5
    true = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 3.0 * np.eye(c)[true]
    labels = true.copy()
    flip = rng.choice(n, 150, replace=False)
    labels[flip] = (labels[flip] + rng.integers(1, c, flip.size)) % c
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    joint = count.estimate_joint(labels, probs)
    ref = 1.0 - np.trace(joint)
    # cleanlab rounds the calibrated joint to whole rows (row totals kept): the
    # diagonal moves by under one row per class.
    ours = estimate_bad_share(labels, logits)
    assert ours == pytest.approx(ref, abs=c / n)
    assert 0.03 < ours < 0.08          # 5% of the labels are wrong


def test_bad_share_refuses_bad_input():
    with pytest.raises(GradscoreError, match="labels has 3 rows but logits has 2"):
        estimate_bad_share([0, 1, 0], np.zeros((2, 2)))
    with pytest.raises(GradscoreError, match="logits"):
        estimate_bad_share([0, 1], np.array([[0.0, np.nan], [0.0, 1.0]]))


def test_suggest_hand_worked():
    labels = np.array([0, 1, 2, 0])
    # Row 0 (label 0): neighbours 1, 1, 2, 0 -> votes (1/4, 2/4, 1/4); head (.2, .3, .5):
    # q = (.225, .4, .375): class 1, .4. Row 3 (label 0): neighbours 2, 2, -1 (none), 0
    # -> three votes (1/3, 0, 2/3); head (.1, .1, .8): q = (.217, .05, .733): class 2.
    nl = np.array([[1, 1, 2, 0], [2, 2, -1, 0]])
    probs = np.array([[.2, .3, .5], [.1, .1, .8]])
    sug, conf = suggest(labels, np.array([0, 3]), num_classes=3, neighbour_labels=nl,
                        probs=probs)
    np.testing.assert_array_equal(sug, [1, 2])
    np.testing.assert_allclose(conf, [0.4, (2 / 3 + .8) / 2])
    # Neighbours alone; the own label is never suggested, even when it leads.
    sug, conf = suggest(labels, np.array([0]), num_classes=3, neighbour_labels=nl[:1])
    np.testing.assert_array_equal(sug, [1])
    np.testing.assert_allclose(conf, [0.5])
    sug, conf = suggest(labels, np.array([1]), num_classes=3, probs=np.array([[.1, .6, .3]]))
    assert sug.tolist() == [2] and conf.tolist() == [pytest.approx(.3)]
    assert join_signals(("a", np.array([1, 0, 1], bool)),
                        ("b", np.array([1, 1, 0], bool))).tolist() == ["a+b", "b", "a"]


def flipped(seed=0, n=300, c=3, flips=6):
    """Three separated classes; ``flips`` rows filed under another class."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, 8)) + 5 * np.eye(c, 8)[true]
    rows = rng.choice(n, flips, replace=False)
    y = true.copy()
    y[rows] = (true[rows] + 1) % c
    logits = 2.0 * x[:, :c]        # a head that never saw the labels
    return y, logits, x, true, np.sort(rows)


@pytest.mark.parametrize("method", ["label-support", "deep-knn", "groups"])
def test_flagged_flips_get_their_true_label_back(method):
    y, logits, x, true, rows = flipped()
    res = gradscore.score(y, logits, x, method=method)
    flagged = np.flatnonzero(res.flagged)
    np.testing.assert_array_equal(flagged, rows)
    np.testing.assert_array_equal(res.suggested_label[rows], true[rows])
    assert (res.suggestion_confidence[rows] > 0.8).all()
    assert all("neighbours" in s and "head" in s for s in res.signal[rows])
    # Rows not flagged carry no suggestion.
    others = np.setdiff1d(np.arange(y.size), rows)
    assert (res.suggested_label[others] == -1).all()
    assert np.isnan(res.suggestion_confidence[others]).all()
    assert (res.signal[others] == "").all()
    # 6 of 300 rows (2%) are mislabelled.
    assert res.bad_share == pytest.approx(0.02, abs=0.01)
    # float32 inputs: the same suggestions.
    res32 = gradscore.score(y, logits.astype(np.float32), x.astype(np.float32), method=method)
    np.testing.assert_array_equal(res32.suggested_label, res.suggested_label)


def test_per_class_method_names_itself_as_the_signal():
    y, logits, x, true, rows = flipped()
    res = gradscore.score(y, logits, x, method="knn-density", drop_fraction=0.05)
    flagged = np.flatnonzero(res.flagged)
    assert flagged.size and all(s.startswith("knn-density") for s in res.signal[flagged])
    # The head alone suggests: for the flips among them, their true class.
    hit = np.intersect1d(flagged, rows)
    np.testing.assert_array_equal(res.suggested_label[hit], true[hit])
    assert all(s == "knn-density+head" for s in res.signal[hit])


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.sections, self._row, self._in = [], [], None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "table" and a.get("id") == "flagged-table":
            self._in = True
        if self._in and tag == "tr" and "data-id" in a:
            self._row = [a["data-id"]]
            self.rows.append(self._row)

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False

    def handle_data(self, data):
        if self._row is not None and self._in and data.strip():
            self._row.append(data.strip())


def test_scores_csv_and_report_list_every_flagged_row(tmp_path):
    pytest.importorskip("matplotlib")
    from gradscore.report.html import write_report

    y, logits, x, true, rows = flipped()
    export = tmp_path / "e.h5"
    gradscore.write_epoch(export, labels=y, logits=logits, features=x,
                          ids=np.arange(y.size) + 1000)
    result, epoch, _ = gradscore.score_files(export, output=tmp_path / "k.txt",
                                             scores_path=tmp_path / "s.csv",
                                             method="label-support")
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["id", "label", "score", "cluster_size", "flagged", "decision",
                              "suggested_label", "suggestion_confidence", "signal"]
    got = {int(r["id"]) - 1000: r for r in table if r["flagged"] == "1"}
    assert sorted(got) == rows.tolist()
    for r, row in got.items():
        assert int(row["suggested_label"]) == true[r]
        assert float(row["suggestion_confidence"]) == result.suggestion_confidence[r]
        assert row["signal"] == "neighbours+head"
    assert all(r["suggested_label"] == r["suggestion_confidence"] == r["signal"] == ""
               for r in table if r["flagged"] == "0")
    page = tmp_path / "r.html"
    write_report(page, result=result, epoch=epoch)
    p = _Rows()
    p.feed(page.read_text(encoding="utf-8"))
    assert "flagged" in p.sections
    shown = {int(r[0]) - 1000: r for r in p.rows}
    assert sorted(shown) == rows.tolist()
    for r, cells in shown.items():
        # data-id, then the cells: id, label, suggested, sure, signal, decision
        assert cells[2:4] == [str(y[r]), str(true[r])]
        assert cells[4] == f"{result.suggestion_confidence[r]:.2f}"
        assert cells[5] == "neighbours+head"
    assert "estimated bad rows" in page.read_text(encoding="utf-8")
