"""Hugging Face: export from a ``transformers`` model over a ``datasets.Dataset``;
follow a :class:`~gradscore.schedule.DropSchedule` inside ``transformers.Trainer``.

Export
    :func:`export_epoch` runs a sequence- or image-classification model over
    a dataset in eval mode under ``torch.no_grad()`` and captures the input
    and output of its classification head's final ``nn.Linear`` with a
    forward hook: the features the head uses, pooled as the model pools
    them. For heads that pool before the layer (BERT's pooler, RoBERTa's
    ``<s>`` token, DistilBERT, ViT) that is the layer's input; for
    last-token models that apply the layer to every position and pick one
    afterwards (GPT-2, Llama, Mistral ``...ForSequenceClassification``) the
    row whose output is the model's logits is taken, so the features are
    those of the very token the model scored. Ids come from a column or the
    row index.
Trainer
    :class:`GradscoreTrainerCallback` exports and scores on the schedule's
    epochs and shrinks :attr:`~GradscoreTrainerCallback.train_dataset` (a
    reloadable ``Subset``; give it to the ``Trainer`` as ``train_dataset``)
    to the kept rows, so the next epochs train only on them.
Consume elsewhere
    :func:`gradscore.integrations.keep_indices` gives the rows of a keep-list
    for ``dataset.select(...)``.

Importing this module imports torch and ``transformers``; ``import
gradscore`` does not. ``datasets`` is imported by nothing here: any
map-style dataset whose rows are dicts and that answers ``dataset[a:b]``
with a dict of columns works (a ``datasets.Dataset`` does).
"""

import inspect
import os

import numpy as np

try:
    import torch
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradscore.integrations.huggingface needs transformers and torch: "
                      "pip install 'gradscore[huggingface]'") from exc

from .._validation import check_int
from ..errors import GradscoreError
from ..io.writer import EpochWriter
from . import keep_indices
from ._state import set_keep
from .torch import HeadCapture, KeepSubset, _to_device

__all__ = ["export_epoch", "dataset_ids", "model_input_columns", "GradscoreTrainerCallback",
           "keep_indices"]

_LABEL_NAMES = ("label", "labels", "label_ids")


def _column_names(dataset):
    names = getattr(dataset, "column_names", None)
    if names is None:
        names = list(dataset[0].keys()) if len(dataset) else []
    return list(names)


def dataset_ids(dataset, id_column=None):
    """The id of every row: the ``id_column`` values, or the row index.

    Parameters
    ----------
    dataset : datasets.Dataset or map-style dataset of dict rows
    id_column : str, default=None
        Column holding unique int or str ids; None for ``0..len-1``.

    Returns
    -------
    ids : ndarray of shape (len(dataset),)
        int64, or object holding str.
    """
    n = len(dataset)
    if id_column is None:
        return np.arange(n, dtype=np.int64)
    if id_column not in _column_names(dataset):
        raise GradscoreError(f"id_column {id_column!r} is not a column of the dataset "
                             f"(columns: {_column_names(dataset)})")
    ids = np.asarray(dataset[:n][id_column] if n else [])
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "UO":
        return np.array([str(v) for v in ids.tolist()], dtype=object)
    raise GradscoreError(f"id_column {id_column!r} must hold int or str ids; got dtype "
                         f"{ids.dtype}")


def model_input_columns(model, dataset, *, exclude=()):
    """Columns of ``dataset`` that ``model.forward`` takes as arguments.

    Label columns and ``exclude`` are left out: the export feeds the model
    inputs only.
    """
    params = set(inspect.signature(model.forward).parameters)
    cols = [c for c in _column_names(dataset)
            if c in params and c not in _LABEL_NAMES and c not in exclude]
    if not cols:
        raise GradscoreError(
            f"no column of the dataset ({_column_names(dataset)}) is an argument of "
            f"{type(model).__name__}.forward; tokenize first, or name them with "
            "input_columns=")
    return cols


