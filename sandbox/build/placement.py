"""COPY/ADD placement for builds, and the digest of what the sources name (the step's cache key).

Both run where the build's files can be read and given their owners: called by name through the
build's userns worker (`sandbox.build.placement:copy_into`, `:hash_sources`), so in a user
namespace mapped like the build's sandboxes with a subuid range, in-process without one."""
from __future__ import annotations

import glob
import os
import stat

from ..image.errors import ImageError

# Sources are read and destinations resolved in merged views (sandbox.image.mergedview): every
# symlink, whether in the context, another stage, the image's layers or placed by an earlier source
# of the same step, is resolved inside its own tree.  Writes go to the step's upper directory
# through directory fds (sandbox.runtime.inroot), each final name acted on with dir_fd= and
# O_NOFOLLOW / follow_symlinks=False: nothing is ever written, chmod'ed or chown'ed through a link.


def chmod_at(dfd: int, name: str, mode: int) -> None:
    """chmod NAME in directory DFD, never through a symlink.  Python's follow_symlinks=False
    relies on glibc's /proc/self/fd fallback (before the fchmodat2 call), which fails in a
    running container's root, where /proc is another pid namespace's: there the file is opened
    O_NOFOLLOW (non-blocking: a FIFO too) and fchmod'ed.  A symlink has no mode of its own."""
    try:
        os.chmod(name, mode, dir_fd=dfd, follow_symlinks=False)
        return
    except (NotImplementedError, ValueError):
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dfd)
    except OSError as e:
        if e.errno == 40:  # ELOOP: a symlink
            return
        raise
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def warm_up() -> None:
    """A worker's first call, made while a build step runs (builder's start_ahead): import what
    the step's commit (the layer diff into the store) and clean-up need, so that none of it
    delays them."""
    from .. import _native, progress  # noqa: F401
    from ..image import cas, layer, store  # noqa: F401


def _check_rel(src: str, where: str) -> str:
    rel = os.path.normpath(src.lstrip("/"))
    if rel == ".":
        return ""
    if rel == ".." or rel.startswith("../"):
        raise ImageError(f"{where}: source {src!r} is outside the build context")
    return rel


def _matches(view, src: str, where: str = "") -> list[list[str]]:
    """The canonical paths (as parts) a COPY source names in `view`; globs allowed in the last
    part.  The parent is resolved inside the view; the last part is not followed (a symlink
    source is copied as a symlink)."""
    rel = _check_rel(src, where)
    parent, name = os.path.split(rel)
    if not glob.has_magic(name):
        try:
            r = view.resolve(rel, follow=False)
        except (NotADirectoryError, FileNotFoundError):
            return []
        except OSError as e:
            raise ImageError(f"{where}: source {src!r}: {e.strerror}") from None
        found = [r.parts] if r.entry is not None else []
        r.close()
        return found
    import fnmatch
    from ..image import mergedview
    try:
        r = view.resolve(parent, follow=True)
    except (NotADirectoryError, FileNotFoundError):
        return []
    except OSError as e:
        raise ImageError(f"{where}: source {src!r}: {e.strerror}") from None
    try:
        if r.entry is None or not r.entry.is_dir:
            return []
        out = []
        for n in mergedview.listdir(r.entry.dirs):
            if fnmatch.fnmatchcase(n, name):
                e = mergedview.lookup(r.entry.dirs, n)
                if e is not None:
                    e.close()
                    out.append(r.parts + [n])
        return out
    finally:
        r.close()


def _walk(view, parts: list[str]):
    """(relative path, entry) of the source at canonical `parts` and everything below it."""
    e = view.entry(parts)
    if e is None:
        return
    try:
        yield "/".join(parts), e
        if e.is_dir:
            for sub, se in view.walk(parts, e):
                yield "/".join(sub), se
    finally:
        e.close()


