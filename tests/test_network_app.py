"""Issue 11's whole story, black-box, as each test user and root: an application split into
containers that find each other by name on a user-defined network, reached from the host through
one published port; and a build step that fetches over the default network.  Every server is
one the test starts: in containers, or on the host's own non-loopback address (what slirp4netns's
default, --disable-host-loopback, lets a container reach)."""
import http.server
import os
import socket
import tarfile
import threading
import time
import urllib.request

import pytest

import sbxtest
from sbxtest import ok, sbx

# Busybox httpd runs these as CGI programs.  web asks app, app asks db; each adds its part.
# (No wget -T: busybox 1.35 wget crashes with it.)
DB = "while true; do echo 'rows: 3' | nc -l -p 5432; done"
APP_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "app($(nc -w 3 db 5432 </dev/null))"
"""
WEB_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "web<$(wget -q -O - http://app:8080/cgi-bin/q)>"
"""


@pytest.fixture()
def app_env(tmp_path, monkeypatch, busybox_rootfs):
    """A store and a runtime root of the test's own (its own network holder), emptied after."""
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("SBX_RUNROOT", str(run))
    yield tmp_path
    ids = sbx("ps", "-a", "-q").stdout.split()
    if ids:
        sbx("rm", "-f", *ids)
    sbx("network", "prune", "-f")


def _www(d, name, cgi):
    """A document root with one CGI program, readable by the container's users."""
    cgi_dir = d / name / "cgi-bin"
    cgi_dir.mkdir(parents=True)
    (cgi_dir / "q").write_text(cgi)
    (cgi_dir / "q").chmod(0o755)
    for p in (d, d / name, cgi_dir):
        p.chmod(0o755)
    return d / name


def _get(url, deadline):
    """The body at `url`, retried while the chain of servers comes up."""
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read().decode()
            if "rows: 3" in body:
                return body
            last = body
        except OSError as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{url}: {last!r}")


def test_web_app_db_on_one_network_with_one_published_port(app_env, busybox_rootfs):
    """web (published) -> app -> db by name on a user network; only web's port is published,
    and the host reaches the whole chain through it."""
    www = app_env / "www"
    www.mkdir()
    app_root, web_root = _www(www, "app", APP_CGI), _www(www, "web", WEB_CGI)
    ok(sbx("network", "create", "shop"))
    ok(sbx("run", "-d", "--name", "db", "--network", "shop", "--rootfs", busybox_rootfs, "sh", "-c", DB))
    ok(sbx("run", "-d", "--name", "app", "--network", "shop", "-v", f"{app_root}:/www:ro",
           "--rootfs", busybox_rootfs, "httpd", "-f", "-p", "8080", "-h", "/www"))
    ok(sbx("run", "-d", "--name", "web", "--network", "shop", "-p", "127.0.0.1::8080", "-v", f"{web_root}:/www:ro",
           "--rootfs", busybox_rootfs, "httpd", "-f", "-p", "8080", "-h", "/www"))
    mapping = ok(sbx("port", "web", "8080")).split()[0]
    host, port = mapping.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0, mapping
    body = _get(f"http://127.0.0.1:{port}/cgi-bin/q", time.monotonic() + 60)
    assert body.strip() == "web<app(rows: 3)>", body
    # Only web is published: app and db have no host port.
    assert ok(sbx("port", "app")).strip() == "" and ok(sbx("port", "db")).strip() == ""



@pytest.fixture()
def http_files(tmp_path):
    """An HTTP server for tmp_path/files on the host's own non-loopback address."""
    addr = sbxtest.host_address()
    assert addr and not addr.startswith("127."), "the host needs a non-loopback IPv4 address for this test"
    root = tmp_path / "files"
    root.mkdir()
    (root / "pkg.txt").write_text("fetched over the default network\n")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer((addr, 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://{addr}:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_build_run_fetches_over_the_default_network(tmp_path, monkeypatch, busybox_rootfs, http_files):
    """Docker's RUN has a network by default: a step downloads a file with no --network given."""
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    tar = tmp_path / "base.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    ok(sbx("import", tar, "netbase:1", timeout=120))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM netbase:1\nRUN wget -q -O /pkg.txt {http_files}/pkg.txt\n")
    ok(sbx("build", "-t", "fetched:1", ctx, timeout=180))
    assert ok(sbx("run", "--rm", "--network", "none", "fetched:1", "cat", "/pkg.txt")) == \
        "fetched over the default network\n"
    os.remove(tar)
