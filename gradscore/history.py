"""A run's history: how training moved each example across earlier exports.

One export says where each example sits now; earlier exports of the same
run say how it got there. :class:`History` keeps, for every row of the
export being scored and every earlier export, two numbers: the example's
own-label margin (its label's logit minus the largest other logit) and its
cross-entropy loss. Nothing else of an earlier export is kept, so memory is
8 bytes per row per earlier export, whatever the width of the logits or
features.

Rows are matched by id. The first export of the history is the *reference*
(ideally the model before training on this data: an export at epoch 0 costs
one inference pass): it must hold every id of the scored export. Later
exports may lack rows (examples dropped earlier and no longer exported) and
may hold rows the scored export lacks (dropped since), but no id the
reference lacks; an id must carry the same label everywhere. Anything else
is refused with an error naming the file, the ids and the rule.

The signals drawn from a history (:func:`margin_gain`, :func:`area_under_margin`)
and the rule that uses them are in :mod:`gradscore.selection.trajectory`.
"""

from dataclasses import dataclass, field
import os

import numpy as np

from ._validation import check_float_matrix, check_labels
from .errors import GradscoreError

#: How many ids an error message lists.
_SHOWN = 5


def own_margin(labels, logits):
    """Each row's label logit minus its largest other logit (float64).

    Parameters
    ----------
    labels : ndarray of shape (n,), int
    logits : ndarray of shape (n, n_classes)

    Returns
    -------
    margin : ndarray of shape (n,), float64
        Positive where the model predicts the label; higher = more confident.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(labels.size)
    own = z[rows, labels]
    other = z.copy()
    other[rows, labels] = -np.inf
    return own - other.max(axis=1) if z.shape[1] > 1 else np.full(labels.size, np.inf)


def label_loss(labels, logits):
    """Cross-entropy of each row's label, ``-log softmax(z)_y`` (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return lse - z[np.arange(labels.size), labels]


@dataclass
class History:
    """Per-example margins and losses of earlier exports, aligned with the rows scored.

    Attributes
    ----------
    margin : ndarray of shape (n_past, n_samples), float32
        Own-label margin (:func:`own_margin`) of each row in each earlier
        export, oldest first; NaN where that export lacks the row.
    loss : ndarray of shape (n_past, n_samples), float32
        Cross-entropy of the row's label; NaN where absent.
    epochs : list of (int or None)
        Each earlier export's ``epoch`` attribute.
    sources : list of str
        Each earlier export's file(s), for messages and provenance.
    """

    margin: np.ndarray
    loss: np.ndarray
    epochs: list = field(default_factory=list)
    sources: list = field(default_factory=list)

    @property
    def n_past(self):
        return self.margin.shape[0]

    def take(self, rows):
        """The history of ``rows`` (an index array), such as one class's."""
        return History(self.margin[:, rows], self.loss[:, rows], list(self.epochs),
                       list(self.sources))

    def check_rows(self, n):
        if self.margin.shape[1] != n:
            raise GradscoreError(f"history has {self.margin.shape[1]} rows but the export "
                                 f"scored has {n}")


@dataclass
class PastExport:
    """One earlier export reduced to what a history keeps: per row, its id,
    label, own-label margin and loss (rows sorted by id).

    Build it with :func:`reduce_export`; :func:`align` matches several of them
    to the rows being scored.
    """

    ids: np.ndarray
    labels: np.ndarray
    margin: np.ndarray
    loss: np.ndarray
    num_classes: int
    epoch: int = None
    source: str = "(in memory)"