def _default_collate(rows, columns):
    try:
        return {c: torch.as_tensor(np.asarray([r[c] for r in rows])) for c in columns}
    except (ValueError, TypeError) as exc:
        raise GradscoreError(f"cannot stack columns {columns} into tensors ({exc}); pad the "
                             "rows to one length or give collate_fn= (e.g. "
                             "DataCollatorWithPadding(tokenizer))") from None


def _pool(name, feats, out, logits):
    """Rows of a per-position head's input that produced the model's logits."""
    if feats.ndim == 2:
        return feats, out
    if feats.ndim != 3 or out.ndim != 3 or logits is None or logits.ndim != 2:
        raise GradscoreError(
            f"layer {name!r} got input of shape {tuple(feats.shape)}; export needs 2-D "
            "(batch, n_features) input, or 3-D (batch, positions, n_features) with the "
            "model's 2-D logits picked from the layer's output")
    match = (out == logits[:, None, :]).all(dim=-1)
    found = match.any(dim=1)
    if not bool(found.all()):
        bad = torch.nonzero(~found).flatten()[:10].tolist()
        raise GradscoreError(
            f"layer {name!r} runs on every position, but in rows {bad} of the batch no "
            "position's output equals the model's logits; name the head's layer with "
            "layer=")
    # The last matching position: the token a last-token head pools.
    positions = torch.arange(out.shape[1], device=out.device)
    pos = (match * (positions + 1)).argmax(dim=1)
    rows = torch.arange(out.shape[0], device=out.device)
    return feats[rows, pos], out[rows, pos]


