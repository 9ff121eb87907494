"""Docker's container verbs on the store: create, start, stop, kill, restart, wait, remove,
rename, exec, inspect.  Every verb checks the transition table (state.transition) and names the
container and its status when it refuses.

A supervisor (foreground `sbx run`, the detached monitor, a Python process holding a named
sandbox) holds the container through `Supervision`: monitor.lock for as long as it runs, the
record updated at start and exit, removal after with AutoRemove.  This part is on `sbx run`'s
path: it imports no json."""
import os

from .. import journal
from . import state as _state
from .store import ContainerStore


def new_container(store, spec, *, name=None, image=None, command=None, auto_remove=False, foreground=False,
                  restart=("no", 0), stop_signal=None, stop_timeout=None, labels=None, open_stdin=False):
    """A new record (status created) for `spec`.  A foreground `--rm` container keeps its
    writable layer private (in the sandbox's own tmpfs) and its record unsynced: both are gone
    when it ends.  Others get a persistent layer in their directory."""
    private = auto_remove and foreground
    doc = _state.new_doc(spec, name=name, image=image, command=command, auto_remove=auto_remove,
                         restart=restart, stop_signal=stop_signal, stop_timeout=stop_timeout, labels=labels,
                         open_stdin=open_stdin)
    return store.create(doc, persist=not private, layer=not private)


def network_events(store, rec, action, settings):
    """Docker's network connect/disconnect at a container's start and end: one per
    user-defined network in its NetworkSettings (those entries carry the network's id)."""
    for name, ep in ((settings or {}).get("Networks") or {}).items():
        nid = (ep or {}).get("NetworkID") or ""
        if len(nid) == 64:
            journal.record(store.data_root, "network", action, nid, container=rec.id, name=name, type="bridge")


def volume_events(store, rec, action):
    """Docker's volume mount/unmount events, one per named volume the container binds (a
    source `<data>/volumes/NAME/_data`; containers/volumes.py is not imported: run's path)."""
    base = os.path.join(store.data_root, "volumes") + os.sep
    for m in (rec.doc.get("Spec") or {}).get("mounts") or ():
        src = m.get("source") or ""
        if src.startswith(base) and src.endswith("/_data") and src.count("/", len(base)) == 1:
            rw = "false" if "ro" in (m.get("options") or ()) else "true"
            journal.record(store.data_root, "volume", action, src[len(base):-len("/_data")], container=rec.id,
                           destination=m.get("destination") or "", driver="local", propagation="",
                           **{"read/write": rw})


