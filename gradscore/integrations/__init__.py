"""Training-loop adapters: export epochs from a framework, consume keep-lists in it.

``gradscore.integrations.torch``
    PyTorch: :func:`~gradscore.integrations.torch.export_epoch` (forward hook
    on the final ``nn.Linear``, one shard per DDP rank), ``KeepSampler`` and
    ``KeepSubset`` over a keep-list.
``gradscore.integrations.keras``
    TensorFlow/Keras: ``GradscoreCallback`` (export, score on a
    :class:`~gradscore.schedule.DropSchedule`, swap the training data in
    place), ``KeepFilter`` and ``filter_dataset`` for ``tf.data``.
``gradscore.integrations.lightning``
    PyTorch Lightning: ``GradscoreCallback`` (export, score on a
    ``DropSchedule``, reload the training sampler; DDP and checkpoints).
``gradscore.integrations.huggingface``
    Hugging Face: :func:`~gradscore.integrations.huggingface.export_epoch`
    (the classifier head's features over a ``datasets.Dataset``) and
    ``GradscoreTrainerCallback`` for ``transformers.Trainer``.

Each submodule imports its framework when it is imported itself; this
package and ``import gradscore`` need neither. NumPy, JAX and anything else
use :class:`gradscore.EpochWriter` to export, and :func:`keep_indices` (or
:func:`gradscore.keep_mask`) to turn a keep-list into row positions, for
example for Hugging Face ``datasets``: ``dataset.select(keep_indices(...))``.
"""

import os

import numpy as np

from .._validation import check_int
from ..io.keeplist import keep_mask

__all__ = ["keep_indices", "shard_path", "shard_paths"]


def keep_indices(ids, keep_ids):
    """Positions, in ``ids``' order, of the rows whose id is in ``keep_ids``.

    Parameters
    ----------
    ids : array-like of shape (n_samples,)
        The id of every row of a dataset, int or str, in row order.
    keep_ids : array-like of shape (n_kept,)
        Ids to keep, as :func:`gradscore.read_keeplist` returns them. Every
        one must occur in ``ids``; int keep ids match str ids by their
        decimal text.

    Returns
    -------
    indices : ndarray of shape (n_kept,), int64
        Increasing row positions, ready for ``dataset.select(indices)``
        (Hugging Face), ``Subset(dataset, indices)`` or ``array[indices]``.

    Raises
    ------
    GradscoreError
        If ``keep_ids`` holds an id that ``ids`` lacks.

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.integrations import keep_indices
    >>> keep_indices(np.array(["a", "b", "c", "d"]), np.array(["d", "b"]))
    array([1, 3])
    """
    return np.flatnonzero(keep_mask(ids, keep_ids)).astype(np.int64)


def shard_path(path, rank):
    """The export path of one rank's shard: ``epoch_05.h5`` -> ``epoch_05.rank0.h5``.

    Parameters
    ----------
    path : str or path-like
    rank : int

    Returns
    -------
    path : str

    Examples
    --------
    >>> from gradscore.integrations import shard_path
    >>> shard_path("run/epoch_05.h5", 3)
    'run/epoch_05.rank3.h5'
    """
    rank = check_int("rank", rank, minimum=0)
    stem, ext = os.path.splitext(os.fspath(path))
    return f"{stem}.rank{rank}{ext or '.h5'}"


def shard_paths(path, world_size):
    """Every rank's shard path of one epoch's export, rank 0 first.

    Examples
    --------
    >>> from gradscore.integrations import shard_paths
    >>> shard_paths("epoch_05.h5", 2)
    ['epoch_05.rank0.h5', 'epoch_05.rank1.h5']
    """
    world_size = check_int("world_size", world_size, minimum=1)
    return [shard_path(path, r) for r in range(world_size)]
