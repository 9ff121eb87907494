"""Small filesystem helpers shared by the store, the archives and the credential files.

* :func:`atomic_write` - write a whole file so that readers see the old or the new content, never a mix,
  and a crash leaves at most a ``.tmp-*`` sibling behind.
* :class:`FileLock` - an ``fcntl.flock`` lock on a file, shared or exclusive, blocking or not. flock locks
  belong to the open file description, so they are released by the kernel when a process dies (kill -9
  included); that is what makes "the next command cleans up" safe.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

TMP_PREFIX = ".tmp-"


def fsync_dir(path: str) -> None:
    """fsync a directory so that a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems (old NFS, FUSE) refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def tmp_name(directory: str, hint: str = "") -> str:
    return os.path.join(directory, f"{TMP_PREFIX}{hint}{os.urandom(8).hex()}")


def write_output(path: str, write: Callable[[BinaryIO], None], hint: str = "") -> None:
    """Write a file the user named (``save -o``, ``export -o``) with ``write(f)``: through a temp file
    beside it and a rename when it is a regular file or new, so a failure leaves the old one; straight
    into it when it is a device, FIFO or socket (``-o /dev/stdout``), which must never be replaced; and
    never onto a directory.  A symlink is followed, not replaced."""
    from .errors import ArchiveError

    target = os.path.realpath(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ArchiveError(f"{path} is a directory", hint=f"give a file name, e.g. {os.path.join(path, 'out.tar')}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(target, "wb") as f:
            write(f)
        return
    tmp = tmp_name(os.path.dirname(target), hint)
    try:
        f = open(tmp, "wb")
    except OSError as e:  # name what the user gave, not our temporary file
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same directory, fsync, rename).

    The temp file is created with ``mode`` from the start (0600 for credentials), so there is no window
    in which a secret is world-readable.
    """
    directory = os.path.dirname(path) or "."
    tmp = tmp_name(directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)  # the umask may have removed bits we asked for
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


class FileLock:
    """An flock(2) lock on ``path`` (created if missing). Use as a context manager or acquire/release.

    ``shared=True`` takes a shared lock (many holders), otherwise exclusive. ``timeout`` None blocks,
    0 tries once, a number polls until then; :meth:`acquire` returns False when it gives up.
    """

    def __init__(self, path: str, *, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} already held")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if timeout is None:
                while True:
                    try:
                        fcntl.flock(fd, op)
                        break
                    except InterruptedError:
                        continue
            else:
                deadline = time.monotonic() + timeout
                delay = 0.01
                while True:
                    try:
                        fcntl.flock(fd, op | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            os.close(fd)
                            return False
                        time.sleep(delay)
                        delay = min(delay * 2, 0.2)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def locked(path: str, *, shared: bool = False) -> Iterator[FileLock]:
    lock = FileLock(path, shared=shared)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def in_user_namespace() -> bool:
    """True inside a user namespace other than the initial one (its uid_map is not the identity)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def rmtree_writable(path: str) -> None:
    """Remove a tree even where directories lack write/search permission for us (layers unpacked from
    images keep modes like 0555; in single-id mode we own every file, so chmod is allowed)."""
    import shutil
    import stat

    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return

    def make_writable(p: str) -> None:
        try:
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & stat.S_IRWXU != stat.S_IRWXU:
                os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        except OSError:
            pass

    make_writable(path)
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            make_writable(os.path.join(root, d))
    shutil.rmtree(path)
