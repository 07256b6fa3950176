"""Multinomial logistic heads on features, several fitted at once.

Used by the audit's cross-fitted probe (:mod:`gradscore.audit.probe`, one
head per fold) and by ``label-support`` (:mod:`gradscore.selection.label_support`,
one head fitted without the suspects).

All heads are fitted as one L-BFGS problem over their stacked parameters:
the objective is the sum of the heads' objectives, which do not share
parameters, so its minimiser is each head's own minimiser. One pass over the
features per iteration serves every head, the features are never copied
(standardisation is folded into the weights, and each head's held-out rows
get a zero weight instead of being sliced out), and they may be float32 or
float64. Row blocks keep the temporaries bounded whatever the number of
rows.

Each head minimises, on standardised features :math:`\\tilde x`,

.. math::

    \\frac{1}{n_k} \\sum_{i \\notin F_k} -\\log \\mathrm{softmax}(W_k^T \\tilde x_i
    + b_k)_{y_i} + \\frac{\\alpha}{2} \\lVert W_k \\rVert^2

with the bias unpenalised.
"""

import numpy as np

from ._threads import one_blas_thread

#: Bytes of float64 logits held per row block (rows x heads x classes).
BLOCK_BYTES = 64 * 2**20


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


def fit_heads(labels, x, fold, num_classes, n_heads, alpha, max_iter, tol):
    """Fit head k on the rows whose fold is not k; logits of each row from its fold's head.

    Inputs are assumed valid. A row of fold -1 trains every head (and gets
    head 0's logits).

    Returns
    -------
    logits : ndarray of shape (n_samples, num_classes), float32
    result : scipy.optimize.OptimizeResult
    """
    # Imported before the thread limit: threadpoolctl limits only the BLAS
    # libraries already loaded, and L-BFGS-B calls SciPy's own OpenBLAS.
    from scipy.optimize import minimize

    f = _Joint(labels, x, fold, num_classes, n_heads, alpha)
    theta0 = np.zeros(f.d * n_heads * num_classes + n_heads * num_classes)
    # One BLAS thread for the whole fit (NumPy's products and L-BFGS-B's
    # own): how BLAS splits a product over threads changes its last bits,
    # and L-BFGS-B carries any change into every logit. So the logits depend
    # on the features and the CPU's BLAS kernels only, and "extract --probe"
    # writes the export "audit --probe" writes. The row blocks are fixed by
    # the problem's shape (``_Joint.block``), not by the run.
    with one_blas_thread():
        res = minimize(f, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "gtol": tol, "ftol": tol * 1e-3,
                                "maxcor": 20})
        return f.out_of_fold(res.x), res


def fit_without(labels, features, held_out, *, num_classes, alpha=1e-3, max_iter=500,
                tol=1e-6):
    """Logits of every row from one head fitted on the rows not ``held_out``.

    The same objective as :func:`gradscore.audit.cross_fit_probe` (standardised features, L2
    ``alpha``); the held-out rows teach the head nothing. Inputs are assumed
    valid (labels in range, finite float features).

    Returns
    -------
    logits : ndarray of shape (n_samples, num_classes), float32
    """
    fold = np.where(np.asarray(held_out, dtype=bool), 0, -1)
    return fit_heads(labels, np.asarray(features), fold, num_classes, 1, alpha, max_iter,
                     tol)[0]
