"""The trajectory rule: groups that training pulled far towards their label."""

import os

import numpy as np
import pytest

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


def test_lone_rows_need_the_single_threshold():
    rng, labels, features, gain = _blobs(seed=1)
    # Scattered rows that gained 4.5 spreads: enough for a member of a pulled
    # group, not alone, and they form no group. Rows that gained 30: alone,
    # a dirty-label poison's trajectory.
    for c in range(3):
        gain[np.flatnonzero(labels == c)[[5, 40]]] = 4.5
    far = np.flatnonzero(labels == 2)[[10, 30]]
    gain[far] += 30.0
    res = trajectory_drop(gain, np.ones(labels.size, bool), labels, _trees(labels, features))
    np.testing.assert_array_equal(np.flatnonzero(res.drop), far)


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


# -- wired in: score(), score_files, the CLI and DropSchedule ----------------------------

def _run(seed=0):
    """Three classes; ten rows of class 1 form a tight group that the
    reference (the model before training) gave to class 2 and that training
    pulled to class 1: the clean-label poisons of a fine-tuned victim."""
    rng, labels, features, _ = _blobs(seed=seed)
    ref = 4 * np.eye(3)[labels] + rng.normal(size=(labels.size, 3))
    now = ref + rng.normal(scale=0.5, size=ref.shape)
    group = np.flatnonzero(labels == 1)[:10]
    features[group] = features[group].mean(0) + 0.05 * rng.normal(size=(10, features.shape[1]))
    ref[group] = 4 * np.eye(3)[2] + 0.1 * rng.normal(size=(10, 3))
    now[group] = 4 * np.eye(3)[1] + 0.1 * rng.normal(size=(10, 3))
    return labels, ref, now, features, group


def test_score_drops_the_pulled_group_where_groups_does_not():
    import gradscore
    from gradscore.history import history_from_arrays
    labels, ref, now, features, group = _run()
    h = history_from_arrays(labels, [(labels, ref)])
    res = gradscore.score(labels, now, features, method="trajectory", history=h)
    assert set(group) <= set(np.flatnonzero(~res.keep))
    base = gradscore.score(labels, now, features, method="groups")
    assert not set(group) & set(np.flatnonzero(~base.keep))
    # Only the group is new; its members score below every row kept.
    np.testing.assert_array_equal(~res.keep & base.keep, np.isin(np.arange(labels.size), group))
    assert res.scores[group].max() < np.nanmin(res.scores[res.keep])


def test_a_random_reference_warns_and_leaves_groups_as_it_is():
    import gradscore
    from gradscore.history import history_from_arrays
    labels, _, now, features, _ = _run()
    noise = np.random.default_rng(5).normal(scale=0.01, size=now.shape)
    h = history_from_arrays(labels, [(labels, noise)])
    with pytest.warns(gradscore.GradscoreWarning, match="reference export gives only"):
        res = gradscore.score(labels, now, features, method="trajectory", history=h)
    base = gradscore.score(labels, now, features, method="groups")
    np.testing.assert_array_equal(res.keep, base.keep)


def test_cli_history_option_and_its_errors(tmp_path):
    import gradscore
    from click.testing import CliRunner
    from gradscore_cli.main import main
    labels, ref, now, features, group = _run()
    ids = np.arange(labels.size) + 1000
    e0, e2, e4 = (str(tmp_path / f"e{e}.h5") for e in (0, 2, 4))
    gradscore.write_epoch(e0, labels=labels, logits=ref, features=features, ids=ids, epoch=0)
    # Epoch 2 was exported without the rows dropped before it (the first five).
    gradscore.write_epoch(e2, labels=labels[5:], logits=now[5:], features=features[5:],
                          ids=ids[5:], epoch=2)
    gradscore.write_epoch(e4, labels=labels, logits=now, features=features, ids=ids, epoch=4)
    runner = CliRunner()
    res = runner.invoke(main, ["score", e4, "--method", "trajectory", "--history", e0, e2,
                               "-q"])
    assert res.exit_code == 0, res.output
    kept = set(gradscore.read_keeplist(str(tmp_path / "e4.keep.txt")).tolist())
    assert not kept & set(ids[group].tolist())
    res = runner.invoke(main, ["score", e4, "--method", "trajectory"])
    assert res.exit_code == 1 and "Error: method='trajectory' needs the run's history" \
        in res.output
    res = runner.invoke(main, ["score", e4, "--method", "groups", "--history", e0])
    assert res.exit_code == 1 and "Error: a history is used only by method='trajectory'" \
        in res.output
    other = str(tmp_path / "other.h5")
    gradscore.write_epoch(other, labels=labels, logits=ref, features=features, ids=ids + 7,
                          epoch=0)
    res = runner.invoke(main, ["score", e4, "--method", "trajectory", "--history", other])
    assert res.exit_code == 1 and "other.h5 lacks 7 id(s) of the export scored" in res.output
    assert "Traceback" not in res.output


def test_drop_schedule_with_a_reference_in_memory_from_a_file_and_on_resume(tmp_path):
    import gradscore
    from gradscore.schedule import DropSchedule
    labels, ref, now, features, group = _run()
    mem = DropSchedule(warmup=1, freq=1, method="trajectory", reference=(labels, ref))
    assert set(group) <= set(np.flatnonzero(~mem.step(1, labels, now, features)))
    e0, e1 = str(tmp_path / "e0.h5"), str(tmp_path / "e1.h5")
    gradscore.write_epoch(e0, labels=labels, logits=ref, features=features, epoch=0)
    gradscore.write_epoch(e1, labels=labels, logits=now, features=features, epoch=1)
    state = tmp_path / "state.json"
    files = DropSchedule(warmup=1, freq=1, method="trajectory", state_path=state)
    assert files.needs_reference
    with pytest.raises(gradscore.GradscoreError, match="needs the run's reference"):
        files.step_files(1, e1)
    files.set_reference(e0)
    files.step_files(1, e1)
    np.testing.assert_array_equal(np.sort(files.keep_ids), np.sort(mem.keep_ids))
    # A resumed schedule reads the reference named in its state file.
    again = DropSchedule(warmup=1, freq=1, method="trajectory", state_path=state)
    assert not again.needs_reference and again.reference == [os.path.abspath(e0)]
