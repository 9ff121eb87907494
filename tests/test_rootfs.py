"""The root filesystem: overlay over an untouched source tree, --read-only, volumes, tmpfs, /dev, /proc,
/sys, /tmp, generated /etc files, the working directory, and --rootfs / (the host's files)."""

import os
import re
import socket
import tempfile

import pytest

from sbxtest import MARKER_CONTENT, ok, sbx, tree_snapshot

# --- overlay -----------------------------------------------------------------------------------

WRITE_EVERYWHERE = """
set -e
echo changed > /etc/marker
rm /bin/ls
chmod 600 /etc/passwd
mkdir -p /newdir/sub && echo x > /newdir/sub/file
touch /root/newfile
ln -s /etc/marker /etc/newlink
mv /etc/group /etc/group.moved
rmdir /var
echo appended >> /etc/passwd
cat /etc/marker
stat -c %a /etc/passwd
test -e /bin/ls || echo ls-gone
"""


def test_writes_inside_leave_the_rootfs_unchanged(fresh_rootfs):
    before = tree_snapshot(fresh_rootfs)
    out = ok(sbx("run", "--rootfs", fresh_rootfs, "sh", "-c", WRITE_EVERYWHERE))
    assert out.split() == ["changed", "600", "ls-gone"], out
    assert tree_snapshot(fresh_rootfs) == before
    assert (fresh_rootfs / "etc/marker").read_text() == MARKER_CONTENT


def test_each_run_starts_from_the_rootfs(busybox_rootfs):
    ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "echo x > /persist && rm /etc/marker"))
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c",
                 "test -e /persist || echo no-persist; cat /etc/marker"))
    assert out == "no-persist\n" + MARKER_CONTENT


def test_read_only_root(fresh_rootfs):
    before = tree_snapshot(fresh_rootfs)
    cp = sbx("run", "--read-only", "--rootfs", fresh_rootfs, "sh", "-c",
             "cat /etc/marker; echo x > /etc/marker || echo refused")
    out = ok(cp)
    assert out == MARKER_CONTENT + "refused\n"
    assert "read-only file system" in cp.stderr.lower()
    assert tree_snapshot(fresh_rootfs) == before


def test_read_only_root_with_tmpfs_on_an_existing_dir(busybox_rootfs):
    out = ok(sbx("run", "--read-only", "--tmpfs", "/var", "--rootfs", busybox_rootfs, "sh", "-c",
                 "echo hi > /var/f && cat /var/f; touch /x 2>/dev/null || echo root-ro"))
    assert out == "hi\nroot-ro\n"


def test_read_only_root_with_tmpfs_on_a_new_dir(fresh_rootfs):
    # Docker creates missing mount points; here that must not touch the source tree either.
    before = tree_snapshot(fresh_rootfs)
    out = ok(sbx("run", "--read-only", "--tmpfs", "/scratch", "--rootfs", fresh_rootfs, "sh", "-c",
                 "echo hi > /scratch/f && cat /scratch/f; touch /x 2>/dev/null || echo root-ro"))
    assert out == "hi\nroot-ro\n"
    assert tree_snapshot(fresh_rootfs) == before


def mounts_inside(rootfs, *opts):
    out = ok(sbx("run", *opts, "--rootfs", rootfs, "cat", "/proc/self/mounts"))
    return [line.split() for line in out.splitlines()]


def test_tmpfs_option(busybox_rootfs):
    ms = mounts_inside(busybox_rootfs, "--tmpfs", "/scratch")
    assert any(m[1] == "/scratch" and m[2] == "tmpfs" for m in ms), ms
    out = ok(sbx("run", "--tmpfs", "/scratch", "--rootfs", busybox_rootfs, "sh", "-c",
                 "echo hi > /scratch/f && cat /scratch/f"))
    assert out == "hi\n"
    assert not (busybox_rootfs / "scratch").exists()


def test_old_root_is_detached(busybox_rootfs, tmp_path):
    """After pivot_root only the sandbox's own mounts remain, none of the host's."""
    ms = mounts_inside(busybox_rootfs, "-v", f"{tmp_path}:/vol")
    allowed = ("/proc", "/dev", "/sys", "/tmp", "/etc/", "/run", "/vol")
    stray = [m for m in ms if m[1] != "/" and not m[1].startswith(allowed)]
    assert not stray, stray
    assert [m for m in ms if m[1] == "/"], "no root mount"


# --- volumes -----------------------------------------------------------------------------------

def test_rw_volume_writes_reach_the_host(busybox_rootfs, tmp_path):
    (tmp_path / "in").write_text("from host\n")
    out = ok(sbx("run", "-v", f"{tmp_path}:/data", "--rootfs", busybox_rootfs, "sh", "-c",
                 "cat /data/in; echo from sandbox > /data/out"))
    assert out == "from host\n"
    assert (tmp_path / "out").read_text() == "from sandbox\n"
    # Container root is the calling user on the host.
    assert (tmp_path / "out").stat().st_uid == os.getuid()
    assert not (busybox_rootfs / "data").exists()


