"""Durable atomic outputs: the data is on disk before the rename, the rename
before the call returns."""

import os

import pytest

from gradscore import GradscoreError, write_keeplist
from gradscore.io import _atomic


def test_file_fsynced_before_rename_and_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") \
            else str(fd)
        events.append(("fsync", os.path.basename(target)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(_atomic.os, "fsync", fsync)
    monkeypatch.setattr(_atomic.os, "replace", replace)
    out = tmp_path / "k.txt"
    write_keeplist(out, [3, 1, 2])
    assert out.read_text() == "1\n2\n3\n"
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("no /proc to name the fsynced files")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(".k.txt.") and events[0][1].endswith(".tmp")
    assert events[1][1] == "k.txt"
    assert events[2][1] == os.path.basename(str(tmp_path))


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    out = tmp_path / "k.txt"
    write_keeplist(out, [1])
    with pytest.raises(GradscoreError, match="contains a newline"):
        write_keeplist(out, ["a\nb"])
    assert out.read_text() == "1\n"
    assert os.listdir(tmp_path) == ["k.txt"]