def reduce_export(labels, logits, *, ids=None, epoch=None, source="(in memory)"):
    """An export's labels and logits reduced to a :class:`PastExport`.

    Parameters
    ----------
    labels : array-like of shape (n,)
    logits : array-like of shape (n, n_classes)
    ids : array-like of shape (n,), default=None
        Int or str ids; default ``0..n-1``.
    epoch : int, default=None
    source : str, default="(in memory)"
        Where it came from, for error messages.
    """
    labels = check_labels(labels, where=f"{source}: labels")
    logits = check_float_matrix(logits, "classes", n_rows=labels.size,
                                where=f"{source}: logits")
    if labels.size and labels.max() >= logits.shape[1]:
        raise GradscoreError(f"{source}: labels must be in [0, {logits.shape[1]}); got "
                             f"{int(labels.max())}")
    ids = np.arange(labels.size) if ids is None else np.asarray(ids)
    if ids.shape != labels.shape:
        raise GradscoreError(f"{source}: ids has {ids.size} rows but labels has {labels.size}")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if ids.size > 1 and np.any(ids[1:] == ids[:-1]):
        dup = ids[1:][ids[1:] == ids[:-1]]
        raise GradscoreError(f"{source}: ids must be unique; {_show(dup)} repeat")
    labels = labels[order]
    logits = logits[order]
    return PastExport(ids, labels, own_margin(labels, logits).astype(np.float32),
                      label_loss(labels, logits).astype(np.float32), int(logits.shape[1]),
                      None if epoch is None else int(epoch), source)


def align(pasts, *, ids, labels, epoch=None):
    """Match earlier exports to the rows being scored, by id.

    Parameters
    ----------
    pasts : list of PastExport
        Oldest (the reference) first.
    ids : ndarray of shape (n,)
        Ids of the rows being scored, in their order.
    labels : ndarray of shape (n,)
    epoch : int, default=None
        The scored export's epoch; an earlier export at this epoch or later
        is refused.

    Returns
    -------
    history : History

    Raises
    ------
    GradscoreError
        For ids of another kind, an id of the scored rows the reference
        lacks, an id a later export holds that the reference lacks, a label
        that differs for the same id, or an epoch not before the scored one.
    """
    if not pasts:
        raise GradscoreError("history: no earlier export given")
    ids = np.asarray(ids)
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    margin = np.full((len(pasts), n), np.nan, dtype=np.float32)
    loss = np.full((len(pasts), n), np.nan, dtype=np.float32)
    ref = pasts[0]
    for i, past in enumerate(pasts):
        where = f"history {'reference' if i == 0 else 'export'} {past.source}"
        if epoch is not None and past.epoch is not None and past.epoch >= epoch:
            raise GradscoreError(f"{where} is epoch {past.epoch}, not before the epoch "
                                 f"scored ({epoch}); history exports must come earlier")
        if (ids.dtype.kind in "iu") != (past.ids.dtype.kind in "iu"):
            kind = "integer" if past.ids.dtype.kind in "iu" else "string"
            mine = "integer" if ids.dtype.kind in "iu" else "string"
            raise GradscoreError(f"{where} has {kind} ids but the export scored has "
                                 f"{mine} ids")
        if i > 0:
            foreign = ~_member(past.ids, ref.ids)
            if foreign.any():
                raise GradscoreError(
                    f"{where} holds {int(foreign.sum())} id(s) that the reference lacks "
                    f"(first: {_show(past.ids[foreign])}); every export of the history "
                    "must come from the same training set as the reference")
        pos = np.searchsorted(past.ids, ids)
        pos_c = np.minimum(pos, max(past.ids.size - 1, 0))
        found = (pos < past.ids.size) & (past.ids[pos_c] == ids) if past.ids.size \
            else np.zeros(n, dtype=bool)
        if i == 0 and not found.all():
            missing = ids[~found]
            raise GradscoreError(
                f"{where} lacks {missing.size} id(s) of the export scored (first: "
                f"{_show(missing)}); the reference must hold every example, such as an "
                "export of the model before training on this data")
        rows = pos_c[found]
        bad = past.labels[rows] != labels[found]
        if bad.any():
            first = np.flatnonzero(found)[np.flatnonzero(bad)]
            raise GradscoreError(
                f"{where} gives {int(bad.sum())} id(s) another label than the export "
                f"scored (first: id {_show(ids[first][:1])}: "
                f"{int(past.labels[rows][bad][0])} there, {int(labels[first[0]])} here); "
                "the exports are not of the same data")
        margin[i, found] = past.margin[rows]
        loss[i, found] = past.loss[rows]
    return History(margin, loss, [p.epoch for p in pasts], [p.source for p in pasts])


def _member(values, sorted_ids):
    pos = np.searchsorted(sorted_ids, values)
    pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
    return (pos < sorted_ids.size) & (sorted_ids[pos_c] == values) if sorted_ids.size \
        else np.zeros(values.size, dtype=bool)