class Supervision:
    """This process supervises `rec` from now on: holds its monitor.lock (StateError if another
    process does: it is running), records the start and the exit.  `sync`: fsync the record."""

    def __init__(self, store, rec, sync=True):
        from ..runtime import flocks
        self.store, self.rec, self.sync = store, rec, sync
        self.fd, rec.monitor_fd = rec.monitor_fd, -1
        self.fresh = self.fd >= 0  # a private record: locked at creation, first written at start
        if self.fresh:
            return
        for delay in (0, 0.001, 0.002, 0.005, 0.01, 0.02):  # a liveness probe holds it for microseconds
            if delay:
                import time
                time.sleep(delay)
            try:
                # never mkdir: a container removed meanwhile (rm -f racing start) stays removed
                self.fd = flocks.hold(rec.path(_state.MONITOR_LOCK), mkdir=False)
                break
            except BlockingIOError:
                continue
            except FileNotFoundError:
                raise _state.NoSuchContainer(rec.name) from None
        if self.fd < 0:
            raise _state.StateError("start", rec.name, "running")

        def check(doc):  # e.g. being removed
            status = doc["State"]["Status"]
            if status not in ("created", "exited", "dead") + _state.ACTIVE:  # ACTIVE: its supervisor died
                raise _state.StateError("start", rec.name, status)
        try:
            self.rec = store.update(rec, check, save=False)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def started(self, pid, network=None, cgroup=None):
        """Record the start; `network`: the NetworkSettings its network hook reported; `cgroup`:
        the path of the container's cgroup leaf for this run (pause, kill use it)."""
        def mark(doc):
            doc["State"].update(Status="running", Pid=pid, PidStart=_state.pid_start(pid), MonitorPid=os.getpid(),
                                StartedAt=_state.now(), FinishedAt=_state.ZERO_TIME, ExitCode=0, Error="",
                                OOMKilled=False, CgroupPath=cgroup or "")
            if network is not None:
                doc["NetworkSettings"] = network
            else:
                doc.pop("NetworkSettings", None)
        if self.fresh:  # its first write: nobody can have changed a record that did not exist
            self.fresh = False
            mark(self.rec.doc)
            self.store.save(self.rec, sync=self.sync)
        else:
            self.rec = self.store.update(self.rec, mark, sync=self.sync)
        network_events(self.store, self.rec, "connect", network)
        volume_events(self.store, self.rec, "mount")
        journal.append(self.store, "start", self.rec)

    def restarting(self):
        self.rec = self.store.update(self.rec, lambda doc: doc["State"].update(
            Status="restarting", Pid=0, PidStart=None, CgroupPath=""), sync=self.sync)

    def exited(self, code, error="", removing=False, oom_killed=False):
        """Record the exit (or a launch that failed: `error`, status stays created if it never ran).
        `removing`: an AutoRemove container goes from running straight to removing, its exit code
        recorded (`wait` reads it), never seen as exited by someone waiting for its removal.
        `oom_killed`: the OOM killer killed a process of this run (its cgroup's memory.events)."""
        def mark(doc):
            st = doc["State"]
            never_ran = st["Status"] == "created"
            st.update(Status="removing" if removing else "created" if never_ran and error else "exited", Pid=0,
                      PidStart=None, ExitCode=code, Error=error, CgroupPath="", OOMKilled=bool(oom_killed))
            if not never_ran or not error:
                st["FinishedAt"] = _state.now()
            left[:] = [doc.pop("NetworkSettings", None)]  # its ports and address went with its helper
        left = []
        try:
            self.rec = self.store.update(self.rec, mark, sync=self.sync)
        except _state.NoSuchContainer:
            return  # removed meanwhile (rm -f): nothing to record
        if oom_killed:
            journal.append(self.store, "oom", self.rec)
        journal.append(self.store, "die", self.rec, exitCode=code)
        network_events(self.store, self.rec, "disconnect", left[0] if left else None)
        volume_events(self.store, self.rec, "unmount")
        if self.rec.state.get("StopRequested"):
            journal.append(self.store, "stop", self.rec)

    def release(self, remove=None):
        """Let go of the container; remove it if it is AutoRemove (or `remove` says so)."""
        if self.fd < 0:
            return
        rec = self.rec
        if self.fresh:  # never started: a record never written
            remove = True
        try:
            if rec.auto_remove if remove is None else remove:
                if self.sync and rec.status != "removing" and not self.fresh:  # an unsynced (foreground --rm) one goes at once
                    try:
                        rec = self.store.update(rec, lambda doc: doc["State"].update(Status="removing"), sync=False)
                    except _state.NoSuchContainer:
                        return  # removed already (rm -f)
                _waiters_read(rec)
                self.store.remove_dir(rec)
        finally:
            os.close(self.fd)
            self.fd = -1


def store(where=None):
    """A ContainerStore from a store, a data root path, or None (the configured one)."""
    if isinstance(where, ContainerStore):
        return where
    return ContainerStore(where)


# --- helpers ---------------------------------------------------------------------------------------

def _effective(doc, rec_dir):
    """The status of a freshly read document, corrected by the kernel's word on liveness."""
    st = doc["State"]["Status"]
    if st in _state.ACTIVE:
        from ..runtime import flocks
        if not flocks.held(os.path.join(rec_dir, _state.MONITOR_LOCK)):
            return "exited"
    return st


