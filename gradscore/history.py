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


def history_from_arrays(labels, past, *, ids=None):
    """A :class:`History` from earlier exports held in memory.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Labels of the rows to be scored.
    past : list of tuples ``(labels, logits)`` or ``(labels, logits, ids)``
        Earlier exports, oldest (the reference) first. Without ids, an
        export must have the scored rows in the same order (and as many).
    ids : array-like of shape (n_samples,), default=None
        Ids of the rows to be scored; needed when an earlier export gives ids.

    Returns
    -------
    history : History
    """
    labels = check_labels(labels)
    n = labels.size
    ids = None if ids is None else np.asarray(ids)
    margins, losses = [], []
    for i, item in enumerate(past):
        where = "the reference" if i == 0 else f"history export {i}"
        if len(item) == 2:
            lab, lg = item
            pid = None
        elif len(item) == 3:
            lab, lg, pid = item
        else:
            raise GradscoreError(f"{where}: give (labels, logits) or (labels, logits, ids); "
                                 f"got a tuple of {len(item)}")
        lab = check_labels(lab, where=f"{where}: labels")
        lg = check_float_matrix(lg, "classes", n_rows=lab.size, where=f"{where}: logits")
        if pid is None:
            if lab.size != n:
                raise GradscoreError(f"{where} has {lab.size} rows but the export scored has "
                                     f"{n}; give ids to match rows")
            pid = np.arange(n) if ids is None else ids
        elif ids is None:
            raise GradscoreError(f"{where} gives ids but the rows scored have none")
        m, l_ = _scalars_on(ids if ids is not None else np.arange(n), labels, np.asarray(pid),
                            lab, lg, where=where, reference=i == 0,
                            ref_ids=None if i == 0 else first_ids)
        if i == 0:
            first_ids = np.asarray(pid)
        margins.append(m)
        losses.append(l_)
    return History(np.array(margins, dtype=np.float32).reshape(len(past), n),
                   np.array(losses, dtype=np.float32).reshape(len(past), n),
                   [None] * len(past), ["<memory>"] * len(past))


def read_history(paths, *, ids, labels, num_classes, epoch=None, max_memory=None):
    """Read earlier exports and keep each row's margin and loss.

    Parameters
    ----------
    paths : list of (str or path-like, or list of them)
        Earlier exports, oldest (the reference) first; an item may be the
        shards of one export. Each is read and validated by
        :func:`gradscore.read_epoch` (features are not kept), reduced to
        two numbers per row and released before the next is read.
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
        For a file that cannot be read, a different number of classes,
        ids of a different kind, an id of the scored export the reference
        lacks, an id a later export holds but the reference does not, a
        label that differs for the same id, or an epoch not before the
        scored one.
    """
    from .io import read_epoch
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise GradscoreError("history: no earlier export given")
    ids = np.asarray(ids)
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    margin = np.full((len(paths), n), np.nan, dtype=np.float32)
    loss = np.full((len(paths), n), np.nan, dtype=np.float32)
    epochs, sources = [], []
    ref_ids = None
    for i, item in enumerate(paths):
        files = [os.fspath(item)] if isinstance(item, (str, os.PathLike)) \
            else [os.fspath(p) for p in item]
        name = ", ".join(files)
        where = f"history {'reference ' if i == 0 else ''}{name}"
        past = read_epoch(files, need_features=False, max_memory=max_memory)
        if past.num_classes != num_classes:
            raise GradscoreError(f"{where} has {past.num_classes} classes but the export "
                                 f"scored has {num_classes}")
        if epoch is not None and past.epoch is not None and past.epoch >= epoch:
            raise GradscoreError(f"{where} is epoch {past.epoch}, not before the epoch "
                                 f"scored ({epoch}); history exports must come earlier")
        margin[i], loss[i] = _scalars_on(ids, labels, past.ids, past.labels, past.logits,
                                         where=where, reference=i == 0, ref_ids=ref_ids)
        if i == 0:
            ref_ids = past.ids
        epochs.append(None if past.epoch is None else int(past.epoch))
        sources.append(name)
        del past
    return History(margin, loss, epochs, sources)


def _scalars_on(ids, labels, past_ids, past_labels, past_logits, *, where, reference,
                ref_ids):
    """One earlier export's margin and loss on the rows ``ids`` (NaN where absent)."""
    if (ids.dtype.kind in "iu") != (past_ids.dtype.kind in "iu"):
        kind = "integer" if past_ids.dtype.kind in "iu" else "string"
        mine = "integer" if ids.dtype.kind in "iu" else "string"
        raise GradscoreError(f"{where} has {kind} ids but the export scored has {mine} ids")
    if ref_ids is not None:
        foreign = ~np.isin(past_ids, ref_ids)
        if foreign.any():
            raise GradscoreError(
                f"{where} holds {int(foreign.sum())} id(s) that the reference lacks (first: "
                f"{_show(past_ids[foreign])}); every export of the history must come from "
                "the same training set as the reference")
    order = np.argsort(past_ids, kind="stable")
    sorted_ids = past_ids[order]
    pos = np.searchsorted(sorted_ids, ids)
    pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
    found = (pos < sorted_ids.size) & (sorted_ids[pos_c] == ids) if sorted_ids.size \
        else np.zeros(ids.size, dtype=bool)
    if reference and not found.all():
        missing = ids[~found]
        raise GradscoreError(
            f"{where} lacks {missing.size} id(s) of the export scored (first: "
            f"{_show(missing)}); the reference must hold every example, such as an "
            "export of the model before training on this data")
    rows = order[pos_c[found]]
    bad = past_labels[rows] != labels[found]
    if bad.any():
        first = np.flatnonzero(found)[np.flatnonzero(bad)]
        raise GradscoreError(
            f"{where} gives {int(bad.sum())} id(s) another label than the export scored "
            f"(first: id {_show(ids[first][:1])}: {int(past_labels[rows][bad][0])} there, "
            f"{int(labels[first[0]])} here); the exports are not of the same data")
    margin = np.full(ids.size, np.nan)
    loss = np.full(ids.size, np.nan)
    lab = labels[found]
    margin[found] = own_margin(lab, past_logits[rows])
    loss[found] = label_loss(lab, past_logits[rows])
    return margin, loss


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