def history_from_arrays(labels, past, *, ids=None, epoch=None):
    """A :class:`History` from earlier exports held in memory.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Labels of the rows to be scored.
    past : list of tuples ``(labels, logits)`` or ``(labels, logits, ids)``
        Earlier exports, oldest (the reference) first. Without ids, rows
        are numbered ``0..n-1`` (the same rows in the same order as the
        rows scored, when those have no ids either).
    ids : array-like of shape (n_samples,), default=None
        Ids of the rows to be scored; default ``0..n_samples-1``.
    epoch : int, default=None

    Returns
    -------
    history : History
    """
    labels = check_labels(labels)
    ids = np.arange(labels.size) if ids is None else np.asarray(ids)
    pasts = []
    for i, item in enumerate(past):
        where = "(in memory)" if i == 0 else f"(in memory, item {i})"
        if len(item) not in (2, 3):
            raise GradscoreError(f"history item {i}: give (labels, logits) or (labels, "
                                 f"logits, ids); got a tuple of {len(item)}")
        pasts.append(reduce_export(item[0], item[1], ids=item[2] if len(item) == 3 else None,
                                   source=where))
    return align(pasts, ids=ids, labels=labels, epoch=epoch)


def read_past(path, *, max_memory=None):
    """Read one earlier export (a file, or its shards) into a :class:`PastExport`.

    The export is read and validated by :func:`gradscore.read_epoch`
    (features are not kept) and reduced to two numbers per row.
    """
    from .io import read_epoch
    files = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) \
        else [os.fspath(p) for p in path]
    ep = read_epoch(files, need_features=False, max_memory=max_memory)
    return reduce_export(ep.labels, ep.logits, ids=ep.ids, epoch=ep.epoch,
                         source=", ".join(files))


def read_history(paths, *, ids, labels, num_classes, epoch=None, max_memory=None):
    """Read earlier exports and keep each row's margin and loss.

    Parameters
    ----------
    paths : list of (str or path-like, or list of them, or PastExport)
        Earlier exports, oldest (the reference) first; an item may be the
        shards of one export, or one already reduced. Each is read,
        validated and reduced to two numbers per row (:func:`read_past`)
        before the next is read.
    ids : ndarray of shape (n_samples,)
        Ids of the export being scored (its rows, in its order).
    labels : ndarray of shape (n_samples,)
        Its labels.
    num_classes : int
    epoch : int, default=None
        Its ``epoch`` attribute; an earlier export at this epoch or later is
        refused.
    max_memory : int or str, default=None
        Passed to :func:`gradscore.read_epoch` for each earlier export.

    Returns
    -------
    history : History

    Raises
    ------
    GradscoreError
        For a file that cannot be read, a different number of classes, and
        every mismatch :func:`align` refuses.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise GradscoreError("history: no earlier export given")
    pasts = []
    for i, item in enumerate(paths):
        past = item if isinstance(item, PastExport) else read_past(item, max_memory=max_memory)
        if past.num_classes != num_classes:
            raise GradscoreError(f"history {'reference' if i == 0 else 'export'} {past.source} has "
                                 f"{past.num_classes} classes but the export scored has "
                                 f"{num_classes}")
        pasts.append(past)
    return align(pasts, ids=ids, labels=labels, epoch=epoch)


def _show(values):
    vals = [v.item() if hasattr(v, "item") else v for v in np.asarray(values)[:_SHOWN]]
    more = ", ..." if len(values) > _SHOWN else ""
    return ", ".join(repr(v) for v in vals) + more


def margin_gain(history, labels, logits):
    """Own-label margin now minus at the reference (higher = training pulled it more).

    Returns
    -------
    gain : ndarray of shape (n_samples,), float64
        NaN where the reference lacks the row.
    """
    return own_margin(labels, logits) - history.margin[0].astype(np.float64)


def area_under_margin(history, labels, logits, *, include_reference=False):
    """Mean own-label margin over the history's exports and the current one
    (Pleiss et al., NeurIPS 2020, over the exported epochs); lower = harder to fit.

    The reference is left out by default: before training, the margin says
    what the starting model thought, not how training went.
    """
    past = history.margin if include_reference else history.margin[1:]
    stack = np.vstack([past.astype(np.float64), own_margin(labels, logits)[None]])
    return np.nanmean(stack, axis=0)
