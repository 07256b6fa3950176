"""The method registry: every fact about a scoring method, said once.

One :class:`Method` record per method: its name, what it needs (features, a
history of earlier exports, other classes' rows), whether it runs from a
spill and on Dask, its score's name and meaning for reports (scores are
higher = more typical for every method), the parameters it reads and any
check of them beyond :data:`PARAMETER_CHECKS`, and its rule (a function of
:mod:`gradscore.scoring.rules`). The scoring stages, the reports and the
CLI read these records; adding a method is its module in
:mod:`gradscore.selection`, its rule, and one record in :data:`METHODS`.

Examples
--------
>>> from gradscore.scoring.methods import METHODS
>>> list(METHODS)[:3]
['epic', 'knn-density', 'deep-knn']
>>> METHODS["groups"].needs_features, METHODS["groups"].spills
(True, True)
"""

from dataclasses import dataclass
from typing import Callable

from .. import neighbors as nb
from .._validation import check_choice, check_fraction, check_int
from ..errors import GradscoreError
from ..gradients import GRADIENTS
from ..selection.label_support import THRESHOLD as LABEL_SUPPORT_THRESHOLD
from . import rules

#: How a previous keep-list combines with this round (see :func:`gradscore.score`).
CUMULATIVE_RULES = ("intersect", "survivors")
#: ``neighbors`` values the cross-class search takes: ``"auto"`` (exact when
#: cheap, else k-means cells) and ``"brute"`` (always exact).
CROSS_BACKENDS = ("auto", "brute")


def _optional(check):
    return lambda name, v: None if v is None else check(name, v)


#: The check of each of :func:`gradscore.score`'s scoring parameters, as
#: ``check(name, value) -> value`` (the defaults are :func:`gradscore.score`'s,
#: :data:`gradscore.scoring.memory.SCORE_DEFAULTS`).
PARAMETER_CHECKS = {
    "method": lambda name, v: check_choice(name, v, tuple(METHODS)),
    "gradient": lambda name, v: check_choice(name, v, GRADIENTS),
    "fraction": lambda name, v: check_fraction(name, v, low_open=True),
    "cluster_threshold": lambda name, v: check_int(name, v, minimum=0),
    "k": lambda name, v: check_int(name, v, minimum=1),
    "drop_fraction": _optional(check_fraction),
    "z_threshold": lambda name, v: float(v),
    "max_drop_fraction": check_fraction,
    "max_total_drop_fraction": check_fraction,
    "cumulative": lambda name, v: check_choice(name, v, CUMULATIVE_RULES),
    "label_smoothing": check_fraction,
    "neighbors": lambda name, v: check_choice(name, v, nb.backend_names()),
    "dense_max": lambda name, v: check_int(name, v, minimum=0),
    "num_classes": _optional(lambda name, v: check_int(name, v, minimum=1)),
    "random_state": _optional(check_int),
}

#: Parameters every method reads (the caps, the cumulative rule, the seed).
COMMON_PARAMETERS = ("max_drop_fraction", "max_total_drop_fraction", "cumulative",
                     "num_classes", "random_state")


def check_cross_backend(method, neighbors):
    """The cross-class search takes ``neighbors`` "auto" or "brute" only."""
    if neighbors not in CROSS_BACKENDS:
        raise GradscoreError(
            f"method={method!r} searches neighbours over all classes with its own search "
            f"(exact, or over k-means cells when exact would be slow); 'neighbors' must be "
            f"'auto' or 'brute' (always exact) for it; got {neighbors!r}")


def _check_cross(params):
    check_cross_backend(params["method"], params["neighbors"])


@dataclass(frozen=True)
class Method:
    """What the scoring stages, reports and CLI need to know about one method.

    Attributes
    ----------
    name : str
    summary : str
        One sentence for the CLI's help.
    rule : callable
        A class rule (``cross_class`` False) or a vote rule (True); see
        :mod:`gradscore.scoring.rules`.
    needs_features : bool
        Reads the penultimate features whatever the ``gradient``.
    cross_class : bool
        Decides from votes over all classes (computed before the per-class
        tasks, :mod:`gradscore.scoring.crossclass`), not from one class's rows.
    needs_history : bool
        Needs earlier exports of the run (``history``).
    medoid_budget : bool
        Needs EPIC's per-class medoid budgets, computed over all classes first.
    in_memory_why : str or None
        None when the method runs from a spill and on Dask; else why it
        cannot, with the way out (said to the user as is).
    score_name, score_meaning : str
        The scores' name (a plot's heading) and one sentence of HTML on what
        they are, for reports.
    threshold_line : str
        Which line a report draws per class: ``"fixed"`` (at
        ``fixed_threshold``), ``"robust"`` (the robust rule's, without
        ``drop_fraction``) or ``"dropped"`` (the highest dropped score).
    fixed_threshold : float or None
        The score below which the method drops, where it is fixed.
    parameters : tuple of str
        :func:`gradscore.score` parameters it reads, besides
        :data:`COMMON_PARAMETERS`.
    check : callable or None
        Further check of the checked parameters (a dict), raising
        :class:`GradscoreError`.
    """

    name: str
    summary: str
    rule: Callable
    needs_features: bool = False
    cross_class: bool = False
    needs_history: bool = False
    medoid_budget: bool = False
    in_memory_why: str = None
    score_name: str = "Density score"
    score_meaning: str = (
        "Scores: k-NN density in gradient space, <b>higher = denser = more typical</b>; "
        "isolated examples (low scores, tiny EPIC clusters) are the likely poisons.")
    threshold_line: str = "dropped"
    fixed_threshold: float = None
    parameters: tuple = ()
    check: Callable = None

    @property
    def spills(self):
        """Whether it runs from a spill and on a client or executor."""
        return self.in_memory_why is None


