"""A network helper process (slirp4netns, pasta) of one launch: its runtime directory (API socket,
pid FIFO, log), its start with posix_spawn (no fork of the caller, fds placed with dup2), its
readiness, its end (killed and reaped through its pidfd, never a reused pid) and the removal of
what it left.  The helper runs in a session of its own, so a Ctrl-C at the terminal reaches the
container through sbx, not the helper."""
import os
import select

from ..errors import SandboxError


class HelperError(SandboxError):
    """A helper failed to start or to publish a port (exit 125, as Docker's daemon errors on run)."""


def rundir(spec, kind):
    """A fresh directory for this launch's helper: <runtime root>/net/<id16>-<kind>-<our pid>.
    Directories of supervisors that died without their teardown (killed) are removed here."""
    from ..runtime import paths
    base = os.path.join(paths.runtime_dir(), "net")
    os.makedirs(base, mode=0o700, exist_ok=True)
    _sweep(base)
    d = os.path.join(base, f"{spec['sbx']['id'][:16]}-{kind}-{os.getpid()}")
    remove_tree(d)
    os.mkdir(d, 0o700)
    return d


def _sweep(base):
    for name in os.listdir(base):
        parts = name.split("-")
        if len(parts) != 3 or parts[1] not in ("slirp4netns", "pasta") or not parts[2].isdigit():
            continue
        if not _alive(int(parts[2])):
            remove_tree(os.path.join(base, name))


