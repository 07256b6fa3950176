"""Each method's rule, in the form the scoring stages call it.

Two kinds, named by the method's record in :mod:`gradscore.scoring.methods`:

- a **class rule** ``rule(data, rows, params, report, messages) -> (scores,
  drop, cluster_size)`` runs inside one class's task
  (:func:`gradscore.scoring.tasks.score_class`) on that class's rows
  ``rows`` (already in canonical order), filling in the class report;
  ``cluster_size`` is None unless the rule clusters;
- a **vote rule** ``rule(voters) -> (agreement, drop)`` runs once over all
  classes (:mod:`gradscore.scoring.crossclass`), after the neighbour search,
  on the scored rows (:class:`Voters`).

The maths lives in :mod:`gradscore.selection` (and :mod:`gradscore.density`,
:mod:`gradscore.gradients`); these functions only join it to the stages'
data. Scores are higher = more typical everywhere.
"""

from dataclasses import dataclass, field
from typing import Callable
import warnings

import numpy as np

from .. import neighbors as nb
from ..density import knn_density
from ..errors import GradscoreWarning
from ..gradients import class_gradients
from ..history import margin_gain
from ..neighbors._cross import nearest_to_centres_in_store
from ..selection import drop_by_fraction, drop_by_robust_threshold, epic_class
from ..selection.feature_space import deep_knn_agreement, spectral_scores
from ..selection.groups import foreign_groups, tree_edges
from ..selection.label_support import _label_support_parts
from ..selection.trajectory import trajectory_drop


# -- class rules ---------------------------------------------------------------------------

def density_rule(s, params):
    """Drop by ``drop_fraction`` when given, else by the robust per-class threshold."""
    if params["drop_fraction"] is not None:
        return drop_by_fraction(s, params["drop_fraction"])
    return drop_by_robust_threshold(s, params["z_threshold"])


def _gradients(data, rows, params, report, messages):
    """The class's gradients, with ``k`` clamped to the class (and said so)."""
    label = report.label
    k_c = min(params["k"], rows.size - 1)
    if k_c < params["k"]:
        messages.append(f"class {label} has {rows.size} examples, too few for "
                        f"k={params['k']}; using k={k_c}")
    report.k_used = k_c
    grads = class_gradients(
        np.full(rows.size, label, dtype=np.int64), data.logits[rows],
        None if data.features is None else data.features[rows],
        gradient=params["gradient"], num_classes=params["num_classes"],
        label_smoothing=params["label_smoothing"])
    return grads, k_c


def knn_density_rule(data, rows, params, report, messages):
    """k-NN density in gradient space, then :func:`density_rule`."""
    grads, k_c = _gradients(data, rows, params, report, messages)
    _, knn_d2, report.neighbors = nb.kneighbors(
        grads, k_c, backend=params["neighbors"], random_state=params["random_state"])
    s = knn_density(knn_d2)
    return s, density_rule(s, params), None


def epic_rule(data, rows, params, report, messages):
    """EPIC's facility-location clusters in gradient space; scores are k-NN density."""
    grads, k_c = _gradients(data, rows, params, report, messages)
    if data.n_medoids == 0:
        messages.append(f"class {report.label} got no EPIC medoid (the budget "
                        "int(fraction * N) is spread too thin); it is kept")
        _, knn_d2, report.neighbors = nb.kneighbors(
            grads, k_c, backend=params["neighbors"], random_state=params["random_state"])
        return knn_density(knn_d2), np.zeros(rows.size, dtype=bool), None
    res, knn_d2, report.neighbors = epic_class(
        grads, n_medoids=data.n_medoids, cluster_threshold=params["cluster_threshold"],
        k=k_c, neighbors=params["neighbors"], dense_max=params["dense_max"],
        random_state=params["random_state"])
    report.epic_mode, report.n_medoids = res.mode, int(res.medoids.size)
    return knn_density(knn_d2), res.drop, res.cluster_size


def spectral_rule(data, rows, params, report, messages):
    """Spectral signatures on the class's features, then :func:`density_rule`."""
    s = spectral_scores(data.features[rows])
    return s, density_rule(s, params), None


# -- vote rules ----------------------------------------------------------------------------

