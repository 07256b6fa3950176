"""Crash consistency: SIGKILL real processes at random points and check what
they leave behind.

Three writers are killed:

``score``
    ``gradscore score E.h5 -o out.keep.txt`` over an existing keep-list
    (made by another method, so the two differ). After the kill the
    keep-list must be the earlier one byte for byte, or the complete new
    one; a rerun must then write exactly the new one.
``writer``
    A process streaming an export with :class:`gradscore.EpochWriter` over an
    earlier export at the same path. After the kill the path must hold the
    earlier file byte for byte or the complete new export (it reads back
    equal); no other file in the folder may read as an export; a rerun must
    write the complete new export.
``schedule``
    A process running :class:`gradscore.DropSchedule` over 12 epochs with a
    state file. After the kill the state file must be absent (killed before
    the first save) or load, holding a prefix of the uninterrupted run's
    history with its keep-list; a rerun resumed from it must end with the
    uninterrupted run's keep-list and history.

The kill time is drawn uniformly over the part of a run that does the work
(from when the child says it is ready, or from ``--from`` of the measured
run time for ``score``, whose first part is Python's imports). The test
suite runs a few trials of each (tests/io/test_crash.py); this script runs many:

    python benchmarks/crash_trials.py --trials 100 --json out.json
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import gradscore
from gradscore import GradscoreError

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------ score

SCORE_N = 3000


def score_setup(folder):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, SCORE_N)
    logits = rng.normal(size=(SCORE_N, 5)) + 4 * np.eye(5)[labels]
    export = os.path.join(folder, "e.h5")
    gradscore.write_epoch(export, labels=labels, logits=logits)
    out = os.path.join(folder, "out.keep.txt")
    # The earlier keep-list (another method), and the one an uninterrupted
    # run writes, timed.
    gradscore.score_files(export, output=out, method="knn-density", drop_fraction=0.1)
    old = open(out, "rb").read()
    ref = os.path.join(folder, "ref.keep.txt")
    t = time.perf_counter()
    _cli(["score", export, "-o", ref, "-q"])
    run_time = time.perf_counter() - t
    new = open(ref, "rb").read()
    os.unlink(ref)
    assert old != new
    return {"export": export, "out": out, "old": old, "new": new, "run_time": run_time}


def _cli(args, **kw):
    return subprocess.run([PY, "-m", "gradscore_cli.main", *args], check=True,
                          capture_output=True, **kw)


def score_trial(state, rng, *, start_fraction=0.5):
    out = state["out"]
    with open(out, "wb") as fh:  # every trial starts from the earlier keep-list
        fh.write(state["old"])
    delay = rng.uniform(start_fraction, 1.05) * state["run_time"]
    p = subprocess.Popen([PY, "-m", "gradscore_cli.main", "score", state["export"], "-o", out,
                          "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    code = p.wait()
    got = open(out, "rb").read()
    if got == state["old"]:
        outcome = "old intact"
    elif got == state["new"]:
        outcome = "new complete"
    else:
        raise AssertionError(f"after SIGKILL at {delay:.2f}s the keep-list is neither the "
                             f"earlier one nor the new one ({len(got)} bytes)")
    _cli(["score", state["export"], "-o", out, "-q"])
    if open(out, "rb").read() != state["new"]:
        raise AssertionError("the rerun after a kill wrote a different keep-list")
    for tmp in glob.glob(os.path.join(os.path.dirname(out), ".out.keep.txt.*.tmp")):
        os.unlink(tmp)  # what a killed run leaves: hidden, never the output's name
    return outcome if code == -signal.SIGKILL else outcome + " (exited first)"


# ----------------------------------------------------------------- writer

WRITER_N, WRITER_BATCH = 60_000, 2000


def writer_child(path, n=WRITER_N, batch=WRITER_BATCH, ready=None):
    """What the killed process runs: stream an export batch by batch."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)).astype(np.float32)
    feats = rng.normal(size=(n, 16)).astype(np.float32)
    if ready:
        ready()
    with gradscore.EpochWriter(path, num_classes=4, n_features=16, n_rows=n, id_kind="int",
                               epoch=2, chunk_rows=1024) as w:
        for s in range(0, n, batch):
            w.append(labels[s:s + batch], logits[s:s + batch], feats[s:s + batch],
                     ids=np.arange(s, min(n, s + batch)))


def _child(call):
    """``python -c`` code that imports this module and runs ``call``."""
    return (f"import sys; sys.path.insert(0, {ROOT!r}); "
            f"from benchmarks import crash_trials as K; {call}")


def _ready():
    print("ready", flush=True)


def writer_setup(folder):
    path = os.path.join(folder, "epoch.h5")
    rng = np.random.default_rng(0)
    gradscore.write_epoch(path, labels=rng.integers(0, 4, 100),
                          logits=rng.normal(size=(100, 4)), epoch=1)
    old = open(path, "rb").read()
    # The reference run, in this process, timed from "ready" on.
    t = []
    writer_child(path, ready=lambda: t.append(time.perf_counter()))
    work_time = time.perf_counter() - t[0]
    ref = gradscore.read_epoch(path)
    with open(path, "wb") as fh:
        fh.write(old)
    return {"path": path, "old": old, "ref": ref, "work_time": work_time}


def _same_epoch(a, b):
    return (np.array_equal(a.labels, b.labels) and np.array_equal(a.logits, b.logits)
            and np.array_equal(a.features, b.features) and np.array_equal(a.ids, b.ids)
            and a.epoch == b.epoch)


