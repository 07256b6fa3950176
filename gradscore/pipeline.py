"""Score one epoch: gradients -> neighbours -> density -> selection, class by class.

:func:`score` is the in-memory entry point; the CLI and the file-based helpers
call :func:`_score` after validating once.
"""

from dataclasses import dataclass, field, asdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
import os
import inspect

import numpy as np
from threadpoolctl import threadpool_limits

from . import neighbors as nb
from ._validation import (check_choice, check_float_matrix, check_fraction,
                          check_int, check_labels)
from .density import knn_density
from .errors import GradscoreError
from .gradients import GRADIENTS, class_gradients
from .gradients import DenseGradients
from .selection import (apply_cap, drop_by_fraction, drop_by_robust_threshold,
                        epic_from_similarity, epic_sparse, limit_drops, medoid_budgets)
from .selection.feature_space import deep_knn_agreement, spectral_scores
from .selection.groups import foreign_groups, tree_edges

METHODS = ("epic", "knn-density", "deep-knn", "spectral", "groups")
#: How a previous keep-list combines with this round (see :func:`score`).
CUMULATIVE_RULES = ("intersect", "survivors")
#: Methods that compare examples by their penultimate features, not gradients.
FEATURE_METHODS = ("deep-knn", "spectral", "groups")

#: Classes up to this size run EPIC on the dense kernel (exact reference
#: semantics; n^2 * 8 bytes, 200 MB at 5,000); larger ones on the k-NN
#: graph. 5,000 puts CIFAR-10's classes, the paper's main setting, on the
#: exact path. See docs/method.md and docs/benchmarks.md.
DENSE_MAX = 5000

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
    """Per-example outcome of :func:`score`.

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
    """

    keep: np.ndarray
    scores: np.ndarray
    cluster_size: np.ndarray
    decision: np.ndarray
    flagged: np.ndarray
    classes: list
    params: dict = field(default_factory=dict)

    def summary(self):
        """JSON-ready dict: totals and per-class counts."""
        return {
            "n": int(self.keep.size),
            "kept": int(self.keep.sum()),
            "dropped": int((self.decision == DROPPED).sum()),
            "dropped_before": int((self.decision == DROPPED_BEFORE).sum()),
            "flagged": int(self.flagged.sum()),
            "cap_hit_classes": [c.label for c in self.classes if c.cap_hit],
            "total_cap_hit_classes": [c.label for c in self.classes if c.total_cap_hit],
            "params": self.params,
            "classes": [asdict(c) for c in self.classes],
        }


