"""HTTP to one registry: TLS policy, scheme choice, retries, redirects and authentication.

Built on urllib3: connection pooling across the parallel layer downloads, streaming bodies, and
per-host TLS contexts, with no dependency beyond it (requests would add four packages for nothing
we need, and its Session is not documented as thread-safe).

TLS is verified against the system CAs plus ``*.crt`` files in ``~/.config/containers/certs.d/HOST:PORT``,
``/etc/containers/certs.d/HOST:PORT`` and ``/etc/docker/certs.d/HOST:PORT`` (a ``*.cert``/``*.key`` pair there
is used as the client certificate), as Docker and podman do. Plain HTTP is used only when the registry
is on a loopback address (``localhost``, 127.0.0.0/8, ::1), as Docker does, or when TLS verification is
turned off - and then only if the registry does not speak TLS.
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from sandbox.image.errors import RegistryError
from sandbox.registry.auth import Authenticator, Credentials, find_credentials

log = logging.getLogger("sandbox.registry")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "sbx/0.1 (+https://github.com/sbx)"


@dataclass(frozen=True)
class RegistryOptions:
    """``tls_verify=False`` skips certificate checks and allows plain HTTP. ``certs_dirs`` replaces the
    default certs.d parents. ``credentials`` overrides the auth files; ``auth_files`` replaces their list.
    ``retries`` is how many times a transient failure is retried (with exponential backoff from
    ``backoff`` seconds)."""

    tls_verify: bool = True
    certs_dirs: tuple[str, ...] | None = None
    credentials: Credentials | None = None
    auth_files: tuple[str, ...] | None = None
    timeout: float = 30.0
    connect_timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.2
    max_connections: int = 8
    extra_headers: dict[str, str] = field(default_factory=dict)


def default_certs_dirs() -> tuple[str, ...]:
    cfg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return (os.path.join(cfg, "containers", "certs.d"), "/etc/containers/certs.d", "/etc/docker/certs.d")


def is_loopback(hostport: str) -> bool:
    host = split_hostport(hostport)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.index("]")
        host, rest = hostport[1:end], hostport[end + 1:]
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return hostport, None


class HTTPResponse:
    """What callers see: status, headers (case-insensitive), and either ``data`` or a streaming reader."""

    def __init__(self, raw: Any, url: str) -> None:
        self._raw = raw
        self.status: int = raw.status
        self.headers = raw.headers
        self.url = url

    @property
    def data(self) -> bytes:
        return self._raw.data

    def stream(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        yield from self._raw.stream(chunk, decode_content=False)

    def abort(self) -> None:
        """Shut the connection down, from any thread: a read blocked on it returns at once."""
        try:
            shutdown = getattr(self._raw, "shutdown", None)  # urllib3 >= 2.3
            if shutdown is not None:
                shutdown()
                return
            import socket
            conn = getattr(self._raw, "_connection", None) or getattr(self._raw, "connection", None)
            sock = getattr(conn, "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def release(self) -> None:
        try:
            self._raw.drain_conn()
        except Exception:  # noqa: BLE001 - releasing a broken connection must not mask the real error
            pass
        self._raw.release_conn()

    def error_detail(self) -> str:
        """The first error message of an OCI distribution error body, if any."""
        try:
            import json

            doc = json.loads(self._raw.data[:65536] or b"{}")
            errs = doc.get("errors") or []
            if errs and isinstance(errs[0], dict):
                code = errs[0].get("code", "")
                msg = errs[0].get("message", "")
                return f"{code}: {msg}" if code and msg else code or msg
        except Exception:  # noqa: BLE001
            pass
        return ""


class Transport:
    """HTTP to one registry host. Thread-safe; share one per registry between download threads."""

    def __init__(self, domain: str, options: RegistryOptions | None = None, repo_path: str | None = None) -> None:
        import urllib3

        self.domain = domain  # what references use, e.g. docker.io or 127.0.0.1:5000
        self.endpoint = "registry-1.docker.io" if domain == "docker.io" else domain
        self.options = options or RegistryOptions()
        self._pools = urllib3.PoolManager(num_pools=16, maxsize=self.options.max_connections, block=False,
                                          retries=False, timeout=urllib3.Timeout(
                                              connect=self.options.connect_timeout, read=self.options.timeout))
        if not self.options.tls_verify:
            # The user asked for it (--tls-verify=false); one warning per request would only be noise.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._auth_lock = threading.RLock()
        self._scheme: str | None = None
        creds = self.options.credentials
        if creds is None:
            files = list(self.options.auth_files) if self.options.auth_files is not None else None
            creds = find_credentials(domain, repo_path, files)
        self.auth = Authenticator(domain, creds, self._fetch_plain)

    # --- TLS -------------------------------------------------------------------------------------

    def ssl_context(self, hostport: str) -> ssl.SSLContext:
        with self._lock:
            ctx = self._ssl.get(hostport)
            if ctx is not None:
                return ctx
            ctx = ssl.create_default_context()
            # urllib3 matches the hostname itself when the context does not (and must, for IP addresses
            # with urllib3 1.26, which sends no SNI for them); certificates are still verified.
            ctx.check_hostname = False
            if not self.options.tls_verify:
                ctx.verify_mode = ssl.CERT_NONE
            dirs = self.options.certs_dirs if self.options.certs_dirs is not None else default_certs_dirs()
            for parent in dirs:
                d = os.path.join(parent, hostport)
                for crt in sorted(glob.glob(os.path.join(d, "*.crt"))):
                    try:
                        ctx.load_verify_locations(cafile=crt)
                    except (ssl.SSLError, OSError) as e:
                        raise RegistryError(f"cannot load CA certificate {crt}: {e}") from e
                for cert in sorted(glob.glob(os.path.join(d, "*.cert"))):
                    key = cert[: -len(".cert")] + ".key"
                    if not os.path.exists(key):
                        raise RegistryError(f"client certificate {cert} has no key {key}")
                    try:
                        ctx.load_cert_chain(cert, key)
                    except (ssl.SSLError, OSError) as e:
                        raise RegistryError(f"cannot load client certificate {cert}: {e}") from e
            self._ssl[hostport] = ctx
            return ctx

    def _http_allowed(self) -> bool:
        return is_loopback(self.endpoint) or not self.options.tls_verify

    # --- raw requests ----------------------------------------------------------------------------

    def _urlopen(self, method: str, url: str, headers: dict[str, str], body: Any, preload: bool,
                 probe: bool = False) -> Any:
        parts = urlsplit(url)
        pool_kw: dict[str, Any] = {}
        if probe:
            # Only "does it speak TLS?": no CA bundle to load (~25 ms), nothing sent but GET /v2/.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            pool_kw.update(ssl_context=ctx, cert_reqs="CERT_NONE", assert_hostname=False)
        elif parts.scheme == "https":
            pool_kw["ssl_context"] = self.ssl_context(parts.netloc)
            if not self.options.tls_verify:
                pool_kw["cert_reqs"] = "CERT_NONE"
                pool_kw["assert_hostname"] = False
        pool = self._pools.connection_from_url(url, pool_kwargs=pool_kw)
        # enforce_content_length: a body cut short is an error (the default only from urllib3 2 on).
        return pool.urlopen(method, url, headers=headers, body=body, preload_content=preload,
                            redirect=False, retries=False, assert_same_host=False, decode_content=False,
                            enforce_content_length=True)

    def _classify(self, e: Exception, url: str) -> RegistryError:
        import urllib3.exceptions as ue

        host = urlsplit(url).netloc
        reason = getattr(e, "reason", None) or e
        if isinstance(e, ue.SSLError) or isinstance(reason, ssl.SSLError):
            text = str(reason)
            if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text or \
                    "doesn't match" in text or "does not match" in text:
                return RegistryError(
                    f"TLS certificate of {host} is not trusted: {getattr(reason, 'verify_message', None) or reason}",
                    hint=f"put the registry's CA certificate in ~/.config/containers/certs.d/{host}/ca.crt, "
                    "or pass --tls-verify=false")
            return RegistryError(f"TLS error talking to {host}: {reason}")
        name_error = getattr(ue, "NameResolutionError", None)  # urllib3 >= 2
        if (name_error is not None and isinstance(e, name_error)) or "Name or service not known" in str(e):
            return RegistryError(f"cannot resolve registry host {host}", hint="check the name and your DNS")
        if isinstance(e, (ue.NewConnectionError, ue.ConnectTimeoutError)) or "Connection refused" in str(e):
            return RegistryError(f"cannot connect to registry {host}: {_short(reason)}",
                                 hint="check the registry address and that it is running and reachable")
        if isinstance(e, ue.ReadTimeoutError):
            return RegistryError(f"registry {host} timed out")
        return RegistryError(f"connection to {host} failed: {_short(reason)}")

    def _fetch_plain(self, url: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        """GET without registry auth (token endpoint). Retries transient failures."""
        hdrs = {"User-Agent": USER_AGENT, **headers}
        resp = self._with_retries("GET", url, hdrs, None, preload=True)
        return resp.status, resp.headers, resp.data

    def _with_retries(self, method: str, url: str, headers: dict[str, str], body: Any, preload: bool,
                      rewind: Any = None) -> HTTPResponse:
        import urllib3.exceptions as ue

        attempt = 0
        while True:
            try:
                raw = self._urlopen(method, url, headers, body, preload)
            except ue.HTTPError as e:
                err = self._classify(e, url)
                err.transient = _transient(e)  # type: ignore[attr-defined]
                if isinstance(e, ue.SSLError) or attempt >= self.options.retries or not _transient(e) or (
                        body is not None and rewind is None):
                    raise err from e
                log.debug("retrying %s %s after %s", method, _redact(url), err)
            else:
                resp = HTTPResponse(raw, url)
                if resp.status not in TRANSIENT_STATUS or attempt >= self.options.retries or (
                        body is not None and rewind is None):
                    return resp
                delay = _retry_after(resp)
                resp.release()
                log.debug("retrying %s %s after HTTP %d", method, _redact(url), resp.status)
                if delay is not None:
                    time.sleep(min(delay, 10.0))
                    attempt += 1
                    if rewind is not None:
                        body = rewind()
                    continue
            time.sleep(self.options.backoff * (2 ** attempt) * (0.75 + random.random() / 2))
            attempt += 1
            if rewind is not None:
                body = rewind()

    # --- registry requests -----------------------------------------------------------------------

    @property
    def base(self) -> str:
        if self._scheme is None:
            self._probe_scheme()
        return f"{self._scheme}://{self.endpoint}"

    def _probe_scheme(self) -> None:
        """HTTPS, unless plain HTTP is allowed (loopback, or --tls-verify=false) and the registry
        does not speak TLS.  Certificates are verified by every real request, not by the probe."""
        import urllib3.exceptions as ue

        if not self._http_allowed():
            self._scheme = "https"
            return
        url = f"https://{self.endpoint}/v2/"
        try:
            raw = self._urlopen("GET", url, {"User-Agent": USER_AGENT}, None, True, probe=True)
            raw.release_conn()
            self._scheme = "https"
            return
        except ue.HTTPError as e:
            err = self._classify(e, url)
            not_tls = isinstance(e, ue.ProtocolError) or (isinstance(e, ue.SSLError) and "not trusted" not in str(err))
            if not_tls and self._http_allowed():
                log.debug("registry %s does not speak TLS; using plain HTTP", self.endpoint)
                self._scheme = "http"
                return
            if isinstance(e, ue.SSLError):
                if not_tls:
                    err.hint = ("if the registry serves plain HTTP, pass --tls-verify=false "
                                "(plain HTTP is used by itself only for localhost registries)")
                raise err from e
            # Connection problems: the real request retries and reports them.
            self._scheme = "https"

    def request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...] = (), headers: dict[str, str] | None = None,
                body: Any = None, rewind: Any = None, preload: bool = True, follow_redirects: bool = True,
                ok: tuple[int, ...] = ()) -> HTTPResponse:
        """An authenticated request to the registry. ``path_or_url`` is ``/v2/...`` or an absolute URL
        (upload locations). Handles 401 (once per scheme), redirects (dropping Authorization when the
        host changes) and transient failures. ``rewind()`` must return a fresh body for retries."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        hdrs = {"User-Agent": USER_AGENT, **self.options.extra_headers, **(headers or {})}
        auth_tries = 0
        redirects = 0
        while True:
            h = dict(hdrs)
            same_host = urlsplit(url).netloc == self.endpoint
            ah = None
            if same_host:
                with self._auth_lock:
                    ah = self.auth.header(scopes)
                if ah:
                    h["Authorization"] = ah
            resp = self._with_retries(method, url, h, body, preload, rewind)
            if resp.status == 401 and same_host and auth_tries < 3:
                auth_tries += 1
                www = resp.headers.get("WWW-Authenticate")
                resp.release()
                with self._auth_lock:
                    self.auth.on_401(www, scopes, ah)
                if rewind is not None:
                    body = rewind()
                elif body is not None and not isinstance(body, (bytes, bytearray)):
                    raise RegistryError(f"{method} {urlsplit(url).path}: authentication required mid-upload")
                continue
            if follow_redirects and resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                loc = resp.headers.get("Location")
                resp.release()
                if not loc or redirects >= 10:
                    raise RegistryError(f"registry {self.domain}: bad or too many redirects for {urlsplit(url).path}")
                redirects += 1
                url = urljoin(url, loc)
                continue
            return resp

    def absolute(self, location: str) -> str:
        return urljoin(self.base + "/", location)

    def close(self) -> None:
        self._pools.clear()


def _transient(e: Exception) -> bool:
    import urllib3.exceptions as ue

    return isinstance(e, (ue.NewConnectionError, ue.ConnectTimeoutError, ue.ReadTimeoutError, ue.ProtocolError))


def _retry_after(resp: HTTPResponse) -> float | None:
    v = resp.headers.get("Retry-After")
    if v and v.strip().isdigit():
        return float(v.strip())
    return None


def _short(e: Any) -> str:
    s = str(e)
    # urllib3 messages carry the connection object repr: keep the useful tail.
    if "Errno" in s:
        s = s[s.index("[Errno"):]
    elif ": " in s and s.startswith("<"):
        s = s.split(": ", 1)[1]
    return s.strip()


def _redact(url: str) -> str:
    """URLs never carry credentials here, but upload locations carry state tokens: keep logs short."""
    return url.split("?", 1)[0]