def export_epoch(model, dataset, path, *, label_column="label", id_column=None,
                 input_columns=None, collate_fn=None, batch_size=64, layer=None,
                 epoch=None, device=None, dtype=np.float32):
    """Export one epoch: labels, logits and head features of every row of ``dataset``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A classification model returning ``logits`` of shape
        ``(batch, n_classes)``. Each module's training mode is restored.
    dataset : datasets.Dataset or map-style dataset of dict rows
        The whole training set, tokenized (or with pixel values), in row
        order; ``dataset[a:b]`` must give a dict of columns.
    path : str or path-like
        Output file, written atomically.
    label_column : str, default="label"
        Integer class labels.
    id_column : str, default=None
        Int or str ids; None for the row index.
    input_columns : list of str, default=None
        Columns passed to ``model(**inputs)``; default those that are
        arguments of ``model.forward`` (labels excluded).
    collate_fn : callable, default=None
        ``collate_fn(list of row dicts) -> dict of tensors`` (e.g.
        ``DataCollatorWithPadding``); default stacks each input column.
    batch_size : int, default=64
    layer : str or torch.nn.Linear, default=None
        The head's final linear layer; default the last ``nn.Linear``
        registered in the model (``classifier``, ``score``, ...).
    epoch : int, default=None
        Stored in the file.
    device : torch.device, default=None
        Default the device of the model's first parameter.
    dtype : numpy dtype, default=numpy.float32
        Storage dtype of logits and features.

    Returns
    -------
    path : str
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    columns = _column_names(dataset)
    if label_column not in columns:
        raise GradscoreError(f"label_column {label_column!r} is not a column of the dataset "
                             f"(columns: {columns})")
    ids = dataset_ids(dataset, id_column)
    exclude = () if id_column is None else (id_column,)
    inputs_cols = list(input_columns) if input_columns is not None else \
        model_input_columns(model, dataset, exclude=exclude)
    out = os.fspath(path)
    n = len(dataset)
    with HeadCapture(model, layer, device) as head, \
            EpochWriter(out, epoch=epoch, dtype=dtype) as writer:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            block = dataset[start:stop]
            rows = [{c: block[c][i] for c in inputs_cols} for i in range(stop - start)]
            batch = collate_fn(rows) if collate_fn is not None else \
                _default_collate(rows, inputs_cols)
            batch = {k: v for k, v in dict(batch).items() if k not in _LABEL_NAMES}
            captured, result = head.forward(**_to_device(batch, head.device))
            logits = getattr(result, "logits", None)
            feats, head_out = _pool(head.name, *captured, logits)
            labels = np.asarray(block[label_column])
            writer.append(labels, head_out.float().cpu().numpy(),
                          feats.float().cpu().numpy(), ids[start:stop])
    return out


class GradscoreTrainerCallback(TrainerCallback):
    """Follow a ``DropSchedule`` inside ``transformers.Trainer``.

    Give the ``Trainer`` :attr:`train_dataset` (not the dataset itself) and
    this callback. On the schedule's epochs (counted as epochs completed:
    ``state.epoch``), it exports the whole ``dataset`` through the model's
    head, runs :meth:`~gradscore.schedule.DropSchedule.step_files`
    (cumulative), and reloads :attr:`train_dataset` to the kept rows: the
    ``Trainer``'s sampler reads the dataset's length at the start of every
    epoch, so the next epochs draw only kept rows.

    Parameters
    ----------
    dataset : datasets.Dataset or map-style dataset of dict rows
        The whole training set, tokenized.
    directory : str or path-like
        Where exports and keep-lists go; must exist.
    schedule : DropSchedule
        Give it a ``state_path`` to resume after a crash (the ``Trainer``'s
        own checkpoints do not carry it).
    label_column, id_column, input_columns, collate_fn, batch_size, layer
        As for :func:`export_epoch`.
    filename : str, default="epoch_{epoch:03d}.h5"
        Export name; the keep-list is ``<stem>.keep.txt``.

    Attributes
    ----------
    train_dataset : KeepSubset
        The kept rows of ``dataset`` (all before the first scoring); pass it
        as ``Trainer(train_dataset=...)``.
    ids : ndarray of shape (len(dataset),)
    keeplists, exports : list of str
        Files written, in order.
    """

    def __init__(self, dataset, directory, *, schedule, label_column="label",
                 id_column=None, input_columns=None, collate_fn=None, batch_size=64,
                 layer=None, filename="epoch_{epoch:03d}.h5"):
        self.dataset = dataset
        self.directory = os.fspath(directory)
        if not os.path.isdir(self.directory):
            raise GradscoreError(f"directory {self.directory} does not exist")
        self.schedule = schedule
        self.export_kw = dict(label_column=label_column, id_column=id_column,
                              input_columns=input_columns, collate_fn=collate_fn,
                              batch_size=check_int("batch_size", batch_size, minimum=1),
                              layer=layer)
        self.filename = filename
        self.ids = dataset_ids(dataset, id_column)
        self.train_dataset = KeepSubset(dataset, schedule.keep_ids, ids=self.ids)
        self.keeplists = []
        self.exports = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if getattr(args, "world_size", 1) > 1:
            raise GradscoreError(
                f"GradscoreTrainerCallback runs in one process; this Trainer has "
                f"world_size={args.world_size}. Export and score on one process "
                "(gradscore.integrations.huggingface.export_epoch) and restart with "
                "dataset.select(keep_indices(...))")
        set_keep(self.train_dataset, self.schedule.keep_ids)
        done = int(round(state.epoch or 0))
        if done == 0 and self.schedule.needs_reference:
            # method="trajectory": the model before training is the reference.
            self.schedule.set_reference(self._export(model, 0))
        # Resumed from a checkpoint taken at the end of epoch e before e was
        # scored: the weights are those of the end of e, so score now.
        if done >= 1 and self.schedule.due(done):
            self._score(model, done)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        done = int(round(state.epoch))
        if self.schedule.due(done):
            self._score(model, done)

    def _export(self, model, epoch):
        path = os.path.join(self.directory, self.filename.format(epoch=epoch))
        export_epoch(model, self.dataset, path, epoch=epoch, **self.export_kw)
        self.exports.append(path)
        return path

    def _score(self, model, epoch):
        path = self._export(model, epoch)
        output = os.path.splitext(path)[0] + ".keep.txt"
        self.keeplists.append(self.schedule.step_files(epoch, path, output=output))
        set_keep(self.train_dataset, self.schedule.keep_ids)
