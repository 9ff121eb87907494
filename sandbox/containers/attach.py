"""Attaching to a detached container: the monitor serves <dir>/attach.sock (a unix stream
socket, reached through /proc/self/fd/N/attach.sock so that a long data path still fits a
sockaddr).

A client's first line says what it wants:
    b"attach STDIN STDOUT STDERR\\n"   (each 0 or 1): the container's output from now on, and
                                       the client's bytes to its stdin (its pty with a tty, else
                                       the stdin pipe a container created with -i has); the
                                       client's end of input (shutdown SHUT_WR) closes that pipe
    b"resize ROWS COLS\\n"             the pty's window size (the connection then closes)
Output goes to the client as the pty gives it (tty), else framed as Docker's multiplexed stream:
an 8-byte header (1 stdout / 2 stderr, 0, 0, 0, big-endian length) and the bytes.

The client side (`attach_terminal`, `attach_streams`) is what `sbx attach` runs: with a tty, the
terminal in raw mode, the window size sent at start and on SIGWINCH, and Docker's detach keys
(Ctrl-P Ctrl-Q) leave the container running."""
import os
import socket
import struct

SOCK = "attach.sock"
STREAMS = {"stdout": 1, "stderr": 2}


# --- the monitor's side ---------------------------------------------------------------------------

def _path_via_fd(d):
    fd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd, f"/proc/self/fd/{fd}/{SOCK}"


def listen(d):
    """Listen on <d>/attach.sock (replacing a stale one)."""
    fd, path = _path_via_fd(d)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.bind(path)
            s.listen(16)
        except BaseException:
            s.close()
            raise
        s.setblocking(False)
        return s
    finally:
        os.close(fd)


class Client:
    def __init__(self, sock, stdin=False, stdout=True, stderr=True, resize=None):
        self.sock, self.stdin, self.stdout, self.stderr, self.resize = sock, stdin, stdout, stderr, resize
        self.reading = True

    def send(self, stream, data, tty=False):
        """Pass output on; False once the client is gone."""
        if (stream == "stdout" and not self.stdout) or (stream == "stderr" and not self.stderr):
            return True
        frame = data if tty else struct.pack(">BxxxI", STREAMS[stream], len(data)) + data
        try:
            self.sock.settimeout(5)  # a client that stops reading is dropped, not waited for
            self.sock.sendall(frame)
            self.sock.setblocking(False)
            return True
        except OSError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def accept(listener):
    """Accept one client and read its request line; None for a malformed one."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return None
    conn.settimeout(2)
    line = b""
    try:
        while not line.endswith(b"\n") and len(line) < 128:
            b = conn.recv(1)
            if not b:
                break
            line += b
    except OSError:
        conn.close()
        return None
    words = line.split()
    conn.setblocking(False)
    if len(words) == 4 and words[0] == b"attach" and all(w in (b"0", b"1") for w in words[1:]):
        return Client(conn, stdin=words[1] == b"1", stdout=words[2] == b"1", stderr=words[3] == b"1")
    if len(words) == 3 and words[0] == b"resize" and words[1].isdigit() and words[2].isdigit():
        return Client(conn, resize=(int(words[1]), int(words[2])))
    conn.close()
    return None


def set_winsize(fd, size):
    import fcntl
    import termios
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    except OSError:
        pass


# --- the client's side ----------------------------------------------------------------------------

def connect(d, request):
    fd, path = _path_via_fd(d)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(path)
        except BaseException:
            s.close()
            raise
    finally:
        os.close(fd)
    s.sendall(request)
    return s


def terminal_size(fd):
    import fcntl
    import termios
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols
    except OSError:
        return None


def resize(d, size):
    try:
        connect(d, f"resize {size[0]} {size[1]}\n".encode()).close()
    except OSError:
        pass


def attach_terminal(d, stdin_fd=0, stdout_fd=1, detach_keys=b"\x10\x11"):
    """Relay our terminal to the container's pty until it ends (returns True) or the detach keys
    are typed (returns False).  Raw mode and the window size as `sbx run -t` has them."""
    import select
    import signal
    import termios
    import tty
    saved = None
    if stdin_fd >= 0 and os.isatty(stdin_fd):
        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd, termios.TCSANOW)  # TCSANOW: keys typed ahead are kept, not flushed
    try:
        s = connect(d, b"attach %d 1 1\n" % (1 if stdin_fd >= 0 else 0))
    except BaseException:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        raise
    tfd = stdin_fd if stdin_fd >= 0 and os.isatty(stdin_fd) else (stdout_fd if os.isatty(stdout_fd) else -1)
    size = terminal_size(tfd) if tfd >= 0 else None
    if size:
        resize(d, size)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    old_wakeup = old_handler = None
    try:
        try:
            old_handler = signal.signal(signal.SIGWINCH, lambda *_: None)
            old_wakeup = signal.set_wakeup_fd(wake_w)
        except ValueError:  # not the main thread
            pass
        watch = [s.fileno(), wake_r] + ([stdin_fd] if stdin_fd >= 0 else [])
        held = b""
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                if tfd >= 0:
                    size = terminal_size(tfd)
                    if size:
                        resize(d, size)
            if s.fileno() in ready:
                data = s.recv(65536)
                if not data:
                    return True
                _write_all(stdout_fd, data)
            if stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    watch.remove(stdin_fd)
                    continue
                out = b""
                for b in data:
                    c = bytes((b,))
                    if detach_keys and detach_keys.startswith(held + c):
                        held += c
                        if held == detach_keys:
                            if out:
                                s.sendall(out)
                            return False
                        continue
                    out += held + c
                    held = b""
                if out:
                    s.sendall(out)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        if old_wakeup is not None:
            signal.set_wakeup_fd(old_wakeup)
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)
        os.close(wake_r)
        os.close(wake_w)
        s.close()


def attach_streams(d, stdin_fd=-1, stdout_fd=1, stderr_fd=2):
    """A container without a tty: its stdout and stderr (demultiplexed) to ours, our stdin (if
    `stdin_fd` >= 0) to its stdin, until it ends."""
    import select
    s = connect(d, b"attach %d 1 1\n" % (1 if stdin_fd >= 0 else 0))
    try:
        watch = [s.fileno()] + ([stdin_fd] if stdin_fd >= 0 else [])
        buf = b""
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if data:
                    s.sendall(data)
                else:
                    s.shutdown(socket.SHUT_WR)
                    watch.remove(stdin_fd)
            if s.fileno() in ready:
                data = s.recv(65536)
                if not data:
                    return True
                buf += data
                while len(buf) >= 8:
                    kind, n = struct.unpack(">BxxxI", buf[:8])
                    if len(buf) < 8 + n:
                        break
                    _write_all(stderr_fd if kind == 2 else stdout_fd, buf[8:8 + n])
                    buf = buf[8 + n:]
    finally:
        s.close()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
