"""Drop rules on density scores, and the per-class safety cap."""

import numpy as np


def _lowest_first(scores):
    # Ascending score, ties by row index: deterministic.
    return np.lexsort((np.arange(scores.size), scores))


def drop_by_fraction(scores, fraction):
    """Mask of the ``floor(fraction * n)`` least dense rows."""
    n_drop = int(np.floor(fraction * scores.size))
    drop = np.zeros(scores.size, dtype=bool)
    drop[_lowest_first(scores)[:n_drop]] = True
    return drop


def drop_by_robust_threshold(scores, z):
    """Mask of rows below ``median - z * 1.4826 * MAD`` of the class's scores.

    The MAD is scaled to match a normal standard deviation. When the MAD is 0
    (over half the class shares one score) nothing is dropped.
    """
    med = np.median(scores)
    mad = 1.4826 * np.median(np.abs(scores - med))
    if mad == 0:
        return np.zeros(scores.size, dtype=bool)
    return scores < med - z * mad


def apply_cap(drop, scores, max_fraction):
    """Limit ``drop`` to ``floor(max_fraction * n)`` rows, least dense first.

    Returns
    -------
    drop : ndarray of shape (n,), bool
    cap_hit : bool
        True when the cap removed some rows from the drop set.
    """
    return limit_drops(drop, scores, int(np.floor(max_fraction * drop.size)))


def limit_drops(drop, scores, limit):
    """Limit ``drop`` to its ``limit`` least dense rows (ties: lower row first).

    Returns
    -------
    drop : ndarray of shape (n,), bool
    cap_hit : bool
        True when rows were removed from the drop set.
    """
    if drop.sum() <= limit:
        return drop, False
    candidates = np.flatnonzero(drop)
    order = candidates[_lowest_first(scores[candidates])]
    capped = np.zeros_like(drop)
    capped[order[:max(0, limit)]] = True
    return capped, True
