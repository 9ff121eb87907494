"""Namespaces, pids, hostname, network, capabilities, no_new_privs, rlimits and fds, seen from inside."""

import os
import re
import subprocess
import sys
import time

import pytest

from sbxtest import (
    CAP_BITS, DOCKER_DEFAULT_CAP_MASK, host_pids_with, ok, proc_status_field, sbx, sbx_popen,
)

NAMESPACES = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup")


def inner_namespaces(rootfs, *opts):
    script = "for n in %s; do echo $n $(readlink /proc/self/ns/$n); done" % " ".join(NAMESPACES)
    out = ok(sbx("run", *opts, "--rootfs", rootfs, "sh", "-c", script))
    return dict(line.split(None, 1) for line in out.splitlines())


def test_every_namespace_is_new(busybox_rootfs):
    inner = inner_namespaces(busybox_rootfs)
    for ns in NAMESPACES:
        assert inner[ns] != os.readlink(f"/proc/self/ns/{ns}"), f"{ns} namespace is the host's"


def test_network_host_shares_only_the_network_namespace(busybox_rootfs):
    inner = inner_namespaces(busybox_rootfs, "--network", "host")
    assert inner["net"] == os.readlink("/proc/self/ns/net")
    for ns in ("user", "mnt", "pid", "uts", "ipc"):
        assert inner[ns] != os.readlink(f"/proc/self/ns/{ns}"), f"{ns} namespace is the host's"


# --- pids -----------------------------------------------------------------------------------

def test_command_is_pid_1(busybox_rootfs):
    assert ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "echo $$")).strip() == "1"


def test_only_container_processes_are_visible(busybox_rootfs):
    p = sbx_popen("run", "--rootfs", busybox_rootfs, "ps", "-o", "pid,comm")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    pids = {int(r[0]) for r in rows}
    assert pids == {1}, out                      # ps itself is PID 1 and alone
    assert rows[0][1] == "ps"
    assert p.pid not in pids and os.getpid() not in pids


def test_host_processes_are_not_visible(busybox_rootfs):
    marker = f"sbx-host-marker-{os.getpid()}"
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        # cmdline is set a moment after Popen returns (exec closes the error pipe first).
        deadline = time.monotonic() + 10
        while not host_pids_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert host_pids_with(marker), "the marker process should be visible on the host"
        out = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c",
                     "ls -d /proc/[0-9]*; cat /proc/[0-9]*/cmdline | tr '\\0' ' '"))
    finally:
        host.kill()
        host.wait()
    assert marker not in out
    pids = [int(line.rsplit("/", 1)[1]) for line in out.splitlines() if line.startswith("/proc/")]
    assert pids and max(pids) < 10, pids          # sh and its children only


# --- hostname ----------------------------------------------------------------------------------

def test_default_hostname_is_a_short_id(busybox_rootfs):
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME"))
    names = out.split()
    assert len(names) == 3 and re.fullmatch(r"[0-9a-f]{12}", names[0]), out
    assert names[0] == names[1] == names[2], out
    assert names[0] != os.uname().nodename
    other = ok(sbx("run", "--rootfs", busybox_rootfs, "hostname")).strip()
    assert other != names[0], "two sandboxes got the same id"


def test_hostname_option(busybox_rootfs):
    out = ok(sbx("run", "--hostname", "box1", "--rootfs", busybox_rootfs, "sh", "-c",
                 "hostname; cat /etc/hostname; echo $HOSTNAME; cat /etc/hosts"))
    lines = out.splitlines()
    assert lines[:3] == ["box1", "box1", "box1"], out
    assert "localhost" in out


# --- network -----------------------------------------------------------------------------------

@pytest.mark.parametrize("opts", [(), ("--network", "none")], ids=["default", "none"])
def test_network_none_has_only_lo_and_it_is_up(busybox_rootfs, opts):
    out = ok(sbx("run", *opts, "--rootfs", busybox_rootfs, "sh", "-c",
                 "cat /proc/net/dev; echo ==; ip -o link; echo ==; ip -o addr show lo; echo ==;"
                 " ping -c 1 -W 5 127.0.0.1 >/dev/null && echo ping-ok"))
    dev, link, addr, ping = out.split("==\n")
    ifaces = {line.split(":")[0].strip() for line in dev.splitlines()[2:] if ":" in line}
    assert ifaces == {"lo"}, dev
    links = [line for line in link.splitlines() if line.strip()]
    assert len(links) == 1 and ": lo:" in links[0], link
    flags = re.search(r"<([^>]*)>", links[0]).group(1).split(",")
    assert "UP" in flags, links[0]
    assert "127.0.0.1" in addr, addr
    assert "ping-ok" in ping, out


def test_network_host_sees_the_host_interfaces(busybox_rootfs):
    with open("/proc/net/dev") as f:
        host = {line.split(":")[0].strip() for line in f.read().splitlines()[2:] if ":" in line}
    out = ok(sbx("run", "--network", "host", "--rootfs", busybox_rootfs, "cat", "/proc/net/dev"))
    inner = {line.split(":")[0].strip() for line in out.splitlines()[2:] if ":" in line}
    assert inner == host


# --- capabilities, no_new_privs ----------------------------------------------------------------