def score(labels, logits, features=None, *, method="epic", gradient="logits",
          fraction=0.2, cluster_threshold=1, k=20, drop_fraction=None,
          z_threshold=3.0, max_drop_fraction=0.5, max_total_drop_fraction=0.5,
          cumulative="intersect", label_smoothing=0.0, neighbors="auto",
          dense_max=DENSE_MAX, num_classes=None, active=None, random_state=0,
          progress=False, n_jobs=None):
    """Decide which examples to keep, from one epoch's labels, logits and features.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Integer labels in ``[0, n_classes)``.
    logits : array-like of shape (n_samples, n_classes)
        The final layer's pre-softmax outputs (float16/32/64).
    features : array-like of shape (n_samples, n_features), default=None
        Input of the final linear layer; needed for ``gradient="last-layer"``.
    method : {"epic", "knn-density", "deep-knn", "spectral", "groups"}, default="epic"
        ``"epic"``: drop members of EPIC clusters of size <=
        ``cluster_threshold``. ``"knn-density"``: drop the least dense, by
        ``drop_fraction`` or else a robust per-class threshold.
        ``"deep-knn"`` (needs ``features``): drop an example whose label is
        not a plurality label of its k nearest neighbours in feature space,
        over all classes. ``"spectral"`` (needs ``features``): spectral
        signatures per class, dropping by ``drop_fraction`` or the robust
        threshold. See :mod:`gradscore.selection.feature_space`.
        ``"groups"`` (needs ``features``): per class, tight groups set
        apart from the rest of their class (single linkage over the class's
        k-NN graph in feature space) are dropped whole when the ``k``
        examples nearest their centre outside the group mostly carry
        another label; then deep-kNN's rule for single examples, with the
        dropped groups no longer voting. Catches clean-label poisons that
        sit together as well as lone dirty-label ones. See
        :mod:`gradscore.selection.groups`.
    gradient : {"logits", "last-layer"}, default="logits"
        Which closed-form gradient to compare examples by.
    fraction : float, default=0.2
        EPIC: medoids as a fraction of the scored examples (paper: 0.1-0.3),
        split over classes in proportion to their sizes as the authors' code
        does (:func:`gradscore.selection.epic.medoid_budgets`).
    cluster_threshold : int, default=1
        EPIC: drop examples in clusters of at most this many members.
    k : int, default=20
        Neighbours per example for the density score and the EPIC graph;
        clamped to ``n_class - 1`` with a warning for small classes.
    drop_fraction : float, default=None
        knn-density: drop this fraction of each class, least dense first.
    z_threshold : float, default=3.0
        knn-density without ``drop_fraction``: drop scores below
        ``median - z_threshold * 1.4826 * MAD`` per class.
    max_drop_fraction : float, default=0.5
        Never drop more than this fraction of a class's scored examples in
        one call (least dense first); the class report says when it bit.
    max_total_drop_fraction : float, default=0.5
        Never let the examples dropped before plus the new drops exceed
        this fraction of a class (the new drops are cut, least dense
        first); the class report's ``total_cap_hit`` says when it bit.
    cumulative : {"intersect", "survivors"}, default="intersect"
        How ``active`` (an earlier round's keep-list) combines with this
        round. ``"intersect"``, the authors' rule: score and cluster every
        example, and keep those kept now and before. ``"survivors"``: score
        only the examples still kept (each round then re-clusters a thinner
        set, which drops more at every round).
    label_smoothing : float, default=0.0
        Label smoothing used in training; it changes the gradient's target.
    neighbors : str, default="auto"
        Neighbour backend (see :mod:`gradscore.neighbors`).
    dense_max : int, default=5000
        EPIC runs on the exact dense kernel for classes up to this size,
        on the k-NN graph above it.
    num_classes : int, default=None
        Number of classes; defaults to ``logits.shape[1]``.
    active : array-like of shape (n_samples,), bool, default=None
        False for examples dropped at an earlier round: they stay dropped
        (see ``cumulative``). Default: all active.
    random_state : int, default=0
        Seed for randomised neighbour backends and for the classes that give
        back a medoid when the per-class EPIC budgets round up.
    progress : bool, default=False
        Show a progress bar over classes on stderr.
    n_jobs : int, default=None
        Threads scoring classes side by side; None or -1 means one per CPU
        core (as in cleanlab). Results do not depend on it.

    Returns
    -------
    result : ScoreResult
        ``keep`` mask, density ``scores`` (higher = denser), EPIC
        ``cluster_size``, ``decision`` and per-class reports.

    Examples
    --------
    >>> import numpy as np, gradscore
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50)
    >>> logits = rng.normal(size=(100, 2)) + 4 * np.eye(2)[labels]
    >>> result = gradscore.score(labels, logits)
    >>> result.keep.shape, result.scores.shape
    ((100,), (100,))
    """
    labels = np.asarray(labels)
    if logits is None:
        raise GradscoreError("logits is required (compute it from features, weight and bias first)")
    logits_arr = np.asarray(logits)
    if logits_arr.ndim != 2:
        raise GradscoreError(f"logits must be 2-D (n_samples, n_classes); got shape {logits_arr.shape}")
    if num_classes is None:
        num_classes = logits_arr.shape[1]
    num_classes = check_int("num_classes", num_classes, minimum=1)
    labels = check_labels(labels, num_classes=num_classes)
    logits_arr = check_float_matrix(logits_arr, "classes", n_rows=labels.size,
                                    n_cols=num_classes, where="logits")
    check_choice("method", method, METHODS)
    check_choice("gradient", gradient, GRADIENTS)
    if needs_features(method, gradient) or features is not None:
        check_features_given(method, gradient, features)
        features = check_float_matrix(features, "features", n_rows=labels.size)
    if active is not None:
        active = np.asarray(active)
        if active.shape != labels.shape or active.dtype != bool:
            raise GradscoreError(
                f"active must be a bool array of shape {labels.shape}; "
                f"got {active.dtype} of shape {active.shape}")
    params = check_params(
        method=method, gradient=gradient, fraction=fraction,
        cluster_threshold=cluster_threshold, k=k, drop_fraction=drop_fraction,
        z_threshold=z_threshold, max_drop_fraction=max_drop_fraction,
        max_total_drop_fraction=max_total_drop_fraction, cumulative=cumulative,
        label_smoothing=label_smoothing, neighbors=neighbors, dense_max=dense_max,
        num_classes=num_classes, random_state=random_state)
    return _score(labels, logits_arr, features, params, active=active, progress=progress,
                  n_jobs=check_n_jobs(n_jobs))


