"""Crash consistency and concurrent writers, with real processes.

SIGKILL at random points (a few trials each here; the long run with many:
benchmarks/crash_trials.py, figures in docs/reliability.md): the earlier
output stays intact byte for byte or the new one is complete, nothing else
looks complete, and a rerun ends where an uninterrupted run ends.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import gradscore

from benchmarks import crash_trials as K  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

OK = {"score": {"old intact", "new complete"}, "writer": {"old intact", "new complete"},
      "schedule": {"no state yet", "resumable", "complete"}}


@pytest.mark.parametrize("kind,trials", [("writer", 1), ("schedule", 1), ("score", 1)])
def test_sigkill_leaves_old_or_complete_output_and_rerun_finishes(tmp_path, kind, trials):
    counts = K.run(kind, trials, seed=12345, folder=str(tmp_path))
    assert sum(counts.values()) == trials
    for outcome in counts:
        assert outcome.split(",")[0].replace(" (exited first)", "") in OK[kind], outcome


def test_two_score_processes_on_one_output_one_wins_whole(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4)) + 4 * np.eye(4)[labels]
    export = tmp_path / "e.h5"
    gradscore.write_epoch(export, labels=labels, logits=logits)
    runs = {"a": ["--method", "knn-density", "--drop-fraction", "0.2"],
            "b": ["--method", "knn-density", "--drop-fraction", "0.05"]}
    expected = {}
    for name, args in runs.items():
        ref = tmp_path / f"ref-{name}.keep.txt"
        gradscore.score_files(export, output=ref, method="knn-density",
                              drop_fraction=float(args[-1]))
        expected[name] = ref.read_bytes()
    assert expected["a"] != expected["b"]
    out = tmp_path / "out.keep.txt"
    procs = [subprocess.Popen([sys.executable, "-m", "gradscore_cli.main", "score", str(export),
                               "-o", str(out), "-q", *args], stderr=subprocess.PIPE)
             for args in runs.values()]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    assert out.read_bytes() in (expected["a"], expected["b"])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
