"""`sbx system service`: the Docker Engine API on a unix socket, driven by the real clients
(docker-py, testcontainers-python, the docker CLI) unchanged, against real sandboxes.  The
service, the image and the client are tests/server/conftest.py's."""
from __future__ import annotations

import io
import os
import socket
import tarfile
import time
from pathlib import Path

import pytest

import sbxtest
from sbxtest import ok, sbx

docker = pytest.importorskip("docker")


LABELS = {"sbx-test": "server"}


def _raw(path, request: bytes) -> bytes:
    """One request on a fresh connection; the whole answer (the server closes or we read to the length)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    s.sendall(request)
    s.shutdown(socket.SHUT_WR)
    return _read_all(s)


def _read_all(s):
    """Everything until the peer closes; the socket is closed after."""
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out


def test_socket_mode_and_ping_headers(service):
    assert (os.stat(service).st_mode & 0o777) == 0o600
    head = _raw(service, b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").decode()
    assert head.startswith("HTTP/1.1 200"), head
    lower = head.lower()
    for h in ("api-version: 1.44", "ostype: linux", "docker-experimental: false", "builder-version:"):
        assert h in lower, head
    body = _raw(service, b"GET /v1.30/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert body.endswith(b"\r\n\r\nOK")


def test_version_negotiation_and_errors(client, service):
    v = client.version()
    assert v["ApiVersion"] == "1.44" and v["MinAPIVersion"] == "1.24" and v["Os"] == "linux"
    assert client.api.api_version == "1.44"
    assert client.ping() is True
    assert client.info()["OSType"] == "linux"
    with pytest.raises(docker.errors.NotFound) as e:
        client.containers.get("no-such-container-here")
    assert "No such container: no-such-container-here" in str(e.value)
    with pytest.raises(docker.errors.ImageNotFound):
        client.api.create_container("no-such-image-here:1", "true")
    with pytest.raises(docker.errors.APIError) as e:  # links: only on a user-defined network
        client.api.create_container("busybox", "true", host_config=client.api.create_host_config(
            links={"some-container": "alias"}, network_mode="none"))
    assert e.value.status_code == 400 and "links need a user-defined network" in str(e.value)
    r = client.api._get(client.api._url("/frobnicate/{0}", "x"))
    assert r.status_code == 501 and "/frobnicate/x" in r.json()["message"]
    too_new = _raw(service, b"GET /v1.99/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").decode()
    assert too_new.startswith("HTTP/1.1 400") and "Maximum supported API version is 1.44" in too_new


def test_run_output_printed_at_once(client):
    """The docker-py #425 case: a command that prints and exits at once is still seen."""
    assert client.containers.run("busybox", ["echo", "hello"], remove=True, labels=LABELS) == b"hello\n"
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 3"], remove=True, labels=LABELS)
    assert e.value.exit_status == 3 and b"bad" in e.value.stderr


def test_detached_container_lifecycle(client):
    c = client.containers.run("busybox", ["sh", "-c", "echo up; echo oops >&2; exec sleep 300"], detach=True,
                              name="api-web", labels=dict(LABELS, role="web"))
    sbxtest.wait_for(lambda: b"up" in c.logs())
    c.reload()
    assert c.status == "running" and c.name == "api-web"
    assert c.logs(stdout=True, stderr=False) == b"up\n"
    assert c.logs(stdout=False, stderr=True) == b"oops\n"
    assert c.exec_run(["echo", "at once"]) == (0, b"at once\n")
    code, (out, err) = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 4"], demux=True)
    assert (code, out, err) == (4, b"o\n", b"e\n")
    chunks = list(c.exec_run(["sh", "-c", "echo one; echo two"], stream=True).output)
    assert b"".join(chunks) == b"one\ntwo\n"
    tty = c.exec_run(["sh", "-c", "tty >/dev/null && echo tty"], tty=True)
    assert tty.exit_code == 0 and tty.output.strip() == b"tty"
    assert [x.name for x in client.containers.list(filters={"label": "role=web"})] == ["api-web"]
    assert client.containers.list(filters={"label": "role=nobody"}) == []
    top = c.top()
    assert any("sleep" in " ".join(p) for p in top["Processes"])
    with pytest.raises(docker.errors.APIError) as e:  # the name is taken
        client.containers.create("busybox", "true", name="api-web", labels=LABELS)
    assert e.value.status_code == 409
    with pytest.raises(docker.errors.APIError) as e:  # running: not without force
        c.remove()
    assert e.value.status_code == 409
    c.kill(signal="KILL")  # (TERM: sleep as pid 1 has no handler, so the kernel drops it, as in Docker)
    assert c.wait()["StatusCode"] == 137
    c.reload()
    assert c.status == "exited"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("api-web")