#: Defaults of :func:`score`'s scoring parameters, for callers that fill in
#: only some (``score_files``, ``DropSchedule``).
SCORE_DEFAULTS = {name: p.default for name, p in inspect.signature(score).parameters.items()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY
                  and name not in ("active", "progress", "n_jobs")}


def needs_features(method, gradient):
    """Whether this method/gradient pair reads penultimate features."""
    return gradient == "last-layer" or method in FEATURE_METHODS


def check_features_given(method, gradient, features):
    if features is None and needs_features(method, gradient):
        why = f"method={method!r}" if method in FEATURE_METHODS else "gradient='last-layer'"
        raise GradscoreError(f"{why} needs features; got None")


def check_params(**given):
    """Validate scoring parameters (defaults from :func:`score`) into one dict.

    Raises TypeError for an unknown name, as a call to :func:`score` would.
    """
    unknown = sorted(set(given) - set(SCORE_DEFAULTS))
    if unknown:
        raise TypeError(f"score() got unexpected keyword argument(s): {', '.join(unknown)}")
    p = {**SCORE_DEFAULTS, **given}
    return dict(
        method=check_choice("method", p["method"], METHODS),
        gradient=check_choice("gradient", p["gradient"], GRADIENTS),
        fraction=check_fraction("fraction", p["fraction"], low_open=True),
        cluster_threshold=check_int("cluster_threshold", p["cluster_threshold"], minimum=0),
        k=check_int("k", p["k"], minimum=1),
        drop_fraction=None if p["drop_fraction"] is None else
        check_fraction("drop_fraction", p["drop_fraction"]),
        z_threshold=float(p["z_threshold"]),
        max_drop_fraction=check_fraction("max_drop_fraction", p["max_drop_fraction"]),
        max_total_drop_fraction=check_fraction("max_total_drop_fraction",
                                               p["max_total_drop_fraction"]),
        cumulative=check_choice("cumulative", p["cumulative"], CUMULATIVE_RULES),
        label_smoothing=check_fraction("label_smoothing", p["label_smoothing"]),
        neighbors=check_choice("neighbors", p["neighbors"], nb.backend_names()),
        dense_max=check_int("dense_max", p["dense_max"], minimum=0),
        num_classes=None if p["num_classes"] is None else
        check_int("num_classes", p["num_classes"], minimum=1),
        random_state=None if p["random_state"] is None else
        check_int("random_state", p["random_state"]),
    )


def check_n_jobs(n_jobs):
    if n_jobs is not None:
        n_jobs = check_int("n_jobs", n_jobs)
        if n_jobs == 0:
            raise GradscoreError("'n_jobs' must be a positive int, -1 or None; got 0")
    return n_jobs


