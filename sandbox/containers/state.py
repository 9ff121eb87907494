"""One record per container: the OCI state (id, status, pid and the pid's start time, bundle,
annotations) and Docker's metadata, in Docker's field names, kept in
<data>/containers/<id>/container.json.

Statuses are Docker's: created running paused restarting exited dead removing.  Every verb
checks the transition table first (`transition`); an invalid one raises StateError naming the
container and its status, as runc's "cannot start a container that has stopped".

Liveness is the kernel's, never the record's word: the process that supervises the container
(a foreground `sbx run`, the detached monitor, or a Python process holding a named sandbox)
holds an exclusive flock on <dir>/monitor.lock.  A record that says running, paused or
restarting while nobody holds that lock belongs to a supervisor that died (kill -9, a crash);
the launcher's parent-death signal took the container with it, so it reads as exited, with an
Error saying so, and can be removed.  Before any pid is signalled its start time (field 22 of
/proc/PID/stat) is compared with PidStart, through a pidfd, so a recycled pid is never hit.

This module is on `sbx run`'s path: no json, re, datetime (the record is written by `dumps`)."""
import os
import time

from ..errors import SandboxError
from ..runtime import flocks

STATUSES = ("created", "running", "paused", "restarting", "exited", "dead", "removing")
ACTIVE = ("running", "paused", "restarting")  # a supervisor must hold monitor.lock
ZERO_TIME = "0001-01-01T00:00:00Z"  # Docker's "never"
MONITOR_DIED = "its monitor ended unexpectedly"

RECORD = "container.json"
MONITOR_LOCK = "monitor.lock"
WAIT_LOCK = "wait.lock"  # held shared by `wait` until it has read the exit code (see lifecycle.wait)


class ContainerError(SandboxError):
    """An error about a container: Docker's CLI exits 1 for these (the daemon's errors);
    `run` and `create` exit 125."""
    exit_code = 1


class NoSuchContainer(ContainerError, LookupError):
    def __init__(self, ref):
        super().__init__(f"No such container: {ref}", hint="'sbx ps -a' lists containers")
        self.ref = ref


class NameConflict(ContainerError):
    pass


class StateError(ContainerError):
    """A verb that the container's status does not allow; names both."""

    def __init__(self, verb, name, status, hint=None, msg=None):
        super().__init__(msg or f"cannot {verb} container {name}: it is {status}", hint=hint)
        self.verb, self.name, self.status = verb, name, status


# verb -> (statuses it may start from, status it leads to (None: unchanged))
TRANSITIONS = {
    "start": (("created", "exited"), "running"),
    "restart": (("created", "running", "paused", "exited", "restarting"), "running"),  # a paused one: thawed by stop
    "stop": (("running", "paused", "restarting"), "exited"),
    "kill": (("running", "paused", "restarting"), None),
    "pause": (("running",), "paused"),
    "unpause": (("paused",), "running"),
    "exec": (("running",), None),
    "attach": (("running",), None),
    "top": (("running", "paused"), None),
    "remove": (("created", "exited", "dead"), "removing"),
    "rename": (("created", "running", "paused", "restarting", "exited", "dead"), None),
    "wait": (STATUSES, None),
    "commit": (("created", "exited", "running", "paused"), None),
    "export": (("created", "exited", "running", "paused"), None),
}

_HINTS = {
    ("start", "paused"): "unpause it instead ('sbx unpause {n}')",
    ("start", "restarting"): "it restarts by its restart policy; 'sbx stop {n}' ends that",
    ("start", "removing"): "it is being removed",
    ("remove", "running"): "stop it first ('sbx stop {n}'), or force it ('sbx rm -f {n}')",
    ("remove", "paused"): "unpause and stop it first, or force it ('sbx rm -f {n}')",
    ("remove", "restarting"): "stop it first ('sbx stop {n}'), or force it ('sbx rm -f {n}')",
    ("exec", "paused"): "unpause it first ('sbx unpause {n}')",
    ("attach", "paused"): "unpause it first ('sbx unpause {n}')",
}


# Docker's own words where scripts match them (daemon/exec.go, daemon/attach.go)
_MESSAGES = {
    ("exec", "paused"): "Container {id} is paused, unpause the container before exec",
    ("attach", "paused"): "You cannot attach to a paused container, unpause it first",
}


def transition(record, verb):
    """The status `verb` leads `record` to; StateError if its status does not allow it."""
    allowed, target = TRANSITIONS[verb]
    status = record.status
    if status not in allowed:
        hint = _HINTS.get((verb, status))
        if hint is None and status in ("created", "exited", "dead") and verb in ("kill", "exec", "attach", "top",
                                                                                  "stop"):
            hint = "start it first ('sbx start {n}')"
        msg = _MESSAGES.get((verb, status))
        raise StateError(verb, record.name, status, hint=hint.format(n=record.name) if hint else None,
                         msg=msg.format(id=record.id) if msg else None)
    return target or status


# --- time: RFC 3339 with nanoseconds, UTC (Docker's format) ---------------------------------------

def now():
    return rfc3339(time.time_ns())


