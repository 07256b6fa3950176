import os

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradscore
from gradscore import GradscoreError
from conftest import make_data


def write_raw(path, **datasets):
    attrs = datasets.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
        f.attrs.update(attrs)
    return str(path)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 60), c=st.integers(1, 6), d=st.integers(1, 5),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       str_ids=st.booleans(), seed=st.integers(0, 1000))
def test_write_read_round_trip_loses_nothing(tmp_path_factory, n, c, d, dtype, str_ids, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)).astype(dtype)
    feats = rng.normal(size=(n, d)).astype(dtype)
    ids = rng.permutation(10 * n)[:n]
    if str_ids:
        ids = np.array([f"img_{i:05d}.png" for i in ids], dtype=object)
    path = tmp_path_factory.mktemp("rt") / "e.h5"
    gradscore.write_epoch(path, labels=labels, logits=logits, features=feats, ids=ids,
                          epoch=3, dtype=dtype)
    ep = gradscore.read_epoch(path)
    order = np.argsort(ids, kind="stable")  # the reader returns rows sorted by id
    assert ep.ids.tolist() == ids[order].tolist()
    assert ep.labels.tolist() == labels[order].tolist()
    np.testing.assert_array_equal(ep.logits, logits[order].astype(np.float32))
    np.testing.assert_array_equal(ep.features, feats[order].astype(np.float32))
    assert ep.epoch == 3 and ep.num_classes == c


def test_streaming_writer_appends_batches_and_reads_back(tmp_path):
    labels, logits, feats = make_data(n=1000)
    path = tmp_path / "s.h5"
    with gradscore.EpochWriter(path, num_classes=4, n_features=8, id_kind="int") as w:
        for s in range(0, 1000, 128):
            w.append(labels[s:s + 128], logits[s:s + 128], feats[s:s + 128],
                     ids=np.arange(s, min(s + 128, 1000)))
    ep = gradscore.read_epoch(path)
    assert ep.labels.tolist() == labels.tolist()
    np.testing.assert_allclose(ep.logits, logits.astype(np.float32))


def test_streaming_writer_rejects_inconsistent_batches_and_leaves_no_file(tmp_path):
    labels, logits, feats = make_data(n=100)
    path = tmp_path / "s.h5"
    with pytest.raises(GradscoreError, match=r"batch at row 50: logits must have shape \(50, 4\)"):
        with gradscore.EpochWriter(path, num_classes=4) as w:
            w.append(labels[:50], logits[:50])
            w.append(labels[50:], logits[50:, :3])
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no temp files left either
    with pytest.raises(GradscoreError, match="ids repeat ids of earlier batches"):
        with gradscore.EpochWriter(path, num_classes=4, id_kind="int") as w:
            w.append(labels[:50], logits[:50], ids=np.arange(50))
            w.append(labels[50:], logits[50:], ids=np.arange(40, 90))
    with pytest.raises(GradscoreError, match="made with n_rows=100 but got 50 rows"):
        with gradscore.EpochWriter(path, num_classes=4, n_rows=100) as w:
            w.append(labels[:50], logits[:50])
    assert not path.exists()


def test_crash_mid_epoch_keeps_the_previous_file_intact(tmp_path):
    labels, logits, _ = make_data(n=100)
    path = tmp_path / "e.h5"
    gradscore.write_epoch(path, labels=labels, logits=logits)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with gradscore.EpochWriter(path, num_classes=4) as w:
            w.append(labels[:10], logits[:10])
            raise RuntimeError("training crashed")
    assert path.read_bytes() == before


def test_logits_computed_from_weight_and_bias(tmp_path):
    rng = np.random.default_rng(0)
    feats, w, b = rng.normal(size=(30, 5)), rng.normal(size=(3, 5)), rng.normal(size=3)
    path = write_raw(tmp_path / "wb.h5", labels=rng.integers(0, 3, 30), features=feats,
                     weight=w, bias=b)
    ep = gradscore.read_epoch(path)
    np.testing.assert_allclose(ep.logits, feats @ w.T + b, rtol=1e-5)


def test_shards_are_joined_by_id_whatever_their_order(tmp_path):
    labels, logits, feats = make_data(n=90)
    ids = np.arange(90)
    parts = [ids[i::3] for i in range(3)]  # interleaved, as DistributedSampler does
    paths = []
    for r, p in enumerate(parts):
        paths.append(tmp_path / f"shard-{r}.h5")
        gradscore.write_epoch(paths[-1], labels=labels[p], logits=logits[p],
                              features=feats[p], ids=p)
    a = gradscore.read_epoch(paths)
    b = gradscore.read_epoch(paths[::-1])
    assert a.ids.tolist() == list(range(90)) == b.ids.tolist()
    assert a.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(a.logits, b.logits)


