"""Scoring on a real local Dask cluster: worker processes on 127.0.0.1, started and stopped here."""

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import gradscore
from gradscore.errors import GradscoreError
from gradscore_cli.main import main as cli

from conftest import blob_shards, write_shards

distributed = pytest.importorskip("distributed")

# Every scheduler serves HTTP (health, metrics) on 127.0.0.1, port 8787 when
# free; a second cluster, or another one on this machine, gets a random port.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use")

#: Seconds any one cluster operation may take before the test gives up.
TIMEOUT = 60


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(host="127.0.0.1", processes=True, n_workers=2,
                                  threads_per_worker=1, dashboard_address=None,
                                  worker_dashboard_address=None, timeout=TIMEOUT) as lc:
        yield lc


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster, timeout=TIMEOUT, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=TIMEOUT)
        yield c


def test_cluster_scores_shards_to_the_local_keep_list(tmp_path, client):
    paths, ids = write_shards(str(tmp_path), n=1200, c=6, n_shards=4)
    prev = tmp_path / "prev.txt"
    gradscore.write_keeplist(prev, np.sort(ids)[5:])
    local = tmp_path / "local.keep.json"
    remote = tmp_path / "dask.keep.json"
    a, _, _ = gradscore.score_files(paths, output=local, previous=prev, spill="never")
    b, _, _ = gradscore.score_files(paths, output=remote, previous=prev, client=client)
    assert local.read_bytes() == remote.read_bytes()
    assert 0 < a.keep.sum() < a.keep.size - 5
    np.testing.assert_array_equal(a.scores, b.scores)
    # The workers read the shards and wrote the spill; nothing is left of it.
    assert not any(n.startswith(".gradscore-spill-") for n in os.listdir(tmp_path))


def test_cli_scheduler_address_and_scheduler_file(tmp_path, cluster):
    paths, _ = write_shards(str(tmp_path), n=600, c=4, n_shards=2)
    sched_file = tmp_path / "scheduler.json"
    import json
    sched_file.write_text(json.dumps({"address": cluster.scheduler_address}))
    runner = CliRunner()
    r0 = runner.invoke(cli, ["score", *paths, "-o", str(tmp_path / "local.txt"), "-q"])
    r1 = runner.invoke(cli, ["score", *paths, "-o", str(tmp_path / "a.txt"), "-q",
                             "--scheduler", cluster.scheduler_address])
    r2 = runner.invoke(cli, ["score", *paths, "-o", str(tmp_path / "b.txt"), "-q",
                             "--scheduler-file", str(sched_file)])
    assert (r0.exit_code, r1.exit_code, r2.exit_code) == (0, 0, 0), (r1.output, r2.output)
    local = (tmp_path / "local.txt").read_bytes()
    assert (tmp_path / "a.txt").read_bytes() == local == (tmp_path / "b.txt").read_bytes()


def test_relative_paths_from_the_shards_folder(tmp_path, cluster, monkeypatch):
    # As a user on a shared filesystem types it: `cd` to the shards, name
    # them relatively. The workers run in another folder; the client makes
    # every path absolute before submitting anything.
    paths, _ = write_shards(str(tmp_path), n=600, c=4, n_shards=2)
    names = [os.path.basename(p) for p in paths]
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r0 = runner.invoke(cli, ["score", *names, "-o", "local.txt", "-q"])
    r1 = runner.invoke(cli, ["score", *names, "-q", "--scheduler", cluster.scheduler_address,
                             "--spill-dir", "."])
    assert (r0.exit_code, r1.exit_code) == (0, 0), r1.output
    default = os.path.splitext(names[0])[0] + ".keep.txt"
    assert (tmp_path / default).read_bytes() == (tmp_path / "local.txt").read_bytes()


def test_a_shard_no_worker_can_open_is_refused_clearly(tmp_path, client):
    paths, _ = write_shards(str(tmp_path), n=300, c=3, n_shards=2)
    missing = str(tmp_path / "elsewhere" / "shard-9.h5")
    with pytest.raises(GradscoreError, match=r"shard-9.h5: no such file \(on a Dask worker: "
                                             r"inputs and the spill folder must be on "
                                             r"storage every worker sees"):
        gradscore.score_files(paths + [missing], output=tmp_path / "k.txt", client=client)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_gives_a_clear_error(tmp_path):
    paths, _ = write_shards(str(tmp_path), n=60, c=3, n_shards=1)
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    r = CliRunner().invoke(cli, ["score", *paths, "-o", str(tmp_path / "k.txt"),
                                 "--scheduler", address, "--connect-timeout", "2"])
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: could not reach the Dask scheduler at {address} "
                               "within 2 s")
    assert "Traceback" not in r.output
    assert not (tmp_path / "k.txt").exists()
    r = CliRunner().invoke(cli, ["score", *paths, "--scheduler-file",
                                 str(tmp_path / "none.json")])
    assert r.exit_code == 1 and "none.json: no such scheduler file" in r.output


def test_a_worker_killed_mid_run_is_survived_with_the_same_keep_list(tmp_path, client):
    # Last in this file: it kills one of the shared cluster's workers (its
    # nanny starts a new one). Enough classes that the class tasks outlast
    # the kill below.
    paths, _ = write_shards(str(tmp_path), n=12_000, c=12, d=4, n_shards=4)
    local = tmp_path / "local.txt"
    gradscore.score_files(paths, output=local, spill="never")
    box = {}

    def run():
        try:
            box["result"] = gradscore.score_files(paths, output=tmp_path / "dask.txt",
                                                  client=client)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    victim = None
    deadline = time.monotonic() + TIMEOUT
    while victim is None and time.monotonic() < deadline and t.is_alive():
        for addr, keys in client.processing().items():
            if any("score_spilled_class" in str(k) for k in keys):
                victim = addr
                break
        time.sleep(0.01)
    assert victim is not None, "no class task was seen running; nothing was killed"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    t.join(TIMEOUT)
    assert not t.is_alive()
    if "error" in box:
        raise box["error"]
    assert victim not in client.scheduler_info()["workers"]  # it really died
    assert (tmp_path / "dask.txt").read_bytes() == local.read_bytes()


@pytest.mark.parametrize("method", ["groups", "deep-knn", "label-support"])
def test_cross_class_methods_on_the_cluster_match_in_memory(tmp_path, client, method,
                                                           monkeypatch):
    # Over small k-means cells, so that the approximate search's tasks run
    # on the workers too (the exact search is the same tasks with every cell).
    import gradscore.neighbors._cross as cross

    monkeypatch.setattr(cross, "EXACT_MAX_MACS", 0)
    monkeypatch.setattr(cross, "CELL_SIZE", 64)
    paths, _, _ = blob_shards(tmp_path, dtype=np.float16)
    local, remote = tmp_path / "local.keep.json", tmp_path / "dask.keep.json"
    tables = [tmp_path / "local.csv", tmp_path / "dask.csv"]
    a, _, _ = gradscore.score_files(paths, output=local, scores_path=tables[0], spill="never",
                                    method=method)
    b, _, _ = gradscore.score_files(paths, output=remote, scores_path=tables[1],
                                    client=client, method=method)
    assert local.read_bytes() == remote.read_bytes()
    assert tables[0].read_bytes() == tables[1].read_bytes()
    assert a.classes[0].neighbors == b.classes[0].neighbors == "cells"
    assert (~a.keep).sum() > 0