def _followed(view, parts: list[str], source: str, where: str):
    """(canonical parts, (is a directory, stat) or None where nothing is there) of a matched source with a symbolic link at its end
    followed inside the view (BuildKit's rule for a bind mount's source): never a host lookup,
    which would follow the link out of the context or stage."""
    try:
        r = view.resolve("/".join(parts), follow=True, what=source)
    except OSError as e:
        raise ImageError(f"{where}: mount source {source!r}: {e.strerror}") from None
    try:
        return r.parts, (r.entry.is_dir, r.entry.st) if r.entry is not None else None
    finally:
        r.close()


def _sources(view, src: str, ignore=None, where: str = "", follow: bool = False):
    for m in _matches(view, src, where):
        if follow:  # what a bind mount shows: the link's target
            m, found = _followed(view, m, src, where)
            if found is None:
                continue
        for rel, e in _walk(view, m):
            if ignore and rel and _ignored(rel, ignore):
                continue
            yield rel, e


# A file whose ctime is this close to the clock is not memoized: a write in the same clock tick
# could leave size, mtime and ctime as they were (git's "racy" entries).
RACY_NS = 2_000_000_000


def hash_sources(roots: list[str], sources: list[str], ignore=None, where: str = "", owners: bool = True,
                 memo: dict | None = None, follow: bool = False) -> str:
    """A digest of what COPY sources name: paths, types, modes, owners (unless not `owners`),
    content; with `follow`, of what a bind mount of them shows (a link at the end followed).  `memo`: {"dev:ino": [size, mtime_ns, ctime_ns, sha256 hex]} for regular files,
    read and filled here (BuildKit's contenthash keys its digests by stat the same way), so an
    unchanged context is stat'ed, not read; a file whose ctime is recent is always read."""
    import hashlib
    import time
    from ..image.mergedview import View
    h = hashlib.sha256()
    ignore = [tuple(x) for x in ignore] if ignore else ignore
    racy = time.time_ns() - RACY_NS
    with View(roots) as view:
        for src in sources:
            if src.startswith(("http://", "https://")):
                continue
            for rel, e in _sources(view, src, ignore, where, follow):
                st = e.st
                ids = f"{st.st_uid}\0{st.st_gid}" if owners else "-"
                h.update(f"{rel}\0{st.st_mode}\0{ids}\0".encode())
                if stat.S_ISREG(st.st_mode):
                    h.update(_file_digest(e, st, memo, racy))
                elif stat.S_ISLNK(st.st_mode):
                    h.update(e.readlink().encode())
    return h.hexdigest()


