"""PyTorch: export an epoch through a forward hook; train on a keep-list.

Export
    :func:`export_epoch` runs the model over a ``DataLoader`` under
    ``torch.no_grad()`` in eval mode, captures the input (features) and
    output (logits) of the final ``nn.Linear`` with a forward hook, and
    streams them with the labels and ids into a schema-v1 file through
    :class:`gradscore.EpochWriter`. Under DistributedDataParallel each rank
    writes its own shard (``epoch_05.rank0.h5``, ...); the core reads the
    shards together.
Consume
    :class:`KeepSampler` draws only kept examples, reshuffled per epoch and
    partitioned across ranks like ``DistributedSampler``;
    :class:`KeepSubset` is the ``Subset`` form. Both reload a keep-list
    between epochs.

Batches are ``(ids, inputs, labels)``; :class:`WithIds` turns a dataset of
``(inputs, labels)`` into one that yields its index (or a given id) first.
Importing this module imports torch; ``import gradscore`` does not.
"""

import math
import os

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset, Sampler, Subset
    from torch.utils.data.distributed import DistributedSampler
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradscore.integrations.torch needs PyTorch: "
                      "pip install 'gradscore[torch]'") from exc

from .._validation import check_int
from ..errors import GradscoreError
from ..io.keeplist import keep_mask, read_keeplist
from ..io.writer import EpochWriter
from . import shard_path

__all__ = ["WithIds", "export_epoch", "find_last_linear", "KeepSampler", "KeepSubset"]


class WithIds(Dataset):
    """Wrap a dataset so each item starts with its id: ``(id, *item)``.

    Parameters
    ----------
    dataset : torch Dataset (map-style)
        Items are tuples such as ``(inputs, label)``; a non-tuple item
        becomes ``(id, item)``.
    ids : array-like of shape (len(dataset),), default=None
        Int or str id of each position; default the position itself.
    """

    def __init__(self, dataset, ids=None):
        self.dataset = dataset
        if ids is not None:
            ids = np.asarray(ids)
            if ids.shape != (len(dataset),):
                raise GradscoreError(f"ids must have shape ({len(dataset)},) to match the "
                                     f"dataset; got {ids.shape}")
        self.ids = ids

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        i = index if self.ids is None else self.ids[index]
        i = i.item() if isinstance(i, np.generic) else i
        return (i, *item) if isinstance(item, tuple) else (i, item)


def find_last_linear(model):
    """Name and module of the last ``nn.Linear`` registered in ``model``.

    Returns
    -------
    name : str
    layer : torch.nn.Linear
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            found = (name, module)
    if found is None:
        raise GradscoreError(f"{type(model).__name__} has no nn.Linear module; name the "
                             "final layer with 'layer='")
    return found


def _resolve_layer(model, layer):
    if layer is None:
        return find_last_linear(model)
    if isinstance(layer, torch.nn.Module):
        return type(layer).__name__, layer
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        inner = getattr(model, "module", None)  # DistributedDataParallel / DataParallel
        try:
            module = inner.get_submodule(layer) if inner is not None else None
        except AttributeError:
            module = None
        if module is None:
            names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
            raise GradscoreError(f"layer {layer!r} is not a submodule of the model "
                                 f"(its nn.Linear modules: {names})") from None
    return layer, module


def _to_device(x, device):
    if torch.is_tensor(x):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _numpy_ids(ids):
    if torch.is_tensor(ids):
        return ids.detach().cpu().numpy()
    return np.asarray(list(ids) if isinstance(ids, (list, tuple)) else ids)


def _split_batch(batch):
    if not isinstance(batch, (list, tuple)) or len(batch) != 3:
        raise GradscoreError(
            "export_epoch expects batches (ids, inputs, labels), e.g. from a WithIds "
            f"dataset; got {type(batch).__name__}"
            f"{' of length ' + str(len(batch)) if isinstance(batch, (list, tuple)) else ''}"
            "; give batch_fn= to unpack other batches")
    return batch


def _dist_rank_world():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _shard_limit(loader, rank, world_size):
    """Rows this rank may write: DistributedSampler pads every rank to the
    same length by repeating examples, and a repeated id would appear in two
    shards; the padding is the tail of the sampler's order, so cut it."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        return None
    if sampler.num_replicas != world_size or sampler.rank != rank:
        raise GradscoreError(
            f"the loader's DistributedSampler has rank={sampler.rank}, num_replicas="
            f"{sampler.num_replicas} but export_epoch was given rank={rank}, "
            f"world_size={world_size}")
    if sampler.drop_last:
        raise GradscoreError(
            "the loader's DistributedSampler has drop_last=True, which leaves examples "
            "out of every export; export with drop_last=False (padding is handled)")
    n = len(sampler.dataset)
    return len(range(rank, n, world_size))


