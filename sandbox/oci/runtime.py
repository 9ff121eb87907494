"""The OCI runtime's verbs over the engine's two-phase launch (docs/engine.md "OCI runtime").

create  translate config.json, launch.create(wait_start=True, start_dir=ROOT/ID) with the OCI
        hooks as a launch hook, release: the child is ready and blocked before execve on
        ROOT/ID/start.fifo; write state.json and --pid-file; return.  The child outlives us
        (no parent-death signal): it is re-parented to the caller's subreaper or to init.
start   startContainer hooks, one byte on the FIFO (launch.start_fifo), poststart hooks.
kill, delete, state, run, exec, ps, list, pause, resume, update: see each function."""
import _signal  # the C module: `signal` builds enums (10 ms)
import os

from .. import __version__
from ..errors import SandboxError
from ..runtime import launch
from . import bundle as _bundle
from . import hooks as _hooks
from . import jsonc as _jsonc
from .errors import NoSuchContainer, OCIError, Refused, WrongState
from .state import Container, alive, check_id, ensure_root, ids, now_rfc3339, start_time

SPEC_VERSION = "1.2.0"


def _owner():
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _cgroup_hook(t, cid):
    """(hook or None, cgroup path or None): a cgroup v2 leaf where one is delegated (pause,
    update and limits need it); limits asked for where none is are refused naming the field."""
    from ..cgroups import v2
    machine = v2.probe()
    if t.resources is not None:
        err = v2.refusal(machine, v2.needed(t.resources))
        if err is not None:
            fields = [f"linux.resources.{s}.{k}" for (s, k), name in _bundle.RESOURCE_FIELDS.items()
                      if getattr(t.resources, name, None) is not None]
            raise Refused(", ".join(fields), f"cannot be enforced: {err.msg}", err.hint)
    if not machine.usable:
        return None, None
    hook = v2.CgroupHook(f"oci-{cid}"[:60], t.resources, machine)
    return hook, hook


def _listen_fds():
    """systemd socket activation passed to us (runc's rule): LISTEN_FDS fds from 3 when
    LISTEN_PID is our pid."""
    n, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    if not n or not n.isdigit() or pid != str(os.getpid()):
        return 0
    return int(n)


def _connect_console(path):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OCIError(f"--console-socket {path}: cannot connect: {e.strerror}",
                       hint="the caller must listen on that unix socket before create") from None
    return s