def _file_digest(e, st, memo, racy: int) -> bytes:
    import hashlib
    key = f"{st.st_dev}:{st.st_ino}"
    known = memo.get(key) if memo is not None else None
    if known is not None and known[:3] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns]:
        memo[key] = memo.pop(key)  # the newest last: the ones a full memo drops first are the oldest
        return bytes.fromhex(known[3])
    fh = hashlib.sha256()
    with os.fdopen(e.open(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            fh.update(chunk)
    digest = fh.digest()
    if memo is not None and st.st_ctime_ns < racy:
        memo[key] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest.hex()]
    elif memo is not None:
        memo.pop(key, None)
    return digest


class _Placer:
    """Writes into the step's upper directory (`ufd`), resolving through `view` (the upper on
    top of the image's layers)."""

    def __init__(self, upper: str, lowers: list[str], chmod: int | None, owner, where: str,
                 keep_owners: bool = False):
        from ..image.mergedview import View
        self.view = View([upper, *lowers])
        self.ufd = self.view.fds[0]
        self.upper = upper
        self.chmod = chmod
        self.owner = tuple(owner) if owner else None
        # COPY --from without --chown: what is copied keeps its source's owners (BuildKit).
        self.keep_owners = keep_owners
        self.where = where
        self.dir_modes: list = []  # (canonical parts, mode, owner), applied deepest last-placed first
        # Directories this step made (not copied up from the image): only these take --chown's
        # or the source's owner; a directory the image already has keeps its own (BuildKit).
        self.created: set[tuple] = set()
        self._dirs: dict[tuple, int] = {}  # canonical parts -> O_PATH fd of that upper directory
        self.links: dict[tuple, tuple] = {}  # (st_dev, st_ino) of a source file -> (parts, name) placed
        # Extended attributes the kernel refused here: [path in the upper, name, value hex, why].
        self.unset: list[list[str]] = []

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs = {}
        self.view.close()

    def resolve(self, path: str) -> tuple[list[str], object]:
        """The canonical parts of a destination (symlinks followed inside the image) and the
        entry there, or None."""
        try:
            r = self.view.resolve(path, follow=True, what=path)
        except NotADirectoryError as e:
            raise ImageError(f"{self.where}: cannot copy into {e.filename}: it is not a directory in the image") from None
        except OSError as e:
            raise ImageError(f"{self.where}: destination {path!r}: {e.strerror}") from None
        return r.parts, r.take()

    def ensure_dir(self, parts: list[str]) -> int:
        """The directory at canonical `parts` as a real directory in the upper (created with the
        mode and owner of the directory it covers in the image, or 0755); its O_PATH fd, kept
        by the placer (not to be closed)."""
        key = tuple(parts)
        fd = self._dirs.get(key)
        if fd is None:
            fd = self._dirs[key] = self._ensure_dir(parts)
        return fd

    def _replace(self, parts: list[str], name: str) -> int:
        """Make room for `name` in the directory at `parts`: whatever is there is removed (a
        symlink itself, never its target).  The directory's fd."""
        dfd = self.ensure_dir(parts)
        if _remove_at(dfd, name):
            gone = tuple(parts) + (name,)
            for key in [k for k in self._dirs if k[:len(gone)] == gone]:
                os.close(self._dirs.pop(key))
        return dfd

    def _ensure_dir(self, parts: list[str]) -> int:
        from ..runtime.inroot import makedirs_in_root, open_in_root
        try:
            return open_in_root(self.ufd, "/".join(parts), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            raise ImageError(f"{self.where}: cannot copy into /{'/'.join(parts)}: it is not a directory") from None
        for i in range(1, len(parts) + 1):
            # What the image shows there now, before the upper covers it.
            e = self.view.entry(parts[:i])
            mode, owner = 0o755, None
            if e is not None:
                if e.is_dir:
                    mode, owner = stat.S_IMODE(e.st.st_mode), (e.st.st_uid, e.st.st_gid)
                e.close()

            if owner is None:  # new: --chown's owner (BuildKit's MkdirAll with the chown user), or root
                owner = self.owner
                self.created.add(tuple(parts[:i]))

            def copy_up(dfd, name, mode=mode, owner=owner):
                if owner is not None and owner != (os.geteuid(), os.getegid()):
                    os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
                chmod_at(dfd, name, mode)
            os.close(makedirs_in_root(self.ufd, "/".join(parts[:i]), 0o700, on_create=copy_up))
        return open_in_root(self.ufd, "/".join(parts), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)

    def target_dir(self, parts: list[str], name: str) -> list[str]:
        """Where a directory entry `name` of a source goes in the directory at canonical `parts`:
        an existing directory (or a symlink to one, inside the image) is merged into; anything
        else there is replaced by a new directory.  Either way a directory of the upper."""
        e = self.view.entry(parts + [name])
        found = None
        try:
            if e is not None and e.is_dir:
                found = parts + [name]
            elif e is not None and e.is_link:
                try:
                    cparts, te = self.resolve("/".join(parts + [name]))
                except ImageError:
                    te = None
                if te is not None:
                    te.close()
                    if te.is_dir:
                        found = cparts
        finally:
            if e is not None:
                e.close()
        if found is None:
            os.mkdir(name, 0o700, dir_fd=self._replace(parts, name))
            found = parts + [name]
            self.created.add(tuple(found))
        self.ensure_dir(found)
        return found

    def owner_of(self, st) -> tuple | None:
        """The owner a copied entry gets: --chown's, else the source's when owners are kept
        (COPY --from), else None (the placing process's, root)."""
        if self.owner is not None:
            return self.owner
        if self.keep_owners and st is not None:
            return (st.st_uid, st.st_gid)
        return None

    def _finish_file(self, fd: int, mode: int, times=None, owner=None, xattrs=(), path: str = "") -> None:
        os.fchmod(fd, mode)
        owner = owner or self.owner
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            os.fchown(fd, *owner)
        if times is not None:
            os.utime(fd, ns=times)
        for k, v in xattrs:  # after the chown, which drops security.capability
            try:
                os.setxattr(fd, k, v)
            except OSError as e:  # the caller retries where it can, and says what still fails
                self.unset.append([path, k, v.hex(), e.strerror])

    def create(self, parts: list[str], name: str) -> int:
        """A new, empty regular file `name` in the directory at canonical `parts`, replacing
        whatever was there (a symlink is replaced, never written through); an fd to write."""
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                       dir_fd=self._replace(parts, name))

    def write(self, parts: list[str], name: str, chunks, mode: int, times=None, owner=None, xattrs=()) -> None:
        fd = self.create(parts, name)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            self._finish_file(fd, mode, times, owner, xattrs, "/".join(parts + [name]))
        finally:
            os.close(fd)

    def symlink(self, parts: list[str], name: str, target: str, owner=None) -> None:
        dfd = self._replace(parts, name)
        os.symlink(target, name, dir_fd=dfd)
        owner = owner or self.owner
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)

    def place(self, e, parts: list[str], name: str) -> list[str] | None:
        """Copy source entry `e` to `name` in the directory at canonical `parts`; for a directory,
        the canonical parts its content goes to."""
        st = e.st
        owner = self.owner_of(st)
        if stat.S_ISLNK(st.st_mode):
            self.symlink(parts, name, e.readlink(), owner)
            return None
        if stat.S_ISDIR(st.st_mode):
            d = self.target_dir(parts, name)
            self.dir_done(d, stat.S_IMODE(st.st_mode), owner)
            return d
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:  # another name of a file this copy placed: linked to it (fsutil's copy)
                first = self.links.setdefault((st.st_dev, st.st_ino), (list(parts), name))
                if first != (parts, name):
                    os.link(first[1], name, src_dir_fd=self.ensure_dir(first[0]),
                            dst_dir_fd=self._replace(parts, name), follow_symlinks=False)
                    return None
            src = e.open()
            with os.fdopen(src, "rb") as f:
                self.write(parts, name, iter(lambda: f.read(1 << 20), b""),
                           self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode),
                           (st.st_atime_ns, st.st_mtime_ns), owner, _xattrs_of(f.fileno()))
            return None
        raise ImageError(f"{self.where}: cannot copy /{'/'.join(parts + [name])}: not a file, directory or symlink")

    def dir_done(self, parts: list[str], mode: int | None, owner=None) -> None:
        """A directory this step copies (or the destination directory): its mode (and owner,
        if the step made it) are applied once its content is in."""
        self.dir_modes.append((parts, self.chmod if self.chmod is not None else mode, owner or self.owner))

    def finish(self) -> None:
        from ..runtime.inroot import parent_in_root
        for parts, mode, owner in reversed(self.dir_modes):  # deepest first: a 0555 dir after its content
            if not parts:
                continue  # the upper's root is not part of the layer
            dfd, name = parent_in_root(self.ufd, "/".join(parts), create=False)
            try:
                # A source directory takes its metadata to the directory it goes to, whether the
                # step made it or merges into one the image has (fsutil's copy, which BuildKit
                # uses, overwrites a target's metadata below the destination): the owner is
                # --chown's, or the source's, or root; the destination itself is left alone.
                owner = owner or (os.geteuid(), os.getegid())
                if (tuple(parts) not in self.created or owner != (os.geteuid(), os.getegid())) and \
                        os.stat(name, dir_fd=dfd, follow_symlinks=False)[4:6] != owner:
                    os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
                if mode is not None:
                    chmod_at(dfd, name, mode)
            finally:
                os.close(dfd)


