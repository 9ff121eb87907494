"""/_ping, /version, /info, /auth, /events, /system/df: the service itself."""
import os
import platform
import queue
import threading
import time

from .. import __version__, config
from .http import API_VERSION, MIN_API_VERSION, ApiError

GIT_COMMIT = "sbx"


def _ping_headers():
    return (("Builder-Version", "1"), ("Cache-Control", "no-cache, no-store, must-revalidate"), ("Pragma", "no-cache"))


def ping(req):
    req.send(200, b"OK", content_type="text/plain; charset=utf-8", headers=_ping_headers())


def version(req):
    u = os.uname()
    comp = {"Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": GIT_COMMIT, "GoVersion": "python" + platform.python_version(), "Os": "linux",
            "Arch": _arch(), "KernelVersion": u.release, "BuildTime": ""}
    req.json_reply({"Platform": {"Name": f"sbx {__version__}"},
                    "Components": [{"Name": "Engine", "Version": __version__,
                                    "Details": {k: str(v) for k, v in comp.items() if k != "Version"}}],
                    **comp, "Experimental": False})


def _arch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def info(req):
    from ..cgroups import v2
    from ..containers.store import ContainerStore
    from ..runtime.image_root import image_store
    ctx = config.current()
    recs = ContainerStore().list()
    count = {s: 0 for s in ("running", "paused", "stopped")}
    for r in recs:
        count["running" if r.status in ("running", "restarting") else "paused" if r.status == "paused"
              else "stopped"] += 1
    try:
        n_images = len(image_store().images())
    except Exception:
        n_images = 0
    m = v2.probe()
    u = os.uname()
    warnings = []
    if not m.usable:
        warnings.append(f"WARNING: resource limits and pause are refused here: {m.reason}; {m.hint}")
    req.json_reply({
        "ID": "sbx", "Containers": len(recs), "ContainersRunning": count["running"],
        "ContainersPaused": count["paused"], "ContainersStopped": count["stopped"], "Images": n_images,
        "Driver": "overlay", "DriverStatus": [["Backing Filesystem", "overlay (rootless, userxattr)"]],
        "Plugins": {"Volume": ["local"], "Network": ["host", "none"], "Authorization": None, "Log": ["sbx"]},
        "MemoryLimit": m.usable and "memory" in m.controllers, "SwapLimit": False,
        "CpuCfsPeriod": m.usable and "cpu" in m.controllers, "CpuCfsQuota": m.usable and "cpu" in m.controllers,
        "CPUShares": m.usable and "cpu" in m.controllers, "CPUSet": m.usable and "cpuset" in m.controllers,
        "PidsLimit": m.usable and "pids" in m.controllers, "IPv4Forwarding": False, "Debug": False,
        "OomKillDisable": False, "NGoroutines": threading.active_count(), "SystemTime": _now_rfc3339(),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs" if m.usable else "none",
        "CgroupVersion": "2" if m.version == "v2" else "1", "NEventsListener": 0, "KernelVersion": u.release,
        "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux", "Architecture": u.machine,
        "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": {"IndexConfigs": {},
                                                                               "InsecureRegistryCIDRs": ["127.0.0.0/8"]},
        "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "DockerRootDir": ctx.data_root,
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": u.nodename, "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": __version__, "Runtimes": {"sbx": {"path": "sbx"}},
        "DefaultRuntime": "sbx", "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "sbx-init",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless", "name=userns"],
        "Warnings": warnings or None})


def _now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def auth(req):
    """POST /auth: the credentials are checked against the registry, as `docker login` does,
    and saved where sbx's pulls and pushes find them."""
    from ..registry import auth as _auth
    from ..registry.client import RegistryClient
    from ..registry.transport import RegistryOptions
    body = req.json()
    user, password = body.get("username") or "", body.get("password") or ""
    server = body.get("serveraddress") or "docker.io"
    if "://" in server:
        server = server.split("://", 1)[1]
    server = server.rstrip("/")
    if server.endswith("/v1") or server.endswith("/v2"):
        server = server[:-3]
    if server in ("index.docker.io", "registry-1.docker.io"):
        server = "docker.io"
    if not user:
        raise ApiError(400, "username is required")
    creds = _auth.Credentials(user, password, "the Docker API")
    with RegistryClient(server, RegistryOptions(credentials=creds)) as client:
        client.ping()
    _auth.save_login(server, creds)
    req.json_reply({"Status": "Login Succeeded", "IdentityToken": ""})


