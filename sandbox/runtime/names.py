"""Container names: unique among running sandboxes of this user.

A name is a file under the runtime directory, held with flock(LOCK_EX) by the process that
runs the sandbox for as long as it runs; the kernel drops the lock when that process dies, so
a crash (kill -9) never leaves a name taken.  (Containers that outlive their process, with a
persistent name registry, come with the container lifecycle.)"""
import fcntl
import os
import re

from ..errors import UsageError
from . import paths

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")


class Claim:
    def __init__(self, path, fd):
        self.path, self.fd = path, fd

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


def running(name):
    """(pid, spec) of the running sandbox called `name`, or None."""
    import json
    from . import flocks
    path = os.path.join(paths.runtime_dir(), "names", name)
    if not NAME_RE.match(name) or not flocks.held(path):
        return None
    try:
        with open(path + ".json") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc["pid"], doc["spec"]


def claim(name, container_id):
    if not NAME_RE.match(name) or len(name) > 128:
        raise UsageError(f"invalid container name {name!r}",
                         hint="use letters, digits, '_', '.' and '-', starting with a letter or digit")
    d = os.path.join(paths.runtime_dir(), "names")
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
            return Claim(path, fd)
        os.close(fd)
