"""The HTTP side of the Docker API: a threaded unix-socket server speaking HTTP/1.1 as dockerd
does (keep-alive, chunked streaming, `101 UPGRADED` hijacking), Docker's error JSON and status
codes, the `/v1.NN/` prefix and the API headers.

The stdlib is enough (`socketserver.ThreadingUnixStreamServer` + `http.server`): hijacking is
taking over the connection's socket, which ASGI servers cannot do, and nothing here is on
`sbx run`'s path.  The request reader is unbuffered (`rbufsize = 0`) so that bytes a client
sends after a hijacking request (stdin of an attach or exec) are never stranded in a buffer.

docker-py reads a hijacked stream from the raw socket under http.client's buffered reader, so
payload that arrives in the same read as the response headers is lost (docker-py #425, #3332).
`Request.hijack` therefore waits until the client has read the headers (the kernel's count of
bytes queued unread on our side of the unix socket, SIOCOUTQ, drops to 0) before any payload."""
import fcntl
import http.server
import json
import os
import re
import socket
import socketserver
import struct
import threading
import time
import urllib.parse

from .. import config
from ..errors import SandboxError, UsageError

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"
SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes not yet read by the peer (AF_UNIX: skbs it has not consumed)


class ApiError(Exception):
    """An answer other than success: Docker's status code and `{"message": ...}`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def not_implemented(what, why):
    """501 naming the endpoint and what is missing."""
    return ApiError(501, f"{what} is not implemented by sbx: {why}")


def status_of(e):
    """The HTTP status Docker gives the engine's error `e`."""
    from ..containers import state
    from ..image import errors as ierr
    if isinstance(e, ApiError):
        return e.status
    if isinstance(e, (state.NoSuchContainer, ierr.ImageNotFound, ierr.ManifestUnknown)):
        return 404
    if isinstance(e, (state.NameConflict, state.StateError)):
        return 409
    if isinstance(e, ierr.AuthError):
        return 401
    if isinstance(e, (UsageError, ierr.ReferenceError_)):
        return 400
    name = type(e).__name__
    if name in ("NoSuchVolume", "NoSuchExec", "NoSuchNetwork"):
        return 404
    if name in ("VolumeInUse", "Conflict"):
        return 409
    return 500


def message_of(e):
    if isinstance(e, ApiError):
        return e.message
    msg = str(e)
    hint = getattr(e, "hint", None)
    return f"{msg} ({hint})" if hint else msg


# --- requests ---------------------------------------------------------------------------------------

