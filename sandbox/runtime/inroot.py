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
The resolution itself is the launcher's C code (csrc/sb_inroot.c, through sandbox._native), so
the launcher's mount targets and a build's file placement follow one set of rules.
"""
from __future__ import annotations

import errno
import os

from .. import _native

MAX_LINKS = 40          # the kernel's MAXSYMLINKS

#: None or True: openat2 where the kernel has it.  Tests set it to False to force the
#: component-by-component walk.
use_openat2: bool | None = None


def _have_openat2() -> bool:
    """Whether this kernel has openat2 (Linux 5.6)."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 6)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH, mode: int = 0o644) -> int:
    """Open `path` (absolute or relative: both are taken inside the root) below `rootfd`.
    The resolver is the launcher's own (csrc/sb_inroot.c: openat2, or the walk)."""
    if use_openat2 is False:
        _native.inroot_force_walk(True)
        try:
            return _native.open_in_root(rootfd, path, flags, mode)
        finally:
            _native.inroot_force_walk(False)
    return _native.open_in_root(rootfd, path, flags, mode)


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
