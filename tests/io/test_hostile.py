"""Hostile exports: partly written files, size bombs, unused datasets, and
the CLI's answer to each (one ``Error:`` line, no output, non-zero exit)."""

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import gradscore
from gradscore import GradscoreError
from gradscore.io.reader import available_memory, parse_memory
from gradscore_cli.main import main
from conftest import make_data


def raw_export(path, **datasets):
    """Write datasets with plain h5py (gradscore's writer refuses NaN/Inf)."""
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
    return str(path)


def partial_export(path, n=4000, written=2000, chunk=500, c=4):
    """What a writer that died halfway leaves: datasets of full size, the
    chunks of the second half never written."""
    labels, logits, _ = make_data(n=n, c=c)
    with h5py.File(path, "w") as f:
        lab = f.create_dataset("labels", shape=(n,), dtype="i8", chunks=(chunk,))
        lg = f.create_dataset("logits", shape=(n, c), dtype="f4", chunks=(chunk, c))
        lab[:written] = labels[:written]
        lg[:written] = logits[:written]
    return str(path)


def size_bomb(path, rows=10**10, c=2):
    """A few KB that declare 10^10 rows (chunked, nothing written)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", shape=(rows,), dtype="i8", chunks=(1 << 16,))
        f.create_dataset("logits", shape=(rows, c), dtype="f8", chunks=(1 << 16, c))
    return str(path)


def test_unwritten_chunks_are_refused_naming_the_first_missing_rows(tmp_path):
    path = partial_export(tmp_path / "partial.h5")
    with pytest.raises(GradscoreError, match=r"partial.h5: dataset 'labels' has 4 of its 8 "
                       r"chunks written; rows 2000\.\.3999 \(and 2000 rows in all\) were "
                       r"never written"):
        gradscore.read_epoch(path)


def test_hole_in_the_middle_and_column_chunks(tmp_path):
    n, c = 1000, 6
    labels, logits, _ = make_data(n=n, c=c)
    path = tmp_path / "holes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=labels, chunks=(100,))
        lg = f.create_dataset("logits", shape=(n, c), dtype="f4", chunks=(100, 3))
        lg[:300] = logits[:300]
        lg[300:400, :3] = logits[300:400, :3]  # half of the row block's chunks
        lg[600:] = logits[600:]
    with pytest.raises(GradscoreError, match=r"'logits' has 15 of its 20 chunks written; "
                       r"rows 300\.\.599 \(and 300 rows in all\)"):
        gradscore.read_epoch(path)


def test_dataset_created_but_never_written_is_refused(tmp_path):
    labels, _, _ = make_data(n=50)
    for layout in ("contiguous", "chunked"):
        path = tmp_path / f"{layout}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("labels", data=labels)
            f.create_dataset("logits", shape=(50, 4), dtype="f4",
                             chunks=(10, 4) if layout == "chunked" else None)
        match = ("'logits' was created but never written" if layout == "contiguous"
                 else "'logits' has 0 of its 5 chunks written")
        with pytest.raises(GradscoreError, match=match):
            gradscore.read_epoch(path)


def test_unwritten_features_are_refused_even_when_not_needed(tmp_path):
    labels, logits, _ = make_data(n=100)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_dataset("logits", data=logits)
        f.create_dataset("features", shape=(100, 8), dtype="f4", chunks=(10, 8))
    with pytest.raises(GradscoreError, match="'features' has 0 of its 10 chunks"):
        gradscore.read_epoch(path, need_features=False)


def test_size_bomb_is_refused_with_the_numbers_before_allocating(tmp_path):
    path = size_bomb(tmp_path / "bomb.h5")
    assert os.path.getsize(path) < 20_000
    with pytest.raises(GradscoreError, match=r"bomb.h5: dataset '\w+' declares 10000000000 "
                       r"rows; reading the export needs .*GiB .* but the memory available "
                       r"on this machine is"):
        gradscore.read_epoch(path)
    with pytest.raises(GradscoreError, match=r"but the --max-memory / max_memory limit is "
                       r"1\.0 MiB \(1048576 bytes\)"):
        gradscore.read_epoch(path, max_memory="1MiB")


def test_max_memory_refuses_what_does_not_fit_and_reads_what_does(tmp_path):
    labels, logits, feats = make_data(n=20_000, d=64)
    path = tmp_path / "e.h5"
    gradscore.write_epoch(path, labels=labels, logits=logits, features=feats)
    with pytest.raises(GradscoreError, match=r"dataset 'features' declares 20000 rows"):
        gradscore.read_epoch(path, max_memory="8MB")
    # Without features kept the same file fits.
    ep = gradscore.read_epoch(path, need_features=False, max_memory="8MB")
    assert ep.labels.size == 20_000


def test_parse_memory():
    assert parse_memory("4G") == 4 * 10**9
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(" 2.5 gb ") == 2_500_000_000
    for bad in ("lots", "4X", "-1G", "0", True):
        with pytest.raises(GradscoreError, match="'max_memory' must"):
            parse_memory(bad)
    avail = available_memory()
    assert avail is None or avail > 0


def test_unused_features_are_not_read_unless_deep(tmp_path):
    labels, logits, feats = make_data(n=300)
    feats[7, 2] = np.nan
    path = tmp_path / "nanfeat.h5"
    raw_export(path, labels=labels, logits=logits, features=feats)
    ep = gradscore.read_epoch(path, need_features=False)
    assert ep.features is None and ep.n_features == 8
    np.testing.assert_array_equal(ep.logits, logits.astype(np.float32))
    with pytest.raises(GradscoreError, match=r"'features' contains NaN in 1 row \(first: 7\)"):
        gradscore.read_epoch(path, need_features=False, deep=True)
    with pytest.raises(GradscoreError, match=r"'features' contains NaN"):
        gradscore.read_epoch(path)  # a run that needs them reads them
    # Features with the wrong shape or dtype are refused without reading.
    p2 = tmp_path / "badfeat.h5"
    with h5py.File(p2, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_dataset("logits", data=logits)
        f.create_dataset("features", data=np.zeros((300, 2), dtype="i4"))
    with pytest.raises(GradscoreError, match="'features' must be float16/32/64; got dtype int32"):
        gradscore.read_epoch(p2, need_features=False)


def test_features_still_read_when_logits_come_from_them(tmp_path):
    rng = np.random.default_rng(0)
    feats, w, b = rng.normal(size=(30, 5)), rng.normal(size=(3, 5)), rng.normal(size=3)
    path = tmp_path / "wb.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=rng.integers(0, 3, 30))
        f.create_dataset("features", data=feats)
        f.create_dataset("weight", data=w)
        f.create_dataset("bias", data=b)
    ep = gradscore.read_epoch(path, need_features=False)
    np.testing.assert_allclose(ep.logits, feats @ w.T + b, rtol=1e-5)


BAD_ATTRS = {
    "string num_classes": ({"num_classes": "four"}, "attribute 'num_classes' must be one integer"),
    "array num_classes": ({"num_classes": np.array([4, 4])},
                          "attribute 'num_classes' must be one integer"),
    "float epoch": ({"epoch": 2.5}, "attribute 'epoch' must be one integer"),
    "string epoch": ({"epoch": "five"}, "attribute 'epoch' must be one integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_ATTRS))
def test_bad_attributes_are_refused(tmp_path, case):
    attrs, match = BAD_ATTRS[case]
    labels, logits, _ = make_data(n=20)
    path = tmp_path / "attr.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_dataset("logits", data=logits)
        f.attrs.update(attrs)
    with pytest.raises(GradscoreError, match=match):
        gradscore.read_epoch(path)


# ------------------------------------------------------------------ the CLI

def _cli_refuses(tmp_path, args, *names):
    out = tmp_path / "out.keep.txt"
    res = CliRunner().invoke(main, ["score", *args, "-o", str(out), "-q"])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for name in names:
        assert name in lines[0]
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    return lines[0]


def test_cli_hostile_files_get_one_error_line_and_no_output(tmp_path):
    partial = partial_export(tmp_path / "partial.h5")
    _cli_refuses(tmp_path, [partial], "partial.h5", "'labels'", "rows 2000..3999")
    bomb = size_bomb(tmp_path / "bomb.h5")
    _cli_refuses(tmp_path, [bomb], "bomb.h5", "10000000000 rows")
    _cli_refuses(tmp_path, [bomb, "--max-memory", "1G"], "bomb.h5", "1000000000 bytes")
    labels, _, _ = make_data(n=50)
    empty = tmp_path / "empty_logits.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("labels", data=labels)
        f.create_dataset("logits", shape=(50, 4), dtype="f4")
    _cli_refuses(tmp_path, [str(empty)], "empty_logits.h5", "'logits'")
    _cli_refuses(tmp_path, [str(empty), "--max-memory", "lots"], "'max_memory'")


def test_cli_an_earlier_keeplist_survives_a_hostile_file(tmp_path):
    labels, logits, _ = make_data(n=400)
    good = tmp_path / "good.h5"
    gradscore.write_epoch(good, labels=labels, logits=logits)
    out = tmp_path / "out.keep.txt"
    assert CliRunner().invoke(main, ["score", str(good), "-o", str(out), "-q"]).exit_code == 0
    before = out.read_bytes()
    partial = partial_export(tmp_path / "partial.h5")
    res = CliRunner().invoke(main, ["score", partial, "-o", str(out), "-q"])
    assert res.exit_code == 1 and out.read_bytes() == before


def test_cli_inspect_deep(tmp_path):
    labels, logits, feats = make_data(n=100)
    feats[3] = np.inf
    path = tmp_path / "e.h5"
    raw_export(path, labels=labels, logits=logits, features=feats)
    res = CliRunner().invoke(main, ["inspect", str(path)])
    assert res.exit_code == 0 and "--deep reads them too" in res.output
    res = CliRunner().invoke(main, ["inspect", "--deep", str(path)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {path}: dataset 'features' contains Inf in 1 row "
                                  "(first: 3)")


def test_decompression_bomb_is_refused_by_its_declared_size(tmp_path):
    """Zeros compress to almost nothing; what counts is what they decompress to."""
    n, c = 2_000_000, 16
    path = tmp_path / "zip.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", shape=(n,), dtype="i8", chunks=(1 << 18,),
                         compression="gzip", fillvalue=0)
        f.create_dataset("logits", shape=(n, c), dtype="f8", chunks=(1 << 16, c),
                         compression="gzip")
        for s in range(0, n, 1 << 18):  # write every chunk, so storage is allocated
            f["labels"][s:s + (1 << 18)] = 0
        for s in range(0, n, 1 << 16):
            f["logits"][s:s + (1 << 16)] = 0.0
    assert os.path.getsize(path) < 2_000_000
    with pytest.raises(GradscoreError, match=r"zip.h5: dataset 'logits' declares 2000000 rows; "
                       r"reading the export needs .* but the --max-memory / max_memory limit "
                       r"is 95.4 MiB \(100000000 bytes\)"):
        gradscore.read_epoch(path, max_memory="100MB")


def test_cli_turns_a_memory_error_into_one_line(tmp_path, monkeypatch):
    """The backstop for scoring after the reader's check: never a traceback."""
    labels, logits, _ = make_data(n=100)
    path = tmp_path / "e.h5"
    gradscore.write_epoch(path, labels=labels, logits=logits)

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 74.5 GiB")
    monkeypatch.setattr(gradscore, "score_files", exhausted)
    res = CliRunner().invoke(main, ["score", str(path), "-q"])
    assert res.exit_code == 1
    assert res.output.strip().startswith("Error: out of memory (Unable to allocate 74.5 GiB)")
    assert "Traceback" not in res.output


def test_str_ids_are_written_fixed_length_and_checksummed(tmp_path):
    """No variable-length heap (unchecksummed; a damaged one made HDF5 loop
    for ever in the fuzzer): fixed-length UTF-8 with Fletcher-32."""
    ids = np.array(["é", "ünïcødé-🙂", "a", "b b"], dtype=object)
    path = tmp_path / "u.h5"
    gradscore.write_epoch(path, labels=np.array([0, 1, 0, 1]), logits=np.zeros((4, 2)),
                          ids=ids)
    with h5py.File(path) as f:
        assert h5py.check_string_dtype(f["ids"].dtype).length == len("ünïcødé-🙂".encode())
        assert f["ids"].fletcher32 and f["logits"].fletcher32 and f["labels"].fletcher32
    assert gradscore.read_epoch(path).ids.tolist() == sorted(ids.tolist())
    with pytest.raises(GradscoreError, match="ids hold a NUL character in 1 row"):
        gradscore.write_epoch(tmp_path / "nul.h5", labels=np.array([0, 1]),
                              logits=np.zeros((2, 2)), ids=np.array(["x\0", "y"], dtype=object))