def _n_threads(n_jobs, n_tasks):
    if n_jobs is None or n_jobs < 0:
        n_jobs = os.cpu_count() or 1
    return max(1, min(n_jobs, n_tasks))


def one_blas_thread_each(jobs):
    """Context for running tasks on ``jobs`` threads: one BLAS thread each.

    As scikit-learn does for nested parallelism: with classes on several
    threads, BLAS's own threads would compete with them for the same cores
    (OpenBLAS threads spin while they wait). Measured on the ImageNet shape
    on 2 cores: 250 CPU s and 136 s wall with BLAS's default threads, 181 CPU
    s and 109 s with one (docs/benchmarks.md, issue 10). With one task
    thread, BLAS keeps its threads.
    """
    if jobs > 1:
        return threadpool_limits(limits=1, user_api="blas")
    return nullcontext()


def _score_class(c, rows_all, rows, was_kept, *, labels, logits, features, method,
                 gradient, fraction, cluster_threshold, k, drop_fraction, z_threshold,
                 max_drop_fraction, max_total_drop_fraction, cumulative, label_smoothing,
                 neighbors, dense_max, num_classes, random_state, n_medoids=None,
                 agreement=None, deep_drop=None, k_all=None, used=None):
    """Score one class.

    ``rows_all`` are the class's rows, ``rows`` those to score and
    ``was_kept`` (aligned with ``rows``) whether each was still kept before
    this round. Returns ``(report, rows, scores, cluster_size, flagged,
    drop, warnings)`` where the arrays follow ``rows`` (which may be
    reordered) and are None when the class was too small to score;
    ``flagged`` is this round's rule and ``drop`` the new drops after both
    caps.
    """
    dropped_before = int(rows_all.size - np.count_nonzero(was_kept)) \
        if cumulative == "intersect" else int(rows_all.size - rows.size)
    report = ClassReport(label=c, n=rows_all.size, n_scored=rows.size, k_used=0,
                         neighbors="none", dropped=0, dropped_before=dropped_before,
                         cap_hit=False, dropped_total=dropped_before)
    messages = []
    if rows.size < 2:
        if rows.size:
            messages.append(f"class {c} has {rows.size} example to score; it is kept unscored")
        return report, rows, None, None, None, None, messages
    csize = None
    if method in ("deep-knn", "groups"):
        report.k_used, report.neighbors = k_all, used
        s = agreement[rows]
        d = deep_drop[rows]
    elif method == "spectral":
        # Canonical order (see below): the SVD's sums then do not depend on
        # the order the rows came in, so a spilled run matches bit for bit.
        order = _canonical_order(logits[rows], features[rows])
        rows, was_kept = rows[order], was_kept[order]
        s = spectral_scores(features[rows])
        d = drop_by_fraction(s, drop_fraction) if drop_fraction is not None \
            else drop_by_robust_threshold(s, z_threshold)
    else:
        # Canonical order within the class (by content, not input position):
        # greedy ties and floating-point sums then come out the same however
        # the caller ordered the rows, so permuting rows permutes decisions.
        order = _canonical_order(logits[rows], None if gradient == "logits"
                                 else features[rows])
        rows, was_kept = rows[order], was_kept[order]
        k_c = min(k, rows.size - 1)
        if k_c < k:
            messages.append(f"class {c} has {rows.size} examples, too few for k={k}; "
                            f"using k={k_c}")
        report.k_used = k_c
        grads = class_gradients(
            labels[rows], logits[rows], None if features is None else features[rows],
            gradient=gradient, num_classes=num_classes, label_smoothing=label_smoothing)
        sim = None
        if method == "epic" and rows.size <= dense_max:
            # EPIC's kernel over every pair and, unless the k-d tree serves
            # the density score, its k-NN, in one pass over the Gram matrix.
            tree = nb.resolve_backend(grads, neighbors) == "kdtree"
            sim, knn_idx, knn_d2 = nb.similarity_and_knn(grads, 0 if tree else k_c,
                                                         1.0 / grads.dim)
            if tree:
                knn_idx, knn_d2, report.neighbors = nb.kneighbors(grads, k_c, backend="kdtree")
            else:
                report.neighbors = "dense"
        else:
            knn_idx, knn_d2, report.neighbors = nb.kneighbors(
                grads, k_c, backend=neighbors, random_state=random_state)
        s = knn_density(knn_d2)
        if method == "epic" and n_medoids == 0:
            messages.append(f"class {c} got no EPIC medoid (the budget int(fraction * N) "
                            "is spread too thin); it is kept")
            d = np.zeros(rows.size, dtype=bool)
        elif method == "epic":
            if sim is not None:
                res = epic_from_similarity(sim, n_medoids=n_medoids,
                                           cluster_threshold=cluster_threshold)
            else:
                res = epic_sparse(grads, knn_idx, knn_d2, n_medoids=n_medoids,
                                  cluster_threshold=cluster_threshold)
            del sim
            csize = res.cluster_size
            report.epic_mode, report.n_medoids = res.mode, int(res.medoids.size)
            d = res.drop
        elif drop_fraction is not None:
            d = drop_by_fraction(s, drop_fraction)
        else:
            d = drop_by_robust_threshold(s, z_threshold)
    flagged, report.cap_hit = apply_cap(d, s, max_drop_fraction)
    new = flagged & was_kept
    # The cumulative cap: drops before plus new drops stay within the limit.
    room = max(0, int(np.floor(max_total_drop_fraction * rows_all.size)) - dropped_before)
    new, report.total_cap_hit = limit_drops(new, s, room)
    report.flagged = int(flagged.sum())
    report.dropped = int(new.sum())
    report.dropped_total = dropped_before + report.dropped
    return report, rows, s, csize, flagged, new, messages