_VOTE_PARAMETERS = ("k", "neighbors")
_SHARE = ("Neighbours' share of the label",
          "Scores: the share of an example's k nearest neighbours (over all classes) "
          "that carry its label; <b>higher = more typical</b>.")
_GROUP_SHARE = ("Scores: the share of an example's k nearest neighbours (over all classes) "
                "that carry its label, for members of a group judged foreign the share of "
                "their label around the group; <b>higher = more typical</b>.")

_RECORDS = [
    Method("epic", "drop examples left in tiny facility-location clusters of their class's "
                   "gradients (the paper's rule).",
           rules.epic_rule, medoid_budget=True,
           parameters=("gradient", "label_smoothing", "fraction", "cluster_threshold", "k",
                       "neighbors", "dense_max")),
    Method("knn-density", "drop the least dense in gradient space (--drop-fraction, else a "
                          "robust threshold).",
           rules.knn_density_rule, threshold_line="robust",
           parameters=("gradient", "label_smoothing", "k", "neighbors", "drop_fraction",
                       "z_threshold")),
    Method("deep-knn", "drop an example whose label is not a plurality of its k nearest "
                       "neighbours' over all classes (features).",
           rules.deep_knn_votes, needs_features=True, cross_class=True,
           score_name=_SHARE[0], score_meaning=_SHARE[1], parameters=_VOTE_PARAMETERS,
           check=_check_cross),
    Method("spectral", "spectral signatures of each class's features, dropping by "
                       "--drop-fraction or the robust threshold.",
           rules.spectral_rule, needs_features=True,
           score_name="Minus the spectral score",
           score_meaning="Scores: minus the squared projection of an example's centred "
                         "features on its class's top singular vector; <b>higher = more "
                         "typical</b>.",
           parameters=("drop_fraction", "z_threshold")),
    Method("groups", "tight groups set apart from their class whose surroundings carry "
                     "another label are dropped whole, then deep-knn's rule.",
           rules.groups_votes, needs_features=True, cross_class=True,
           score_name=_SHARE[0], score_meaning=_GROUP_SHARE, parameters=_VOTE_PARAMETERS,
           check=_check_cross),
    Method("trajectory", "groups, plus the groups training pulled far towards their label "
                         "(needs --history).",
           rules.trajectory_votes, needs_features=True, cross_class=True, needs_history=True,
           in_memory_why="reads the history of every row in memory, so it cannot run from "
                         "a spill, a client or an executor; run it in memory "
                         "(spill='never', no client), or use method='groups', which runs "
                         "everywhere",
           score_name=_SHARE[0],
           score_meaning=_GROUP_SHARE[:-len("; <b>higher = more typical</b>.")]
           + ", for members of a group training pulled towards its label minus its lift; "
             "<b>higher = more typical</b>.",
           parameters=_VOTE_PARAMETERS, check=_check_cross),
    Method("label-support", "drop an example when its neighbours' vote for its label and a "
                            "head fitted without the suspects both give it little support "
                            "(the audit's default).",
           rules.label_support_votes, needs_features=True, cross_class=True,
           score_name="Label support",
           score_meaning="Scores: label support, the mean of the share of an example's k "
                         "nearest neighbours (over all classes) that carry its label and the "
                         "probability a head fitted without the suspects gives its label; "
                         "<b>higher = more typical</b>; examples below the threshold are "
                         "dropped.",
           threshold_line="fixed", fixed_threshold=LABEL_SUPPORT_THRESHOLD,
           parameters=_VOTE_PARAMETERS, check=_check_cross),
]

#: The methods by name, in the order the CLI and docs list them.
METHODS = {m.name: m for m in _RECORDS}


def needs_features(method, gradient):
    """Whether this method/gradient pair reads penultimate features."""
    return gradient == "last-layer" or METHODS[method].needs_features


def cli_help():
    """The ``--method`` help: one line per method."""
    return " ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
