"""The merged view of layer directories (top first), read and resolved with directory fds only.

What overlayfs would show for a stack of layer directories: the top layer that has a name wins,
a whiteout (char 0/0 device, or an AUFS ``.wh.NAME`` file) hides the name below, a non-directory
hides everything below it, directories merge down to an opaque one.  Every lookup is an
``fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`` in a directory opened ``O_PATH|O_NOFOLLOW``: no host
path lookup ever follows a symlink of a layer.  Symlinks of the view are resolved *in the view*
(``resolve``): an absolute target restarts at the view's root, ``..`` stops at it, at most 40
links; so ``/app -> /opt/app`` in a base image means the image's ``/opt/app``, never the host's.

Build placement (sandbox.build.placement) resolves COPY/ADD destinations here (the step's upper on
top of the image's layers) and reads sources here (the context, or another stage's layers).
"""
from __future__ import annotations

import errno
import os
import stat
from collections import deque

from sandbox.image import whiteout as wh

MAX_LINKS = 40  # the kernel's MAXSYMLINKS, as runtime/inroot.py's resolver (the image layer imports no runtime)

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Entry:
    """One name in the view: its stat in the providing layer and, for a directory, the O_PATH
    fds of that directory in every layer whose copy shows through (owned by the entry)."""
    __slots__ = ("name", "pfd", "st", "dirs", "own_pfd")

    def __init__(self, name: str, pfd: int, st: os.stat_result, dirs: list[int]):
        self.name, self.pfd, self.st, self.dirs = name, pfd, st, dirs
        self.own_pfd = False

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    def open(self, flags: int = os.O_RDONLY) -> int:
        """The entry itself, never through a symlink."""
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.pfd)

    def readlink(self) -> str:
        return os.readlink(self.name, dir_fd=self.pfd)

    def close(self) -> None:
        for fd in self.dirs:
            os.close(fd)
        self.dirs = []
        if self.own_pfd:
            os.close(self.pfd)
            self.own_pfd = False


def _opaque(dfd: int) -> bool:
    for name in wh.OPAQUE_XATTRS:
        try:
            if os.getxattr(f"/proc/self/fd/{dfd}", name) == b"y":
                return True
        except OSError:
            continue
    return _exists(dfd, wh.WH_OPAQUE)


def _exists(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def lookup(dirs: list[int], name: str) -> Entry | None:
    """`name` in the merged directory whose per-layer fds are `dirs` (top first), or None."""
    provider = None
    below: list[int] = []
    for dfd in dirs:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            if _exists(dfd, wh.WH_PREFIX + name):
                break
            continue
        if wh.is_whiteout_stat(st):
            break
        if provider is None:
            provider = (dfd, st)
        if not stat.S_ISDIR(st.st_mode):
            break  # a non-directory hides everything below it
        fd = os.open(name, _DIR, dir_fd=dfd)
        below.append(fd)
        if _opaque(fd):
            break
    if provider is None:
        return None
    if not stat.S_ISDIR(provider[1].st_mode):
        for fd in below:
            os.close(fd)
        below = []
    return Entry(name, provider[0], provider[1], below)


def listdir(dirs: list[int]) -> list[str]:
    names: set[str] = set()
    for dfd in dirs:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
        try:
            names.update(n for n in os.listdir(fd) if not n.startswith(wh.WH_PREFIX))
        finally:
            os.close(fd)
    return sorted(names)


class Resolved:
    """Where a path ends in the view: `parts`, its canonical path (every component a directory
    of the view, no symlinks), and the final `entry` (None when it does not exist; then
    `missing` counts the trailing parts, from the first one that does not exist)."""

    def __init__(self, parts: list[str], entry: Entry | None, missing: int, stack: list[Entry]):
        self.parts, self.entry, self.missing, self._stack = parts, entry, missing, stack

    def close(self) -> None:
        for e in self._stack:
            e.close()
        if self.entry is not None:
            self.entry.close()

    def take(self) -> Entry | None:
        """The final entry, kept usable (its directory fd its own); everything else closed."""
        e, self.entry = self.entry, None
        if e is not None and e.pfd >= 0 and not e.own_pfd:
            e.pfd, e.own_pfd = os.dup(e.pfd), True
        self.close()
        return e


class View:
    def __init__(self, roots: list[str]):
        self.roots = list(roots)
        self.fds: list[int] = []
        try:
            for r in roots:
                self.fds.append(os.open(r, _DIR))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _root(self) -> Entry:
        return Entry("", -1, os.fstat(self.fds[0]) if self.fds else os.stat("/"),
                     [os.dup(fd) for fd in self.fds])

    def resolve(self, path: str, follow: bool = True, what: str = "") -> Resolved:
        """Resolve `path` in the view, symlinks followed inside it (the final one when `follow`).
        Components that do not exist are kept (a destination is created later); a non-directory
        before the end is an error (NotADirectoryError naming the canonical path)."""
        rest = deque(p for p in path.split("/") if p and p != ".")
        stack = [self._root()]
        names: list[str] = []
        missing: list[str] = []  # names past the first one that does not exist
        links = 0
        try:
            while rest:
                name = rest.popleft()
                if missing:
                    if name == "..":
                        missing.pop()
                    else:
                        missing.append(name)
                    continue
                if name == "..":
                    if len(stack) > 1:
                        stack.pop().close()
                        names.pop()
                    continue
                e = lookup(stack[-1].dirs, name)
                last = not rest
                if e is None:
                    missing.append(name)
                    continue
                if e.is_link and (follow or not last):
                    target = e.readlink()
                    e.close()
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links", what or path)
                    if target.startswith("/"):
                        for s in stack[1:]:
                            s.close()
                        del stack[1:]
                        names.clear()
                    rest.extendleft(reversed([p for p in target.split("/") if p and p != "."]))
                    continue
                if last:
                    return Resolved(names + [name], e, 0, stack)
                if not e.is_dir:
                    e.close()
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", "/" + "/".join(names + [name]))
                stack.append(e)
                names.append(name)
            if missing:
                return Resolved(names + missing, None, len(missing), stack)
            top = stack.pop()
            return Resolved(names, top, 0, stack)
        except BaseException:
            for s in stack:
                s.close()
            raise

    def entry(self, parts: list[str]) -> Entry | None:
        """The entry at a canonical path (its final symlink not followed)."""
        return self.resolve("/".join(parts), follow=False).take()

    def walk(self, parts: list[str], entry: Entry):
        """(path parts, entry) of everything below the directory `entry`, parents first.  Each
        entry is valid (its fds open) until the iteration moves past its subtree."""
        for name in listdir(entry.dirs):
            e = lookup(entry.dirs, name)
            if e is None:
                continue
            try:
                yield parts + [name], e
                if e.is_dir:
                    yield from self.walk(parts + [name], e)
            finally:
                e.close()
