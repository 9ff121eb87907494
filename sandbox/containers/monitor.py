"""The detached supervisor: `python -m sandbox.containers.monitor DATA_ROOT RUNTIME_ROOT ID`, with
the report pipe on fd 3.

`spawn()` starts it with posix_spawn (vfork + exec: never a fork of the caller, which may be a
multi-threaded server) in a session of its own; it forks once more and the first process exits
at once, so the caller reaps it straight away and a long-lived caller collects no zombies.  The
store is named in argv: nothing comes from the caller's environment but PATH and the locale.

The monitor holds the container's monitor.lock for as long as it supervises, reports `ok` (or
the launch error, message and hint) on fd 3, writes the container's output to its CRI log
(logs.py), serves attach.sock (attach.py: output to attached clients, their input to the
container's stdin or pty), carries out the restart policy with Docker's back-off (100 ms,
doubling, back to 100 ms after 10 s of uptime, at most a minute; status "restarting" between
runs; a SIGTERM to the monitor stops the container with its stop signal and ends the policy),
removes an AutoRemove container at the end, and logs its own failures to
<dir>/monitor.log.  Launch hooks' teardowns are the process supervisor's (runtime/process.py);
they run when each run of the container is reaped.  The container dies with the monitor: the
launcher's parent-death signal is set on it."""
import os
import sys
import time

from . import state as _state
from ..runtime import diaglog

REPORT_FD = 3
HANDOFF_FD = 4  # a spare's: the id of the container it is handed
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0


# --- the caller's side -----------------------------------------------------------------------------

