"""sbx container prune and sbx system prune: what goes, what stays (running containers, images
in use), Docker's prompt and report."""
import json
import os
import tarfile

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))


def _names():
    return sorted(ok(sbx("ps", "-a", "--format", "{{.Names}}")).split())


def _ids(name):
    return ok(sbx("ps", "-aq", "--no-trunc", "--filter", f"name=^{name}$")).strip()


@pytest.fixture()
def live(busybox_rootfs):
    p = sbxtest.sbx_popen("run", "--name", "live", "--rootfs", busybox_rootfs, "sh", "-c", "echo up; exec sleep 60")
    assert p.stdout.readline() == "up\n"
    yield p
    p.kill()
    p.wait()


def test_container_prune(busybox_rootfs, live):
    ok(sbx("run", "--name", "old", "--rootfs", busybox_rootfs, "sh", "-c", "head -c 3000 /dev/zero > /f"))
    ok(sbx("run", "--name", "kept", "--label", "keep=yes", "--rootfs", busybox_rootfs, "true"))
    old = _ids("old")
    r = sbx("container", "prune", input="n\n")                      # Docker's question; no: nothing goes
    assert "WARNING! This will remove all stopped containers." in r.stdout
    assert "Are you sure you want to continue? [y/N]" in r.stdout and r.returncode == 1
    assert _names() == ["kept", "live", "old"]
    out = ok(sbx("container", "prune", "-f", "--filter", "label!=keep"))
    assert out == f"Deleted Containers:\n{old}\n\nTotal reclaimed space: 3kB\n"
    assert _names() == ["kept", "live"]
    out = ok(sbx("container", "prune", "-f", "--filter", "until=1h"))     # made less than an hour ago: kept
    assert out == "Total reclaimed space: 0B\n" and _names() == ["kept", "live"]
    kept = _ids("kept")
    out = ok(sbx("container", "prune", input="y\n"))
    assert f"Deleted Containers:\n{kept}\n" in out
    assert _names() == ["live"]                                   # a running container stays
    assert_sbx_error(sbx("container", "prune", "-f", "--filter", "until=soon"), 125, "invalid filter 'until=soon'")
    assert_sbx_error(sbx("container", "prune", "-f", "--filter", "name=x"), 125, "invalid filter 'name'")


def _import(busybox_rootfs, tmp_path, name, extra=None):
    tar = tmp_path / f"{name.replace(':', '_')}.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
        if extra:
            p = tmp_path / "extra"
            p.write_text(extra)
            tf.add(p, arcname="extra")
    return ok(sbx("import", tar, name, timeout=120)).strip()


def _image_ids():
    return set(ok(sbx("images", "-q", "--no-trunc")).split())


def test_system_prune(busybox_rootfs, tmp_path):
    used = _import(busybox_rootfs, tmp_path, "used:1")
    unused = _import(busybox_rootfs, tmp_path, "unused:1", "u")
    dangling = _import(busybox_rootfs, tmp_path, "again:1", "d1")
    _import(busybox_rootfs, tmp_path, "again:1", "d2")                 # again:1 moves on: dangling is untagged
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM used:1\nRUN echo built > /built\n")
    ok(sbx("build", "-t", "built:1", ctx, timeout=120))
    p = sbxtest.sbx_popen("run", "--name", "user", "used:1", "sh", "-c", "echo up; exec sleep 60")
    try:
        assert p.stdout.readline() == "up\n"
        ok(sbx("run", "--name", "stopped", "used:1", "true", timeout=60))
        r = sbx("system", "prune", input="\n")
        assert r.returncode == 1 and "Are you sure you want to continue? [y/N]" in r.stdout
        assert "  - all stopped containers" in r.stdout and "  - all dangling images" in r.stdout
        assert _names() == ["stopped", "user"]
        stopped = _ids("stopped")
        out = ok(sbx("system", "prune", "-f"))
        assert out.startswith(f"Deleted Containers:\n{stopped}\n\nDeleted Images:\n")
        assert f"deleted: {dangling}" in out and "Total reclaimed space:" in out
        ids = _image_ids()
        assert used in ids and unused in ids and dangling not in ids        # tagged images stay without -a
        assert _names() == ["user"]
        out = ok(sbx("system", "prune", "-a", "-f", "--volumes"))
        ids = _image_ids()
        assert used in ids and unused not in ids                      # in use by a running container: kept
        assert "Deleted build cache objects:" in out
        assert ok(sbx("run", "--rm", "used:1", "cat", "/etc/passwd", timeout=60)) == sbxtest.PASSWD
        again = ok(sbx("build", ctx, timeout=120))
        assert "CACHED" not in again                                  # the build cache went
    finally:
        p.kill()
        p.wait()



def test_network_prune_asks_docker_s_question():
    """`network prune` asks on stdout as `container prune` does; no keeps every network and exits 1."""
    ok(sbx("network", "create", "asked"))
    try:
        r = sbx("network", "prune", input="n\n")
        assert "WARNING! This will remove all custom networks not used by at least one container." in r.stdout
        assert "Are you sure you want to continue? [y/N]" in r.stdout and r.returncode == 1
        assert "asked" in ok(sbx("network", "ls", "--format", "{{.Name}}")).split()
        r = sbx("network", "prune", input="y\n")
        assert r.returncode == 0 and "asked" in r.stdout
        assert "asked" not in ok(sbx("network", "ls", "--format", "{{.Name}}")).split()
    finally:
        sbx("network", "rm", "asked")