def _write_pid_file(path, pid):
    path = os.path.abspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def create(root, cid, bundle_dir, *, pid_file=None, console_socket=None, preserve_fds=0, rootless=None,
           stdio=(-1, -1, -1), die_with_parent=False, _keep_pty=None):
    """Create the container; returns its Container (state saved) and the Launch."""
    check_id(cid)
    config, bundle_dir = _bundle.load(bundle_dir)
    if rootless is None:
        from .state import rootless as _rootless
        rootless = _rootless()
    t = _bundle.translate(config, bundle_dir, cid, rootless)
    t.spec["sbx"]["die_with_parent"] = die_with_parent
    if t.terminal and console_socket is None and _keep_pty is None:
        raise OCIError("process.terminal is true but no --console-socket was given",
                       hint="give --console-socket PATH (the caller receives the pty master there), "
                            "or set process.terminal to false")
    if not t.terminal and console_socket is not None:
        raise OCIError("--console-socket was given but process.terminal is false",
                       hint="set process.terminal to true in config.json, or drop --console-socket")
    extra = _listen_fds()
    if extra:
        t.spec["process"]["env"].append(f"LISTEN_FDS={extra}")
    keep = list(range(3, 3 + extra + int(preserve_fds)))
    for fd in keep:
        try:
            os.fstat(fd)
        except OSError:
            raise OCIError(f"--preserve-fds {preserve_fds}: fd {fd} is not open") from None
    ensure_root(root)
    c = Container(root, cid)
    try:
        os.mkdir(c.dir, 0o700)
    except FileExistsError:
        raise OCIError(f"container with id exists: {cid}",
                       hint=f"choose another id, or delete it with 'sbx-runc delete {cid}'") from None
    sock = h = None
    old_umask = None
    try:
        cg_hook, cg_path_of = _cgroup_hook(t, cid)

        def state_of(pid):
            return {"ociVersion": config["ociVersion"], "id": cid, "status": "creating", "pid": pid,
                    "bundle": bundle_dir, "annotations": t.annotations}
        held = [_hooks.HeldHooks(t, state_of)]
        if cg_hook is not None:
            held.insert(0, cg_hook)
        kw = {"stdio": stdio, "keep_fds": keep}
        if t.terminal:
            if _keep_pty is not None:
                kw["console_socket"] = _keep_pty
            else:
                sock = _connect_console(console_socket)
                kw["console_socket"] = sock.fileno()
            kw["console_size"] = t.console_size or (0, 0)
        if t.umask is not None:
            old_umask = os.umask(t.umask)
        h = launch.create(t.spec, hooks=held, wait_start=True, start_dir=c.dir, **kw)
        pid, pidfd = h.release()
        if old_umask is not None:
            os.umask(old_umask)
            old_umask = None
        c.data = {"ociVersion": config["ociVersion"], "id": cid, "pid": pid, "pid_start": start_time(pid),
                  "bundle": bundle_dir, "rootfs": t.spec["root"]["path"], "created": now_rfc3339(),
                  "owner": _owner() if os.geteuid() != 0 else "", "annotations": t.annotations,
                  "hooks": t.hooks, "spec": t.spec, "rootless": bool(rootless),
                  "cgroup": cg_path_of.cgroup.path if cg_path_of is not None and cg_path_of.cgroup else None}
        c.save()
        if pid_file:
            _write_pid_file(pid_file, pid)
        if pidfd >= 0:
            os.close(pidfd)
        return c, h
    except BaseException:
        if old_umask is not None:
            os.umask(old_umask)
        if h is not None:
            h.abort()  # kills the waiting child, tears the launch hooks down
        c.remove_dir()
        raise
    finally:
        if sock is not None:
            sock.close()


def _load(root, cid):
    return Container.load(root, cid)


def start(root, cid, log=None):
    c = _load(root, cid).lock()
    try:
        st = c.status()
        if st != "created":
            raise WrongState(f"cannot start a container that is {st}: {cid}",
                             hint="only a created container can be started")
        state = c.oci_state()
        for hook in (c.data.get("hooks") or {}).get("startContainer", ()):
            _run_hook_inside(c, "startContainer", hook, state)
        launch.start_fifo(c.fifo)
        state = c.oci_state()
        try:
            _hooks.run_all(("poststart",), c.data.get("hooks") or {}, state)
        except OCIError as e:
            if log:
                log("warning", str(e))
    finally:
        c.unlock()


def state(root, cid):
    return _load(root, cid).oci_state()


def signal_number(text):
    """runc's SIGNAL: a number, NAME or SIGNAME (case-insensitive)."""
    t = str(text).strip()
    if t.isdigit():
        n = int(t)
        if 0 < n < 65:
            return n
    else:
        name = t.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
            base, _, off = name[3:].partition("+" if "+" in name else "-")
            if off.isdigit():
                n = (_signal.SIGRTMIN + int(off)) if base == "RTMIN" else (_signal.SIGRTMAX - int(off))
                if _signal.SIGRTMIN <= n <= _signal.SIGRTMAX:
                    return n
        sig = getattr(_signal, name, None) if name[3:].isalnum() else None  # not SIG_IGN, SIG_BLOCK...
        if isinstance(sig, int) and 0 < sig < 65:
            return sig
    raise OCIError(f"unknown signal {text!r}", hint="give a number (15) or a name (TERM, SIGKILL)")