def test_archive_put_get_and_changes(client):
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"payload\n"
        ti = tarfile.TarInfo("f.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    assert c.put_archive("/tmp", buf.getvalue())
    assert c.exec_run(["cat", "/tmp/f.txt"]).output == b"payload\n"
    c.exec_run(["sh", "-c", "mkdir /tmp/dir && echo more > /tmp/dir/g"])
    bits, stat = c.get_archive("/tmp/dir")
    assert stat["name"] == "dir"
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tf:
        assert tf.extractfile("dir/g").read() == b"more\n"
    with pytest.raises(docker.errors.NotFound):
        c.get_archive("/no/such/path")
    assert {"Path": "/tmp/f.txt", "Kind": 1} in c.diff()
    c.remove(force=True)


def test_attach_stream_and_logs(client):
    c = client.containers.create("busybox", ["sh", "-c", "echo first; sleep 0.3; echo second >&2"], labels=LABELS)
    stream = c.attach(stream=True, logs=True, demux=True)
    c.start()
    got = list(stream)
    out = b"".join(o for o, _ in got if o)
    err = b"".join(e for _, e in got if e)
    assert (out, err) == (b"first\n", b"second\n")
    assert c.wait()["StatusCode"] == 0
    c.remove()


def test_cli_and_socket_share_containers(client):
    c = client.containers.create("busybox", ["true"], name="api-made", labels=LABELS)
    assert "api-made" in ok(sbx("ps", "-a", "--format", "{{.Names}}")).split()
    ok(sbx("create", "--name", "cli-made", "--label", "sbx-test=server", "busybox", "true"))
    got = client.containers.get("cli-made")
    assert got.labels["sbx-test"] == "server" and got.status == "created"
    ok(sbx("rm", "api-made"))
    with pytest.raises(docker.errors.NotFound):
        c.reload()


def test_named_volume_from_api_and_cli(client):
    v = client.volumes.create("api-vol", labels={"k": "v"})
    assert v.attrs["Mountpoint"].endswith("/api-vol/_data")
    ok(sbx("run", "--rm", "-v", "api-vol:/data", "busybox", "sh", "-c", "echo from-cli > /data/f"))
    out = client.containers.run("busybox", ["cat", "/data/f"], volumes={"api-vol": {"bind": "/data", "mode": "ro"}},
                                remove=True, labels=LABELS)
    assert out == b"from-cli\n"
    keep = client.containers.create("busybox", "true", volumes=["api-vol:/data"], labels=LABELS)
    with pytest.raises(docker.errors.APIError) as e:
        v.remove()
    assert e.value.status_code == 409
    keep.remove()
    assert [x.name for x in client.volumes.list(filters={"label": "k=v"})] == ["api-vol"]
    v.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("api-vol")


def test_build_from_tar_context(client):
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tf:
        for name, data in (("Dockerfile", b"FROM busybox\nARG WHO\nCOPY hello.txt /hello.txt\n"
                                          b"RUN echo \"built for $WHO\" >> /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"),
                           ("hello.txt", b"hello\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    ctx.seek(0)
    img, logs = client.images.build(fileobj=ctx, custom_context=True, tag="api-built:1", buildargs={"WHO": "api"},
                                    labels={"made-by": "api"})
    assert "api-built:1" in img.tags and img.labels == {"made-by": "api"}
    assert any("STEP" in x.get("stream", "") for x in logs)
    assert client.containers.run("api-built:1", remove=True, labels=LABELS) == b"hello\nbuilt for api\n"
    with pytest.raises(docker.errors.BuildError) as e:
        client.images.build(fileobj=_context(b"FROM busybox\nRUN exit 7\n"), custom_context=True, tag="api-bad:1")
    assert "non-zero code: 7" in str(e.value)
    client.images.remove("api-built:1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("api-built:1")


def test_build_streams_run_output_as_it_happens(client):
    """A RUN step's output reaches the client as Docker's `stream` lines while the step runs (a
    line printed two seconds before the next one arrives well before it), then `aux` with the
    image's id; a failure is an `error` line with `errorDetail`."""
    ctx = _context(b"FROM busybox\nRUN echo first-line; sleep 2; echo second-line >&2\n")
    seen = []
    for msg in client.api.build(fileobj=ctx, custom_context=True, tag="api-stream:1", decode=True, rm=True):
        seen.append((time.monotonic(), msg))
    text = [(t, m.get("stream", "")) for t, m in seen]
    first = next(t for t, s in text if s == "first-line\n")
    second = next(t for t, s in text if s == "second-line\n")
    assert second - first >= 1.0, text
    aux = [m["aux"]["ID"] for _, m in seen if "aux" in m]
    assert aux == [client.images.get("api-stream:1").id]
    assert any(s == "Successfully tagged api-stream:1\n" for _, s in text), text
    client.images.remove("api-stream:1")
    bad = list(client.api.build(fileobj=_context(b"FROM busybox\nRUN echo about-to-fail; exit 7\n"),
                                custom_context=True, decode=True))
    assert {"stream": "about-to-fail\n"} in bad, bad
    err = bad[-1]
    assert "non-zero code: 7" in err["error"] and err["errorDetail"]["message"] == err["error"], bad


def _context(dockerfile):
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tf:
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(dockerfile)
        tf.addfile(ti, io.BytesIO(dockerfile))
    ctx.seek(0)
    return ctx


def test_push_and_pull_through_the_loopback_registry(client, tmp_path_factory):
    lib = _image_testlib()
    reg, _ = lib.start_registry(tmp_path_factory.mktemp("api-registry"))
    try:
        where = f"127.0.0.1:{reg.port}/api/busybox"
        assert client.images.get("busybox:latest").tag(where, "v1")
        out = client.images.push(where, tag="v1", stream=True, decode=True)
        msgs = list(out)
        assert not [m for m in msgs if "error" in m], msgs
        assert any("digest: sha256:" in m.get("status", "") for m in msgs)
        client.images.remove(f"{where}:v1")
        pulled = client.images.pull(where, tag="v1")
        assert f"{where}:v1" in pulled.tags
        assert pulled.id == client.images.get("busybox:latest").id
        assert any(f"{where}:v1" in i.tags for i in client.images.list())
        with pytest.raises(docker.errors.NotFound):
            client.images.pull(f"127.0.0.1:{reg.port}/api/nothing", tag="v1")
    finally:
        reg.stop()


def _image_testlib():
    import importlib.util
    import sys
    if "sbx_image_testlib" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "sbx_image_testlib", Path(__file__).parent.parent / "image" / "sbx_image_testlib.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sbx_image_testlib"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["sbx_image_testlib"]


def test_events_report_start_and_die(client):
    since = time.time()
    c = client.containers.run("busybox", ["true"], detach=True, labels=LABELS)
    assert c.wait()["StatusCode"] == 0
    seen = []
    for ev in client.events(since=since, until=time.time() + 10, decode=True, filters={"container": c.id}):
        seen.append(ev["Action"])
        if "die" in seen:
            break
    assert seen[:3] == ["create", "start", "die"], seen
    c.remove()


def test_events_pushed_from_cli_and_socket(client, listen_events):
    """A listener sees, as they happen, what the CLI does (it writes the engine's journal; the
    service holds no state of its own): a foreground `sbx run --rm`, create/start/stop/rm of
    a kept container, with their attributes and labels, each filter applied; `since` replays
    them, `until` in the past ends the stream."""
    since = time.time()
    got = listen_events(label="sbx-test=events")
    assert sbx("run", "--rm", "--name", "ev-fg", "--label", "sbx-test=events", "busybox", "sh", "-c",
               "exit 3").returncode == 3
    ok(sbx("run", "-d", "--name", "ev-bg", "--label", "sbx-test=events", "busybox", "sleep", "300"))
    ok(sbx("stop", "-t", "0", "ev-bg"))
    ok(sbx("rm", "ev-bg"))
    want = [("ev-fg", "create"), ("ev-fg", "start"), ("ev-fg", "die"), ("ev-fg", "destroy"),
            ("ev-bg", "create"), ("ev-bg", "start"), ("ev-bg", "die"), ("ev-bg", "stop"), ("ev-bg", "destroy")]
    seen = []
    while len(seen) < len(want):
        ev = got.get(timeout=20)
        assert ev["Type"] == "container" and ev["Actor"]["Attributes"]["sbx-test"] == "events", ev
        seen.append((ev["Actor"]["Attributes"]["name"], ev["Action"]))
        if seen[-1] == ("ev-fg", "die"):
            assert ev["Actor"]["Attributes"]["exitCode"] == "3" and ev["from"] == "busybox", ev
    assert seen == want
    replay = [(e["Actor"]["Attributes"]["name"], e["Action"]) for e in client.events(
        since=since, until=time.time(), decode=True, filters={"label": "sbx-test=events", "event": ["die", "stop"]})]
    assert replay == [("ev-fg", "die"), ("ev-bg", "die"), ("ev-bg", "stop")]
    net = client.networks.create("ev-net")
    net.remove()
    nets = [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in client.events(
        since=since, until=time.time(), decode=True, filters={"type": "network", "network": "ev-net"})]
    assert nets == [("create", "ev-net"), ("destroy", "ev-net")]
    r = client.api._get(client.api._url("/events"), params={"filters": '{"colour": ["blue"]}'})
    assert r.status_code == 400 and "colour" in r.json()["message"]


def test_testcontainers_with_log_wait(service, image, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{service}")
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    with DockerContainer("busybox:latest").with_command(
            ["sh", "-c", "echo starting; sleep 0.2; echo Ready to serve; exec sleep 300"]) \
            .with_env("GREETING", "hi").with_kwargs(labels=LABELS) \
            .waiting_for(LogMessageWaitStrategy("Ready to serve").with_startup_timeout(20)) as tc:
        assert b"Ready to serve" in tc.get_wrapped_container().logs()
        code, out = tc.exec(["sh", "-c", "echo $GREETING"])
        assert (code, out) == (0, b"hi\n")
        wrapped = tc.get_wrapped_container()
        wrapped.reload()
        assert wrapped.status == "running" and wrapped.labels["sbx-test"] == "server"
        cid = wrapped.id
    with pytest.raises(docker.errors.NotFound):
        docker.DockerClient(base_url=f"unix://{service}").containers.get(cid)


def test_service_idle_timeout_and_signal(tmp_path):
    path = tmp_path / "s.sock"
    p = sbxtest.sbx_popen("system", "service", "--socket", f"unix://{path}", "--timeout", "1")
    assert p.stdout.readline().strip() == f"export DOCKER_HOST=unix://{path}"
    assert p.wait(20) == 0 and not path.exists()
    p = sbxtest.sbx_popen("system", "service", "--socket", f"unix://{path}")
    assert p.stdout.readline().strip() == f"export DOCKER_HOST=unix://{path}"
    busy = sbxtest.sbx("system", "service", "--socket", f"unix://{path}")
    assert busy.returncode == 125 and "already listens" in busy.stderr
    p.send_signal(2)
    assert p.wait(20) == 0 and not path.exists()
    bad = sbxtest.sbx("system", "service", "--socket", "tcp://127.0.0.1:2375")
    assert bad.returncode == 125 and "unix socket" in bad.stderr and "Traceback" not in bad.stderr


def test_published_random_port_and_stats(client):
    """HostPort "" (docker-py's ports={"8080/tcp": None}) gets a free host port that reaches the
    container; stats come as one document and as a stream."""
    import urllib.request
    c = client.containers.run("busybox", ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && "
                                                      "exec httpd -f -p 8080 -h /www"],
                              detach=True, ports={"8080/tcp": None}, labels=LABELS)
    c.reload()
    port = int(c.ports["8080/tcp"][0]["HostPort"])
    assert port > 0
    got = []

    def fetch():
        try:
            got.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2).read())
            return True
        except OSError:
            return False
    sbxtest.wait_for(fetch, timeout=15)
    assert got == [b"hello\n"]
    listed = client.api.containers(filters={"id": c.id})[0]["Ports"]
    assert listed == [{"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": port, "Type": "tcp"}]
    one = c.stats(stream=False)
    assert one["id"] == c.id and one["pids_stats"]["current"] >= 1
    s = c.stats(stream=True, decode=True)
    assert next(s)["id"] == c.id
    s.close()
    c.remove(force=True)


def test_socket_activation(tmp_path):
    """systemd's socket activation (contrib/systemd): the listening socket arrives as fd 3 with
    LISTEN_PID/LISTEN_FDS; the service serves it and leaves it in place when it ends."""
    import subprocess
    path = tmp_path / "act.sock"
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(str(path))
    ls.listen()
    fd = ls.fileno()
    p = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh",
                          *sbxtest.sbx_argv("system", "service", "--socket", f"unix://{path}", "--timeout", "1")],
                         close_fds=False, preexec_fn=lambda: os.dup2(fd, 3), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=sbxtest.NEUTRAL_CWD)
    ls.close()
    c = docker.DockerClient(base_url=f"unix://{path}", version="1.44")
    assert c.ping() is True
    c.close()
    assert p.wait(20) == 0, p.stderr.read()
    assert path.exists()