def _xattrs_of(fd: int) -> list:
    """A copied file's extended attributes (security.capability...), which BuildKit's copy keeps;
    overlayfs's own are never copied."""
    out = []
    try:
        for k in os.listxattr(fd):
            if not k.startswith(("user.overlay.", "trusted.overlay.")):
                out.append((k, os.getxattr(fd, k)))
    except OSError:
        pass
    return out


def _remove_at(dfd: int, name: str) -> bool:
    """Remove `name` in directory `dfd` (a tree too), following no symlink; True if it was a
    directory."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return False
    if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
        chmod_at(dfd, name, stat.S_IMODE(st.st_mode) | 0o700)
    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        for n in os.listdir(sub):
            _remove_at(sub, n)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dfd)
    return True


def _chown_tree(dfd: int, owner) -> None:
    """--chown over what ADD unpacked into the directory `dfd`, following no symlink."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        for name in os.listdir(fd):
            os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                sub = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    _chown_tree(sub, owner)
                finally:
                    os.close(sub)
    finally:
        os.close(fd)


def _is_archive(e) -> bool:
    import tarfile
    if not stat.S_ISREG(e.st.st_mode):
        return False
    try:
        with os.fdopen(e.open(), "rb") as f:
            return tarfile.is_tarfile(f)
    except (OSError, tarfile.TarError):
        return False


