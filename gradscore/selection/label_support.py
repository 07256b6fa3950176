"""Label support: how much an example's own neighbours and an untainted head back its label.

The audit's default method (``--method label-support``), chosen from the
measurement in docs/audit.md. In the audit regime (one scoring, no training
schedule, features from an encoder) two signals back an example's label:

1. **the neighbours' vote** (deep k-NN): the share of its ``k`` nearest
   examples in feature space, over all classes, that carry its label;
2. **a head that never saw a suspect**: a multinomial logistic head fitted
   on the standardised features of the examples whose label a majority of
   their neighbours back (share > 1/2), and none of the others. A
   dirty-label backdoor teaches a head fitted on the poisons to read the
   trigger as the target class, so an out-of-fold head still backs the
   poisons' labels; a head fitted without the suspects never learns the
   trigger, and gives a poison the probability of its target class it gives
   any image of the source class.

The support is their mean,

.. math::

    s_i = \\tfrac12 \\left( \\frac{|\\{j \\in N_k(i) : y_j = y_i\\}|}{k}
          + \\mathrm{softmax}(W^T \\tilde x_i + b)_{y_i} \\right)

higher = more typical, and an example is dropped when ``s_i < threshold``
(default 0.15). Only suspects can be dropped: an example whose neighbours
back its label has support above 1/4. For the suspects the head's
probability is out of sample; for the others it is in sample (they trained
it), which only raises their support further.

Spilled and on a Dask cluster (:func:`gradscore.scoring.crossclass.spilled_cross_class_votes`)
the neighbour search runs on the workers and the head is fitted in the
calling process on the scored rows' features read back from the spill, so
the keep-list is the in-memory run's.
"""

import numpy as np

from .._validation import check_fraction, check_int, check_labels
from ..errors import GradscoreError
from ..heads import fit_without
from ..review import softmax
from .feature_space import deep_knn_agreement

#: Default drop threshold on the support (see docs/audit.md for the measurement).
THRESHOLD = 0.15
#: Neighbours' share at or below which an example is a suspect, left out of the head.
SUSPECT_SHARE = 0.5


def label_support(labels, features, *, k=20, threshold=THRESHOLD, alpha=1e-3,
                  num_classes=None, neighbors="auto", random_state=0):
    """Support of each example's label, and the drop rule ``support < threshold``.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Integer labels in ``[0, num_classes)``.
    features : array-like of shape (n_samples, n_features)
        Encoder features (the input of the final linear layer).
    k : int, default=20
        Neighbours per example, over all classes (clamped to n_samples - 1).
    threshold : float, default=0.15
        Drop examples whose support is below this.
    alpha : float, default=1e-3
        L2 penalty of the head (per unit of mean cross-entropy, on
        standardised features), as :func:`gradscore.audit.cross_fit_probe`.
    num_classes : int, default=None
        Default ``labels.max() + 1``.
    neighbors : str, default="auto"
        Neighbour backend (see :mod:`gradscore.neighbors`).
    random_state : int, default=0
        For randomised neighbour backends.

    Returns
    -------
    support : ndarray of shape (n_samples,)
        In [0, 1]; higher = more typical.
    drop : ndarray of shape (n_samples,), bool

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50)
    >>> features = rng.normal(size=(100, 4)) + 4 * np.eye(2, 4)[labels]
    >>> labels[3] = 1                       # a flipped label
    >>> support, drop = label_support(labels, features)
    >>> bool(drop[3]), int(drop.sum())
    (True, 1)
    """
    from .. import neighbors as nb
    from .._validation import check_float_matrix
    from ..gradients import DenseGradients

    labels = check_labels(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 1
    num_classes = check_int("num_classes", num_classes, minimum=1)
    labels = check_labels(labels, num_classes=num_classes)
    features = check_float_matrix(features, "features", n_rows=labels.size)
    k = check_int("k", k, minimum=1)
    threshold = check_fraction("threshold", threshold)
    alpha = check_fraction("alpha", alpha, high=np.inf)
    if labels.size < 2:
        raise GradscoreError(f"label_support needs at least 2 examples; got {labels.size}")
    k = min(k, labels.size - 1)
    idx, _, _ = nb.kneighbors(DenseGradients(features), k, backend=neighbors,
                              random_state=random_state)
    return _label_support(labels, features, idx, num_classes=num_classes,
                          threshold=threshold, alpha=alpha)


def _label_support(labels, features, nbr_idx, *, num_classes, threshold=THRESHOLD,
                   alpha=1e-3):
    """:func:`label_support` from precomputed neighbours (inputs valid)."""
    return _label_support_parts(labels, features, nbr_idx, num_classes=num_classes,
                                threshold=threshold, alpha=alpha)[:2]


def _label_support_parts(labels, features, nbr_idx, *, num_classes, threshold=THRESHOLD,
                         alpha=1e-3):
    """``(support, drop, share, prob)``: :func:`_label_support` with what it
    was made of (:func:`_support_parts`), for the reviewer's signals."""
    share, prob = _support_parts(labels, features, nbr_idx, num_classes=num_classes,
                                 alpha=alpha)
    support = _support(labels, share, prob)
    return support, support < threshold, share, prob


def _support(labels, share, prob):
    """The support from the neighbours' share and the head's probabilities (or None)."""
    p = share if prob is None else prob[np.arange(labels.size), labels]
    return 0.5 * (share + p)


def _support_parts(labels, features, nbr_idx, *, num_classes, alpha=1e-3):
    """The neighbours' share of each row's label, and the suspect-free head's probabilities.

    Returns
    -------
    share : ndarray of shape (n,)
    prob : ndarray of shape (n, num_classes), float64, or None
        None when every row is a suspect (nobody left to fit a head on:
        the vote alone then decides).
    """
    share, _ = deep_knn_agreement(labels, nbr_idx, num_classes)
    suspect = share <= SUSPECT_SHARE
    if suspect.all():
        return share, None
    logits = fit_without(labels, features, suspect, num_classes=num_classes, alpha=alpha)
    return share, softmax(logits)
