"""DropSchedule: which epochs score, cumulative drops, persistence and resume.

The "model" is a NumPy softmax regression on load_digits trained by full-batch
gradient descent, so every epoch gives real, changing logits.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gradscore.scoring.files import score_files
from gradscore.errors import GradscoreError
from gradscore.io import read_keeplist, write_epoch, write_keeplist
from gradscore.scoring.memory import score
from gradscore.schedule import DropSchedule

sklearn_datasets = pytest.importorskip("sklearn.datasets")

PARAMS = dict(fraction=0.2, k=10)


@pytest.fixture(scope="module")
def epochs():
    """Per-epoch (labels, logits, features) of a softmax regression, epochs 1..6."""
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    w = rng.normal(scale=0.01, size=(64, 10))
    onehot = np.eye(10)[y]
    out = {}
    for epoch in range(1, 7):
        for _ in range(5):
            z = x @ w
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w -= 0.5 * x.T @ (p - onehot) / len(y)
        out[epoch] = (y, (x @ w).astype(np.float32), x)
    return out


def test_scheduled_epochs_hand_worked():
    s = DropSchedule(warmup=2, freq=3, stop=8)
    assert [e for e in range(12) if s.scheduled(e)] == [2, 5, 8]
    s = DropSchedule(warmup=0, freq=2)
    assert [e for e in range(7) if s.due(e)] == [0, 2, 4, 6]
    assert s.due(1000) and not s.due(1001)
    s = DropSchedule(warmup=3, freq=1, stop=3)
    assert [e for e in range(10) if s.due(e)] == [3]


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup=-1, freq=1), r"'warmup' must be an int >= 0; got -1"),
    (dict(warmup=1, freq=0), r"'freq' must be an int >= 1; got 0"),
    (dict(warmup=5, freq=1, stop=4), r"'stop' must be an int >= 5; got 4"),
    (dict(warmup=1, freq=1, fractoin=0.2), r"unknown scoring parameter\(s\) 'fractoin'"),
    (dict(warmup=1, freq=1, active=None), r"unknown scoring parameter\(s\) 'active'"),
    (dict(warmup=1, freq=1, k=np.array([3])), r"saved as JSON"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(GradscoreError, match=match):
        DropSchedule(**kwargs)


def test_in_memory_drops_are_cumulative_and_match_score(epochs):
    s = DropSchedule(warmup=2, freq=2, stop=6, **PARAMS)
    masks = {}
    active = None
    for epoch in range(1, 7):
        if not s.due(epoch):
            continue
        labels, logits, feats = epochs[epoch]
        masks[epoch] = s.step(epoch, labels, logits, feats)
        # Reference: the same chain through gradscore.score(active=...).
        ref = score(labels, logits, feats, active=active, **PARAMS).keep
        np.testing.assert_array_equal(masks[epoch], ref)
        active = ref
    assert sorted(masks) == [2, 4, 6] == s.done
    assert not (masks[4] & ~masks[2]).any() and not (masks[6] & ~masks[4]).any()
    assert masks[6].sum() < masks[4].sum() < masks[2].sum() < len(masks[2])
    np.testing.assert_array_equal(s.keep_ids, np.flatnonzero(masks[6]))
    assert [h["dropped"] for h in s.history] == [
        len(masks[2]) - masks[2].sum(), masks[2].sum() - masks[4].sum(),
        masks[4].sum() - masks[6].sum()]
    np.testing.assert_array_equal(s.keep_mask(np.arange(len(masks[6]))), masks[6])


def test_not_due_and_rescoring_are_refused(epochs):
    s = DropSchedule(warmup=2, freq=2, **PARAMS)
    labels, logits, _ = epochs[1]
    with pytest.raises(GradscoreError, match=r"epoch 1 is not a scoring epoch .*warmup=2, "
                                             r"freq=2, no end"):
        s.step(1, labels, logits)
    s.step(2, labels, logits)
    with pytest.raises(GradscoreError, match=r"epoch 2 was already scored \(scored: \[2\]\)"):
        s.step(2, labels, logits)


def test_string_ids_and_row_order(epochs):
    labels, logits, _ = epochs[2]
    ids = np.array([f"img{i:04d}" for i in range(labels.size)], dtype=object)
    s = DropSchedule(warmup=2, freq=1, **PARAMS)
    keep = s.step(2, labels, logits, ids=ids)
    assert s.keep_ids.dtype == object and set(s.keep_ids) == set(ids[keep])
    # Rows in another order at the next scoring: the mask follows the ids.
    perm = np.random.default_rng(1).permutation(labels.size)
    labels3, logits3, _ = epochs[3]
    keep3 = s.step(3, labels3[perm], logits3[perm], ids=ids[perm])
    assert not (keep3 & ~keep[perm]).any()
    assert set(s.keep_ids) == set(ids[perm][keep3])


def test_files_mode_equals_in_memory_and_chains_keeplists(tmp_path, epochs):
    mem = DropSchedule(warmup=2, freq=2, **PARAMS)
    files = DropSchedule(warmup=2, freq=2, state_path=tmp_path / "state.json", **PARAMS)
    outs = []
    for epoch in (2, 4):
        labels, logits, feats = epochs[epoch]
        mem.step(epoch, labels, logits, feats)
        path = tmp_path / f"epoch_{epoch:03d}.h5"
        write_epoch(path, labels=labels, logits=logits, features=feats,
                    ids=np.arange(labels.size), epoch=epoch)
        outs.append(files.step_files(epoch, path, output=tmp_path / f"keep_{epoch}.json"))
        np.testing.assert_array_equal(files.keep_ids, mem.keep_ids)
        np.testing.assert_array_equal(read_keeplist(outs[-1]), files.keep_ids)
    # The second keep-list names the first as its previous one (provenance).
    meta = json.loads(open(outs[1]).read())["metadata"]
    assert meta["previous"] == os.path.abspath(outs[0])
    assert [h["keeplist"] for h in files.history] == [os.path.abspath(o) for o in outs]


def test_files_mode_survives_a_deleted_keeplist(tmp_path, epochs):
    s = DropSchedule(warmup=1, freq=1, state_path=tmp_path / "state.json", **PARAMS)
    for epoch in (1, 2):
        labels, logits, _ = epochs[epoch]
        path = tmp_path / f"e{epoch}.h5"
        write_epoch(path, labels=labels, logits=logits, ids=np.arange(labels.size))
        out = s.step_files(epoch, path)
        if epoch == 1:
            first = s.keep_ids
            os.remove(out)  # the state, not the file, is the truth
    assert set(s.keep_ids) <= set(first) and s.keep_ids.size < first.size


def _run(epochs, state_path, tmp_path, crash=None, tag=""):
    """Train-loop skeleton: export every epoch, score when due. ``crash`` is
    ("between", e) to raise after exporting epoch e but before scoring it,
    or ("after", e) to stop after scoring epoch e."""
    s = DropSchedule(warmup=2, freq=1, stop=5, state_path=state_path, **PARAMS)
    for epoch in range(1, 7):
        if not s.due(epoch):
            continue
        labels, logits, feats = epochs[epoch]
        path = tmp_path / f"{tag}epoch_{epoch:03d}.h5"
        if not path.exists():
            write_epoch(path, labels=labels, logits=logits, features=feats,
                        ids=np.arange(labels.size), epoch=epoch)
        if crash == ("between", epoch):
            raise RuntimeError("killed between export and score")
        s.step_files(epoch, path)
        if crash == ("after", epoch):
            raise RuntimeError("killed after scoring")
    return s


@pytest.mark.parametrize("crash", [("between", 3), ("after", 3), ("between", 2)])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, epochs, crash):
    ref = _run(epochs, tmp_path / "ref.json", tmp_path, tag="ref_")
    assert ref.done == [2, 3, 4, 5]
    state = tmp_path / "state.json"
    with pytest.raises(RuntimeError):
        _run(epochs, state, tmp_path, crash=crash)
    # A fresh object from the state file knows what was scored.
    resumed = DropSchedule(warmup=2, freq=1, stop=5, state_path=state, **PARAMS)
    scored = [e for e in (2, 3) if e < crash[1] or crash[0] == "after"]
    assert resumed.done == scored
    assert resumed.due(crash[1]) == (crash[0] == "between")
    final = _run(epochs, state, tmp_path)
    assert final.done == ref.done
    np.testing.assert_array_equal(final.keep_ids, ref.keep_ids)
    assert [h["kept"] for h in final.history] == [h["kept"] for h in ref.history]


def test_resume_with_other_settings_is_refused(tmp_path, epochs):
    state = tmp_path / "state.json"
    s = DropSchedule(warmup=1, freq=1, state_path=state, **PARAMS)
    s.step(1, *epochs[1][:2])
    with pytest.raises(GradscoreError, match=r"saved schedule has freq=1 but this one was "
                                             r"made with freq=2"):
        DropSchedule(warmup=1, freq=2, state_path=state, **PARAMS)
    with pytest.raises(GradscoreError, match=r"score_params="):
        DropSchedule(warmup=1, freq=1, state_path=state, fraction=0.3)
    state.write_text("{\"ids\": []}")
    with pytest.raises(GradscoreError, match=r"not a DropSchedule state file"):
        DropSchedule(warmup=1, freq=1, state_path=state)
    state.write_text("{trunc")
    with pytest.raises(GradscoreError, match=r"cannot read schedule state"):
        DropSchedule(warmup=1, freq=1, state_path=state)


def test_failed_save_leaves_memory_as_the_file(tmp_path, epochs):
    folder = tmp_path / "gone"
    folder.mkdir()
    s = DropSchedule(warmup=1, freq=1, state_path=folder / "state.json", **PARAMS)
    s.step(1, *epochs[1][:2])
    before = s.keep_ids.copy()
    os.remove(folder / "state.json")
    folder.rmdir()
    with pytest.raises(GradscoreError, match=r"folder .*gone does not exist"):
        s.step(2, *epochs[2][:2])
    assert s.done == [1] and s.due(2)
    np.testing.assert_array_equal(s.keep_ids, before)


def test_previous_keeplist_must_match_export(tmp_path, epochs):
    s = DropSchedule(warmup=1, freq=1, **PARAMS)
    labels, logits, _ = epochs[1]
    s.step(1, labels, logits)
    path = tmp_path / "small.h5"
    # An export of only some examples lacks kept ids: refused, not ignored.
    write_epoch(path, labels=labels[:100], logits=logits[:100], ids=np.arange(100))
    with pytest.raises(GradscoreError, match=r"id\(s\) that the export lacks"):
        s.step_files(2, path)
    assert s.done == [1]


def test_score_files_previous_agrees(tmp_path, epochs):
    # step_files is score_files with previous=the running keep-list.
    labels, logits, _ = epochs[3]
    path = tmp_path / "e.h5"
    write_epoch(path, labels=labels, logits=logits, ids=np.arange(labels.size))
    s = DropSchedule(warmup=2, freq=1, **PARAMS)
    s.step(2, *epochs[2][:2])
    write_keeplist(tmp_path / "prev.txt", s.keep_ids)
    s.step_files(3, path, output=tmp_path / "a.txt")
    result, _, _ = score_files(path, output=tmp_path / "b.txt", previous=tmp_path / "prev.txt",
                               **PARAMS)
    np.testing.assert_array_equal(read_keeplist(tmp_path / "a.txt"), np.flatnonzero(result.keep))


def test_importing_gradscore_needs_no_framework():
    code = ("import sys, gradscore, gradscore.schedule, gradscore.integrations; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_scoring_the_same_data_again_drops_nothing_new(epochs):
    # The authors' rule: every example is clustered again; identical data gives
    # identical clusters, so a second round keeps exactly the first's set.
    s = DropSchedule(warmup=1, freq=1, **PARAMS)
    labels, logits, feats = epochs[2]
    first = s.step(1, labels, logits, feats)
    second = s.step(2, labels, logits, feats)
    np.testing.assert_array_equal(first, second)
    assert s.history[1]["dropped"] == 0
    assert s.history[1]["flagged"] == (~first).sum() > 0
    assert s.history[1]["total_cap_hit_classes"] == []
