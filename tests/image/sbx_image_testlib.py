"""Helpers for the image tests (no sbx code): build layer tars and OCI images offline from busybox-static,
start docker-registry variants and a token issuer, drive skopeo. Loaded by conftest.py."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _sandbox_path() -> str:
    """The sys.path entry holding the `sandbox` package these tests import (installed or the checkout):
    CLI subprocesses get it as PYTHONPATH so that they run the same code."""
    import sandbox

    return str(Path(sandbox.__file__).resolve().parents[1])


SANDBOX_PATH = _sandbox_path()
APT = {"docker-registry": "docker-registry", "skopeo": "skopeo", "umoci": "umoci", "htpasswd": "apache2-utils",
       "openssl": "openssl", "busybox": "busybox-static"}


def find_binary(name: str) -> str | None:
    for d in (None, "/usr/bin", "/bin", "/usr/sbin"):
        p = shutil.which(name) if d is None else (os.path.join(d, name) if os.access(os.path.join(d, name), os.X_OK) else None)
        if p:
            return p
    return None


def need(name: str) -> str:
    p = find_binary(name)
    if p is None:
        pytest.skip(f"{name} is not installed (Debian package {APT.get(name, name)})")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- building images offline ------------------------------------------------------------------------

@dataclass
class Entry:
    name: str
    type: str = "file"  # file, dir, symlink, hardlink, fifo, chr
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    link: str = ""
    mtime: int = 1_700_000_000


def make_tar(entries: list[Entry]) -> bytes:
    """An uncompressed layer tar with exactly these entries, in this order (deterministic)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.uid, ti.gid, ti.mtime = e.uid, e.gid, e.mtime
            ti.uname = ti.gname = ""
            body = None
            if e.type == "file":
                ti.type, ti.size, ti.mode = tarfile.REGTYPE, len(e.data), 0o644 if e.mode is None else e.mode
                body = io.BytesIO(e.data)
            elif e.type == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755 if e.mode is None else e.mode
            elif e.type == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e.link, 0o777
            elif e.type == "hardlink":
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, e.link, 0o644 if e.mode is None else e.mode
            elif e.type == "fifo":
                ti.type, ti.mode = tarfile.FIFOTYPE, 0o644
            elif e.type == "chr":
                ti.type, ti.mode, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 0o666, 1, 3
            else:
                raise ValueError(e.type)
            tf.addfile(ti, body)
    return buf.getvalue()


def busybox_entries() -> list[Entry]:
    bb = need("busybox")
    with open(bb, "rb") as f:
        data = f.read()
    ents = [Entry("bin", "dir"), Entry("bin/busybox", "file", data, 0o755)]
    for tool in ("sh", "ls", "cat", "true", "echo", "id"):
        ents.append(Entry(f"bin/{tool}", "symlink", link="busybox"))
    ents += [Entry("etc", "dir"), Entry("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n"),
             Entry("tmp", "dir", mode=0o1777), Entry("root", "dir", mode=0o700)]
    return ents


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}


@dataclass
class BuiltImage:
    manifest: bytes
    config: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha(self.manifest)

    @property
    def id(self) -> str:
        return sha(self.config)


def build_image(layers: list[bytes], *, comp: str = "gzip", arch: str | None = None, os_: str = "linux",
                cmd: list[str] | None = None, created: str = "2024-01-02T03:04:05Z", env: list[str] | None = None,
                config: dict[str, Any] | None = None) -> BuiltImage:
    """An OCI image (manifest, config, blobs) from uncompressed layer tars."""
    import platform

    arch = arch or {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    blobs: dict[str, bytes] = {}
    descs = []
    for t in layers:
        c = compress(t, comp)
        blobs[sha(c)] = c
        descs.append({"mediaType": LAYER_TYPES[comp], "digest": sha(c), "size": len(c)})
    config = json.dumps({
        "created": created, "architecture": arch, "os": os_,
        "config": {"Cmd": cmd or ["/bin/sh"], "Env": env or ["PATH=/bin"], "WorkingDir": "/", **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]},
        "history": [{"created": created, "created_by": "sbx tests"} for _ in layers],
    }, sort_keys=True).encode()
    blobs[sha(config)] = config
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": descs}, sort_keys=True).encode()
    blobs[sha(manifest)] = manifest
    return BuiltImage(manifest, config, blobs)


