"""Trajectory: groups that training had to pull far towards their label.

``groups`` (:mod:`gradscore.selection.groups`) judges a group of examples by
the labels around it, in one export. Clean-label poisons that sit as a group
*between* their class and the target's class have their own label around them
and pass that test (docs/method.md, "Where groups misses"). What gives them
away is how they got there: the model the run started from (a pre-trained
network being fine-tuned) put them on the target's side, and training had to
pull them across. A run's history (:mod:`gradscore.history`) gives each
example's own-label margin at the reference export and now; their difference
is the example's *gain*.

The rule, per class, over the same candidate groups as ``groups`` (every node
of the single-linkage tree over the class's k-NN graph in feature space,
from ``min_group`` members up to ``max_group_fraction`` of the class):

1. A group's *lift* is the median gain of its members minus the median gain
   of the rest of its class, in units of the run's gain spread: the median,
   over classes, of each class's scaled MAD of the gain (the median over
   classes, so that one class full of poisons does not set the scale).
2. A group whose lift exceeds ``threshold`` is dropped: those of its members
   whose own gain exceeds their class's median by at least ``member_threshold``
   spreads (a group's median can be carried by a majority of it; the clean
   rows beside them, which did not move, stay).
3. A single example whose own gain exceeds its class's median by at least
   ``threshold`` spreads is dropped too (a dirty-label poison sits alone:
   the starting model gave it its true class, training pulled it to the
   label it was given).

The rule acts only when the reference carries a signal: when it gives at
least ``min_reference_agreement`` of the rows scored the label they carry
(the model the run started from already knew the task). A reference that is a
freshly initialised head or network agrees with about one label in
``n_classes``, its margins are noise, and every example's gain is just its
margin now; the rule then drops nothing and says why (the run's report).

Parameters are fixed (``threshold``, ``min_group``, ``max_group_fraction``,
``min_reference_agreement``) and were chosen once, on the defence
benchmark's seed-0 settings, for every attack together (docs/method.md).
"""

from dataclasses import dataclass

import numpy as np

from .groups import tree_nodes

#: A group is dropped when its median gain exceeds the rest of its class's by
#: this many gain spreads (and a single example, when its own gain does).
THRESHOLD = 6.0
#: ... and of such a group, the members that themselves gained this many more.
MEMBER_THRESHOLD = 3.0
#: Candidate groups: from this many members ...
MIN_GROUP = 3
#: ... up to this fraction of the class (as ``groups``).
MAX_GROUP_FRACTION = 0.5
#: The reference must give at least this share of the rows their label.
MIN_REFERENCE_AGREEMENT = 0.8


@dataclass
class TrajectoryResult:
    """What the trajectory rule decided over every class.

    Attributes
    ----------
    drop : ndarray of shape (n,), bool
        Rows the rule drops (in a group whose lift exceeds the threshold, or
        alone).
    lift : ndarray of shape (n,), float64
        Each row's largest group lift, in gain spreads, or for a row dropped
        alone its own gain above its class's median if larger (NaN for rows
        in no candidate group, or when the rule did not act).
    spread : float
        The gain spread (nats of margin) the lifts are measured in.
    reference_agreement : float
        Share of the rows scored that the reference gives their label.
    acted : bool
        False when the reference carries no signal (see the module docstring).
    """

    drop: np.ndarray
    lift: np.ndarray
    spread: float
    reference_agreement: float
    acted: bool


def gain_spread(gain, labels):
    """The run's gain spread: median over classes of 1.4826 * MAD of the gain.

    Rows with a NaN gain (no reference) are left out; returns NaN when no
    class has two gains.
    """
    spreads = []
    for c in np.unique(labels):
        g = gain[(labels == c) & np.isfinite(gain)]
        if g.size >= 2:
            spreads.append(1.4826 * np.median(np.abs(g - np.median(g))))
    return float(np.median(spreads)) if spreads else float("nan")


def group_lifts(values, ei, ej, *, min_group=MIN_GROUP, max_group_fraction=MAX_GROUP_FRACTION):
    """Each row's largest group lift in one class: median inside minus median outside.

    Parameters
    ----------
    values : ndarray of shape (n,)
        The class's per-row signal (gain), finite.
    ei, ej : ndarray of shape (m,)
        The class's single-linkage tree edges in merge order
        (:func:`gradscore.selection.groups.tree_edges`).

    Returns
    -------
    lift : ndarray of shape (n,), float64
        Largest lift over the candidate groups holding the row; NaN for rows
        in none.
    """
    n = values.size
    lift = np.full(n, np.nan)
    max_size = int(np.floor(max_group_fraction * n))
    if n < 2 * min_group or max_size < min_group:
        return lift
    order = np.argsort(values, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    sorted_vals = values[order]
    for g in tree_nodes(ei, ej, n):
        if not min_group <= len(g) <= max_size:
            continue
        inside = np.zeros(n, bool)
        inside[rank[g]] = True           # positions in sorted order
        l_ = _median_sorted(sorted_vals[inside]) - _median_sorted(sorted_vals[~inside])
        idx = np.asarray(g)
        lift[idx] = np.fmax(lift[idx], l_)
    return lift


def _median_sorted(v):
    m = v.size
    return 0.5 * (v[(m - 1) // 2] + v[m // 2])


def trajectory_drop(gain, reference_agrees, labels, trees, *, threshold=THRESHOLD,
                    member_threshold=MEMBER_THRESHOLD, min_group=MIN_GROUP,
                    max_group_fraction=MAX_GROUP_FRACTION,
                    min_reference_agreement=MIN_REFERENCE_AGREEMENT):
    """The trajectory rule over every class.

    Parameters
    ----------
    gain : ndarray of shape (n,)
        Own-label margin now minus at the reference (:func:`gradscore.history.margin_gain`).
    reference_agrees : ndarray of shape (n,), bool
        Whether the reference's prediction is the row's label.
    labels : ndarray of shape (n,)
    trees : list of (label, rows, ei, ej)
        Per class, its rows and single-linkage tree edges (positions in
        ``rows``), as ``groups`` builds them.

    Returns
    -------
    result : TrajectoryResult
    """
    n = labels.size
    drop = np.zeros(n, dtype=bool)
    lift = np.full(n, np.nan)
    agreement = float(np.mean(reference_agrees)) if n else float("nan")
    spread = gain_spread(gain, labels)
    acted = bool(agreement >= min_reference_agreement and np.isfinite(spread) and spread > 0)
    if not acted:
        return TrajectoryResult(drop, lift, spread, agreement, False)
    own = np.full(n, -np.inf)
    for _, rows, ei, ej in trees:
        g = gain[rows]
        if not np.isfinite(g).all():
            # Rows without a reference are left out of the trees' judgement.
            continue
        lift[rows] = group_lifts(g, ei, ej, min_group=min_group,
                                 max_group_fraction=max_group_fraction) / spread
        own[rows] = (g - np.median(g)) / spread
    drop = ((np.nan_to_num(lift, nan=-np.inf) > threshold) & (own >= member_threshold)) \
        | (own >= threshold)
    # A single example's lift is its own gain above its class's median.
    lift = np.where(own >= threshold, np.fmax(lift, own), lift)
    return TrajectoryResult(drop, lift, spread, agreement, True)