def export_epoch(model, loader, path, *, layer=None, epoch=None, rank=None,
                 world_size=None, device=None, dtype=np.float32, batch_fn=None):
    """Export one epoch: labels, logits and final-layer features of every example.

    Runs ``model`` over ``loader`` in eval mode under ``torch.no_grad()``,
    capturing the input (features) and output (logits) of ``layer`` with a
    forward hook, and streams them to ``path`` (atomically: the file appears
    only when complete). Each module's training mode is restored afterwards,
    also when an error is raised.

    Parameters
    ----------
    model : torch.nn.Module
        May be wrapped in ``DistributedDataParallel``.
    loader : iterable of batches
        Usually a ``DataLoader`` over the whole training set (not only kept
        examples), yielding ``(ids, inputs, labels)``; see :class:`WithIds`.
        Must not drop its last batch.
    path : str or path-like
        Output file. When ``world_size > 1`` this rank writes
        :func:`gradscore.integrations.shard_path` ``(path, rank)`` instead.
    layer : str or torch.nn.Linear, default=None
        The final linear layer, by module name (``"head.fc"``) or object;
        default the last ``nn.Linear`` registered in the model. It must run
        once per forward pass, on 2-D input ``(batch, n_features)``.
    epoch : int, default=None
        Stored in the file.
    rank, world_size : int, default=None
        This process's rank and the number of ranks; default from
        ``torch.distributed`` when initialised, else 0 and 1. When the
        loader's sampler is a ``DistributedSampler`` it must agree; its
        padding (repeated examples) is not written.
    device : torch.device, default=None
        Where inputs go; default the device of the model's first parameter.
    dtype : numpy dtype, default=numpy.float32
        Storage dtype of logits and features (float16 halves the file).
    batch_fn : callable, default=None
        ``batch_fn(batch) -> (ids, inputs, labels)`` for other batch layouts.
        The model is called as ``model(inputs)``.

    Returns
    -------
    path : str
        The file written (this rank's shard under DDP).

    Examples
    --------
    >>> import torch, numpy as np
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from gradscore.integrations.torch import WithIds, export_epoch
    >>> x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                             torch.nn.Linear(8, 3))
    >>> loader = DataLoader(WithIds(TensorDataset(x, y)), batch_size=8)
    >>> export_epoch(model, loader, "/tmp/gs_doc_epoch.h5", epoch=1)
    '/tmp/gs_doc_epoch.h5'
    """
    dist_rank, dist_world = _dist_rank_world()
    rank = dist_rank if rank is None else check_int("rank", rank, minimum=0)
    world_size = dist_world if world_size is None else check_int("world_size", world_size,
                                                                 minimum=1)
    if rank >= world_size:
        raise GradscoreError(f"'rank' must be < world_size={world_size}; got {rank}")
    if getattr(loader, "drop_last", False):
        raise GradscoreError("the loader has drop_last=True, which leaves examples out of "
                             "the export; use a loader with drop_last=False")
    out = shard_path(path, rank) if world_size > 1 else os.fspath(path)
    limit = _shard_limit(loader, rank, world_size)
    split = batch_fn or _split_batch
    seen = 0
    # The writer takes its layout from the first batch and publishes the
    # file only if the whole epoch went through.
    with HeadCapture(model, layer, device) as head, \
            EpochWriter(out, epoch=epoch, dtype=dtype) as writer:
        name = head.name
        for batch in loader:
            ids, inputs, labels = split(batch)
            (feats, logits), _ = head.forward(_to_device(inputs, head.device))
            if feats.ndim != 2:
                raise GradscoreError(
                    f"layer {name!r} got input of shape {tuple(feats.shape)}; export "
                    "needs 2-D (batch, n_features) input to the final layer")
            ids = _numpy_ids(ids)
            labels = _numpy_ids(labels)
            feats = feats.float().cpu().numpy()
            logits = logits.float().cpu().numpy()
            if limit is not None:
                # Keep only the first `limit` rows of this rank's order.
                take = max(0, min(labels.shape[0], limit - seen))
                seen += labels.shape[0]
                if take == 0:
                    continue
                ids, labels, feats, logits = ids[:take], labels[:take], \
                    feats[:take], logits[:take]
            writer.append(labels, logits, feats, ids)
    return out