def copy_into(upper: str, lowers: list[str], plan: list, dest: str, *, context: str,
              roots: list[str] | None, ignore, add: bool, chmod: int | None, where: str,
              keep_owners: bool = False, owner=None, host_network: bool = False) -> list:
    """Docker's COPY/ADD rules: a directory source copies its contents; a destination ending in
    '/' (or several sources) is a directory; ADD extracts local tar archives (keeping their
    owners when `keep_owners`, i.e. in a subuid-mapped namespace) and fetches URLs.
    `plan`: [kind, source, heredoc text] with kind path | url | heredoc; `owner`: --chown's
    (uid, gid) for what is copied; `host_network`: the build was given the host's network (ADD
    may then fetch from this machine's loopback).  The extended attributes of copied files that
    could not be set here: [[path in the upper, name, value hex, why], ...] (see set_xattrs)."""
    from ..image.mergedview import View
    ignore = [tuple(x) for x in ignore] if ignore else ignore
    with View(roots if roots is not None else [context]) as src_view:
        p = _Placer(upper, lowers, chmod, owner, where, keep_owners=keep_owners and roots is not None)
        try:
            _copy(p, src_view, plan, dest, from_context=roots is None, ignore=ignore, add=add,
                  where=where, keep_owners=keep_owners, host_network=host_network)
            p.finish()
        finally:
            p.close()
    return p.unset


