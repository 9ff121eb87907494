"""/containers/... and /exec/...: Docker's container endpoints on the engine's verbs
(`sandbox.containers.lifecycle`, `files`, `logs`, `attach`, `filters`, `pruning`, `top`)."""
import base64
import errno
import json
import os
import selectors
import socket
import struct
import threading
import time

from .. import config
from ..containers import lifecycle, state as _state
from ..errors import SandboxError
from ..runtime import options as _options
from .http import ApiError, not_implemented

_ID = r"([^/]+)"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def _store():
    return lifecycle.store(config.current().data_root)


def _stream_type(req, tty):
    return RAW if tty or req.version < (1, 42) else MULTIPLEXED


def frame(kind, data):
    return struct.pack(">BxxxI", kind, len(data)) + data


# --- documents --------------------------------------------------------------------------------------

def inspect_doc(rec):
    """`GET /containers/{id}/json`: the engine's inspect document, with the fields Docker
    clients read that the engine leaves out."""
    from ..containers.inspect import container_doc
    doc = container_doc(rec)
    host = doc["HostConfig"]
    host.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
    host.setdefault("PortBindings", {})
    host.setdefault("Privileged", False)
    host.setdefault("PublishAllPorts", False)
    cfg = doc["Config"]
    cfg.setdefault("ExposedPorts", None)
    cfg.setdefault("Image", rec.doc.get("Image") or "")
    cfg.setdefault("Volumes", None)
    doc["Name"] = "/" + rec.name
    doc["ExecIDs"] = None
    _endpoints(rec, doc["NetworkSettings"])
    return doc