def test_shards_without_ids_or_with_repeated_ids_are_refused(tmp_path):
    labels, logits, _ = make_data(n=20)
    p1 = write_raw(tmp_path / "a.h5", labels=labels, logits=logits)
    p2 = write_raw(tmp_path / "b.h5", labels=labels, logits=logits)
    with pytest.raises(GradscoreError, match="shards need ids"):
        gradscore.read_epoch([p1, p2])
    p3 = write_raw(tmp_path / "c.h5", labels=labels, logits=logits, ids=np.arange(20))
    p4 = write_raw(tmp_path / "d.h5", labels=labels, logits=logits, ids=np.arange(15, 35))
    with pytest.raises(GradscoreError, match=r"unique across all inputs; 5 duplicate\(s\), "
                       r"first: id 15 at .*c.h5 row 15 and .*d.h5 row 0"):
        gradscore.read_epoch([p3, p4])


BAD_FILES = {
    "missing labels": (dict(logits=np.zeros((3, 2))), "has no dataset 'labels'"),
    "missing logits": (dict(labels=np.zeros(3, int)), "has no dataset 'logits'"),
    "labels rank": (dict(labels=np.zeros((3, 1), int), logits=np.zeros((3, 2))),
                    r"'labels' must be 1-D"),
    "logits rank": (dict(labels=np.zeros(3, int), logits=np.zeros(3)), "'logits' must be 2-D"),
    "float labels": (dict(labels=np.zeros(3), logits=np.zeros((3, 2))),
                     "'labels' must hold integers; got dtype float64"),
    "row mismatch": (dict(labels=np.zeros(3, int), logits=np.zeros((4, 2))),
                     "'logits' has 4 rows but 'labels' has 3"),
    "labels range": (dict(labels=np.array([0, 2, 5, 1]), logits=np.zeros((4, 3))),
                     r"'labels' must be in \[0, 3\); 1 row \(first: 2\) are not \(first value: 5\)"),
    "negative labels": (dict(labels=np.array([0, -1]), logits=np.zeros((2, 3))),
                        r"must be in \[0, 3\)"),
    "nan logits": (dict(labels=np.zeros(4, int),
                        logits=np.array([[0, 0], [np.nan, 0], [0, 0], [0, np.nan]])),
                   r"'logits' contains NaN in 2 rows \(first: 1, 3\)"),
    "inf features": (dict(labels=np.zeros(2, int), logits=np.zeros((2, 2)),
                          features=np.array([[0.0], [np.inf]])),
                     r"'features' contains Inf in 1 row \(first: 1\)"),
    "num_classes attr": (dict(labels=np.zeros(2, int), logits=np.zeros((2, 2)),
                              attrs={"num_classes": 3}),
                         "disagrees on the number of classes: dataset 'logits' columns = 2, "
                         "attribute 'num_classes' = 3"),
    "weight shape": (dict(labels=np.zeros(2, int), logits=np.zeros((2, 2)),
                          features=np.zeros((2, 4)), weight=np.zeros((3, 4)), bias=np.zeros(3)),
                     "disagrees on the number of classes"),
    "duplicate ids": (dict(labels=np.zeros(4, int), logits=np.zeros((4, 2)),
                           ids=np.array([7, 8, 7, 9])),
                      r"'ids' must be unique .*first: id 7"),
    "empty": (dict(labels=np.zeros(0, int), logits=np.zeros((0, 2))), "has 0 rows; the export is empty"),
    "ids dtype": (dict(labels=np.zeros(2, int), logits=np.zeros((2, 2)), ids=np.zeros(2)),
                  "'ids' must hold int64 or UTF-8 strings"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_get_clear_errors_naming_file_and_dataset(tmp_path, case):
    data, match = BAD_FILES[case]
    path = write_raw(tmp_path / "bad.h5", **data)
    with pytest.raises(GradscoreError, match=match) as info:
        gradscore.read_epoch(path)
    assert "bad.h5" in str(info.value)


def test_not_hdf5_and_truncated_files_are_refused(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("hello")
    with pytest.raises(GradscoreError, match="not a readable HDF5 file"):
        gradscore.read_epoch(p)
    labels, logits, _ = make_data(n=5000)
    full = tmp_path / "full.h5"
    gradscore.write_epoch(full, labels=labels, logits=logits)
    data = full.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GradscoreError, match="cut.h5"):
        gradscore.read_epoch(cut)
    with pytest.raises(GradscoreError, match="no such file"):
        gradscore.read_epoch(tmp_path / "absent.h5")


def test_links_virtual_datasets_and_external_storage_are_refused(tmp_path):
    labels, logits, _ = make_data(n=10)
    src = write_raw(tmp_path / "src.h5", labels=labels, logits=logits)
    p = tmp_path / "ext.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=labels)
        f["logits"] = h5py.ExternalLink(src, "logits")
    with pytest.raises(GradscoreError, match="'logits' is an external link"):
        gradscore.read_epoch(p)
    p = tmp_path / "soft.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_dataset("other", data=logits)
        f["logits"] = h5py.SoftLink("/other")
    with pytest.raises(GradscoreError, match="'logits' is a soft link"):
        gradscore.read_epoch(p)
    p = tmp_path / "vds.h5"
    layout = h5py.VirtualLayout(shape=(10, 4), dtype="f8")
    layout[:] = h5py.VirtualSource(str(tmp_path / "missing.h5"), "logits", shape=(10, 4))
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_virtual_dataset("logits", layout, fillvalue=0)
    with pytest.raises(GradscoreError, match="'logits' is a virtual dataset"):
        gradscore.read_epoch(p)
    raw = tmp_path / "raw.bin"
    logits.astype("<f8").tofile(raw)
    p = tmp_path / "external.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_dataset("logits", shape=(10, 4), dtype="<f8",
                         external=[(str(raw), 0, logits.nbytes)])
    with pytest.raises(GradscoreError, match="'logits' uses external raw storage"):
        gradscore.read_epoch(p)


def test_features_validated_but_not_kept_when_not_needed(tmp_path):
    labels, logits, feats = make_data(n=50)
    path = tmp_path / "e.h5"
    gradscore.write_epoch(path, labels=labels, logits=logits, features=feats)
    ep = gradscore.read_epoch(path, need_features=False)
    assert ep.features is None and ep.n_features == 8


def test_keeplist_formats_round_trip(tmp_path):
    for ids in (np.array([5, 1, 3]), np.array(["b.png", "a.png"], dtype=object)):
        for ext in (".txt", ".npy", ".json"):
            p = tmp_path / f"k{ext}"
            gradscore.write_keeplist(p, ids, metadata={"x": 1})
            back = gradscore.read_keeplist(p)
            assert back.tolist() == sorted(ids.tolist())
    assert (tmp_path / "k.txt").read_text() == "a.png\nb.png\n"
    with pytest.raises(GradscoreError, match="must end in .txt, .npy, .json"):
        gradscore.write_keeplist(tmp_path / "k.csv", [1])


def test_keep_mask_requires_every_previous_id_in_the_export():
    with pytest.raises(GradscoreError, match=r"has 2 id\(s\) that the export lacks \(first: 10, 11\)"):
        gradscore.keep_mask(np.arange(10), np.array([1, 10, 11]))
    assert gradscore.keep_mask(np.array(["1", "2"], dtype=object), np.array([2])).tolist() == [False, True]


def test_writer_takes_its_layout_from_the_first_batch(tmp_path):
    labels, logits, feats = make_data(n=60)
    path = tmp_path / "lazy.h5"
    with gradscore.EpochWriter(path, epoch=2) as w:
        assert not path.exists()
        w.append(labels[:30], logits[:30], feats[:30], ids=np.arange(30))
        w.append(labels[30:], logits[30:], feats[30:], ids=np.arange(30, 60))
    ep = gradscore.read_epoch(path)
    assert ep.num_classes == 4 and ep.n_features == 8 and ep.ids.tolist() == list(range(60))
    with pytest.raises(GradscoreError, match="features missing but the writer was made with "
                                             "n_features=8"):
        with gradscore.EpochWriter(tmp_path / "x.h5") as w:
            w.append(labels[:30], logits[:30], feats[:30])
            w.append(labels[30:], logits[30:])
    with pytest.raises(GradscoreError, match="no rows were appended"):
        with gradscore.EpochWriter(tmp_path / "empty.h5"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["lazy.h5"]


def test_logits_computed_from_features_do_not_depend_on_read_blocks(tmp_path):
    # Issue 24: an export with features, weight and bias but no logits has its
    # logits computed at read time, in the blocks the run reads (65,536 rows in
    # memory, the spill's own block size when spilled). A BLAS product's last
    # bits depend on its shape and thread count, so before the fix a row's
    # float64 logits depended on the block it was read in (hundreds differed).
    from conftest import blas_threads
    from gradscore.io.reader import _Source, _read_block, _read_linear

    rng = np.random.default_rng(0)
    n, d, c = 3000, 512, 10
    path = str(tmp_path / "linear.h5")
    gradscore.write_epoch(path, labels=rng.integers(0, c, n),
                          features=rng.normal(size=(n, d)).astype(np.float32),
                          weight=rng.normal(size=(c, d)), bias=rng.normal(size=c))
    with h5py.File(path, "a") as f:
        del f["logits"]                  # as a third-party writer may leave it
    src = _Source(path)
    try:
        linear = _read_linear(src)
        with blas_threads(2):
            whole = _read_block(src, 0, n, linear)[0]
        assert whole.dtype == np.float64
        for size in (97, 1000, 1024):
            with blas_threads(1):
                parts = [_read_block(src, a, min(n, a + size), linear)[0]
                         for a in range(0, n, size)]
            np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=str(size))
    finally:
        src.close()