class Request:
    """One request: `method`, `path` (without the /v1.NN prefix), `version` (the API version the
    client asked for, as a tuple), `query`, `headers`, `params` (the route's groups)."""

    def __init__(self, handler, method, path, version, query, params=()):
        self.h = handler
        self.method, self.path, self.version, self.query, self.params = method, path, version, query, params
        self.headers = handler.headers
        self.started = False  # a response (or its headers) went out
        self._body_read = False

    # -- query values --

    def arg(self, name, default=None):
        v = self.query.get(name)
        return v[-1] if v else default

    def flag(self, name, default=False):
        v = self.arg(name)
        if v is None:
            return default
        v = v.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
        raise ApiError(400, f"invalid boolean value {v!r} for query parameter {name!r}")

    def int_arg(self, name, default=None):
        v = self.arg(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise ApiError(400, f"invalid value {v!r} for query parameter {name!r}: not an integer") from None

    def filters(self):
        """The `filters` JSON ({"key": ["v", ...]} or the old {"key": {"v": true}}) -> {key: [values]}."""
        raw = self.arg("filters")
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"invalid filters: {raw!r} is not JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(400, f"invalid filters: {raw!r}")
        out = {}
        for k, v in doc.items():
            if isinstance(v, dict):
                v = [x for x, on in v.items() if on]
            elif isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ApiError(400, f"invalid filter {k!r}: {v!r}")
            out[k] = v
        return out

    # -- the body --

    def body_chunks(self):
        """The request body, piece by piece (Content-Length or chunked)."""
        self._body_read = True
        rfile = self.h.rfile
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = rfile.readline(1024)
                if not line:
                    raise ApiError(400, "the request body ended inside a chunk")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    b = rfile.read(min(left, 1 << 16))
                    if not b:
                        raise ApiError(400, "the request body ended inside a chunk")
                    left -= len(b)
                    yield b
                rfile.readline(16)
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            b = rfile.read(min(n, 1 << 16))
            if not b:
                raise ApiError(400, "the request body is shorter than its Content-Length")
            n -= len(b)
            yield b

    def body(self):
        return b"".join(self.body_chunks())

    def json(self, default=None):
        data = self.body()
        if not data.strip():
            return {} if default is None else default
        try:
            return json.loads(data)
        except ValueError as e:
            raise ApiError(400, f"invalid JSON body: {e}") from None

    def drain(self):
        """Read what is left of the body (the connection is then ready for the next request)."""
        if not self._body_read:
            for _ in self.body_chunks():
                pass

    # -- answers --

    def _head(self, status, headers, reason=None):
        self.drain()
        self.started = True
        h = self.h
        h.log_request(status)  # --verbose only (log_message)
        h.send_response_only(status, reason)
        h.send_header("Server", "sbx")
        h.send_header("Date", h.date_time_string())
        for k, v in (("Api-Version", API_VERSION), ("Docker-Experimental", "false"), ("Ostype", "linux")):
            h.send_header(k, v)
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()

    def send(self, status, body=b"", content_type="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode() + b"\n"
        elif isinstance(body, str):
            body = body.encode()
        hs = list(headers)
        if status not in (204, 304):
            hs += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        self._head(status, hs)
        if self.method != "HEAD" and body and status not in (204, 304):
            self.h.wfile.write(body)
        self.h.wfile.flush()

    def json_reply(self, obj, status=200, headers=()):
        self.send(status, obj, headers=headers)

    def empty(self, status=204):
        self.send(status, b"")

    def stream(self, content_type="application/json", headers=()):
        """Start a chunked response; returns a writer (`w.write(bytes)`, `w.json(obj)`, `w.close()`)."""
        self._head(200, list(headers) + [("Content-Type", content_type), ("Transfer-Encoding", "chunked")])
        self.h.wfile.flush()
        return _Chunked(self.h.wfile)

    def hijack(self, content_type):
        """Take over the connection (attach, exec start): `101 UPGRADED` if the client asked to
        upgrade, else `200 OK`; returns the socket once the client has read the headers.  The
        connection closes after."""
        upgrade = "upgrade" in (self.headers.get("Connection") or "").lower()
        hs = [("Content-Type", content_type)]
        if upgrade:
            hs += [("Connection", "Upgrade"), ("Upgrade", "tcp")]
        self._head(101 if upgrade else 200, hs, reason="UPGRADED" if upgrade else None)
        self.h.wfile.flush()
        self.h.close_connection = True
        sock = self.h.connection
        wait_read(sock)
        return sock


def wait_read(sock, timeout=2.0):
    """Until the peer has read everything we sent (or `timeout`): see the module's note."""
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    delay = 0.0005
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), SIOCOUTQ, buf)
        except OSError:
            return
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


class _Chunked:
    def __init__(self, wfile):
        self.w = wfile
        self.closed = False

    def write(self, data):
        if data:
            self.w.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.w.flush()

    def json(self, obj):
        self.write(json.dumps(obj).encode() + b"\r\n")

    def close(self):
        if not self.closed:
            self.closed = True
            self.w.write(b"0\r\n\r\n")
            self.w.flush()


# --- routing ----------------------------------------------------------------------------------------

_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")


def _vtuple(text):
    a, b = text.split(".")
    return int(a), int(b)


class Router:
    def __init__(self, routes):
        self.routes = [(m, re.compile("^" + p + "$"), fn) for m, p, fn in routes]

    def find(self, method, path):
        """(fn, groups) or raises 404/405-style ApiErrors as dockerd does (unknown: 501 here)."""
        known = False
        for m, rx, fn in self.routes:
            mo = rx.match(path)
            if mo:
                known = True
                if m == method or (method == "HEAD" and m == "GET"):
                    return fn, tuple(urllib.parse.unquote(g) if g is not None else None for g in mo.groups())
        if known:
            raise ApiError(405, f"method {method} is not allowed on {path}")
        raise not_implemented(f"{method} {path}", "sbx does not serve this endpoint of the Docker Engine API")


