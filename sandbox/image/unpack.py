"""Unpack one layer tar into its own directory, in overlay form, refusing hostile content.

The directory gets exactly what the layer adds or changes. Deletions become overlayfs whiteouts:
``.wh.NAME`` -> a character device 0/0 named ``NAME``; ``.wh..wh..opq`` -> the ``user.overlay.opaque=y``
xattr on the directory (see :mod:`sandbox.image.whiteout`; with ``FORMAT_AUFS`` the ``.wh.`` files are
kept as they are in the tar instead). An overlay mount of the layer directories, top layer first, is
then the image's root filesystem.

What is refused (each :class:`LayerError` names the layer and the entry):

* names that are absolute or contain ``..`` (Charliecloud's ``validate_members``, umoci ``normalise()``);
* any entry whose parent path, inside this layer, is a symbolic link or not a directory - writing
  through a symlink is how a tar escapes its root. We never follow symlinks while unpacking;
* hardlinks whose target is absolute, contains ``..``, is a directory, or is reached through a symlink
  (in this layer or in an earlier one); a target only present in an earlier layer is copied;
* whiteouts whose target is ``.``/``..``/empty, and ``.wh..wh.`` names other than the opaque marker.

Device nodes cannot be created without privilege; they are skipped with a warning. Extended
attributes from the tar are not applied (a ``user.overlay.*`` xattr from a layer would be trusted by
overlayfs mounted with ``userxattr``; ``security.capability`` needs privilege).

Ownership is an :class:`Ownership` policy: :data:`SINGLE_ID` (the default: everything belongs to the
user running sbx, as in Charliecloud; directories get ``u+rwx`` and files ``u+rw`` so the user can
always read and delete them) or :class:`MappedOwnership` (``lchown`` to the ids in the tar: for the
launcher to run inside a user namespace with a subuid range mapped).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from sandbox.image import whiteout as wh
from sandbox.image.compress import open_decompressed
from sandbox.image.errors import DigestMismatch, LayerError

log = logging.getLogger("sandbox.image.unpack")

CHUNK = 1 << 20


# --- ownership ------------------------------------------------------------------------------------

class Ownership:
    """How unpacked files get their owner and mode. Subclass to change; keep it stateless."""

    name = "abstract"

    def file_mode(self, mode: int, is_dir: bool) -> int:
        return mode

    def apply(self, path: str, uid: int, gid: int, entry: str) -> None:
        raise NotImplementedError


class SingleIdOwnership(Ownership):
    """Single-id mode: every file belongs to the calling user; make sure the user can read and remove
    everything (directories ``|0700``, other files ``|0600``)."""

    name = "single"

    def file_mode(self, mode: int, is_dir: bool) -> int:
        return mode | (0o700 if is_dir else 0o600)

    def apply(self, path: str, uid: int, gid: int, entry: str) -> None:
        return None


class MappedOwnership(Ownership):
    """Keep the tar's uid/gid with ``lchown``. Meant to run inside a user namespace whose uid/gid maps
    cover the ids the image uses (a subuid range); ids outside the map fail with the entry named."""

    name = "mapped"

    def apply(self, path: str, uid: int, gid: int, entry: str) -> None:
        try:
            os.lchown(path, uid, gid)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EPERM):
                raise LayerError(
                    f"entry {entry!r}: cannot set owner {uid}:{gid}: {e.strerror}",
                    hint="the id is not mapped in this user namespace; add a larger range to /etc/subuid and /etc/subgid",
                ) from e
            raise


SINGLE_ID = SingleIdOwnership()


@dataclass(frozen=True)
class UnpackOptions:
    """``lower_dirs``: the unpacked directories of the layers below this one, bottom first (used only to
    resolve hardlinks to files this layer does not contain). ``expected_diff_id``: the uncompressed digest
    from the image config; a mismatch fails the unpack. ``expected_digest``: the digest of the raw
    (compressed) stream, checked after the last byte."""

    whiteouts: str = wh.FORMAT_OVERLAY
    owner: Ownership = SINGLE_ID
    lower_dirs: Sequence[str] = ()
    expected_diff_id: str | None = None
    expected_digest: str | None = None
    label: str = "layer"
    warn: Callable[[str], None] | None = None


@dataclass
class UnpackResult:
    diff_id: str
    digest: str
    size: int  # bytes of the uncompressed tar stream
    compression: str
    entries: int = 0
    warnings: list[str] = field(default_factory=list)


class _HashingReader:
    """Hash everything read through it (and count it)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self.hash.update(data)
            self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