def _spawn_process(argv_tail, extra_fds=()):
    """posix_spawn `python -m sandbox.containers.monitor ARGV_TAIL...` in a session of its own
    with a report pipe on fd 3 (and `extra_fds`: (fd, target) pairs), reap the first process
    (it forks the monitor and leaves) and return the report pipe's read end."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        import sandbox
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sandbox.__file__)))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
        env["PYTHONPATH"] = pkg_parent
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2),
                   (os.POSIX_SPAWN_DUP2, w, REPORT_FD)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in extra_fds]
        argv = [sys.executable, "-m", "sandbox.containers.monitor", *argv_tail]
        pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    os.waitpid(pid, 0)  # the first process leaves once it forked the monitor
    return r


class Spare:
    """A monitor started ahead, its imports done, waiting on its hand-off pipe (fd 4) for the id
    of the container it is to supervise; it ends at EOF (the service closed the pipe or died)."""

    def __init__(self, data_root, runtime_root):
        self.roots = (data_root, runtime_root)
        hr, self.hand = os.pipe2(os.O_CLOEXEC)
        try:
            self.report = _spawn_process(["--spare", data_root, runtime_root, str(os.getpid())],
                                         extra_fds=[(hr, HANDOFF_FD)])
        except BaseException:
            os.close(self.hand)
            raise
        finally:
            os.close(hr)

    def take(self, cid):
        """Hand it `cid`: its report pipe, or None when it is gone (the caller spawns afresh)."""
        try:
            os.write(self.hand, cid.encode() + b"\n")
        except OSError:
            os.close(self.report)
            return None
        finally:
            os.close(self.hand)
        return self.report

    def close(self):
        for fd in (self.hand, self.report):
            try:
                os.close(fd)
            except OSError:
                pass


class Spares:
    """The Docker API service keeps one spare monitor, so an API start does not wait for a
    Python start-up and the monitor's imports (about 20-30 ms, far more on a loaded machine):
    `spawn` hands the next container of the same store to it and a thread starts the next one.
    No container state lives here: a spare knows nothing until it is handed an id."""

    def __init__(self, data_root, runtime_root):
        import threading
        self.roots = (data_root, runtime_root)
        self.lock = threading.Lock()
        self.spare = None
        self.closed = False
        self.refill()

    def refill(self):
        import threading
        threading.Thread(target=self._make, name="sbx spare monitor", daemon=True).start()

    def _make(self):
        try:
            s = Spare(*self.roots)
        except OSError:
            return  # no spare: the next start spawns its monitor afresh, as the CLI does
        with self.lock:
            if self.spare is None and not self.closed:
                self.spare, s = s, None
        if s is not None:
            s.close()

    def take(self, store, cid, runtime_root):
        """The report pipe of the spare now supervising `cid`, or None (no spare, another store)."""
        if (store.data_root, runtime_root) != self.roots:
            return None
        with self.lock:
            s, self.spare = self.spare, None
        if s is None:
            return None
        self.refill()
        return s.take(cid)

    def close(self):
        global _spares
        if _spares is self:
            _spares = None
        with self.lock:
            self.closed = True
            s, self.spare = self.spare, None
        if s is not None:
            s.close()


_spares = None  # set by the Docker API service (keep_spares); None in every other process


def keep_spares(data_root, runtime_root):
    """From now on this process keeps a spare monitor for the store `data_root` (the service)."""
    global _spares
    _spares = Spares(data_root, runtime_root)
    return _spares


def spawn(store, rec, runtime_root):
    """Start a monitor for `rec` (a spare one when this process keeps one) and wait for its
    report: None once the container runs, else raises the launch error (a SandboxError with the
    launcher's message and hint)."""
    from ..errors import SandboxError
    r = _spares.take(store, rec.id, runtime_root) if _spares is not None else None
    if r is None:
        r = _spawn_process([store.data_root, runtime_root, rec.id])
    try:
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    reply = b"".join(chunks).decode(errors="replace")
    if reply.startswith("ok"):
        return None
    kind, _, rest = reply.partition("\0")
    msg, _, rest = rest.partition("\0")
    hint, _, code = rest.partition("\0")
    err = SandboxError(msg or f"the monitor of container {rec.name} failed before it started it "
                              f"(see {rec.path('monitor.log')})", hint=hint or None)
    if code.isdigit():
        err.exit_code = int(code)
    raise err


# --- the monitor ------------------------------------------------------------------------------------

def _log(rec_dir, msg):
    diaglog.append(os.path.join(rec_dir, "monitor.log"), msg)


class Monitor:
    def __init__(self, store, rec, report_fd):
        self.store, self.rec, self.report_fd = store, rec, report_fd
        self.sup = None
        self.stop = False  # SIGTERM: the back-off ends (stop/rm of a restarting container)
        self.clients = []  # attach.Client
        self.listener = None
        self.stdin_w = -1  # the container's stdin pipe (OpenStdin without a tty)
        self.pty = -1  # the pty master (Tty), ours from the launch on
        self.wake_r = -1  # the signal wake-up pipe

    # reporting
    def report(self, data):
        if self.report_fd >= 0:
            try:
                os.write(self.report_fd, data)
            except OSError:
                pass
            os.close(self.report_fd)
            self.report_fd = -1

    def report_error(self, e):
        code = getattr(e, "exit_code", 125)
        self.report(f"E\0{e}\0{getattr(e, 'hint', None) or ''}\0{code}".encode())

    # the runs
    def run(self):
        from .lifecycle import Supervision
        from . import logs
        try:
            self.sup = Supervision(self.store, self.rec)
        except _state.ContainerError as e:
            self.report_error(e)
            return
        self.log = logs.Writer(self.rec.path(logs.LOG))
        self._listen()
        backoff = BACKOFF_START
        try:
            while True:
                t0 = time.monotonic()
                code = self._one_run()
                if code is None:  # the launch failed: reported, recorded
                    return
                ran = time.monotonic() - t0
                rec = self.store.load(self.rec.id)
                if rec is None:  # removed (rm -f): nothing to restart, nothing to record
                    return
                self.sup.rec = rec
                if not self._should_restart(rec, code):
                    return
                backoff = BACKOFF_START if ran >= BACKOFF_RESET_AFTER else backoff
                try:
                    self.sup.restarting()
                    if not self._sleep(backoff):
                        self.sup.exited(code)
                        return
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    # A stop that came after the exit was read (while the status still said
                    # running) is seen here, under the record's lock, before the next launch.
                    stopped = []

                    def count(d):
                        if d["State"].get("StopRequested"):
                            stopped.append(True)
                        else:
                            d["State"]["RestartCount"] = d["State"].get("RestartCount", 0) + 1
                    self.sup.rec = self.store.update(self.sup.rec, count)
                    if stopped or self.stop:
                        self.sup.exited(code)
                        return
                except _state.NoSuchContainer:
                    return  # removed during the back-off
        finally:
            self._close_clients()
            if self.listener is not None:
                self.listener.close()
                try:
                    os.unlink(self.rec.path("attach.sock"))
                except OSError:
                    pass
            self.log.close()
            self.sup.release()

    def _should_restart(self, rec, code):
        st = rec.state
        if st.get("StopRequested") or self.stop:
            return False
        policy = rec.host_config.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure" and code != 0:
            limit = int(policy.get("MaximumRetryCount") or 0)
            return limit == 0 or st.get("RestartCount", 0) < limit
        return False

    def _sleep(self, seconds):
        """The back-off, ended early by SIGTERM (False then); attach clients are served meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._poll_once([], left)
        return False

    def _one_run(self):
        """Launch, relay until the container exits, record the exit: its code, or None when the
        launch failed (reported to the caller, or logged on a restart)."""
        from ..runtime.process import SandboxProcess
        from .lifecycle import launch_hooks, leaf_path, network_settings, oom_killed
        rec = self.sup.rec
        cfg = rec.config
        tty = bool(cfg.get("Tty"))
        fds = []
        try:
            hooks = launch_hooks(rec.spec)
            if tty:
                p = SandboxProcess.launch(rec.spec, terminal=True, console_size=self._size, hold=(), hooks=hooks)
                self.pty, p.pty_master = p.pty_master, -1
                os.set_blocking(self.pty, False)
                outs = {self.pty: "stdout"}
            else:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                fds.append(null)
                stdin = null
                if cfg.get("OpenStdin"):
                    stdin, self.stdin_w = os.pipe2(os.O_CLOEXEC)
                    fds.append(stdin)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                fds += [out_w, err_w]
                try:
                    p = SandboxProcess.launch(rec.spec, stdio=(stdin, out_w, err_w), hold=(), hooks=hooks)
                except BaseException:
                    for fd in (out_r, err_r, self.stdin_w):
                        if fd >= 0:
                            os.close(fd)
                    self.stdin_w = -1
                    raise
                outs = {out_r: "stdout", err_r: "stderr"}
        except Exception as e:
            for fd in fds:
                os.close(fd)
            code = getattr(e, "exit_code", 125)
            if self.report_fd >= 0:
                self.report_error(e)
                self.sup.exited(code, error=str(e))
            else:  # a restart that failed to launch: Docker records it and stops trying
                _log(self.rec.dir, f"restart failed: {e}")
                self.sup.exited(code, error=str(e))
            return None
        for fd in fds:
            os.close(fd)
        try:
            self.sup.started(p.pid, network=network_settings(hooks), cgroup=leaf_path(hooks))
        except BaseException as e:
            p.close()
            self.report_error(e)
            return None
        self.report(b"ok")
        try:
            for fd in outs:
                os.set_blocking(fd, False)
            stopping = False
            while outs:
                self._poll_once(outs, None, pidfd=p.pidfd)
                if self.stop and not stopping:  # SIGTERM to the monitor: stop the container, as `sbx stop`
                    stopping = True
                    from .lifecycle import signal_number
                    p.send_signal(signal_number(cfg.get("StopSignal") or "SIGTERM"))
                    self._thaw(hooks)  # a paused one acts on it once thawed
                if p.poll() is not None:
                    self._drain(outs)
                    break
            code = p.wait(forward=())
        finally:
            for fd in outs:
                os.close(fd)
            self.pty = -1
            if self.stdin_w >= 0:
                os.close(self.stdin_w)
                self.stdin_w = -1
            p.close()
        # --rm never restarts (refused with --restart); the cgroup hook's teardown (at the reap)
        # read the OOM killer's count before it removed the leaf
        self.sup.exited(code, removing=rec.auto_remove, oom_killed=oom_killed(hooks))
        return code

    def _thaw(self, hooks):
        for h in hooks:
            cg = getattr(h, "cgroup", None)
            if cg is not None:
                try:
                    cg.thaw()
                except Exception as e:
                    _log(self.rec.dir, f"cannot thaw {cg.path}: {e}")

    _size = (24, 80)

    # the event loop
    def _poll_once(self, outs, timeout, pidfd=-1):
        import select
        poller = select.poll()
        for fd in outs:
            poller.register(fd, select.POLLIN)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        if self.listener is not None:
            poller.register(self.listener.fileno(), select.POLLIN)
        if self.wake_r >= 0:
            poller.register(self.wake_r, select.POLLIN)
        for c in self.clients:
            if c.reading:
                poller.register(c.sock.fileno(), select.POLLIN)
        try:
            events = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        except InterruptedError:
            return
        for fd, _ev in events:
            if fd in outs:
                self._read_output(fd, outs)
            elif self.listener is not None and fd == self.listener.fileno():
                self._accept()
            elif fd == self.wake_r:
                try:
                    os.read(self.wake_r, 512)
                except BlockingIOError:
                    pass
            else:
                c = next((c for c in self.clients if c.sock.fileno() == fd), None)
                if c is not None:
                    self._client_input(c)

    def _read_output(self, fd, outs):
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last holder closed it
            data = b""
        if not data:
            os.close(fd)
            del outs[fd]
            if fd == self.pty:
                self.pty = -2  # closed
            return
        stream = outs[fd]
        self.log.write(stream, data)
        for c in list(self.clients):
            if not c.send(stream, data, tty=fd == self.pty):
                self._drop(c)

    def _drain(self, outs):
        for fd in list(outs):
            while fd in outs:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self.log.write(outs[fd], data)
                for c in list(self.clients):
                    if not c.send(outs[fd], data, tty=fd == self.pty):
                        self._drop(c)

    # attach
    def _listen(self):
        from . import attach
        try:
            self.listener = attach.listen(self.rec.dir)
        except OSError as e:
            _log(self.rec.dir, f"cannot serve attach: {e}")
            self.listener = None

    def _accept(self):
        from . import attach
        try:
            c = attach.accept(self.listener)
        except OSError:
            return
        if c is None:
            return
        if c.resize is not None:
            if self.pty >= 0:
                attach.set_winsize(self.pty, c.resize)
            self._size = c.resize
            c.close()
            return
        self.clients.append(c)

    def _client_input(self, c):
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if not c.stdin or self.rec.config.get("Tty"):
                self._drop(c)  # gone (a terminal client never half-closes: it detached)
                return
            # The client's stdin ended; it still reads the output (a half-closed socket).
            c.reading = False
            if self.stdin_w >= 0:
                os.close(self.stdin_w)  # so does the container's
                self.stdin_w = -1
            return
        if not c.stdin:
            return
        target = self.pty if self.pty >= 0 else self.stdin_w
        if target < 0:
            return
        try:
            _write_all(target, data)
        except OSError:
            pass

    def _drop(self, c):
        if c in self.clients:
            self.clients.remove(c)
        c.close()

    def _close_clients(self):
        for c in list(self.clients):
            self._drop(c)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            import select
            select.select([], [fd], [], 1)


def _warm():
    """A spare's imports: the modules a monitor's supervision and a launch use, loaded before
    it is handed a container."""
    import importlib
    for name in ("json", "pwd", "select", "signal", "traceback"):
        importlib.import_module(name)
    for name in ("config", "containers.store", "containers.lifecycle", "containers.logs",
                 "containers.attach", "runtime.process", "runtime.launch", "runtime.hooks",
                 "runtime.idmap", "runtime.keeper", "runtime.overlay", "runtime.plan",
                 "runtime.seccomp", "runtime.spec", "network.hooks", "network.ports", "network.slirp"):
        importlib.import_module("sandbox." + name)


def _handed(service_pid):
    """A spare waits for the id it is handed; None at EOF or when the service is gone."""
    import select
    try:
        pidfd = os.pidfd_open(service_pid)
    except OSError:
        return None
    try:
        poller = select.poll()
        poller.register(HANDOFF_FD, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        while True:
            try:
                ready = dict(poller.poll())
            except InterruptedError:
                continue
            if HANDOFF_FD in ready:
                line = os.read(HANDOFF_FD, 256).decode(errors="replace")
                return line.strip() or None  # (one write of a short line: read whole)
            if pidfd in ready:
                return None
    finally:
        os.close(pidfd)
        os.close(HANDOFF_FD)


def main(argv):
    spare = argv[:1] == ["--spare"]
    if spare:
        data_root, runtime_root, service_pid = argv[1:]
    else:
        data_root, runtime_root, cid = argv
    # Leave the spawner at once (it reaps us): the monitor is nobody's child in its session.
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o077)
    import signal
    if spare:
        for s in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(s, signal.SIG_IGN)
        _warm()
        cid = _handed(int(service_pid))
        if cid is None or "/" in cid or cid.startswith("."):
            os._exit(0)
    from .. import config
    from .store import ContainerStore
    d = os.path.join(data_root, "containers", cid)
    mon = None
    try:
        with config.use(config.Context(data_root, runtime_root)):
            store = ContainerStore(data_root)
            rec = store.load(cid)
            if rec is None:
                os.write(REPORT_FD, f"E\0No such container: {cid}\0\0{_state.ContainerError.exit_code}".encode())
                os._exit(1)
            mon = Monitor(store, rec, REPORT_FD)
            wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

            def on_term(_sig, _frame):
                mon.stop = True
            for s in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
                signal.signal(s, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, on_term)
            signal.set_wakeup_fd(wake_w)
            mon.wake_r = wake_r
            mon.run()
    except BaseException as e:  # the monitor's own failure: to its log, and to the caller if waiting
        import traceback
        _log(d, "monitor failed: " + "".join(traceback.format_exception(e)).strip())
        if mon is not None and mon.report_fd >= 0:
            mon.report(f"E\0the monitor failed: {type(e).__name__}: {e}\0see {d}/monitor.log\0125".encode())
        elif mon is None:
            try:
                os.write(REPORT_FD, f"E\0the monitor failed: {type(e).__name__}: {e}\0\0125".encode())
            except OSError:
                pass
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
