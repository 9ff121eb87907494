"""Liveness through flock: a holder keeps a lock on a file while something runs; the kernel
drops it when the holder dies, so a crash never leaves a stale "running" or "in use"."""
import fcntl
import os


def hold(path, shared=False, wait=False, mkdir=True):
    """Take the lock on `path` (created if missing) and return the fd that keeps it; without
    `wait`, BlockingIOError if someone else has it.  `mkdir=False`: its directory must exist
    (FileNotFoundError if not): a lock in a directory someone removes is not made again."""
    if mkdir:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def held(path, holders_shared=False):
    """Does anyone hold the lock on `path`?  Probe with the mode that conflicts with the
    holders' (shared probes for exclusive holders, so two probes never see each other)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if holders_shared else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
