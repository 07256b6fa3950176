"""What a reviewer needs for the rows a method flags: a suggested label, how sure, and why.

The last stage of the data's way, after the decisions: for each flagged row

* **suggested label**: the class, other than the row's own, that its
  neighbours' vote and the head's probabilities back most,

  .. math::

      q_{ic} = \\tfrac12 \\left( \\frac{|\\{j \\in N_k(i) : y_j = c\\}|}{k}
               + p_{ic} \\right), \\qquad
      \\hat y_i = \\arg\\max_{c \\ne y_i} q_{ic},

  and **how sure** that is, :math:`q_{i \\hat y_i}` in [0, 1] (1: every
  neighbour and the head name :math:`\\hat y_i`). Where a method has no
  neighbour vote (the per-class methods), :math:`q_i = p_i`, the head
  alone. The head is the export's logits (with ``gradscore audit
  --probe``, a cross-fitted head: every row's probabilities come from a
  head that never saw it), except for ``label-support``, whose own head
  (fitted without the suspects) is used: a dirty-label backdoor teaches an
  out-of-fold head trained on the other poisons to read the trigger as the
  target class, a head without the suspects names the class the image
  shows.
* **signal**: which signal flagged it: ``neighbours`` (its label is not
  backed by its neighbours' vote), ``head`` (the head gives its label
  probability below 1/2), ``group`` (a tight group of its class judged
  foreign, ``groups``), ``trajectory``, or the per-class method's name
  (``epic``, ``knn-density``, ``spectral``), joined with ``+``.

and for the whole dataset the **estimated share of bad rows**
(:func:`estimate_bad_share`), the confident-learning estimate of the
share of rows whose label is wrong (Northcutt et al., 2021, as
``cleanlab.count.estimate_joint``), from the labels and the head's
probabilities: the gradscore decisions do not depend on it.
"""

from dataclasses import dataclass

import numpy as np

from ._validation import check_labels
from .errors import GradscoreError

#: ``suggested_label`` of a row that is not flagged.
NO_SUGGESTION = -1


@dataclass
class Review:
    """Suggestions for some rows (aligned with an epoch's rows).

    Attributes
    ----------
    suggested : ndarray of shape (n,), int64
        Suggested label of each flagged row, ``NO_SUGGESTION`` (-1) elsewhere.
    confidence : ndarray of shape (n,), float64
        :math:`q_{i\\hat y_i}` in [0, 1], higher = surer; NaN where no suggestion.
    signal : ndarray of shape (n,), object
        Which signal flagged the row (``"neighbours+head"``, ...); ``""``
        where not flagged.
    """

    suggested: np.ndarray
    confidence: np.ndarray
    signal: np.ndarray
    #: Rows whose suggestion still waits for the head (the neighbours' part
    #: is in ``pending_share``, (m, C): the share of their neighbours per
    #: class); :func:`review_by_class` adds the head's probabilities.
    pending_rows: np.ndarray = None
    pending_share: np.ndarray = None

    @classmethod
    def empty(cls, n):
        return cls(np.full(n, NO_SUGGESTION, np.int64), np.full(n, np.nan),
                   np.full(n, "", dtype=object))


