"""Layer diffs: a container's changes as an OCI layer blob (:func:`write_layer`) or a change list
(:func:`changes`, for ``sbx diff``).

Two sources of changes, both walked in C (``csrc/sb_diff.c``, through ``sandbox._native``):

* an overlay **upperdir** (``root``), which alone is the diff when the overlay was mounted without
  ``redirect_dir`` and ``metacopy``. Its whiteouts become OCI ``.wh.`` entries; an opaque directory gets
  a ``.wh..wh..opq`` marker when one of ``lowers`` (the layer directories below it, topmost first, in
  overlay form) has that directory. ``lowers`` also decide ``A`` vs ``C`` in the change list. Pass them:
  without them an opaque directory is written without its marker.
* the **fallback** for roots that are not an overlay: ``base=`` the tree before the changes, ``root`` the
  tree after (a two-tree compare pruned by inode, then stat, then content). It gives the same change list
  and the same tar as the overlay walk, except that a directory that was replaced (opaque in the overlay)
  is written as one whiteout per deleted entry rather than an opaque marker: the same merged result.

The tar is PAX, deterministic (sorted, parents first, numeric ids, no atime/ctime, mtime optionally
clamped to ``SOURCE_DATE_EPOCH``), keeps hard links as links, keeps only the ``security.capability``
xattr, skips sockets and refuses names starting with ``.wh.``. The diffID (sha256 of the tar) and the
digest of the blob (sha256 of the gzip stream) are computed in the same pass that writes the blob: the C
walker fills buffers in its own thread while this module hashes them, hands them to gzip threads (pigz's
block layout, see :class:`_BlockGzip`) and writes the compressed blocks in order.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from sandbox.image import mediatypes
from sandbox.image.errors import LayerError

GZIP, NONE = "gzip", "none"
COMPRESSIONS = (GZIP, NONE)
DEFAULT_LEVEL = 6  # zlib's and gzip(1)'s default
# Layers made on this machine from a local tree (build steps, `sbx import`): zlib's fastest level.
# A Debian apt layer (180 MB of package lists and caches) took 8.5 s of CPU at level 6 and 3.1 s
# at level 1, for a blob 8.6 % bigger; the tar, the diffID and the image id do not change.
LOCAL_LEVEL = 1

# The tar comes out of the C walker in buffers of GZIP_BLOCK bytes (the last one shorter), and each buffer
# is one gzip block (see _BlockGzip): this constant is part of the layer format, changing it changes
# every gzip digest.
GZIP_BLOCK = 1 << 20
_N_BUFS = 4
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # deflate, no name, mtime 0, Unix
_DICT = 32 * 1024

IdMap = Sequence[Any]  # OCI {"containerID", "hostID", "size"} dicts or (inside, outside, count) tuples


class LayerInfo(NamedTuple):
    diff_id: str       # sha256 of the uncompressed tar
    digest: str        # sha256 of the blob as written (== diff_id when uncompressed)
    size: int          # bytes of the blob as written (the manifest descriptor's size)
    tar_size: int = 0  # bytes of the uncompressed tar (what the store records for unpacked layers)


def media_type(compression: str = GZIP) -> str:
    """The OCI layer media type for a blob written with ``compression``."""
    if compression == GZIP:
        return mediatypes.OCI_LAYER_GZIP
    if compression == NONE:
        return mediatypes.OCI_LAYER
    raise ValueError(f"unknown layer compression {compression!r}")


def source_date_epoch(env: dict[str, str] | None = None) -> int | None:
    """``$SOURCE_DATE_EPOCH`` as an int, or None when unset or empty (reproducible-builds.org)."""
    v = (os.environ if env is None else env).get("SOURCE_DATE_EPOCH", "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        raise LayerError(f"SOURCE_DATE_EPOCH={v!r} is not a number of seconds",
                         hint="set it to a Unix time, e.g. $(git log -1 --format=%ct)") from None


def _native() -> Any:
    from sandbox import _native

    return _native


def _idmap(m: IdMap | None) -> list[tuple[int, int, int]] | None:
    if not m:
        return None
    out = []
    for e in m:
        if isinstance(e, dict):
            out.append((int(e["containerID"]), int(e["hostID"]), int(e["size"])))
        else:
            inside, outside, count = e
            out.append((int(inside), int(outside), int(count)))
    return out


def _layer_error(e: OSError, what: str) -> LayerError:
    detail = getattr(e, "detail", None) or str(e)
    msg = f"{what}: {detail}: {e.strerror}" if e.strerror else f"{what}: {detail}"
    hint = None
    if e.errno in (errno.EACCES, errno.EPERM):
        hint = ("some files cannot be read by this user; run the diff inside the container's user "
                "namespace, where its root can read them")
    elif e.errno == errno.EOVERFLOW:
        hint = "pass the container's uid/gid maps (or none to keep host ids)"
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space, or run `sbx image prune`"
    return LayerError(msg, hint=hint)


def _mode(base: str | os.PathLike[str] | None) -> int:
    n = _native()
    return n.DIFF_OVERLAY if base is None else n.DIFF_COMPARE


def changes(root: str | os.PathLike[str], lowers: Iterable[str | os.PathLike[str]] = (), *,
            base: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """The changes as ``[(kind, "/path")]`` like ``docker diff``: ``A`` added, ``C`` changed (the path
    exists in a lower layer, or in ``base``), ``D`` deleted. Sorted per directory, parents first; a
    deleted directory is one ``D``; the parents of a change are listed as ``C``.

    ``root`` is an overlay upperdir with ``lowers`` (topmost first), or, with ``base``, a plain tree
    compared with ``base``. Raises :class:`LayerError`."""
    mode = _mode(base)
    try:
        raw = _native().diff_changes(mode, root, base, list(lowers))
    except OSError as e:
        raise _layer_error(e, f"cannot list the changes in {os.fspath(root)}") from e
    return [(k, "/" + p) for k, p in raw]


def _deflate_block(level: int, data: bytes, zdict: bytes) -> bytes:
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


class _BlockGzip:
    """gzip, compressed in parallel the way pigz does it: every block is deflated on its own, primed with
    the last 32 KiB of the block before as a dictionary and ended with a sync flush, so the pieces
    concatenate into one ordinary deflate stream (any gunzip reads it). The output depends only on the data,
    the level and GZIP_BLOCK, never on the number of threads, so layers stay reproducible. zlib drops the
    GIL while it compresses, so the threads really run in parallel (with the C walker beside them)."""

    def __init__(self, level: int, threads: int, emit: Callable[[bytes], None]) -> None:
        self.level = level
        self.emit = emit
        self.crc = 0
        self.isize = 0
        self.tail = b""
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sbx-gzip") if threads > 1 else None
        self.pending: deque[Future[bytes]] = deque()
        self.max_pending = 2 * threads
        emit(_GZIP_HEADER)

    def feed(self, view: memoryview) -> None:
        data = bytes(view)
        self.crc = zlib.crc32(data, self.crc)
        self.isize += len(data)
        zdict, self.tail = self.tail, data[-_DICT:]
        if self.pool is None:
            self.emit(_deflate_block(self.level, data, zdict))
            return
        self.pending.append(self.pool.submit(_deflate_block, self.level, data, zdict))
        while len(self.pending) >= self.max_pending:
            self.emit(self.pending.popleft().result())

    def finish(self) -> None:
        while self.pending:
            self.emit(self.pending.popleft().result())
        self.emit(b"\x03\x00")  # an empty final block
        self.emit(struct.pack("<II", self.crc & 0xFFFFFFFF, self.isize & 0xFFFFFFFF))
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=True)
            self.pool = None


class GzipWriter:
    """A file-like ``write`` that gzips what it is given in GZIP_BLOCK blocks on :class:`_BlockGzip`'s
    threads (the same bytes whatever the thread count) into ``emit``; ``close()`` ends the stream."""

    def __init__(self, emit: Callable[[bytes], None], level: int = DEFAULT_LEVEL, threads: int | None = None) -> None:
        self._gz = _BlockGzip(level, threads or _default_threads(), emit)
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= GZIP_BLOCK:
            n = len(self._buf) - len(self._buf) % GZIP_BLOCK
            view = memoryview(self._buf)
            for i in range(0, n, GZIP_BLOCK):
                self._gz.feed(view[i:i + GZIP_BLOCK])
            view.release()
            del self._buf[:n]
        return len(data)

    def close(self) -> None:
        """Compress what is left and end the stream (the gzip trailer)."""
        if self._buf:
            self._gz.feed(memoryview(self._buf))
            self._buf = bytearray()
        self._gz.finish()

    def abort(self) -> None:
        self._gz.close()


def _default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class _FdWriter:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def write_layer(root: str | os.PathLike[str], dest: str | os.PathLike[str] | int | Any, *,
                lowers: Iterable[str | os.PathLike[str]] = (), base: str | os.PathLike[str] | None = None,
                compression: str = GZIP, level: int = DEFAULT_LEVEL, source_date_epoch: int | None = None,
                uid_map: IdMap | None = None, gid_map: IdMap | None = None,
                threads: int | None = None) -> LayerInfo:
    """Write the layer of ``root`` (an overlay upperdir; with ``base``, a tree to compare with ``base``) to
    ``dest`` and return ``LayerInfo(diff_id, digest, size, tar_size)``.

    ``dest`` is a path (created or truncated; removed again if the diff fails, unless it is not a regular
    file, like /dev/null), an open file descriptor (written, not closed), or an object with a ``write``
    method (e.g. :class:`sandbox.image.cas.BlobWriter`). Nothing is fsynced here: the store does that
    when it adopts the blob (see :func:`put_layer`).

    ``compression``: ``gzip`` (deterministic: no name, mtime 0 in the gzip header; compressed in blocks by
    ``threads`` threads, default: the CPUs we may use, up to 8 - the bytes do not depend on it) or ``none``.
    ``source_date_epoch``: clamp every mtime to it. ``uid_map``/``gid_map``: the container's id maps
    (OCI dicts or ``(inside, outside, count)``); files owned by mapped host ids get the container ids,
    an unmapped id is an error, and a namespaced file capability is rewritten for the container.
    Without maps host ids are written as they are.
    """
    if compression not in COMPRESSIONS:
        raise LayerError(f"unsupported layer compression {compression!r}", hint="use gzip or none")
    mode = _mode(base)

    close_fd = created = False
    foreign = False
    if isinstance(dest, int):
        writer: Any = _FdWriter(dest)
    elif hasattr(dest, "write"):
        writer, foreign = dest, True
    else:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _layer_error(e, "cannot create the layer file") from e
        close_fd = True
        created = stat.S_ISREG(os.fstat(fd).st_mode)
        writer = _FdWriter(fd)
    write: Callable[[Any], Any] = writer.write

    tar_hash = hashlib.sha256()
    blob_hash = hashlib.sha256() if compression != NONE else None
    size = 0
    comp: _BlockGzip | None = None

    if compression == GZIP:
        assert blob_hash is not None

        def emit(out: bytes) -> None:
            nonlocal size
            blob_hash.update(out)
            write(out)
            size += len(out)

        comp = _BlockGzip(level, threads or _default_threads(), emit)

        def sink(view: memoryview) -> None:
            tar_hash.update(view)
            comp.feed(view)
    else:

        def sink(view: memoryview) -> None:
            nonlocal size
            tar_hash.update(view)
            # the view points into the C walker's buffer: a writer we do not know gets a copy it may keep
            write(bytes(view) if foreign else view)
            size += len(view)

    ok = False
    try:
        try:
            tar_size = _native().diff_stream(mode, root, sink, base=base, lowers=list(lowers),
                                             epoch=source_date_epoch, uid_map=_idmap(uid_map),
                                             gid_map=_idmap(gid_map), buf_size=GZIP_BLOCK, n_bufs=_N_BUFS)
            if comp is not None:
                comp.finish()
        except LayerError:
            raise
        except OSError as e:
            if getattr(e, "detail", None):
                raise _layer_error(e, f"cannot diff {os.fspath(root)}") from e
            raise _layer_error(e, "cannot write the layer") from e
        ok = True
    finally:
        if comp is not None:
            comp.close()
        if close_fd:
            os.close(fd)
            if not ok and created:
                with contextlib.suppress(OSError):
                    os.unlink(dest)  # type: ignore[arg-type]
    diff_id = "sha256:" + tar_hash.hexdigest()
    digest = "sha256:" + blob_hash.hexdigest() if blob_hash is not None else diff_id
    return LayerInfo(diff_id, digest, size, tar_size)


def put_layer(blobs: Any, root: str | os.PathLike[str], **kw: Any) -> LayerInfo:
    """Write the layer of ``root`` straight into a :class:`sandbox.image.cas.BlobStore` (the store's
    ``blobs``) and return its :class:`LayerInfo`; keyword arguments as for :func:`write_layer`.

    The blob goes through the store's own writer (temp file in ``tmp/``, hashed while written, fsynced,
    renamed to ``blobs/sha256/<hex>``), so the store's contract holds: idempotent, nothing half-stored.
    Hold ``Store.adding()`` around the call so that GC cannot run meanwhile."""
    with blobs.writer() as w:
        info = write_layer(root, w, **kw)
        stored = w.commit()
    if stored != info.digest:  # two hashes of the same bytes: only a bug gets here
        raise LayerError(f"layer blob digest mismatch: wrote {info.digest}, the store computed {stored}")
    return info


def put_layer_in_store(store: str, root: str, lowers: Sequence[str] = (), base: str | None = None,
                       map_caller_to_root: bool = False, level: int = DEFAULT_LEVEL) -> dict[str, Any]:
    """:func:`put_layer` into the blobs of the store at ``store``, with JSON in and out: a worker
    call (``sandbox.runtime.userns_worker``), run as root of the sandboxes' user namespace where
    their files have subordinate ids.  ``map_caller_to_root``: in-process in single-id mode, where
    the caller's files are root's inside the sandboxes.  A big layer takes seconds: a terminal
    shows it."""
    from sandbox.image.cas import BlobStore
    from sandbox.progress import CountingBlobs, Meter

    kw: dict[str, Any] = {"level": level}
    if map_caller_to_root:
        kw.update(uid_map=[(0, os.geteuid(), 1)], gid_map=[(0, os.getegid(), 1)])
    if base:
        kw["base"] = base
    with Meter("", "Committing layer") as m:
        info = put_layer(CountingBlobs(BlobStore(store), m.add), root, lowers=list(lowers), **kw)
    return info._asdict()
