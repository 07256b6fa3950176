"""The paper's drop schedule: score every ``freq`` epochs from ``warmup`` to ``stop``.

EPIC does not score once. It trains a few epochs first (``warmup``), then
scores the training set every ``freq`` epochs until ``stop``; an example
once dropped stays dropped (drops are cumulative). As in the authors'
training script, every example is scored and clustered at every round and
kept only if it was kept at this round and at every earlier one (the
``cumulative`` scoring parameter, default ``"intersect"``), and
``max_total_drop_fraction`` bounds what a class can lose over all rounds.
:class:`DropSchedule` holds that state -- which epochs were
scored, the running keep-list -- and persists it atomically after every
scoring, so a training run that crashes and resumes continues where it
stopped instead of scoring again from an all-kept start.
"""

import inspect
import json
import os
import tempfile

import numpy as np

from ._validation import check_ids, check_int
from .scoring.files import score_files as _score_files
from .errors import GradscoreError
from .history import align, read_past, reduce_export
from .io._atomic import atomic_path
from .io.keeplist import keep_mask, read_keeplist, write_keeplist
from .scoring.memory import score as _score

#: Identifies a state file written by :class:`DropSchedule`.
STATE_FORMAT = "gradscore-drop-schedule"
STATE_VERSION = 1

# score() arguments the schedule owns itself, so users cannot set them.
_RESERVED = ("labels", "logits", "features", "active", "history")


def _score_param_names():
    return [p for p in inspect.signature(_score).parameters if p not in _RESERVED]


