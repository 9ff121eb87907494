"""One process supervisor for every caller that runs a sandbox: `sbx run` and `sbx exec` in the
foreground, the detached monitor, a build's RUN steps and `sandbox.Popen`.

    p = SandboxProcess.launch(spec, stdio=(0, 1, 2))
    code = p.wait()          # Docker's exit code: the status, or 128 + the signal
    p.close()

Signals: `launch` blocks the signals in `hold` (by default the ones `wait` forwards) in the
calling thread from before the clone, so one that arrives while the launch returns reaches the
sandbox instead of killing the supervisor; `wait` (or `relay_pty`) takes them from there and
restores the thread's mask when it ends.  Launch and wait from the same thread.

Teardowns (`add_teardown`, and the hooks' own) run once, in reverse order, once the process is
reaped or on `close()`.

Output: `pump(pipes, log)` copies the sandbox's stdout/stderr pipes to our own fds and to a
log while `wait` forwards signals as it always does (a kept foreground container's output
reaches both its caller and `sbx logs`); `relay_pty(log=...)` does the same for a terminal.

This module is on `sbx run`'s path: it imports nothing at top level that the plain run does
not need (termios, select and socket only for a terminal; _thread and select only for a pump)."""
import os

from . import launch as _launch

# SIGHUP SIGINT SIGQUIT SIGUSR1 SIGUSR2 SIGTERM: what a supervisor passes on to its sandbox.
FORWARD_SIGNALS = (1, 2, 3, 10, 12, 15)
SIGWINCH = 28
SIGKILL = 9
DETACH_KEYS = b"\x10\x11"  # Docker's default: ctrl-p, ctrl-q