class HeadCapture:
    """Run a model in eval mode with no grad, capturing its final linear layer.

    The context resolves ``layer`` (:func:`_resolve_layer`), hooks it, and on
    exit removes the hook and restores every module's training flag.
    :meth:`forward` calls the model once and returns the layer's
    ``(input, output)``, refusing a layer that did not run exactly once.
    """

    def __init__(self, model, layer, device=None):
        self.model = model
        self.name, self.module = _resolve_layer(model, layer)
        if not isinstance(self.module, torch.nn.Linear):
            raise GradscoreError(f"layer {self.name!r} is a {type(self.module).__name__}, "
                                 "not nn.Linear")
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = device
        self._captured = []

    def _hook(self, _module, args, kwargs, output):
        x = args[0] if args else kwargs["input"]
        self._captured.append((x.detach(), output.detach()))

    def __enter__(self):
        self._modes = [(m, m.training) for m in self.model.modules()]
        self._handle = self.module.register_forward_hook(self._hook, with_kwargs=True)
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        self.model.eval()
        return self

    def __exit__(self, *exc):
        self._no_grad.__exit__(*exc)
        self._handle.remove()
        for m, training in self._modes:
            m.training = training
        return False

    def forward(self, *args, **kwargs):
        """``((layer_input, layer_output), model_result)`` of one forward pass."""
        self._captured.clear()
        result = self.model(*args, **kwargs)
        if len(self._captured) != 1:
            raise GradscoreError(
                f"layer {self.name!r} ran {len(self._captured)} times in one forward pass; "
                "export needs the final layer to run exactly once")
        return self._captured[0], result


def _resolve_ids(ids):
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        return np.arange(check_int("ids", int(ids), minimum=0), dtype=np.int64)
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise GradscoreError(f"ids must be 1-D (n_samples,) or a dataset length; got "
                             f"shape {ids.shape}")
    return ids


def _resolve_keep(keep):
    if keep is None:
        return None, None
    if isinstance(keep, (str, os.PathLike)):
        return read_keeplist(keep), os.fspath(keep)
    return np.asarray(keep), None


class _KeepState:
    """The kept positions of a dataset, from a keep-list path or ids."""

    def __init__(self, ids, keep):
        self.ids = _resolve_ids(ids)
        self.path = None
        self.set(keep)

    def set(self, keep):
        keep_ids, path = _resolve_keep(keep)
        if keep_ids is None:
            self.positions = np.arange(self.ids.size, dtype=np.int64)
        else:
            source = f"keep-list {path}" if path else "keep ids"
            self.positions = np.flatnonzero(keep_mask(self.ids, keep_ids, source=source))
        self.path = path

    def reload(self, keep):
        if keep is None:
            if self.path is None:
                raise GradscoreError("reload() without a keep-list needs the last one to have "
                                     "been given as a path; pass keep= (a path or ids)")
            keep = self.path
        self.set(keep)