def _routes():
    from . import containers, images, networks, system, volumes
    return system.ROUTES + containers.ROUTES + images.ROUTES + volumes.ROUTES + networks.ROUTES


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sbx"
    rbufsize = 0  # see the module's note

    def log_message(self, fmt, *args):
        if self.server.verbose:
            import sys
            sys.stderr.write(f"[{self.log_date_time_string()}] {fmt % args}\n")

    def handle_one_request(self):
        # Unbuffered reads return short: read the request line and headers whole.
        super().handle_one_request()

    def _dispatch(self):
        srv = self.server
        srv.busy(+1)
        try:
            with config.use(srv.ctx):
                self._serve()
        finally:
            srv.busy(-1)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    def _serve(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        version = _vtuple(API_VERSION)
        m = _VERSIONED.match(path)
        if m:
            version = (int(m.group(1)), int(m.group(2)))
            path = m.group(3)
        req = Request(self, self.command, path, version, urllib.parse.parse_qs(url.query, keep_blank_values=True))
        try:
            if version > _vtuple(API_VERSION):
                raise ApiError(400, f"client version {version[0]}.{version[1]} is too new. "
                                    f"Maximum supported API version is {API_VERSION}")
            if version < _vtuple(MIN_API_VERSION):
                raise ApiError(400, f"client version {version[0]}.{version[1]} is too old. "
                                    f"Minimum supported API version is {MIN_API_VERSION}, please upgrade your "
                                    f"client to a newer version")
            fn, req.params = self.server.router.find(self.command, path)
            fn(req)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # every failure is an answer, never a dropped connection
            status = status_of(e)
            if status == 500 and not isinstance(e, (SandboxError, ApiError)):
                import traceback
                traceback.print_exc()
            if req.started:  # too late for a status: the stream ends (a JSON error line if it is one)
                self.close_connection = True
                return
            try:
                req.send(status, {"message": message_of(e)})
            except OSError:
                self.close_connection = True


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False

    def __init__(self, path, ctx, *, sock=None, verbose=False):
        self.ctx, self.verbose = ctx, verbose
        self.router = Router(_routes())
        self._lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()
        self.state = {}  # shared by the endpoints: exec instances, the event log
        if sock is not None:  # socket activation: the listening socket is given
            socketserver.BaseServer.__init__(self, path, Handler)
            self.socket = sock
            self.server_address = sock.getsockname()
        else:
            socketserver.UnixStreamServer.__init__(self, path, Handler, bind_and_activate=False)
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self):
        old = os.umask(0o177)  # the socket is made 0600: only its user may drive sbx
        try:
            super().server_bind()
        finally:
            os.umask(old)
        os.chmod(self.server_address, 0o600)

    def busy(self, n):
        with self._lock:
            self.active += n
            self.last = time.monotonic()

    def idle_for(self):
        with self._lock:
            return 0.0 if self.active else time.monotonic() - self.last


def parse_socket(url):
    """`unix:///run/x.sock`, `unix://x.sock` or a plain path -> an absolute path."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
    elif "://" in url:
        raise UsageError(f"unsupported socket {url!r}: sbx serves the Docker API on a unix socket only",
                         hint="give --socket unix:///path/to/sbx.sock")
    else:
        path = url
    if not path:
        raise UsageError(f"invalid socket {url!r}", hint="give --socket unix:///path/to/sbx.sock")
    return os.path.abspath(path)


def default_socket(ctx):
    """$XDG_RUNTIME_DIR/sbx/sbx.sock (the runtime root's sbx.sock when there is none)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "sbx", "sbx.sock") if xdg else os.path.join(ctx.runtime_root, "sbx.sock")


def activation_socket():
    """The listening socket systemd passes (LISTEN_FDS=1, LISTEN_PID ours), else None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=3)


def serve(path, ctx, timeout=0, *, announce=None, verbose=False, stop=None):
    """Serve until SIGTERM/SIGINT, `stop` (an Event) or `timeout` idle seconds (0: never);
    removes the socket it made.  `announce(path)` is called once it listens."""
    import signal
    sock = activation_socket()
    made = sock is None
    if made:
        d = os.path.dirname(path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        _clear_stale(path)
    srv = Server(path if made else "", ctx, sock=sock, verbose=verbose)
    from . import system
    system.start_events(srv)  # the events journal followed from the start (inotify), not per request
    from ..containers import monitor
    spares = monitor.keep_spares(ctx.data_root, ctx.runtime_root)  # a monitor started ahead for the next start
    stop = stop or threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: stop.set())
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, name="sbx api", daemon=True)
    t.start()
    try:
        if announce is not None:
            announce(srv.server_address if made else path)
        while not stop.wait(0.5):
            if timeout and srv.idle_for() >= timeout:
                break
    finally:
        srv.shutdown()
        srv.server_close()
        spares.close()
        if made:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for sig, h in old.items():
            signal.signal(sig, h)
    return 0


def _clear_stale(path):
    """A socket left by a service that died is replaced; a live one is refused."""
    if not os.path.lexists(path):
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        s.close()
    raise UsageError(f"a service already listens on {path}",
                     hint="stop it, or give another --socket unix:///path")
