"""Closed-form cross-entropy gradients of the final linear layer.

For an example with logits :math:`z \\in \\mathbb{R}^C`, label :math:`y` and
penultimate features :math:`h \\in \\mathbb{R}^D`, the cross-entropy loss with
label smoothing :math:`\\epsilon` has target
:math:`t = (1-\\epsilon)\\,e_y + \\epsilon / C` and

.. math::

    g = \\nabla_z L = \\mathrm{softmax}(z) - t, \\qquad
    \\nabla_W L = g\\,h^\\top, \\qquad \\nabla_b L = g.

``"logits"`` uses :math:`g` (the paper's choice; it equals the bias
gradient). ``"last-layer"`` uses the full weight-and-bias gradient
:math:`g \\otimes [h, 1]` of dimension :math:`C (D + 1)`, which is never
materialised for distances: inner products factor as
:math:`\\langle a \\otimes h, b \\otimes k \\rangle = (a \\cdot b)(h \\cdot k)`.
"""

import numpy as np
from numba import njit

from ._vexp import exp_inplace

GRADIENTS = ("logits", "last-layer")


def logit_gradients(labels, logits, *, num_classes=None, label_smoothing=0.0):
    """Cross-entropy gradient with respect to the logits.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer class labels in ``[0, n_classes)``.
    logits : ndarray of shape (n_samples, n_classes)
        Pre-softmax outputs of the final layer.
    num_classes : int, default=None
        Number of classes; defaults to ``logits.shape[1]``.
    label_smoothing : float, default=0.0
        Smoothing :math:`\\epsilon` of the target, as in
        ``torch.nn.CrossEntropyLoss(label_smoothing=...)``.

    Returns
    -------
    grads : ndarray of shape (n_samples, n_classes), float64
        ``softmax(logits) - target`` per row.

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.gradients import logit_gradients
    >>> logit_gradients(np.array([0]), np.array([[0.0, 0.0]]))
    array([[-0.5,  0.5]])
    """
    # In one float64 buffer (the class task's largest after the Gram matrix).
    p = np.array(logits, dtype=np.float64)
    n, c = p.shape
    num_classes = c if num_classes is None else num_classes
    p -= p.max(axis=1, keepdims=True)
    exp_inplace(p.reshape(-1))  # within 1 ulp of np.exp, 3x faster (gradscore._vexp)
    p /= p.sum(axis=1, keepdims=True)
    if label_smoothing:
        p -= label_smoothing / num_classes
    p[np.arange(n), labels] -= 1.0 - label_smoothing
    return p


class DenseGradients:
    """Gradient vectors held as rows of a matrix (the ``"logits"`` gradient)."""

    def __init__(self, values):
        self.values = np.ascontiguousarray(values, dtype=np.float64)

    @property
    def n(self):
        return self.values.shape[0]

    @property
    def dim(self):
        return self.values.shape[1]

    def sqnorms(self):
        return np.einsum("ij,ij->i", self.values, self.values)

    def inner(self, rows):
        """Inner products of ``rows`` (a slice or index array) with every row."""
        return self.values[rows] @ self.values.T

    def cross(self, rows, other):
        """Inner products of ``rows`` with every row of ``other``."""
        return self.values[rows] @ other.values.T

    def dense(self):
        return self.values

    def factors(self):
        """``(a, h)`` with each row equal to ``a_i (x) h_i`` (here ``h_i = [1]``)."""
        return self.values, np.ones((self.n, 1))

    def take(self, rows):
        return DenseGradients(self.values[rows])

    def duplicate_groups(self):
        """Group number of each row, equal for exactly equal rows; None if all differ."""
        return _groups(self.values)


class OuterGradients:
    """Gradients :math:`a_i \\otimes h_i` held as their two factors.

    Parameters
    ----------
    a : ndarray of shape (n_samples, n_classes)
        Logit gradients.
    h : ndarray of shape (n_samples, n_features + 1)
        Penultimate features with a trailing 1 for the bias.
    """

    def __init__(self, a, h):
        self.a = np.ascontiguousarray(a, dtype=np.float64)
        self.h = np.ascontiguousarray(h, dtype=np.float64)

    @property
    def n(self):
        return self.a.shape[0]

    @property
    def dim(self):
        return self.a.shape[1] * self.h.shape[1]

    def sqnorms(self):
        return np.einsum("ij,ij->i", self.a, self.a) * np.einsum("ij,ij->i", self.h, self.h)

    def inner(self, rows):
        return (self.a[rows] @ self.a.T) * (self.h[rows] @ self.h.T)

    def cross(self, rows, other):
        return (self.a[rows] @ other.a.T) * (self.h[rows] @ other.h.T)

    def dense(self):
        # Only for backends that need explicit vectors; (n, C * (D + 1)).
        return np.einsum("ic,id->icd", self.a, self.h).reshape(self.n, -1)

    def factors(self):
        """``(a, h)``: each gradient is ``a_i (x) h_i``."""
        return self.a, self.h

    def take(self, rows):
        return OuterGradients(self.a[rows], self.h[rows])

    def duplicate_groups(self):
        return _groups(np.concatenate([self.a, self.h], axis=1))


def _groups(x):
    """Group number of each row, equal for byte-equal rows; None if all rows differ.

    A 64-bit hash of every row (one pass) finds the candidates; only rows
    that share a hash are compared by value. Rows are compared as opaque
    bytes (np.unique compares them with memcmp, several times faster than
    np.unique(axis=0) on wide rows; benchmarks/bench_kdtree.py).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    n = x.shape[0]
    hashes = _row_hashes(x.view(np.uint64).reshape(n, -1))
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    if counts.size == n:
        return None
    shared = np.flatnonzero(counts[inverse.ravel()] > 1)
    rows = x[shared].view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, sub = np.unique(rows, return_inverse=True)
    groups = np.arange(n, dtype=np.int64)
    groups[shared] = n + sub.ravel()
    if np.unique(groups).size == n:
        return None
    return groups


@njit(cache=True, nogil=True)
def _row_hashes(words):
    # FNV-1a over 64-bit words (wrapping arithmetic).
    out = np.empty(words.shape[0], dtype=np.uint64)
    prime = np.uint64(1099511628211)
    for i in range(words.shape[0]):
        h = np.uint64(14695981039346656037)
        for j in range(words.shape[1]):
            h ^= words[i, j]
            h *= prime
        out[i] = h
    return out


def class_gradients(labels, logits, features=None, *, gradient="logits",
                    num_classes=None, label_smoothing=0.0):
    """Gradients of one group of examples in the representation ``gradient`` asks for.

    Returns a :class:`DenseGradients` for ``"logits"`` and an
    :class:`OuterGradients` for ``"last-layer"`` (which needs ``features``).
    """
    g = logit_gradients(labels, logits, num_classes=num_classes,
                        label_smoothing=label_smoothing)
    if gradient == "logits":
        return DenseGradients(g)
    h = np.empty((features.shape[0], features.shape[1] + 1), dtype=np.float64)
    h[:, :-1] = features
    h[:, -1] = 1.0
    return OuterGradients(g, h)
