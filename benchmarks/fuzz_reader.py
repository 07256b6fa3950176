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

    python benchmarks/fuzz_reader.py --cases 20000 --seed 1
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=500, help="cases per child process")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--str-ids", action="store_true", help="base export with str ids")
    ap.add_argument("--json", help="write the counts here")
    a = ap.parse_args()
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
