"""Real epoch exports: a small network trained on mnist1d, exported at chosen epochs.

mnist1d (Greydanus, 2020) is generated offline by its package's
``make_dataset`` (no download). A 40 -> 256 -> 128 -> 10 MLP (``--hidden``) is
trained with SGD (momentum 0.9, lr 0.05, batch 128, seed-fixed) on the
training split, and after each epoch listed in ``--export`` the whole
training set goes through gradscore's PyTorch exporter (penultimate features,
logits, labels, ids = row numbers), exactly as a user's training loop would
write it. The training accuracy at each exported epoch is written beside the
export (``epoch_NN.json``).

    python benchmarks/real_exports.py --n 25000 --export 5 7
    # -> benchmarks/data/mnist1d-25000/epoch_05.h5, epoch_07.h5
    python benchmarks/real_exports.py --n 150000 --hidden 512 256 --export 5 20
    # a wider MLP on 120,000 signals: 90-96% at epoch 5, a well-fit model
    # (>= 99% training accuracy) by epoch 20

Used by ``bench_epic_reference.py`` (EPIC vs the authors' code) and the EPIC
agreement benchmark.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def mnist1d_arrays(n, seed):
    """Train inputs and labels of an mnist1d set of ``n`` samples (80% train), cached."""
    cache = os.path.join(HERE, "data", f"mnist1d-{n}-s{seed}.npz")
    if os.path.exists(cache):
        d = np.load(cache)
        return d["x"], d["y"]
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples, args.seed = n, seed
    d = make_dataset(args)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, x=d["x"].astype(np.float32), y=d["y"].astype(np.int64))
    os.replace(tmp, cache)
    return d["x"].astype(np.float32), d["y"].astype(np.int64)


def make_exports(n=25_000, epochs=(5, 7), seed=0, out=None, hidden=(256, 128)):
    """Train and export; returns the list of export paths (skips existing ones)."""
    hidden = tuple(hidden)
    tag = "" if hidden == (256, 128) else "-" + "x".join(map(str, hidden))
    out = out or os.path.join(HERE, "data", f"mnist1d-{n}{tag}")
    paths = [os.path.join(out, f"epoch_{e:02d}.h5") for e in epochs]
    if all(os.path.exists(p) for p in paths):
        return paths
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from gradscore.integrations.torch import WithIds, export_epoch

    os.makedirs(out, exist_ok=True)
    x, y = mnist1d_arrays(n, seed)
    torch.manual_seed(seed)
    widths = (x.shape[1],) + hidden
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10))
    data = WithIds(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(data, batch_size=128, shuffle=True, generator=gen)
    full = DataLoader(data, batch_size=1024, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(1, max(epochs) + 1):
        model.train()
        for _, xb, yb in train:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        if epoch in epochs:
            path = paths[list(epochs).index(epoch)]
            export_epoch(model, full, path, epoch=epoch)
            model.eval()
            with torch.no_grad():
                acc = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
            with open(os.path.splitext(path)[0] + ".json", "w") as fh:
                json.dump({"epoch": epoch, "train_accuracy": acc, "hidden": list(hidden)}, fh)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=25_000, help="mnist1d samples (80%% train)")
    ap.add_argument("--export", type=int, nargs="+", default=[5, 7], help="epochs to export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 128],
                    help="hidden layer widths of the MLP")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    paths = make_exports(a.n, tuple(a.export), a.seed, a.out, hidden=a.hidden)
    print(f"{', '.join(paths)} ({time.perf_counter() - t:.0f}s)")


if __name__ == "__main__":
    main()
