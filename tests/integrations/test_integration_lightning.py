"""The Lightning callback: after a scoring, the next epochs train on exactly the kept ids."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("sklearn")

import lightning.pytorch as pl  # noqa: E402

import gradscore  # noqa: E402
from gradscore import GradscoreError  # noqa: E402
from gradscore.integrations.lightning import GradscoreCallback  # noqa: E402
from gradscore.schedule import DropSchedule  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lightning_digits import DigitsModule, digits_set, trainer  # noqa: E402

N = 600


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_epochs_after_scoring_see_exactly_the_kept_ids(tmp_path):
    schedule = DropSchedule(warmup=2, freq=2, stop=4,
                            state_path=str(tmp_path / "schedule.json"), fraction=0.2)
    pl.seed_everything(0, verbose=False)
    train_set = digits_set(N)
    callback = GradscoreCallback(train_set, str(tmp_path), schedule=schedule, batch_size=256)
    module = DigitsModule(train_set, callback)
    trainer([callback], 5, devices=1).fit(module)

    assert schedule.done == [2, 4]
    keep2 = gradscore.read_keeplist(str(tmp_path / "epoch_002.keep.txt"))
    keep4 = gradscore.read_keeplist(str(tmp_path / "epoch_004.keep.txt"))
    assert callback.keeplists == [str(tmp_path / "epoch_002.keep.txt"),
                                  str(tmp_path / "epoch_004.keep.txt")]
    assert 0 < keep4.size < keep2.size < N  # something was dropped, cumulatively
    assert set(keep4) <= set(keep2)
    everyone = list(range(N))
    # Each epoch draws every allowed id exactly once (one process: no padding).
    assert sorted(module.seen[1]) == everyone and sorted(module.seen[2]) == everyone
    assert sorted(module.seen[3]) == keep2.tolist()
    assert sorted(module.seen[4]) == keep2.tolist()
    assert sorted(module.seen[5]) == keep4.tolist()
    # The exports hold every example, dropped ones too.
    assert gradscore.describe(str(tmp_path / "epoch_004.h5"))["n"] == N


def test_resume_from_a_lightning_checkpoint(tmp_path):
    # No state file: only the checkpoint carries the schedule across.
    run = tmp_path / "run"
    run.mkdir()
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_top_k=-1,
                                        every_n_epochs=1, save_on_train_epoch_end=True,
                                        filename="{epoch}")
    schedule = DropSchedule(warmup=2, freq=2, stop=4, fraction=0.2)
    pl.seed_everything(0, verbose=False)
    train_set = digits_set(N)
    callback = GradscoreCallback(train_set, str(run), schedule=schedule, batch_size=256)
    module = DigitsModule(train_set, callback)
    trainer([callback, ckpt], 3, devices=1, enable_checkpointing=True).fit(module)
    keep2 = schedule.keep_ids.copy()
    assert schedule.done == [2] and keep2.size < N

    # A new process: fresh schedule and callback, resumed from the end of epoch 3.
    schedule = DropSchedule(warmup=2, freq=2, stop=4, fraction=0.2)
    callback = GradscoreCallback(train_set, str(run), schedule=schedule, batch_size=256)
    module = DigitsModule(train_set, callback)
    trainer([callback], 5, devices=1).fit(module, ckpt_path=str(tmp_path / "ckpt" /
                                                                 "epoch=2.ckpt"))
    assert schedule.done == [2, 4]
    assert sorted(module.seen) == [4, 5]
    assert sorted(module.seen[4]) == keep2.tolist()
    assert sorted(module.seen[5]) == schedule.keep_ids.tolist()
    assert schedule.keep_ids.size < keep2.size


def test_checkpoint_of_another_schedule_is_refused(tmp_path):
    schedule = DropSchedule(warmup=2, freq=2, fraction=0.2)
    callback = GradscoreCallback(digits_set(20), str(tmp_path), schedule=schedule)
    state = callback.state_dict()
    other = GradscoreCallback(digits_set(20), str(tmp_path),
                              schedule=DropSchedule(warmup=3, freq=2, fraction=0.2))
    with pytest.raises(GradscoreError, match="saved schedule has warmup=2 but this one "
                                             "was made with warmup=3"):
        other.load_state_dict(state)
    with pytest.raises(GradscoreError, match="directory .* does not exist"):
        GradscoreCallback(digits_set(20), str(tmp_path / "nope"), schedule=schedule)


def test_ddp_two_cpu_processes(tmp_path):
    """The real DDP strategy (gloo, 2 processes): shards, rank-0 scoring, all ranks reload."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lightning_digits.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, script, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = []
    for r in (0, 1):
        with open(tmp_path / f"seen.rank{r}.json") as fh:
            ranks.append(json.load(fh))
    assert all(d["world_size"] == 2 for d in ranks)
    keep = gradscore.read_keeplist(str(tmp_path / "epoch_002.keep.txt"))
    assert 0 < keep.size < 600
    # Both ranks ended with the same keep-list: rank 0's, broadcast.
    assert ranks[0]["keep"] == ranks[1]["keep"] == keep.tolist()
    # Each rank exported its own shard, together every example once.
    shards = [str(tmp_path / f"epoch_002.rank{r}.h5") for r in (0, 1)]
    assert [gradscore.describe(s)["n"] for s in shards] == [300, 300]
    # The run report finds the shards and scoring them again gives the keep-list.
    from gradscore.report.run import write_run_report
    _, ctx = write_run_report(str(tmp_path))
    assert ctx["epochs"][0]["exports"] == ["epoch_002.rank0.h5", "epoch_002.rank1.h5"]
    assert ctx["epochs"][0]["reproduced"] is True
    for epoch, allowed in (("1", list(range(600))), ("2", list(range(600))),
                           ("3", keep.tolist())):
        a, b = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        half = -(-len(allowed) // 2)
        # Equal halves, together exactly the allowed ids; an odd count is
        # padded with one repeated id, as DistributedSampler does.
        assert len(a) == len(b) == half
        assert sorted(set(a) | set(b)) == allowed
        assert len(set(a) & set(b)) == 2 * half - len(allowed)


def test_ddp_needs_use_distributed_sampler_false(tmp_path):
    # A DDP Trainer reports world_size 2 before it launches anything.
    callback = GradscoreCallback(digits_set(20), str(tmp_path),
                                 schedule=DropSchedule(warmup=1, freq=1))
    t = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False,
                   enable_progress_bar=False, enable_model_summary=False)
    assert t.world_size == 2
    with pytest.raises(GradscoreError, match="use_distributed_sampler=False"):
        callback.setup(t, None, "fit")
    t = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False,
                   use_distributed_sampler=False, enable_progress_bar=False,
                   enable_model_summary=False)
    callback.setup(t, None, "fit")  # accepted


def test_trajectory_schedule_exports_epoch_0_as_its_reference(tmp_path):
    # A network trained from scratch: its start knows nothing, so the
    # method says so and runs as groups.
    schedule = DropSchedule(warmup=2, freq=2, stop=2, method="trajectory")
    pl.seed_everything(0, verbose=False)
    train_set = digits_set(N)
    callback = GradscoreCallback(train_set, str(tmp_path), schedule=schedule, batch_size=256)
    module = DigitsModule(train_set, callback)
    with pytest.warns(gradscore.GradscoreWarning, match="reference export gives only"):
        trainer([callback], 2, devices=1).fit(module)
    assert schedule.reference == [str(tmp_path / "epoch_000.h5")] and schedule.done == [2]
    assert gradscore.describe(str(tmp_path / "epoch_000.h5"))["n"] == N