def signal_number(sig):
    """A signal given as a name (KILL, SIGKILL) or a number -> its number; UsageError if invalid."""
    import signal
    from ..errors import UsageError
    s = str(sig).strip().upper()
    if s.isdigit():
        n = int(s)
    else:
        s = s if s.startswith("SIG") else "SIG" + s
        n = getattr(signal, s, None)
        if not isinstance(n, signal.Signals):  # also refuses SIG_IGN, SIGRTMIN and the like
            raise UsageError(f"invalid signal: {sig}", hint="give a name such as TERM or KILL, or a number")
    if not 1 <= n <= signal.SIGRTMAX:
        raise UsageError(f"invalid signal: {sig}", hint=f"signal numbers are 1 to {int(signal.SIGRTMAX)}")
    return int(n)


def _poll(fn, timeout, interval=0.02):
    """Call fn() until it returns something true or `timeout` seconds (None: forever) pass."""
    import time
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if deadline is not None and time.monotonic() >= deadline:
            return v
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


def _gone_or_stopped(store, rec):
    """The fresh record once it no longer runs (or `True` once it was removed), else None."""
    now = store.load(rec.id)
    if now is None:
        return True
    if now.status not in _state.ACTIVE:
        return now
    if now.status == "running" and not _state.pid_alive(now.state.get("Pid"), now.state.get("PidStart")):
        return now  # ended; its supervisor (e.g. a Python process holding a named sandbox) reaps it later
    return None


def _settled(store_, rec, grace=2.0):
    """The record once its supervisor has written the exit down: `docker stop` returns with the
    container exited, and a monitor does that moments after the process dies.  A supervisor that
    reaps later (a Python program holding a named sandbox, when it next polls) is not waited for
    past `grace` seconds."""
    def recorded():
        now = store_.load(rec.id)
        return True if now is None else (now.status not in _state.ACTIVE)
    _poll(recorded, grace, interval=0.005)
    return store_.load(rec.id) or rec


def _released(rec, timeout):
    """Wait until the container's supervisor lets go of it.  One that outlives its process
    (a Python program holding a named sandbox reaps it when it next polls) is not waited for
    once the process has been dead for a while: the record goes, its supervisor finds it gone."""
    import time
    deadline = time.monotonic() + timeout
    dead_since = None
    while rec.supervised():
        now = time.monotonic()
        if rec.status == "running" and not _state.pid_alive(rec.state.get("Pid"), rec.state.get("PidStart")):
            dead_since = dead_since or now
            if now - dead_since >= 2:
                return True
        if now >= deadline:
            return False
        time.sleep(0.02)
    return True


def _send(rec, sig):
    return _state.signal_checked(rec.state.get("Pid"), rec.state.get("PidStart"), sig)


def container_cgroup(rec):
    """The cgroup leaf (cgroups.v2.Cgroup) of the container's current run, or None: it has none
    (this machine delegates no cgroup v2 subtree) or the run is over.  Nothing is imported for
    a container without one."""
    path = rec.state.get("CgroupPath")
    if not path or os.path.basename(path) != f"sbx-{rec.id[:12]}":
        return None
    from ..cgroups import v2
    return v2.Cgroup.existing(path)


def _kill_all(store_, rec):
    """SIGKILL the whole container: its leaf's cgroup.kill (forks and processes that left the
    main one's tree included), else its main process (its pid namespace goes with it).  A
    paused container is thawed after (its processes die frozen or not; the status is then
    running until its supervisor records the exit).  False when nothing was running."""
    cg = container_cgroup(rec)
    killed = False
    if cg is not None:
        killed = bool(cg.pids())
        cg.kill()
    killed = _send(rec, 9) or killed
    if rec.status == "paused":
        _thawed(store_, rec, cg)
    return killed


def _thawed(store_, rec, cg):
    """Thaw a paused container's leaf and record it running (Docker unpauses a paused container
    it kills or stops)."""
    if cg is not None:
        try:
            cg.thaw()
        except Exception:  # emptied and removed meanwhile
            pass
    try:
        _mark_running(store_, rec)
    except _state.NoSuchContainer:
        pass


