"""Fixtures of the Docker API tests: one `sbx system service` per session (its own socket, the
session's store), the session's busybox root filesystem imported as `busybox:latest` (builds
start from it: nothing comes from a hub), and a docker-py client that removes what a test
labelled `sbx-test=server` when the test ends."""
from __future__ import annotations

import pytest

import sbxtest
from baseimage import import_busybox


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than 5 s, unavoidably")


@pytest.fixture(scope="session")
def service(tmp_path_factory, session_store):
    """A running `sbx system service` on a socket of the session's; yields its path."""
    with sbxtest.docker_service(tmp_path_factory.mktemp("svc")) as (path, p):
        yield path
    assert p.returncode == 0
    assert not path.exists(), "the service left its socket behind"


@pytest.fixture(scope="session")
def image(tmp_path_factory, busybox_rootfs, session_store):
    return import_busybox(tmp_path_factory, busybox_rootfs, "busybox:latest")


@pytest.fixture()
def client(service, image):
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=f"unix://{service}", version="auto", timeout=60)
    yield c
    for ct in c.containers.list(all=True, filters={"label": "sbx-test=server"}):
        try:
            ct.remove(force=True)
        except docker.errors.NotFound:
            pass
    c.close()


@pytest.fixture()
def listen_events(client):
    """`listen_events(**filters)` starts a `/events` listener (docker-py's stream, read by a
    thread) and returns the queue its events go to, once its request is in; closed at the end."""
    import queue
    import threading
    import time
    streams = []

    def start(**filters):
        got = queue.Queue()
        stream = client.events(decode=True, filters=filters)
        streams.append(stream)

        def listen():
            for ev in stream:
                got.put(ev)
        threading.Thread(target=listen, daemon=True).start()
        time.sleep(0.2)  # (the listener's request is in before the first event)
        return got
    yield start
    for s in streams:
        s.close()
