"""A small Lightning run on scikit-learn's digits, shared by the Lightning tests.

Run as a script it trains under the DDP strategy on 2 CPU processes (gloo)
and writes, per rank, the ids each epoch's training batches held:
``python tests/lightning_digits.py OUT_DIR`` (Lightning starts rank 1 by
running the same command again).
"""

import json
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from sklearn.datasets import load_digits

from gradscore.integrations.lightning import GradscoreCallback
from gradscore.integrations.torch import WithIds
from gradscore.schedule import DropSchedule


def digits_set(n=None):
    x, y = load_digits(return_X_y=True)
    if n is not None:
        x, y = x[:n], y[:n]
    return WithIds(TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32),
                                 torch.tensor(y)))


class DigitsModule(pl.LightningModule):
    """An MLP whose training steps record the ids they see, per epoch."""

    def __init__(self, train_set, callback, batch_size=64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, 10))
        self.train_set = train_set
        self.callback = callback
        self.batch_size = batch_size
        self.seen = {}

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        ids, x, y = batch
        self.seen.setdefault(self.current_epoch + 1, []).extend(ids.tolist())
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        sampler = self.callback.make_sampler(len(self.train_set), seed=0)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler)


def trainer(callbacks, max_epochs, **kw):
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", callbacks=callbacks,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **kw)


def main(out_dir):
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    train_set = digits_set(600)
    schedule = DropSchedule(warmup=2, freq=2, stop=2,
                            state_path=os.path.join(out_dir, "schedule.json"), fraction=0.2)
    callback = GradscoreCallback(train_set, out_dir, schedule=schedule, batch_size=256)
    module = DigitsModule(train_set, callback, batch_size=32)
    t = trainer([callback], 3, strategy="ddp", devices=2, use_distributed_sampler=False)
    t.fit(module)
    rank = t.global_rank
    with open(os.path.join(out_dir, f"seen.rank{rank}.json"), "w") as fh:
        json.dump({"seen": {str(k): v for k, v in module.seen.items()},
                   "keep": np.asarray(schedule.keep_ids).tolist(),
                   "world_size": t.world_size}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