def exit_code(status):
    """A wait status -> Docker's exit code: the exit status, or 128 + the signal."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 125


def parse_detach_keys(text):
    """Docker's --detach-keys: comma-separated keys, each a letter, `ctrl-X` (X in a-z, @, [, \\,
    ], ^, _) -> bytes.  Raises ValueError naming the key."""
    out = bytearray()
    for key in text.split(","):
        k = key.strip()
        if k.startswith("ctrl-") and len(k) == 6:
            c = k[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            special = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if c in special:
                out.append(special[c])
                continue
        elif len(k) == 1:
            out += k.encode()
            continue
        raise ValueError(f"invalid detach key {key!r}")
    return bytes(out)


class SandboxProcess:
    """A launched sandbox's PID 1 as seen from its supervisor (the launcher's child)."""

    def __init__(self, pid, pidfd=-1, *, pty_master=-1, old_mask=None):
        self.pid = pid
        self.pidfd = pidfd
        self.pty_master = pty_master
        self.status = None      # the raw wait status once reaped
        self.returncode = None  # Docker's exit code once reaped
        self._old_mask = old_mask  # the thread's signal mask before launch held some
        self._teardowns = []
        self._closed = False
        self._handle = None
        self._pump = None  # (stop pipe, done lock) while pump() copies output
        self.relay_error = None  # the first error of a `log` given to pump/relay_pty (not called after
                                # it), or of the pump itself: the output reached its reader, the log may not

    # --- launch ---------------------------------------------------------------------------------

    @classmethod
    def launch(cls, spec, *, stdio=(-1, -1, -1), keep_fds=(), terminal=False, console_size=None,
               hooks=(), wait_start=False, start_dir=None, hold=FORWARD_SIGNALS):
        """Start `spec`.  `terminal`: the process gets a pty of the sandbox's own devpts, its
        master is `pty_master` (`console_size`: (rows, cols)).  `hooks` (runtime/hooks.py) attach
        to the child before it mounts anything; their teardowns are this process's.  `wait_start`:
        the child waits just before execve until start() (or, with `start_dir`, until someone
        writes the FIFO made there).  Without hooks or wait_start it is the fast path, one call.
        `hold`: signals blocked in this thread from now until wait/relay_pty/close (see the
        module's note).  A failed launch raises LaunchError (or CommandNotFound...) with
        everything undone: the mask, the fds, the child, the hooks."""
        two_phase = bool(hooks) or wait_start
        old = None
        if hold:
            import _signal
            old = _signal.pthread_sigmask(_signal.SIG_BLOCK, hold)
        sock = None
        try:
            kw = {"stdio": stdio, "keep_fds": keep_fds}
            if terminal:
                import socket
                sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                kw.update(console_socket=sock[1].fileno(), console_size=tuple(console_size or (24, 80)))
            if two_phase:
                p = cls._create(spec, kw, hooks, wait_start, start_dir, old)
            else:
                pid, pidfd = _launch.start(spec, **kw)
                p = cls(pid, pidfd, old_mask=old)
            if terminal:
                sock[1].close()
                try:
                    _, fds, _, _ = socket.recv_fds(sock[0], 1, 1)
                    if not fds:
                        raise OSError("the sandbox sent no pty")
                except BaseException:
                    p.close()
                    raise
                p.pty_master = fds[0]
                os.set_inheritable(p.pty_master, False)
            return p
        except BaseException:
            if old is not None:
                _restore_mask(old)
            raise
        finally:
            if sock is not None:
                sock[0].close()
                sock[1].close()

    @classmethod
    def _create(cls, spec, kw, hooks, wait_start, start_dir, old):
        if start_dir is not None:
            kw["start_dir"] = start_dir
        h = _launch.create(spec, hooks=tuple(hooks), wait_start=wait_start, **kw)
        try:
            pid, pidfd = h.release()  # a failed release reaps the child and tears the hooks down
        except BaseException:
            h.abort()  # idempotent; an interrupt before the release: the child is held
            raise
        p = cls(pid, pidfd, old_mask=old)
        p._handle = h
        p._teardowns.append(h.teardown)  # the hooks', last attached first
        return p

    def start(self):
        """wait_start only: let the process exec (OCI start).  A failed exec raises LaunchError
        (CommandNotFound...); the process is gone then and the teardowns have run."""
        h = self._handle
        if h is None or not h.wait_start:
            raise ValueError("start(): the process was not launched with wait_start=True")
        self._handle_call(h.start)

    def wait_exec(self):
        """wait_start, once another process started it through `start_fifo`: return once the
        process exec'd; raise LaunchError as start() does."""
        h = self._handle
        if h is None or not h.wait_start:
            raise ValueError("wait_exec(): the process was not launched with wait_start=True")
        self._handle_call(h.wait_exec)

    def _handle_call(self, fn):
        try:
            fn()
        except BaseException as e:
            if self._handle.state == "gone":  # the launcher reaped it: the exec failed
                self._reaped((getattr(e, "exit_code", 125) & 0xFF) << 8)
            raise

    @property
    def start_fifo(self):
        """wait_start with start_dir: the FIFO any process of the user starts it through."""
        return None if self._handle is None else self._handle.start_fifo

    # --- state and signals ----------------------------------------------------------------------

    def poll(self):
        """Docker's exit code if the process has ended (it is reaped then), else None."""
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid == 0:
                return None
            self._reaped(status)
        return self.returncode

    def exited(self, status):
        """Record a wait status someone else reaped (subprocess.Popen's own wait); teardowns run."""
        if self.status is None:
            self._reaped(status)

    def send_signal(self, sig):
        """Signal the process; nothing once it is reaped (through its pidfd: never a reused pid)."""
        if self.status is not None:
            return
        if self.pidfd >= 0:
            import signal
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self):
        self.send_signal(SIGKILL)

    # --- waiting --------------------------------------------------------------------------------

    def wait(self, forward=FORWARD_SIGNALS, timeout=None):
        """Wait for the process, passing on the signals in `forward`; returns Docker's exit code.
        With `forward` the wait is the native one (no signal is lost, none interrupts it).
        Without, it is Python's: an exception while waiting (KeyboardInterrupt) kills and reaps
        the sandbox before it goes on.  `timeout` (seconds) raises subprocess.TimeoutExpired and
        leaves the process running."""
        if self.status is not None:
            self._unhold()
            return self.returncode
        if forward and timeout is None:
            from .. import _native
            try:
                status = _native.wait_forward(self.pid, tuple(forward))
            except ChildProcessError:
                status = None
            self._reaped(status)
            return self.returncode
        if forward:
            return self._wait_forward_timed(tuple(forward), timeout)
        try:
            self._unhold()  # a signal held since the launch is raised here
            if timeout is not None:
                self._wait_readable(timeout)
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                status = None
        except BaseException as e:
            if not _is_timeout(e):
                self._kill_and_reap()
            raise
        self._reaped(status)
        return self.returncode

    def _wait_readable(self, timeout):
        import select
        if self.pidfd >= 0:
            if not select.select([self.pidfd], [], [], timeout)[0]:
                self._timeout(timeout)
            return
        import time
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timeout(timeout)
            time.sleep(min(left, 0.01))

    def _wait_forward_timed(self, forward, timeout):
        """wait_forward with a deadline, in Python: SIGCHLD and the forwarded signals blocked and
        taken with sigtimedwait."""
        import signal
        import time
        sigs = set(forward) | {signal.SIGCHLD}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    pid, status = self.pid, None
                if pid == self.pid:
                    self._reaped(status)
                    return self.returncode
                left = deadline - time.monotonic()
                if left <= 0:
                    self._timeout(timeout)
                info = signal.sigtimedwait(sigs, left)
                if info is not None and info.si_signo != signal.SIGCHLD:
                    self.send_signal(info.si_signo)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _timeout(self, timeout):
        import subprocess
        raise subprocess.TimeoutExpired(f"sandbox process {self.pid}", timeout)

    def _kill_and_reap(self, quiet=True):
        """Kill and reap (a second Ctrl-C while reaping is swallowed: the reap is quick).
        `quiet`: a teardown's error is dropped (another exception is on its way)."""
        self.kill()
        while self.status is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                status = None
            except KeyboardInterrupt:
                continue
            try:
                self._reaped(status)
            except Exception:
                if not quiet:
                    raise
            break

    def _reaped(self, status):
        if self.status is not None:
            return
        if status is None:  # reaped by someone else: its status is lost
            status = 255 << 8
        self.status = status
        self.returncode = exit_code(status)
        self._end_pump()  # the forwarded signals are still held: the drain is not interrupted
        self._unhold()
        self._run_teardowns()

    def _unhold(self):
        old, self._old_mask = self._old_mask, None
        if old is not None:
            _restore_mask(old)

    # --- output pipes ---------------------------------------------------------------------------

    def pump(self, pipes, log=None):
        """Copy the sandbox's output pipes while it runs.  `pipes`: ((read_fd, out_fd, stream),
        ...); each chunk read goes to out_fd at once (-1: nowhere) and, with `log`, to
        log(stream, data), in the order read.  The read ends are the pump's from now on.

        A thread copies, with every signal blocked, so `wait` takes and forwards signals exactly
        as without a pump.  Once the process is reaped (wait, close), what is left in the pipes
        is copied (at most a pipe's capacity each: a process that outlived the sandbox and still
        writes is not followed) and the pump ends, even if another process holds a write end.
        If out_fd's reader is gone (EPIPE) that pipe is closed, so the sandbox's next write to
        it gets SIGPIPE as if it wrote there itself.  A `log` that raises OSError is not called
        again; the error is `relay_error`."""
        import _signal
        import _thread
        stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
        done = _thread.allocate_lock()
        done.acquire()
        # The thread inherits this mask: nothing is ever delivered to it (a SIGCHLD it took
        # would be lost to wait's sigwaitinfo).
        old = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        try:
            _thread.start_new_thread(_pump_thread, (self, tuple(pipes), log, stop_r, done))
        except BaseException:
            for fd in (stop_r, stop_w, *(r for r, _, _ in pipes)):
                os.close(fd)
            raise
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, old)
        self._pump = (stop_r, stop_w, done)
        if self.status is not None:
            self._end_pump()

    def _end_pump(self):
        pump, self._pump = self._pump, None
        if pump is None:
            return
        stop_r, stop_w, done = pump
        try:
            os.write(stop_w, b"x")
            done.acquire()
        finally:
            os.close(stop_r)
            os.close(stop_w)

    # --- terminal -------------------------------------------------------------------------------

    def relay_pty(self, stdin_fd=0, stdout_fd=1, raw=True, detach_keys=DETACH_KEYS, log=None):
        """Copy the pty: our `stdin_fd` (-1: none) to the sandbox, its output to `stdout_fd`
        (and, with `log`, to log("stdout", data), as Docker logs a tty), with our terminal in
        raw mode (`raw` and stdin a terminal), the window size followed (SIGWINCH) and the
        forwarded signals passed on, until the process exits: returns its exit code.  Typing
        `detach_keys` on stdin detaches: returns None and the process runs on (a partial
        sequence followed by another key passes through as typed)."""
        if self.pty_master < 0:
            raise ValueError("relay_pty: the process was not launched with terminal=True")
        return _relay(self, stdin_fd, stdout_fd, raw, detach_keys, _Log(self, log))

    # --- teardown -------------------------------------------------------------------------------

    def add_teardown(self, fn):
        """Call fn() once, after the process is reaped or on close (last added, first run)."""
        if self.status is not None or self._closed:
            fn()
        else:
            self._teardowns.append(fn)

    def _run_teardowns(self):
        first = None
        while self._teardowns:
            fn = self._teardowns.pop()
            try:
                fn()
            except BaseException as e:
                if first is None:
                    first = e
        if first is not None:
            raise first

    def close(self):
        """End supervision: a process still running is killed and reaped; teardowns run; the
        pidfd and the pty master are closed.  Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            h = self._handle
            if self.status is None and h is not None and h.state in ("held", "waiting"):
                h.abort()  # never exec'd: the launcher's handle kills and reaps it
                self._reaped(SIGKILL)
            if self.status is None:
                self._kill_and_reap(quiet=False)
            self._unhold()
            self._run_teardowns()
        finally:
            for attr in ("pidfd", "pty_master"):
                fd = getattr(self, attr)
                if fd >= 0:
                    setattr(self, attr, -1)
                    os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _relay(p, stdin_fd, stdout_fd, raw, detach_keys, log):
    """The terminal loop of relay_pty (termios, select and signal are imported only here)."""
    import errno
    import select
    import signal
    import termios
    import tty

    master = p.pty_master
    term_fd = next((fd for fd in (stdin_fd, stdout_fd) if fd >= 0 and os.isatty(fd)), -1)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    pending = []

    def on_signal(sig, _frame):
        pending.append(sig)

    old_handlers = {}
    old_wakeup = None
    saved_tc = None
    try:
        try:
            for s in (*FORWARD_SIGNALS, SIGWINCH):
                old_handlers[s] = signal.signal(s, on_signal)
            old_wakeup = signal.set_wakeup_fd(wake_w)
        except ValueError:  # not the main thread: no handlers, no forwarding
            pass
        p._unhold()  # signals held since the launch reach on_signal now
        if term_fd >= 0:
            _copy_winsize(term_fd, master)  # a resize between launch and here
        if raw and stdin_fd >= 0 and os.isatty(stdin_fd):
            saved_tc = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd, termios.TCSANOW)  # keys typed ahead are kept, not flushed
        watch = [master, wake_r] + ([stdin_fd] if stdin_fd >= 0 else []) + ([p.pidfd] if p.pidfd >= 0 else [])
        held = b""  # a prefix of detach_keys typed so far
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                ready = []
            for s in pending:
                if s == SIGWINCH:
                    if term_fd >= 0:
                        _copy_winsize(term_fd, master)
                p.send_signal(s)
            pending.clear()
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    _write_all(stdout_fd, data)
                    log("stdout", data)
                elif p.pidfd < 0:
                    break
                else:
                    watch.remove(master)
            if stdin_fd >= 0 and stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    watch.remove(stdin_fd)
                    if held:
                        _write_all(master, held)
                        held = b""
                elif detach_keys:
                    out, held, detached = _scan_detach(held, data, detach_keys)
                    if out:
                        _write_all(master, out)
                    if detached:
                        return None
                else:
                    _write_all(master, data)
            if p.pidfd >= 0 and p.pidfd in ready:
                _drain(master, stdout_fd, log)  # what the command wrote before it exited
                break
        try:
            _, status = os.waitpid(p.pid, 0)
        except ChildProcessError:
            status = None
        p._reaped(status)
        return p.returncode
    finally:
        if saved_tc is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_tc)
        if old_wakeup is not None:
            signal.set_wakeup_fd(old_wakeup)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)


def _scan_detach(held, data, keys):
    """Input bytes against the detach sequence: -> (bytes to pass on, prefix still held,
    detached).  Docker's rule: a partial sequence followed by any other byte is passed on."""
    out = bytearray()
    for b in data:
        cand = held + bytes((b,))
        if keys.startswith(cand):
            if cand == keys:
                return bytes(out), b"", True
            held = cand
            continue
        out += held
        held = b""
        if keys.startswith(bytes((b,))):
            held = bytes((b,))
            if held == keys:
                return bytes(out), b"", True
        else:
            out.append(b)
    return bytes(out), held, False


