"""Per-container state under the runtime's --root: ROOT/ID/state.json, ROOT/ID/start.fifo.

state.json is written once the container's process exists (atomically: tmp + rename) and
records the pid with its start time (field 22 of /proc/PID/stat), so a pid the kernel reused
is never taken for the container.  The status is the kernel's, read on each call:
    stopped   the process is gone (or a zombie, or another process has its pid)
    created   the process waits on start.fifo (start removes the FIFO)
    paused    its cgroup v2 leaf is frozen
    running   otherwise
Each verb that changes a container holds an exclusive flock on its directory."""
import fcntl
import os
import stat
import time

from . import jsonc
from .errors import NoSuchContainer, OCIError

ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
FIFO = "start.fifo"


def rootless():
    """runc's test: not root, or root of a user namespace (rootless podman runs its runtime as
    uid 0 in its own namespace, where /run is not its to write)."""
    if os.geteuid() != 0:
        return True
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def default_root():
    """runc's: /run/sbx-runc as root, else $XDG_RUNTIME_DIR/sbx-runc (/tmp/sbx-runc-UID without it)."""
    if not rootless():
        return "/run/sbx-runc"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return os.path.join(xdg, "sbx-runc")
    return _own_tmp_dir(f"/tmp/sbx-runc-{os.geteuid()}")


def _own_tmp_dir(path):
    """`path` in the shared /tmp, made 0700 if missing and refused unless it is our own directory
    that only we can write: one another user made there (or a link) would let them plant
    state.json, whose hooks a later verb of ours would run."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise OCIError(f"cannot create the state directory {path}: {e.strerror}",
                       hint="set XDG_RUNTIME_DIR, or give --root a directory of yours") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OCIError(f"the state directory {path} is not a directory of yours that only you can write",
                       hint="remove it, set XDG_RUNTIME_DIR, or give --root a directory of yours")
    return path


def check_id(cid):
    if not cid or not ID_CHARS.issuperset(cid) or cid in (".", ".."):
        raise OCIError(f"invalid container id {cid!r}", hint="ids are letters, digits and + - . _")
    return cid


def ensure_root(root):
    try:
        os.makedirs(root, 0o700, exist_ok=True)
    except OSError as e:
        raise OCIError(f"cannot create the state directory {root}: {e.strerror}",
                       hint="give --root a directory you can write") from None
    return root


def stat_fields(pid):
    """/proc/PID/stat split after the command name (which may hold spaces and parentheses):
    [state, ppid, ...]; field N of proc(5) is at index N - 3.  None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data.rpartition(b") ")[2].split()


def start_time(pid):
    """The start time of `pid` (clock ticks since boot, field 22), or None once it is gone."""
    f = stat_fields(pid)
    return None if f is None else int(f[22 - 3])


def alive(pid, start):
    """Is `pid` the process that started at `start`, and not a zombie?"""
    f = stat_fields(pid) if pid and pid > 0 and start is not None else None
    return f is not None and f[0] not in (b"Z", b"X") and int(f[22 - 3]) == start


class Container:
    """One container's directory and its state.json."""

    def __init__(self, root, cid):
        self.root, self.id = root, cid
        self.dir = os.path.join(root, cid)
        self.data = None
        self._lock = -1

    @classmethod
    def load(cls, root, cid):
        c = cls(root, check_id(cid))
        try:
            with open(os.path.join(c.dir, "state.json"), "rb") as f:
                c.data = jsonc.loads(f.read())
        except FileNotFoundError:
            raise NoSuchContainer(cid) from None
        except (OSError, ValueError) as e:
            raise OCIError(f"cannot read the state of container {cid}: {e}") from None
        return c

    @property
    def fifo(self):
        return os.path.join(self.dir, FIFO)

    @property
    def pid(self):
        return self.data["pid"]

    def lock(self):
        """An exclusive flock on the container's directory (released by close/unlock)."""
        if self._lock < 0:
            try:
                self._lock = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NoSuchContainer(self.id) from None
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self

    def unlock(self):
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def save(self):
        tmp = os.path.join(self.dir, f".state.json.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(jsonc.dumps(self.data))
        os.rename(tmp, os.path.join(self.dir, "state.json"))

    def remove_dir(self):
        """Remove the container's directory (state.json, the FIFO, temporary files)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass

    def alive(self):
        return alive(self.data["pid"], self.data["pid_start"])

    def cgroup(self):
        path = self.data.get("cgroup")
        if not path:
            return None
        from ..cgroups.v2 import Cgroup
        return Cgroup(path)

    def status(self):
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        cg = self.cgroup()
        if cg is not None:
            try:
                if cg.frozen:
                    return "paused"
            except OSError:
                pass
        return "running"

    def oci_state(self):
        """The runtime-spec state object (as `runc state` prints it, runc's extra keys too)."""
        st = self.status()
        d = self.data
        return {"ociVersion": d["ociVersion"], "id": self.id, "pid": d["pid"] if st != "stopped" else 0,
                "status": st, "bundle": d["bundle"], "rootfs": d["rootfs"], "created": d["created"],
                "owner": d.get("owner", ""),
                **({"annotations": d["annotations"]} if d.get("annotations") else {})}  # runc: omitempty


def now_rfc3339():
    t = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + f".{t % 10**9:09d}Z"


def ids(root):
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if ID_CHARS.issuperset(n) and os.path.exists(os.path.join(root, n, "state.json"))]