class KeepSampler(Sampler):
    """Sample only the kept examples: reshuffled per epoch, split across ranks.

    Yields dataset positions, so it goes to ``DataLoader(sampler=...)`` in
    place of ``RandomSampler`` or ``DistributedSampler``. Under DDP every
    rank builds it with the same ``seed`` and calls :meth:`set_epoch` with
    the same epoch; the kept positions are shuffled identically everywhere,
    padded by repeating from the start to a multiple of ``num_replicas``
    (or cut, with ``drop_last``), and rank ``r`` takes every
    ``num_replicas``-th from ``r``, as ``DistributedSampler`` does.

    Parameters
    ----------
    ids : int or array-like of shape (n_samples,)
        The id of each dataset position, or the dataset length for ids
        ``0..n-1``.
    keep : str, path-like or array-like, default=None
        A keep-list file, or the kept ids; None keeps everything.
    shuffle : bool, default=True
    seed : int, default=0
        The order at epoch ``e`` depends only on ``(seed, e)``.
    num_replicas, rank : int, default=None
        Default from ``torch.distributed`` when initialised, else 1 and 0.
    drop_last : bool, default=False

    Attributes
    ----------
    positions : ndarray of shape (n_kept,), int64
        All kept positions, in dataset order (every rank's).

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.integrations.torch import KeepSampler
    >>> s = KeepSampler(6, np.array([1, 2, 4]), shuffle=False)
    >>> list(s)
    [1, 2, 4]
    >>> s.reload(np.array([0, 5])); list(s)
    [0, 5]
    """

    def __init__(self, ids, keep=None, *, shuffle=True, seed=0, num_replicas=None,
                 rank=None, drop_last=False):
        dist_rank, dist_world = _dist_rank_world()
        self.num_replicas = dist_world if num_replicas is None else \
            check_int("num_replicas", num_replicas, minimum=1)
        self.rank = dist_rank if rank is None else check_int("rank", rank, minimum=0)
        if self.rank >= self.num_replicas:
            raise GradscoreError(f"'rank' must be < num_replicas={self.num_replicas}; "
                                 f"got {self.rank}")
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed, minimum=0)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._state = _KeepState(ids, keep)

    @property
    def positions(self):
        return self._state.positions

    def set_epoch(self, epoch):
        """Set the epoch, which (with ``seed``) fixes the next iteration's order."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def reload(self, keep=None):
        """Switch to a new keep-list (path or ids); None re-reads the last path."""
        self._state.reload(keep)

    def _total(self):
        n, r = self.positions.size, self.num_replicas
        return (n // r) * r if self.drop_last else math.ceil(n / r) * r

    def __len__(self):
        return self._total() // self.num_replicas

    def __iter__(self):
        order = self.positions
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = order[rng.permutation(order.size)]
        total = self._total()
        if total > order.size:
            order = np.concatenate([order, np.resize(order, total - order.size)])
        order = order[self.rank:total:self.num_replicas]
        return iter(order.tolist())


class KeepSubset(Subset):
    """``torch.utils.data.Subset`` of the kept examples, reloadable.

    Parameters
    ----------
    dataset : torch Dataset (map-style)
    keep : str, path-like or array-like, default=None
        A keep-list file, or the kept ids; None keeps everything.
    ids : array-like of shape (len(dataset),), default=None
        The id of each dataset position; default ``0..len(dataset)-1``.
    """

    def __init__(self, dataset, keep=None, *, ids=None):
        self._state = _KeepState(len(dataset) if ids is None else ids, keep)
        if self._state.ids.size != len(dataset):
            raise GradscoreError(f"ids has {self._state.ids.size} entries but the dataset "
                                 f"has {len(dataset)} items")
        super().__init__(dataset, self._state.positions.tolist())

    def reload(self, keep=None):
        """Switch to a new keep-list (path or ids); None re-reads the last path."""
        self._state.reload(keep)
        self.indices = self._state.positions.tolist()