def write_layout(path: Path, images: list[tuple[BuiltImage, str]], *, index: dict[str, Any] | None = None) -> Path:
    """Write an OCI layout with ``images`` as (image, ref.name) entries, or a given top-level index."""
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    manifests = []
    for img, name in images:
        for d, data in img.blobs.items():
            (path / "blobs" / "sha256" / d[7:]).write_bytes(data)
        desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
                "size": len(img.manifest)}
        if name:
            desc["annotations"] = {"org.opencontainers.image.ref.name": name}
        manifests.append(desc)
    doc = index or {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    (path / "index.json").write_text(json.dumps(doc))
    return path


def multi_arch_index(path: Path, native: BuiltImage, other: BuiltImage, other_arch: str, name: str) -> Path:
    """A layout whose index.json names an index blob with two platform manifests."""
    write_layout(path, [(native, ""), (other, "")])
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other.digest, "size": len(other.manifest),
         "platform": {"os": "linux", "architecture": other_arch}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": native.digest, "size": len(native.manifest),
         "platform": {"os": "linux", "architecture": arch}},
    ]}).encode()
    (path / "blobs" / "sha256" / sha(idx)[7:]).write_bytes(idx)
    write_layout(path, [], index={"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(idx), "size": len(idx),
         "annotations": {"org.opencontainers.image.ref.name": name}}]})
    return path


# --- peers ------------------------------------------------------------------------------------------

def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    p = subprocess.run(cmd, **kw)
    if kw.get("check", True) and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def skopeo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([need("skopeo"), "--insecure-policy", *args], env=env)


@dataclass
class Registry:
    workdir: Path
    port: int
    scheme: str
    proc: subprocess.Popen[bytes] | None = None
    user: str | None = None
    password: str | None = None
    ca: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def blob_path(self, digest: str) -> Path:
        h = digest[7:]
        return self.storage / "docker/registry/v2/blobs/sha256" / h[:2] / h / "data"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def skopeo_dest(self) -> list[str]:
        args = ["--dest-tls-verify=false"]
        if self.user:
            args.append(f"--dest-creds={self.user}:{self.password}")
        return args

    def skopeo_src(self) -> list[str]:
        args = ["--src-tls-verify=false"]
        if self.user:
            args.append(f"--src-creds={self.user}:{self.password}")
        return args

    def push_layout(self, layout: Path, ref_name: str, repo: str, *, all_: bool = False) -> None:
        skopeo("copy", *(["--all"] if all_ else []), *self.skopeo_dest(), f"oci:{layout}:{ref_name}",
               f"docker://{self.host}/{repo}")

    def inspect_digest(self, repo: str, raw: bool = False) -> str:
        creds = [f"--creds={self.user}:{self.password}"] if self.user else []
        out = skopeo("inspect", "--tls-verify=false", *creds, *(["--raw"] if raw else []),
                     f"docker://{self.host}/{repo}").stdout
        if raw:
            return sha(out.encode())
        return json.loads(out)["Digest"]


def _openssl(*args: str, cwd: Path) -> None:
    run([need("openssl"), *args], cwd=cwd)


