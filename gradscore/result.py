"""What a scoring run returns: per-example arrays and per-class reports.

The in-memory, spilled and distributed runs all assemble the same
:class:`ScoreResult` (:func:`assemble_result`), so every consumer (keep-list
writers, reports, the CLI summary) reads one type.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

#: Decision codes in :attr:`ScoreResult.decision`.
KEPT, DROPPED, DROPPED_BEFORE = "kept", "dropped", "dropped-before"


@dataclass
class ClassReport:
    """What happened in one class.

    ``n`` counts the class's examples in the input and ``n_scored`` those
    that were scored (all of them under the ``"intersect"`` cumulative rule;
    only those still kept under ``"survivors"``). ``flagged`` counts the
    scored examples this round's rule would drop, ``dropped`` those of them
    that were still kept (the new drops), ``dropped_before`` those dropped
    at an earlier round, and ``dropped_total`` the two together.
    ``cap_hit`` says that ``max_drop_fraction`` limited this round's drops,
    ``total_cap_hit`` that ``max_total_drop_fraction`` did.
    """

    label: int
    n: int
    n_scored: int
    k_used: int
    neighbors: str
    dropped: int
    dropped_before: int
    cap_hit: bool
    flagged: int = 0
    dropped_total: int = 0
    total_cap_hit: bool = False
    epic_mode: str = None
    n_medoids: int = None


@dataclass
class ScoreResult:
    """Per-example outcome of :func:`gradscore.score`.

    Attributes
    ----------
    keep : ndarray of shape (n_samples,), bool
        True for examples to keep training on.
    scores : ndarray of shape (n_samples,), float64
        Typicality, higher = more typical: k-NN density in gradient space
        for ``epic`` and ``knn-density``, neighbour label agreement for
        ``deep-knn`` (for ``groups``: among voters outside dropped groups,
        and for a dropped group's members at most the share of their label
        around the group), minus the spectral outlier score for
        ``spectral``. NaN
        for examples not scored (dropped before, or alone in their class).
    cluster_size : ndarray of shape (n_samples,), int64
        Size of the EPIC cluster each example joined; -1 where EPIC did not
        run on it.
    decision : ndarray of shape (n_samples,), str
        ``"kept"``, ``"dropped"`` (dropped at this round) or
        ``"dropped-before"`` (dropped at an earlier one).
    flagged : ndarray of shape (n_samples,), bool
        True where this round's rule dropped the example, whether or not an
        earlier round had dropped it already (False where not scored).
    classes : list of ClassReport
    params : dict
        Every parameter of the run, for provenance.
    suggested_label : ndarray of shape (n_samples,), int64, or None
        For each flagged example, the label its neighbours and the head back
        instead of its own (:mod:`gradscore.review`); -1 where not flagged.
        None where the run could not tell (a spilled run of a per-class
        method: its logits are not in memory).
    suggestion_confidence : ndarray of shape (n_samples,), float64, or None
        How sure the suggestion is, in [0, 1] (higher = surer); NaN where
        there is none.
    signal : ndarray of shape (n_samples,), object, or None
        Which signal flagged the example (``"neighbours+head"``,
        ``"group"``, ``"epic+head"``, ...); ``""`` where not flagged.
    bad_share : float or None
        Estimated share of mislabelled examples in the data set (confident
        learning on the labels and the logits,
        :func:`gradscore.review.estimate_bad_share`); None where not computed.
    """

    keep: np.ndarray
    scores: np.ndarray
    cluster_size: np.ndarray
    decision: np.ndarray
    flagged: np.ndarray
    classes: list
    params: dict = field(default_factory=dict)
    suggested_label: np.ndarray = None
    suggestion_confidence: np.ndarray = None
    signal: np.ndarray = None
    bad_share: float = None

    def attach_review(self, review, bad_share=None):
        """Take ``review``'s suggestions for this run's flagged rows (others cleared)."""
        from .review import NO_SUGGESTION
        off = ~self.flagged
        self.suggested_label = np.where(off, NO_SUGGESTION, review.suggested)
        self.suggestion_confidence = np.where(off, np.nan, review.confidence)
        self.signal = np.where(off, "", review.signal).astype(object)
        self.bad_share = None if bad_share is None else float(bad_share)

    def summary(self):
        """JSON-ready dict: totals and per-class counts."""
        return {
            "n": int(self.keep.size),
            "kept": int(self.keep.sum()),
            "dropped": int((self.decision == DROPPED).sum()),
            "dropped_before": int((self.decision == DROPPED_BEFORE).sum()),
            "flagged": int(self.flagged.sum()),
            "estimated_bad_share": self.bad_share,
            "cap_hit_classes": [c.label for c in self.classes if c.cap_hit],
            "total_cap_hit_classes": [c.label for c in self.classes if c.total_cap_hit],
            "params": self.params,
            "classes": [asdict(c) for c in self.classes],
        }


def assemble_result(active, drop, **arrays):
    """The :class:`ScoreResult` of a run: keep and decision follow from
    ``active`` (None: all) and this round's new drops."""
    if active is None:
        active = np.ones(drop.size, dtype=bool)
    keep = active & ~drop
    decision = np.where(keep, KEPT, np.where(active, DROPPED, DROPPED_BEFORE)).astype(object)
    return ScoreResult(keep=keep, decision=decision, **arrays)