def test_rw_volume_explicit_mode(busybox_rootfs, tmp_path):
    ok(sbx("run", "-v", f"{tmp_path}:/data:rw", "--rootfs", busybox_rootfs, "sh", "-c", "echo x > /data/out"))
    assert (tmp_path / "out").read_text() == "x\n"


def test_ro_volume_refuses_writes(busybox_rootfs, tmp_path):
    (tmp_path / "in").write_text("from host\n")
    cp = sbx("run", "-v", f"{tmp_path}:/data:ro", "--rootfs", busybox_rootfs, "sh", "-c",
             "cat /data/in; echo x > /data/in || echo refused-1; touch /data/new || echo refused-2;"
             " mount -o remount,rw /data 2>/dev/null; touch /data/new2 || echo refused-3")
    assert ok(cp) == "from host\nrefused-1\nrefused-2\nrefused-3\n"
    assert "read-only file system" in cp.stderr.lower()
    assert sorted(os.listdir(tmp_path)) == ["in"]
    assert (tmp_path / "in").read_text() == "from host\n"


def test_file_volume_and_nested_mount_point(busybox_rootfs, tmp_path):
    f = tmp_path / "config.txt"
    f.write_text("cfg\n")
    d = tmp_path / "dir"
    d.mkdir()
    out = ok(sbx("run", "-v", f"{f}:/etc/app.conf:ro", "--volume", f"{d}:/srv/deep/data",
                 "--rootfs", busybox_rootfs, "sh", "-c",
                 "cat /etc/app.conf; echo y > /srv/deep/data/f; echo z > /etc/app.conf || echo refused"))
    assert out == "cfg\nrefused\n"
    assert (d / "f").read_text() == "y\n"
    assert f.read_text() == "cfg\n"


def test_several_volumes(busybox_rootfs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ok(sbx("run", "-v", f"{a}:/a", "-v", f"{b}:/b", "--rootfs", busybox_rootfs, "sh", "-c",
           "echo 1 > /a/f && echo 2 > /b/f"))
    assert (a / "f").read_text() == "1\n" and (b / "f").read_text() == "2\n"


# --- /dev, /proc, /sys, /tmp, /etc -------------------------------------------------------------

DEV_ALLOWED = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
               "console", "fd", "stdin", "stdout", "stderr", "core"}


