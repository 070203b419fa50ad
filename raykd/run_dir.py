"""The run directory: a local path or a pyarrow-filesystem URI (s3://, gs://).

Stages write into a private staging folder and commit when complete, so an interrupted stage
leaves the previous good output in place. Locally a commit is a rename. Object stores have no
atomic rename: the staged objects are copied into place and a ``_SUCCESS`` marker is written
last; readers treat a folder without the marker as absent.

A run dir may overlay a *base* run dir (a Tune trial over the sweep's shared run): reads of an
inherited path that is absent here (``path``, ``uri_of``, ``exists``, ``read_json``) resolve to
the base; every write goes here.
"""

from __future__ import annotations

import json
import posixpath
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from raykd.config import ConfigError
from raykd.data.files import filesystem

SUCCESS = "_SUCCESS"
JOB_FILE = "job.yaml"  # the resolved config of the last stage run here
MANIFESTS = "manifests"
STAGING = ".staging"


@dataclass(frozen=True)
class RunDir:
    """A run directory on any pyarrow filesystem (local, s3://, gs://): stage outputs, manifests,
    a staging area whose folders commit by rename, and the inherited outputs of a base run (a
    Tune trial reads the sweep's scores)."""

    fs: pafs.FileSystem
    root: str  # path inside ``fs``
    uri: str  # as the user gave it; Ray Data accepts it directly
    base: RunDir | None = None
    inherit: tuple[str, ...] = ()  # rel paths (and everything under them) read from ``base``

    @classmethod
    def open(cls, uri: str, base: RunDir | None = None, inherit: tuple[str, ...] = ()) -> RunDir:
        fs, root = filesystem(uri)
        if "://" not in uri:
            uri = root
        # Created by the first write: a command that fails up front leaves no empty run dir.
        if "://" in uri and not isinstance(fs, pafs.LocalFileSystem):
            bucket = root.split("/", 1)[0]
            try:
                found = fs.get_file_info(bucket).type != pafs.FileType.NotFound
            except OSError as err:
                raise ConfigError(f"run_dir {uri}: {_refusal(fs, root, err)}") from None
            if not found:
                raise ConfigError(
                    f"run_dir {uri}: bucket {bucket!r} does not exist, or these credentials "
                    "cannot see it"
                )
        if base is not None and type(base.fs) is not type(fs):
            raise ValueError(f"{uri}: an overlay must be on the filesystem of its base {base.uri}")
        return cls(fs, root.rstrip("/"), uri.rstrip("/"), base, tuple(inherit))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def _own(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def _from_base(self, rel: str) -> bool:
        """Whether a read of ``rel`` goes to the base: inherited, absent here, present there."""
        if self.base is None or not any(rel == p or rel.startswith(p + "/") for p in self.inherit):
            return False
        return not self._exists_here(rel, committed=True) and self.base.exists(rel)

    def path(self, rel: str) -> str:
        """Filesystem path of ``rel`` (for pyarrow calls with ``filesystem=self.fs``)."""
        return self.base.path(rel) if self._from_base(rel) else self._own(rel)

    def uri_of(self, rel: str) -> str:
        """URI of ``rel`` (for Ray Data, which resolves the filesystem itself)."""
        if self._from_base(rel):
            return self.base.uri_of(rel)
        return posixpath.join(self.uri, rel) if rel else self.uri

    def exists(self, rel: str, *, committed: bool = True) -> bool:
        """Whether ``rel`` exists; on object stores a committed folder needs its marker."""
        return self._exists_here(rel, committed=committed) or self._from_base(rel)

    def _exists_here(self, rel: str, *, committed: bool) -> bool:
        info = self.fs.get_file_info(self._own(rel))
        if info.type == pafs.FileType.NotFound:
            return False
        if committed and info.type == pafs.FileType.Directory and not self.is_local:
            # A stage commits its top-level outputs: queries/train is committed with queries/.
            parts = rel.strip("/").split("/")
            return any(
                self.fs.get_file_info(self._own("/".join([*parts[:n], SUCCESS]))).type
                == pafs.FileType.File
                for n in range(len(parts), 0, -1)
            )
        return True

    def write_text(self, rel: str, text: str) -> None:
        """Write a file atomically (temp file + move on local disk; single PUT on object stores)."""
        target = self._own(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}" if self.is_local else target
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        if tmp != target:
            self.fs.move(tmp, target)

    def local_copy(self, rel: str) -> str | None:
        """A local path holding ``rel`` (downloaded from an object store), or None if absent."""
        if not self.exists(rel):
            return None
        if self.is_local:
            return self.path(rel)
        import tempfile

        with self.fs.open_input_stream(self.path(rel)) as f:
            data = f.read()
        with tempfile.NamedTemporaryFile("wb", suffix=posixpath.basename(rel), delete=False) as t:
            t.write(data)
        return t.name

    def read_json(self, rel: str) -> Any:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return json.loads(f.read().decode("utf-8"))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def new_staging(self, stage: str) -> Staging:
        rel = f"{STAGING}/{stage}-{uuid.uuid4().hex[:10]}"
        self.fs.create_dir(self._own(rel), recursive=True)
        return Staging(self, rel)

    def delete(self, rel: str) -> None:
        self._delete_path(self._own(rel))

    def prune(self, rel: str) -> None:
        """Delete ``rel`` and then each parent up to and including the run dir, for as long as
        they are empty folders (raykd's scratch folders leave nothing behind, and a first stage
        that fails leaves no empty run dir)."""
        while True:
            p = self._own(rel)
            if self.fs.get_file_info(p).type == pafs.FileType.Directory:
                if self.fs.get_file_info(pafs.FileSelector(p)):
                    return
                self.fs.delete_dir(p)
            if not rel:
                return
            rel = posixpath.dirname(rel)

    def _delete_path(self, p: str) -> None:
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def commit(self, staged_rel: str, final_rel: str) -> None:
        """Move a fully written staged folder or file to ``final_rel``, replacing what was there."""
        src, dst = self._own(staged_rel), self._own(final_rel)
        self.fs.create_dir(posixpath.dirname(dst), recursive=True)
        if self.is_local:
            old = None
            if self.fs.get_file_info(dst).type != pafs.FileType.NotFound:
                old = f"{self._own(STAGING)}/old-{uuid.uuid4().hex[:10]}"
                self.fs.move(dst, old)
            self.fs.move(src, dst)
            if old is not None:
                self._delete_path(old)
            return
        self.delete(final_rel)
        if self.fs.get_file_info(src).type == pafs.FileType.File:
            # One object: a copy is whole or absent, no marker needed.
            self.fs.copy_file(src, dst)
            self.fs.delete_file(src)
            return
        pafs.copy_files(src, dst, source_filesystem=self.fs, destination_filesystem=self.fs)
        with self.fs.open_output_stream(posixpath.join(dst, SUCCESS)) as f:
            f.write(b"")
        self.fs.delete_dir(src)


# AWS errors (as pyarrow names them) that refuse the credentials themselves.
REJECTED = {
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "INVALID_CLIENT_TOKEN_ID",
    "UNRECOGNIZED_CLIENT",
    "MISSING_AUTHENTICATION_TOKEN",
    "INVALID_SIGNATURE",
    "INCOMPLETE_SIGNATURE",
}


def _refusal(fs: pafs.FileSystem, root: str, err: OSError) -> str:
    """Why the store refused to say whether the run dir's bucket exists, and what to fix.

    A refused HEAD comes back without a body, so S3 says only ACCESS_DENIED whatever the cause: a
    listing of the run dir then asks for the store's own reason (a rejected key or signature, or
    credentials it knows that may not read the bucket).
    """
    if "AWS Error ACCESS_DENIED" in str(err):
        try:
            fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except OSError as listing:
            err = listing
    found = re.search(r"AWS Error (\w+)", str(err))
    code = found.group(1) if found else ""
    name = "".join(w.capitalize() for w in code.split("_"))
    if code in REJECTED:
        return (
            f"the store rejected these credentials ({name}; check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
        )
    if code == "ACCESS_DENIED":
        return (
            f"these credentials may not read bucket {root.split('/', 1)[0]!r} ({name}; check the "
            "bucket's and the user's policies, or AWS_PROFILE)"
        )
    return f"cannot reach the store: {str(err).splitlines()[0]}"


@dataclass(frozen=True)
class Staging:
    """A private folder a stage writes into before committing its outputs."""

    run: RunDir
    rel: str

    def path(self, rel: str) -> str:
        return self.run._own(f"{self.rel}/{rel}")

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
        self.run.prune(STAGING)