def _run_writer(path):
    return subprocess.Popen([PY, "-c", _child(f"K.writer_child({path!r}, ready=K._ready)")],
                            stdout=subprocess.PIPE, text=True)


def writer_trial(state, rng):
    path, folder = state["path"], os.path.dirname(state["path"])
    with open(path, "wb") as fh:
        fh.write(state["old"])
    p = _run_writer(path)
    p.stdout.readline()  # "ready": imports and data made
    delay = rng.uniform(0, 1.05) * state["work_time"]
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    code = p.wait()
    got = open(path, "rb").read()
    if got == state["old"]:
        outcome = "old intact"
    elif _same_epoch(gradscore.read_epoch(path), state["ref"]):
        outcome = "new complete"
    else:
        raise AssertionError(f"after SIGKILL at {delay:.2f}s {path} is neither the earlier "
                             "export nor the complete new one")
    # No other file may pass for a complete export unless it is one: a kill
    # between closing the temporary file and renaming it leaves a complete
    # export under the hidden temporary name.
    for other in os.listdir(folder):
        full = os.path.join(folder, other)
        if full == path:
            continue
        try:
            left = gradscore.read_epoch(full)
        except GradscoreError:
            os.unlink(full)
            continue
        os.unlink(full)
        if not _same_epoch(left, state["ref"]):
            raise AssertionError(f"{full}, left by a killed writer, reads as an export "
                                 "but is not the complete one")
        outcome += ", complete temporary file left"
    p = _run_writer(path)
    p.wait()
    if not _same_epoch(gradscore.read_epoch(path), state["ref"]):
        raise AssertionError("the rerun after a kill wrote a different export")
    return outcome if code == -signal.SIGKILL else outcome + " (exited first)"


# --------------------------------------------------------------- schedule

SCHED_EPOCHS = 12


def schedule_child(state_path, ready=None):
    """What the killed process runs: a drop schedule saving state each epoch."""
    from gradscore.schedule import DropSchedule
    sched = DropSchedule(warmup=1, freq=1, stop=SCHED_EPOCHS, state_path=state_path,
                         method="knn-density", drop_fraction=0.02)
    if ready:
        ready()
    for epoch in range(1, SCHED_EPOCHS + 1):
        if not sched.due(epoch):
            continue
        rng = np.random.default_rng(epoch)
        labels = np.repeat(np.arange(4), 500)
        logits = rng.normal(size=(2000, 4)) + 3 * np.eye(4)[labels]
        sched.step(epoch, labels, logits)


def schedule_setup(folder):
    state_path = os.path.join(folder, "state.json")
    t = []
    schedule_child(state_path, ready=lambda: t.append(time.perf_counter()))
    work_time = time.perf_counter() - t[0]
    with open(state_path) as fh:
        ref = json.load(fh)
    os.unlink(state_path)
    return {"state": state_path, "ref": ref, "work_time": work_time}


def _run_schedule(path):
    return subprocess.Popen([PY, "-c", _child(f"K.schedule_child({path!r}, ready=K._ready)")],
                            stdout=subprocess.PIPE, text=True)


def schedule_trial(state, rng):
    path = state["state"]
    if os.path.exists(path):
        os.unlink(path)
    p = _run_schedule(path)
    p.stdout.readline()
    delay = rng.uniform(0, 1.05) * state["work_time"]
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    code = p.wait()
    ref = state["ref"]
    if not os.path.exists(path):
        outcome = "no state yet"
    else:
        with open(path) as fh:
            doc = json.load(fh)  # a torn file would fail here
        k = len(doc["history"])
        if doc["history"] != ref["history"][:k]:
            raise AssertionError("the saved history is not a prefix of the uninterrupted run's")
        if k == len(ref["history"]) and doc["keep_ids"] != ref["keep_ids"]:
            raise AssertionError("a finished state holds a different keep-list")
        outcome = "complete" if k == len(ref["history"]) else "resumable"
    p = _run_schedule(path)
    p.wait()
    with open(path) as fh:
        doc = json.load(fh)
    if doc != ref:
        raise AssertionError("the resumed schedule ended with a different state")
    for tmp in glob.glob(os.path.join(os.path.dirname(path), ".state.json.*.tmp")):
        os.unlink(tmp)
    return outcome if code == -signal.SIGKILL else outcome + " (exited first)"


KINDS = {"score": (score_setup, score_trial), "writer": (writer_setup, writer_trial),
         "schedule": (schedule_setup, schedule_trial)}


def run(kind, trials, seed=0, folder=None):
    """Run ``trials`` kills of ``kind``; returns {outcome: count}."""
    setup, trial = KINDS[kind]
    rng = np.random.default_rng([seed, sorted(KINDS).index(kind)])
    with tempfile.TemporaryDirectory(prefix=f"gradscore-crash-{kind}-", dir=folder) as tmp:
        state = setup(tmp)
        counts = {}
        for _ in range(trials):
            outcome = trial(state, rng)
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100, help="kills per kind")
    ap.add_argument("--kinds", nargs="+", default=sorted(KINDS), choices=sorted(KINDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the counts here")
    a = ap.parse_args()
    report = {}
    for kind in a.kinds:
        t = time.perf_counter()
        counts = run(kind, a.trials, a.seed)
        report[kind] = {"trials": a.trials, "outcomes": counts,
                        "seconds": round(time.perf_counter() - t, 1)}
        print(kind, json.dumps(report[kind]), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