def caps(rootfs, *opts):
    status = ok(sbx("run", *opts, "--rootfs", rootfs, "cat", "/proc/self/status"))
    return {f: int(proc_status_field(status, f), 16)
            for f in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} | {
        "NoNewPrivs": int(proc_status_field(status, "NoNewPrivs"))}


def test_root_inside_has_dockers_default_capabilities(busybox_rootfs):
    c = caps(busybox_rootfs)
    assert hex(c["CapBnd"]) == hex(DOCKER_DEFAULT_CAP_MASK)
    assert hex(c["CapEff"]) == hex(DOCKER_DEFAULT_CAP_MASK)
    assert hex(c["CapPrm"]) == hex(DOCKER_DEFAULT_CAP_MASK)
    assert c["CapInh"] == 0 and c["CapAmb"] == 0


def test_non_root_user_inside_has_no_effective_capabilities(busybox_rootfs):
    c = caps(busybox_rootfs, "-u", "1000:1000")
    assert c["CapEff"] == 0 and c["CapPrm"] == 0 and c["CapAmb"] == 0
    assert hex(c["CapBnd"]) == hex(DOCKER_DEFAULT_CAP_MASK)


def test_cap_add_and_cap_drop(busybox_rootfs):
    c = caps(busybox_rootfs, "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN")
    want = (DOCKER_DEFAULT_CAP_MASK | 1 << CAP_BITS["NET_ADMIN"]) & ~(1 << CAP_BITS["CHOWN"])
    assert hex(c["CapEff"]) == hex(want)
    assert hex(c["CapBnd"]) == hex(want)


@pytest.mark.subuid
def test_dropped_capability_is_enforced(busybox_rootfs):
    # With a subuid range, id 1 is mapped: root may chown a file to it with CAP_CHOWN, not without.
    script = "touch /tmp/f && chown 0:0 /tmp/f && echo self-ok; chown 1:1 /tmp/f && echo giveaway-ok; true"
    with_cap = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", script))
    assert "self-ok" in with_cap and "giveaway-ok" in with_cap
    without = ok(sbx("run", "--cap-drop", "CHOWN", "--rootfs", busybox_rootfs, "sh", "-c", script))
    assert "self-ok" in without and "giveaway-ok" not in without


def test_no_sys_admin_so_no_mounts(busybox_rootfs):
    cp = sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "mount -t tmpfs none /mnt && echo mounted")
    assert "mounted" not in cp.stdout, cp.stdout
    assert cp.returncode != 0


def test_no_new_privs_off_by_default(busybox_rootfs):
    assert caps(busybox_rootfs)["NoNewPrivs"] == 0


def test_no_new_privs_option(busybox_rootfs):
    assert caps(busybox_rootfs, "--security-opt", "no-new-privileges")["NoNewPrivs"] == 1


# --- rlimits -----------------------------------------------------------------------------------

def test_ulimit_nofile(busybox_rootfs):
    out = ok(sbx("run", "--ulimit", "nofile=1024:2048", "--rootfs", busybox_rootfs, "cat", "/proc/self/limits"))
    line = next(ln for ln in out.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["1024", "2048"], line


# --- file descriptors --------------------------------------------------------------------------

def test_only_stdio_fds_inside(busybox_rootfs, tmp_path):
    # Inheritable fds in sbx's own process (passed to it on purpose) must not reach the container.
    a = os.open("/dev/null", os.O_RDONLY)
    r, w = os.pipe()
    f = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    fds = (a, r, w, f, 40)
    os.dup2(a, 40)
    try:
        for fd in fds:
            os.set_inheritable(fd, True)
        cp = sbx("run", "--rootfs", busybox_rootfs, "/bin/probe", "fds", pass_fds=fds)
        control = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.listdir('/proc/self/fd')))"],
            pass_fds=fds, capture_output=True, text=True)
    finally:
        for fd in fds:
            os.close(fd)
    assert "40" in control.stdout, "the control process should have inherited the fds"
    assert ok(cp).split() == ["0", "1", "2"]


@pytest.mark.parametrize("user", [
    pytest.param("0", id="root-inside"),
    pytest.param("1000:1000", id="other-uid", marks=pytest.mark.subuid),
])
def test_sandbox_dies_with_its_sbx_even_after_changing_ids(busybox_rootfs, user):
    """The kernel clears the parent-death signal when a process changes its ids (prctl(2)), so a
    sandbox that runs as another user must arm it again: a `kill -9` of the sbx that runs it
    leaves no process of it behind."""
    marker = f"{os.getpid() % 1000}.{time.monotonic_ns() % 100000}"
    p = sbx_popen("run", "--rm", "-u", user, "--rootfs", busybox_rootfs, "sleep", marker,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sleepers():  # the sandbox's sleep (sbx's own command line holds the same words)
        return [pid for pid in host_pids_with(f"sleep\0{marker}") if pid != p.pid]

    try:
        deadline = time.monotonic() + 20
        while not sleepers() and time.monotonic() < deadline:
            assert p.poll() is None, "sbx ended before its sandbox started"
            time.sleep(0.05)
        assert sleepers(), "the sandbox never started"
    finally:
        p.kill()
        p.wait()
    deadline = time.monotonic() + 10
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleepers() == [], "the sandbox outlived its sbx"