def _alive(pid):
    """A process that exists and has not exited (a killed supervisor may stay a zombie a while)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def remove_tree(d):
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for n in names:
        try:
            os.unlink(os.path.join(d, n))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass


def _high(fd):
    """fd moved to >= 10 (close-on-exec): a dup2 onto 3 or 4 must never be a no-op dup2(3, 3)
    that would leave close-on-exec set."""
    if fd >= 10:
        return fd
    import fcntl
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


def pipe():
    r, w = os.pipe2(os.O_CLOEXEC)
    return _high(r), _high(w)


_TUNSETPERSIST = 0x400454CB  # _IOW('T', 203, int)
KILL_WAIT = 0.005  # seconds stop() waits for a SIGKILLed helper (one whose tap is the namespace's: ~0.3 ms)
_SIGNALS = tuple(range(1, 32))  # SIGKILL and SIGSTOP are left as they are by posix_spawn


def _inheritable(low, keep):
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= low and fd not in keep:
            try:
                if os.get_inheritable(fd):
                    out.append(fd)
            except OSError:
                pass  # the listing's own fd, closed by now
    return out


class Process:
    """One running helper: `pid`, `pidfd`, `log` (its stderr and stdout, kept in its directory)."""

    def __init__(self, argv, directory, fds=(), name=None):
        """Start argv[0] with `fds` (a sequence of (our fd, its fd)) and stdin on /dev/null."""
        self.dir = directory
        self.log = os.path.join(directory, "log")
        self.name = name or os.path.basename(argv[0])
        logfd = _high(os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        try:
            actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_DUP2, logfd, 1), (os.POSIX_SPAWN_DUP2, logfd, 2)]
            actions += [(os.POSIX_SPAWN_DUP2, ours, theirs) for ours, theirs in fds]
            # Nothing else of ours: an inherited pipe end (the monitor's report pipe) held open
            # by a long-lived helper would keep its reader waiting for EOF.
            actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable(3, {t for _, t in fds})]
            try:
                # Our caller may hold signals blocked or ignored (a launch holds the ones it
                # forwards): the helper starts with none blocked and the default dispositions.
                self.pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True,
                                          setsigmask=(), setsigdef=_SIGNALS)
            except OSError as e:
                raise HelperError(f"cannot start {argv[0]}: {e.strerror}",
                                  hint="check that the package is installed and runs") from None
        finally:
            os.close(logfd)
        self.pidfd = os.pidfd_open(self.pid)  # our unreaped child: the pid cannot be reused yet
        self.status = None

    def wait_readable(self, fd, timeout, what):
        """Wait until `fd` is readable or the helper ends; HelperError (with its log) if it ended
        or `timeout` seconds passed."""
        p = select.poll()
        p.register(fd, select.POLLIN)
        p.register(self.pidfd, select.POLLIN)
        events = dict(p.poll(int(timeout * 1000)))
        if events.get(fd, 0) & select.POLLIN:
            return
        if self.pidfd in events:
            self.reap()
            raise HelperError(f"{self.name} failed to {what}: {self.tail() or f'exit status {self.status}'}",
                              hint=self.hint())
        raise HelperError(f"{self.name} did not {what} within {timeout:g} s: {self.tail() or 'no message'}",
                          hint=self.hint())

    def tap_with_namespace(self):
        """Make the tap device the helper opened in the container's network namespace persistent
        (TUNSETPERSIST on its /dev/net/tun fd, duplicated with pidfd_getfd), so that the device
        goes with the namespace, in the kernel's asynchronous namespace cleanup, and not in the
        helper's exit: a helper that closes the last fd of a tap unregisters it, rtnl and RCU
        grace periods, ~17 ms that its end (which sbx waits for, see _reap_at_exit) would cost.
        False if it could not be done (no ptrace access to the helper): it then ends slowly."""
        import fcntl
        try:
            names = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:  # not ours to look at (pasta makes itself undumpable)
            return False
        for name in names:
            try:
                if os.readlink(f"/proc/{self.pid}/fd/{name}") != "/dev/net/tun":
                    continue
            except OSError:
                continue
            from .._native import pidfd_getfd
            try:
                fd = pidfd_getfd(self.pidfd, int(name))
            except OSError:
                return False
            try:
                fcntl.ioctl(fd, _TUNSETPERSIST, 1)
            except OSError:
                return False
            finally:
                os.close(fd)
            return True
        return False

    def tail(self):
        try:
            with open(self.log, "rb") as f:
                text = f.read(65536).decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "syslog" not in ln]
        return "; ".join(lines[-3:])

    def hint(self):
        from . import modes
        why = modes.tun_problem()
        if why:
            return modes._tun_hint(why)
        return f"its messages are above; run it by hand to see more ({self.name} --help)"

    def alive(self):
        return self.status is None and not select.select([self.pidfd], [], [], 0)[0]

    def reap(self, block=True):
        """Collect its exit status; without `block`, only if it has ended (else False)."""
        if self.status is None:
            pid, st = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            if pid == 0:
                return False
            self.status = os.waitstatus_to_exitcode(st)
            os.close(self.pidfd)
            self.pidfd = -1
        return True

    def stop(self, grace=1.0):
        """End it (SIGTERM, SIGKILL after `grace` seconds; 0: SIGKILL at once) and reap it;
        idempotent.  Its death is quick once its tap device is the namespace's
        (`tap_with_namespace`): it is waited for KILL_WAIT seconds at most, so that a long-lived
        caller (the API server) keeps no zombie.  One still dying then (a tap that goes in its
        exit takes tens of milliseconds) is reaped later (`reap_stopped`), by whoever stops the
        next one or when this process exits (`_reap_at_exit`)."""
        if self.status is not None:
            return
        import _signal as signal  # the C module: `signal` imports enum (~6 ms) on a --rm run's path
        steps = ((signal.SIGTERM, grace),) if grace else ()
        for sig, wait in steps + ((signal.SIGKILL, KILL_WAIT),):
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass
            if select.select([self.pidfd], [], [], wait)[0]:
                break
        if not self.reap(block=False):
            if not _stopped:
                import atexit
                atexit.register(_reap_at_exit)
            _stopped.append(self)
        reap_stopped()


_stopped = []


def reap_stopped():
    """Reap the helpers killed before that have ended since."""
    _stopped[:] = [p for p in _stopped if not p.reap(block=False)]


def _reap_at_exit(timeout=2.0):
    """Before this process exits, reap what it killed: an orphan would be init's to reap, and
    an init that does not (a container's, this CI's) keeps its zombie for good.  They were
    SIGKILLed: a fraction of a millisecond for a helper whose tap is the namespace's, else
    the tens of milliseconds its exit takes to unregister the tap, overlapped with whatever
    the process did after stopping them."""
    for p in _stopped:
        if p.status is None and p.pidfd >= 0:
            select.select([p.pidfd], [], [], timeout)
    reap_stopped()


def settings(net, pid, ports, address=None, gateway=None):
    """The container's NetworkSettings (Docker's names) once its helper is attached."""
    from . import ports as _ports
    return {"IPAddress": address or net.get("address") or "", "Gateway": gateway or net.get("gateway") or "",
            "IPPrefixLen": net.get("prefix") or 0, "MacAddress": "", "SandboxKey": f"/proc/{pid}/ns/net",
            "Ports": _ports.docker_ports(ports, net.get("exposed") or ())}
