"""Between `sbx-runc create` and `start` the container's pid 1 waits in the sealed holder
(csrc/sb_init.c, exec'd from a sealed memfd), not in a fork of sbx-runc's python: seen from the
host as the same user and from a process exec'd into the container, /proc/1/exe is the sealed
memfd (not the host's python, and not openable for writing: CVE-2019-5736's class), its memory
holds nothing of the caller's (a marker in sbx-runc's environment and argv), and its command
line and environment are the container's own.  Once started, the command gets exactly the
capabilities, no_new_privs and seccomp filter its config asks for; a missing executable still
fails at create, and a command that cannot be exec'd still reports why."""
from __future__ import annotations

import os
import sys

import pytest

from ocitest import rt  # noqa: F401 - the fixture
from ocitest import edit_config, make_bundle, wait_file

# The capabilities the parity test gives its process (linux/capability.h numbers).
CAPS = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_NET_BIND_SERVICE": 10, "CAP_AUDIT_WRITE": 29}


def _mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << CAPS[n]
    return m


def _readable_memory(pid: int) -> bytes:
    """Every readable mapping of `pid`, read through /proc/PID/mem (what a ptrace-capable
    process of the same user can see)."""
    out = []
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                addr, perms = line.split()[:2]
                if not perms.startswith("r"):
                    continue
                lo, hi = (int(x, 16) for x in addr.split("-"))
                try:
                    out.append(os.pread(fd, hi - lo, lo))
                except OSError:
                    continue  # [vvar] and the like
    finally:
        os.close(fd)
    return b"".join(out)


def _created(rt, tmp_path, args=("sh", "-c", "echo started > /started"), **changes):
    """A created container whose caller had a marker in its environment and command line, and
    whose own environment has a token: (bundle, pid, marker, token)."""
    marker = "callermark" + os.urandom(6).hex()
    token = "heldtoken" + os.urandom(6).hex()
    b = make_bundle(tmp_path / "b", list(args), **changes)
    edit_config(b, lambda c: c["process"]["env"].append(f"HELD_TOKEN={token}"))
    env = dict(os.environ, SBX_CALLER_SECRET=marker)
    rt("create", "--bundle", b, "--pid-file", tmp_path / f"{marker}.pid", "h1", env=env, check=True)
    pid = rt.state("h1")["pid"]
    return b, pid, marker, token


def _assert_started(rt, b):
    rt("start", "h1", check=True)
    assert wait_file(b / "rootfs/started") == "started\n"
    rt.wait_status("h1", "stopped")


def test_held_pid1_seen_from_the_host_is_the_sealed_holder(rt, tmp_path):
    b, pid, marker, token = _created(rt, tmp_path)
    exe = os.readlink(f"/proc/{pid}/exe")
    assert exe != os.path.realpath(sys.executable)
    assert exe.startswith("/memfd:sbx-init"), exe
    with pytest.raises(OSError):
        os.close(os.open(f"/proc/{pid}/exe", os.O_WRONLY))
    mem = _readable_memory(pid)
    assert token.encode() in mem, "pid 1's memory was not read"  # the command's environment is there
    assert marker.encode() not in mem, "sbx-runc create's environment/argv is in pid 1's memory"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read().split(b"\0")
    assert marker.encode() not in cmdline and cmdline.split(b"\0")[2:5] == [b"sh", b"-c", b"echo started > /started"]
    assert f"HELD_TOKEN={token}".encode() in environ and not any(marker.encode() in e for e in environ)
    _assert_started(rt, b)


# Run inside the created container as its startContainer hook (busybox sh, before the start
# releases pid 1; `sbx-runc exec` refuses a created container): where /proc/1/exe leads,
# whether it opens for writing (O_RDWR, no truncation), and every readable mapping of pid 1
# copied out through /proc/1/mem.
PROBE = r"""
readlink /proc/1/exe > /probe
if ( exec 3<>/proc/1/exe ) 2>/dev/null; then echo writable >> /probe; else echo sealed >> /probe; fi
: > /dump
while read range perms rest; do
  case $perms in r*) ;; *) continue ;; esac
  s=${range%-*}; e=${range#*-}
  dd if=/proc/1/mem bs=4096 skip=$((0x$s / 4096)) count=$(((0x$e - 0x$s) / 4096)) 2>/dev/null >> /dump
done < /proc/1/maps
tr '\0' ' ' < /proc/1/cmdline >> /probe; echo >> /probe
tr '\0' ' ' < /proc/1/environ >> /probe; echo >> /probe
echo done >> /probe
"""


