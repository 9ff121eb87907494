"""Readiness for harnesses: wait until a container is ready to be used.

    c = sandbox.containers.run(rootfs=R, command=["sh", "-c", "echo listening; exec server"])
    wait_for_log(c, r"listening", timeout=10)
    wait_for_exec(c, ["test", "-e", "/run/server.pid"], timeout=10)

Each waits on what the container reports (its log, an exec's exit status) and raises
`WaitTimeout` (a `TimeoutError` and a `SandboxError`) naming what it waited for and the last
output it saw, when the time is up or the container ended first.  They work on any object with
docker-py's `logs()`, `exec_run()`, `reload()`, `status` and `attrs`."""
import re
import time

from ..errors import SandboxError, UsageError

_SHOWN = 2000  # characters of the last output a timeout message quotes


class WaitTimeout(SandboxError, TimeoutError):
    """What was awaited did not happen in time (or the container ended first)."""

    def __init__(self, msg, hint=None, last_output=""):
        SandboxError.__init__(self, msg, hint)
        self.last_output = last_output


def _tail(text):
    text = text.rstrip("\n")
    if not text:
        return "(no output)"
    return ("..." + text[-_SHOWN:]) if len(text) > _SHOWN else text


def _ended(container):
    """None while the container runs, else what became of it: "exited (code 3)", "was removed"."""
    try:
        container.reload()
    except LookupError:  # NotFound: an auto_remove container that ended, or removed by someone
        return "was removed"
    if container.status in ("exited", "dead"):
        return f"exited (code {container.attrs.get('State', {}).get('ExitCode')})"
    return None


def _check_timeout(timeout):
    if timeout is None or not timeout >= 0:  # also refuses NaN
        raise UsageError(f"timeout must be a number of seconds >= 0, not {timeout!r}")


def wait_for_log(container, pattern, timeout=60, stream=None, interval=0.05):
    """Wait until the container's log matches `pattern`: a regular expression as a str (searched
    line by line and across lines, `re.MULTILINE`, as testcontainers does; `re.escape` a literal)
    or a compiled one (a bytes pattern matches the raw log).  `stream` is "stdout", "stderr" or
    None for both.  Returns the match."""
    _check_timeout(timeout)
    if stream not in (None, "stdout", "stderr"):
        raise UsageError(f"stream must be 'stdout', 'stderr' or None, not {stream!r}")
    rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.MULTILINE)
    what = f"a log line matching {rx.pattern!r}" + (f" on {stream}" if stream else "")
    deadline = time.monotonic() + timeout
    text = ""

    def look():
        nonlocal text
        try:
            raw = container.logs(stdout=stream in (None, "stdout"), stderr=stream in (None, "stderr"))
        except LookupError:  # removed: its log went with it
            return None
        text = raw.decode("utf-8", "replace")
        return rx.search(raw if isinstance(rx.pattern, bytes) else text)
    while True:
        m = look()
        if m:
            return m
        ended = _ended(container)
        if ended is not None:
            m = look()  # once more: output written just before the exit
            if m:
                return m
            raise WaitTimeout(f"container {container.name} {ended} before {what} appeared; "
                              f"last output:\n{_tail(text)}", last_output=text)
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what} in container {container.name}; "
                              f"last output:\n{_tail(text)}", last_output=text)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_for_exec(container, cmd, timeout=60, interval=0.2):
    """Run `cmd` in the container every `interval` seconds until it exits 0.  Returns its
    `ExecResult`.  An exec that outlives the time left is killed."""
    _check_timeout(timeout)
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    what = f"{' '.join(cmd)!r} to exit 0"
    deadline = time.monotonic() + timeout
    last, out, why = None, "", "it never ran"
    while True:
        ended = _ended(container)
        if ended is not None:
            raise WaitTimeout(f"container {container.name} {ended} while waiting for {what}; "
                              f"last output:\n{_tail(out)}", last_output=out)
        try:
            r = container.exec_run(cmd, timeout=max(0.001, deadline - time.monotonic()))
        except WaitTimeout as e:  # outlived the time left: killed
            if last is None:
                why, out = "it did not finish in time", e.last_output
        except SandboxError as e:  # e.g. the container ended between the check and the exec
            if last is None:
                why, out = f"it could not run: {e}", ""
        else:
            if r.exit_code == 0:
                return r
            last, out = r.exit_code, (r.output or b"").decode("utf-8", "replace")
            why = f"its last exit code was {last}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what} in container {container.name} "
                              f"({why}); last output:\n{_tail(out)}", last_output=out)
        time.sleep(min(interval, left))


def _stays_open(c):
    """A connection that neither closes nor fails within 50 ms, or that brings data."""
    c.settimeout(0.05)
    try:
        return c.recv(1, __import__("socket").MSG_PEEK) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def wait_for_port(container, port, timeout=60, interval=0.1):
    """Wait until a TCP connection to `port` succeeds: on 127.0.0.1 for a container sharing the
    host's network, else through the host port it is published on (`ports=`).  A forwarder
    (slirp4netns, pasta) accepts before the container listens and then closes at once: a
    connection closed within 50 ms without a byte does not count."""
    _check_timeout(timeout)
    import socket
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise UsageError(f"port must be a number from 1 to 65535, not {port!r}")
    mode = (container.attrs.get("HostConfig") or {}).get("NetworkMode") or "none"
    host, hport = "127.0.0.1", port
    if mode != "host":
        binds = ((container.attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp")
        if not binds:
            raise UsageError(f"cannot wait for port {port} of container {container.name}: it is not published "
                             f"on the host (network {mode})",
                             hint=f"publish it (ports={{'{port}/tcp': None}}), or use wait_for_log / wait_for_exec")
        host = binds[0]["HostIp"] if binds[0]["HostIp"] not in ("", "0.0.0.0") else "127.0.0.1"
        hport = int(binds[0]["HostPort"])
    what = f"TCP port {port} ({host}:{hport}) to accept a connection"
    deadline = time.monotonic() + timeout
    err = None
    while True:
        try:
            with socket.create_connection((host, hport), timeout=max(0.05, min(1.0, deadline - time.monotonic()))) as c:
                if mode == "host" or _stays_open(c):
                    return
                err = ConnectionResetError("the forwarder closed the connection: nothing listens yet")
        except OSError as e:
            err = e
        ended = _ended(container)
        if ended is not None:
            raise WaitTimeout(f"container {container.name} {ended} before {what}; "
                              f"last error: {err}", last_output=str(err))
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what} (container {container.name}); "
                              f"last error: {err}", last_output=str(err))
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