def _signal_checked(pid, start, sig):
    """Signal `pid` only while it is the process that started at `start` (a pidfd pins it)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if not alive(pid, start):
            return False
        _signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def container_pids(c):
    """Every process of the container: its cgroup leaf's, else those in its pid namespace
    (when it has its own), else the init and its descendants."""
    cg = c.cgroup()
    if cg is not None:
        try:
            return [int(p) for p in cg.pids()]
        except OSError:
            pass
    pid = c.pid
    if not c.alive():
        return []
    try:
        own = os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return [pid]
    out, children = [], {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        p = int(name)
        if own:
            try:
                if os.stat(f"/proc/{p}/ns/pid").st_ino == ns:
                    out.append(p)
            except OSError:
                continue
        else:
            f = _read_ppid(p)
            if f is not None:
                children.setdefault(f, []).append(p)
    if own:
        return sorted(out)
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children.get(p, ()))
    return sorted(seen)


def _read_ppid(pid):
    from .state import stat_fields
    f = stat_fields(pid)
    return None if f is None else int(f[1])


def kill(root, cid, sig="SIGTERM", all_=False):
    c = _load(root, cid)
    n = signal_number(sig)
    st = c.status()
    if st == "stopped":
        raise WrongState(f"container not running: {cid}", hint="it has stopped already; delete it")
    if all_:
        cg = c.cgroup()
        if cg is not None and n == _signal.SIGKILL:
            try:
                cg.kill()
                return
            except (OSError, SandboxError):
                pass
        for p in container_pids(c):
            if p == c.pid:
                _signal_checked(p, c.data["pid_start"], n)
            else:
                try:
                    os.kill(p, n)
                except ProcessLookupError:
                    pass
        return
    if not _signal_checked(c.pid, c.data["pid_start"], n):
        raise WrongState(f"container not running: {cid}")


def _wait_gone(pid, start, timeout=10.0):
    """Wait until `pid` exited (a zombie counts: its reaper is the caller's)."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return True
    try:
        if not alive(pid, start):
            return True
        p = select.poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(int(timeout * 1000))) or not alive(pid, start)
    finally:
        os.close(fd)


def delete(root, cid, force=False, log=None):
    try:
        c = _load(root, cid).lock()
    except NoSuchContainer:
        if force:
            return  # runc: delete --force of a missing container succeeds
        raise
    try:
        st = c.status()
        if st in ("running", "paused") and not force:
            raise WrongState(f"cannot delete container {cid} that is not stopped: {st}",
                             hint=f"stop it first ('sbx-runc kill {cid} KILL'), or use delete --force")
        if st != "stopped":
            cg = c.cgroup()
            if st == "paused" and cg is not None:
                try:
                    cg.thaw()
                except (OSError, SandboxError):
                    pass
            kill(root, cid, "KILL", all_=True)
            if not _wait_gone(c.pid, c.data["pid_start"]):
                raise OCIError(f"container {cid} did not die after SIGKILL")
        cg = c.cgroup()
        if cg is not None:
            try:
                cg.remove()
            except (OSError, SandboxError) as e:
                if log:
                    log("warning", f"cannot remove the cgroup {cg.path}: {e}")
        state = c.oci_state()
        state["status"] = "stopped"
        c.remove_dir()
        try:
            _hooks.run_all(("poststop",), c.data.get("hooks") or {}, state)
        except OCIError as e:
            if log:
                log("warning", str(e))
    finally:
        c.unlock()


def list_states(root):
    out = []
    for cid in ids(root):
        try:
            out.append(_load(root, cid).oci_state())
        except (NoSuchContainer, OCIError):
            continue
    return out


def _no_cgroup(c, verb):
    from ..cgroups import v2
    m = v2.probe()
    why = m.reason if not m.usable else "it was created without one"
    return OCIError(f"cannot {verb} container {c.id}: it has no cgroup v2 leaf ({why})",
                    hint=m.hint or "pause, resume and update need a delegated cgroup v2 subtree")


def pause(root, cid):
    c = _load(root, cid).lock()
    try:
        st = c.status()
        if st != "running":
            raise WrongState(f"cannot pause a container that is {st}: {cid}")
        cg = c.cgroup()
        if cg is None:
            raise _no_cgroup(c, "pause")
        cg.freeze()
    finally:
        c.unlock()


