"""Fuzz the export reader: mutated copies of valid exports must either read
back exactly the data that is in them or raise ``GradscoreError``.

Mutations: byte flips at random offsets, truncation at a random offset,
and edits through h5py of attributes and datasets (delete, replace with
another dtype, rank or a group, shrink, write NaN/Inf or out-of-range
labels, repeat an id, change a value to another valid one). For an edit the
expected outcome is known (an error, or the original data with the edit
applied); for flips and truncation it is the original data or an error.
Any other exception, or data that differs from the expectation, is a
failure. The test suite runs a bounded sample of these cases with
hypothesis (tests/io/test_fuzz.py); this script runs many, each batch in a
child process, so that a crash of the HDF5 library itself (a signal) or a
hang is counted too.

Amplification generators (:func:`amp_fixed_ids`, :func:`amp_vlen_ids`,
:func:`amp_zero_bomb`, :func:`amp_parquet`, :func:`amp_parquet_dict_ids`)
build files that are small on disk and huge once read;
``--amplification`` runs each through the CLI under an address-space limit
and prints outcome, time and peak memory (tests/io/test_amplification.py runs
the same in the suite; ``--issue-sizes`` builds issue 25's original files,
``--legit-rows N`` adds a legitimate export of N short ids).

    python benchmarks/fuzz_reader.py --cases 20000 --seed 1
    python benchmarks/fuzz_reader.py --amplification --limit 2GiB
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

import h5py
import numpy as np

import gradscore
from gradscore import GradscoreError

N, C, D, CHUNK = 300, 3, 4, 64
KINDS = ("flip", "truncate", "attr", "dataset")


# ------------------------------------------------------------- base export

def make_base(folder, *, str_ids=False, seed=0):
    """A valid export written by gradscore's writer, and its raw arrays."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    logits = rng.normal(size=(N, C)).astype(np.float32)
    feats = rng.normal(size=(N, D)).astype(np.float32)
    ids = rng.permutation(10 * N)[:N]
    if str_ids:
        ids = np.array([f"img_{i:05d}.png" for i in ids], dtype=object)
    path = os.path.join(folder, f"base-{'str' if str_ids else 'int'}.h5")
    with gradscore.EpochWriter(path, num_classes=C, n_features=D, n_rows=N,
                               id_kind="str" if str_ids else "int", epoch=4,
                               chunk_rows=CHUNK) as w:
        w.append(labels, logits, feats, ids)
    raw = {"labels": labels, "logits": logits, "features": feats, "ids": ids,
           "epoch": 4, "num_classes": C}
    return path, raw


def expected(raw):
    """What read_epoch must return for a file holding ``raw`` (rows by id)."""
    ids = raw["ids"] if raw["ids"] is not None else np.arange(raw["labels"].size)
    order = np.argsort(ids, kind="stable")
    return {"labels": raw["labels"][order].astype(np.int64),
            "logits": raw["logits"][order].astype(np.float32),
            "features": None if raw["features"] is None else
            raw["features"][order].astype(np.float32),
            "ids": list(ids[order].tolist()), "epoch": raw["epoch"],
            "num_classes": raw["num_classes"]}


def copy_raw(raw):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in raw.items()}


# --------------------------------------------------------------- mutations

def flip(path, rng):
    """XOR 1 to 8 random bytes with random non-zero values."""
    data = bytearray(open(path, "rb").read())
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(data)))
        data[i] ^= int(rng.integers(1, 256))
    open(path, "wb").write(bytes(data))
    return "flip", None  # None: the original data, or an error


def truncate(path, rng):
    size = os.path.getsize(path)
    cut = int(rng.integers(0, size))
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    return f"truncate at {cut} of {size}", None