@dataclass
class Voters:
    """The scored rows and their neighbours over all classes, for a vote rule.

    Attributes
    ----------
    labels : ndarray of shape (m,)
        Labels of the scored rows.
    idx : ndarray of shape (m, k)
        Each scored row's nearest rows over all classes, as positions in the
        scored rows.
    found : CrossNeighbors
        The search's result: per class, each row's nearest rows of its own
        class (``own``), and the store of features (for the rare clumps).
    act : ndarray of shape (m,)
        Row numbers of the scored rows in the epoch.
    pos : ndarray of shape (n,)
        Inverse of ``act`` (-1 for rows not scored).
    num_classes : int
    executor : concurrent.futures.Executor
        Runs the search's tasks.
    logits, features, history : the epoch's, or None
        Given in memory only, to the methods that need them
        (``trajectory``: logits and history).
    scored_features : callable
        Returns the scored rows' features (m, d) float32, in memory or read
        back from the spill (``label-support``'s head).
    signals : list of (str, ndarray of shape (m,), bool)
        Filled by the rule: which signal flagged which rows (for reviewers,
        :mod:`gradscore.review`).
    probs : ndarray of shape (m, num_classes) or None
        Filled by a rule that fits its own head (``label-support``): the
        head's probabilities, for the suggested labels.
    """

    labels: np.ndarray
    idx: np.ndarray
    found: object
    act: np.ndarray
    pos: np.ndarray
    num_classes: int
    executor: object
    logits: np.ndarray = None
    features: np.ndarray = None
    history: object = None
    scored_features: Callable = None
    signals: list = field(default_factory=list)
    probs: np.ndarray = None


def deep_knn_votes(v):
    """Deep k-NN: the share of a row's neighbours carrying its label; drop
    when its label is not a plurality."""
    agreement, lone = deep_knn_agreement(v.labels, v.idx, v.num_classes)
    v.signals.append(("neighbours", lone))
    return agreement, lone


def groups_votes(v):
    """Groups judged foreign are dropped whole (their members score the share of
    their label around the group), then deep k-NN's rule without them voting."""
    agreement, drop, _ = _groups(v)
    return agreement, drop


def trajectory_votes(v):
    """``groups``, and also the groups training pulled far towards their label
    since the reference export (they score minus their lift)."""
    agreement, drop, trees = _groups(v)
    moved = _trajectory(v.labels, v.logits[v.act], v.history.take(v.act), trees)
    v.signals.append(("trajectory", moved.drop))
    if moved.drop.any():
        agreement = np.where(moved.drop, np.fmin(agreement, -moved.lift), agreement)
        drop |= moved.drop
    return agreement, drop


def label_support_votes(v):
    """Label support: the mean of the neighbours' vote for the label and the
    probability a head fitted without the suspects gives it."""
    support, drop, share, prob = _label_support_parts(v.labels, v.scored_features(), v.idx,
                                                      num_classes=v.num_classes)
    v.probs = prob
    v.signals.append(("neighbours", share <= 0.5))
    if prob is not None:
        v.signals.append(("head", prob[np.arange(v.labels.size), v.labels] < 0.5))
    return support, drop


def _groups(v):
    """``groups``' votes and the classes' single-linkage trees (for ``trajectory``)."""
    n = v.pos.size
    trees = []
    for c, (rows, own_idx, own_d2) in sorted(v.found.own.items()):
        if rows.size < 3:
            continue
        local = np.full(n, -1, np.int64)
        local[rows] = np.arange(rows.size)
        ei, ej, _ = tree_edges(local[own_idx], own_d2.astype(np.float64))
        trees.append((c, v.pos[rows], ei, ej))
    v.found.own = None
    group_drop, share = foreign_groups(
        v.labels, v.idx, trees, num_classes=v.num_classes,
        clump_voters=_clump_voters(v.found, v.act, v.pos, v.executor))
    agreement, lone = deep_knn_agreement(v.labels, v.idx, v.num_classes, ignore=group_drop)
    v.signals += [("neighbours", lone), ("group", group_drop)]
    return np.fmin(agreement, share), lone | group_drop, trees


def _trajectory(labels, logits, history, trees):
    """The trajectory rule on the scored rows, warning when the reference carries no signal."""
    # The reference predicts a row's label where its own-label margin is positive.
    res = trajectory_drop(margin_gain(history, labels, logits), history.margin[0] > 0,
                          labels, trees)
    if not res.acted:
        warnings.warn(
            f"trajectory: the reference export gives only {100 * res.reference_agreement:.0f}% "
            "of the rows their label (a freshly initialised head or network?), so its margins "
            "carry no signal and only groups' rule ran", GradscoreWarning, stacklevel=2)
    return res


def _clump_voters(found, act, pos, executor):
    """``clump_voters`` for :func:`foreign_groups`, over the search's store.

    Voters and members are positions in ``act`` (``pos`` maps a row number
    back to its position); the store works in row numbers. Each call is one
    pass over the features (the clumps' centres, then every class against
    them).
    """
    def voters(members, ignore, k):
        rows = [act[m] for m in members]
        near = nearest_to_centres_in_store(found.store, found.cells, rows, act[ignore], k,
                                           executor=executor)
        return [pos[r] for r in near]
    return voters
