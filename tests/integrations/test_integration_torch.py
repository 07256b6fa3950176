"""PyTorch integration: export through a forward hook, DDP shards, keep-list samplers.

Tiny MLPs train on load_digits for a couple of epochs; every export is
scored through the real CLI or score_files, and the next epoch is checked
to see exactly the kept ids.
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")
# Tiny models on a shared 2-core machine: more threads only contend.
torch.set_num_threads(1)

from click.testing import CliRunner  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402

from gradscore.errors import GradscoreError  # noqa: E402
from gradscore.integrations import shard_paths  # noqa: E402
from gradscore.integrations.torch import (KeepSampler, KeepSubset, WithIds,  # noqa: E402
                                          export_epoch)
from gradscore.io import read_epoch, read_keeplist  # noqa: E402
from gradscore.schedule import DropSchedule  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    return torch.from_numpy((x / 16.0).astype(np.float32)), torch.from_numpy(y)


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                               torch.nn.Dropout(0.1), torch.nn.Linear(32, 10))


def train_epoch(model, loader, opt):
    """One epoch; returns the ids the model was trained on, in order."""
    model.train()
    seen = []
    for ids, xb, yb in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        seen.extend(ids.tolist())
    return seen


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    model = make_model()
    ds = WithIds(TensorDataset(x, y))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        train_epoch(model, DataLoader(ds, batch_size=64, shuffle=True, generator=g), opt)
    return model, ds


def score_cli(*args):
    res = CliRunner().invoke(cli, ["score", "-q", *map(str, args)])
    assert res.exit_code == 0, res.output
    return res


def test_export_matches_a_plain_forward_pass(tmp_path, digits, trained):
    x, y = digits
    model, ds = trained
    model.train()
    model[2].eval()  # a module in its own mode must come back as it was
    loader = DataLoader(ds, batch_size=100, shuffle=True)
    path = export_epoch(model, loader, tmp_path / "epoch_002.h5", epoch=2)
    assert path == os.fspath(tmp_path / "epoch_002.h5")
    assert model.training and model[0].training and not model[2].training
    assert not model[3]._forward_hooks
    ep = read_epoch(path)
    np.testing.assert_array_equal(ep.ids, np.arange(len(y)))
    np.testing.assert_array_equal(ep.labels, y.numpy())
    model.eval()
    with torch.no_grad():
        feats = model[:3](x).numpy()
        logits = model(x).numpy()
    np.testing.assert_allclose(ep.features, feats, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ep.logits, logits, rtol=1e-5, atol=1e-5)
    assert ep.epoch == 2 and ep.num_classes == 10


class SoftmaxHead(torch.nn.Module):
    """The last Linear is not last in forward: a softmax follows, and a
    decoy Linear is registered after it."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 10)
        self.decoy = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.softmax(self.head(self.body(x)), dim=1)