def edit_attr(path, raw, rng):
    """Edit one root attribute; returns (what, expected raw or 'error')."""
    r = copy_raw(raw)
    choice = int(rng.integers(0, 8))
    with h5py.File(path, "r+") as f:
        if choice == 0:
            v = int(rng.integers(-3, 10))
            f.attrs["num_classes"] = v
            return f"num_classes={v}", r if v == C else "error"
        if choice == 1:
            f.attrs["num_classes"] = "three"
            return "num_classes='three'", "error"
        if choice == 2:
            f.attrs["num_classes"] = np.array([C, C])
            return "num_classes=[C, C]", "error"
        if choice == 3:
            del f.attrs["num_classes"]
            return "no num_classes", r
        if choice == 4:
            v = int(rng.integers(-5, 1000))
            f.attrs["epoch"] = v
            r["epoch"] = v
            return f"epoch={v}", r
        if choice == 5:
            f.attrs["epoch"] = float(rng.normal())
            return "epoch=float", "error"
        if choice == 6:
            del f.attrs["epoch"]
            r["epoch"] = None
            return "no epoch", r
        f.attrs[f"extra_{int(rng.integers(0, 100))}"] = rng.normal(size=3)
        return "unknown attribute", r


def edit_dataset(path, raw, rng):
    """Edit one dataset; returns (what, expected raw or 'error')."""
    r = copy_raw(raw)
    name = ("labels", "logits", "features", "ids")[int(rng.integers(0, 4))]
    choice = int(rng.integers(0, 9))
    row = int(rng.integers(0, N))
    with h5py.File(path, "r+") as f:
        if choice == 0:
            del f[name]
            if name in ("labels", "logits"):
                return f"delete {name}", "error"
            r[name] = None
            return f"delete {name}", r
        if choice == 1:
            del f[name]
            f.create_group(name)
            return f"{name} as a group", "error"
        if choice == 2:
            del f[name]
            f.create_dataset(name, data=np.zeros((N, 2, 2)))
            return f"{name} of rank 3", "error"
        if choice == 3:
            k = int(rng.integers(1, N))
            data = f[name][...]
            del f[name]
            f.create_dataset(name, data=data[:k])
            return f"{name} shrunk to {k} rows", "error"
        if choice == 4 and name in ("logits", "features"):
            col = int(rng.integers(0, f[name].shape[1]))
            f[name][row, col] = [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))]
            return f"non-finite {name}[{row}, {col}]", "error"
        if choice == 5 and name == "labels":
            v = int(rng.choice([-1, C, C + 7]))
            f[name][row] = v
            return f"labels[{row}]={v}", "error"
        if choice == 6 and name == "ids":
            other = (row + 1 + int(rng.integers(0, N - 1))) % N
            f[name][row] = f[name][other]
            return f"ids[{row}] repeats ids[{other}]", "error"
        if choice == 7:
            if name == "labels":
                v = int(rng.integers(0, C))
                f[name][row] = v
                r[name][row] = v
            elif name == "ids":
                v = 10 * N + row if r["ids"].dtype.kind in "iu" else f"new_{row}"
                f[name][row] = v
                r[name][row] = v
            else:
                col = int(rng.integers(0, f[name].shape[1]))
                v = np.float32(rng.normal() * 100)
                f[name][row, col] = v
                r[name][row, col] = v
            return f"{name}[{row}] changed to a valid value", r
        if choice == 8 and name in ("logits", "features", "labels"):
            data = f[name][...]
            del f[name]
            f.create_dataset(name, data=data.astype("S8"))
            return f"{name} as strings", "error"
        return "no edit", r


def mutate(path, raw, kind, rng):
    """Apply one mutation of ``kind`` in place; returns (what, expectation):
    None for "the original data or an error", "error", or the raw data the
    file now holds."""
    if kind == "flip":
        what, exp = flip(path, rng)
    elif kind == "truncate":
        what, exp = truncate(path, rng)
    elif kind == "attr":
        what, exp = edit_attr(path, raw, rng)
    else:
        what, exp = edit_dataset(path, raw, rng)
    return what, exp


# ----------------------------------------------------------------- oracle

def same(ep, exp):
    return (np.array_equal(ep.labels, exp["labels"])
            and np.array_equal(ep.logits, exp["logits"])
            and ((ep.features is None and exp["features"] is None)
                 or (ep.features is not None and exp["features"] is not None
                     and np.array_equal(ep.features, exp["features"])))
            and list(ep.ids.tolist()) == exp["ids"]
            and (ep.epoch is None if exp["epoch"] is None else ep.epoch == exp["epoch"])
            and ep.num_classes == exp["num_classes"])


