"""Density scores from each example's k nearest neighbours in gradient space.

Score direction, everywhere in gradscore: **higher = denser = more typical**;
the examples most likely to be poisons have the lowest scores.

.. math::

    r_i = \\sqrt{\\tfrac{1}{k} \\sum_{t=1}^{k} d^2(g_i, g_{(t)})}, \\qquad
    \\mathrm{score}_i = -\\log(r_i + \\delta)

where :math:`g_{(t)}` is the t-th nearest other example of the same class and
:math:`\\delta = 10^{-9}\\,\\mathrm{median}(r)` (or :math:`10^{-9}` when the
median is 0) keeps exact duplicates finite. The score is a log inverse
k-NN radius: shifting it by a constant per class changes no decision.
"""

import numpy as np


def knn_density(sqdist):
    """Density score of each row from its neighbours' squared distances.

    Parameters
    ----------
    sqdist : ndarray of shape (n_samples, k)
        Squared distances to the k nearest other examples of the class.

    Returns
    -------
    scores : ndarray of shape (n_samples,)
        Higher = denser.

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.density import knn_density
    >>> knn_density(np.array([[1.0, 1.0], [4.0, 4.0]])).round(3)
    array([-0.   , -0.693])
    """
    sqdist = np.asarray(sqdist, dtype=np.float64)
    if sqdist.shape[1] == 0:
        return np.zeros(sqdist.shape[0])
    r = np.sqrt(sqdist.mean(axis=1))
    med = np.median(r)
    delta = 1e-9 * (med if med > 0 else 1.0)
    return -np.log(r + delta)
