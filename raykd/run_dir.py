"""The run directory: a local path or a pyarrow-filesystem URI (s3://, gs://).

Stages write into a private staging folder and commit when complete, so an interrupted stage
leaves the previous good output in place. Locally a commit is a rename. Object stores have no
atomic rename: the staged objects are copied into place and a ``_SUCCESS`` marker is written
last; readers treat a folder without the marker as absent.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

SUCCESS = "_SUCCESS"
MANIFESTS = "manifests"
STAGING = ".staging"


@dataclass(frozen=True)
class RunDir:
    fs: pafs.FileSystem
    root: str  # path inside ``fs``
    uri: str  # as the user gave it; Ray Data accepts it directly

    @classmethod
    def open(cls, uri: str) -> RunDir:
        if "://" in uri:
            fs, root = pafs.FileSystem.from_uri(uri)
        else:
            import os

            fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
            uri = root
        fs.create_dir(root, recursive=True)
        return cls(fs=fs, root=root.rstrip("/"), uri=uri.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        """Filesystem path of ``rel`` (for pyarrow calls with ``filesystem=self.fs``)."""
        return posixpath.join(self.root, rel) if rel else self.root

    def uri_of(self, rel: str) -> str:
        """URI of ``rel`` (for Ray Data, which resolves the filesystem itself)."""
        return posixpath.join(self.uri, rel) if rel else self.uri

    def exists(self, rel: str, *, committed: bool = True) -> bool:
        """Whether ``rel`` exists; on object stores a committed folder needs its marker."""
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.NotFound:
            return False
        if committed and info.type == pafs.FileType.Directory and not self.is_local:
            return self.fs.get_file_info(self.path(f"{rel}/{SUCCESS}")).type == pafs.FileType.File
        return True

    def read_json(self, rel: str) -> Any:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return json.loads(f.read().decode("utf-8"))

    def write_json(self, rel: str, obj: Any) -> None:
        """Write JSON atomically (temp file + move on local disk; single PUT on object stores)."""
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8")
        target = self.path(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}" if self.is_local else target
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        if tmp != target:
            self.fs.move(tmp, target)

    def new_staging(self, stage: str) -> Staging:
        rel = f"{STAGING}/{stage}-{uuid.uuid4().hex[:10]}"
        self.fs.create_dir(self.path(rel), recursive=True)
        return Staging(self, rel)

    def delete(self, rel: str) -> None:
        self._delete_path(self.path(rel))

    def _delete_path(self, p: str) -> None:
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def commit(self, staged_rel: str, final_rel: str) -> None:
        """Move a fully written staged folder or file to ``final_rel``, replacing what was there."""
        src, dst = self.path(staged_rel), self.path(final_rel)
        self.fs.create_dir(posixpath.dirname(dst), recursive=True)
        if self.is_local:
            old = None
            if self.fs.get_file_info(dst).type != pafs.FileType.NotFound:
                old = f"{self.path(STAGING)}/old-{uuid.uuid4().hex[:10]}"
                self.fs.move(dst, old)
            self.fs.move(src, dst)
            if old is not None:
                self._delete_path(old)
            return
        self.delete(final_rel)
        pafs.copy_files(src, dst, source_filesystem=self.fs, destination_filesystem=self.fs)
        with self.fs.open_output_stream(posixpath.join(dst, SUCCESS)) as f:
            f.write(b"")
        self.fs.delete_dir(src)


@dataclass(frozen=True)
class Staging:
    """A private folder a stage writes into before committing its outputs."""

    run: RunDir
    rel: str

    def path(self, rel: str) -> str:
        return self.run.path(f"{self.rel}/{rel}")

    def uri(self, rel: str) -> str:
        return self.run.uri_of(f"{self.rel}/{rel}")

    def local_path(self, rel: str) -> str:
        """A path local code (FAISS, model save) can write to; only for local run dirs."""
        if not self.run.is_local:
            raise RuntimeError("local_path() needs a local run directory")
        p = self.path(rel)
        self.run.fs.create_dir(posixpath.dirname(p), recursive=True)
        return p

    def commit(self, rel: str, final_rel: str | None = None) -> None:
        self.run.commit(f"{self.rel}/{rel}", final_rel or rel)

    def discard(self) -> None:
        self.run.delete(self.rel)