def test_held_pid1_seen_from_inside_the_container_is_the_sealed_holder(rt, tmp_path):
    hook = {"path": "/bin/sh", "args": ["sh", "-c", PROBE], "env": ["PATH=/bin:/usr/bin"]}
    b, pid, marker, token = _created(rt, tmp_path, hooks={"startContainer": [hook]})
    _assert_started(rt, b)   # the hook ran before the start released pid 1
    exe, how, cmdline, environ, done = (b / "rootfs/probe").read_text().split("\n")[:5]
    assert done == "done"
    assert exe.startswith("/memfd:sbx-init") and "python" not in exe, exe
    assert how == "sealed"
    mem = (b / "rootfs/dump").read_bytes()
    assert token.encode() in mem, "pid 1's memory was not read"  # the command's environment is there
    assert marker.encode() not in mem, "sbx-runc create's environment/argv is in pid 1's memory"
    assert marker not in cmdline and "echo started > /started" in cmdline
    assert marker not in environ and f"HELD_TOKEN={token}" in environ


STATUS_KEYS = ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp")


@pytest.mark.parametrize("user", ["root", "nonroot"])
def test_started_process_has_the_configs_caps_nnp_and_seccomp(rt, tmp_path, user):
    """The second exec (holder -> command) changes nothing the launcher set: the command's
    /proc/self/status shows the config's capabilities, no_new_privs and a seccomp filter that
    still denies what the profile denies."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status > /status;"
                                     " mkdir /denied 2> /mkdir.err; echo $? > /mkdir.rc; echo started > /started"])
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]

    def change(c):
        proc = c["process"]
        proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
        proc["noNewPrivileges"] = True
        if user == "nonroot":
            proc["user"] = {"uid": 1000, "gid": 1000}
            b.joinpath("rootfs").chmod(0o777)
            if os.geteuid() != 0:  # rootless: uid 1000 inside is the caller (no subordinate ids needed)
                c["linux"]["uidMappings"] = [{"containerID": 1000, "hostID": os.getuid(), "size": 1}]
                c["linux"]["gidMappings"] = [{"containerID": 1000, "hostID": os.getgid(), "size": 1}]
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    edit_config(b, change)
    rt("create", "--bundle", b, "h1", check=True)
    _assert_started(rt, b)
    status = dict(line.split(":\t", 1) for line in (b / "rootfs/status").read_text().splitlines())
    status = {k: v.strip() for k, v in status.items()}
    want = _mask(caps)
    assert int(status["CapBnd"], 16) == want
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == (want if user == "root" else 0)
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert (b / "rootfs/mkdir.rc").read_text().strip() != "0"
    assert "Operation not permitted" in (b / "rootfs/mkdir.err").read_text()
    assert not (b / "rootfs/denied").exists()


def test_missing_executable_still_fails_at_create(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["no-such-command"])
    cp = rt("create", "--bundle", b, "h1")
    assert cp.returncode == 1
    assert cp.stderr.strip() == "sbx-runc: no-such-command: executable file not found in $PATH", cp.stderr
    assert rt("list", "-q").stdout == ""


def test_a_failed_exec_after_start_is_reported_by_the_holder(busybox_rootfs, tmp_path):
    """A command found at create whose execve fails once started (not an executable format)
    is reported by the holder on the launcher's report pipe, as the launcher's child did."""
    from sandbox.errors import CommandNotExecutable
    from sandbox.runtime import launch, spec as spec_mod
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "bad").write_bytes(b"\x00\x01not an executable\n")
    (vol / "bad").chmod(0o755)
    spec = spec_mod.build(["/v/bad"], rootfs=str(busybox_rootfs), volumes=[f"{vol}:/v"],
                          container_id=os.urandom(32).hex())
    h = launch.create(spec, wait_start=True)
    pid, pidfd = h.release()
    os.close(pidfd)
    assert os.readlink(f"/proc/{pid}/exe").startswith("/memfd:sbx-init")
    with pytest.raises(CommandNotExecutable, match="/v/bad"):
        h.start()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
