"""Runs as real root (scripts/test.sh's last run): sbx works for root too, and root inside is not root outside."""

import os

import pytest

from sbxtest import DOCKER_DEFAULT_CAP_MASK, ok, parse_idmap, proc_status_field, sbx

pytestmark = pytest.mark.root


def test_root_runs_a_sandbox(busybox_rootfs):
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "id -u; echo $$; hostname"))
    uid, pid, hostname = out.split()
    assert (uid, pid) == ("0", "1") and len(hostname) == 12


@pytest.mark.parametrize("mode", ["auto", "single"])
def test_root_userns_modes(busybox_rootfs, mode):
    out = ok(sbx("run", "--userns", mode, "--rootfs", busybox_rootfs, "sh", "-c",
                 "cat /proc/self/uid_map; echo ==; readlink /proc/self/ns/user; id -u; touch /tmp/x && echo ok"))
    idmap, rest = out.split("==\n")
    userns, uid, touched = rest.split()
    assert parse_idmap(idmap)[0][:2] == (0, 0), idmap
    assert userns != os.readlink("/proc/self/ns/user"), "root's sandbox must still get a user namespace"
    assert (uid, touched) == ("0", "ok")


def test_root_inside_keeps_only_the_default_capabilities(busybox_rootfs):
    status = ok(sbx("run", "--rootfs", busybox_rootfs, "cat", "/proc/self/status"))
    assert int(proc_status_field(status, "CapBnd"), 16) == DOCKER_DEFAULT_CAP_MASK
    assert int(proc_status_field(status, "CapEff"), 16) == DOCKER_DEFAULT_CAP_MASK


def test_root_host_rootfs_cannot_modify_the_host(tmp_path):
    target = tmp_path / "host-file"
    target.write_text("original\n")
    cp = sbx("run", "--rootfs", "/", "/bin/busybox", "sh", "-c",
             f"echo changed > {target}; rm -f {target}; echo new > {tmp_path}/created; echo done")
    assert "done" in ok(cp)
    assert target.read_text() == "original\n"
    assert not (tmp_path / "created").exists()


def test_root_volume_ownership(busybox_rootfs, tmp_path):
    ok(sbx("run", "-u", "1000:1000", "-v", f"{tmp_path}:/v", "--userns", "single", "--rootfs", busybox_rootfs,
           "sh", "-c", "touch /v/f"))
    st = os.stat(tmp_path / "f")
    assert (st.st_uid, st.st_gid) == (0, 0)   # single mode maps the caller, here root
