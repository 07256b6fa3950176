"""PyTorch Lightning: a ``Callback`` that follows a :class:`~gradscore.schedule.DropSchedule`.

On the schedule's epochs :class:`GradscoreCallback` exports the whole
training set through the LightningModule's final ``nn.Linear`` (the hook of
:func:`gradscore.integrations.torch.export_epoch`), scores it, and reloads
the :class:`~gradscore.integrations.torch.KeepSampler` it made for the
training ``DataLoader``, so the following epochs draw only kept examples.

Under Lightning's DDP strategy every rank exports its part of the data to
its own shard, rank 0 scores the shards together and broadcasts the new
state, and every rank reloads its sampler (which splits the kept examples
across ranks itself: give the ``Trainer`` ``use_distributed_sampler=False``).
The schedule's state goes into Lightning's checkpoints, so
``trainer.fit(..., ckpt_path=...)`` resumes with the keep-list of the
checkpoint.

Importing this module imports Lightning (``lightning``, or the older
``pytorch_lightning``) and torch; ``import gradscore`` does not.
"""

import os
import weakref

try:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    try:
        from lightning.pytorch import Callback
    except ImportError:
        from pytorch_lightning import Callback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradscore.integrations.lightning needs PyTorch Lightning: "
                      "pip install 'gradscore[lightning]'") from exc

from .._validation import check_int
from ..errors import GradscoreError
from . import shard_paths
from ._state import set_keep
from .torch import KeepSampler, export_epoch

__all__ = ["GradscoreCallback"]