def _endpoints(rec, settings):
    """User-defined networks' endpoints as Docker shows them, created or running: NetworkID and
    Aliases (the ones asked for, then the short id, which the network's DNS also answers), for
    the network it was created on and those it joins at start (`connected`).  docker-compose
    reads the short id there to know a container is already connected."""
    net = (rec.spec or {}).get("sbx", {}).get("network") or {}
    if net.get("mode") != "network":
        return
    live = settings.setdefault("Networks", {})
    joined = [(net.get("network") or net.get("text"), net)] + [(k["network"], k) for k in net.get("connected") or ()]
    for name, kept in joined:
        ep = live.setdefault(name, {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": ""})
        aliases = list(ep.get("Aliases") or kept.get("aliases") or ())
        if rec.id[:12] not in aliases:
            aliases.append(rec.id[:12])
        ep["Aliases"] = aliases
        ep.setdefault("Links", None)
        ep.setdefault("EndpointID", "")
        if not ep.get("NetworkID"):
            from ..network import netstore
            try:
                ep["NetworkID"] = netstore.get(name)["Id"]
            except SandboxError:
                ep["NetworkID"] = ""
        if kept.get("ip"):
            ep.setdefault("IPAMConfig", {"IPv4Address": kept["ip"]})


def summary(rec):
    """One entry of `GET /containers/json`."""
    from ..containers.inspect import container_doc
    from ..containers.state import parse_time
    d = rec.doc
    cmd = " ".join([d.get("Path") or ""] + list(d.get("Args") or [])).strip()
    full = container_doc(rec)
    net = full["HostConfig"].get("NetworkMode") or "none"
    ports = []
    for key, binds in sorted((full["NetworkSettings"].get("Ports") or {}).items()):
        port, _, proto = key.partition("/")
        for b in binds or [None]:
            ports.append({"PrivatePort": int(port), "Type": proto or "tcp"} if b is None else
                         {"IP": b.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                          "PublicPort": int(b.get("HostPort") or 0), "Type": proto or "tcp"})
    return {"Id": rec.id, "Names": ["/" + rec.name], "Image": d.get("Image") or rec.config.get("Image") or "",
            "ImageID": d.get("ImageID") or "", "Command": cmd, "Created": int(parse_time(d.get("Created")) or 0),
            "Ports": ports, "Labels": rec.config.get("Labels") or {}, "State": rec.status,
            "Status": rec.status_text(), "HostConfig": {"NetworkMode": net},
            "NetworkSettings": {"Networks": full["NetworkSettings"].get("Networks") or {}},
            "Mounts": full["Mounts"]}


# --- create, list, inspect, the simple verbs ----------------------------------------------------------

def create(req):
    from ..image.errors import ImageNotFound
    from ..runtime import image_root
    from . import mapper
    name = req.arg("name")
    if name is not None and name.startswith("/"):
        name = name[1:]
    opts, warnings = mapper.to_options(req.json(), name=name, platform=req.arg("platform"))
    try:
        root = image_root.prepare(opts.image, pull="never", platform=opts.platform, userns=opts.userns)
    except ImageNotFound:
        raise ApiError(404, f"No such image: {opts.image}") from None
    rec = lifecycle.create(_store(), opts, image=root)
    req.json_reply({"Id": rec.id, "Warnings": warnings}, status=201)


def list_(req):
    from ..containers import filters as _filters
    f = req.filters()
    items = [f"{k}={v}" for k, vs in f.items() for v in vs]
    for k in ("before", "since"):
        if req.arg(k):
            items.append(f"{k}={req.arg(k)}")
    st = _store()
    recs = _filters.select(st.list(), _filters.check(items), all_=req.flag("all"),
                           limit=req.int_arg("limit", -1) or -1, store=st)
    out = [summary(r) for r in recs]
    if req.flag("size"):
        from ..containers import files
        for s, size in zip(out, files.sizes([files.Place.of(r, False) for r in recs])):
            s["SizeRw"] = size
    req.json_reply(out)


def inspect(req):
    rec = _store().get(req.params[0])
    doc = inspect_doc(rec)
    if req.flag("size"):
        from ..containers import files
        doc["SizeRw"] = files.sizes([files.Place.of(rec, False)])[0]
    req.json_reply(doc)


def start(req):
    st = _store()
    rec = st.get(req.params[0])
    if rec.status in _state.ACTIVE:
        return req.empty(304)
    lifecycle.start(st, rec.id, runtime_root=config.current().runtime_root)
    req.empty(204)


def _timeout(req):
    t = req.arg("t") or req.arg("timeout")
    if t in (None, ""):
        return None
    try:
        return int(t)
    except ValueError:
        raise ApiError(400, f"invalid value for t: {t!r}") from None


def stop(req):
    st = _store()
    rec = st.get(req.params[0])
    if rec.status not in _state.ACTIVE:
        return req.empty(304)
    sig = req.arg("signal")
    if sig:
        _options.signal_number(sig)
        st.update(rec, lambda doc: doc["Config"].update(StopSignal=_options.stop_signal(sig)))
    lifecycle.stop(st, rec.id, timeout=_timeout(req))
    req.empty(204)


def restart(req):
    lifecycle.restart(_store(), req.params[0], timeout=_timeout(req), runtime_root=config.current().runtime_root)
    req.empty(204)


def kill(req):
    st = _store()
    rec = st.get(req.params[0])
    if rec.status not in _state.ACTIVE:
        raise ApiError(409, f"Cannot kill container: {req.params[0]}: Container {rec.id} is not running")
    lifecycle.kill(st, rec.id, req.arg("signal") or "KILL")
    req.empty(204)


def wait(req):
    """The headers go out at once and the body when the condition is met, as dockerd does
    (API >= 1.30): the docker CLI's `run` waits for them before it starts the container."""
    cond = req.arg("condition") or "not-running"
    if cond not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition: {cond!r}")
    st = _store()
    rec = st.get(req.params[0])
    w = req.stream()
    try:
        doc = {"StatusCode": _wait(st, rec, cond), "Error": None}
    except SandboxError as e:
        doc = {"StatusCode": -1, "Error": {"Message": str(e)}}
    w.write(json.dumps(doc).encode() + b"\n")
    w.close()


def _wait(st, rec, cond):
    """lifecycle.wait's conditions, with the exit code of an AutoRemove container that goes at
    once (`docker run --rm` waits with condition=removed): the main process's end is awaited on
    a pidfd (no polling while it runs), then the record is read every 2 ms until it says how
    the process ended; wait.lock, held shared until then, keeps the monitor from removing it
    first (as lifecycle.wait does)."""
    import fcntl
    try:  # held shared until the exit code is read: the monitor removes an AutoRemove record only then
        lock = os.open(rec.path(_state.WAIT_LOCK), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_SH)
    except FileNotFoundError:
        lock = -1
    try:
        return _wait_locked(st, rec, cond, lock)
    finally:
        if lock >= 0:
            os.close(lock)


def _wait_locked(st, rec, cond, lock):
    import select
    code = rec.state.get("ExitCode", 0)
    began = (rec.state.get("StartedAt"), rec.state.get("FinishedAt"))
    fast_until = time.monotonic() + 5  # a created container: its start comes soon (the docker CLI starts it next)
    while True:
        now = st.load(rec.id)
        if now is None:
            return code
        status = now.status
        if status in ("exited", "removing", "dead") or (status == "created" and now.state.get("Error")):
            code = now.state.get("ExitCode", 0)
            if lock >= 0 and cond != "next-exit":
                import fcntl
                fcntl.flock(lock, fcntl.LOCK_UN)  # read: the record may go now (one more read is harmless)
        if cond == "not-running" and status not in _state.ACTIVE:
            return code
        if cond == "next-exit" and status not in _state.ACTIVE + ("created",) and (
                now.state.get("StartedAt"), now.state.get("FinishedAt")) != began:
            return code
        pid, start = now.state.get("Pid"), now.state.get("PidStart")
        if status == "running" and pid and _state.pid_alive(pid, start):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    if _state.pid_alive(pid, start):  # still the container's process
                        select.select([fd], [], [], 1.0)
                finally:
                    os.close(fd)
                fast_until = time.monotonic() + 5
                continue
        time.sleep(0.002 if time.monotonic() < fast_until else 0.05)


def delete(req):
    st = _store()
    rec = st.get(req.params[0])
    if req.flag("link"):
        raise not_implemented("removing links", "sbx makes no links: containers on a user-defined network reach "
                                                "each other by name")
    if rec.status in _state.ACTIVE and not req.flag("force"):
        raise ApiError(409, f"You cannot remove a running container {rec.id}. Stop the container before "
                            f"attempting removal or force remove")
    anon = _anonymous_volumes(rec) if req.flag("v") else []
    lifecycle.remove(st, rec.id, force=req.flag("force"))
    from ..containers import volumes
    for name in anon:
        try:
            volumes.remove(name)
        except SandboxError:
            pass  # used by another container meanwhile: kept, as Docker keeps it
    req.empty(204)


def _anonymous_volumes(rec):
    from ..containers import volumes
    out = []
    base = volumes.root() + "/"
    for m in (rec.spec or {}).get("mounts") or ():
        src = m.get("source") or ""
        if src.startswith(base) and src.endswith("/_data"):
            name = src[len(base):-len("/_data")]
            try:
                if volumes.ANONYMOUS in (volumes.inspect(name).get("Labels") or {}):
                    out.append(name)
            except SandboxError:
                continue
    return out


def rename(req):
    new = req.arg("name")
    if not new:
        raise ApiError(400, "a new name is required (query parameter name)")
    lifecycle.rename(_store(), req.params[0], new.lstrip("/"))
    req.empty(204)


def pause(req):
    lifecycle.pause(_store(), req.params[0])
    req.empty(204)


def unpause(req):
    lifecycle.unpause(_store(), req.params[0])
    req.empty(204)


def top(req):
    from ..containers import top as _top
    ps = req.arg("ps_args")
    rec = _store().get(req.params[0])
    if rec.status not in _state.ACTIVE:
        raise ApiError(409, f"Container {rec.id} is not running")
    req.json_reply(_top.top(_store(), rec.id, ps.split() if ps else None))


def changes(req):
    from ..image.layer import changes as _changes
    rec = _store().get(req.params[0])
    kinds = {"C": 0, "A": 1, "D": 2}
    if not rec.spec["sbx"].get("upper"):
        return req.json_reply([])
    req.json_reply([{"Path": p, "Kind": kinds[k]} for k, p in _changes(rec.upper, rec.spec["sbx"].get("lowers") or [])]
                   or None)


def prune(req):
    from ..containers import pruning
    f = req.filters()
    ids, freed = pruning.containers([f"{k}={v}" for k, vs in f.items() for v in vs], store=_store())
    req.json_reply({"ContainersDeleted": ids or None, "SpaceReclaimed": freed})


def stats(req):
    """docker-py's `stats`: one document (two samples a second apart, or one with one-shot), or
    with stream a document a second until the container stops (containers/stats.py)."""
    from ..containers import stats as _stats
    stream = req.flag("stream", True)
    out = _stats.stats(_store(), req.params[0], stream=stream, one_shot=req.flag("one-shot"))
    if not stream:
        return req.json_reply(out)
    w = req.stream()
    try:
        for doc in out:
            w.json(doc)
    finally:
        out.close()
    w.close()


_UPDATE_FIELDS = {"Memory": "memory", "MemorySwap": "memory_swap", "MemoryReservation": "memory_reservation",
                  "NanoCpus": "cpus", "CpuShares": "cpu_shares", "CpuPeriod": "cpu_period", "CpuQuota": "cpu_quota",
                  "CpusetCpus": "cpuset_cpus", "CpusetMems": "cpuset_mems", "PidsLimit": "pids_limit",
                  "BlkioWeight": "blkio_weight", "BlkioDeviceReadBps": "device_read_bps",
                  "BlkioDeviceWriteBps": "device_write_bps", "BlkioDeviceReadIOps": "device_read_iops",
                  "BlkioDeviceWriteIOps": "device_write_iops"}


def update(req):
    """`docker update`: the limits given (clients send 0 or "" for the others) and the restart
    policy, through containers/update.py (refused where the cgroups cannot enforce them)."""
    from ..containers import client as _client, update as _update
    body = req.json()
    given = {arg: body[k] for k, arg in _UPDATE_FIELDS.items() if body.get(k) not in (None, 0, "", [])}
    unknown = [k for k, v in body.items() if k not in _UPDATE_FIELDS and k != "RestartPolicy" and v not in
               (None, 0, "", [], {}, False)]
    if unknown:
        raise ApiError(400, f"updating {unknown[0]} is not supported: sbx updates limits and the restart policy")
    policy = body.get("RestartPolicy")
    restart = _client._restart(policy) if policy and policy.get("Name") else None
    if not given and restart is None:
        raise ApiError(400, "nothing to update: give a limit or a RestartPolicy")
    _update.update(_store(), req.params[0], _update.Change.parse(given, restart))
    req.json_reply({"Warnings": []})


def resize(req):
    from ..containers import attach as _attach
    rec = _store().get(req.params[0])
    h, w = req.int_arg("h", 0), req.int_arg("w", 0)
    if rec.status not in _state.ACTIVE:
        raise ApiError(409, f"Container {rec.id} is not running")
    if rec.config.get("Tty"):
        _attach.resize(rec.dir, (h, w))
    req.send(200, b"", content_type="text/plain")


# --- files ------------------------------------------------------------------------------------------

def _path_arg(req):
    p = req.arg("path")
    if not p:
        raise ApiError(400, "the query parameter path is required")
    return p


def _stat_header(stat):
    return ("X-Docker-Container-Path-Stat", base64.b64encode(json.dumps(stat).encode()).decode())


def _copy_error(e):
    from ..containers.files import CopyError
    if isinstance(e, CopyError) and ("Could not find the file" in str(e) or "no such file" in str(e)):
        return ApiError(404, str(e))
    if isinstance(e, CopyError):
        return ApiError(400, str(e) + (f" ({e.hint})" if e.hint else ""))
    return e


def archive_get(req):
    from ..containers import files
    try:
        chunks, stat = files.get_archive(_store(), req.params[0], _path_arg(req))
    except SandboxError as e:
        raise _copy_error(e) from None
    try:
        if req.method == "HEAD":
            return req.send(200, b"", content_type="application/x-tar", headers=[_stat_header(stat)])
        w = req.stream("application/x-tar", headers=[_stat_header(stat)])
        for c in chunks:
            w.write(c)
        w.close()
    finally:
        chunks.close()


def archive_put(req):
    from ..containers import files
    try:
        files.put_archive(_store(), req.params[0], _path_arg(req), req.body_chunks())
    except SandboxError as e:
        raise _copy_error(e) from None
    req.send(200, b"", content_type="text/plain")


def export(req):
    from ..containers import files
    st = _store()
    rec = st.get(req.params[0])
    r, w = os.pipe2(os.O_CLOEXEC)
    err = []
    ctx = config.current()

    def produce():
        try:
            with config.use(ctx):
                files.export(st, rec.id, w)
        except BaseException as e:  # noqa: B902 - reported as the stream's end
            err.append(e)
        finally:
            os.close(w)
    t = threading.Thread(target=produce, daemon=True)
    t.start()
    out = None
    try:
        while True:
            data = os.read(r, 1 << 16)
            if not data:
                break
            if out is None:
                out = req.stream("application/x-tar")
            out.write(data)
    finally:
        os.close(r)
        t.join()
    if err and out is None:
        raise err[0]
    if out is None:
        out = req.stream("application/x-tar")
    if not err:
        out.close()


# --- logs -------------------------------------------------------------------------------------------

def _time_arg(req, name):
    from ..containers.logs import parse_time_arg
    v = req.arg(name)
    if v in (None, "", "0"):
        return None
    try:
        return parse_time_arg(v, flag=name)
    except SandboxError as e:
        raise ApiError(400, str(e)) from None


def logs(req):
    from ..containers import logs as _logs
    st = _store()
    rec = st.get(req.params[0])
    want = {s for s in ("stdout", "stderr") if req.flag(s)}
    if not want:
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    tail = req.arg("tail") or "all"
    if tail != "all":
        try:
            tail = int(tail)
        except ValueError:
            raise ApiError(400, f"invalid tail value {tail!r}: give a number of lines or all") from None
        if tail < 0:
            tail = "all"
    tty = bool(rec.config.get("Tty"))
    since, until = _time_arg(req, "since"), _time_arg(req, "until")
    stamps = req.flag("timestamps")

    def running():
        now = st.load(rec.id)
        return now is not None and now.status in _state.ACTIVE
    w = req.stream(_stream_type(req, tty))
    for stream, ts, data in _logs.read(rec.path(_logs.LOG), tail=None if tail == "all" else tail, since=since,
                                       until=until, follow=req.flag("follow"), running=running):
        if stream not in want:
            continue
        if stamps:
            data = ts.encode() + b" " + data
        w.write(data if tty else frame(2 if stream == "stderr" else 1, data))
    w.close()


# --- hijacked streams: attach, exec ---------------------------------------------------------------

def _pump(sock, sources, stdin_fd=None, frames=True, on_stdin_end=None):
    """Relay until every source is done: `sources` are (fd, kind) whose bytes go to the client
    (framed as `kind` unless `frames` is False); the client's bytes go to `stdin_fd`."""
    sel = selectors.DefaultSelector()
    for fd, kind in sources:
        sel.register(fd, selectors.EVENT_READ, kind)
    if stdin_fd is not None:
        sel.register(sock, selectors.EVENT_READ, "client")
    open_sources = len(sources)
    try:
        while open_sources:
            for key, _ in sel.select():
                if key.data == "client":
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        try:
                            _write_all(stdin_fd, data)
                        except OSError:
                            data = b""
                    if not data:
                        sel.unregister(sock)
                        if on_stdin_end is not None:
                            on_stdin_end()
                    continue
                try:
                    data = os.read(key.fd, 65536) if not isinstance(key.fileobj, socket.socket) \
                        else key.fileobj.recv(65536)
                except OSError as e:
                    if e.errno not in (errno.EIO, errno.ECONNRESET):
                        raise
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    open_sources -= 1
                    continue
                sock.sendall(frame(key.data, data) if frames else data)
    finally:
        sel.close()


def _write_all(fd, data):
    if isinstance(fd, socket.socket):
        fd.sendall(data)
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def attach(req):
    """Hijacked attach.  The output comes from the container's log, followed (the monitor
    writes every byte there first), so nothing printed between a start and this connection is
    lost (compose attaches to a created container, then starts it); stdin goes to the monitor's
    attach socket."""
    from ..containers import attach as _attach, logs as _logs
    from ..containers.state import parse_time
    st = _store()
    rec = st.get(req.params[0])
    tty = bool(rec.config.get("Tty"))
    want_in = req.flag("stdin") and bool(rec.config.get("OpenStdin"))
    want = {s for s in ("stdout", "stderr") if req.flag(s)}
    stream, with_logs = req.flag("stream"), req.flag("logs")
    if not (stream or with_logs):
        raise ApiError(400, "Bad parameters: you must choose at least one of stream or logs")
    sock = req.hijack(_stream_type(req, tty))
    since = None if with_logs or rec.status == "created" else time.time()
    conn = None
    log_fd = -1
    try:
        # The log is opened as soon as it exists and read through that descriptor: a --rm
        # container that ends at once is removed with its log, but not before we hold it.
        deadline = time.monotonic() + 5
        while stream and log_fd < 0:
            try:
                log_fd = os.open(rec.path(_logs.LOG), os.O_RDONLY | os.O_CLOEXEC)
                break
            except FileNotFoundError:
                pass
            now = st.load(rec.id)
            if now is None or now.status not in _state.ACTIVE + ("created",):
                break
            time.sleep(0.002 if time.monotonic() < deadline else 0.05)
        if stream and since is None and not with_logs:
            now = st.load(rec.id)
            since = parse_time(now.state.get("StartedAt")) if now is not None else None
        if want_in and stream:
            until = time.monotonic() + 5
            while conn is None:  # the monitor listens on attach.sock once it runs
                try:
                    conn = _attach.connect(rec.dir, b"attach 1 0 0\n")
                except OSError:
                    now = st.load(rec.id)
                    if now is None or now.status not in _state.ACTIVE + ("created",) or time.monotonic() > until:
                        break
                    time.sleep(0.01)
            if conn is not None:
                threading.Thread(target=_stdin_relay, args=(sock, conn), daemon=True).start()

        def running():  # (a created one: about to start, as the client starts it after attaching)
            now = st.load(rec.id)
            return now is not None and now.status in _state.ACTIVE + ("created",)
        path = f"/proc/self/fd/{log_fd}" if log_fd >= 0 else rec.path(_logs.LOG)
        for s, _ts, data in _logs.read(path, since=since, follow=stream, running=running, poll=0.05):
            if s in want:
                sock.sendall(data if tty else frame(2 if s == "stderr" else 1, data))
    finally:
        if log_fd >= 0:
            os.close(log_fd)
        if conn is not None:
            conn.close()
        _close(sock)


def _stdin_relay(sock, conn):
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Exec:
    """One exec instance (POST /containers/{id}/exec), kept by the service until its container
    goes (Docker's lifetime) or the service ends."""

    def __init__(self, cid, opts, attach, env_user):
        self.id = os.urandom(32).hex()
        self.cid, self.opts, self.attach = cid, opts, attach
        self.body = env_user
        self.running = False
        self.started = False
        self.code = None
        self.pid = 0
        self.proc = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    def doc(self):
        o = self.opts
        return {"ID": self.id, "Running": self.running, "ExitCode": self.code, "ProcessConfig": {
            "tty": o.terminal, "entrypoint": o.argv[0], "arguments": list(o.argv[1:]), "privileged": o.privileged,
            "user": o.user or ""}, "OpenStdin": self.attach[0], "OpenStderr": self.attach[2],
            "OpenStdout": self.attach[1], "CanRemove": False, "ContainerID": self.cid, "DetachKeys": "",
            "Pid": self.pid}


_EXECS_LOCK = threading.Lock()


def _execs(req):
    with _EXECS_LOCK:
        return req.h.server.state.setdefault("execs", {})


def exec_create(req):
    st = _store()
    rec = st.get(req.params[0])
    body = req.json()
    if rec.status == "paused":
        raise ApiError(409, f"Container {rec.id} is paused, unpause the container before exec")
    if rec.status not in _state.ACTIVE:
        raise ApiError(409, f"Container {rec.id} is not running")
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not all(isinstance(c, str) for c in cmd):
        raise ApiError(400, "No exec command specified")
    if body.get("Privileged"):
        raise ApiError(400, "privileged exec is not supported: sbx has no privileged mode")
    from ..containers import client as _client
    try:
        env = tuple(_client._env(body.get("Env"), "Env"))
    except SandboxError as e:
        raise ApiError(400, str(e)) from None
    opts = _options.ExecOptions(argv=tuple(cmd), env=env, cwd=body.get("WorkingDir") or None,
                                user=body.get("User") or None, terminal=bool(body.get("Tty")),
                                interactive=bool(body.get("AttachStdin")))
    ex = Exec(rec.id, opts, (bool(body.get("AttachStdin")), bool(body.get("AttachStdout")),
                             bool(body.get("AttachStderr"))), body)
    execs = _execs(req)
    with _EXECS_LOCK:
        if len(execs) > 256:  # finished ones beyond Docker's few are forgotten, oldest first
            for k in [k for k, v in execs.items() if v.done.is_set()][:len(execs) - 256]:
                del execs[k]
        execs[ex.id] = ex
    req.json_reply({"Id": ex.id}, status=201)


def _get_exec(req):
    ex = _execs(req).get(req.params[0])
    if ex is None:
        raise ApiError(404, f"No such exec instance: {req.params[0]}")
    return ex


def exec_inspect(req):
    req.json_reply(_get_exec(req).doc())


def exec_resize(req):
    from ..containers import attach as _attach
    ex = _get_exec(req)
    p = ex.proc
    if p is None or not ex.running or not ex.opts.terminal:
        raise ApiError(409, f"exec {ex.id} is not running with a tty")
    _attach.set_winsize(p.pty_master, (req.int_arg("h", 0), req.int_arg("w", 0)))
    req.send(200, b"", content_type="text/plain")


def exec_start(req):
    ex = _get_exec(req)
    body = req.json()
    with ex.lock:
        if ex.started:
            raise ApiError(409, f"exec {ex.id} has already been started")
        ex.started = True
    detach = bool(body.get("Detach"))
    tty = ex.opts.terminal if body.get("Tty") is None else bool(body.get("Tty")) or ex.opts.terminal
    want_in, want_out, want_err = ex.attach if not detach else (False, False, False)
    sock = None
    if not detach:
        # Headers first, read by the client, and only then the process: its output cannot be
        # lost in the client's header read (docker-py #425, #3332).
        sock = req.hijack(_stream_type(req, tty))
    mine, child = [], [-1, -1, -1]
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        stdin_w = None
        if not tty:
            if want_in:
                r, stdin_w = os.pipe2(os.O_CLOEXEC)
                child[0] = r
            else:
                child[0] = null
            for i, want in ((1, want_out), (2, want_err)):
                if want:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    child[i] = w
                    mine.append((r, i))
                else:
                    child[i] = null
        launched = threading.Event()
        error = []
        master = []
        ctx = config.current()

        def supervise():
            try:
                with config.use(ctx):
                    ex.proc = lifecycle.exec(_store(), ex.cid, ex.opts, stdio=tuple(child), exec_id=ex.id)
                ex.pid = ex.proc.pid
                ex.running = True
                if tty and not detach:  # ours before wait() and close() below: a quick exit's
                    master.append(os.dup(ex.proc.pty_master))  # output stays readable
            except BaseException as e:  # noqa: B902 - reported to the client
                error.append(e)
                ex.code = getattr(e, "exit_code", 126)
                ex.done.set()
                launched.set()
                return
            launched.set()
            try:
                ex.code = ex.proc.wait(forward=())
            finally:
                ex.running = False
                ex.proc.close()
                ex.done.set()
        # The exec's process dies with the thread that launched it: one that outlives this request.
        threading.Thread(target=supervise, daemon=True, name=f"sbx exec {ex.id[:12]}").start()
        launched.wait()
        for fd in set(child):
            if fd != null and fd >= 0:
                os.close(fd)
        child = []
        if error:
            for fd, _ in mine:
                os.close(fd)
            mine = []
            if stdin_w is not None:
                os.close(stdin_w)
            if sock is None:
                raise error[0]
            msg = f"sbx: exec failed: {error[0]}\r\n".encode()
            sock.sendall(msg if tty else frame(2, msg))
            return
        if detach:
            return req.send(200, b"", content_type="text/plain")
        if tty:
            mine = [(master[0], 1)]
            stdin_w = master[0] if want_in else None
        try:
            _pump(sock, mine, stdin_fd=stdin_w, frames=not tty,
                  on_stdin_end=(lambda: None) if tty or stdin_w is None else lambda: os.close(stdin_w))
        finally:
            for fd, _ in mine:
                try:
                    os.close(fd)
                except OSError:
                    pass
            mine = []
        ex.done.wait()
    finally:
        os.close(null)
        for fd in child:
            if fd >= 0 and fd != null:
                os.close(fd)
        for fd, _ in mine:
            os.close(fd)
        if sock is not None:
            _close(sock)


def commit(req):
    from ..containers.commit import commit_container
    ref = req.arg("container")
    if not ref:
        raise ApiError(400, "the query parameter container is required")
    rec = _store().get(ref)
    if rec.status in _state.ACTIVE:
        raise ApiError(409, f"container {rec.name} is running: sbx commits stopped containers (stop it first)")
    repo, tag = req.arg("repo"), req.arg("tag")
    name = f"{repo}:{tag}" if repo and tag else repo
    changes = [c for c in (req.query.get("changes") or []) if c]
    img = commit_container(rec, name, message=req.arg("comment"), author=req.arg("author"), changes=changes)
    req.json_reply({"Id": img.id}, status=201)


ROUTES = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_),
    ("POST", "/containers/prune", prune),
    ("GET", f"/containers/{_ID}/json", inspect),
    ("POST", f"/containers/{_ID}/start", start),
    ("POST", f"/containers/{_ID}/stop", stop),
    ("POST", f"/containers/{_ID}/restart", restart),
    ("POST", f"/containers/{_ID}/kill", kill),
    ("POST", f"/containers/{_ID}/wait", wait),
    ("DELETE", f"/containers/{_ID}", delete),
    ("POST", f"/containers/{_ID}/rename", rename),
    ("POST", f"/containers/{_ID}/pause", pause),
    ("POST", f"/containers/{_ID}/unpause", unpause),
    ("GET", f"/containers/{_ID}/top", top),
    ("GET", f"/containers/{_ID}/changes", changes),
    ("GET", f"/containers/{_ID}/logs", logs),
    ("GET", f"/containers/{_ID}/stats", stats),
    ("POST", f"/containers/{_ID}/update", update),
    ("POST", f"/containers/{_ID}/resize", resize),
    ("GET", f"/containers/{_ID}/archive", archive_get),
    ("PUT", f"/containers/{_ID}/archive", archive_put),
    ("GET", f"/containers/{_ID}/export", export),
    ("POST", f"/containers/{_ID}/attach", attach),
    ("POST", f"/containers/{_ID}/exec", exec_create),
    ("POST", f"/exec/{_ID}/start", exec_start),
    ("GET", f"/exec/{_ID}/json", exec_inspect),
    ("POST", f"/exec/{_ID}/resize", exec_resize),
    ("POST", "/commit", commit),
]
