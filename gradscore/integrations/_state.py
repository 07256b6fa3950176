"""Point the samplers and subsets of the integrations at a schedule's keep-list."""


def set_keep(target, keep_ids):
    """Point a ``KeepSampler`` or ``KeepSubset`` at ``keep_ids`` (None: keep all)."""
    if keep_ids is None:
        target._state.set(None)
        if hasattr(target, "indices"):
            target.indices = target._state.positions.tolist()
    else:
        target.reload(keep_ids)
