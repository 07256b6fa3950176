"""The class-partitioned spill path gives the in-memory path's keep-list, byte for byte."""

from concurrent.futures import ProcessPoolExecutor
import os

import h5py
import numpy as np
import pytest

import gradscore
from gradscore.errors import GradscoreError
from gradscore.io.partition import join_indexes, load_class, read_index, spill_shard
from gradscore.scoring.memory import check_params
from gradscore.scoring.tasks import ClassData, score_class

from conftest import make_data, write_shards


def run_both(tmp_path, paths, **params):
    out_mem = tmp_path / "mem.keep.txt"
    out_spill = tmp_path / "spill.keep.txt"
    a, ea, _ = gradscore.score_files(paths, output=out_mem, scores_path=tmp_path / "mem.csv",
                                     spill="never", **params)
    b, eb, _ = gradscore.score_files(paths, output=out_spill,
                                     scores_path=tmp_path / "spill.csv", spill="always",
                                     **params)
    return (a, ea, out_mem), (b, eb, out_spill)


CASES = {
    "epic float32": dict(),
    "epic float16, 2 shards": dict(write=dict(dtype=np.float16, n_shards=2)),
    "epic without the kernel matrix": dict(params=dict(dense_max=50)),
    "knn-density last-layer": dict(params=dict(method="knn-density", gradient="last-layer",
                                               drop_fraction=0.1)),
    "spectral, string ids": dict(params=dict(method="spectral"), write=dict(str_ids=True)),
    "logits from weight and bias": dict(write=dict(linear=True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spill_gives_the_in_memory_keep_list_byte_for_byte(tmp_path, case):
    spec = CASES[case]
    paths, _ = write_shards(str(tmp_path), **spec.get("write", {}))
    (a, ea, out_a), (b, eb, out_b) = run_both(tmp_path, paths, **spec.get("params", {}))
    assert out_a.read_bytes() == out_b.read_bytes()
    assert (tmp_path / "mem.csv").read_bytes() == (tmp_path / "spill.csv").read_bytes()
    assert a.keep.sum() < a.keep.size  # something was dropped: the comparison has teeth
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.cluster_size, b.cluster_size)
    assert [r.__dict__ for r in a.classes] == [r.__dict__ for r in b.classes]
    assert ea.ids.tolist() == eb.ids.tolist() and ea.epoch == eb.epoch == 4
    assert eb.logits is None  # the spilled run never held the logits


@pytest.mark.parametrize("cumulative", ["intersect", "survivors"])
def test_spill_with_a_previous_keep_list_matches_in_memory(tmp_path, cumulative):
    paths, ids = write_shards(str(tmp_path))
    prev = tmp_path / "prev.txt"
    gradscore.write_keeplist(prev, np.sort(ids)[::3])
    (a, _, out_a), (b, _, out_b) = run_both(tmp_path, paths, previous=prev,
                                            cumulative=cumulative,
                                            max_total_drop_fraction=0.9)
    assert out_a.read_bytes() == out_b.read_bytes()
    assert (a.decision == "dropped-before").sum() == ids.size - ids[::3].size
    assert (a.decision == "dropped").any()
    np.testing.assert_array_equal(a.decision, b.decision)
    np.testing.assert_array_equal(a.flagged, b.flagged)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_processes_and_threads_write_the_same_keep_list(tmp_path):
    paths, _ = write_shards(str(tmp_path), n=600)
    outs = []
    for name, kw in (("threads1", dict(n_jobs=1)), ("threads3", dict(n_jobs=3))):
        outs.append(tmp_path / f"{name}.txt")
        gradscore.score_files(paths, output=outs[-1], spill="always", **kw)
    with ProcessPoolExecutor(2) as pool:
        outs.append(tmp_path / "procs.txt")
        gradscore.score_files(paths, output=outs[-1], executor=pool)
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()


def test_spill_groups_rows_by_class_and_loads_them_back(tmp_path):
    paths, ids = write_shards(str(tmp_path), n=300, c=4, n_shards=2)
    ref = gradscore.read_epoch(paths)
    spill = tmp_path / "spill"
    spill.mkdir()
    part = join_indexes([read_index(p) for p in paths], str(spill))
    for spec in part.specs:
        spill_shard(spec)
    np.testing.assert_array_equal(part.epoch.ids, ref.ids)
    np.testing.assert_array_equal(part.epoch.labels, ref.labels)
    for c in range(4):
        logits, feats = load_class(part.class_slices(c))
        rows = part.class_rows[c]
        assert (ref.labels[rows] == c).all() and rows.size == (ref.labels == c).sum()
        np.testing.assert_array_equal(logits, ref.logits[rows])
        np.testing.assert_array_equal(feats, ref.features[rows])


def test_task_result_does_not_depend_on_row_order():
    labels, logits, _ = make_data(n=400, c=2, seed=3)
    x = logits[labels == 1].astype(np.float32)
    params = check_params(num_classes=2, dense_max=100)
    perm = np.random.default_rng(0).permutation(len(x))
    a = score_class(ClassData(1, x, n_medoids=40), params)
    b = score_class(ClassData(1, x[perm], n_medoids=40), params)
    np.testing.assert_array_equal(a.scores[perm], b.scores)
    np.testing.assert_array_equal(a.drop[perm], b.drop)
    assert a.drop.any()


def test_block_errors_name_the_file_and_rows_when_spilling(tmp_path):
    paths, _ = write_shards(str(tmp_path), n=90)
    with h5py.File(paths[1], "r+") as f:
        f["logits"][4, 1] = np.nan
    with pytest.raises(GradscoreError, match=r"shard-1.h5: dataset 'logits' contains NaN in "
                                             r"1 row \(first: 4\)"):
        gradscore.score_files(paths, output=tmp_path / "k.txt", spill="always")
    assert not any(n.startswith(".gradscore-spill-") for n in os.listdir(tmp_path))
    assert not (tmp_path / "k.txt").exists()


def test_spill_options_are_checked(tmp_path):
    paths, _ = write_shards(str(tmp_path), n=60)
    with pytest.raises(GradscoreError, match="'spill' must be one of"):
        gradscore.score_files(paths, output=tmp_path / "k.txt", spill="sometimes")
    with pytest.raises(GradscoreError, match="trajectory.*cannot run from a spill"):
        gradscore.score_files(paths, output=tmp_path / "k.txt", spill="always",
                              method="trajectory", history=[paths])
    with pytest.raises(GradscoreError, match="spill_dir .*nowhere is not a folder"):
        gradscore.score_files(paths, output=tmp_path / "k.txt", spill="always",
                              spill_dir=tmp_path / "nowhere")


def test_a_file_spilled_in_pieces_side_by_side_gives_the_same_spill(tmp_path):
    # Pieces of one file write disjoint rows; run on threads, the spill
    # files come out byte-identical to one pass over the whole file.
    from concurrent.futures import ThreadPoolExecutor

    from gradscore.io.partition import create_spill_files, spill_piece, spill_pieces

    paths, _ = write_shards(tmp_path, n=1000, n_shards=1, dtype=np.float16)
    ix = read_index(paths[0])
    (tmp_path / "whole").mkdir()
    (tmp_path / "pieces").mkdir()
    whole = join_indexes([ix], str(tmp_path / "whole"), block_rows=30)
    spill_shard(whole.specs[0])
    part = join_indexes([ix], str(tmp_path / "pieces"), block_rows=30)
    spec = part.specs[0]
    create_spill_files(spec, ix.n)
    pieces = spill_pieces(spec, ix.n, 95)
    assert len(pieces) == 12 and pieces[0][1:] == (0, 90) and pieces[-1][2] == 1000
    with ThreadPoolExecutor(3) as pool:
        assert sum(pool.map(spill_piece, pieces)) == 1000
    for a, b in ((whole.specs[0].logits_out, spec.logits_out),
                 (whole.specs[0].features_out, spec.features_out)):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_spill_blocks_are_sized_by_bytes(tmp_path):
    from gradscore.io.partition import SPILL_BLOCK_BYTES

    paths, _ = write_shards(tmp_path, n=50, n_shards=1, c=5, d=6)
    ix = read_index(paths[0])
    assert join_indexes([ix], str(tmp_path), block_rows=None).specs[0].block_rows == 65536
    wide = [ix]
    ix.num_classes = 4000  # as if each row held 4,000 float32 logits
    row = 4 * 4000 + 4 * 6
    assert join_indexes(wide, str(tmp_path)).specs[0].block_rows == SPILL_BLOCK_BYTES // row