def rfc3339(ns):
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def parse_time(text):
    """RFC 3339 (as written by `rfc3339`, or with an offset) -> seconds since the epoch (float);
    0.0 for Docker's zero time or nothing."""
    if not text or text.startswith("0001-"):
        return 0.0
    import calendar
    base = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    rest = text[19:]
    frac = 0.0
    if rest.startswith("."):
        digits = ""
        for c in rest[1:]:
            if not c.isdigit():
                break
            digits += c
        frac = int(digits) / 10 ** len(digits) if digits else 0.0
        rest = rest[1 + len(digits):]
    offset = 0
    if rest[:1] in ("+", "-") and len(rest) >= 6:
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    return base - offset + frac


def ago(sec):
    """Docker's human durations (go-units HumanDuration): "Less than a second", "1 second",
    "5 seconds", "About a minute", "3 minutes", "About an hour", "5 hours", "3 days", "2 weeks",
    "4 months", "2 years"."""
    s = max(0, int(sec))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    m = s // 60
    if m < 60:
        return "About a minute" if m == 1 else f"{m} minutes"
    h = int(sec / 3600 + 0.5)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{int(sec / 3600) // 24 // 365} years"


# --- names ---------------------------------------------------------------------------------------

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")


def valid_name(name):
    """Docker's rule, [a-zA-Z0-9][a-zA-Z0-9_.-]* (checked without importing re)."""
    return (0 < len(name) <= 128 and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name))


def check_name(name):
    if name.startswith("/"):
        name = name[1:]  # Docker accepts "/web"
    if not valid_name(name):
        raise ContainerError(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                             hint="use letters, digits, '_', '.' and '-', starting with a letter or digit")
    return name


# --- JSON without the json module (~8 ms to import on every `sbx run`) -----------------------------