def test_dev(busybox_rootfs):
    script = """
ls -A /dev; echo ==
echo x > /dev/null && echo null-ok
test "$(head -c 4 /dev/zero | od -An -tx1 | tr -d ' ')" = 00000000 && echo zero-ok
test "$(head -c 32 /dev/urandom | wc -c)" = 32 && echo urandom-ok
test "$(head -c 32 /dev/random | wc -c)" = 32 && echo random-ok
echo x > /dev/full || echo full-ok
test -c /dev/tty && echo tty-ok
test -c /dev/ptmx -o -L /dev/ptmx && echo ptmx-ok
echo x > /dev/shm/f && echo shm-ok
find /dev -type b | grep -q . || echo no-block-devices
"""
    cp = sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", script)
    listing, checks = ok(cp).split("==\n")
    names = set(listing.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue"} <= names, names
    assert names <= DEV_ALLOWED, names - DEV_ALLOWED
    assert checks.split() == ["null-ok", "zero-ok", "urandom-ok", "random-ok", "full-ok", "tty-ok", "ptmx-ok",
                              "shm-ok", "no-block-devices"], cp.stdout + cp.stderr
    assert "no space left on device" in cp.stderr.lower()


def test_dev_mounts(busybox_rootfs):
    ms = {m[1]: m for m in mounts_inside(busybox_rootfs)}
    assert ms["/dev"][2] == "tmpfs", ms.get("/dev")
    assert ms["/dev/pts"][2] == "devpts", ms.get("/dev/pts")
    assert ms["/dev/shm"][2] == "tmpfs", ms.get("/dev/shm")
    assert ms["/dev/mqueue"][2] == "mqueue", ms.get("/dev/mqueue")
    assert ms["/proc"][2] == "proc", ms.get("/proc")
    assert ms["/sys"][2] == "sysfs", ms.get("/sys")
    assert "ro" in ms["/sys"][3].split(","), ms["/sys"]


def test_sys_is_read_only(busybox_rootfs):
    cp = sbx("run", "--rootfs", busybox_rootfs, "sh", "-c",
             "test -d /sys/kernel && echo sys-ok; touch /sys/x || echo refused")
    assert ok(cp).split() == ["sys-ok", "refused"], cp.stderr
    assert "read-only file system" in cp.stderr.lower()


def test_tmp_is_writable(busybox_rootfs):
    assert ok(sbx("run", "-u", "1000:1000", "--rootfs", busybox_rootfs, "sh", "-c",
                  "echo hi > /tmp/f && cat /tmp/f")) == "hi\n"


def test_generated_etc_files(busybox_rootfs):
    out = ok(sbx("run", "--hostname", "gen1", "--rootfs", busybox_rootfs, "sh", "-c",
                 "cat /etc/hostname; echo ==; cat /etc/hosts; echo ==; test -f /etc/resolv.conf && echo resolv"))
    hostname, hosts, resolv = out.split("==\n")
    assert hostname == "gen1\n"
    assert re.search(r"^127\.0\.0\.1\s.*\blocalhost\b", hosts, re.M), hosts
    assert resolv == "resolv\n"
    assert not (busybox_rootfs / "etc/hostname").exists()


# --- working directory -------------------------------------------------------------------------

def test_default_workdir_is_root(busybox_rootfs):
    assert ok(sbx("run", "--rootfs", busybox_rootfs, "pwd")) == "/\n"


@pytest.mark.parametrize("flag", ["-w", "--workdir"])
def test_workdir_is_created(busybox_rootfs, flag):
    assert ok(sbx("run", flag, "/work/sub", "--rootfs", busybox_rootfs, "pwd")) == "/work/sub\n"
    assert not (busybox_rootfs / "work").exists()


def test_workdir_existing(busybox_rootfs):
    assert ok(sbx("run", "-w", "/etc", "--rootfs", busybox_rootfs, "cat", "marker")) == MARKER_CONTENT


# --- --rootfs / : the host's files -------------------------------------------------------------

def test_host_rootfs_runs_host_binaries(busybox_rootfs):
    with open("/etc/os-release") as f:
        host = f.read()
    assert ok(sbx("run", "--rootfs", "/", "/bin/busybox", "cat", "/etc/os-release")) == host


def test_host_rootfs_writes_do_not_reach_the_host(tmp_path):
    (tmp_path / "existing").write_text("original\n")
    os.chmod(tmp_path, 0o777)
    os.chmod(tmp_path / "existing", 0o666)
    script = (f"echo changed > {tmp_path}/existing; echo new > {tmp_path}/created;"
              f" rm -f {tmp_path}/existing; echo done")
    out = ok(sbx("run", "--rootfs", "/", "/bin/busybox", "sh", "-c", script))
    assert out.strip().endswith("done")
    assert (tmp_path / "existing").read_text() == "original\n"
    assert not (tmp_path / "created").exists()


def test_host_rootfs_private_tmp_proc_and_hostname():
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="sbx-host-only-") as host_file:
        name = host_file.name
        marker = os.path.basename(name) + "-inside"
        out = ok(sbx("run", "--rootfs", "/", "/bin/busybox", "sh", "-c",
                     f"test -e {name} && echo host-tmp-visible; echo x > /tmp/{marker} && echo tmp-writable;"
                     " hostname; ls -d /proc/[0-9]* | wc -l; find /dev -type b | wc -l"))
    lines = out.split()
    assert "host-tmp-visible" not in lines
    assert lines[0] == "tmp-writable"
    assert re.fullmatch(r"[0-9a-f]{12}", lines[1]) and lines[1] != socket.gethostname()
    assert int(lines[2]) < 10, out     # only the sandbox's processes
    assert lines[3] == "0", out        # no host block devices
    assert not os.path.exists(f"/tmp/{marker}")



def test_host_rootfs_gets_missing_top_level_mount_points(tmp_path):
    """`--rootfs / -v "$PWD:/src:ro" -w /src` (the README's example): /src does not exist on the
    host, so the root becomes a read-only skeleton of the host's top level with /src made in it."""
    (tmp_path / "Makefile").write_text("test:\n\t@echo made\n")
    assert not os.path.exists("/sbx-test-src")
    out = ok(sbx("run", "--rm", "--rootfs", "/", "-v", f"{tmp_path}:/sbx-test-src:ro", "-w", "/sbx-test-src",
                 "/bin/busybox", "sh", "-c",
                 "pwd; cat Makefile | head -1; cat /etc/os-release | head -1; "
                 "touch /sbx-new 2>/dev/null && echo ROOT-WRITABLE; touch x 2>/dev/null && echo VOL-WRITABLE; echo end"))
    lines = out.splitlines()
    assert lines[0] == "/sbx-test-src" and lines[1] == "test:"
    with open("/etc/os-release") as f:
        assert lines[2] == f.readline().rstrip("\n")
    assert "ROOT-WRITABLE" not in out and "VOL-WRITABLE" not in out and lines[-1] == "end"
    assert not os.path.exists("/sbx-test-src") and not os.path.exists("/sbx-new")