# --- path checks ----------------------------------------------------------------------------------

def clean_name(name: str) -> list[str] | None:
    """Split a member name into components; None for the root itself. Raises ValueError (with the
    reason) for absolute names and names with ``..``."""
    if name.startswith("/"):
        raise ValueError("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("path contains '..'")
    if "\0" in name:
        raise ValueError("path contains a NUL byte")
    return parts or None


class _Unpacker:
    def __init__(self, dest: str, opts: UnpackOptions) -> None:
        self.dest = dest
        self.opts = opts
        self.owner = opts.owner
        self.overlay = opts.whiteouts == wh.FORMAT_OVERLAY
        self.dirs_ok: set[str] = {""}  # relative dirs known to be real directories we may write in
        self.dir_meta: dict[str, tuple[int, float]] = {}  # rel -> (mode, mtime), applied at the end
        self.warnings: list[str] = []
        self.entries = 0

    # -- helpers
    def _err(self, entry: str, why: str, hint: str | None = None) -> LayerError:
        return LayerError(f"{self.opts.label}: refusing entry {entry!r}: {why}", hint=hint)

    def _warn(self, msg: str) -> None:
        msg = f"{self.opts.label}: {msg}"
        self.warnings.append(msg)
        if self.opts.warn:
            self.opts.warn(msg)
        else:
            log.warning("%s", msg)

    def _abs(self, rel: str) -> str:
        return os.path.join(self.dest, rel) if rel else self.dest

    def _forget(self, rel: str) -> None:
        """``rel`` is being replaced: forget what we knew about it and below it."""
        prefix = rel + "/"
        self.dirs_ok = {d for d in self.dirs_ok if d != rel and not d.startswith(prefix)}
        self.dir_meta = {d: m for d, m in self.dir_meta.items() if d != rel and not d.startswith(prefix)}

    def _ensure_dir(self, parts: list[str], entry: str) -> str:
        """Make sure every component of ``parts`` is a real directory inside dest (creating missing
        ones), never following a symlink. Returns the relative path."""
        rel = ""
        for comp in parts:
            rel = f"{rel}/{comp}" if rel else comp
            if rel in self.dirs_ok:
                continue
            p = self._abs(rel)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p, 0o700)
                # Implicit parents get Docker's default mode.
                self.dir_meta[rel] = (self.owner.file_mode(0o755, True), 0.0)
                self.dirs_ok.add(rel)
                continue
            if stat.S_ISDIR(st.st_mode):
                self.dirs_ok.add(rel)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self._err(entry, f"its parent {rel!r} is a symbolic link (a tar must not write through links)")
            if self.overlay and wh.is_whiteout_stat(st):
                # `.wh.d` and then `d/x` in the same layer: a new directory replacing a deleted one,
                # i.e. an opaque directory.
                os.unlink(p)
                os.mkdir(p, 0o700)
                os.setxattr(p, wh.OPAQUE_XATTR, b"y")
                self.dir_meta[rel] = (self.owner.file_mode(0o755, True), 0.0)
                self.dirs_ok.add(rel)
                continue
            raise self._err(entry, f"its parent {rel!r} is not a directory")
        return rel

    def _remove_existing(self, rel: str) -> None:
        p = self._abs(rel)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        from sandbox.image.fsutil import rmtree_writable

        if stat.S_ISDIR(st.st_mode):
            rmtree_writable(p)
        else:
            os.unlink(p)
        self._forget(rel)

    def _set_meta(self, p: str, m: tarfile.TarInfo, entry: str, *, is_link: bool = False) -> None:
        self.owner.apply(p, m.uid, m.gid, entry)
        if not is_link:
            os.chmod(p, self.owner.file_mode(m.mode & 0o7777, False))
        try:
            os.utime(p, (m.mtime, m.mtime), follow_symlinks=False)
        except OSError:
            pass

    # -- entries
    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        entry = m.name
        try:
            parts = clean_name(entry)
        except ValueError as e:
            raise self._err(entry, str(e)) from None
        if parts is None:  # the layer root ("./"): nothing to create
            return
        self.entries += 1
        base = parts[-1]
        if base.startswith(wh.WH_PREFIX):
            self._whiteout(parts, entry, m)
            return
        parent = self._ensure_dir(parts[:-1], entry)
        rel = f"{parent}/{base}" if parent else base
        p = self._abs(rel)

        if m.isdir():
            try:
                st = os.lstat(p)
                if not stat.S_ISDIR(st.st_mode):
                    self._remove_existing(rel)
                    os.mkdir(p, 0o700)
            except FileNotFoundError:
                os.mkdir(p, 0o700)
            self.dirs_ok.add(rel)
            self.owner.apply(p, m.uid, m.gid, entry)
            self.dir_meta[rel] = (self.owner.file_mode(m.mode & 0o7777, True), m.mtime)
            return

        if m.ischr() or m.isblk():
            self._warn(f"skipping device node {entry!r} ({m.devmajor}:{m.devminor}): devices cannot be created here")
            return

        self._remove_existing(rel)
        if m.isreg():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                src = tf.extractfile(m)
                if src is not None:
                    while True:
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            n = os.write(fd, view)
                            view = view[n:]
            finally:
                os.close(fd)
            self._set_meta(p, m, entry)
        elif m.issym():
            if not m.linkname:
                raise self._err(entry, "symbolic link with an empty target")
            os.symlink(m.linkname, p)
            self._set_meta(p, m, entry, is_link=True)
        elif m.islnk():
            self._hardlink(rel, p, m, entry)
        elif m.isfifo():
            os.mkfifo(p, 0o600)
            self._set_meta(p, m, entry)
        else:
            self._warn(f"skipping entry {entry!r} of unsupported type {m.type!r}")

    def _whiteout(self, parts: list[str], entry: str, m: tarfile.TarInfo) -> None:
        base = parts[-1]
        parent = self._ensure_dir(parts[:-1], entry)
        if base == wh.WH_OPAQUE:
            if self.overlay:
                os.setxattr(self._abs(parent), wh.OPAQUE_XATTR, b"y")
            else:
                self._aufs_marker(parent, base)
            return
        if base.startswith(wh.WH_META_PREFIX):
            raise self._err(entry, "unknown whiteout meta-file (only .wh..wh..opq is defined)")
        target = base[len(wh.WH_PREFIX):]
        if target in ("", ".", "..") or "/" in target:
            raise self._err(entry, "whiteout points outside its directory")
        if not self.overlay:
            self._aufs_marker(parent, base)
            return
        rel = f"{parent}/{target}" if parent else target
        p = self._abs(rel)
        if os.path.lexists(p):
            # The same layer also has `target`: whiteouts only apply to lower layers (image-spec
            # layer.md), so the content in this layer wins.
            return
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))

    def _aufs_marker(self, parent: str, base: str) -> None:
        rel = f"{parent}/{base}" if parent else base
        p = self._abs(rel)
        if not os.path.lexists(p):
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))

    def _hardlink(self, rel: str, p: str, m: tarfile.TarInfo, entry: str) -> None:
        try:
            tparts = clean_name(m.linkname)
        except ValueError as e:
            raise self._err(entry, f"hardlink target {m.linkname!r}: {e}") from None
        if tparts is None:
            raise self._err(entry, "hardlink to the layer root")
        # This layer first, then the earlier layers from the top down.
        roots = [(self.dest, "this layer")] + [
            (d, f"earlier layer {len(self.opts.lower_dirs) - i}") for i, d in enumerate(reversed(self.opts.lower_dirs))
        ]
        for root, where in roots:
            found = self._lookup(root, tparts, entry, m.linkname, where)
            if found is None:
                continue
            if found == "deleted":
                break
            tpath, st = found
            if stat.S_ISDIR(st.st_mode):
                raise self._err(entry, f"hardlink target {m.linkname!r} is a directory")
            if root == self.dest:
                os.link(tpath, p, follow_symlinks=False)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(tpath), p)
            elif stat.S_ISREG(st.st_mode):
                # Layers never share inodes: copy the lower file into this layer.
                shutil.copyfile(tpath, p, follow_symlinks=False)
                os.chmod(p, stat.S_IMODE(st.st_mode))
                try:
                    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
                except OSError:
                    pass
            else:
                raise self._err(entry, f"hardlink target {m.linkname!r} is not a regular file")
            return
        raise self._err(entry, f"hardlink target {m.linkname!r} does not exist in this layer or below")

    def _lookup(self, root: str, parts: list[str], entry: str, linkname: str, where: str):  # type: ignore[no-untyped-def]
        """Find ``parts`` under ``root`` without following symlinks. Returns ``(path, stat)``; None when
        absent from ``root`` (look further down); "deleted" when a whiteout or an opaque directory in
        ``root`` hides whatever the layers below have there."""
        cur = root
        hidden = False  # an opaque directory on the way hides the layers below
        for i, comp in enumerate(parts):
            parent, cur = cur, os.path.join(cur, comp)
            if i > 0 and wh.is_opaque(parent):
                hidden = True
            try:
                st = os.lstat(cur)
            except (FileNotFoundError, NotADirectoryError):
                if hidden or os.path.lexists(os.path.join(parent, wh.WH_PREFIX + comp)):
                    return "deleted"
                return None
            if wh.is_whiteout_stat(st):
                return "deleted"
            if i == len(parts) - 1:
                return cur, st
            if stat.S_ISLNK(st.st_mode):
                raise self._err(entry, f"hardlink target {linkname!r} goes through the symbolic link "
                                       f"{'/'.join(parts[: i + 1])!r} in {where}")
            if not stat.S_ISDIR(st.st_mode):
                return "deleted"  # a file in this layer replaces whatever directory was below
        return None

    def finish(self) -> None:
        # Deepest first, so setting a parent's mtime is not undone by touching its children.
        for rel in sorted(self.dir_meta, key=lambda r: r.count("/"), reverse=True):
            mode, mtime = self.dir_meta[rel]
            p = self._abs(rel)
            os.chmod(p, mode)
            if mtime:
                try:
                    os.utime(p, (mtime, mtime), follow_symlinks=False)
                except OSError:
                    pass