def softmax(logits):
    """Row-wise softmax in float64 (max-subtracted)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p


def estimate_bad_share(labels, logits, *, num_classes=None):
    """Confident learning's estimate of the share of rows whose label is wrong.

    A row counts towards the confident joint ``C[y, j]`` when the head's
    probability of class ``j`` reaches ``t_j``, the mean probability of
    ``j`` over the rows labelled ``j`` (the largest such ``j`` by
    probability when several do); each row of ``C`` is rescaled to the
    number of rows with that label, and the estimate is the off-diagonal
    share, ``1 - trace(C) / sum(C)`` (``cleanlab.count.estimate_joint``
    without its rounding to whole rows).

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    logits : array-like of shape (n_samples, n_classes)
        Out-of-sample logits (a cross-fitted head's) give an honest
        estimate; a classifier's in-sample logits underestimate it.
    num_classes : int, default=None
        Default ``logits.shape[1]``.

    Returns
    -------
    share : float
        In [0, 1]; higher = more rows look mislabelled.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> logits = np.log(np.array([[.9, .1], [.8, .2], [.1, .9],
    ...                           [.2, .8], [.1, .9], [.7, .3]]))
    >>> round(estimate_bad_share(labels, logits), 4)
    0.3333
    """
    from ._validation import check_float_matrix, check_int

    labels = check_labels(labels)
    logits = check_float_matrix(logits, "logits", n_rows=labels.size)
    if num_classes is None:
        num_classes = logits.shape[1]
    num_classes = check_int("num_classes", num_classes, minimum=1)
    if logits.shape[1] != num_classes:
        raise GradscoreError(f"logits has {logits.shape[1]} columns but num_classes is "
                             f"{num_classes}")
    labels = check_labels(labels, num_classes=num_classes)
    return _estimate_bad_share(labels, logits, num_classes)


def _estimate_bad_share(labels, logits, num_classes):
    """:func:`estimate_bad_share` on valid labels and logits (n, C)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    present = [c for c in range(num_classes) if bounds[c + 1] > bounds[c]]
    rows = [order[bounds[c]:bounds[c + 1]] for c in present]
    return bad_share_by_class(present, lambda i: logits[rows[i]], num_classes=num_classes)


def bad_share_by_class(present, class_logits, *, num_classes):
    """:func:`estimate_bad_share` from each class's logits, one class in memory at a time.

    Parameters
    ----------
    present : list of int
        The classes that have rows, ascending.
    class_logits : callable
        ``class_logits(i)``: the logits (n_c, C) of the rows of class
        ``present[i]`` (read twice: once for the thresholds, once to count).
    num_classes : int

    Returns
    -------
    share : float
    """
    counts = np.zeros(num_classes)
    t = np.full(num_classes, np.inf)      # a class with no rows: no row reaches it
    for i, c in enumerate(present):
        p = softmax(class_logits(i))
        counts[c] = p.shape[0]
        t[c] = p[:, c].mean()
    if not counts.sum():
        return 0.0
    joint = np.zeros((num_classes, num_classes))
    for i, c in enumerate(present):
        p = softmax(class_logits(i))
        above = p >= t - 1e-6
        n_above = above.sum(axis=1)
        guess = np.where(n_above > 1, p.argmax(axis=1), above.argmax(axis=1))
        joint[c] = np.bincount(guess[n_above > 0], minlength=num_classes)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1.0))   # as cleanlab does
    joint = joint / joint.sum(axis=1, keepdims=True) * counts[:, None]
    return float(1.0 - np.trace(joint) / joint.sum())


def review_by_class(labels, flagged, present, class_rows, class_logits, *, num_classes,
                    signal, review=None):
    """The run's :class:`Review` and bad share, from each class's logits.

    ``review``: the cross-class stage's; its pending rows (``deep-knn``,
    ``groups``: the neighbours' part only) get the head's probabilities
    from the logits here. Without it (the per-class methods), the flagged
    rows' suggestions come from the logits alone (:func:`head_review`,
    ``signal`` naming the method). The same function serves an in-memory
    run and a spilled one (``class_logits`` reads the spill), so that both
    give the same numbers.

    Returns
    -------
    review : Review
    bad_share : float
    """
    if review is not None and review.pending_rows is not None:
        _add_head(review, labels, present, class_rows, class_logits, num_classes)
    if review is None:
        review = Review.empty(labels.size)
        for i, rows in enumerate(class_rows):
            hit = flagged[rows]
            if hit.any():
                r = rows[hit]
                part = head_review(labels[r], class_logits(i)[hit], np.ones(r.size, bool),
                                   num_classes=num_classes, signal=signal)
                review.suggested[r], review.confidence[r] = part.suggested, part.confidence
                review.signal[r] = part.signal
    return review, bad_share_by_class(present, class_logits, num_classes=num_classes)