# --- events -----------------------------------------------------------------------------------------

IN_MODIFY, IN_MOVED_TO, IN_CREATE = 0x2, 0x80, 0x100


class _Wakeup:
    """inotify on the journal's directory (ctypes: the stdlib has no binding): `wait(t)` returns
    when something in it was written or made, or after `t` seconds.  Without inotify (its limits
    reached): a 0.1 s pace."""

    def __init__(self, directory):
        self.fd = -1
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(directory), IN_MODIFY | IN_MOVED_TO | IN_CREATE) < 0:
                os.close(fd)
                fd = -1
            self.fd = fd
        except (OSError, AttributeError):
            self.fd = -1

    def wait(self, timeout):
        import select
        if self.fd < 0:
            time.sleep(min(timeout, 0.1))
            return
        if select.select([self.fd], [], [], timeout)[0]:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass


def _doc(parsed):
    """A journal entry -> Docker's event message."""
    t, kind, action, ident, attrs = parsed
    ev = {"Type": kind, "Action": action, "Actor": {"ID": ident, "Attributes": attrs}, "scope": "local",
          "time": t // 10 ** 9, "timeNano": t}
    if kind == "container":
        ev = {"status": action, "id": ident, "from": attrs.get("image", ""), **ev}
    return ev


class Events:
    """The engine's events journal (sandbox/journal.py), followed: every process that
    acts on a container appends a line, inotify wakes this thread, which reads the new lines
    and hands them to the listeners.  `since` reads the journal from its start."""

    def __init__(self, ctx):
        from .. import journal
        from ..containers.store import ContainerStore
        self.journal = journal
        self.root = ContainerStore(ctx.data_root).root
        self.path = os.path.join(self.root, journal.NAME)
        self.subs = []
        self.lock = threading.Lock()
        self.pos = (None, 0)  # (inode, offset) of the journal read so far
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.wake = _Wakeup(self.root)
        self.f = self._open(at_end=True)
        self.ready = threading.Event()
        threading.Thread(target=self._follow, name="sbx events", daemon=True).start()

    def _open(self, at_end):
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return None
        if at_end:
            f.seek(0, 2)
        self.pos = (os.fstat(f.fileno()).st_ino, f.tell())
        return f

    def _follow(self):
        buf = b""
        self.ready.set()
        while True:
            if self.f is None:
                self.f = self._open(at_end=False)  # made after we started: every line is new
            if self.f is not None:
                data = self.f.read()
                if data:
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    with self.lock:
                        for line in lines:
                            p = self.journal.parse(line.decode("utf-8", "surrogateescape"))
                            if p is not None:
                                ev = _doc(p)
                                for q in self.subs:
                                    q.put(ev)
                        self.pos = (self.pos[0], self.f.tell() - len(buf))
                    continue
                try:
                    rotated = os.stat(self.path).st_ino != self.pos[0]
                except FileNotFoundError:
                    rotated = False
                if rotated:  # renamed to events.log.1 (read to its end above): the new one
                    self.f.close()
                    self.f, buf = None, b""
                    continue
            self.wake.wait(5.0)

    def subscribe(self):
        """A queue of the events from now on, and where the journal had been read to."""
        q = queue.Queue()
        with self.lock:
            self.subs.append(q)
            return q, self.pos

    def unsubscribe(self, q):
        with self.lock:
            self.subs.remove(q)

    def history(self, pos):
        """The journal's events before `pos` (the older generation first)."""
        ino, end = pos
        for path in (self.path + ".1", self.path):
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            with f:
                same = os.fstat(f.fileno()).st_ino == ino
                data = f.read(end) if same else f.read() if path.endswith(".1") else b""
            for line in data.split(b"\n"):
                p = self.journal.parse(line.decode("utf-8", "surrogateescape"))
                if p is not None:
                    yield _doc(p)


_events_lock = threading.Lock()


def start_events(server):
    with _events_lock:
        ev = server.state.get("events")
        if ev is None:
            ev = server.state["events"] = Events(server.ctx)
    return ev


def _event_time(text, what):
    if text in (None, ""):
        return None
    from ..containers.logs import parse_time_arg
    try:
        return parse_time_arg(text, flag=what)
    except Exception:
        raise ApiError(400, f"invalid {what} value {text!r}: give unix seconds or RFC 3339") from None


def _matches(ev, f):
    if "type" in f and ev["Type"] not in f["type"]:
        return False
    if "event" in f and not _action_matches(ev["Action"], f["event"]):
        return False
    ident = ev["Actor"]["ID"]
    attrs = ev["Actor"]["Attributes"]
    for kind in ("container", "network", "volume"):
        if kind in f and not (ev["Type"] == kind and any(
                c == attrs.get("name") or (c and ident.startswith(c)) for c in f[kind])):
            return False
    if "image" in f:
        name = attrs.get("name" if ev["Type"] == "image" else "image") or ""
        if not {ident, name, _strip_tag(ident), _strip_tag(name)} & set(f["image"]):
            return False
    for lab in f.get("label", []):
        k, eq, v = lab.partition("=")
        if k not in attrs or (eq and attrs[k] != v):
            return False
    return True


def _action_matches(action, wanted):
    """Docker's event filter: exact, but `exec_create`, `exec_start` and `health_status` also
    match the actions that carry the command ("exec_start: sh -c ...")."""
    return action in wanted or any(w in ("exec_create", "exec_start", "health_status") and
                                   action.startswith(w + ":") for w in wanted)


def _strip_tag(name):
    """`busybox:latest` -> `busybox` (a port in the registry's name stays)."""
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail and "@" not in name else name


EVENT_FILTERS = ("type", "event", "container", "image", "label", "network", "volume")


def _hung_up(sock):
    """Has the client closed its side (a listener that went away while nothing happened)?"""
    import socket
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def events(req):
    f = req.filters()
    bad = set(f) - set(EVENT_FILTERS)
    if bad:
        raise ApiError(400, f"invalid filter '{sorted(bad)[0]}'")
    since = _event_time(req.arg("since"), "since")
    until = _event_time(req.arg("until"), "until")
    ev = start_events(req.h.server)
    q, pos = ev.subscribe()
    try:
        w = req.stream()
        if since is not None:
            for e in ev.history(pos):
                if e["timeNano"] / 1e9 >= since and (until is None or e["timeNano"] / 1e9 <= until) \
                        and _matches(e, f):
                    w.json(e)
        while until is None or time.time() < until:
            try:
                e = q.get(timeout=5.0 if until is None else max(0.01, min(5.0, until - time.time())))
            except queue.Empty:
                if _hung_up(req.h.connection):
                    break
                continue
            if (until is None or e["timeNano"] / 1e9 <= until) and _matches(e, f):
                w.json(e)
        w.close()
    finally:
        ev.unsubscribe(q)


def df(req):
    from ..containers.store import ContainerStore
    from ..runtime.image_root import image_store
    from . import images as _images
    from . import volumes as _volumes
    imgs = [_images.summary(i) for i in image_store().images()]
    cons = [_containers_summary(r) for r in ContainerStore().list()]
    req.json_reply({"LayersSize": sum(i["Size"] for i in imgs), "Images": imgs, "Containers": cons,
                    "Volumes": _volumes.all_docs(), "BuildCache": []})


def _containers_summary(rec):
    from .containers import summary
    return summary(rec)


ROUTES = [
    ("GET", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("POST", "/auth", auth),
    ("GET", "/events", events),
    ("GET", "/system/df", df),
]
