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

class Events:
    """Container events as the engine's records show them: a watcher compares the store every
    quarter second while someone listens (every second otherwise) (so containers the CLI starts and ones that exit on their own are seen) and
    keeps the last 1000 events for `since`."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.log = []
        self.subs = []
        self.lock = threading.Lock()
        self.snap = None
        self.ready = threading.Event()
        threading.Thread(target=self._watch, name="sbx events", daemon=True).start()

    def _view(self):
        from ..containers.store import ContainerStore
        out = {}
        for r in ContainerStore().list():
            st = r.state
            out[r.id] = {"status": r.status, "started": st.get("StartedAt"), "finished": st.get("FinishedAt"),
                         "name": r.name, "image": r.doc.get("Image") or r.config.get("Image") or "",
                         "labels": r.config.get("Labels") or {}, "stop": bool(st.get("StopRequested")),
                         "code": st.get("ExitCode", 0)}
        return out

    def _watch(self):
        with config.use(self.ctx):
            while True:
                try:
                    now = self._view()
                except Exception:
                    now = self.snap or {}
                if self.snap is not None:
                    self._diff(self.snap, now)
                self.snap = now
                self.ready.set()
                time.sleep(0.25 if self.subs else 1.0)  # idle: a cheaper pace, events still kept

    def _diff(self, old, new):
        for cid, n in new.items():
            o = old.get(cid)
            if o is None:
                self._emit(cid, n, "create")
                if n["status"] in ("running", "restarting", "paused"):
                    self._emit(cid, n, "start")
                elif n["finished"] and n["finished"] != "0001-01-01T00:00:00Z":
                    self._emit(cid, n, "start")
                    self._emit(cid, n, "die", exitCode=str(n["code"]))
                continue
            if o["name"] != n["name"]:
                self._emit(cid, n, "rename", oldName="/" + o["name"])
            if n["started"] != o["started"] and n["status"] in ("running", "paused", "exited", "restarting"):
                if o["status"] in ("running", "paused") and o["finished"] == n["finished"]:
                    self._emit(cid, n, "die", exitCode=str(n["code"]))
                self._emit(cid, n, "start")
            if o["status"] != "paused" and n["status"] == "paused":
                self._emit(cid, n, "pause")
            if o["status"] == "paused" and n["status"] == "running":
                self._emit(cid, n, "unpause")
            if n["finished"] != o["finished"] and n["status"] not in ("running", "paused"):
                self._emit(cid, n, "die", exitCode=str(n["code"]))
                if n["stop"]:
                    self._emit(cid, n, "stop")
        for cid, o in old.items():
            if cid not in new:
                if o["status"] in ("running", "paused", "restarting"):
                    self._emit(cid, o, "die", exitCode=str(o["code"]))
                self._emit(cid, o, "destroy")

    def _emit(self, cid, v, action, **extra):
        t = time.time_ns()
        attrs = dict(v["labels"], name=v["name"], image=v["image"], **extra)
        ev = {"status": action, "id": cid, "from": v["image"], "Type": "container", "Action": action,
              "Actor": {"ID": cid, "Attributes": attrs}, "scope": "local", "time": t // 10 ** 9, "timeNano": t}
        with self.lock:
            self.log.append(ev)
            del self.log[:-1000]
            for q in self.subs:
                q.put(ev)

    def subscribe(self):
        q = queue.Queue()
        with self.lock:
            self.subs.append(q)
            history = list(self.log)
        return q, history

    def unsubscribe(self, q):
        with self.lock:
            self.subs.remove(q)


_events_lock = threading.Lock()


def start_events(server):
    with _events_lock:
        ev = server.state.get("events")
        if ev is None:
            ev = server.state["events"] = Events(server.ctx)
    return ev


def event_watcher(server):
    ev = start_events(server)
    ev.ready.wait(5)
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
    if "event" in f and ev["Action"] not in f["event"]:
        return False
    attrs = ev["Actor"]["Attributes"]
    if "container" in f and not any(c in (ev["id"], attrs.get("name")) or (len(c) >= 1 and ev["id"].startswith(c))
                                    for c in f["container"]):
        return False
    if "image" in f and attrs.get("image") not in f["image"]:
        return False
    for lab in f.get("label", []):
        k, eq, v = lab.partition("=")
        if k not in attrs or (eq and attrs[k] != v):
            return False
    return True


EVENT_FILTERS = ("type", "event", "container", "image", "label")


def events(req):
    f = req.filters()
    bad = set(f) - set(EVENT_FILTERS)
    if bad:
        raise ApiError(400, f"invalid filter '{sorted(bad)[0]}'")
    since = _event_time(req.arg("since"), "since")
    until = _event_time(req.arg("until"), "until")
    ev = event_watcher(req.h.server)
    q, history = ev.subscribe()
    try:
        w = req.stream()
        for e in history:
            if since is not None and e["timeNano"] / 1e9 >= since and (until is None or e["timeNano"] / 1e9 <= until) \
                    and _matches(e, f):
                w.json(e)
        while until is None or time.time() < until:
            try:
                e = q.get(timeout=0.5 if until is None else max(0.01, min(0.5, until - time.time())))
            except queue.Empty:
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