def test_named_layer_gives_logits_not_probabilities(tmp_path, digits):
    x, y = digits
    torch.manual_seed(0)
    model = SoftmaxHead()
    loader = DataLoader(WithIds(TensorDataset(x[:300], y[:300])), batch_size=128)
    ep = read_epoch(export_epoch(model, loader, tmp_path / "e.h5", layer="head"))
    with torch.no_grad():
        np.testing.assert_allclose(ep.logits, model.head(model.body(x[:300])).numpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(GradscoreError, match=r"layer 'nope' is not a submodule.*'head'"):
        export_epoch(model, loader, tmp_path / "f.h5", layer="nope")
    with pytest.raises(GradscoreError, match=r"layer 'body' is a Sequential, not nn.Linear"):
        export_epoch(model, loader, tmp_path / "f.h5", layer="body")
    # Default = last registered Linear = the decoy, which never runs.
    with pytest.raises(GradscoreError, match=r"layer 'decoy' ran 0 times"):
        export_epoch(model, loader, tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


class KeywordCall(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(input=x * 2)


def test_layer_called_with_a_keyword_argument(tmp_path, digits):
    x, y = digits
    model = KeywordCall()
    loader = DataLoader(WithIds(TensorDataset(x[:50], y[:50])), batch_size=20)
    ep = read_epoch(export_epoch(model, loader, tmp_path / "e.h5"))
    np.testing.assert_allclose(ep.features, (x[:50] * 2).numpy(), rtol=1e-6)


def test_failure_mid_epoch_leaves_no_file_and_restores_mode(tmp_path, digits, trained):
    x, y = digits
    model, ds = trained
    model.train()
    calls = []

    def batch_fn(batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return batch

    path = tmp_path / "epoch.h5"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_epoch(model, DataLoader(ds, batch_size=100), path, batch_fn=batch_fn)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["epoch.h5"]
    assert all(m.training for m in model.modules())
    assert not model[3]._forward_hooks
    with pytest.raises(GradscoreError, match=r"drop_last=True"):
        export_epoch(model, DataLoader(ds, batch_size=100, drop_last=True), path)
    with pytest.raises(GradscoreError, match=r"expects batches \(ids, inputs, labels\)"):
        export_epoch(model, DataLoader(TensorDataset(x, y), batch_size=100), path)


def test_end_to_end_cli_then_sampler_trains_only_kept_ids(tmp_path, digits):
    x, y = digits
    n = len(y)
    model = make_model(1)
    ds = WithIds(TensorDataset(x, y))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    sampler = KeepSampler(n, seed=3)
    loader = DataLoader(ds, batch_size=64, sampler=sampler)
    export_loader = DataLoader(ds, batch_size=256)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        seen = train_epoch(model, loader, opt)
        assert sorted(seen) == list(range(n))
    path = export_epoch(model, export_loader, tmp_path / "epoch_002.h5", epoch=2)
    score_cli(path, "-o", tmp_path / "keep.txt")
    keep = read_keeplist(tmp_path / "keep.txt")
    assert 0 < n - keep.size < n // 2
    sampler.reload(tmp_path / "keep.txt")
    sampler.set_epoch(3)
    seen = train_epoch(model, loader, opt)
    assert sorted(seen) == keep.tolist()
    # Cumulative second round through the CLI's --previous.
    path = export_epoch(model, export_loader, tmp_path / "epoch_003.h5", epoch=3)
    score_cli(path, "-o", tmp_path / "keep3.txt", "--previous", tmp_path / "keep.txt")
    keep3 = read_keeplist(tmp_path / "keep3.txt")
    assert set(keep3) <= set(keep)
    sampler.reload(tmp_path / "keep3.txt")
    assert sorted(train_epoch(model, loader, opt)) == keep3.tolist()


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_shards_read_back_as_one_epoch(tmp_path, digits, trained, world_size):
    x, y = digits
    model, ds = trained
    n = len(y)
    assert n % world_size  # DistributedSampler pads: the export must not repeat ids
    whole = read_epoch(export_epoch(model, DataLoader(ds, batch_size=200), tmp_path / "one.h5"))
    written = []
    for rank in range(world_size):
        sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=7)
        loader = DataLoader(ds, batch_size=50, sampler=sampler)
        written.append(export_epoch(model, loader, tmp_path / "epoch_004.h5", epoch=4,
                                    rank=rank, world_size=world_size))
    assert written == shard_paths(tmp_path / "epoch_004.h5", world_size)
    assert written[1].endswith("epoch_004.rank1.h5")
    assert not (tmp_path / "epoch_004.h5").exists()
    sizes = [read_epoch(p).labels.size for p in written]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    joined = read_epoch(written)
    np.testing.assert_array_equal(joined.ids, whole.ids)
    np.testing.assert_array_equal(joined.labels, whole.labels)
    np.testing.assert_allclose(joined.features, whole.features, rtol=1e-5, atol=1e-5)
    # Score the shards together, as `gradscore score shard-*.h5` does.
    score_cli(*written, "-o", tmp_path / "keep.npy")
    keep = read_keeplist(tmp_path / "keep.npy")
    assert keep.size < n
    # Every rank trains on its part of the keep-list; together exactly it.
    per_rank = []
    for rank in range(world_size):
        s = KeepSampler(n, tmp_path / "keep.npy", num_replicas=world_size, rank=rank, seed=5)
        s.set_epoch(5)
        per_rank.append(train_epoch(model, DataLoader(ds, batch_size=64, sampler=s),
                                    torch.optim.SGD(model.parameters(), lr=0.0)))
    assert len({len(p) for p in per_rank}) == 1
    flat = sum(per_rank, [])
    assert set(flat) == set(keep.tolist())
    assert len(flat) - keep.size == (-keep.size) % world_size  # only the padding repeats


def test_export_refuses_a_sampler_of_another_rank(tmp_path, trained):
    model, ds = trained
    sampler = DistributedSampler(ds, num_replicas=2, rank=1)
    with pytest.raises(GradscoreError, match=r"DistributedSampler has rank=1, num_replicas=2 "
                                             r"but export_epoch was given rank=0"):
        export_epoch(model, DataLoader(ds, sampler=sampler), tmp_path / "e.h5",
                     rank=0, world_size=2)
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, drop_last=True)
    with pytest.raises(GradscoreError, match=r"drop_last=True, which leaves examples out"):
        export_epoch(model, DataLoader(ds, sampler=sampler), tmp_path / "e.h5",
                     rank=0, world_size=2)
    with pytest.raises(GradscoreError, match=r"'rank' must be < world_size=2; got 2"):
        export_epoch(model, DataLoader(ds), tmp_path / "e.h5", rank=2, world_size=2)


def test_sampler_order_is_seeded_per_epoch_and_partitioned():
    keep = np.array([1, 3, 4, 8, 9, 12, 15])
    a = KeepSampler(20, keep, seed=1)
    b = KeepSampler(20, keep, seed=1)
    a.set_epoch(0), b.set_epoch(0)
    assert list(a) == list(b) and sorted(a) == keep.tolist()
    orders = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        orders.add(tuple(a))
    assert len(orders) > 1
    assert list(KeepSampler(20, keep, shuffle=False)) == keep.tolist()
    parts = [list(KeepSampler(20, keep, shuffle=False, num_replicas=3, rank=r))
             for r in range(3)]
    assert parts == [[1, 8, 15], [3, 9, 1], [4, 12, 3]]  # padded from the start
    parts = [list(KeepSampler(20, keep, shuffle=False, num_replicas=3, rank=r,
                              drop_last=True)) for r in range(3)]
    assert parts == [[1, 8], [3, 9], [4, 12]]
    assert len(KeepSampler(20, keep, num_replicas=3, rank=0)) == 3


def test_sampler_and_subset_reload_and_string_ids(tmp_path):
    ids = np.array([f"ex-{i}" for i in range(10)], dtype=object)
    path = tmp_path / "keep.txt"
    path.write_text("ex-2\nex-7\n")
    s = KeepSampler(ids, path, shuffle=False)
    assert list(s) == [2, 7]
    path.write_text("ex-7\n")
    s.reload()
    assert list(s) == [7]
    s.reload(np.array(["ex-0", "ex-9"]))
    assert list(s) == [0, 9]
    with pytest.raises(GradscoreError, match=r"reload\(\) without a keep-list"):
        s.reload()
    with pytest.raises(GradscoreError, match=r"keep ids has 1 id\(s\) that the export lacks "
                                             r"\(first: 'ex-99'\)"):
        s.reload(np.array(["ex-99"]))
    data = TensorDataset(torch.arange(10) * 10)
    sub = KeepSubset(data, path, ids=ids)
    assert [int(v[0]) for v in sub] == [70]
    path.write_text("ex-1\nex-3\n")
    sub.reload()
    assert [int(v[0]) for v in sub] == [10, 30]
    with pytest.raises(GradscoreError, match=r"'rank' must be < num_replicas=2; got 2"):
        KeepSampler(10, num_replicas=2, rank=2)


def test_string_ids_round_trip_through_export(tmp_path, digits, trained):
    x, y = digits
    model, _ = trained
    names = np.array([f"digit-{i:05d}" for i in range(len(y))], dtype=object)
    ds = WithIds(TensorDataset(x, y), ids=names)
    path = export_epoch(model, DataLoader(ds, batch_size=300, shuffle=True), tmp_path / "e.h5")
    ep = read_epoch(path)
    assert ep.ids.dtype == object and sorted(ep.ids) == sorted(names)
    score_cli(path, "-o", tmp_path / "keep.json")
    keep = read_keeplist(tmp_path / "keep.json")
    s = KeepSampler(names, keep, seed=0)
    got = [names[i] for i in s]
    assert sorted(got) == sorted(keep.tolist())


def test_drop_schedule_drives_a_training_loop(tmp_path, digits):
    x, y = digits
    n = len(y)
    model = make_model(2)
    ds = WithIds(TensorDataset(x, y))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    sched = DropSchedule(warmup=1, freq=2, stop=3, state_path=tmp_path / "sched.json",
                         fraction=0.2)
    sampler = KeepSampler(n, sched.keep_ids, seed=0)
    loader = DataLoader(ds, batch_size=64, sampler=sampler)
    expected = set(range(n))
    for epoch in range(1, 6):
        sampler.set_epoch(epoch)
        assert set(train_epoch(model, loader, opt)) == expected
        if sched.due(epoch):
            path = export_epoch(model, DataLoader(ds, batch_size=256),
                                tmp_path / f"epoch_{epoch:03d}.h5", epoch=epoch)
            sampler.reload(sched.step_files(epoch, path))
            assert set(sched.keep_ids) < expected
            expected = set(sched.keep_ids.tolist())
    assert sched.done == [1, 3]
    assert sorted(os.listdir(tmp_path)) == ["epoch_001.h5", "epoch_001.keep.txt",
                                            "epoch_003.h5", "epoch_003.keep.txt",
                                            "sched.json"]
