"""Progress bars on stderr (tqdm), silent unless asked for and on a terminal."""

import sys

from tqdm import tqdm


def progress_bar(iterable=None, *, enabled=False, **kwargs):
    """Wrap ``iterable`` in a tqdm bar that shows only when ``enabled`` and
    stderr is a terminal."""
    show = bool(enabled) and sys.stderr.isatty()
    return tqdm(iterable, disable=not show, file=sys.stderr, leave=False, **kwargs)
