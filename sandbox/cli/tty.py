"""`sbx run -t`: the command on a pseudo-terminal allocated in the sandbox's own devpts (the
launcher sends us its master over a socketpair), our terminal in raw mode, bytes copied both
ways, the window size followed (SIGWINCH), other signals forwarded, until the sandbox exits
(its pidfd turns readable)."""
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import tty

from ..runtime import launch
from .run import FORWARD, exit_code


def _copy_winsize(src_fd, dst_fd):
    try:
        ws = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


def _write_all(fd, data):
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[n:]


def _winsize(fd):
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols
    except OSError:
        return 24, 80


def run_with_pty(spec, interactive, on_start=None):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    master = -1
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    pending = []

    def on_signal(sig, _frame):
        pending.append(sig)

    old_handlers = {s: signal.signal(s, on_signal) for s in (*FORWARD, signal.SIGWINCH)}
    old_wakeup = signal.set_wakeup_fd(wake_w)
    saved_tc = None
    try:
        pid, pidfd = launch.start(spec, console_socket=theirs.fileno(), console_size=_winsize(0))
        theirs.close()
        if on_start is not None:
            on_start(pid)
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise OSError("no pty from the sandbox")
        master = fds[0]
        if os.isatty(0):
            saved_tc = termios.tcgetattr(0)
            tty.setraw(0)
        watch = [master, wake_r] + ([0] if interactive else []) + ([pidfd] if pidfd >= 0 else [])
        done = False
        while not done:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                ready = []
            for s in pending:
                if s == signal.SIGWINCH:
                    _copy_winsize(0, master)
                    os.kill(pid, signal.SIGWINCH)
                else:
                    os.kill(pid, s)
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
                    _write_all(1, data)
                elif pidfd < 0:
                    done = True
                else:
                    watch.remove(master)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    _write_all(master, data)
                else:
                    watch.remove(0)
            if pidfd >= 0 and pidfd in ready:
                # Drain what the command wrote before it exited.
                os.set_blocking(master, False)
                try:
                    while True:
                        data = os.read(master, 65536)
                        if not data:
                            break
                        _write_all(1, data)
                except OSError:
                    pass
                done = True
        _, status = os.waitpid(pid, 0)
        if pidfd >= 0:
            os.close(pidfd)
        return exit_code(status)
    finally:
        if saved_tc is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved_tc)
        signal.set_wakeup_fd(old_wakeup)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        ours.close()
        theirs.close()
        for fd in (master, wake_r, wake_w):
            if fd >= 0:
                os.close(fd)