class GradscoreCallback(Callback):
    """Export, score and restrict the training set on a ``DropSchedule``'s epochs.

    Epochs are counted as epochs completed (Lightning's ``current_epoch``
    plus one), so ``warmup=2`` scores after the second epoch and the third
    trains on the kept examples only.

    Parameters
    ----------
    export_data : torch Dataset (map-style)
        The whole training set, yielding ``(id, inputs, label)`` (see
        :class:`~gradscore.integrations.torch.WithIds`), in inference form
        (no augmentation). The callback builds its own ``DataLoader`` over
        it (under DDP with a ``DistributedSampler(shuffle=False)``).
    directory : str or path-like
        Where exports and keep-lists go; must exist (shared by all ranks).
    schedule : DropSchedule
        When to score and with which parameters. Give it a ``state_path``
        in ``directory`` to keep the state beside the keep-lists (rank 0
        writes it).
    layer : str or torch.nn.Linear, default=None
        The final layer, by module name or object; default the last
        ``nn.Linear`` registered in the LightningModule. The module's
        ``forward(inputs)`` must run it once.
    batch_size : int, default=512
        Batch size of the export.
    num_workers : int, default=0
        ``DataLoader`` workers of the export.
    batch_fn : callable, default=None
        ``batch_fn(batch) -> (ids, inputs, labels)`` for other layouts.
    filename : str, default="epoch_{epoch:03d}.h5"
        Export name, formatted with ``epoch``; under DDP each rank writes
        ``epoch_002.rank0.h5``, ... The keep-list is ``<stem>.keep.txt``.
    keep_exports : bool, default=True
        False deletes each export after scoring (keep-lists stay).

    Attributes
    ----------
    keeplists : list of str
        Keep-lists written in this process (rank 0), in order.
    exports : list of str
        Files (this rank's shards) exported in this process.
    """

    def __init__(self, export_data, directory, *, schedule, layer=None, batch_size=512,
                 num_workers=0, batch_fn=None, filename="epoch_{epoch:03d}.h5",
                 keep_exports=True):
        super().__init__()
        self.export_data = export_data
        self.directory = os.fspath(directory)
        if not os.path.isdir(self.directory):
            raise GradscoreError(f"directory {self.directory} does not exist")
        self.schedule = schedule
        self.layer = layer
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self.batch_fn = batch_fn
        self.filename = filename
        self.keep_exports = bool(keep_exports)
        self.keeplists = []
        self.exports = []
        self._samplers = weakref.WeakSet()
        self._restored = False

    # -- the training side -----------------------------------------------------

    def make_sampler(self, ids, *, shuffle=True, seed=0, drop_last=False):
        """A :class:`~gradscore.integrations.torch.KeepSampler` this callback keeps current.

        Call it in ``train_dataloader()`` and pass the result as
        ``DataLoader(sampler=...)``. It starts from the schedule's kept ids
        (all, before the first scoring) and is reloaded after every scoring
        and on resume; under DDP it reads rank and world size from
        ``torch.distributed``, which Lightning has set up by then.

        Parameters
        ----------
        ids : int or array-like of shape (n_samples,)
            The id of each position of the training dataset, or its length
            for ids ``0..n-1``; the same ids that ``export_data`` yields.
        shuffle, seed, drop_last
            As for :class:`~gradscore.integrations.torch.KeepSampler`.

        Returns
        -------
        sampler : KeepSampler
        """
        sampler = KeepSampler(ids, self.schedule.keep_ids, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)
        self._samplers.add(sampler)
        return sampler

    def _reload_samplers(self):
        for sampler in list(self._samplers):
            set_keep(sampler, self.schedule.keep_ids)

    # -- Lightning hooks ---------------------------------------------------------

    def setup(self, trainer, pl_module, stage=None):
        if trainer.world_size > 1:
            connector = getattr(trainer, "_accelerator_connector", None)
            if getattr(connector, "use_distributed_sampler", False):
                raise GradscoreError(
                    "GradscoreCallback under a distributed strategy needs "
                    "Trainer(use_distributed_sampler=False): the KeepSampler from "
                    "make_sampler() splits the kept examples across ranks itself, and "
                    "Lightning's wrapper would split them a second time")

    def on_train_start(self, trainer, pl_module):
        if self._restored:
            self._restored = False
            if trainer.is_global_zero:
                self.schedule.save()  # the state file now says what the checkpoint says
        done = trainer.current_epoch
        if done == 0 and self.schedule.needs_reference:
            # method="trajectory": the model before training is the reference.
            inputs = self._export(trainer, pl_module, 0)
            if trainer.is_global_zero:
                self.schedule.set_reference(inputs)
        # A checkpoint saved at the end of epoch e, before this callback scored
        # it (e.g. by a ModelCheckpoint run after validation), resumes with e
        # due: the restored weights are those of the end of e, so score now.
        if done >= 1 and self.schedule.due(done):
            self._score(trainer, pl_module, done)

    def on_train_epoch_end(self, trainer, pl_module):
        done = trainer.current_epoch + 1
        if self.schedule.due(done):
            self._score(trainer, pl_module, done)

    def state_dict(self):
        return {"schedule": self.schedule.state()}

    def load_state_dict(self, state_dict):
        # The checkpoint wins over a state file that went further: training
        # resumes from the checkpoint's epoch, so it must see that epoch's
        # keep-list, and later epochs are scored again.
        self.schedule.restore(state_dict["schedule"],
                              where="the Lightning checkpoint's GradscoreCallback state")
        self._reload_samplers()
        self._restored = True

    # -- scoring -----------------------------------------------------------------

    def _export_loader(self, rank, world_size):
        sampler = None
        if world_size > 1:
            sampler = DistributedSampler(self.export_data, num_replicas=world_size,
                                         rank=rank, shuffle=False, drop_last=False)
        return DataLoader(self.export_data, batch_size=self.batch_size, shuffle=False,
                          sampler=sampler, num_workers=self.num_workers)

    def _export(self, trainer, pl_module, epoch):
        """Export on every rank; returns the export's files (all ranks' shards)."""
        rank, world = trainer.global_rank, trainer.world_size
        path = os.path.join(self.directory, self.filename.format(epoch=epoch))
        loader = self._export_loader(rank, world)
        written = export_epoch(pl_module, loader, path, layer=self.layer, epoch=epoch,
                               rank=rank, world_size=world, device=pl_module.device,
                               batch_fn=self.batch_fn)
        self.exports.append(written)
        trainer.strategy.barrier("gradscore-export")
        return shard_paths(path, world) if world > 1 else [path]

    def _score(self, trainer, pl_module, epoch):
        world = trainer.world_size
        inputs = self._export(trainer, pl_module, epoch)
        path = os.path.join(self.directory, self.filename.format(epoch=epoch))
        message = None
        if trainer.is_global_zero:
            output = os.path.splitext(path)[0] + ".keep.txt"
            try:
                self.keeplists.append(self.schedule.step_files(epoch, inputs, output=output))
                if not self.keep_exports:
                    for f in inputs:
                        os.remove(f)
                message = {"ok": True, "state": self.schedule.state()}
            except Exception as exc:  # the other ranks must not wait forever
                message = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                if world == 1:
                    raise
                trainer.strategy.broadcast(message, src=0)
                raise
        message = trainer.strategy.broadcast(message, src=0)
        if not message["ok"]:
            raise GradscoreError(f"rank 0 failed to score epoch {epoch}: {message['error']}")
        if not trainer.is_global_zero:
            self.schedule.restore(message["state"], where="rank 0's broadcast")
        self._reload_samplers()
        return self.schedule.keep_ids