def test_docker_cli_run_attach_stdin_exec(service, image):
    """The docker CLI's own flows: `run` attaches before it starts and waits (wait's headers
    come at once), `-i` sends stdin through the attach, exec, logs, exit codes."""
    import shutil
    import subprocess
    # scripts/test.sh's PATH leaves /usr/local/bin out, where the static docker CLI is installed
    cli = shutil.which("docker") or shutil.which("docker", path="/usr/local/bin")
    if cli is None:
        pytest.skip("the docker CLI is not installed")
    env = dict(os.environ, DOCKER_HOST=f"unix://{service}", DOCKER_CONFIG=str(service.parent / "docker-cli"))

    def docker_cli(*args, input=None):
        return subprocess.run([cli, *args], input=input, capture_output=True, text=True, env=env, timeout=60)
    r = docker_cli("run", "--rm", "--label", "sbx-test=server", "busybox", "echo", "hi from the docker cli")
    assert (r.returncode, r.stdout) == (0, "hi from the docker cli\n"), r.stderr
    for code in (3, 4, 5):  # --rm: the exit code read before the container is gone, however fast it goes
        r = docker_cli("run", "--rm", "--label", "sbx-test=server", "busybox", "sh", "-c", f"echo bad >&2; exit {code}")
        assert (r.returncode, r.stderr) == (code, "bad\n")
    r = docker_cli("run", "--rm", "-i", "--label", "sbx-test=server", "busybox", "tr", "a-z", "A-Z", input="piped\n")
    assert (r.returncode, r.stdout) == (0, "PIPED\n"), r.stderr
    r = docker_cli("run", "-d", "--name", "api-cli", "--label", "sbx-test=server", "busybox", "sh", "-c",
                   "echo started; exec sleep 300")
    assert r.returncode == 0, r.stderr
    assert docker_cli("exec", "api-cli", "cat", "/proc/1/cmdline").stdout == "sleep\x00300\x00"
    r = docker_cli("exec", "-i", "api-cli", "sh", "-c", "tr a-z A-Z; exit 6", input="exec stdin\n")
    assert (r.returncode, r.stdout) == (6, "EXEC STDIN\n"), r.stderr
    assert "api-cli" in docker_cli("ps", "--format", "{{.Names}}").stdout.split()
    sbxtest.wait_for(lambda: docker_cli("logs", "api-cli").stdout == "started\n")
    assert docker_cli("rm", "-f", "api-cli").returncode == 0


