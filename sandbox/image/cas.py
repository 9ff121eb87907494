"""Content-addressed blob storage: ``<root>/blobs/sha256/<hex>``.

Contracts (modelled on umoci's ``oci/cas`` engine):

* :meth:`BlobStore.writer` / :meth:`put_bytes` / :meth:`put_stream` are idempotent. They hash while
  writing into a temp file under ``<root>/tmp``, ``fsync`` it, check the digest (and size) the caller
  announced, then ``rename`` it into place and ``fsync`` the directory. Success means "the content is
  stored at DIGEST", not necessarily "because of this call". A digest mismatch removes the temp file
  and raises :class:`DigestMismatch`; nothing is stored half-way.
* Readers (:meth:`open`) verify: the digest is checked when the content has been read to the end
  (:meth:`VerifiedReader.finish` reads what is left and checks), so a blob corrupted on disk is
  noticed by whoever consumes it.
* Temp files left by a crash are removed by :meth:`Store.cleanup`; the caller must make sure no writer is
  active (the image store does that with its ``gc.lock``).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from typing import BinaryIO

from sandbox.image.errors import DigestMismatch, StoreError
from sandbox.image.fsutil import TMP_PREFIX, fsync_dir, tmp_name
from sandbox.image.reference import check_digest, is_digest

CHUNK = 1 << 20
BLOB_MODE = 0o444


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _store_error(e: OSError, what: str) -> StoreError:
    if e.errno == errno.ENOSPC:
        return StoreError(f"{what}: no space left on device", hint="free some space, or run `sbx image prune`")
    if e.errno == errno.EDQUOT:
        return StoreError(f"{what}: disk quota exceeded", hint="free some space, or run `sbx image prune`")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"{what}: {e.strerror}", hint="check the permissions of the store (SBX_ROOT / --root)")
    return StoreError(f"{what}: {e.strerror or e}")


class BlobWriter:
    """Write one blob. Use as a context manager; :meth:`commit` returns the digest.

    Leaving the ``with`` block without committing (or on an exception) removes the temp file.
    """

    def __init__(self, store: BlobStore, expected: str | None = None, size: int | None = None) -> None:
        self._store = store
        self.expected = check_digest(expected) if expected else None
        self.expected_size = size
        self._hash = hashlib.sha256()
        self.size = 0
        self.tmp = tmp_name(store.tmp_dir, "blob-")
        try:
            self._fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _store_error(e, "create temp blob") from e
        self.digest: str | None = None

    def write(self, data: bytes | memoryview) -> int:
        assert self._fd is not None, "write after commit/abort"
        n_total = len(data)
        if self.expected_size is not None and self.size + n_total > self.expected_size:
            what = self.expected or "blob"
            self.abort()
            raise DigestMismatch(f"blob {what} is larger than the announced {self.expected_size} bytes")
        self._hash.update(data)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            self.abort()
            raise _store_error(e, f"write blob {self.expected or ''}".rstrip()) from e
        self.size += n_total
        return n_total

    def commit(self) -> str:
        """fsync, verify, rename into place; returns the digest. Idempotent with respect to the store."""
        assert self._fd is not None, "commit after commit/abort"
        digest = "sha256:" + self._hash.hexdigest()
        if self.expected and digest != self.expected:
            self.abort()
            raise DigestMismatch(
                f"blob {self.expected} failed verification: its content hashes to {digest}",
                hint="the source sent corrupt data; nothing was stored",
            )
        if self.expected_size is not None and self.size != self.expected_size:
            self.abort()
            raise DigestMismatch(f"blob {digest} has {self.size} bytes, {self.expected_size} were announced")
        fd, self._fd = self._fd, None
        try:
            try:
                os.fchmod(fd, BLOB_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(self.tmp, self._store.path(digest))
            fsync_dir(self._store.blob_dir)
        except OSError as e:
            self._unlink_tmp()
            raise _store_error(e, f"store blob {digest}") from e
        self.digest = digest
        return digest

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    def abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
            self._unlink_tmp()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class VerifiedReader:
    """A binary reader over a stored blob that checks the digest once the end is reached."""

    def __init__(self, path: str, digest: str, verify: bool = True) -> None:
        self.digest = digest
        self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._hash = hashlib.sha256() if verify else None
        self._checked = not verify

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if self._hash is not None:
            if data:
                self._hash.update(data)
            elif n != 0:
                self._check()
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def _check(self) -> None:
        if self._checked or self._hash is None:
            return
        self._checked = True
        got = "sha256:" + self._hash.hexdigest()
        if got != self.digest:
            raise DigestMismatch(
                f"stored blob {self.digest} is corrupt: its content hashes to {got}",
                hint="run `sbx system check --repair`, then pull or load the image again",
            )

    def finish(self) -> None:
        """Read whatever is left and verify the digest (raises :class:`DigestMismatch`)."""
        while self.read(CHUNK):
            pass
        self._check()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore:
    """The ``blobs/sha256`` directory of a store root, plus its ``tmp`` directory."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blob_dir = os.path.join(root, "blobs", "sha256")
        self.tmp_dir = os.path.join(root, "tmp")

    def init(self) -> None:
        for d in (self.blob_dir, self.tmp_dir):
            os.makedirs(d, exist_ok=True)

    def path(self, digest: str) -> str:
        check_digest(digest)
        return os.path.join(self.blob_dir, digest[7:])

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store",
                             hint="run `sbx system check --repair`") from None

    def writer(self, expected: str | None = None, size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected, size)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected and expected != digest:
            raise DigestMismatch(f"content for {expected} hashes to {digest}", hint="nothing was stored")
        if self.has(digest):
            return digest
        with self.writer(digest, len(data)) as w:
            w.write(data)
            return w.commit()

    def put_stream(self, src: BinaryIO, expected: str | None = None, size: int | None = None) -> str:
        with self.writer(expected, size) as w:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
            return w.commit()

    def open(self, digest: str, verify: bool = True) -> VerifiedReader:
        try:
            return VerifiedReader(self.path(digest), digest, verify)
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store",
                             hint="run `sbx system check --repair`, then pull or load the image again") from None

    def read_bytes(self, digest: str, verify: bool = True) -> bytes:
        """Read a small blob (manifest, config) whole, verifying it."""
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store",
                             hint="run `sbx system check --repair`, then pull or load the image again") from None
        if verify and sha256_digest(data) != digest:
            raise DigestMismatch(f"stored blob {digest} is corrupt",
                                 hint="run `sbx system check --repair`, then pull or load the image again")
        return data

    def verify(self, digest: str) -> bool:
        try:
            with self.open(digest) as r:
                r.finish()
            return True
        except (DigestMismatch, StoreError):
            return False

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def __iter__(self) -> Iterator[str]:
        try:
            names = os.listdir(self.blob_dir)
        except FileNotFoundError:
            return
        for name in sorted(names):
            if not name.startswith(TMP_PREFIX) and is_digest("sha256:" + name):
                yield "sha256:" + name

    def stray_files(self) -> list[str]:
        """Names in the blob directory that are not blobs (leftovers, foreign files)."""
        try:
            names = os.listdir(self.blob_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not is_digest("sha256:" + n))
