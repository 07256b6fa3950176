"""Cross-fitted linear probe: out-of-fold logits from an encoder's features.

An auditor rarely has a classifier over the dataset's own classes; a
generic encoder gives features only. :func:`cross_fit_probe` fits a
multinomial logistic head on those features with K-fold cross-fitting, so
each example's logits come from a head that never saw it (the out-of-fold
convention cleanlab uses for ``pred_probs``).

All K heads are fitted at once, as one L-BFGS problem over their stacked
parameters: the objective is the sum of the folds' objectives, which do not
share parameters, so its minimiser is each fold's own minimiser. One pass
over the features per iteration serves every fold, the features are never
copied (standardisation is folded into the weights, and each fold's
held-out rows get a zero weight instead of being sliced out), and they may
be float32 or float64. Row blocks keep the temporaries bounded whatever the
number of rows. ``benchmarks/audit/bench_probe.py`` compares this solver
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

from .._threads import one_blas_thread
from .._validation import check_fraction, check_int, check_labels
from ..errors import GradscoreError, GradscoreWarning

#: Bytes of float64 logits held per row block (rows x folds x classes).
BLOCK_BYTES = 64 * 2**20


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


def _moments(x):
    """Column mean and standard deviation (1 where a column is constant)."""
    n, d = x.shape
    # Rows per block: the float64 deviations within BLOCK_BYTES.
    block = max(1, BLOCK_BYTES // (8 * d))
    s1 = np.zeros(d)
    for a in range(0, n, block):
        s1 += x[a:a + block].sum(axis=0, dtype=np.float64)
    mu = s1 / n
    s2 = np.zeros(d)
    for a in range(0, n, block):
        s2 += ((x[a:a + block] - mu) ** 2).sum(axis=0)
    sd = np.sqrt(s2 / n)
    sd[~(sd > 1e-12 * max(1.0, float(np.abs(mu).max(initial=0.0))))] = 1.0
    return mu, sd


class _Joint:
    """The K folds' objectives, summed, as a function of their stacked parameters."""

    def __init__(self, labels, x, fold, num_classes, n_folds, alpha):
        self.y, self.x, self.fold = labels, x, fold
        self.c, self.k, self.alpha = num_classes, n_folds, alpha
        self.n, self.d = x.shape
        # Rows per block: the (rows, K*C) float64 logits within BLOCK_BYTES.
        self.block = max(256, min(65536, BLOCK_BYTES // (8 * self.k * self.c)))
        self.mu, self.sd = _moments(x)
        # Weight of row i in fold k's objective: 1/n_k off its own fold, 0 on it
        # (a row of fold -1 trains every head).
        n_train = np.array([np.sum(fold != f) for f in range(n_folds)], dtype=np.float64)
        self.inv_n = 1.0 / n_train
        self.wdtype = np.float32 if x.dtype == np.float32 else np.float64
        self.n_eval = 0

    def split(self, theta):
        kc = self.k * self.c
        w = theta[:self.d * kc].reshape(self.d, kc)
        b = theta[self.d * kc:]
        return w, b

    def effective(self, theta):
        """Weights and bias acting on raw features: standardisation folded in."""
        w, b = self.split(theta)
        w_eff = w / self.sd[:, None]
        b_eff = b - self.mu @ w_eff
        return w_eff, b_eff

    def __call__(self, theta):
        self.n_eval += 1
        k, c = self.k, self.c
        w, _ = self.split(theta)
        w_eff, b_eff = self.effective(theta)
        w_cast = w_eff.astype(self.wdtype)
        loss = 0.0
        g_w = np.zeros_like(w_eff)
        g_b = np.zeros(k * c)
        for a in range(0, self.n, self.block):
            xb = self.x[a:a + self.block]
            yb, fb = self.y[a:a + self.block], self.fold[a:a + self.block]
            m = xb.shape[0]
            z = (xb @ w_cast).astype(np.float64).reshape(m, k, c) + b_eff.reshape(k, c)
            z -= z.max(axis=2, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=2))
            own = z[np.arange(m), :, yb]                       # (m, k)
            weight = np.broadcast_to(self.inv_n, (m, k)).copy()
            out = fb >= 0
            weight[np.flatnonzero(out), fb[out]] = 0.0         # held out: no say
            loss += float(np.sum(weight * (lse - own)))
            p = np.exp(z - lse[:, :, None])
            p[np.arange(m), :, yb] -= 1.0
            gz = (p * weight[:, :, None]).reshape(m, k * c)
            g_w += xb.T @ gz.astype(self.wdtype)
            g_b += gz.sum(axis=0)
        # Back through the folding: z = x W_eff + b - mu W_eff, W_eff = W / sd.
        g_w = (g_w - np.outer(self.mu, g_b)) / self.sd[:, None]
        loss += 0.5 * self.alpha * float(np.sum(w * w))
        g_w += self.alpha * w
        return loss, np.concatenate([g_w.ravel(), g_b])

    def out_of_fold(self, theta):
        """Logits of each row from the head that held it out, float32."""
        w_eff, b_eff = self.effective(theta)
        w_cast = w_eff.astype(self.wdtype)
        out = np.empty((self.n, self.c), dtype=np.float32)
        for a in range(0, self.n, self.block):
            xb = self.x[a:a + self.block]
            m = xb.shape[0]
            z = (xb @ w_cast).astype(np.float64).reshape(m, self.k, self.c) + \
                b_eff.reshape(self.k, self.c)
            out[a:a + m] = z[np.arange(m), np.maximum(self.fold[a:a + m], 0)]
        return out


def _fit(labels, x, fold, num_classes, n_heads, alpha, max_iter, tol):
    """Fit head k on the rows whose fold is not k; logits of each row from its fold's head."""
    # Imported before the thread limit: threadpoolctl limits only the BLAS
    # libraries already loaded, and L-BFGS-B calls SciPy's own OpenBLAS.
    from scipy.optimize import minimize

    f = _Joint(labels, x, fold, num_classes, n_heads, alpha)
    theta0 = np.zeros(f.d * n_heads * num_classes + n_heads * num_classes)
    # One BLAS thread for the whole fit (NumPy's products and L-BFGS-B's
    # own): how BLAS splits a product over threads changes its last bits,
    # and L-BFGS-B carries any change into every logit. So the logits depend
    # on the features and the CPU's BLAS kernels only, and "extract --probe"
    # writes the export "audit --probe" writes (issue 24). The row blocks
    # are fixed by the problem's shape (``_Joint.block``), not by the run.
    with one_blas_thread():
        res = minimize(f, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "gtol": tol, "ftol": tol * 1e-3,
                                "maxcor": 20})
        return f.out_of_fold(res.x), res


def fit_without(labels, features, held_out, *, num_classes, alpha=1e-3, max_iter=500,
                tol=1e-6):
    """Logits of every row from one head fitted on the rows not ``held_out``.

    The same objective as :func:`cross_fit_probe` (standardised features, L2
    ``alpha``); the held-out rows teach the head nothing. Inputs are assumed
    valid (labels in range, finite float features).

    Returns
    -------
    logits : ndarray of shape (n_samples, num_classes), float32
    """
    fold = np.where(np.asarray(held_out, dtype=bool), 0, -1)
    return _fit(labels, np.asarray(features), fold, num_classes, 1, alpha, max_iter, tol)[0]


def _cross_fit(labels, x, *, num_classes, n_folds, alpha, max_iter, tol, random_state):
    fold = stratified_folds(labels, n_folds, random_state=random_state)
    logits, res = _fit(labels, x, fold, num_classes, n_folds, alpha, max_iter, tol)
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
