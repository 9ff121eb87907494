"""docker-compose 1.29 (Debian's, which drives the Docker API through docker-py) against
`sbx system service`, unchanged: a three-service application with a build, a user network,
a published port, `depends_on` and a named volume, through `up -d`, `ps`, `logs`, `exec`, `run`,
a recreation that keeps the volume, and `down -v`, which must leave nothing behind.  db runs
under `init: true` (sbx-init as PID 1 on a user-defined network; SIGTERM stops it at once)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request

import pytest

import sbxtest

docker = pytest.importorskip("docker")

COMPOSE = """\
version: "3.8"
services:
  db:
    image: busybox:latest
    command: ["sh", "-c", "mkdir -p /data/www && echo boot >> /data/boots && echo db-ready > /data/www/state &&
               echo db up && exec httpd -f -p 5432 -h /data/www"]
    volumes: ["dbdata:/data"]
    networks: [backend]
    init: true
  app:
    build: ./app
    command: ["sh", "-c", "until wget -qO /www/db.txt http://db:5432/state; do sleep 0.1; done;
               echo app up && exec httpd -f -p 8080 -h /www"]
    depends_on: [db]
    networks: [backend]
    stop_signal: SIGKILL
  web:
    image: busybox:latest
    command: ["sh", "-c", "mkdir /www && until wget -qO /www/index.html http://app:8080/index.html &&
               wget -qO /www/db.txt http://app:8080/db.txt; do sleep 0.1; done; echo web up &&
               exec httpd -f -p 80 -h /www"]
    depends_on: [app]
    ports: ["${WEB_PORT}:80"]
    networks: [backend]
    stop_signal: SIGKILL
networks:
  backend: {}
volumes:
  dbdata: {}
"""


ATTACHED = """\
version: "3.8"
services:
  one:
    image: busybox:latest
    command: ["sh", "-c", "echo one says hi; sleep 1; echo one done; exit 4"]
  two:
    image: busybox:latest
    command: ["sh", "-c", "echo two waits; exec sleep 300"]
    stop_signal: SIGKILL
"""


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture()
def project(tmp_path, service, image):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text(
        "FROM busybox:latest\nRUN mkdir /www && echo from-app > /www/index.html\n")
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    (tmp_path / "attached.yml").write_text(ATTACHED)
    port = _free_port()
    name = f"sbxc{os.getpid()}"
    env = dict(os.environ, DOCKER_HOST=f"unix://{service}", DOCKER_CONFIG=str(tmp_path / "docker-config"),
               WEB_PORT=str(port), COMPOSE_PROJECT_NAME=name)

    def compose(*args, check=True):
        r = subprocess.run([exe, "--ansi", "never", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r
    compose.name, compose.port = name, port
    client = docker.DockerClient(base_url=f"unix://{service}", version="auto", timeout=60)
    yield compose, client
    if client.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"}):
        compose("down", "-v", "--rmi", "local", check=False)  # the test failed half-way
    client.close()


def _get(port, path):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read()
    except OSError:
        return None


@pytest.mark.slow  # each docker-compose command is a Python process of ~1-3 s here
def test_compose_up_ps_logs_exec_down(project):
    compose, client = project
    name, port = compose.name, compose.port
    up = compose("up", "-d")
    assert f"Successfully tagged {name}_app:latest" in up.stdout + up.stderr
    # The published port reaches web, which fetched from app by its service name, which fetched
    # from db (writing into the named volume) by its: the build, the network's DNS and the order.
    sbxtest.wait_for(lambda: _get(port, "/db.txt") is not None, timeout=30)
    assert _get(port, "/index.html") == b"from-app\n"
    assert _get(port, "/db.txt") == b"db-ready\n"

    ps = compose("ps").stdout
    rows = {line.split()[0]: line for line in ps.splitlines() if line.startswith(name + "_")}
    assert sorted(rows) == [f"{name}_{s}_1" for s in ("app", "db", "web")], ps
    assert all(" Up " in r for r in rows.values()), ps
    assert f"0.0.0.0:{port}->80/tcp" in rows[f"{name}_web_1"], ps
    logs = compose("logs").stdout  # (web printed its line before it served the page above)
    for svc in ("db", "app", "web"):
        assert any(line.startswith(f"{svc}_1 ") and line.endswith(f"| {svc} up") for line in logs.splitlines()), logs

    assert compose("exec", "-T", "app", "cat", "/www/index.html").stdout == "from-app\n"
    r = compose("exec", "-T", "db", "sh", "-c", "echo to-stderr >&2; exit 3", check=False)
    assert (r.returncode, r.stderr) == (3, "to-stderr\n")

    # A one-off: compose links it to app (app, app_1, NAME_app_1): /etc/hosts lines on the network.
    r = compose("run", "--rm", "-T", "app", "sh", "-c", "wget -qO- http://app_1:8080/index.html; exit 6", check=False)
    assert (r.returncode, r.stdout) == (6, "from-app\n"), r.stderr

    # A recreated db keeps its named volume.
    assert compose("exec", "-T", "db", "cat", "/proc/1/comm").stdout == "memfd:sbx-init\n"
    compose("up", "-d", "--force-recreate", "--no-deps", "db")
    sbxtest.wait_for(lambda: compose("exec", "-T", "db", "cat", "/data/boots", check=False).stdout == "boot\nboot\n")

    net = client.networks.get(f"{name}_backend")
    assert net.attrs["Labels"]["com.docker.compose.project"] == name
    assert client.volumes.get(f"{name}_dbdata").attrs["Labels"]["com.docker.compose.volume"] == "dbdata"

    compose("down", "-v")
    mine = {"label": f"com.docker.compose.project={name}"}
    assert client.containers.list(all=True, filters=mine) == []
    assert client.networks.list(filters=mine) == []
    assert client.volumes.list(filters=mine) == []
    assert _get(port, "/index.html") is None
    client.images.remove(f"{name}_app")


@pytest.mark.slow
def test_compose_up_attached_aborts_on_exit(project):
    """`up` in the foreground: the services' output through attach, and the exit of one seen
    through /events (compose watches them), which stops the others and gives its exit code."""
    compose, client = project
    r = compose("-f", "attached.yml", "up", "--abort-on-container-exit", "--exit-code-from", "one", check=False)
    assert r.returncode == 4, (r.stdout, r.stderr)
    out = r.stdout.splitlines()
    for line in ("one says hi", "one done", "two waits"):
        assert any(x.endswith(f"| {line}") for x in out), r.stdout
    assert f"{compose.name}_one_1 exited with code 4" in r.stdout + r.stderr
    compose("-f", "attached.yml", "down")
    assert client.containers.list(all=True, filters={"label": f"com.docker.compose.project={compose.name}"}) == []
