"""Container names: unique among this user's sandboxes, running or kept.

A `--rm` sandbox's name is a file under <data>/names, held with flock(LOCK_EX) by the process
that runs the sandbox for as long as it runs; the kernel drops the lock when that process dies,
so a crash (kill -9) never leaves a name taken.  A kept container's name is its record under
<data>/containers (containers.py), which checks these locks before it takes a name, as a claim
checks the records.  Both live in the data directory, not the runtime directory: a cleaned-up
XDG_RUNTIME_DIR (logout, tmpfiles, rm -rf) must never let a second sandbox take the name of a
running one."""
import fcntl
import os
import re

from ..errors import UsageError
from . import paths

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")

_mine = {}  # name -> Claim held by this process


def _dir():
    return os.path.join(paths.data_dir(), "names")


class Claim:
    def __init__(self, name, path, fd):
        self.name, self.path, self.fd = name, path, fd

    def started(self, spec, pid):
        """Record what `sbx exec NAME` needs: the sandbox's PID 1 and its spec."""
        import json
        tmp = f"{self.path}.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": pid, "spec": spec}, f)
        os.replace(tmp, self.path + ".json")

    def release(self):
        if self.fd >= 0:
            for p in (self.path + ".json", self.path):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            os.close(self.fd)
            self.fd = -1
            if _mine.get(self.name) is self:
                del _mine[self.name]


def in_use(name):
    """Is `name` held by a running `--rm` sandbox of another process?"""
    from . import flocks
    if not NAME_RE.match(name) or name in _mine:
        return False
    return flocks.held(os.path.join(_dir(), name))


def running_names():
    """The names running `--rm` sandboxes hold."""
    from . import flocks
    d = os.path.join(paths.data_root(), "names")
    try:
        entries = os.listdir(d)
    except OSError:
        return []
    return sorted(n for n in entries if NAME_RE.match(n) and not n.endswith((".json", ".tmp"))
                  and flocks.held(os.path.join(d, n)))


def handed_over(name):
    """A kept container's record now holds `name`: drop this process's claim on it, so that no
    lock file is left behind if this process is killed."""
    c = _mine.get(name)
    if c is not None:
        c.release()


def running(name):
    """(pid, spec) of the running sandbox called `name`, or None."""
    import json
    if not in_use(name):
        return None
    try:
        with open(os.path.join(_dir(), name + ".json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc["pid"], doc["spec"]


def _taken_by_container(name):
    """Does a kept container (running or not) have this name?  Checked under the containers'
    lock, which their creation holds too, so a claim and a creation never both win."""
    from . import containers
    store = containers.Store()
    if not os.path.isdir(store.root):
        return False
    fd = store.lock()
    try:
        return any(c.name == name for c in store.list())
    finally:
        os.close(fd)


def claim(name, container_id):
    if not NAME_RE.match(name) or len(name) > 128:
        raise UsageError(f"invalid container name {name!r}",
                         hint="use letters, digits, '_', '.' and '-', starting with a letter or digit")
    d = _dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, name)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f'the container name "{name}" is already in use by a running sandbox',
                             hint="choose another name, or stop that sandbox first") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not unlinked by a previous holder between our open and our lock
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {container_id}\n".encode())
            c = Claim(name, path, fd)
            try:
                taken = _taken_by_container(name)
            except BaseException:
                c.release()
                raise
            if taken:
                c.release()
                raise UsageError(f'the container name "{name}" is already in use by a container',
                                 hint=f"remove that container ('sbx rm {name}') or choose another name")
            _mine[name] = c
            return c
        os.close(fd)
