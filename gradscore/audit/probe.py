"""Cross-fitted linear probe: out-of-fold logits from an encoder's features.

An auditor rarely has a classifier over the dataset's own classes; a
generic encoder gives features only. :func:`cross_fit_probe` fits a
multinomial logistic head on those features with K-fold cross-fitting, so
each example's logits come from a head that never saw it (the out-of-fold
convention cleanlab uses for ``pred_probs``).

All K heads are fitted at once, as one L-BFGS problem over their stacked
parameters (:func:`gradscore.heads.fit_heads`, which ``label-support``'s
head shares). ``benchmarks/audit/bench_probe.py`` compares this solver
with scikit-learn's on the same folds (docs/audit.md).

Each head minimises, on standardised features :math:`\\tilde x`,

.. math::

    \\frac{1}{n_k} \\sum_{i \\notin F_k} -\\log \\mathrm{softmax}(W_k^T \\tilde x_i
    + b_k)_{y_i} + \\frac{\\alpha}{2} \\lVert W_k \\rVert^2

with the bias unpenalised. Standardisation uses the mean and standard
deviation of all rows: it sees no label, so no label leaks across folds.
"""

from dataclasses import dataclass, field

import numpy as np

from .._validation import check_fraction, check_int, check_labels
from ..errors import GradscoreError, GradscoreWarning
from ..heads import fit_heads

@dataclass
class ProbeResult:
    """Out-of-fold logits of a cross-fitted logistic head.

    Attributes
    ----------
    logits : ndarray of shape (n_samples, n_classes), float32
        Row ``i`` from the head fitted without ``i``'s fold.
    fold : ndarray of shape (n_samples,), int64
        Fold each example was held out in.
    accuracy : float
        Out-of-fold accuracy: share of examples whose argmax is their label.
    log_loss : float
        Mean out-of-fold cross-entropy.
    n_iter : int
        L-BFGS iterations of the joint fit.
    converged : bool
    params : dict
        ``n_folds``, ``alpha``, ``max_iter``, ``tol``, ``random_state``.
    """

    logits: np.ndarray
    fold: np.ndarray
    accuracy: float
    log_loss: float
    n_iter: int
    converged: bool
    params: dict = field(default_factory=dict)

    def summary(self):
        """JSON-ready dict (no arrays)."""
        return {"accuracy": self.accuracy, "log_loss": self.log_loss, "n_iter": self.n_iter,
                "converged": self.converged, **self.params}


def stratified_folds(labels, n_folds, *, random_state=0):
    """Fold of each example: per class, a seeded shuffle dealt round-robin.

    Each class spreads over the folds as evenly as it can (a class with
    fewer examples than folds is missing from some). The shuffle of class
    ``c`` is seeded by ``(random_state, c)``, so a class's folds do not
    depend on the other classes.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), int
    n_folds : int
    random_state : int, default=0

    Returns
    -------
    fold : ndarray of shape (n_samples,), int64
        In ``[0, n_folds)``.
    """
    labels = np.asarray(labels)
    fold = np.empty(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng = np.random.default_rng(np.random.SeedSequence([int(random_state), int(c)]))
        fold[rng.permutation(rows)] = np.arange(rows.size) % n_folds
    return fold


def cross_fit_probe(labels, features, *, num_classes=None, n_folds=5, alpha=1e-3,
                    max_iter=500, tol=1e-6, random_state=0):
    """Fit a multinomial logistic head with K-fold cross-fitting.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Integer labels in ``[0, num_classes)``.
    features : array-like of shape (n_samples, n_features)
        Encoder features (float32 or float64; not copied).
    num_classes : int, default=None
        Default ``labels.max() + 1``. Classes without examples get
        logits far below the others.
    n_folds : int, default=5
        K >= 2.
    alpha : float, default=1e-3
        L2 penalty on the weights, per unit of mean cross-entropy, on
        standardised features.
    max_iter : int, default=500
        L-BFGS iterations.
    tol : float, default=1e-6
        Stop when the largest gradient entry falls below ``tol`` (or the
        objective stops improving by a relative ``tol * 1e-3``).
    random_state : int, default=0
        Seeds the folds.

    Returns
    -------
    result : ProbeResult

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 40)
    >>> features = rng.normal(size=(120, 5)) + 3 * np.eye(3, 5)[labels]
    >>> res = cross_fit_probe(labels, features)
    >>> res.logits.shape, res.accuracy > 0.9
    ((120, 3), True)
    """
    n_folds = check_int("n_folds", n_folds, minimum=2)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    alpha = check_fraction("alpha", alpha, high=np.inf)
    tol = check_fraction("tol", tol, high=np.inf, low_open=True)
    random_state = check_int("random_state", random_state)
    labels = check_labels(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    num_classes = check_int("num_classes", num_classes, minimum=2)
    labels = check_labels(labels, num_classes=num_classes)
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] != labels.size:
        raise GradscoreError(f"features must have shape ({labels.size}, n_features) to match "
                             f"labels; got {x.shape}")
    if x.dtype.kind != "f":
        raise GradscoreError(f"features must be floating point; got dtype {x.dtype}")
    if labels.size < n_folds:
        raise GradscoreError(f"the probe needs at least n_folds={n_folds} examples; got "
                             f"{labels.size}")
    from .._validation import check_finite
    check_finite(x, "features")
    return _cross_fit(labels, x, num_classes=num_classes, n_folds=n_folds, alpha=alpha,
                      max_iter=max_iter, tol=tol, random_state=random_state)


def _cross_fit(labels, x, *, num_classes, n_folds, alpha, max_iter, tol, random_state):
    fold = stratified_folds(labels, n_folds, random_state=random_state)
    logits, res = fit_heads(labels, x, fold, num_classes, n_folds, alpha, max_iter, tol)
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    log_loss = float(np.mean(lse - z[np.arange(labels.size), labels]))
    accuracy = float(np.mean(np.argmax(logits, axis=1) == labels))
    if not res.success and res.nit >= max_iter:
        import warnings
        warnings.warn(f"the probe's L-BFGS stopped at max_iter={max_iter} before converging "
                      f"(largest gradient {np.abs(res.jac).max():.2g} > tol={tol}); its "
                      "out-of-fold logits are those of the last iterate", GradscoreWarning,
                      stacklevel=3)
    return ProbeResult(logits=logits, fold=fold, accuracy=accuracy, log_loss=log_loss,
                       n_iter=int(res.nit), converged=bool(res.success),
                       params={"n_folds": n_folds, "alpha": alpha, "max_iter": max_iter,
                               "tol": tol, "random_state": random_state})
