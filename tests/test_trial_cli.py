"""What a Docker user tries first, run black-box through the CLI: each test is a defect found by
using sbx as a newcomer would (its reproducer), kept so that it stays fixed."""

import json
import os
import socket

import pytest

from baseimage import import_busybox
from sbxtest import assert_sbx_error, inspect_container, ok, sbx


@pytest.fixture()
def store(own_container_store):
    """Images and containers of the test's own (SBX_ROOT), removed afterwards."""
    yield


@pytest.fixture()
def base(store, tmp_path_factory, busybox_rootfs):
    return import_busybox(tmp_path_factory, busybox_rootfs, "trial-base:1")


def _build(tmp_path, tag, dockerfile):
    ctx = tmp_path / f"ctx-{tag.replace(':', '-')}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    ok(sbx("build", "-q", "-t", tag, str(ctx), timeout=120))
    return tag


def test_every_run_of_an_image_keeps_its_expose_stop_signal_and_labels(base, tmp_path):
    """The run cache (made by an image's first run) kept only Entrypoint/Cmd/Env/WorkingDir/User:
    from the second run on, -P published nothing of the image's EXPOSE, and the image's
    STOPSIGNAL and labels were gone from the container."""
    img = _build(tmp_path, "trial-meta:1", f"FROM {base}\nEXPOSE 8080\nSTOPSIGNAL SIGINT\n"
                                          "LABEL org.example.team=trial\nCMD [\"sleep\", \"30\"]\n")
    ok(sbx("run", "--rm", "--network", "none", img, "true"))  # the first run fills the cache
    for name in ("again1", "again2"):
        ok(sbx("run", "-d", "--name", name, "-P", img))
        assert ok(sbx("port", name)).startswith("8080/tcp -> 0.0.0.0:"), name
        doc = inspect_container(name)
        assert doc["Config"]["StopSignal"] == "SIGINT" and doc["Config"]["Labels"]["org.example.team"] == "trial"
        ok(sbx("rm", "-f", name))
