"""Amplification: files small on disk and huge once read (issue 25).

Each hostile file runs through the CLI in a child process under an
address-space limit (RLIMIT_AS), as an attacker's file would on a real
machine: the run must end with one ``Error:`` line naming the file and the
rule, within 120 s, below a stated peak of resident memory, with nothing
written. The files are built by benchmarks/fuzz_reader.py's generators, at
sizes of a few MB (the issue's original sizes, GBs once read, are measured
by ``fuzz_reader.py --amplification --issue-sizes``; see docs/reliability.md).
"""

import os
import sys

import h5py
import numpy as np
import pytest

import gradscore
from gradscore import GradscoreError
from gradscore.io.keeplist import check_free_space, output_bytes
from gradscore.limits import (MAX_CELL_BYTES, MAX_ID_BYTES, check_cell_bytes,
                              check_file_bytes, max_cell_bytes)

from benchmarks import fuzz_reader as F  # noqa: E402

#: Address space each CLI run may map (gradscore's own start-up maps ~1 GiB
#: of libraries and thread stacks with one BLAS thread).
LIMIT = 3 * 2**30
#: Peak resident memory a refusal may take (measured: 110-150 MiB).
PEAK = 512 * 2**20
SECONDS = 120


def _gradscore():
    exe = os.path.join(os.path.dirname(sys.executable), "gradscore")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "gradscore_cli.main"]


def _run(args, tmp_path):
    rc, out, err, secs, peak = F.run_limited(_gradscore() + args, limit=LIMIT,
                                             timeout=SECONDS, cwd=str(tmp_path))
    return rc, err, secs, peak


def _assert_refused(rc, err, secs, peak, path, rule):
    lines = err.strip().splitlines()
    assert rc == 1, err[-2000:]
    assert lines and lines[-1].startswith("Error: "), err[-2000:]
    assert "Traceback" not in err
    assert str(path) in lines[-1] and rule in lines[-1], lines[-1]
    assert secs < SECONDS
    assert peak < PEAK, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("command", ["score", "inspect"])
def test_compressed_fixed_length_ids_are_refused_from_the_datatype(tmp_path, command):
    # 2,000 ids of 200,000 bytes: 0.4 MB on disk, 400 MB once read.
    path = F.amp_fixed_ids(str(tmp_path / "fixed.h5"))
    assert os.path.getsize(path) < 2 * 2**20
    out = tmp_path / "fixed.keep.txt"
    args = [command, path] + (["-o", str(out), "-q"] if command == "score" else [])
    rc, err, secs, peak = _run(args, tmp_path)
    _assert_refused(rc, err, secs, peak, path, "wider than the 1024-byte id limit")
    assert "rows (first: 0, 1, 2" in err and "Refused before reading" in err
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["fixed.h5"]


@pytest.mark.parametrize("command", ["score", "inspect"])
def test_variable_length_ids_are_refused_on_the_first_block(tmp_path, command):
    # 200 ids of 100 KB (20 MB), the long ones from row 70 on: the refusal
    # names row 70, and only a few blocks are read.
    path = F.amp_vlen_ids(str(tmp_path / "vlen.h5"), long_from=70)
    out = tmp_path / "vlen.keep.txt"
    args = [command, path] + (["-o", str(out), "-q"] if command == "score" else [])
    rc, err, secs, peak = _run(args, tmp_path)
    _assert_refused(rc, err, secs, peak, path, "ids must be at most 1024 bytes")
    assert "dataset 'ids' holds ids longer than 1024 bytes in" in err
    assert "(first: 70, 71," in err
    assert not out.exists()


def test_gzip_zeros_with_a_huge_declared_shape_are_refused_by_size(tmp_path):
    # 2x10^8 rows of zero labels and logits: ~3 MB on disk, 3.2 GB declared.
    path = F.amp_zero_bomb(str(tmp_path / "zeros.h5"), rows=2 * 10**8, classes=2)
    assert os.path.getsize(path) < 8 * 2**20
    out = tmp_path / "zeros.keep.txt"
    rc, err, secs, peak = _run(["score", path, "-o", str(out), "-q"], tmp_path)
    _assert_refused(rc, err, secs, peak, path, "refused before allocating")
    assert "declares 200000000 rows" in err
    # The address-space limit is what the machine has, for this process.
    assert "the memory available on this machine is" in err
    assert not out.exists()


