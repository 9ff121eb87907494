"""Programs of sbx's own that run inside a sandbox, exec'd from sealed in-memory copies.

sbx-init runs as PID 1 inside the sandbox.  Exec'd from the installed file (which the user
owns), root inside could open /proc/1/exe for writing and change the binary every later
sandbox runs (CVE-2019-5736's class).  So the launcher execs a memfd copy sealed against
writes, growth and shrinking, as runc does since that CVE; /proc/1/exe then names a file that
nothing can change and that is gone with the last sandbox using it.
"""
import fcntl
import os

from ..errors import LaunchError

INIT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sbx-init")
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_MFD_EXEC = 0x10  # linux/memfd.h: executable even where vm.memfd_noexec asks for noexec by default

# One sealed copy per process, made on first use: it can never change, so sharing it between
# sandboxes (and between the requests of a long-running server) leaks nothing.
_fds = {}


def sealed_copy(path, name):
    """A read-only, sealed memfd holding the file at `path`; an fd (close-on-exec)."""
    fd = _fds.get(path)
    if fd is not None:
        return fd
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        mfd = os.memfd_create(name, flags | _MFD_EXEC)
    except OSError:
        mfd = os.memfd_create(name, flags)  # kernels before 6.3 know no MFD_EXEC
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            sent = 0
            while sent < size:
                n = os.sendfile(mfd, f.fileno(), sent, size - sent)
                if n == 0:
                    break
                sent += n
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as e:
        os.close(mfd)
        raise LaunchError(f"cannot copy {path} into a sealed memfd: {e.strerror}",
                          hint="reinstall sbx: the sbx-init binary next to the package is missing",
                          stage="start init", errno=e.errno) from None
    _fds[path] = mfd
    return mfd


def init_fd():
    return sealed_copy(INIT_PATH, "sbx-init")
