"""raykd.data.files: where a path lives, and local writes that are all or nothing."""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from raykd.data.files import atomic_local, filesystem


def test_filesystem_of_local_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = filesystem("runs/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "runs" / "x")
    fs, path = filesystem(f"file://{tmp_path}/y")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/y"


def test_atomic_local_replaces_whole_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_local(target) as tmp:
        open(tmp, "w").write("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_local(target) as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "one"
    assert os.listdir(target.parent) == ["out.txt"]  # no temp file left behind
