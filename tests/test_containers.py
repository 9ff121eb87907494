"""Containers kept after their process exits (`sbx run` without --rm): ps, start, rm."""
import json
import os
import subprocess

import pytest

import sbxtest
from sbxtest import sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))


def _ps(*args):
    r = sbx("ps", "-a", "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_kept_container_keeps_its_changes_across_start(busybox_rootfs):
    before = sbxtest.tree_snapshot(busybox_rootfs)
    r = sbx("run", "--name", "keeper", "--rootfs", str(busybox_rootfs), "sh", "-c",
            "cat /state 2>/dev/null; echo run >> /state; rm /etc/marker; exit 3")
    assert r.returncode == 3 and r.stdout == ""
    (c,) = _ps()
    assert c["Names"] == "keeper" and c["Status"].startswith("Exited (3)")
    r = sbx("start", "-a", "keeper")
    assert r.returncode == 3
    assert r.stdout == "run\n"                       # the first run's write is still there
    assert sbxtest.tree_snapshot(busybox_rootfs) == before
    assert sbx("rm", "keeper").returncode == 0
    assert _ps() == []


def test_rm_flag_keeps_nothing(busybox_rootfs):
    assert sbx("run", "--rm", "--rootfs", str(busybox_rootfs), "true").returncode == 0
    assert _ps() == []


def test_names_are_unique_and_generated(busybox_rootfs):
    assert sbx("run", "--name", "dup", "--rootfs", str(busybox_rootfs), "true").returncode == 0
    r = sbx("run", "--name", "dup", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 125 and "already in use" in r.stderr
    assert sbx("run", "--rootfs", str(busybox_rootfs), "true").returncode == 0
    names = {c["Names"] for c in _ps()}
    assert "dup" in names and len(names) == 2
    for c in _ps():
        assert len(c["ID"]) == 12                        # Docker's short id unless --no-trunc
        assert sbx("rm", c["ID"]).returncode == 0        # short ids work


def test_ps_shows_running_and_rm_force(busybox_rootfs):
    p = subprocess.Popen(sbxtest.sbx_argv("run", "--name", "live", "--rootfs", str(busybox_rootfs),
                                          "sh", "-c", "echo up; sleep 60"),
                         stdout=subprocess.PIPE, text=True, cwd=sbxtest.NEUTRAL_CWD)
    try:
        assert p.stdout.readline() == "up\n"
        running = sbx("ps", "--format", "json").stdout.splitlines()
        assert [json.loads(x)["Names"] for x in running] == ["live"]
        assert json.loads(running[0])["Status"].startswith("Up ")
        r = sbx("rm", "live")  # Docker: exit 1, the container named with its state
        assert r.returncode == 1 and "cannot remove container live: it is running" in r.stderr
        assert sbx("rm", "-f", "live").returncode == 0
        p.wait(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert _ps() == []


@pytest.mark.subuid
def test_rm_removes_files_owned_by_other_users_inside(busybox_rootfs):
    """With a subuid range, files made as uid 1000 inside are owned by a subordinate id
    outside; rm still removes everything."""
    r = sbx("run", "--name", "owners", "--rootfs", str(busybox_rootfs), "sh", "-c",
            "mkdir -p /home/app/deep && echo x > /home/app/deep/f && chown -R 1000:1000 /home/app && "
            "chmod 700 /home/app/deep")
    assert r.returncode == 0, r.stderr
    data = os.environ["SBX_ROOT"]
    assert sbx("rm", "owners").returncode == 0
    assert not [d for d in os.listdir(os.path.join(data, "containers")) if len(d) == 64]


def test_unknown_container_errors():
    for args in (("rm", "nope"), ("start", "-a", "nope"), ("stop", "nope"), ("kill", "nope")):
        r = sbx(*args)
        assert r.returncode == 1 and "No such container: nope" in r.stderr and "Traceback" not in r.stderr