def _drain(master, stdout_fd, log):
    os.set_blocking(master, False)
    try:
        while True:
            data = os.read(master, 65536)
            if not data:
                break
            _write_all(stdout_fd, data)
            log("stdout", data)
    except OSError:
        pass


class _Log:
    """A caller's log(stream, data), or nothing: its first OSError is kept (p.relay_error) and it
    is not called again, so a full disk never stops the output reaching its reader."""

    def __init__(self, p, fn):
        self.p, self.fn = p, fn

    def __call__(self, stream, data):
        if self.fn is None:
            return
        try:
            self.fn(stream, data)
        except OSError as e:
            self.fn = None
            if self.p.relay_error is None:
                self.p.relay_error = e


def _pump_thread(p, pipes, log, stop_r, done):
    """The pump's thread (see SandboxProcess.pump)."""
    import select
    log = _Log(p, log)
    live = {}  # read fd -> [out fd, stream]
    try:
        poller = select.poll()
        for r, out, stream in pipes:
            live[r] = [out, stream]
            os.set_blocking(r, False)
            poller.register(r, select.POLLIN)
        poller.register(stop_r, select.POLLIN)
        stopping = False
        while live and not stopping:
            for fd, _ev in poller.poll():
                if fd == stop_r:
                    stopping = True
                elif fd in live and not _pump_once(fd, live, log):
                    poller.unregister(fd)
                    os.close(fd)
                    del live[fd]
        if stopping:  # the sandbox is gone: what it wrote is in the pipes, no more than that
            import fcntl
            for fd in list(live):
                try:
                    budget = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
                except OSError:
                    budget = 1 << 20
                while budget > 0:
                    n = _pump_once(fd, live, log)
                    if not n:
                        os.close(fd)
                        del live[fd]
                        break
                    if n is True:
                        break  # empty for now: a still-open write end
                    budget -= n
    except BaseException as e:  # a bug: reported after the run; the read ends are closed below
        if p.relay_error is None:
            p.relay_error = e
    finally:
        for fd in live:
            os.close(fd)
        done.release()


