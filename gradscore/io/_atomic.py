"""Atomic, durable file output: write a temporary file beside the target,
fsync it, rename it over the target, then fsync the folder.

The rename alone makes the switch atomic for other processes, but not for
a power loss: many filesystems (ext4 with ``data=writeback``, XFS, btrfs
in some modes) may persist the rename before the file's data, leaving an
empty or partial file under the final name. Flushing the file before the
rename and the folder entry after it is what databases (SQLite, PostgreSQL)
do for the same reason.
"""

from contextlib import contextmanager
import errno
import os
import tempfile


def fsync_file(path):
    """Flush ``path``'s data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder):
    """Flush a folder's entries (a rename into it) to stable storage.

    A no-op where folders cannot be opened (Windows).
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems refuse fsync on a folder (EINVAL); nothing more
        # can be done there.
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s folder; on success fsync it,
    rename it to ``path`` and fsync the folder; delete it on any exception.
    So ``path`` is either the old file or the complete new one, never
    half-written, and stays so across a crash or power loss."""
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
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