def _mark_running(store_, rec):
    def mark(doc):
        if doc["State"]["Status"] == "paused":
            doc["State"]["Status"] = "running"
    return store_.update(rec, mark)


# --- the verbs -------------------------------------------------------------------------------------

def stop(where, ref, timeout=None):
    """`docker stop`: StopSignal (the record's: --stop-signal or the image's STOPSIGNAL), then
    SIGKILL after `timeout` seconds (default: --stop-timeout, else 10).  StopRequested keeps a
    restart policy from starting it again.  A container that does not run: nothing to do."""
    store_ = store(where)
    rec = store_.get(ref)
    if rec.status not in _state.ACTIVE:
        return rec
    sig = signal_number(rec.config.get("StopSignal") or "SIGTERM")
    if timeout is None:
        timeout = rec.config.get("StopTimeout")
        timeout = 10 if timeout is None else timeout

    def mark(doc):
        doc["State"]["StopRequested"] = True
    try:
        rec = store_.update(rec, mark)
    except _state.NoSuchContainer:
        return rec
    if rec.status == "restarting":
        _state.signal_checked(rec.state.get("MonitorPid"), None, 15)  # ends its back-off
    else:
        sent = _send(rec, sig)
        if rec.status == "paused":  # Docker's: the stop signal is delivered once it is thawed
            _thawed(store_, rec, container_cgroup(rec))
        if sent and (timeout is None or timeout < 0 or timeout > 0):
            if _poll(lambda: _gone_or_stopped(store_, rec), None if timeout is None or timeout < 0 else timeout):
                return _settled(store_, rec)
    _kill_all(store_, rec)
    done = _poll(lambda: _gone_or_stopped(store_, rec), 30)
    if not done:
        raise _state.ContainerError(f"container {rec.name} did not stop", hint="try again, or 'sbx rm -f'")
    return _settled(store_, rec)


def kill(where, ref, sig="KILL"):
    """`docker kill`: one signal to the container's main process; SIGKILL kills the whole
    container (its cgroup's cgroup.kill, when it has one).  A paused container is thawed after
    SIGKILL or its stop signal (Docker's rule), so it acts on them."""
    store_ = store(where)
    n = signal_number(sig)
    rec = store_.get(ref)
    _state.transition(rec, "kill")
    if n == 9:
        sent = _kill_all(store_, rec)
    else:
        sent = _send(rec, n)
        if sent and rec.status == "paused" and n == signal_number(rec.config.get("StopSignal") or "SIGTERM"):
            _thawed(store_, rec, container_cgroup(rec))
    if not sent:
        fresh = store_.load(rec.id) or rec
        raise _state.StateError("kill", rec.name, fresh.status if fresh.status not in _state.ACTIVE else "exited")
    journal.append(store_, "kill", rec, signal=n)
    return rec


def remove(where, ref, force=False):
    """`docker rm [-f]`: a running container only with `force` (killed first)."""
    store_ = store(where)
    rec = store_.get(ref)
    if rec.status in _state.ACTIVE or rec.supervised():
        if not force:
            _state.transition(rec, "remove")
        try:
            rec = store_.update(rec, lambda doc: doc["State"].update(StopRequested=True))
        except _state.NoSuchContainer:
            return rec
        _kill_all(store_, rec)
        if rec.status == "restarting":
            _state.signal_checked(rec.state.get("MonitorPid"), None, 15)
        if not _released(rec, 30):
            raise _state.ContainerError(f"container {rec.name} did not stop", hint="try again")

    def mark(doc):
        status = _effective(doc, rec.dir)
        if status == "removing" and rec.supervised():
            raise _state.ContainerError(f"removal of container {rec.name} is already in progress")
        if status in _state.ACTIVE and not (force and not _state.pid_alive(doc["State"].get("Pid"),
                                                                         doc["State"].get("PidStart"))):
            # started again meanwhile (a dead process whose supervisor holds on: see _released)
            raise _state.StateError("remove", rec.name, status,
                                    hint=f"stop it first ('sbx stop {rec.name}'), or force it ('sbx rm -f {rec.name}')")
        doc["State"]["Status"] = "removing"
    try:
        rec = store_.update(rec, mark, sync=False)
    except _state.NoSuchContainer:
        if force:
            return rec
        raise
    store_.remove_dir(rec)
    return rec