def test_parquet_column_that_decompresses_a_thousandfold_is_refused_from_metadata(tmp_path):
    pytest.importorskip("pyarrow")
    # 8 cells of 20 MiB of zeros: ~6 KB on disk, 160 MiB once read.
    path = F.amp_parquet(str(tmp_path / "cells.parquet"))
    assert os.path.getsize(path) * 1000 < 8 * 20 * 2**20
    report = tmp_path / "report"
    rc, err, secs, peak = _run(["audit", str(tmp_path / "model.onnx"), path, "-o",
                                str(report)], tmp_path)
    _assert_refused(rc, err, secs, peak, path, "one cell is at most 8388608 bytes")
    assert "column 'image' declares 167772224 bytes once decompressed" in err
    assert not report.exists()
    # Raising the limit lets the listing through: the run goes on to the
    # model (missing here), so the cell rule no longer speaks.
    rc, err, _, _ = _run(["audit", str(tmp_path / "model.onnx"), path, "-o", str(report),
                          "--max-cell-bytes", "32MiB"], tmp_path)
    assert rc == 1 and "one cell" not in err and "model.onnx" in err, err[-2000:]
    assert not report.exists()


def test_parquet_dictionary_ids_are_measured_before_they_are_decoded(tmp_path):
    pytest.importorskip("pyarrow")
    # One 1 MiB string for 500 rows: ~1 KB on disk, 500 MiB once decoded;
    # the footer declares ~1 MiB, so only the dictionary's lengths tell.
    path = F.amp_parquet_dict_ids(str(tmp_path / "dict.parquet"))
    assert os.path.getsize(path) < 64 * 2**10
    report = tmp_path / "report"
    rc, err, secs, peak = _run(["audit", str(tmp_path / "model.onnx"), path, "-o",
                                str(report), "--id-column", "name"], tmp_path)
    _assert_refused(rc, err, secs, peak, path, "ids must be at most 1024 bytes")
    assert "column 'name' holds ids longer than 1024 bytes in 500 rows (first: 0, 1," in err
    assert not report.exists()


def test_parquet_ids_over_the_id_limit_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from gradscore.audit.sources import open_source

    ids = [f"id{i}" for i in range(10)]
    ids[6] = "x" * (MAX_ID_BYTES + 1)
    pq.write_table(pa.table({"image": pa.array([b"\x89PNG"] * 10),
                             "label": pa.array(np.arange(10) % 2), "name": pa.array(ids)}),
                   tmp_path / "d.parquet")
    with pytest.raises(GradscoreError, match=r"column 'name' holds ids longer than 1024 "
                       r"bytes in 1 row \(first: 6\)"):
        open_source(tmp_path / "d.parquet", id_column="name")
    ids[6] = "x" * MAX_ID_BYTES  # exactly at the limit: accepted
    pq.write_table(pa.table({"image": pa.array([b"\x89PNG"] * 10),
                             "label": pa.array(np.arange(10) % 2), "name": pa.array(ids)}),
                   tmp_path / "d.parquet")
    assert open_source(tmp_path / "d.parquet", id_column="name").ids[6] == ids[6]


