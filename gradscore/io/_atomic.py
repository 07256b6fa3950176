"""Atomic file output: write to a temporary file beside the target, then rename."""

from contextlib import contextmanager
import os
import tempfile


@contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s folder; rename it to ``path`` on
    success, delete it on any exception, so ``path`` is either the old file
    or the complete new one, never half-written."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes 0600 files; give the result the mode a plain open()
        # would (or the mode of the file it replaces).
        if os.path.exists(path):
            mode = os.stat(path).st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