_ESC = {i: f"\\u{i:04x}" for i in range(32)}
_ESC.update({ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"})


def _str(s):
    out = '"' + s.translate(_ESC) + '"'
    try:
        out.encode()
    except UnicodeEncodeError:  # lone surrogates (undecodable file names): escape them as json does
        out = "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else f"\\u{ord(c):04x}" for c in out)
    return out


def dumps(obj):
    """JSON text for dicts, lists, tuples, str, int, float, bool and None (what records hold)."""
    if isinstance(obj, str):
        return _str(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(int(obj))
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError(f"{obj} has no JSON form")
        return repr(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_str(str(k))}:{dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(map(dumps, obj)) + "]"
    raise TypeError(f"cannot store {type(obj).__name__} in a container record")


# --- processes -----------------------------------------------------------------------------------

def _stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (after the command name), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def pid_start(pid):
    """The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or None
    once it is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])  # field 22; fields[0] is field 3


def pid_alive(pid, start):
    """Is `pid` still the process that started at `start` (ticks), and not a zombie?"""
    fields = _stat_fields(pid) if pid else None
    return fields is not None and fields[0] not in (b"Z", b"X") and (start is None or int(fields[19]) == start)


def signal_checked(pid, start, sig):
    """Send `sig` to `pid` only if it is still the process that started at `start` (ticks):
    a pidfd pins the process, then its start time is compared.  False when it is gone."""
    if not pid:
        return False
    import signal as _signal
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError as e:
        if e.errno == 22:  # EINVAL: it has no thread-group leader any more (it is exiting, or gone)
            return False
        raise
    try:
        if start is not None and pid_start(pid) != start:
            return False
        try:
            _signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(fd)


# --- the record ----------------------------------------------------------------------------------

class Record:
    """A container as its record says, corrected by the kernel's word on liveness.  `doc` is
    the stored document (Docker's field names); `dir` its directory."""

    def __init__(self, dir, doc):
        self.dir = dir
        self.doc = doc
        self.version = None  # what the store last wrote: (inode, mtime, size) of the file
        self.monitor_fd = -1  # a private record's monitor.lock, held from its creation

    id = property(lambda self: self.doc["Id"])
    name = property(lambda self: self.doc["Name"])
    spec = property(lambda self: self.doc["Spec"])
    state = property(lambda self: self.doc["State"])
    config = property(lambda self: self.doc["Config"])
    host_config = property(lambda self: self.doc["HostConfig"])

    @property
    def upper(self):
        """The writable layer's upper directory (kept containers; a --rm foreground run keeps
        its layer private, in the sandbox's own tmpfs)."""
        return self.spec["sbx"].get("upper") or os.path.join(self.dir, "upper")

    @property
    def status(self):
        return self.state["Status"]

    @property
    def running(self):
        return self.status in ACTIVE

    @property
    def auto_remove(self):
        return bool(self.host_config.get("AutoRemove"))

    def status_text(self, now=None):
        """Docker's STATUS column: "Up 5 minutes", "Exited (0) 3 seconds ago", "Created"..."""
        now = now or time.time()
        st = self.state
        status = st["Status"]
        if status == "running":
            return f"Up {ago(now - parse_time(st['StartedAt']))}"
        if status == "paused":
            return f"Up {ago(now - parse_time(st['StartedAt']))} (Paused)"
        if status == "restarting":
            return f"Restarting ({st.get('ExitCode', 0)}) {ago(now - parse_time(st['FinishedAt']))} ago"
        if status == "exited":
            return f"Exited ({st.get('ExitCode', 0)}) {ago(now - parse_time(st['FinishedAt']))} ago"
        return status.capitalize()  # Created, Removing, Dead

    def supervised(self):
        """Does a live supervisor hold this container's monitor.lock?"""
        return flocks.held(os.path.join(self.dir, MONITOR_LOCK))

    def path(self, name):
        return os.path.join(self.dir, name)

    def __repr__(self):
        return f"<container {self.name} {self.id[:12]} {self.status}>"


def mark_supervisor_dead(doc):
    """The in-memory correction for a record whose supervisor is gone (see the module's note)."""
    st = doc["State"]
    st.update(Status="exited", Pid=0, PidStart=None, MonitorPid=0,
              Error=st.get("Error") or MONITOR_DIED,
              ExitCode=st.get("ExitCode") or 137)
    if not st.get("FinishedAt") or st["FinishedAt"] == ZERO_TIME:
        st["FinishedAt"] = st.get("StartedAt") or ZERO_TIME
    return doc


def new_state():
    return {"Status": "created", "Pid": 0, "PidStart": None, "MonitorPid": 0, "StartedAt": ZERO_TIME,
            "FinishedAt": ZERO_TIME, "ExitCode": 0, "Error": "", "RestartCount": 0, "StopRequested": False}


def new_doc(spec, *, name, image=None, command=None, auto_remove=False, restart=("no", 0), stop_signal=None,
            stop_timeout=None, labels=None, tty=None, open_stdin=False, annotations=None):
    """The record of a new container for the runtime spec `spec` (whose id it takes): Docker's
    Config and HostConfig as the options gave them."""
    x = spec["sbx"]
    proc = spec["process"]
    img = x.get("image") or {}
    ns = {n["type"] for n in spec["linux"]["namespaces"]}
    caps = set(proc["capabilities"]["bounding"])
    from ..runtime.spec import DEFAULT_CAPS
    defaults = set(DEFAULT_CAPS)
    binds, tmpfs = [], {}
    for m in spec["mounts"]:
        src, dst = m["source"], m["destination"]
        if m["type"] == "bind" and not src.startswith(("sbx-file:", "/dev/")) and dst not in ("/proc", "/sys"):
            binds.append(f"{src}:{dst}" + (":ro" if "ro" in m["options"] else ""))
        elif m["type"] == "tmpfs" and dst not in ("/dev", "/dev/shm"):
            tmpfs[dst] = ",".join(o for o in m["options"] if not o.startswith("sbx-"))
    args = list(proc["args"])
    doc = {
        "Id": x["id"],
        "Name": name,
        "Created": now(),
        "Image": image or spec["root"]["path"],
        "ImageID": img.get("id") or "",
        "Rootfs": spec["root"]["path"],
        "Path": args[0] if args else "",
        "Args": args[1:],
        "Config": {
            "Hostname": spec.get("hostname", ""),
            "User": f"{proc['user']['uid']}:{proc['user']['gid']}",
            "Env": list(proc["env"]),
            "Cmd": list(command) if command is not None else args,
            "Entrypoint": x.get("entrypoint"),
            "WorkingDir": proc["cwd"],
            "Tty": bool(proc.get("terminal") if tty is None else tty),
            "OpenStdin": bool(open_stdin),
            "Labels": {**(x.get("labels") or {}), **(labels or {})},
            "StopSignal": stop_signal or x.get("stop_signal") or "SIGTERM",
            "StopTimeout": stop_timeout if stop_timeout is not None else x.get("stop_timeout"),
            "Image": image or spec["root"]["path"],
        },
        "HostConfig": {
            "AutoRemove": bool(auto_remove),
            "RestartPolicy": {"Name": restart[0], "MaximumRetryCount": int(restart[1] or 0)},
            "Binds": binds or None,
            "Tmpfs": tmpfs or None,
            "NetworkMode": (x.get("network") or {}).get("text") or ("none" if "network" in ns else "host"),
            "Init": bool(x.get("init")),
            "CapAdd": sorted("CAP_" + c for c in caps - defaults) or None,
            "CapDrop": sorted("CAP_" + c for c in defaults - caps) or None,
            "SecurityOpt": [f"seccomp={x.get('seccomp') or 'unconfined'}"]
            + (["no-new-privileges"] if proc.get("noNewPrivileges") else []),
            "ReadonlyRootfs": bool(spec["root"].get("readonly")),
            "Ulimits": [{"Name": r["type"][7:].lower(), "Soft": r["soft"], "Hard": r["hard"]}
                        for r in proc.get("rlimits") or ()] or None,
            "GroupAdd": [str(g) for g in proc["user"].get("additionalGids") or ()] or None,
            "UsernsMode": x.get("userns") or "",
        },
        "Spec": spec,
        "State": new_state(),
    }
    if annotations:
        doc["Spec"].setdefault("annotations", {}).update(annotations)
    return doc
