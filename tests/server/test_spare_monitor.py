"""The service's spare monitor: a monitor process started ahead, handed the next container the
API starts.  Seen from outside: the container's supervisor is the spare that waited before the
start, a new spare waits after it, and neither outlives the service; the container does
(its log, its exit code and the restart policy stay the monitor's)."""
from __future__ import annotations

import os
import signal

import pytest

import sbxtest
from sbxtest import ok, sbx

docker = pytest.importorskip("docker")

LABELS = {"sbx-test": "spare"}


def _spares(service_pid):
    """Pids of the spare monitors started by the service `service_pid` (forked: not its child)."""
    out = []
    for pid in sbxtest.host_pids_with("sandbox.containers.monitor\0--spare\0"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            i = argv.index(b"--spare")
            if argv[i + 3] == str(service_pid).encode() and _ppid(pid) != service_pid:
                out.append(pid)
        except (OSError, ValueError, IndexError, StopIteration):
            pass
    return out


def _until(fn, what, timeout=20):
    v = sbxtest.wait_for(fn, timeout)
    assert v, f"not within {timeout} s: {what}"
    return v


def _ppid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(sbxtest.proc_status_field(f.read(), "PPid"))


def _one_spare(service_pid):
    return _until(lambda: len(_spares(service_pid)) == 1 and _spares(service_pid)[0],
                  "one spare monitor waiting")


def test_spare_is_handed_the_container_and_the_container_outlives_the_service(tmp_path, image):
    with sbxtest.docker_service(tmp_path) as (path, p):
        client = docker.DockerClient(base_url=f"unix://{path}", version="auto", timeout=60)
        spare = _one_spare(p.pid)
        c = client.containers.run(image, ["sh", "-c", "trap 'echo bye; exit 3' TERM; echo hi; sleep 300 & wait"],
                                  detach=True, labels=LABELS, name="spare-held")
        c.reload()
        assert c.status == "running"
        # the spare that waited before the start supervises it: the container's parent, or its parent's
        pid = c.attrs["State"]["Pid"]
        assert spare in (_ppid(pid), _ppid(_ppid(pid))), (spare, pid)
        # (the spare handed the container keeps its command line)
        nxt = _until(lambda: [s for s in _spares(p.pid) if s != spare], "a new spare waiting")[0]
        client.close()
    assert p.returncode == 0
    # the service is gone: its spare too (EOF on the hand-off pipe); the container still runs
    _until(lambda: not os.path.exists(f"/proc/{nxt}") or nxt not in _spares(p.pid), "the spare's end")
    assert _spares(p.pid) == [spare]
    assert ok(sbx("inspect", "-f", "{{.State.Status}}", "spare-held")).strip() == "running"
    assert os.path.exists(f"/proc/{spare}"), "the container's monitor ended with the service"
    ok(sbx("stop", "-t", "10", "spare-held"))
    assert ok(sbx("inspect", "-f", "{{.State.ExitCode}}", "spare-held")).strip() == "3"
    assert ok(sbx("logs", "spare-held")) == "hi\nbye\n"
    ok(sbx("rm", "spare-held"))


def test_spare_ends_when_the_service_is_killed(tmp_path, image):
    with sbxtest.docker_service(tmp_path) as (path, p):
        spare = _one_spare(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        _until(lambda: not os.path.exists(f"/proc/{spare}") or spare not in _spares(p.pid),
               "the spare's end after the service's kill -9")


def test_each_start_is_handed_a_fresh_spare(tmp_path, image):
    """Starts in a row and at once: each container gets a monitor of its own, none is lost."""
    import threading
    with sbxtest.docker_service(tmp_path) as (path, p):
        client = docker.DockerClient(base_url=f"unix://{path}", version="auto", timeout=60)
        try:
            assert client.containers.run(image, ["sh", "-c", "echo one"], remove=True) == b"one\n"
            assert client.containers.run(image, ["sh", "-c", "exit 0"], remove=True) == b""
            outs = {}

            def one(i):
                outs[i] = client.containers.run(image, ["echo", str(i)], remove=True, labels=LABELS)
            ts = [threading.Thread(target=one, args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
            assert outs == {i: f"{i}\n".encode() for i in range(4)}
            with pytest.raises(docker.errors.ContainerError) as e:
                client.containers.run(image, ["sh", "-c", "exit 5"], remove=True)
            assert e.value.exit_status == 5
            assert client.containers.list(all=True, filters={"label": "sbx-test=spare"}) == []
            _until(lambda: len(_spares(p.pid)) == 1, "one spare waiting, the used ones gone")
        finally:
            client.close()