def test_user_network_with_aliases_through_testcontainers(service, image, monkeypatch):
    """testcontainers' Network and network aliases: a container reaches another by its alias;
    the network is listed, refuses removal while used, and goes when asked."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{service}")
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    client = docker.DockerClient(base_url=f"unix://{service}")
    with Network() as net:
        assert [n.name for n in client.networks.list(names=[net.name])] == [net.name]
        web = DockerContainer("busybox:latest").with_command(
            ["sh", "-c", "mkdir /www && echo via-alias > /www/i && exec httpd -f -p 8080 -h /www"]) \
            .with_network(net).with_network_aliases("web").with_kwargs(labels=LABELS)
        with web:
            with pytest.raises(docker.errors.APIError) as e:
                client.networks.get(net.id).remove()
            assert e.value.status_code == 403
            got = []

            def fetch():
                out = client.containers.run("busybox", ["wget", "-qO-", "http://web:8080/i"], network=net.name,
                                            remove=True, labels=LABELS)
                got.append(out)
                return True
            sbxtest.wait_for(lambda: _quiet(fetch), timeout=20)
            assert got[-1] == b"via-alias\n"
            doc = client.networks.get(net.id).attrs
            assert web.get_wrapped_container().id in doc["Containers"]
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(net.name)


def test_create_on_two_networks_and_connect_before_start(client):
    """NetworkingConfig with two user-defined networks: the container joins both at every start
    (a restart too) and reaches servers on each by alias; a created container connected to a
    network before its start joins it when it starts; inspect shows the endpoints with the
    aliases and the short id before the start too."""
    a, b = client.networks.create("api-net-a"), client.networks.create("api-net-b")
    try:
        servers = {}
        for net, alias, text in ((a, "alpha", "A"), (b, "beta", "B")):
            c = servers[alias] = client.api.create_container(
                "busybox", ["sh", "-c", f"mkdir /www && echo {text} > /www/i && exec httpd -f -p 8080 -h /www"],
                labels=LABELS, host_config=client.api.create_host_config(network_mode=net.name),
                networking_config=client.api.create_networking_config(
                    {net.name: client.api.create_endpoint_config(aliases=[alias])}))
            client.api.start(c["Id"])
        both = client.api.create_container(
            "busybox", ["sleep", "300"], labels=LABELS, host_config=client.api.create_host_config(network_mode=a.name),
            networking_config=client.api.create_networking_config({
                a.name: client.api.create_endpoint_config(), b.name: client.api.create_endpoint_config(aliases=["two"])}))
        late = client.containers.create("busybox", ["sleep", "300"], network=a.name, labels=LABELS)
        b.connect(late, aliases=["late"])
        for cid in (both["Id"], late.id):
            nets = client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
            assert sorted(nets) == ["api-net-a", "api-net-b"], nets
            assert cid[:12] in nets["api-net-b"]["Aliases"] and nets["api-net-b"]["NetworkID"] == b.id
        c = client.containers.get(both["Id"])
        for ct in (c, late):
            ct.start()

            def reaches():
                return [ct.exec_run(["wget", "-qO-", f"http://{h}:8080/i"]).output for h in ("alpha", "beta")]
            sbxtest.wait_for(lambda: reaches() == [b"A\n", b"B\n"], timeout=20)
        assert b.id in client.api.inspect_container(late.id)["NetworkSettings"]["Networks"]["api-net-b"]["NetworkID"]
        c.restart(timeout=0)
        sbxtest.wait_for(lambda: c.exec_run(["wget", "-qO-", "http://beta:8080/i"]).output == b"B\n", timeout=20)
        # A link (docker-py's links=): the alias names the server for this container only.
        fetch = "for i in $(seq 50); do wget -qO- http://lnk:8080/i && exit; sleep 0.2; done; exit 1"
        assert client.containers.run("busybox", ["sh", "-c", fetch], network=a.name, labels=LABELS, remove=True,
                                     links={servers["alpha"]["Id"]: "lnk"}) == b"A\n"
        late.stop(timeout=0)
        b.disconnect(late)
        assert sorted(client.api.inspect_container(late.id)["NetworkSettings"]["Networks"]) == ["api-net-a"]
    finally:
        for ct in client.containers.list(all=True, filters={"label": "sbx-test=server"}):
            ct.remove(force=True)
        a.remove()
        b.remove()


def _quiet(fn):
    try:
        return fn()
    except docker.errors.ContainerError:
        return False


def test_update_restart_policy(client):
    c = client.containers.create("busybox", "true", labels=LABELS)
    assert c.update(restart_policy={"Name": "on-failure", "MaximumRetryCount": 2}) == {"Warnings": []}
    c.reload()
    assert c.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    with pytest.raises(docker.errors.APIError) as e:
        c.update(restart_policy={"Name": "sometimes"})
    assert e.value.status_code == 400 and "sometimes" in str(e.value)
    c.remove()


def test_image_save_load_history_tag(client):
    img = client.images.get("busybox:latest")
    assert img.tag("api-saved", "v1")
    data = b"".join(client.api.get_image("api-saved:v1"))  # (save(named=True) names the image's first tag)
    client.images.remove("api-saved:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("api-saved:v1")
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [img.id] and "api-saved:v1" in loaded[0].tags
    assert client.images.get("api-saved:v1").history()[0]["Id"] == img.id
    assert any("api-saved:v1" in i.tags for i in client.images.list(filters={"reference": "api-saved"}))
    client.images.remove("api-saved:v1")


def test_hijacked_exec_frames_after_the_headers(client, service):
    """The wire itself: `101 UPGRADED`, the multiplexed content type, the payload only after the
    headers were read (the first read holds the headers and nothing else), 8-byte frames."""
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    eid = client.api.exec_create(c.id, ["sh", "-c", "echo out; echo err >&2"])["Id"]
    body = b'{"Detach": false, "Tty": false}'
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(service))
    s.sendall(b"POST /v1.44/exec/%s/start HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (eid.encode(), len(body), body))
    first = s.recv(65536)
    head = first.decode()
    assert head.startswith("HTTP/1.1 101 UPGRADED\r\n") and head.endswith("\r\n\r\n"), head
    assert "Content-Type: application/vnd.docker.multiplexed-stream" in head
    rest = _read_all(s)
    frames = []
    while rest:
        kind, n = rest[0], int.from_bytes(rest[4:8], "big")
        assert rest[1:4] == b"\0\0\0"
        frames.append((kind, rest[8:8 + n]))
        rest = rest[8 + n:]
    assert sorted(frames) == [(1, b"out\n"), (2, b"err\n")]
    assert client.api.exec_inspect(eid)["ExitCode"] == 0
    c.remove(force=True)


def test_testcontainers_docker_image_build(service, image, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{service}")
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo made-by-DockerImage > /m\nCMD [\"cat\", \"/m\"]\n")
    with DockerImage(path=str(tmp_path), tag="api-tc-image:1", clean_up=True) as img:
        with DockerContainer(str(img)).with_kwargs(labels=LABELS) as tc:
            wrapped = tc.get_wrapped_container()
            assert wrapped.wait()["StatusCode"] == 0
            assert wrapped.logs() == b"made-by-DockerImage\n"