def neighbour_shares(neighbour_labels, num_classes):
    """Share of each row's neighbours per class, (m, C); -1 entries do not vote."""
    nl = np.asarray(neighbour_labels)
    m = nl.shape[0]
    q = np.zeros((m, num_classes))
    valid = nl >= 0
    n_valid = valid.sum(axis=1)
    r = np.broadcast_to(np.arange(m)[:, None], nl.shape)[valid]
    np.add.at(q, (r, nl[valid]), 1.0 / n_valid[r])
    return q


def suggest(labels, rows, *, num_classes, neighbour_labels=None, probs=None, shares=None):
    """Suggested label and confidence for ``rows``, from neighbours' labels and/or a head.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Given labels of all rows.
    rows : ndarray of shape (m,), int
        The rows to suggest for (the flagged ones).
    num_classes : int
    neighbour_labels : ndarray of shape (m, k), int, default=None
        Labels of each of ``rows``' k nearest neighbours (-1: none; such
        entries do not vote).
    probs : ndarray of shape (m, num_classes), default=None
        The head's probabilities for ``rows``.
    shares : ndarray of shape (m, num_classes), default=None
        Instead of ``neighbour_labels``: :func:`neighbour_shares` of them.

    Returns
    -------
    suggested : ndarray of shape (m,), int64
        ``argmax_{c != y} q_c`` (ties: the lower class).
    confidence : ndarray of shape (m,), float64
        ``q`` at the suggestion, in [0, 1].
    """
    m = rows.size
    if neighbour_labels is None and probs is None and shares is None:
        raise GradscoreError("suggest needs neighbour_labels, shares or probs")
    if neighbour_labels is not None and neighbour_labels.shape[1]:
        shares = neighbour_shares(neighbour_labels, num_classes)
    q = np.zeros((m, num_classes))
    parts = 0
    if shares is not None:
        q += shares
        parts += 1
    if probs is not None:
        q += probs
        parts += 1
    q /= max(parts, 1)
    q[np.arange(m), labels[rows]] = -np.inf
    if num_classes < 2:
        return np.full(m, NO_SUGGESTION, np.int64), np.full(m, np.nan)
    best = q.argmax(axis=1)
    return best.astype(np.int64), q[np.arange(m), best]


def _add_head(review, labels, present, class_rows, class_logits, num_classes):
    """Complete the pending suggestions with the head's probabilities, class by class."""
    where = np.full(labels.size, -1, np.int64)
    where[review.pending_rows] = np.arange(review.pending_rows.size)
    for i, rows in enumerate(class_rows):
        at = where[rows]
        hit = at >= 0
        if not hit.any():
            continue
        r, k = rows[hit], at[hit]
        p = softmax(class_logits(i)[hit])
        review.suggested[r], review.confidence[r] = suggest(
            labels, r, num_classes=num_classes, probs=p, shares=review.pending_share[k])
        low = p[np.arange(r.size), labels[r]] < 0.5
        review.signal[r] = [s + "+head" if lo else s for s, lo in zip(review.signal[r], low)]
    review.pending_rows = review.pending_share = None


def join_signals(*named):
    """``"a+b"`` per row from ``(name, mask)`` pairs (masks of one length)."""
    n = named[0][1].size
    out = np.full(n, "", dtype=object)
    for name, mask in named:
        hit = np.flatnonzero(mask)
        out[hit] = np.where(out[hit] == "", name, out[hit] + "+" + name)
    return out


def head_review(labels, logits, flagged, *, num_classes, signal):
    """:class:`Review` of the ``flagged`` rows from a head alone (per-class methods).

    ``logits`` (n, C): the head's. ``signal`` names the method that
    flagged the rows; ``head`` is added where the head gives the row's label
    probability below 1/2.
    """
    n = labels.size
    review = Review.empty(n)
    rows = np.flatnonzero(flagged)
    if rows.size:
        p = softmax(logits[rows])
        review.suggested[rows], review.confidence[rows] = suggest(
            labels, rows, num_classes=num_classes, probs=p)
        low = p[np.arange(rows.size), labels[rows]] < 0.5
        review.signal[rows] = join_signals((signal, np.ones(rows.size, bool)), ("head", low))
    return review