def _foreign_groups(labels, logits, features, nbr_idx, *, k, neighbors, random_state,
                    num_classes, n_jobs):
    """The ``groups`` method's group pass over every class.

    ``nbr_idx`` is every row's k-NN list in feature space over all classes.
    Returns ``(drop, own_share)`` over the given rows: members of groups
    judged foreign to their label, and the lowest share of their own label
    around such a group (NaN for rows in no dropped group).
    """
    def one(c):
        rows = np.flatnonzero(labels == c)
        if rows.size < 3:
            return None
        # Canonical order, as for EPIC: permuting the input permutes the result.
        rows = rows[_canonical_order(logits[rows], features[rows])]
        k_c = min(k, rows.size - 1)
        idx, d2, _ = nb.kneighbors(DenseGradients(features[rows]), k_c, backend=neighbors,
                                   random_state=random_state)
        return (c, rows) + tree_edges(idx, d2)[:2]

    jobs = _n_threads(n_jobs, num_classes)
    with ThreadPoolExecutor(max_workers=jobs) as pool, one_blas_thread_each(jobs):
        trees = [t for t in (pool.map(one, range(num_classes)) if jobs > 1
                             else map(one, range(num_classes))) if t is not None]
    return foreign_groups(labels, nbr_idx, trees, num_classes=num_classes,
                          features=np.asarray(features, dtype=np.float64))


def _canonical_order(logits, features=None):
    """Order rows by content: lexicographic for narrow rows, else by a fixed
    random projection (ties there mean equal rows, or practically so)."""
    x = logits if features is None else np.concatenate([logits, features], axis=1)
    if x.shape[1] <= 32:
        return np.lexsort(x.T[::-1])
    w = np.random.default_rng(12345).standard_normal(x.shape[1])
    return np.argsort(x.astype(np.float64) @ w, kind="stable")