def test_parquet_cells_are_checked_as_read_and_the_limit_can_be_raised(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from gradscore.audit.sources import open_source

    cells = [b"\x89PNG"] * 6
    cells[4] = os.urandom(3000)  # incompressible: the footer's size alone allows it
    pq.write_table(pa.table({"image": pa.array(cells), "label": pa.array(np.arange(6) % 2)}),
                   tmp_path / "d.parquet", row_group_size=3)
    src = open_source(tmp_path / "d.parquet", max_cell_bytes=2000)
    with pytest.raises(GradscoreError, match=r"column 'image' has 1 cell longer than the "
                       r"2000-byte limit on one cell: 1 row \(first: 4\)"):
        src.payloads(np.arange(6))
    src = open_source(tmp_path / "d.parquet", max_cell_bytes="4k")
    assert src.payloads(np.array([4]))[0] == cells[4]


def _export(path, n=100, ids=None):
    with h5py.File(path, "w") as f:
        f.attrs["num_classes"] = 3
        f.create_dataset("labels", data=np.arange(n) % 3)
        f.create_dataset("logits", data=np.random.default_rng(0).normal(
            size=(n, 3)).astype(np.float32))
        if ids is not None:
            f.create_dataset("ids", data=ids)
    return str(path)


def test_ids_at_the_limit_read_back_and_one_byte_more_is_refused(tmp_path):
    n = 100
    vlen = np.array([f"{i:04d}" + "é" * ((MAX_ID_BYTES - 4) // 2) for i in range(n)],
                    dtype=object)
    assert max(len(v.encode()) for v in vlen) == MAX_ID_BYTES
    p = _export(tmp_path / "ok.h5", n, ids=vlen.astype(h5py.string_dtype()))
    ep = gradscore.read_epoch(p, block_rows=7)
    assert ep.ids.tolist() == sorted(vlen.tolist())
    fixed = np.array([f"{i:04d}".encode() + b"a" * (MAX_ID_BYTES - 4) for i in range(n)])
    assert fixed.dtype.itemsize == MAX_ID_BYTES
    ep = gradscore.read_epoch(_export(tmp_path / "fixed.h5", n, ids=fixed), block_rows=7)
    assert ep.ids.tolist() == sorted(v.decode() for v in fixed.tolist())
    vlen[37] += "a"
    p = _export(tmp_path / "bad.h5", n, ids=vlen.astype(h5py.string_dtype()))
    with pytest.raises(GradscoreError, match=r"bad.h5: dataset 'ids' holds ids longer than "
                       r"1024 bytes in 1 row \(first: 37\) \(longest: 1025 bytes\)"):
        gradscore.read_epoch(p, block_rows=16)
    fixed = np.array([b"a" * 5] * (n - 1) + [b"b" * (MAX_ID_BYTES + 1)])
    with pytest.raises(GradscoreError, match=r"stores fixed-length strings of 1025 bytes.*"
                       r"longer ids in 1 row \(first: 99\) \(longest: 1025 bytes; the first "
                       r"100 rows read\)"):
        gradscore.read_epoch(_export(tmp_path / "fixedbad.h5", n, ids=fixed))


def test_labels_and_ids_read_in_blocks_give_the_same_epoch(tmp_path):
    ids = np.random.default_rng(1).permutation(1000)[:250] * 7
    p = _export(tmp_path / "e.h5", 250, ids=ids)
    whole = gradscore.read_epoch(p)
    for block in (1, 7, 64, 1000):
        ep = gradscore.read_epoch(p, block_rows=block)
        assert np.array_equal(ep.ids, whole.ids) and np.array_equal(ep.labels, whole.labels)
        assert np.array_equal(ep.logits, whole.logits)


def test_oversized_attributes_are_refused_before_reading(tmp_path):
    p = _export(tmp_path / "a.h5")
    with h5py.File(p, "a") as f:
        f.attrs.create("epoch", np.zeros(5000, dtype=np.int64))
    with pytest.raises(GradscoreError, match=r"a.h5: attribute 'epoch' takes 40000 bytes; "
                       r"attributes gradscore reads are limited to 4096 bytes"):
        gradscore.read_epoch(p)


def test_available_memory_counts_an_address_space_limit(tmp_path):
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30));"
            "from gradscore.io.reader import available_memory; print(available_memory())")
    rc, out, err, _, _ = F.run_limited([sys.executable, "-c", code], limit=8 * 2**30)
    assert rc == 0, err
    assert 0 < int(out) < 3 * 2**30


def test_keep_list_size_is_bounded_and_checked_before_writing(tmp_path):
    ids = np.array(["a" * MAX_ID_BYTES, "é"], dtype=object)
    assert output_bytes(ids, ".txt") == MAX_ID_BYTES + 1 + 2 + 1
    path = tmp_path / "keep.txt"
    gradscore.write_keeplist(path, ids)
    assert path.stat().st_size == output_bytes(ids, ".txt")
    # .npy: as wide as the longest id for every row, written through a
    # memory map in blocks; the bound covers the file.
    many = np.array(["a" * MAX_ID_BYTES] + [f"b{i}" for i in range(70_000)], dtype=object)
    gradscore.write_keeplist(tmp_path / "keep.npy", many)
    assert gradscore.read_keeplist(tmp_path / "keep.npy").tolist() == sorted(many.tolist())
    assert (tmp_path / "keep.npy").stat().st_size <= output_bytes(many, ".npy")
    gradscore.write_keeplist(tmp_path / "keep.json", many)
    assert (tmp_path / "keep.json").stat().st_size <= output_bytes(many, ".json")
    with pytest.raises(GradscoreError, match=r"keep2.txt: the output needs up to "
                       r"1000000000000000000 bytes but .* free; refused before writing"):
        check_free_space(tmp_path / "keep2.txt", 10**18)


def test_cell_limit_helpers():
    assert max_cell_bytes() == MAX_CELL_BYTES == 8 * 2**20
    assert max_cell_bytes("1k") == 1000 and max_cell_bytes(5) == 5
    with pytest.raises(GradscoreError, match="max_cell_bytes"):
        max_cell_bytes("lots")
    check_cell_bytes([10, 10], where="x", limit=10)
    with pytest.raises(GradscoreError, match=r"x has 2 cells longer than the 10-byte limit "
                       r"on one cell: 2 rows \(first: 103, 105\) \(longest: 12 bytes\)"):
        check_cell_bytes([10, 0, 11, 3, 12], where="x", limit=10, row_offset=101)