def rename(where, ref, new):
    store_ = store(where)
    rec = store_.get(ref)
    _state.transition(rec, "rename")
    return store_.rename(rec, new)


def _waiters_read(rec, timeout=2.0):
    """Before an AutoRemove container's record goes: let each `wait` watching it read its exit
    code (each holds wait.lock shared until it has), as Docker's daemon tells its waiters before
    it removes.  A waiter that does not poll is not waited for past `timeout`."""
    import fcntl
    try:
        fd = os.open(rec.path(_state.WAIT_LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nobody waits
    try:
        _poll(lambda: _try_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB), timeout, interval=0.005)
    finally:
        os.close(fd)


def _try_flock(fd, how):
    import fcntl
    try:
        fcntl.flock(fd, how)
        return True
    except BlockingIOError:
        return False


def wait(where, ref, condition="not-running"):
    """`docker wait`: block until the container stops (`not-running`), its next exit
    (`next-exit`) or its removal (`removed`); returns its exit code.  wait.lock, held shared
    until the exit code is read, keeps an AutoRemove container's record until then."""
    import fcntl
    if condition not in ("not-running", "next-exit", "removed"):
        raise _state.ContainerError(f"invalid condition: {condition!r}", hint="not-running, next-exit or removed")
    store_ = store(where)
    rec = store_.get(ref)
    try:  # not flocks.hold: that would make the directory again if it was just removed
        lock = [os.open(rec.path(_state.WAIT_LOCK), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)]
        fcntl.flock(lock[0], fcntl.LOCK_SH)
    except FileNotFoundError:
        lock = [-1]
    last = [rec.state.get("ExitCode", 0)]
    started = rec.state.get("StartedAt")
    finished = rec.state.get("FinishedAt")

    def read(now):
        last[0] = now.state.get("ExitCode", 0)
        if lock[0] >= 0 and now.status not in _state.ACTIVE:  # read: the record may go now
            os.close(lock[0])
            lock[0] = -1

    def done():
        now = store_.load(rec.id)
        if now is None:
            return True
        if condition == "next-exit" and now.state.get("FinishedAt") == finished \
                and now.state.get("StartedAt") == started:
            return False  # still the run that was going when the wait began
        read(now)
        if condition == "removed":
            return False
        return now.status not in _state.ACTIVE
    try:
        _poll(done, None, interval=0.05)
    finally:
        if lock[0] >= 0:
            os.close(lock[0])
    return last[0]


def inspect(where, ref):
    from .inspect import container_doc
    return container_doc(store(where).get(ref))


def create(where, opts, image=None, foreground=False):
    """`docker create`: the record of a new container for the RunOptions `opts` (status
    created, no process).  `image`: the ImageRoot prepared for `opts.image` (the caller pulls,
    with its own progress display).  Name conflicts and bad names are ContainerErrors that
    `run`/`create` report with exit 125."""
    from ..runtime import spec as _spec
    store_ = store(where)
    spec = _spec.from_options(opts, image=image, container_id=os.urandom(32).hex())
    if image is not None:
        cmd = list(opts.argv)
    else:
        cmd = ([opts.entrypoint] if opts.entrypoint else []) + list(opts.argv) if opts.entrypoint is not None \
            else list(opts.argv)
    try:
        return new_container(store_, spec, name=opts.name, image=image.ref if image is not None else None,
                             command=cmd, auto_remove=opts.auto_remove, foreground=foreground,
                             labels=opts.labels, restart=(opts.restart.name, opts.restart.max_retries),
                             stop_signal=opts.stop_signal, stop_timeout=opts.stop_timeout,
                             open_stdin=opts.interactive)
    except _state.ContainerError as e:
        e.exit_code = 125  # docker run/create: everything before the command runs
        raise


def start(where, ref, runtime_root=None):
    """`docker start` without -a: the monitor runs the container in the background.  A running
    container: nothing to do (Docker's rule).  Raises the launch error, the container kept."""
    store_ = store(where)
    rec = store_.get(ref)
    if rec.status == "running" and not _state.pid_alive(rec.state.get("Pid"), rec.state.get("PidStart")):
        # It has just ended (a stop returns then); its supervisor is recording that: let it finish.
        _poll(lambda: not rec.supervised(), 30)
        rec = store_.get(rec.id)
    if rec.status in _state.ACTIVE:
        return rec
    _state.transition(rec, "start")

    def clear(doc):
        status = _effective(doc, rec.dir)
        if status not in ("created", "exited", "dead"):
            raise _state.StateError("start", rec.name, status)
        doc["State"]["StopRequested"] = False
    rec = store_.update(rec, clear)
    if runtime_root is None:
        from .. import config
        runtime_root = config.current().runtime_root
    from . import monitor
    monitor.spawn(store_, rec, runtime_root)
    return store_.load(rec.id) or rec


def run_detached(where, rec, runtime_root=None):
    """The start of a new container made by `docker run -d`: a failed launch removes it when it
    is --rm (Docker keeps the others, created, with the error recorded)."""
    store_ = store(where)
    try:
        return start(store_, rec.id, runtime_root)
    except BaseException:
        if rec.auto_remove:
            try:
                store_.remove_dir(store_.load(rec.id) or rec)
            except Exception:
                pass
        raise


def run_foreground(where, rec, interactive=False, terminal=False):
    """Run a stored container in this process (foreground `sbx run`, `start -a`): the terminal
    relayed with a tty, signals forwarded, the state recorded; returns Docker's exit code.
    Its output goes to our stdout/stderr and is appended to its log, as Docker's (a tty's as
    stdout); a foreground --rm run, gone at its end, keeps our fds and has no log."""
    from ..errors import SandboxError
    store_ = store(where)
    private = rec.auto_remove  # a foreground --rm run: no fsync, removed at the end
    sup = Supervision(store_, rec, sync=not private)
    hooks = ()
    log = None
    try:
        if not private:
            from . import logs
            log = logs.Writer(rec.path(logs.LOG))
        try:
            hooks = launch_hooks(rec.spec)
            code = _run(rec.spec, interactive, terminal, hooks,
                        on_start=lambda pid, network=None: sup.started(pid, network, cgroup=leaf_path(hooks)),
                        log=log, name=rec.name)
        except SandboxError as e:
            if not private:
                sup.exited(e.exit_code, error=str(e))
            raise
        if not private:
            sup.exited(code, oom_killed=oom_killed(hooks))
        else:  # its record is not rewritten: the journal alone says how it ended
            journal.append(store_, "die", rec, exitCode=code)
            network_events(store_, rec, "disconnect", rec.doc.get("NetworkSettings"))
            volume_events(store_, rec, "unmount")
        return code
    finally:
        if log is not None:
            log.close()
        sup.release()


#: cgroup2 mounted here, and only there, makes a machine whose containers may get a cgroup
#: without limits: one stat on every run, nothing imported where it is missing (v1, hybrid)
UNIFIED = "/sys/fs/cgroup/cgroup.controllers"


def cgroup_hooks(spec):
    """The launch hooks of a container (issue 10): its cgroup leaf, with its limits, and where
    this machine delegates a cgroup v2 subtree with a freezer, without limits too (pause and
    cgroup.kill work on every container there, as Docker's)."""
    if not spec.get("sbx", {}).get("resources") and not os.path.exists(UNIFIED):
        return ()
    from ..cgroups import v2
    return v2.hooks_for(spec, leaf=True)


def network_hooks(spec):
    """The launch hooks of a container's network (issue 11: slirp4netns, pasta, a user-defined
    network); nothing is imported for none and host."""
    if (spec.get("sbx", {}).get("network") or {}).get("mode", "none") in ("none", "host"):
        return ()
    from ..network import hooks
    return hooks.hooks_for(spec, find_container=_running)


def _running(ref):
    """(pid, spec) of the running container `ref` (for --network container:REF)."""
    rec = store(None).get(ref)
    pid = rec.state.get("Pid")
    if rec.status not in ("running", "paused") or not _state.pid_alive(pid, rec.state.get("PidStart")):
        from ..errors import SandboxError  # exit 125: the run fails before its command
        raise SandboxError(f"cannot join the network of container {rec.name}: it is not running",
                           hint=f"start it first: sbx start {rec.name}")
    return pid, rec.spec


def launch_hooks(spec):
    """Every hook a container's launch needs: its cgroup leaf, then its network."""
    return cgroup_hooks(spec) + network_hooks(spec)


def network_settings(hooks):
    """The NetworkSettings the attached network hook reports (for Supervision.started), or None."""
    return next((h.settings for h in hooks if getattr(h, "settings", None) is not None), None)


def leaf_path(hooks):
    """The path of the cgroup leaf the hooks made for the run just launched, or None."""
    for h in hooks:
        cg = getattr(h, "cgroup", None)
        if h.name == "cgroup" and cg is not None:
            return cg.path
    return None


def oom_killed(hooks):
    """Did the OOM killer kill in the run just ended (read by the cgroup hook's teardown)?"""
    return any(getattr(h, "oom_kills", 0) for h in hooks)


def _run(spec, interactive, tty, hooks=(), on_start=None, log=None, name=""):
    """Launch in the foreground and supervise to the end; returns Docker's exit code.  `log`: a
    logs.Writer the output is appended to as well (the container's stdout and stderr are then
    pipes we relay); without, the container has our fds."""
    from ..runtime import process
    from ..runtime.process import SandboxProcess
    record = None if log is None else log.write
    if tty:
        p = SandboxProcess.launch(spec, terminal=True, console_size=process.terminal_size(0), hooks=hooks)
        try:
            if on_start is not None:
                on_start(p.pid, network=network_settings(hooks))
            # No detach keys: a foreground sandbox has no other supervisor to detach to.
            code = p.relay_pty(stdin_fd=0 if interactive else -1, stdout_fd=1, detach_keys=None, log=record)
            _relay_warning(p, name)
            return code
        finally:
            p.close()
    stdio = [-1, -1, -1]
    if not interactive:
        stdio[0] = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    pipes = ()
    try:
        if record is not None:
            out_r, stdio[1] = os.pipe2(os.O_CLOEXEC)
            pipes += ((out_r, 1, "stdout"),)
            err_r, stdio[2] = os.pipe2(os.O_CLOEXEC)
            pipes += ((err_r, 2, "stderr"),)
        # The forwarded signals are held from before the launch (launch's default): one that
        # arrives meanwhile reaches the sandbox instead of killing sbx.
        p = SandboxProcess.launch(spec, stdio=tuple(stdio), hooks=hooks)
    except BaseException:
        for r, _, _ in pipes:
            os.close(r)
        raise
    finally:
        for fd in stdio:
            if fd >= 0:
                os.close(fd)
    try:
        if pipes:
            p.pump(pipes, record)  # before the start is recorded: its output flows at once
        if on_start is not None:
            on_start(p.pid, network=network_settings(hooks))
        code = p.wait()
        _relay_warning(p, name)
        return code
    finally:
        p.close()


def _relay_warning(p, name):
    if p.relay_error is not None:
        os.write(2, f"sbx: warning: the log of container {name} is incomplete: {p.relay_error}\n".encode())


def restart(where, ref, timeout=None, runtime_root=None):
    """`docker restart`: stop (as `stop -t`), then start in the background."""
    store_ = store(where)
    rec = store_.get(ref)
    _state.transition(rec, "restart")
    stop(store_, rec.id, timeout=timeout)
    return start(store_, rec.id, runtime_root)


def pause(where, ref):
    """`docker pause`: freeze every process of the container (its leaf's cgroup.freeze, once
    the kernel says `frozen 1`), status paused.  Without a cgroup freezer: refused (exit 125,
    why and how to get one), never a silent no-op or a SIGSTOP."""
    store_, rec, cg = _freezer(where, ref, "pause")
    cg.freeze()

    def mark(doc):
        status = _effective(doc, rec.dir)
        if status != "running" or doc["State"].get("CgroupPath") != cg.path:
            raise _state.StateError("pause", rec.name, status if status != "running" else "restarted")
        doc["State"]["Status"] = "paused"
    try:
        rec = store_.update(rec, mark)
    except BaseException:
        try:
            cg.thaw()
        except Exception:
            pass
        raise
    journal.append(store_, "pause", rec)
    return rec


def unpause(where, ref):
    """`docker unpause`: thaw a paused container, status running."""
    store_, rec, cg = _freezer(where, ref, "unpause")
    cg.thaw()
    rec = _mark_running(store_, rec)
    journal.append(store_, "unpause", rec)
    return rec


def _freezer(where, ref, verb):
    """(store, record, the leaf whose cgroup.freeze pauses it) once the state table allows
    `verb`, or the CgroupError saying why there is no freezer."""
    store_ = store(where)
    rec = store_.get(ref)
    _state.transition(rec, verb)
    cg = container_cgroup(rec)
    if cg is not None:
        return store_, rec, cg
    from ..cgroups import v2
    err = v2.pause_refusal(v2.probe())
    if err is None:
        if rec.status == "paused":  # its leaf is gone: the run it froze is over
            raise _state.StateError(verb, rec.name, "exited")
        err = v2.CgroupError("it has no cgroup: it was started without one (by a Python program holding a "
                             "named sandbox, or before this machine delegated a cgroup v2 subtree)",
                             hint=f"restart it ('sbx restart {rec.name}') to give it a cgroup")
    err.msg = f"cannot {verb} container {rec.name}: {err.msg}"
    err.args = (err.msg,)
    raise err


def exec(where, ref, xopts, stdio=(-1, -1, -1), console_size=None, exec_id=None):
    """`docker exec`: one more process in the running container `ref` (ExecOptions `xopts`);
    returns its SandboxProcess (the caller waits or relays its pty).  A paused or stopped
    container is refused with its state named.  Journalled as Docker's exec_create and
    exec_start ("exec_start: CMD"), and exec_die with its exitCode once it is reaped;
    `exec_id`: the Docker API's exec instance (else a new id)."""
    store_ = store(where)
    rec = store_.get(ref)
    _state.transition(rec, "exec")
    eid = exec_id or os.urandom(32).hex()
    cmd = " ".join(xopts.argv)
    journal.append(store_, f"exec_create: {cmd}", rec, execID=eid)
    p = _exec_launch(rec, xopts, stdio, console_size)
    journal.append(store_, f"exec_start: {cmd}", rec, execID=eid)
    p.add_teardown(lambda: journal.append(store_, "exec_die", rec, execID=eid, exitCode=p.returncode))
    return p


def _exec_launch(rec, xopts, stdio, console_size):
    from ..runtime import spec as _spec
    from ..runtime.process import SandboxProcess
    pid, start_ticks = rec.state.get("Pid"), rec.state.get("PidStart")
    if not pid or (start_ticks is not None and _state.pid_start(pid) != start_ticks):
        raise _state.StateError("exec", rec.name, "exited")  # it ended since the record was read
    spec = _spec.build_exec(rec.spec, pid, list(xopts.argv), env=list(xopts.env), cwd=xopts.cwd, user=xopts.user,
                            terminal=xopts.terminal)
    hooks = ()
    leaf = container_cgroup(rec)
    if leaf is not None:  # the new process joins the container's cgroup (its limits, pause, kill)
        from ..cgroups import v2
        hooks = (v2.JoinHook(leaf),)
    if xopts.terminal:
        return SandboxProcess.launch(spec, terminal=True, console_size=console_size, hooks=hooks)
    return SandboxProcess.launch(spec, stdio=stdio, hooks=hooks)
