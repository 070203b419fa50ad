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


def test_fixed_layout_depends_on_the_rows_not_the_batching(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raykd.data.parquet import FixedLayoutWriter

    schema = pa.schema([("x", pa.int64())])
    rows = pa.table({"x": list(range(23)), "extra": [0] * 23})

    def layout(folder, cuts):
        w = FixedLayoutWriter(pafs.LocalFileSystem(), str(tmp_path / folder), schema, 4, 10)
        for a, b in zip([0, *cuts], [*cuts, 23], strict=True):
            w.write(rows.slice(a, b - a))
        assert w.close() == 23 and w.files == 3
        files = sorted((tmp_path / folder).iterdir())
        return [
            [
                pq.ParquetFile(f).metadata.row_group(i).num_rows
                for i in range(pq.ParquetFile(f).metadata.num_row_groups)
            ]
            for f in files
        ]

    assert layout("a", [1, 7, 20]) == layout("b", [12]) == [[4, 4, 2], [4, 4, 2], [3]]
    empty = FixedLayoutWriter(pafs.LocalFileSystem(), str(tmp_path / "e"), schema, 4, 10)
    assert empty.close() == 0 and empty.files == 1
    assert pq.read_table(tmp_path / "e").num_rows == 0
