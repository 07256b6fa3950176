"""Carry a :class:`~gradscore.schedule.DropSchedule`'s state through a
framework's checkpoint or a broadcast: the dict of ``schedule.state()``, put
back in place with the checks the state file gets."""

import json

import numpy as np

from ..errors import GradscoreError
from ..schedule import STATE_FORMAT


def restore_schedule(schedule, doc, *, where):
    """Set ``schedule``'s kept ids and history from ``doc`` (a ``state()`` dict).

    The schedule's settings must equal the saved ones, as when resuming from
    a state file; ``where`` names the source in error messages.
    """
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise GradscoreError(f"{where}: not a DropSchedule state (no \"format\": "
                             f"\"{STATE_FORMAT}\")")
    mine = json.loads(json.dumps(schedule._config()))
    for key, value in mine.items():
        if doc.get(key) != value:
            raise GradscoreError(
                f"{where}: the saved schedule has {key}={doc.get(key)!r} but this one was "
                f"made with {key}={value!r}; use the same settings to resume")
    keep = doc.get("keep_ids")
    if keep is None:
        schedule.keep_ids = None
    elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in keep):
        schedule.keep_ids = np.array(keep, dtype=np.int64)
    else:
        schedule.keep_ids = np.array([str(v) for v in keep], dtype=object)
    schedule.history = [dict(h) for h in doc.get("history") or []]


def set_keep(target, keep_ids):
    """Point a ``KeepSampler`` or ``KeepSubset`` at ``keep_ids`` (None: keep all)."""
    if keep_ids is None:
        target._state.set(None)
        if hasattr(target, "indices"):
            target.indices = target._state.positions.tolist()
    else:
        target.reload(keep_ids)
