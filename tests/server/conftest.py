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