def resume(root, cid):
    c = _load(root, cid).lock()
    try:
        st = c.status()
        if st != "paused":
            raise WrongState(f"cannot resume a container that is {st}: {cid}")
        c.cgroup().thaw()
    finally:
        c.unlock()


def update(root, cid, resources):
    c = _load(root, cid).lock()
    try:
        if c.status() == "stopped":
            raise WrongState(f"container not running: {cid}")
        r = _bundle._resources(resources if isinstance(resources, dict) else {})
        cg = c.cgroup()
        if cg is None:
            raise _no_cgroup(c, "update")
        if r is not None:
            from ..cgroups import v2
            cg.set(v2.limit_files(r), swap_asked=r.memswap_limit is not None)
    finally:
        c.unlock()


def exec_spec(c, proc):
    """The engine spec of a process (an OCI process object) joining the container's namespaces."""
    x = c.data["spec"]["sbx"]
    process, ids_ = _bundle._process(proc, x["userns"], x["userns"] != "none")
    return _joining(c, process, ids_)


def _joining(c, process, ids_):
    """The engine spec of the engine `process` with ids `ids_` joining the container's namespaces."""
    from ..runtime.spec import _NS_FILE, JOIN_ORDER
    spec = c.data["spec"]
    x = spec["sbx"]
    have = {n["type"] for n in spec["linux"]["namespaces"]}
    return {"ociVersion": spec["ociVersion"], "process": process, "root": spec["root"],
            "hostname": spec["hostname"], "mounts": [],
            "linux": dict(spec["linux"], namespaces=[{"type": t, "path": f"/proc/{c.pid}/ns/{_NS_FILE[t]}"}
                                                     for t in JOIN_ORDER if t in have]),
            "sbx": dict(x, init=False, mkdir_cwd=False, files={}, ids=ids_, die_with_parent=False)}


def exec_(root, cid, proc, *, console_socket=None, pid_file=None, preserve_fds=0, stdio=(-1, -1, -1),
          pty=None):
    """Start `proc` (an OCI process object) in the running container; returns (pid, pidfd).
    The process is our child (the launcher forks it with CLONE_PARENT into the pid namespace)."""
    c = _load(root, cid)
    st = c.status()
    if st != "running":
        raise WrongState(f"cannot exec in a container that is {st}: {cid}",
                         hint="start it first" if st == "created" else None)
    spec = exec_spec(c, proc)
    terminal = bool(proc.get("terminal"))
    if terminal and console_socket is None and pty is None:
        raise OCIError("process.terminal is true but no --console-socket was given")
    if not terminal and console_socket is not None:
        raise OCIError("--console-socket was given but the process has no terminal",
                       hint="use --tty, or set terminal to true in the --process file")
    keep = list(range(3, 3 + int(preserve_fds)))
    sock = None
    kw = {"stdio": stdio, "keep_fds": keep}
    try:
        if terminal:
            if pty is not None:
                kw["console_socket"] = pty
            else:
                sock = _connect_console(console_socket)
                kw["console_socket"] = sock.fileno()
            cs = proc.get("consoleSize") or {}
            kw["console_size"] = (cs.get("height", 0), cs.get("width", 0))
        pid, pidfd = _start_joined(c, spec, **kw)
    finally:
        if sock is not None:
            sock.close()
    if pid_file:
        _write_pid_file(pid_file, pid)
    return pid, pidfd


def _start_joined(c, spec, **kw):
    """Launch a spec joining container `c` (and its cgroup leaf, if it has one): (pid, pidfd)."""
    cg = c.cgroup()
    if cg is None:
        return launch.start(spec, **kw)
    from ..cgroups import v2
    return launch.create(spec, hooks=[v2.JoinHook(cg)], **kw).release()


