"""`sbx run -t`: the command on a new pseudo-terminal, our terminal in raw mode, bytes copied
both ways, the window size followed (SIGWINCH), other signals forwarded, until the sandbox
exits (its pidfd turns readable)."""
import errno
import fcntl
import os
import select
import signal
import struct
import termios
import tty

from ..runtime import launch, plan as _plan
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


def run_with_pty(spec, interactive):
    master, slave = os.openpty()
    os.set_blocking(master, True)
    _copy_winsize(0, master)
    slave_hi = fcntl.fcntl(slave, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(slave)
    plan = _plan.compile(spec, stdio=(slave_hi, slave_hi, slave_hi), setsid=True, ctty=True)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    pending = []

    def on_signal(sig, _frame):
        pending.append(sig)

    old_handlers = {s: signal.signal(s, on_signal) for s in (*FORWARD, signal.SIGWINCH)}
    old_wakeup = signal.set_wakeup_fd(wake_w)
    saved_tc = None
    try:
        pid, pidfd = launch.spawn(plan)
        os.close(slave_hi)
        slave_hi = -1
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
        for fd in (master, wake_r, wake_w, slave_hi):
            if fd >= 0:
                os.close(fd)