def set_xattrs(upper: str, items: list, root_uid: int) -> list:
    """Set extended attributes copy_into could not (`items`: its list), run in a user namespace
    whose root is host uid `root_uid`.  Without a subuid range copy_into runs outside any user
    namespace, where the kernel refuses security.capability to an unprivileged user; here, as
    root of the namespace, the kernel stores the capability namespaced to `root_uid` (a v3
    xattr), exactly what a RUN step's setcap stores, and the layer differ writes both alike.  A
    v3 value read outside, namespaced to `root_uid`, is this namespace root's own: it is given
    as the plain (v2) form, which the kernel namespaces again.  What still fails: [[path, name,
    why], ...]."""
    ufd = os.open(upper, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    failed = []
    try:
        from ..runtime.inroot import open_in_root
        for path, k, value, _ in items:
            v = bytes.fromhex(value)
            if k == "security.capability":
                v = _cap_of_root(v, root_uid)
            try:
                fd = open_in_root(ufd, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    os.setxattr(fd, k, v)
                finally:
                    os.close(fd)
            except OSError as e:
                failed.append([path, k, e.strerror])
    finally:
        os.close(ufd)
    return failed


_CAP_REVISION_MASK, _CAP_REVISION_2, _CAP_REVISION_3 = 0xFF000000, 0x02000000, 0x03000000


def _cap_of_root(v: bytes, root_uid: int) -> bytes:
    """A v3 security.capability namespaced to `root_uid` as the v2 form (its namespace root's)."""
    if len(v) != 24:
        return v
    magic, rootid = int.from_bytes(v[:4], "little"), int.from_bytes(v[20:], "little")
    if magic & _CAP_REVISION_MASK != _CAP_REVISION_3 or rootid != root_uid:
        return v
    return ((magic & ~_CAP_REVISION_MASK) | _CAP_REVISION_2).to_bytes(4, "little") + v[4:20]


def _copy(p: _Placer, src_view, plan, dest, *, from_context, ignore, add, where, keep_owners, host_network=False):
    found = {i: _matches(src_view, s, where) for i, (k, s, _) in enumerate(plan) if k == "path"}
    n_sources = sum(len(found[i]) if k == "path" else 1 for i, (k, _, _) in enumerate(plan))
    if n_sources == 0:
        raise ImageError(f"{where}: no source files were specified" if not plan else
                         f"{where}: {plan[0][1]!r}: no such file or directory in the build context")
    # The destination is resolved inside the image, a symlink at its end followed too (Docker
    # resolves it in the build root); names below it are placed without following links.
    dparts, dentry = p.resolve(dest)
    is_dir = dentry is not None and dentry.is_dir
    if dentry is not None:
        dentry.close()
    to_dir = dest.endswith("/") or n_sources > 1 or is_dir
    if to_dir:
        if dentry is not None and not is_dir:
            raise ImageError(f"{where}: cannot copy into /{'/'.join(dparts)}: it is not a directory in the image")
        p.ensure_dir(dparts)
    elif not dparts:
        raise ImageError(f"{where}: cannot copy onto /: give a directory destination")
    else:
        p.ensure_dir(dparts[:-1])

    def final(name):
        """(directory parts, name) a single-file source goes to."""
        return (dparts, name) if to_dir else (dparts[:-1], dparts[-1])

    for i, (kind, src, content) in enumerate(plan):
        if kind == "heredoc":
            p.write(*final(src), [content.encode()], p.chmod if p.chmod is not None else 0o644)
            continue
        if kind == "url":
            name = os.path.basename(src.split("?")[0]) or "index.html"
            _fetch(src, p, *final(name), where, host_network)
            continue
        if not found[i]:
            raise ImageError(f"{where}: {src!r}: no such file or directory", hint="paths are relative to the build context")
        for m in found[i]:
            _copy_source(p, src_view, m, dparts, final, ignore=ignore, archive=add and from_context,
                         where=where, keep_owners=keep_owners)


def _copy_source(p: _Placer, src_view, m: list[str], dparts: list[str], final, *, ignore, archive, where,
                 keep_owners):
    """One matched source (canonical parts `m` in the source view) into the destination."""
    mrel = "/".join(m)
    placed: dict[str, list[str]] = {}  # source directory -> the canonical directory it went to
    for rel, e in _walk(src_view, m):
        if rel == mrel:
            if archive and _is_archive(e):
                p.ensure_dir(dparts)
                with os.fdopen(e.open(), "rb") as f:
                    _extract(f, os.path.join(p.upper, *dparts), where, keep_owners)
                    f.seek(0)
                    root = _archive_root(f)
                if root is not None and dparts:  # the archive's "./" entry is the destination's own
                    from ..runtime.inroot import parent_in_root
                    dfd, name = parent_in_root(p.ufd, "/".join(dparts), create=False)
                    try:
                        owner = p.owner or (root[1:] if keep_owners else None)
                        if owner is not None and owner != (os.geteuid(), os.getegid()):
                            os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
                        chmod_at(dfd, name, root[0])
                    finally:
                        os.close(dfd)
                if p.owner is not None:
                    _chown_tree(p.ensure_dir(dparts), p.owner)
                return
            if e.is_dir:  # a directory source copies its contents
                p.ensure_dir(dparts)
                placed[rel] = dparts
            elif not (ignore and rel and _ignored(rel, ignore)):
                p.place(e, *final(m[-1]))
            continue
        if ignore and _ignored(rel, ignore):
            continue
        parent_rel, name = os.path.split(rel)
        parent = placed.get(parent_rel)
        if parent is None:  # its parent was ignored: the directories on the way, as they are
            parent = dparts
            for comp in parent_rel.split("/")[len(m):]:
                parent = p.target_dir(parent, comp)
            placed[parent_rel] = parent
        got = p.place(e, parent, name)
        if got is not None:
            placed[rel] = got


def _ignored(rel, ignore):
    from .builder import ignored
    return ignored(rel, ignore)


def _archive_root(f):
    """(mode, uid, gid) of the archive's root entry ("./" or "."), when it has one first."""
    import tarfile
    try:
        with tarfile.open(fileobj=f, mode="r:*") as tf:
            m = tf.next()
    except (OSError, tarfile.TarError, EOFError):
        return None
    if m is None or not m.isdir() or m.name.strip("/") not in (".", ""):
        return None
    return (m.mode & 0o7777, m.uid, m.gid)


def _extract(archive, target_dir: str, where: str, keep_owners: bool) -> None:
    """ADD of a local tar: unpacked with the same defences as image layers (.., absolute
    paths, link escapes and devices refused, no symlink followed below `target_dir`, which is a
    real directory of the upper with no symlink on its way); owners kept where ids are mapped."""
    from ..image.unpack import SINGLE_ID, MappedOwnership, UnpackOptions, unpack_layer
    owner = MappedOwnership() if keep_owners else SINGLE_ID
    unpack_layer(archive, target_dir, UnpackOptions(whiteouts="overlay", owner=owner, label=f"{where}: ADD"))


def _fetch(url: str, p: _Placer, parts: list[str], name: str, where: str, host_network: bool = False) -> None:
    """ADD <url>: GET it, following up to 10 redirects.  Unless the build was given the host's
    network, no hop may go to this machine's loopback: a Dockerfile must not read into an
    image what only the user's own processes can reach (the services RUN steps cannot reach
    either; BuildKit asks for its network.host entitlement).  Each hop's name is resolved
    once, checked, and the connection made to that address (no second lookup to rebind)."""
    import urllib3
    from urllib.parse import urljoin, urlsplit
    for _ in range(11):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ImageError(f"{where}: ADD {url}: not an http or https URL")
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise ImageError(f"{where}: ADD {url}: bad port") from None
        addr = _checked_address(u.hostname, port, url, where, host_network)
        kw = {"server_hostname": u.hostname, "assert_hostname": u.hostname} if u.scheme == "https" else {}
        pool_cls = urllib3.HTTPSConnectionPool if u.scheme == "https" else urllib3.HTTPConnectionPool
        pool = pool_cls(addr, port, timeout=60, retries=False, **kw)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        try:
            r = pool.urlopen("GET", target, headers={"Host": u.netloc.rpartition("@")[2]}, redirect=False,
                             preload_content=False)
        except urllib3.exceptions.HTTPError as e:
            raise ImageError(f"{where}: ADD {url}: {e}") from None
        location = r.headers.get("Location")
        if r.status in (301, 302, 303, 307, 308) and location:
            r.release_conn()
            url = urljoin(url, location)
            continue
        if r.status != 200:
            raise ImageError(f"{where}: ADD {url}: HTTP {r.status}")
        p.write(parts, name, r.stream(1 << 20), p.chmod if p.chmod is not None else 0o600)
        r.release_conn()
        return
    raise ImageError(f"{where}: ADD {url}: more than 10 redirects")


def _checked_address(host: str, port: int, url: str, where: str, host_network: bool) -> str:
    """The address to connect to for `host`: the first it resolves to, refused when any of its
    addresses is this machine's loopback (or the unspecified address, which reaches it too)
    and the build was not given the host's network."""
    import ipaddress
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ImageError(f"{where}: ADD {url}: cannot resolve {host}: {e.strerror or e}") from None
    addrs = [i[4][0] for i in infos]
    if not host_network:
        for a in addrs:
            ip = ipaddress.ip_address(a.split("%")[0])
            ip = getattr(ip, "ipv4_mapped", None) or ip
            if ip.is_loopback or ip.is_unspecified:
                raise ImageError(f"{where}: ADD {url}: refused: {host} is this machine's own loopback ({a}), which a "
                                 f"build reaches only with the host's network",
                                 hint="build with --network host if you trust this Dockerfile with the services on "
                                      "your loopback, or serve the file on another address")
    return addrs[0]


# --- RUN --mount sources ------------------------------------------------------------------------------
# Called through the build's worker, like copy_into: the files they make get their owners there.

def materialize(dest: str, roots: list[str], source: str, ignore, where: str, keep_owners: bool = False) -> list:
    """A copy of `source` (a directory's content, or one file) of `roots` (the context, a stage
    or an image) in the new directory `dest`: what a bind mount shows.  [the path to bind, the
    extended attributes not set (copy_into's list, paths in `dest`)]."""
    from ..image.mergedview import View
    ignore = [tuple(x) for x in ignore] if ignore else ignore
    with View(roots) as view:
        found = _matches(view, source, where)
        if not found:
            raise ImageError(f"{where}: mount source {source!r}: no such file or directory")
        # A symbolic link is followed inside the view (BuildKit's rule): the bind's host path
        # must never be a link, which mount(2) would follow on the host.
        parts, got = _followed(view, found[0], source, where)
        if got is None:
            raise ImageError(f"{where}: mount source {source!r}: no such file or directory")
        found, (is_dir, st) = [parts], got
        source = "/" + "/".join(found[0])
    name = found[0][-1] if found[0] else ""
    target = "/" if is_dir else "/" + name
    unset = copy_into(dest, [], [["path", source, None]], target, context=roots[0], roots=roots, ignore=ignore,
                      add=False, chmod=None, where=where, keep_owners=keep_owners)
    if is_dir:  # the mount's root is the source directory itself
        if keep_owners and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        return [dest, unset]
    return [os.path.join(dest, name), unset]


def make_cache_dir(path: str, mode: int, uid: int, gid: int, roots, source, ignore, where: str,
                   mapped: bool) -> list:
    """A cache mount's directory at `path`, made once: empty (or a copy of `source` of `roots`),
    mode `mode`, owned by uid:gid where ids are mapped (one id: the builder's, as every file).
    The extended attributes of the copy not set (copy_into's list, paths in `path`)."""
    if os.path.isdir(path):
        return []
    tmp = f"{path}.new-{os.getpid()}"
    os.mkdir(tmp, 0o700)
    unset = []
    try:
        if roots is not None:
            unset = materialize(tmp, roots, source or "/", ignore, where, keep_owners=mapped)[1]
        if mapped and (uid, gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isdir(path):
                raise
            unset = []  # another build made it
    finally:
        if os.path.lexists(tmp):
            _remove_tree(tmp)
    return unset


def write_secret(path: str, data: str, mode: int, uid: int, gid: int, mapped: bool) -> None:
    """A secret's file for one step (the caller removes it): mode `mode`, owned by uid:gid where
    ids are mapped.  `data` is latin-1 text (bytes through JSON)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data.encode("latin-1"))
        while view:
            view = view[os.write(fd, view):]
        if mapped and (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def remove_mount_stubs(upper: str, lowers: list[str], targets: list[str]) -> None:
    """Remove what the step's mounts left in the upper directory: each mount point that the image
    does not have (an empty directory or file the launcher made to mount on) and the empty
    directories made on its way, so no mount shows in the layer (as BuildKit's stub cleaner)."""
    from ..image.mergedview import View
    from ..runtime.inroot import parent_in_root
    ufd = os.open(upper, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for t in sorted(targets, key=lambda t: -t.count("/")):
            with View(lowers) as v:
                try:
                    r = v.resolve(t, follow=True)
                except OSError:
                    continue
                parts, missing = r.parts, r.missing
                r.close()
            for i in range(len(parts), len(parts) - missing, -1):
                try:
                    dfd, name = parent_in_root(ufd, "/".join(parts[:i]), create=False)
                except OSError:
                    break
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        os.rmdir(name, dir_fd=dfd)
                    elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                        os.unlink(name, dir_fd=dfd)
                    else:
                        break
                except OSError:  # not empty, or gone: what is left is the step's own
                    break
                finally:
                    os.close(dfd)
    finally:
        os.close(ufd)


def _remove_tree(path: str) -> None:
    parent, name = os.path.split(path)
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_at(dfd, name)
    finally:
        os.close(dfd)