class DropSchedule:
    """When to score, and the cumulative keep-list, persisted across restarts.

    Scoring happens at the end of every epoch ``e`` with
    ``warmup <= e <= stop`` and ``(e - warmup) % freq == 0``. Epoch numbers
    are whatever numbering you pass to :meth:`due`, :meth:`step` and
    :meth:`step_files`; counting epochs completed (1, 2, ...) makes
    ``warmup=W`` mean "train W epochs, then score". The keep-list found at
    epoch ``e`` is for training from epoch ``e + 1`` on.

    Parameters
    ----------
    warmup : int
        First epoch to score (>= 0).
    freq : int
        Score every ``freq`` epochs after ``warmup`` (>= 1).
    stop : int, default=None
        Last epoch that may be scored (inclusive, >= ``warmup``); None for
        no end.
    state_path : str or path-like, default=None
        JSON file holding the state, rewritten atomically after every
        scoring. When it exists, the schedule resumes from it; its
        ``warmup``, ``freq``, ``stop`` and scoring parameters must equal
        the ones given. None keeps the state in memory only.
    reference : str or path-like, list of them, or tuple of arrays, default=None
        For ``method="trajectory"``: the run's reference, the model before
        training on this data (an export at epoch 0: one inference pass). A
        path (or shards) works with :meth:`step_files` and :meth:`step`; a
        tuple ``(labels, logits)`` or ``(labels, logits, ids)`` with both.
        Only each row's margin and loss are kept. Can also be given later,
        with :meth:`set_reference` (the framework callbacks export epoch 0
        and do so at the start of training).
    **score_params
        Passed to :func:`gradscore.score` at every scoring (``method``,
        ``fraction``, ``k``, ``random_state``, ...). Not ``active`` or
        ``history``: the schedule sets them from the running keep-list and
        the reference.

    Attributes
    ----------
    keep_ids : ndarray of shape (n_kept,) or None
        Ids still kept, sorted (int64, or object for str ids); None before
        the first scoring (everything kept).
    history : list of dict
        One entry per scored epoch: ``epoch``, ``n``, ``kept``, ``dropped``
        (newly dropped at that epoch), ``flagged`` (examples that epoch's
        rule dropped, whether or not dropped before), ``cap_hit_classes`` and
        ``total_cap_hit_classes`` (classes where ``max_drop_fraction`` or
        ``max_total_drop_fraction`` bit) and ``keeplist`` (the path written
        by :meth:`step_files`, else None).
    last_result : ScoreResult or None
        The result of the latest scoring in this process (not persisted).

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.schedule import DropSchedule
    >>> sched = DropSchedule(warmup=2, freq=3, stop=8)
    >>> [e for e in range(1, 11) if sched.due(e)]
    [2, 5, 8]
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 30)
    >>> logits = rng.normal(size=(60, 2)) + 3 * np.eye(2)[labels]
    >>> keep = sched.step(2, labels, logits)
    >>> keep.shape, sched.done
    ((60,), [2])
    """

    def __init__(self, *, warmup, freq, stop=None, state_path=None, reference=None,
                 **score_params):
        self.warmup = check_int("warmup", warmup, minimum=0)
        self.freq = check_int("freq", freq, minimum=1)
        self.stop = None if stop is None else check_int("stop", stop, minimum=self.warmup)
        allowed = _score_param_names()
        unknown = sorted(set(score_params) - set(allowed))
        if unknown:
            raise GradscoreError(
                f"DropSchedule got unknown scoring parameter(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}")
        try:
            json.dumps(score_params)
        except TypeError as exc:
            raise GradscoreError(f"DropSchedule's scoring parameters must be plain "
                                 f"numbers, strings or None (they are saved as JSON): {exc}"
                                 ) from None
        self.score_params = dict(score_params)
        self.state_path = None if state_path is None else os.fspath(state_path)
        self.keep_ids = None
        self.history = []
        self.last_result = None
        self.reference = None
        self._reference = None
        if reference is not None:
            self.set_reference(reference)
        if self.state_path is not None and os.path.exists(self.state_path):
            self._load()

    # -- the reference (method="trajectory") ---------------------------------

    @property
    def needs_reference(self):
        """True when the method needs a reference and none was given yet."""
        return self.score_params.get("method") == "trajectory" and self._reference is None

    def set_reference(self, reference):
        """Set the run's reference (see the class's ``reference`` parameter).

        A path is read at once, reduced to each row's margin and loss, and
        remembered in the state file (a resumed schedule reads it again).
        """
        if isinstance(reference, tuple):
            if len(reference) not in (2, 3):
                raise GradscoreError("reference: give a path, or (labels, logits) or "
                                     f"(labels, logits, ids); got a tuple of {len(reference)}")
            self._reference = reduce_export(*reference[:2], ids=reference[2] if len(
                reference) == 3 else None, source="reference (in memory)")
            self.reference = None
            return
        paths = [os.fspath(reference)] if isinstance(reference, (str, os.PathLike)) \
            else [os.fspath(p) for p in reference]
        self._reference = read_past(paths)
        self.reference = [os.path.abspath(p) for p in paths]

    def _require_reference(self):
        if self.needs_reference:
            raise GradscoreError("method='trajectory' needs the run's reference: "
                                 "DropSchedule(reference=...) or set_reference(...) with an "
                                 "export of the model before training (epoch 0)")

    # -- when -----------------------------------------------------------------

    def scheduled(self, epoch):
        """True when ``epoch`` is a scoring epoch of the schedule (scored or not)."""
        epoch = check_int("epoch", epoch)
        if epoch < self.warmup or (self.stop is not None and epoch > self.stop):
            return False
        return (epoch - self.warmup) % self.freq == 0

    def due(self, epoch):
        """True when ``epoch`` is a scoring epoch that has not been scored yet."""
        return self.scheduled(epoch) and int(epoch) not in self.done

    @property
    def done(self):
        """Epochs scored so far, in order (list of int)."""
        return [h["epoch"] for h in self.history]

    # -- what -----------------------------------------------------------------

    def keep_mask(self, ids):
        """Boolean mask over ``ids`` of the examples still kept.

        Parameters
        ----------
        ids : array-like of shape (n_samples,)
            Int or str ids; every kept id must be among them.

        Returns
        -------
        mask : ndarray of shape (n_samples,), bool
            All True before the first scoring.
        """
        ids = np.asarray(ids)
        if self.keep_ids is None:
            return np.ones(ids.shape[0], dtype=bool)
        return keep_mask(ids, self.keep_ids, source="the schedule's keep-list")

    def step(self, epoch, labels, logits, features=None, *, ids=None):
        """Score one epoch in memory and return the keep mask.

        Examples dropped at an earlier epoch stay dropped (they are passed to
        :func:`gradscore.score` as inactive; under the default
        ``cumulative="intersect"`` they are still scored, as in the paper).
        Give every example of the training set, not only the kept ones.

        Parameters
        ----------
        epoch : int
            Must be :meth:`due`.
        labels : array-like of shape (n_samples,)
        logits : array-like of shape (n_samples, n_classes)
        features : array-like of shape (n_samples, n_features), default=None
        ids : array-like of shape (n_samples,), default=None
            Int or str ids of the rows; default ``0..n_samples-1``.

        Returns
        -------
        keep : ndarray of shape (n_samples,), bool
            True for the rows to train on from the next epoch.
        """
        self._check_due(epoch)
        n = np.shape(labels)[0] if np.ndim(labels) == 1 else -1
        ids = check_ids(ids, n)
        active = None if self.keep_ids is None else self.keep_mask(ids)
        history = None
        if self.score_params.get("method") == "trajectory":
            self._require_reference()
            history = align([self._reference], ids=ids, labels=np.asarray(labels))
        result = _score(labels, logits, features, active=active, history=history,
                        **self.score_params)
        self._record(int(epoch), ids[result.keep], result, keeplist=None)
        return result.keep

    def step_files(self, epoch, paths, *, output=None, scores_path=None):
        """Score one epoch's export file(s) and write its keep-list.

        Runs :func:`gradscore.score_files` with the running keep-list as
        ``previous``, so drops are cumulative, then saves the state.

        Parameters
        ----------
        epoch : int
            Must be :meth:`due`.
        paths : str or path-like, or list of them
            The epoch's export, or its shards.
        output : str or path-like, default=None
            Keep-list to write; default beside the first input,
            ``<stem>.keep.txt`` (for shards, name it yourself).
        scores_path : str or path-like, default=None
            Also write the per-example table.

        Returns
        -------
        output : str
            The keep-list path written.
        """
        self._check_due(epoch)
        self._require_reference()
        with tempfile.TemporaryDirectory(prefix="gradscore-") as tmp:
            previous = self._previous_keeplist(tmp)
            history = None if self._reference is None or \
                self.score_params.get("method") != "trajectory" else [self._reference]
            result, ep, out = _score_files(paths, output=output, scores_path=scores_path,
                                           previous=previous, history=history,
                                           **self.score_params)
            self._record(int(epoch), ep.ids[result.keep], result, keeplist=os.path.abspath(out))
        return out

    # -- state ----------------------------------------------------------------

    def _check_due(self, epoch):
        if self.due(epoch):
            return
        if self.scheduled(epoch):
            raise GradscoreError(f"epoch {epoch} was already scored (scored: {self.done}); "
                                 "check due(epoch) before scoring")
        stop = "no end" if self.stop is None else f"stop={self.stop}"
        raise GradscoreError(f"epoch {epoch} is not a scoring epoch of the schedule "
                             f"(warmup={self.warmup}, freq={self.freq}, {stop}); "
                             "check due(epoch) before scoring")

    def _previous_keeplist(self, tmp):
        """A keep-list file holding the running keep ids, or None."""
        if self.keep_ids is None:
            return None
        # Prefer the file the last scoring wrote, so the new keep-list's
        # provenance names it; only if it is gone or changed, write a copy.
        last = self.history[-1]["keeplist"] if self.history else None
        if last and os.path.exists(last):
            try:
                ids = read_keeplist(last)
            except GradscoreError:
                ids = None
            if ids is not None and _same_ids(ids, self.keep_ids):
                return last
        path = os.path.join(tmp, "previous.keep.json")
        write_keeplist(path, self.keep_ids)
        return path

    def _record(self, epoch, kept_ids, result, *, keeplist):
        before = int(result.keep.size) if self.keep_ids is None else int(self.keep_ids.size)
        kept_ids = np.asarray(kept_ids)
        if kept_ids.dtype.kind in "iu":
            kept_ids = np.sort(kept_ids.astype(np.int64))
        else:
            kept_ids = np.array(sorted(kept_ids.tolist()), dtype=object)
        entry = {"epoch": epoch, "n": int(result.keep.size), "kept": int(kept_ids.size),
                 "dropped": before - int(kept_ids.size),
                 "flagged": int(result.flagged.sum()),
                 "cap_hit_classes": [c.label for c in result.classes if c.cap_hit],
                 "total_cap_hit_classes": [c.label for c in result.classes
                                           if c.total_cap_hit],
                 "keeplist": keeplist}
        old = self.keep_ids
        self.keep_ids = kept_ids
        self.history.append(entry)
        try:
            self.save()
        except BaseException:
            # Leave memory as the state file says, so retrying the epoch works.
            self.history.pop()
            self.keep_ids = old
            raise
        self.last_result = result

    def _config(self):
        return {"warmup": self.warmup, "freq": self.freq, "stop": self.stop,
                "score_params": self.score_params}

    def state(self):
        """The JSON-ready state (what :meth:`save` writes)."""
        keep = None if self.keep_ids is None else self.keep_ids.tolist()
        return {"format": STATE_FORMAT, "version": STATE_VERSION, **self._config(),
                "history": self.history, "keep_ids": keep, "reference": self.reference}

    def save(self):
        """Write the state to ``state_path`` atomically (no-op without one)."""
        if self.state_path is None:
            return
        folder = os.path.dirname(os.path.abspath(self.state_path))
        if not os.path.isdir(folder):
            raise GradscoreError(f"{self.state_path}: folder {folder} does not exist")
        with atomic_path(self.state_path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.state(), fh, indent=1, sort_keys=True)
                fh.write("\n")

    def _load(self):
        self.restore(read_state(self.state_path), where=self.state_path,
                     hint=", or another state_path to start afresh")

    def restore(self, doc, *, where="the state", hint=""):
        """Take the kept ids and history from ``doc``, a :meth:`state` dict.

        Used on resume from the state file, a framework checkpoint or a
        broadcast from another rank. The saved settings must equal this
        schedule's; ``where`` names the source in error messages.
        """
        check_state(doc, where=where)
        mine = json.loads(json.dumps(self._config()))
        for key, value in mine.items():
            if doc.get(key) != value:
                raise GradscoreError(
                    f"{where}: the saved schedule has {key}={doc.get(key)!r} but this one "
                    f"was made with {key}={value!r}; use the same settings to resume{hint}")
        keep = doc.get("keep_ids")
        if keep is None:
            self.keep_ids = None
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in keep):
            self.keep_ids = np.array(keep, dtype=np.int64)
        else:
            self.keep_ids = np.array([str(v) for v in keep], dtype=object)
        self.history = [dict(h) for h in doc.get("history") or []]
        saved = doc.get("reference")
        if saved and self._reference is None:
            self.set_reference(saved)
        elif saved and self.reference is not None and saved != self.reference:
            raise GradscoreError(f"{where}: the saved schedule's reference is {saved} but this "
                                 f"one was given {self.reference}; use the same reference to "
                                 f"resume{hint}")

    def __repr__(self):
        stop = "None" if self.stop is None else self.stop
        kept = "all" if self.keep_ids is None else self.keep_ids.size
        return (f"DropSchedule(warmup={self.warmup}, freq={self.freq}, stop={stop}, "
                f"done={self.done}, kept={kept})")


def check_state(doc, *, where):
    """Raise unless ``doc`` is a DropSchedule state of the version this gradscore reads."""
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise GradscoreError(f"{where}: not a DropSchedule state file "
                             f"(no \"format\": \"{STATE_FORMAT}\")")
    if doc.get("version") != STATE_VERSION:
        raise GradscoreError(f"{where}: state version {doc.get('version')!r} is not "
                             f"supported (this gradscore reads {STATE_VERSION})")


def read_state(path):
    """The checked JSON document of a DropSchedule state file."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise GradscoreError(f"{path}: cannot read schedule state: {exc}") from None
    check_state(doc, where=path)
    return doc


def _same_ids(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or (a.dtype.kind in "iu") != (b.dtype.kind in "iu"):
        return False
    return bool(np.array_equal(np.sort(a), np.sort(b)))
