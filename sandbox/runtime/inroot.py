"""Resolve paths inside a directory tree as if it were the root: symlinks never leave it.

A container root, an image layer or a build's upper directory holds symlinks its author chose:
``/data -> /home/user`` or ``x -> ../../../../etc``.  A host path lookup (``open``, ``os.path``)
follows them out of the tree; these functions resolve every component *inside* the tree instead,
the way the kernel's ``openat2(RESOLVE_IN_ROOT)`` (Linux 5.6) does and runc's securejoin/libpathrs
do: an absolute symlink target restarts at the tree's root, ``..`` at the root stays there, and
magic links (``/proc/self/fd/N``) are never followed.

Where ``openat2`` is missing (ENOSYS, or a seccomp profile refusing it) the same rules are applied
component by component: each directory is opened ``O_PATH|O_NOFOLLOW`` relative to the one before,
a symlink's text is read and spliced into the rest of the path (at most 40 links, then ELOOP).

    open_in_root(rootfd, path, flags=os.O_PATH, mode=0o644) -> fd
    parent_in_root(rootfd, path, create=True) -> (O_PATH directory fd, final name)
    makedirs_in_root(rootfd, path, mode=0o755, on_create=None) -> O_PATH directory fd

A symlink in the final position is followed by ``open_in_root`` unless ``flags`` has ``O_NOFOLLOW``
(as ``open`` does); callers that must replace rather than write through a link use
``parent_in_root`` and then act on the name with ``dir_fd=`` and ``follow_symlinks=False``.
Each call costs one ``openat2`` (a ctypes call, ~2 us) or, in the fallback, a few syscalls per
component: fine for builds and ``sbx cp``, not meant for a per-file hot loop of millions.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections import deque

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

MAX_LINKS = 40          # the kernel's MAXSYMLINKS
_NR_OPENAT2 = 437       # the same number on every architecture with the unified syscall table
_EAGAIN_RETRIES = 8     # openat2 says EAGAIN when a rename raced with the lookup

#: None: not probed yet.  Tests set it to False to force the component-by-component fallback.
use_openat2: bool | None = None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """The raw system call (OSError on failure, EAGAIN retried a few times)."""
    tmpfile = getattr(os, "O_TMPFILE", 0o20200000)  # includes O_DIRECTORY's bit
    if not flags & os.O_CREAT and flags & tmpfile != tmpfile:
        mode = 0  # the kernel refuses a mode without O_CREAT
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    bpath = os.fsencode(path)
    call = _syscall()
    for _ in range(_EAGAIN_RETRIES):
        fd = call(ctypes.c_long(_NR_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(bpath),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        e = ctypes.get_errno()
        if e not in (errno.EAGAIN, errno.EINTR):
            raise OSError(e, os.strerror(e), path)
    raise OSError(errno.EAGAIN, "the path kept changing while it was resolved", path)


def _have_openat2() -> bool:
    global use_openat2
    if use_openat2 is None:
        try:
            os.close(openat2(-100, "/", os.O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT))
            use_openat2 = True
        except OSError:  # ENOSYS, or EPERM from a seccomp profile
            use_openat2 = False
    return use_openat2


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _fallback(rootfd: int, path: str, flags: int, mode: int) -> int:
    """openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), one component at a time."""
    rest = deque(_parts(path))
    follow_last = not flags & os.O_NOFOLLOW or path.endswith("/")
    stack = [os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=rootfd)]
    links = 0
    try:
        while rest:
            name = rest.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            last = not rest
            cur = stack[-1]
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except FileNotFoundError:
                if last and flags & os.O_CREAT:
                    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=cur)
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    for d in stack[1:]:
                        os.close(d)
                    del stack[1:]
                rest.extendleft(reversed(_parts(target)))
                continue
            if last:
                os.close(fd)
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
                if stat.S_ISLNK(st.st_mode) and not flags & os.O_PATH:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)  # as open(O_NOFOLLOW)
                return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=cur)
            if not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(fd)
        # The path named the root itself (or resolved back to a directory on the stack).
        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
    finally:
        for d in stack:
            os.close(d)


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH, mode: int = 0o644) -> int:
    """Open `path` (absolute or relative: both are taken inside the root) below `rootfd`."""
    if _have_openat2():
        return openat2(rootfd, path.lstrip("/") or ".", flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    return _fallback(rootfd, path, flags, mode)


def _split_last(path: str) -> tuple[str, str]:
    parts = _parts(path)
    if not parts or parts[-1] == "..":
        raise OSError(errno.EINVAL, "the path has no final name to act on", path)
    return "/".join(parts[:-1]), parts[-1]


def parent_in_root(rootfd: int, path: str, create: bool = True) -> tuple[int, str]:
    """(an O_PATH fd of the directory holding `path`'s final component, that name), the
    directory resolved inside the root (created, with 0755 directories, when `create`).
    The name itself is not looked up: act on it with dir_fd= and follow_symlinks=False."""
    parent, name = _split_last(path)
    if create:
        return makedirs_in_root(rootfd, parent), name
    return open_in_root(rootfd, parent, os.O_PATH | os.O_DIRECTORY), name


def makedirs_in_root(rootfd: int, path: str, mode: int = 0o755, on_create=None) -> int:
    """`mkdir -p` inside the root; an O_PATH|O_DIRECTORY fd of the directory.  Each directory
    made is reported as on_create(parent dirfd, name), e.g. to give it an owner and a mode.
    A dangling symlink on the way is followed inside the root (its target is made), as Docker's
    COPY does for a destination through a link."""
    parts = _parts(path)
    links = 0
    fd = open_in_root(rootfd, "", os.O_PATH | os.O_DIRECTORY)
    i = 0
    try:
        while i < len(parts):
            sub = "/".join(parts[: i + 1])
            try:
                nfd = open_in_root(rootfd, sub, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                # `fd` is the parent, resolved in the root by the step before.
                try:
                    os.mkdir(parts[i], mode, dir_fd=fd)
                except FileExistsError:  # a dangling symlink: make its target, inside the root
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
                    target = os.readlink(parts[i], dir_fd=fd)
                    head = [] if target.startswith("/") else parts[:i]
                    parts = head + _parts(target) + parts[i + 1:]
                    os.close(fd)
                    fd = open_in_root(rootfd, "", os.O_PATH | os.O_DIRECTORY)
                    i = 0
                    continue
                if on_create is not None:
                    on_create(fd, parts[i])
                nfd = os.open(parts[i], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
            i += 1
    except BaseException:
        os.close(fd)
        raise
    return fd
