"""Peer defences that look at penultimate features rather than gradients.

Both score in gradscore's one direction: **higher = more typical**.

``deep_knn_agreement``
    Deep k-NN (Peri et al., 2020): the fraction of an example's k nearest
    neighbours in feature space (over all classes) that share its label. The
    drop rule removes an example whose label is not a plurality label of its
    neighbours.
``spectral_scores``
    Spectral signatures (Tran et al., 2018), per class: minus the squared
    projection of the centred features on their top singular vector.
"""

import numpy as np


def deep_knn_agreement(labels, nbr_idx, num_classes, *, ignore=None):
    """Agreement score and plurality-rule drop mask.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    nbr_idx : ndarray of shape (n, k)
        Row numbers of each example's k nearest other examples.
    num_classes : int
    ignore : ndarray of shape (n,), bool, default=None
        Rows whose votes do not count (the ``groups`` method's dropped
        groups); an example with no vote left is kept.

    Returns
    -------
    agreement : ndarray of shape (n,)
        Fraction of neighbours with the same label (higher = more typical).
    drop : ndarray of shape (n,), bool
        True where the example's own label gets fewer votes than the most
        voted label (a tie with the top label keeps the example).
    """
    n, k = nbr_idx.shape
    nl = labels[nbr_idx]
    weight = np.ones((n, k), dtype=np.int64)
    if ignore is not None:
        weight[ignore[nbr_idx]] = 0
    votes = np.zeros((n, num_classes), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), k), nl.ravel()), weight.ravel())
    own = votes[np.arange(n), labels]
    agreement = own / np.maximum(weight.sum(axis=1), 1)
    return agreement, own < votes.max(axis=1)


def spectral_scores(features):
    """Minus the squared projection on the top singular vector of centred features.

    Parameters
    ----------
    features : ndarray of shape (n, d)

    Returns
    -------
    scores : ndarray of shape (n,)
        Higher = more typical; the poisons of Tran et al. score lowest.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    if x.shape[0] < 2 or not np.any(x):
        return np.zeros(x.shape[0])
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[0]
    # Fix the sign so the result does not depend on LAPACK's choice.
    v = v * np.sign(v[np.argmax(np.abs(v))])
    return -(x @ v) ** 2