def _score(labels, logits, features, params, *, active=None, progress=False, n_jobs=None):
    """:func:`score` on validated input; ``params`` from :func:`check_params`."""
    method, k, neighbors = params["method"], params["k"], params["neighbors"]
    num_classes, random_state = params["num_classes"], params["random_state"]
    n = labels.size
    if active is None:
        active = np.ones(n, dtype=bool)
    # The authors' rule scores every example; "survivors" only the kept ones.
    scored = np.ones(n, dtype=bool) if params["cumulative"] == "intersect" else active
    # One stable sort groups rows by class without a pass per class.
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    present = [c for c in range(num_classes) if bounds[c + 1] > bounds[c]]
    budgets = class_budgets(labels, active, params)
    votes = None
    if method in ("deep-knn", "groups"):
        # Deep k-NN looks across classes: one neighbour search over everything.
        act = np.flatnonzero(scored)
        k_all = min(k, act.size - 1)
        agreement = np.full(n, np.nan)
        deep_drop = np.zeros(n, dtype=bool)
        used = "none"
        if k_all >= 1:
            idx, _, used = nb.kneighbors(DenseGradients(features[act]), k_all,
                                         backend=neighbors, random_state=random_state)
            group_drop = share = None
            if method == "groups":
                group_drop, share = _foreign_groups(
                    labels[act], logits[act], features[act], idx, k=k, neighbors=neighbors,
                    random_state=random_state, num_classes=num_classes, n_jobs=n_jobs)
            agreement[act], deep_drop[act] = deep_knn_agreement(labels[act], idx, num_classes,
                                                                ignore=group_drop)
            if group_drop is not None:
                agreement[act] = np.fmin(agreement[act], share)
                deep_drop[act] |= group_drop
        votes = (agreement, deep_drop, k_all, used)
    keep_features = features is not None and needs_features(method, params["gradient"])
    class_rows = [order[bounds[c]:bounds[c + 1]] for c in present]

    # The same per-class task and gather as a spilled or distributed run
    # (gradscore.tasks), here over slices of the arrays in memory.
    from .tasks import ClassData, gather, score_class

    def one(c, rows):
        data = ClassData(
            c, logits[rows], features[rows] if keep_features else None, active[rows],
            None if budgets is None else int(budgets[c]),
            None if votes is None else (votes[0][rows], votes[1][rows], votes[2], votes[3]))
        return score_class(data, params)

    jobs = _n_threads(n_jobs, len(present))
    with ThreadPoolExecutor(max_workers=jobs) as pool, one_blas_thread_each(jobs):
        # Classes run in threads (numpy, BLAS and the numba kernels release the
        # GIL); results and warnings are gathered in class order, so output
        # does not depend on scheduling.
        outcomes = pool.map(one, present, class_rows) if jobs > 1 else \
            map(one, present, class_rows)
        return gather(outcomes, class_rows, n=n, active=active, params=params,
                      progress=progress, total=len(present))


def class_budgets(labels, active, params):
    """EPIC's per-class medoid budgets over all classes (None for other methods).

    The budget is global: ``int(fraction * N)`` over the ``N`` scored rows,
    split by class size (:func:`gradscore.selection.medoid_budgets`), so it
    is computed before any class is scored and handed to each class's task.

    Returns
    -------
    budgets : ndarray of shape (n_classes,), int64, or None
    """
    if params["method"] != "epic":
        return None
    scored = labels if active is None or params["cumulative"] == "intersect" \
        else labels[active]
    return medoid_budgets(np.bincount(scored, minlength=params["num_classes"]),
                          params["fraction"], random_state=params["random_state"])


def assemble_result(active, drop, **arrays):
    """The :class:`ScoreResult` of a run: keep and decision follow from
    ``active`` (None: all) and this round's new drops."""
    if active is None:
        active = np.ones(drop.size, dtype=bool)
    keep = active & ~drop
    decision = np.where(keep, KEPT, np.where(active, DROPPED, DROPPED_BEFORE)).astype(object)
    return ScoreResult(keep=keep, decision=decision, **arrays)