def _pump_once(fd, live, log):
    """One read of a pipe copied to its reader and the log: the byte count; True when there was
    nothing to read; 0 at its end (EOF, or its reader is gone: the pipe is closed)."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return True
    except OSError:
        data = b""
    if not data:
        return 0
    target = live[fd]
    if target[0] >= 0:
        try:
            _write_all(target[0], data)
        except BrokenPipeError:
            log(target[1], data)
            return 0
        except OSError:
            target[0] = -1  # e.g. our fd 1 was closed: the log still gets it
    log(target[1], data)
    return len(data)


def _copy_winsize(src_fd, dst_fd):
    import fcntl
    import termios
    try:
        ws = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


def terminal_size(fd):
    """(rows, cols) of the terminal on `fd`, or (24, 80)."""
    import fcntl
    import struct
    import termios
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return (rows, cols) if rows and cols else (24, 80)
    except OSError:
        return 24, 80


def _write_all(fd, data):
    """Write all of `data`, also to a caller's fd that is non-blocking (its owner's choice)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            import select
            select.select([], [fd], [])
        except InterruptedError:
            continue


def _restore_mask(old):
    import _signal
    _signal.pthread_sigmask(_signal.SIG_SETMASK, old)


def _is_timeout(e):
    return type(e).__name__ == "TimeoutExpired"