def test_whole_file_inputs_are_capped(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_bytes(b"{}" + b" " * 5000)
    assert check_file_bytes(p, what="tokenizer file", limit=6000) == 5002
    with pytest.raises(GradscoreError, match=r"tokenizer.json: tokenizer file is 5002 bytes, "
                       r"over the 5000-byte limit"):
        check_file_bytes(p, what="tokenizer file", limit=5000)


def test_a_keep_list_that_cannot_fit_is_refused_before_the_export_is_read(tmp_path,
                                                                           monkeypatch):
    import shutil
    from collections import namedtuple

    ids = np.array([f"img_{i:05d}.png" for i in range(120)], dtype=object)
    p = _export(tmp_path / "e.h5", 120, ids=ids.astype(h5py.string_dtype()))
    rows, id_bytes = gradscore.io.reader.declared_id_bytes([p])
    assert rows == 120 and 120 * 13 <= id_bytes < 120 * 13 + 64 * 2**10
    # The disk (not gradscore) is what is replaced: a folder with 100 bytes free.
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 100, 100))
    out = tmp_path / "keep.txt"
    with pytest.raises(GradscoreError, match=r"keep.txt: the output needs up to \d+ bytes "
                       r"but .* has 100 bytes free; refused before writing"):
        gradscore.score_files([p], output=out, method="knn-density", k=3)
    assert not out.exists()


def test_npz_inputs_are_checked_from_their_headers(tmp_path):
    import io
    import zipfile
    from gradscore.onnx.extract import _Data

    np.savez_compressed(tmp_path / "wide.npz", inputs=np.zeros((3, 2), np.float32),
                        labels=np.arange(3), ids=np.array([b"a" * 5000] * 3))
    with pytest.raises(GradscoreError, match=r"wide.npz: array 'ids' declares S5000 strings, "
                       r"wider than the 1024-byte id limit"):
        _Data(str(tmp_path / "wide.npz"))
    # An entry whose header declares 10^11 float32 (400 GB): refused from the
    # header alone (the data behind it is never decompressed).
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                               "shape": (10**11, 1)})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.npy", head.getvalue() + bytes(64))  # magic and header
        buf = io.BytesIO()
        np.save(buf, np.zeros(10**11 // 10**9, dtype=np.int64))
        zf.writestr("labels.npy", buf.getvalue())
    with pytest.raises(GradscoreError, match=r"bomb.npz: its arrays .* declare 372.5 GiB .* "
                       r"refused before decompressing"):
        _Data(str(tmp_path / "bomb.npz"))


def _small_csv(path, big_row=None, big_bytes=0):
    with open(path, "w") as fh:
        fh.write("text,label\n")
        for i in range(40):
            if i == big_row:
                fh.write('"' + "a" * big_bytes + '",1\n')
            fh.write(f"review number {i},{i % 2}\n")
    return str(path)


def test_csv_with_a_100_mb_cell_is_refused_by_the_cell_rule(tmp_path):
    pytest.importorskip("pyarrow")
    # One 100 MB cell in a CSV of 40 short rows: the text reader reads in
    # blocks of 4 x the cell limit, so the row is refused without being held.
    path = _small_csv(tmp_path / "big.csv", big_row=20, big_bytes=100 * 10**6)
    report = tmp_path / "report"
    rc, err, secs, peak = _run(["audit", str(tmp_path / "model.onnx"), path,
                                "--text-column", "text", "-o", str(report)], tmp_path)
    _assert_refused(rc, err, secs, peak, path, "limit on one cell")
    assert not report.exists()


def test_oversized_tokenizer_json_is_refused_before_it_is_read(tmp_path):
    pytest.importorskip("pyarrow")
    # 40 MB of tokenizer.json (over 4 x the 8 MiB cell limit) beside the model.
    data = _small_csv(tmp_path / "ok.csv")
    tok = tmp_path / "tokenizer.json"
    with open(tok, "w") as fh:
        fh.write('{"model": {"vocab": {' + ",".join(f'"t{i}": {i}' for i in range(3 * 10**6))
                 + "}}}")
    assert os.path.getsize(tok) > 4 * MAX_CELL_BYTES
    report = tmp_path / "report"
    rc, err, secs, peak = _run(["audit", str(tmp_path / "model.onnx"), data,
                                "--text-column", "text", "-o", str(report)], tmp_path)
    _assert_refused(rc, err, secs, peak, tok, "limit on one input string")
    assert not report.exists()
