"""Reading a run's history: per-example margins and losses of earlier exports, matched by id."""

import numpy as np
import pytest

import gradscore
from gradscore.errors import GradscoreError
from gradscore.history import (area_under_margin, history_from_arrays, label_loss,
                               margin_gain, own_margin, read_history)


def test_margin_and_loss_by_hand():
    labels = np.array([0, 2])
    logits = np.array([[3.0, 1.0, 0.5], [0.0, 4.0, 1.0]])
    np.testing.assert_allclose(own_margin(labels, logits), [2.0, -3.0])
    want = [-np.log(np.exp(3) / (np.exp(3) + np.exp(1) + np.exp(0.5))),
            -np.log(np.exp(1) / (1 + np.exp(4) + np.exp(1)))]
    np.testing.assert_allclose(label_loss(labels, logits), want)


def _export(path, ids, labels, logits, epoch):
    gradscore.write_epoch(path, labels=labels, logits=logits, ids=ids, epoch=epoch,
                          num_classes=logits.shape[1])
    return str(path)


def _data(n=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    return labels, rng.normal(size=(n, c))


def test_rows_matched_by_id_and_rows_dropped_earlier_are_nan(tmp_path):
    labels, z0 = _data()
    _, z4 = _data(seed=1)
    _, z6 = _data(seed=2)
    ids = np.arange(100, 112)
    ref = _export(tmp_path / "e0.h5", ids[::-1], labels[::-1], z0[::-1], 0)   # reversed rows
    # Epoch 4's export lacks rows 3 and 7: dropped at an earlier round, no longer exported.
    keep = np.setdiff1d(np.arange(12), [3, 7])
    e4 = _export(tmp_path / "e4.h5", ids[keep], labels[keep], z4[keep], 4)
    h = read_history([ref, e4], ids=ids, labels=labels, num_classes=3, epoch=6)
    assert h.epochs == [0, 4] and h.n_past == 2
    np.testing.assert_allclose(h.margin[0], own_margin(labels, z0), rtol=1e-6)
    np.testing.assert_allclose(h.loss[0], label_loss(labels, z0), rtol=1e-6)
    assert np.isnan(h.margin[1, [3, 7]]).all() and np.isnan(h.loss[1, [3, 7]]).all()
    np.testing.assert_allclose(h.margin[1, keep], own_margin(labels[keep], z4[keep]), rtol=1e-6)
    # The signals: gain since the reference, and the mean margin after it.
    np.testing.assert_allclose(margin_gain(h, labels, z6),
                               own_margin(labels, z6) - own_margin(labels, z0), rtol=1e-5)
    aum = area_under_margin(h, labels, z6)
    m4, m6 = own_margin(labels, z4), own_margin(labels, z6)
    np.testing.assert_allclose(aum[keep], (m4[keep] + m6[keep]) / 2, rtol=1e-5)
    np.testing.assert_allclose(aum[[3, 7]], m6[[3, 7]], rtol=1e-6)
    # The scored export may lack rows of the history (dropped since): they are ignored.
    h2 = read_history([ref, e4], ids=ids[:5], labels=labels[:5], num_classes=3)
    assert h2.margin.shape == (2, 5)


def test_id_mismatches_refused(tmp_path):
    labels, z = _data()
    ids = np.arange(12)
    ref_short = _export(tmp_path / "short.h5", ids[:10], labels[:10], z[:10], 0)
    with pytest.raises(GradscoreError, match=r"short\.h5 lacks 2 id\(s\).*first: 10, 11"):
        read_history([ref_short], ids=ids, labels=labels, num_classes=3)
    ref = _export(tmp_path / "ref.h5", ids, labels, z, 0)
    foreign = _export(tmp_path / "foreign.h5", np.arange(5, 17), labels, z, 2)
    with pytest.raises(GradscoreError, match=r"foreign\.h5 holds 5 id\(s\) that the "
                                             r"reference lacks \(first: 12, 13"):
        read_history([ref, foreign], ids=ids, labels=labels, num_classes=3)
    relabelled = labels.copy()
    relabelled[4] = (relabelled[4] + 1) % 3
    other = _export(tmp_path / "other.h5", ids, relabelled, z, 0)
    with pytest.raises(GradscoreError, match=r"other\.h5 gives 1 id\(s\) another label.*"
                                             r"id 4: 2 there, 1 here"):
        read_history([other], ids=ids, labels=labels, num_classes=3)
    with pytest.raises(GradscoreError, match=r"has 3 classes but the export scored has 4"):
        read_history([ref], ids=ids, labels=labels, num_classes=4)
    with pytest.raises(GradscoreError, match=r"is epoch 0, not before the epoch scored \(0\)"):
        read_history([ref], ids=ids, labels=labels, num_classes=3, epoch=0)
    with pytest.raises(GradscoreError, match=r"integer ids but the export scored has "
                                             r"string ids"):
        read_history([ref], ids=np.array([str(i) for i in ids], dtype=object),
                     labels=labels, num_classes=3)


def test_history_from_arrays_same_as_from_files(tmp_path):
    labels, z0 = _data()
    _, z1 = _data(seed=3)
    ids = np.arange(12)
    files = [_export(tmp_path / "a.h5", ids, labels, z0, 0),
             _export(tmp_path / "b.h5", ids, labels, z1, 1)]
    a = history_from_arrays(labels, [(labels, z0), (labels, z1)])
    b = read_history(files, ids=ids, labels=labels, num_classes=3)
    np.testing.assert_array_equal(a.margin, b.margin)
    np.testing.assert_array_equal(a.loss, b.loss)
    with pytest.raises(GradscoreError, match=r"history reference \(in memory\) lacks 1 "
                                             r"id\(s\) of the export scored \(first: 11\)"):
        history_from_arrays(labels, [(labels[:11], z0[:11])])
