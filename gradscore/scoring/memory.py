"""Score one epoch in memory: parameters checked once, then class by class.

:func:`score` is the in-memory entry point; the CLI and the file-based helpers
(:mod:`gradscore.scoring.files`) call :func:`score_checked` after validating once. The
per-class computation itself (gradients -> neighbours -> density ->
selection -> caps) has one home, :func:`gradscore.scoring.tasks.score_class`, which
spilled and distributed runs call too; the votes over all classes that
``deep-knn`` and ``groups`` need come first, from
:mod:`gradscore.scoring.crossclass`.
"""

from concurrent.futures import ThreadPoolExecutor
import inspect

import numpy as np

from .._threads import n_threads, one_blas_thread
from .._validation import check_float_matrix, check_int, check_labels
from ..errors import GradscoreError
from .crossclass import cross_class_votes
from ..selection import medoid_budgets
from ..review import review_by_class
from ..selection.epic import DENSE_MAX
from .methods import METHODS, PARAMETER_CHECKS, needs_features
from .tasks import ClassData, gather, score_class


def score(labels, logits, features=None, *, method="epic", gradient="logits",
          fraction=0.2, cluster_threshold=1, k=20, drop_fraction=None,
          z_threshold=3.0, max_drop_fraction=0.5, max_total_drop_fraction=0.5,
          cumulative="intersect", label_smoothing=0.0, neighbors="auto",
          dense_max=DENSE_MAX, num_classes=None, active=None, history=None, random_state=0,
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
    method : str, default="epic"
        One of :data:`METHODS`.
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
        :mod:`gradscore.selection.groups`. ``"trajectory"`` (needs
        ``features`` and ``history``): ``groups``, and also the groups that
        training had to pull far towards their label since the reference
        export. See :mod:`gradscore.selection.trajectory`.
        ``"label-support"`` (needs ``features``; the audit's default): drop
        an example when the mean of its neighbours' vote for its label and
        the probability a head fitted without the suspects gives it is
        below 0.15. See :mod:`gradscore.selection.label_support`.
    gradient : {"logits", "last-layer"}, default="logits"
        Which closed-form gradient to compare examples by.
    fraction : float, default=0.2
        EPIC: medoids as a fraction of the scored examples (paper: 0.1-0.3),
        split over classes in proportion to their sizes as the authors' code
        does (:func:`gradscore.selection.epic.medoid_budgets`).
    cluster_threshold : int, default=1
        EPIC: drop examples in clusters of at most this many members.
    k : int, default=20
        Neighbours per example for the density score;
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
        Neighbour backend (see :mod:`gradscore.neighbors`). ``deep-knn``
        and ``groups`` search over all classes with their own search
        (:mod:`gradscore.scoring.crossclass`) and take ``"auto"`` (exact when cheap,
        else over k-means cells) or ``"brute"`` (always exact).
    dense_max : int, default=6000
        EPIC keeps the n x n kernel matrix (8 n^2 bytes, faster) for
        classes up to this size and recomputes its values above it. The
        greedy is exact either way: this trades memory for speed, never
        changes a decision (see :func:`gradscore.selection.epic_class`).
    num_classes : int, default=None
        Number of classes; defaults to ``logits.shape[1]``.
    active : array-like of shape (n_samples,), bool, default=None
        False for examples dropped at an earlier round: they stay dropped
        (see ``cumulative``). Default: all active.
    history : History, default=None
        For ``method="trajectory"`` (which needs it): the margins of these
        rows in earlier exports of the run, the reference (the model before
        training on this data) first; from
        :func:`gradscore.history.read_history` or
        :func:`gradscore.history.history_from_arrays`.
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
    PARAMETER_CHECKS["method"]("method", method)
    PARAMETER_CHECKS["gradient"]("gradient", gradient)
    if needs_features(method, gradient) or features is not None:
        check_features_given(method, gradient, features)
        features = check_float_matrix(features, "features", n_rows=labels.size)
    if active is not None:
        active = np.asarray(active)
        if active.shape != labels.shape or active.dtype != bool:
            raise GradscoreError(
                f"active must be a bool array of shape {labels.shape}; "
                f"got {active.dtype} of shape {active.shape}")
    check_history(method, history, labels.size)
    params = check_params(
        method=method, gradient=gradient, fraction=fraction,
        cluster_threshold=cluster_threshold, k=k, drop_fraction=drop_fraction,
        z_threshold=z_threshold, max_drop_fraction=max_drop_fraction,
        max_total_drop_fraction=max_total_drop_fraction, cumulative=cumulative,
        label_smoothing=label_smoothing, neighbors=neighbors, dense_max=dense_max,
        num_classes=num_classes, random_state=random_state)
    return score_checked(labels, logits_arr, features, params, active=active, history=history,
                  progress=progress, n_jobs=check_n_jobs(n_jobs))


#: Defaults of :func:`score`'s scoring parameters, for callers that fill in
#: only some (``score_files``, ``DropSchedule``).
SCORE_DEFAULTS = {name: p.default for name, p in inspect.signature(score).parameters.items()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY
                  and name not in ("active", "history", "progress", "n_jobs")}


def check_features_given(method, gradient, features):
    if features is None and needs_features(method, gradient):
        why = f"method={method!r}" if METHODS[method].needs_features \
            else "gradient='last-layer'"
        raise GradscoreError(f"{why} needs features; got None")


def check_history(method, history, n=None):
    """``method="trajectory"`` needs a history (of ``n`` rows, unless None);
    other methods take none."""
    if METHODS[method].needs_history:
        if history is None:
            raise GradscoreError("method='trajectory' needs the run's history: earlier "
                                 "exports, the reference (the model before training) first "
                                 "(--history REF.h5 [MORE.h5 ...])")
        if n is not None:
            history.check_rows(n)
    elif history is not None:
        raise GradscoreError(f"a history is used only by method='trajectory'; got "
                             f"method={method!r}")


def check_params(**given):
    """Validate scoring parameters (defaults from :func:`score`) into one dict.

    Raises TypeError for an unknown name, as a call to :func:`score` would.
    """
    unknown = sorted(set(given) - set(SCORE_DEFAULTS))
    if unknown:
        raise TypeError(f"score() got unexpected keyword argument(s): {', '.join(unknown)}")
    p = {**SCORE_DEFAULTS, **given}
    # In the order of score()'s signature, each by its check in the registry.
    out = {name: PARAMETER_CHECKS[name](name, p[name]) for name in SCORE_DEFAULTS}
    method = METHODS[out["method"]]
    if method.check is not None:
        method.check(out)
    return out


def check_n_jobs(n_jobs):
    if n_jobs is not None:
        n_jobs = check_int("n_jobs", n_jobs)
        if n_jobs == 0:
            raise GradscoreError("'n_jobs' must be a positive int, -1 or None; got 0")
    return n_jobs


def score_checked(labels, logits, features, params, *, active=None, history=None,
                  progress=False, n_jobs=None):
    """:func:`score` on validated input; ``params`` from :func:`check_params`.

    The data's way, in memory: partition by class -> (for methods that look
    across classes) votes over all classes -> one :func:`score_class` task
    per class, on threads -> :func:`gather` in class order. A spilled or
    distributed run (:func:`gradscore.score_files`) takes the same way with
    the class's rows read from a spill.
    """
    num_classes = params["num_classes"]
    n = labels.size
    if active is None:
        active = np.ones(n, dtype=bool)
    # One stable sort groups rows by class without a pass per class.
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    present = [c for c in range(num_classes) if bounds[c + 1] > bounds[c]]
    class_rows = [order[bounds[c]:bounds[c + 1]] for c in present]
    budgets = class_budgets(labels, active, params)
    votes = None
    if METHODS[params["method"]].cross_class:
        # The authors' rule scores every example; "survivors" only the kept ones.
        scored = np.ones(n, dtype=bool) if params["cumulative"] == "intersect" else active
        votes = cross_class_votes(labels, logits, features, scored, params, n_jobs=n_jobs,
                                  history=history)
    keep_features = features is not None and needs_features(params["method"],
                                                            params["gradient"])

    def one(c, rows):
        data = ClassData(
            c, logits[rows], features[rows] if keep_features else None, active[rows],
            None if budgets is None else int(budgets[c]),
            None if votes is None else votes.take(rows))
        return score_class(data, params)

    jobs = n_threads(n_jobs, len(present))
    with ThreadPoolExecutor(max_workers=jobs) as pool, one_blas_thread():
        # Classes run in threads (numpy, BLAS and the numba kernels release the
        # GIL); results and warnings are gathered in class order, so output
        # does not depend on scheduling. BLAS runs on one thread whatever
        # n_jobs, so a score's bits do not depend on it either (issue 24).
        outcomes = pool.map(one, present, class_rows) if jobs > 1 else \
            map(one, present, class_rows)
        result = gather(outcomes, class_rows, n=n, active=active, params=params,
                        progress=progress, total=len(present))
    result.attach_review(*review_by_class(
        labels, result.flagged, present, class_rows, lambda i: logits[class_rows[i]],
        num_classes=num_classes, signal=params["method"],
        review=None if votes is None else votes.review))
    return result


def class_budgets(labels, active, params):
    """EPIC's per-class medoid budgets over all classes (None for other methods).

    The budget is global: ``int(fraction * N)`` over the ``N`` scored rows,
    split by class size (:func:`gradscore.selection.medoid_budgets`), so it
    is computed before any class is scored and handed to each class's task.

    Returns
    -------
    budgets : ndarray of shape (n_classes,), int64, or None
    """
    if not METHODS[params["method"]].medoid_budget:
        return None
    scored = labels if active is None or params["cumulative"] == "intersect" \
        else labels[active]
    return medoid_budgets(np.bincount(scored, minlength=params["num_classes"]),
                          params["fraction"], random_state=params["random_state"])