def unpack_layer(raw: BinaryIO, dest: str, opts: UnpackOptions = UnpackOptions()) -> UnpackResult:
    """Unpack the layer read from ``raw`` (gzip, zstd or plain tar) into the existing, empty ``dest``.

    Not atomic by itself: on error ``dest`` is left half-filled and the caller removes it (the store
    unpacks into a temp directory and renames it into place on success). Reads ``raw`` to its end and
    checks ``opts.expected_digest`` / ``opts.expected_diff_id``.
    """
    raw_hash = _HashingReader(raw)
    try:
        stream, kind = open_decompressed(raw_hash, opts.label)  # type: ignore[arg-type]
    except OSError as e:
        raise LayerError(f"{opts.label}: cannot read: {e}") from e
    tar_stream = _HashingReader(stream)
    up = _Unpacker(dest, opts)
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|", errorlevel=2) as tf:  # type: ignore[call-overload]
            for m in tf:
                try:
                    up.member(tf, m)
                except LayerError:
                    raise
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise LayerError(f"{opts.label}: entry {m.name!r}: no space left on device",
                                         hint="free some space, or run `sbx image prune`") from e
                    raise LayerError(f"{opts.label}: entry {m.name!r}: {e.strerror or e}") from e
        tar_stream.drain()
        raw_hash.drain()
    except LayerError:
        raise
    except DigestMismatch:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as e:
        # A zstd error has its own class; it lands in the generic branch below.
        raise LayerError(f"{opts.label}: corrupt or truncated layer ({kind}): {e}",
                         hint="the layer blob is damaged; pull or load the image again") from e
    except Exception as e:  # zstandard.ZstdError and friends
        if type(e).__module__.startswith(("zstandard", "compression", "_zstd")):
            raise LayerError(f"{opts.label}: corrupt zstd stream: {e}") from e
        raise
    up.finish()
    digest = "sha256:" + raw_hash.hash.hexdigest()
    diff_id = "sha256:" + tar_stream.hash.hexdigest()
    if opts.expected_digest and digest != opts.expected_digest:
        raise DigestMismatch(f"{opts.label}: blob content hashes to {digest}, expected {opts.expected_digest}",
                             hint="run `sbx system check --repair`, then pull or load the image again")
    if opts.expected_diff_id and diff_id != opts.expected_diff_id:
        raise LayerError(
            f"{opts.label}: uncompressed content hashes to {diff_id}, but the image config says {opts.expected_diff_id}",
            hint="the image is inconsistent (its config does not describe its layers)",
        )
    return UnpackResult(diff_id=diff_id, digest=digest, size=tar_stream.size, compression=kind,
                        entries=up.entries, warnings=up.warnings)