def make_ca_and_cert(d: Path, san: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``san`` signed by it. Returns (ca, cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sbx test CA",
             "-keyout", "ca.key", "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"
                               "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", "server.crt", "-extfile", "ext.cnf", cwd=d)
    return d / "ca.crt", d / "server.crt", d / "server.key"


class TokenIssuer:
    """A tiny Docker token service: GET /token?service=..&scope=.. with optional Basic auth.

    Users: ``alice``/``secret`` may pull and push everything; anonymous callers may pull ``public/*``.
    Tokens are RS256 JWTs with an ``x5c`` header holding the (self-signed) signing certificate, which the
    registry trusts through ``rootcertbundle``."""

    USERS = {"alice": "secret"}

    def __init__(self, d: Path, service: str, issuer: str) -> None:
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sbx token signer",
                 "-keyout", "signer.key", "-out", "signer.crt", cwd=d)
        der = subprocess.run([need("openssl"), "x509", "-in", str(d / "signer.crt"), "-outform", "DER"],
                             capture_output=True, check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.service, self.issuer = service, issuer
        self.requests: list[dict[str, Any]] = []
        issuer_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                issuer_self.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _sign(self, claims: dict[str, Any]) -> str:
        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run([need("openssl"), "dgst", "-sha256", "-sign", str(self.dir / "signer.key")],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{b64(sig)}"

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if self.USERS.get(u) != p:
                h.send_response(401)
                h.end_headers()
                return
            user = u
        self.requests.append({"user": user, "scopes": q.get("scope", []), "service": q.get("service")})
        access = []
        for s in q.get("scope", []):
            typ, name, actions = s.split(":", 2) if s.count(":") >= 2 else (s, "", "")
            want = actions.split(",")
            if user:
                granted = want
            else:
                granted = [a for a in want if a == "pull" and name.startswith("public/")]
            if granted:
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        token = self._sign({"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300,
                            "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def start_registry(workdir: Path, *, auth: str = "none", tls: bool = False,
                   san: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Registry, Any]:
    """auth: none | htpasswd | token; ``san``: the TLS certificate's names. Returns (registry, token issuer or None)."""
    binary = need("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    reg = Registry(workdir, port, "https" if tls else "http")
    cfg = [
        "version: 0.1",
        "log:", "  level: error", "  accesslog:", "    disabled: true",
        "storage:", "  filesystem:", f"    rootdirectory: {workdir / 'storage'}", "  delete:", "    enabled: true",
        "http:", f"  addr: 127.0.0.1:{port}", "  secret: sbx-test-secret",
    ]
    if tls:
        ca, cert, key = make_ca_and_cert(workdir / "tls", san)
        reg.ca = ca
        cfg += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
    issuer = None
    if auth == "htpasswd":
        need("htpasswd")
        reg.user, reg.password = "bob", "hunter2"
        run([need("htpasswd"), "-Bbc", str(workdir / "htpasswd"), reg.user, reg.password])
        cfg += ["auth:", "  htpasswd:", "    realm: sbx-test", f"    path: {workdir / 'htpasswd'}"]
    elif auth == "token":
        issuer = TokenIssuer(workdir / "token", "sbx-test-registry", "sbx-test-issuer")
        reg.user, reg.password = "alice", "secret"
        cfg += ["auth:", "  token:", f"    realm: {issuer.realm}", "    service: sbx-test-registry",
                "    issuer: sbx-test-issuer", f"    rootcertbundle: {issuer.dir / 'signer.crt'}"]
    (workdir / "config.yml").write_text("\n".join(cfg) + "\n")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed with the process
    reg.proc = subprocess.Popen([binary, "serve", str(workdir / "config.yml")], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {(workdir / 'registry.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        reg.stop()
        raise AssertionError("docker-registry did not start")
    return reg, issuer




def multi_layers() -> list[bytes]:
    """Three layers exercising files, hardlinks, whiteouts and an opaque directory."""
    l1 = make_tar(busybox_entries())
    l2 = make_tar([
        Entry("etc", "dir"), Entry("etc/hello", "file", b"hello\n"), Entry("etc/gone", "file", b"bye\n"),
        Entry("data", "dir"), Entry("data/dir", "dir"), Entry("data/dir/old", "file", b"old\n"),
        Entry("data/keep", "file", b"keep\n", mode=0o600, uid=1000, gid=1000),
        Entry("data/link", "hardlink", link="data/keep"),
        Entry("data/fifo", "fifo"),
    ])
    l3 = make_tar([
        Entry("etc", "dir"), Entry("etc/.wh.gone", "file"),
        Entry("data", "dir"), Entry("data/dir", "dir"), Entry("data/dir/.wh..wh..opq", "file"),
        Entry("data/dir/new", "file", b"new\n"),
        Entry("usr", "dir"), Entry("usr/bin", "dir"), Entry("usr/bin/tool", "file", b"#!/bin/sh\n", mode=0o755),
    ])
    return [l1, l2, l3]


class FlakyProxy:
    """A reverse proxy in front of a registry that injects transient failures into blob downloads: the
    first ``fail_503`` blob GETs get HTTP 503, the next ``cut`` ones are cut off after half the body.
    Everything else is forwarded unchanged. ``injected`` lists what was done."""

    def __init__(self, target: str, *, fail_503: int = 0, cut: int = 0) -> None:
        import http.client

        self.target, self.fail_503, self.cut = target, fail_503, cut
        self.injected: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                is_blob = method == "GET" and "/blobs/sha256:" in self.path
                mode = None
                with proxy.lock:
                    if is_blob and proxy.fail_503 > 0:
                        proxy.fail_503 -= 1
                        mode = "503"
                    elif is_blob and proxy.cut > 0:
                        proxy.cut -= 1
                        mode = "cut"
                    if mode:
                        proxy.injected.append(mode)
                if mode == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(method, self.path, headers=headers)
                r = conn.getresponse()
                body = r.read()
                conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(r.getheader("Content-Length") or len(body)))
                self.end_headers()
                if method == "HEAD":
                    return
                self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._forward("HEAD")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