def check(path, exp, raw=None):
    """'error', 'refused', 'same', or raise AssertionError / let any other
    exception out. ``exp``: as :func:`mutate` returns; ``raw``: the original."""
    try:
        ep = gradscore.read_epoch(path, deep=True)
    except GradscoreError:
        # An error is always allowed; counted apart when the file was valid
        # (an edited str id no longer matches the ids' checksum, say).
        return "error" if exp == "error" or exp is None else "refused"
    if exp == "error":
        raise AssertionError(f"{path}: read without error, but the file breaks a rule")
    if not same(ep, expected(raw if exp is None else exp)):
        raise AssertionError(f"{path}: read without error but returned different data")
    return "same"


def run_case(base, raw, kind, seed, folder):
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "case.h5")
    shutil.copyfile(base, path)
    what, exp = mutate(path, raw, kind, rng)
    try:
        return what, check(path, exp, raw)
    finally:
        os.unlink(path)


# ------------------------------------------------------------ long run

def _worker(str_ids, seeds, queue):
    folder = tempfile.mkdtemp(prefix="gradscore-fuzz-")
    try:
        base, raw = make_base(folder, str_ids=str_ids)
        for seed in seeds:
            kind = KINDS[seed % len(KINDS)]
            queue.put(("start", seed, kind, None))
            try:
                what, outcome = run_case(base, raw, kind, seed, folder)
                queue.put(("done", seed, kind, outcome))
            except Exception as exc:
                queue.put(("fail", seed, kind, f"{type(exc).__name__}: {exc}\n"
                           f"{traceback.format_exc(limit=3)}"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------- amplification

def _small_arrays(f, n, c=3):
    """Valid labels and logits for ``n`` rows (ids are what the case attacks)."""
    f.attrs["num_classes"] = c
    f.create_dataset("labels", data=np.arange(n, dtype=np.int64) % c)
    rng = np.random.default_rng(0)
    f.create_dataset("logits", data=rng.normal(size=(n, c)).astype(np.float32))


def amp_fixed_ids(path, *, rows=2000, width=200_000, chunk_rows=16, unique=False):
    """Ids as fixed-length strings of ``width`` bytes under gzip: a few hundred
    bytes a chunk on disk, ``rows x width`` bytes once read. The issue's case
    is ``rows=20000, width=200000, unique=True`` (4.6 MB on disk, 4 GB of ids).

    With ``unique`` each chunk is compressed on its own (ids differ in their
    first bytes); otherwise one compressed chunk is written at every offset.
    """
    with h5py.File(path, "w") as f:
        _small_arrays(f, rows)
        d = f.create_dataset("ids", shape=(rows,), dtype=f"S{width}",
                             chunks=(chunk_rows,), compression="gzip")
        same = None
        for start in range(0, rows, chunk_rows):
            buf = bytearray(b"a" * (width * chunk_rows))
            if unique:
                for r in range(chunk_rows):
                    buf[r * width:r * width + 12] = f"{start + r:012d}".encode()
            elif same is not None:
                d.id.write_direct_chunk((start,), same)
                continue
            data = zlib.compress(bytes(buf), 6)
            same = data
            d.id.write_direct_chunk((start,), data)
    return path


def amp_vlen_ids(path, *, rows=200, id_bytes=100_000, long_from=0):
    """Variable-length string ids of ``id_bytes`` bytes from row ``long_from``
    on (short ones before it). The issue's case is ``rows=2000,
    id_bytes=1_000_000`` (a 2 GB file)."""
    with h5py.File(path, "w") as f:
        _small_arrays(f, rows)
        d = f.create_dataset("ids", shape=(rows,), dtype=h5py.string_dtype("utf-8"))
        pad = "x" * id_bytes
        for start in range(0, rows, 64):
            stop = min(rows, start + 64)
            d[start:stop] = np.array(
                [f"{r:08d}" + (pad[8:] if r >= long_from else "") for r in range(start, stop)],
                dtype=object)
    return path


def amp_zero_bomb(path, *, rows=10**9, classes=10, chunk_rows=2**20):
    """Labels and logits of ``rows`` declared rows, every chunk the same gzip
    chunk of zeros: ~8 MB on disk for 10^9 rows, 48 GB once read (valid
    data: zeros are labels in range and finite logits)."""
    with h5py.File(path, "w") as f:
        f.attrs["num_classes"] = classes
        for name, shape, chunks, dtype in (
                ("labels", (rows,), (chunk_rows,), np.int64),
                ("logits", (rows, classes), (chunk_rows // classes, classes), np.float32)):
            d = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks,
                                 compression="gzip")
            zero = zlib.compress(bytes(int(np.prod(chunks)) * np.dtype(dtype).itemsize), 9)
            for start in range(0, rows, chunks[0]):
                d.id.write_direct_chunk((start,) + (0,) * (len(shape) - 1), zero)
    return path


def amp_parquet(path, *, rows=8, cell_bytes=20 * 2**20, column="image"):
    """A Parquet file whose ``column`` (binary) holds ``cell_bytes`` of zeros
    a row under zstd: ~1,000-fold smaller on disk than in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = pa.array([bytes(cell_bytes)] * rows, type=pa.binary())
    table = pa.table({column: cells, "label": pa.array(np.arange(rows) % 2)})
    if column != "image":
        table = table.append_column("image", pa.array([b"\x89PNG"] * rows))
    pq.write_table(table, path, compression="zstd", compression_level=19,
                   use_dictionary=False, row_group_size=rows)
    return path


#: Runs argv[4:] under RLIMIT_AS = argv[1] bytes with a timeout of argv[2]
#: seconds, and writes "exit seconds peak_rss_kib" to file descriptor argv[3]. A small process
#: of its own: a child forked from a large one (pytest, the file builder)
#: would report the parent's resident size as its own peak.
_LIMITED = """
import os, resource, signal, sys, time
limit, timeout, fd = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.close(fd)
    os.execvp(sys.argv[4], sys.argv[4:])
while True:
    got, status, ru = os.wait4(pid, os.WNOHANG)
    if got:
        break
    if time.perf_counter() - t0 > timeout:
        os.kill(pid, signal.SIGKILL)
        got, status, ru = os.wait4(pid, 0)
        break
    time.sleep(0.02)
took = time.perf_counter() - t0
os.write(fd, f"{os.waitstatus_to_exitcode(status)} {took} {ru.ru_maxrss}".encode())
"""


def amp_parquet_dict_ids(path, *, rows=500, id_bytes=2**20):
    """A Parquet file whose ``name`` column holds one ``id_bytes`` string for
    every row, dictionary-encoded: ~1 KB on disk, its footer declaring ~1 MB
    for the column, ``rows x id_bytes`` once decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"image": pa.array([b"\x89PNG"] * rows),
                      "label": pa.array(np.arange(rows) % 2),
                      "name": pa.array(["n" * id_bytes] * rows)})
    pq.write_table(table, path, compression="zstd")
    return path


def legit_short_ids(path, *, rows=10**7, classes=10, block=2**20):
    """A legitimate large export: ``rows`` variable-length ids of 16 bytes
    (``img_00000001.png``), int64 labels and float16 logits, written in
    blocks. Reading it must stay bounded (labels and ids read in blocks)."""
    with h5py.File(path, "w") as f:
        f.attrs["num_classes"] = classes
        lab = f.create_dataset("labels", shape=(rows,), dtype=np.int64, chunks=(65536,))
        lg = f.create_dataset("logits", shape=(rows, classes), dtype=np.float16,
                              chunks=(65536, classes))
        ids = f.create_dataset("ids", shape=(rows,), dtype=h5py.string_dtype("utf-8"),
                               chunks=(65536,))
        rng = np.random.default_rng(0)
        for start in range(0, rows, block):
            stop = min(rows, start + block)
            lab[start:stop] = np.arange(start, stop) % classes
            lg[start:stop] = rng.normal(size=(stop - start, classes)).astype(np.float16)
            ids[start:stop] = np.array([f"img_{i:08d}.png" for i in range(start, stop)],
                                       dtype=object)
    return path


def run_limited(args, *, limit, timeout=120, cwd=None):
    """Run ``args`` in a child under ``RLIMIT_AS = limit`` bytes, killed
    after ``timeout`` seconds.

    Returns ``(returncode, stdout, stderr, seconds, peak_rss_bytes)``, the
    peak being the command's own (``wait4`` in a small parent).
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    r, w = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-c", _LIMITED, str(int(limit)), str(timeout),
                              str(w)] + list(args), stdout=out, stderr=err, env=env, cwd=cwd,
                             pass_fds=(w,))
        os.close(w)
        with os.fdopen(r) as fh:
            report = fh.read().split()
        p.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if len(report) != 3:
        raise RuntimeError(f"the limited run of {args} failed: {stderr[-2000:]}")
    return int(report[0]), stdout, stderr, float(report[1]), int(report[2]) * 1024


def amplification_cases(folder, *, issue_sizes=False, legit_rows=0):
    """``(name, command args, path)`` of each amplification case, files built
    in ``folder``; ``issue_sizes`` builds the issue's original sizes (GBs
    once read, a 2 GB file for the variable-length ids)."""
    j = os.path.join
    cases = []
    if issue_sizes:
        amp_fixed_ids(j(folder, "fixed.h5"), rows=20000, width=200_000, unique=True)
        amp_fixed_ids(j(folder, "fixed1m.h5"), rows=2000, width=1_000_000, unique=True)
        amp_vlen_ids(j(folder, "vlen.h5"), rows=2000, id_bytes=1_000_000)
        cases += [("fixed-200KB-ids x 20000 (score)", "score", j(folder, "fixed.h5")),
                  ("fixed-1MB-ids x 2000 (score)", "score", j(folder, "fixed1m.h5")),
                  ("vlen-1MB-ids x 2000 (inspect)", "inspect", j(folder, "vlen.h5"))]
    else:
        amp_fixed_ids(j(folder, "fixed.h5"))
        amp_vlen_ids(j(folder, "vlen.h5"))
        cases += [("fixed-200KB-ids x 2000 (score)", "score", j(folder, "fixed.h5")),
                  ("vlen-100KB-ids x 200 (inspect)", "inspect", j(folder, "vlen.h5"))]
    if issue_sizes:
        amp_zero_bomb(j(folder, "zeros.h5"))
        cases.append(("gzip zeros, 10^9 x 10 declared (score)", "score", j(folder, "zeros.h5")))
    else:
        amp_zero_bomb(j(folder, "zeros.h5"), rows=2 * 10**8, classes=2)
        cases.append(("gzip zeros, 2x10^8 x 2 declared (score)", "score", j(folder, "zeros.h5")))
    if legit_rows:
        legit_short_ids(j(folder, "legit.h5"), rows=legit_rows)
        cases.append((f"legitimate: {legit_rows} short vlen ids (inspect)", "inspect",
                      j(folder, "legit.h5")))
    try:
        amp_parquet(j(folder, "cells.parquet"))
        cases.append(("parquet 20 MiB zero cells (audit)", "audit", j(folder, "cells.parquet")))
        amp_parquet_dict_ids(j(folder, "dict.parquet"))
        cases.append(("parquet 500 x one 1 MiB dictionary id (audit)", "audit-ids",
                      j(folder, "dict.parquet")))
    except ImportError:
        pass
    return cases


def case_command(gradscore_bin, kind, path, folder):
    out = os.path.join(folder, os.path.basename(path) + ".out")
    if kind == "score":
        return [gradscore_bin, "score", path, "-o", out + ".keep.txt", "-q"], [out + ".keep.txt"]
    if kind == "inspect":
        return [gradscore_bin, "inspect", path], []
    # The audit's model is never reached: the data is refused first.
    ids = ["--id-column", "name"] if kind == "audit-ids" else []
    return [gradscore_bin, "audit", os.path.join(folder, "missing-model.onnx"), path,
            "-o", out + ".report"] + ids, [out + ".report"]


def amplification_main(a):
    programs = a.gradscore or [shutil.which("gradscore") or "gradscore"]
    folder = tempfile.mkdtemp(prefix="amp-", dir=a.folder)
    rows = []
    try:
        t0 = time.perf_counter()
        cases = amplification_cases(folder, issue_sizes=a.issue_sizes,
                                    legit_rows=a.legit_rows)
        print(f"built {len(cases)} files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for name, kind, path in cases:
            for prog in programs:
                args, outputs = case_command(prog, kind, path, folder)
                rc, out, err, secs, peak = run_limited(args, limit=a.limit, timeout=a.timeout)
                last = (err.strip().splitlines() or [""])[-1]
                wrote = {o: os.path.getsize(o) for o in outputs if os.path.isfile(o)}
                rows.append({"case": name, "program": prog,
                             "file_bytes": os.path.getsize(path), "exit": rc,
                             "seconds": round(secs, 1), "peak_rss_mib": round(peak / 2**20),
                             "wrote": wrote, "message": last[:300]})
                print(json.dumps(rows[-1]), flush=True)
                for o in outputs:
                    shutil.rmtree(o, ignore_errors=True) if os.path.isdir(o) else \
                        (os.path.exists(o) and os.remove(o))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = {"limit_bytes": a.limit, "cases": rows,
              "loadavg": open("/proc/loadavg").read().split()[:3]}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=500, help="cases per child process")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--str-ids", action="store_true", help="base export with str ids")
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--amplification", action="store_true",
                    help="run the amplification cases through the CLI instead")
    ap.add_argument("--issue-sizes", action="store_true",
                    help="with --amplification: the issue's original sizes (GBs once "
                         "read; needs ~2.5 GB of disk)")
    ap.add_argument("--limit", default="2GiB",
                    help="with --amplification: address-space limit of each run")
    ap.add_argument("--gradscore", action="append",
                    help="with --amplification: a gradscore program to run each case "
                         "with (repeat to compare builds; default: the one on PATH)")
    ap.add_argument("--folder", help="with --amplification: where to build the files")
    ap.add_argument("--legit-rows", type=int, default=0,
                    help="with --amplification: also read a legitimate export of this many "
                         "rows of short variable-length ids")
    a = ap.parse_args()
    if a.amplification:
        from gradscore.io.reader import parse_memory
        a.limit = parse_memory(a.limit, name="limit")
        return amplification_main(a)
    ctx = mp.get_context("spawn")
    counts = {k: {"same": 0, "error": 0, "refused": 0, "fail": 0, "crash": 0,
                 "hang": 0} for k in KINDS}
    failures = []
    t0 = time.perf_counter()
    seeds = list(range(a.seed * 10**7, a.seed * 10**7 + a.cases))
    while seeds:
        batch, seeds = seeds[:a.batch], seeds[a.batch:]
        q = ctx.Queue()
        p = ctx.Process(target=_worker, args=(a.str_ids, batch, q))
        p.start()
        pending = None
        done_seeds = set()
        while True:
            try:
                msg, seed, kind, info = q.get(timeout=a.timeout)
            except Exception:  # queue.Empty: the child hangs or died
                if p.is_alive():
                    p.kill()
                    p.join()
                    counts[pending[1]]["hang"] += 1
                    failures.append({"seed": pending[0], "kind": pending[1], "outcome": "hang"})
                elif pending is None:
                    raise RuntimeError(f"fuzz worker died outside a case (exit {p.exitcode})")
                else:
                    counts[pending[1]]["crash"] += 1
                    failures.append({"seed": pending[0], "kind": pending[1],
                                     "outcome": f"crash (exit {p.exitcode})"})
                # resume after the case that broke the child
                rest = [s for s in batch if s not in done_seeds and
                        (pending is None or s != pending[0])]
                seeds = rest + seeds
                break
            if msg == "start":
                pending = (seed, kind)
                continue
            done_seeds.add(seed)
            pending = None
            if msg == "done":
                counts[kind][info] += 1
            else:
                counts[kind]["fail"] += 1
                failures.append({"seed": seed, "kind": kind, "outcome": info})
            if len(done_seeds) == len(batch):
                p.join()
                break
    total = sum(sum(v.values()) for v in counts.values())
    elapsed = time.perf_counter() - t0
    report = {"cases": total, "seconds": round(elapsed, 1), "counts": counts,
              "failures": failures[:20], "str_ids": a.str_ids,
              "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version}
    print(json.dumps(report, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
