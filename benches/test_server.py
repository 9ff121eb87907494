"""The Docker API service (issue 12), each path beside its peers in the same run; ratios printed
at the end.

* `containers.run(image, "true", remove=True)` three ways, one image, one store, the default
  network in all three: docker-py through `sbx system service`'s socket, sbx's own Python API
  (`sandbox.containers.run`) from a warm process, and the CLI (`sbx run --rm`).  Target: the
  socket path <= 1.5x the CLI.
* testcontainers' start-to-ready of a container with an exposed port (busybox httpd; ready when
  an HTTP GET through the published port answers), beside the same through sbx's Python API.
* The service's RSS once it has served those requests and sits idle (target <= 40 MiB).

Run as an unprivileged user:  pytest benches/test_server.py --benchmark-columns=median,iqr,rounds
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from images_support import RatioReport, check_run  # noqa: E402

docker = pytest.importorskip("docker")

IMAGE = "busybox:latest"
HTTPD = ["sh", "-c", "mkdir -p /www && echo ready > /www/index.html && exec httpd -f -p 8080 -h /www"]


class ServerReport(RatioReport):
    TITLE = "sbx Docker API service / peers (medians, this run)"


PAIRS = [
    ("test_server_docker_py_run_rm", "test_server_cli_run_rm", 1.5),
    ("test_server_docker_py_run_rm", "test_server_api_run_rm", None),
    ("test_server_testcontainers_ready", "test_server_api_ready", None),
]
REPORT = ServerReport(PAIRS)
RSS_TARGET_MIB = 40


@pytest.fixture(scope="module", autouse=True)
def _report(pytestconfig):
    pm = pytestconfig.pluginmanager
    if not pm.is_registered(REPORT):
        pm.register(REPORT, "sbx-server-bench-report")
    return REPORT


def _rounds(full, n):
    return {"rounds": n if full else 1, "warmup_rounds": 2 if full else 0}


@pytest.fixture(scope="module")
def store(tmp_path_factory, rootfs, sbx_cmd):
    """This module's data directory with the bench rootfs imported as busybox:latest."""
    d = tmp_path_factory.mktemp("server-store")
    tar = d.parent / "server-rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(rootfs, arcname=".")
    check_run(sbx_cmd + ["import", str(tar), IMAGE], dict(os.environ, SBX_ROOT=str(d)))
    yield str(d)
    import sandbox
    sandbox.run(["rm", "-rf", str(d)], rootfs="/", network="host", namespaces=("user",))


@pytest.fixture(scope="module")
def env(store):
    return dict(os.environ, SBX_ROOT=store)


@pytest.fixture(scope="module")
def service(tmp_path_factory, sbx_cmd, env):
    path = tmp_path_factory.mktemp("server-sock") / "sbx.sock"
    p = subprocess.Popen(sbx_cmd + ["system", "service", "--socket", f"unix://{path}"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    assert line.strip() == f"export DOCKER_HOST=unix://{path}", line
    p.path = path
    yield p
    p.terminate()
    p.wait(30)


@pytest.fixture(scope="module")
def client(service):
    c = docker.DockerClient(base_url=f"unix://{service.path}", version="1.44", timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def api(store):
    from sandbox import config, containers
    with config.use(config.Context.from_env(root=store)):  # the store the CLI rows use (SBX_ROOT)
        yield containers


def test_server_docker_py_run_rm(benchmark, client, full):
    assert benchmark.pedantic(client.containers.run, args=(IMAGE, "true"), kwargs={"remove": True},
                              **_rounds(full, 20)) == b""
    assert client.containers.list(all=True) == []


def test_server_api_run_rm(benchmark, api, full):
    assert benchmark.pedantic(api.run, args=(IMAGE, "true"), kwargs={"remove": True, "detach": False},
                              **_rounds(full, 20)) == b""
    assert api.list(all=True) == []


def test_server_cli_run_rm(benchmark, sbx_cmd, env, full):
    benchmark.pedantic(check_run, args=(sbx_cmd + ["run", "--rm", IMAGE, "true"], env), **_rounds(full, 20))


def _http_ready(port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2).read() == b"ready\n":
                return
        except OSError:
            pass
    raise AssertionError(f"nothing answered on port {port} within {timeout} s")


class _Started:
    """pedantic's untimed setup removes the container the previous round made ready."""

    def __init__(self):
        self.last = None

    def clear(self):
        if self.last is not None:
            self.last()
            self.last = None
        return (), {}


def test_server_testcontainers_ready(benchmark, service, client, full, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{service.path}")
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    started = _Started()

    def start_to_ready():
        tc = DockerContainer(IMAGE).with_command(HTTPD).with_exposed_ports(8080)
        tc.start()
        started.last = tc.stop
        _http_ready(int(tc.get_exposed_port(8080)))
    benchmark.pedantic(start_to_ready, setup=started.clear, **_rounds(full, 10))
    started.clear()
    assert client.containers.list(all=True) == []


def test_server_api_ready(benchmark, api, full):
    started = _Started()

    def start_to_ready():
        c = api.run(IMAGE, HTTPD, ports={"8080/tcp": None})
        started.last = lambda: c.remove(force=True)
        c.reload()
        _http_ready(int(c.ports["8080/tcp"][0]["HostPort"]))
    benchmark.pedantic(start_to_ready, setup=started.clear, **_rounds(full, 10))
    started.clear()
    assert api.list(all=True) == []


def test_server_idle_rss(service, client):
    """After the rows above (or at least a run through it), idle: VmRSS of the service."""
    assert client.containers.run(IMAGE, "true", remove=True) == b""
    with open(f"/proc/{service.pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    mib = rss_kib / 1024
    REPORT.info.append(f"service idle RSS: {mib:.1f} MiB   target <= {RSS_TARGET_MIB} MiB")
    assert mib <= RSS_TARGET_MIB, f"the service's RSS is {mib:.1f} MiB"