def _run_hook_inside(c, kind, hook, state):
    """A hook whose path resolves in the container (startContainer: the image's own program),
    run as confined as the container's process: all its namespaces (pid included), its leaf,
    user, capabilities, seccomp and rlimits; the state on its stdin, killed after `timeout`."""
    import select
    name = f"{kind} hook {hook['path']}"
    x = c.data["spec"]["sbx"]
    process = dict(c.data["spec"]["process"], terminal=False, cwd="/", env=list(hook.get("env") or ()),
                   args=[hook["path"], *(hook.get("args") or [hook["path"]])[1:]])
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        pid, pidfd = _start_joined(c, _joining(c, process, x.get("ids")), stdio=(in_r, null, err_w))
    except SandboxError as e:
        for fd in (in_w, err_r):
            os.close(fd)
        raise OCIError(f"{name}: cannot run it: {e}",
                       hint="startContainer hook paths resolve in the container's root") from None
    finally:
        for fd in (in_r, null, err_w):
            os.close(fd)
    try:
        try:
            os.write(in_w, _jsonc.dumps(state).encode())
        except BrokenPipeError:
            pass
        os.close(in_w)
        import time
        timeout = hook.get("timeout")
        end = None if timeout is None else time.monotonic() + timeout
        err = b""
        while True:  # its stderr read as it comes (a full pipe would stop it)
            left = None if end is None else max(0.0, end - time.monotonic())
            ready = select.select([pidfd, err_r], [], [], left)[0]
            if err_r in ready:
                chunk = os.read(err_r, 65536)
                err = (err + chunk)[-4096:]
                if chunk:
                    continue
                ready = select.select([pidfd], [], [], left)[0]
            if pidfd in ready:
                break
            if not ready:
                _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
                os.waitpid(pid, 0)
                raise OCIError(f"{name}: timed out after {timeout} s")
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        os.close(pidfd)
        os.close(err_r)
    if status != 0:
        why = err.decode(errors="replace").strip().splitlines()[-1:]
        code = f"signal {-status}" if status < 0 else f"status {status}"
        raise OCIError(f"{name} failed: exit {code}" + (f": {why[0]}" if why else ""))


def features():
    """The runtime-spec features document (features.md)."""
    from .._native import SECCOMP_ACTIONS, SECCOMP_OPS
    from ..runtime.seccomp import _ARCH_NAMES
    from ..runtime.spec import CAPS
    from ..cgroups import v2
    m = v2.probe()
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(_bundle.HOOK_KINDS),
        "mountOptions": sorted({*_bundle.PRIVATE, *_bundle.DEFAULTS, *_bundle.BIND_ATTRS, *_bundle.ATIME,
                                *(f"r{a}" for a in _bundle.BIND_ATTRS), "bind", "rbind"}),
        "linux": {
            "namespaces": list(_bundle.SUPPORTED_NS),
            "capabilities": [f"CAP_{c}" for c in CAPS],
            "cgroup": {"v1": False, "v2": m.usable, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(SECCOMP_ACTIONS), "operators": sorted(SECCOMP_OPS),
                        "archs": sorted(_ARCH_NAMES)},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runc.version": f"sbx-runc {__version__}",
                        "io.github.sbx.runtime": "sbx-runc"},
    }


def default_spec(rootless=False, args=("sh",)):
    """A config.json like `runc spec` (`--rootless`: a user namespace mapping our own ids, /sys
    bound from the host, no network namespace)."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
         + ([] if rootless else ["gid=5"])},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    ]
    if rootless:
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    else:
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    ns = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if not rootless:
        ns.insert(1, {"type": "network"})
    linux = {"namespaces": ns,
             "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                             "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                             "/proc/scsi"],
             "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]}
    if rootless:
        ns.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    return {
        "ociVersion": "1.1.0",  # what the runtimes of Debian 12 all accept (crun 1.8 refuses 1.2)
        "process": {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": list(args),
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                    "cwd": "/",
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sbx",
        "mounts": mounts,
        "linux": linux,
    }


def write_spec(bundle_dir, rootless=False):
    path = os.path.join(bundle_dir or ".", "config.json")
    if os.path.exists(path):
        raise OCIError(f"{path} exists: remove it first")
    import json
    with open(path, "x") as f:
        json.dump(default_spec(rootless), f, indent="\t")
        f.write("\n")
    return path
