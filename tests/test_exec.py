"""exec: another process in a running sandbox, through the same launcher (a plan that joins
the sandbox's namespaces instead of creating new ones), from the API and the CLI."""
import subprocess

import pytest

import sandbox
import sbxtest
from sbxtest import sbx


def _started(p):
    assert p.stdout.readline() in (b"up\n", "up\n")


def test_api_exec_joins_every_namespace(busybox_rootfs):
    with sandbox.Popen(["sh", "-c", "echo up; echo inside > /tmp/mark; exec sleep 60"], rootfs=busybox_rootfs,
                       hostname="box", stdout=subprocess.PIPE) as p:
        _started(p)
        # stdout line comes before the write; wait for the file through exec itself
        e = p.exec(["sh", "-c", "while [ ! -e /tmp/mark ]; do sleep 0.05; done; cat /tmp/mark; hostname; "
                    "echo $$; ls /proc | grep -c '^[0-9]'; readlink /proc/1/exe; cat /proc/self/uid_map"],
                   stdout=subprocess.PIPE, text=True)
        out, _ = e.communicate(timeout=30)
        p.kill()
    lines = out.split("\n")
    assert e.returncode == 0
    assert lines[0] == "inside"                # same mount namespace and root (the overlay)
    assert lines[1] == "box"                   # same uts namespace
    assert int(lines[2]) > 1                   # in the sandbox's pid namespace, not its PID 1
    assert lines[4].endswith("busybox")        # PID 1 there is the sandbox's command
    with open("/proc/self/uid_map") as f:
        host_map = f.read().split()
    assert lines[5].split() != host_map         # in the sandbox's user namespace


def test_api_exec_exit_status_env_and_errors(busybox_rootfs):
    with sandbox.Popen(["sh", "-c", "echo up; exec sleep 60"], rootfs=busybox_rootfs, env={"FROM": "run"},
                       stdout=subprocess.PIPE) as p:
        _started(p)
        r = p.exec(["sh", "-c", "echo $FROM $EXTRA; pwd; exit 7"], env={"EXTRA": "exec"}, cwd="/etc",
                   stdout=subprocess.PIPE, text=True)
        assert r.communicate(timeout=30)[0].split() == ["run", "exec", "/etc"]
        assert r.returncode == 7
        with pytest.raises(FileNotFoundError):
            p.exec(["no-such-command"])
        p.kill()
        p.wait()
        with pytest.raises(sandbox.SandboxError):
            p.exec(["true"])


def test_cli_exec_into_named_and_kept_containers(busybox_rootfs, tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    procs = [sbxtest.sbx_popen("run", "--rm", "--name", "ephemeral", "--rootfs", str(busybox_rootfs),
                               "sh", "-c", "echo up; exec sleep 60"),
             sbxtest.sbx_popen("run", "--name", "kept", "--rootfs", str(busybox_rootfs),
                               "sh", "-c", "echo up; exec sleep 60")]
    try:
        for p in procs:
            _started(p)
        for name in ("ephemeral", "kept"):
            r = sbx("exec", "-e", "X=1", "-w", "/tmp", name, "sh", "-c", "echo $X; pwd; exit 4")
            assert r.returncode == 4 and r.stdout.split() == ["1", "/tmp"], r.stderr
            r = sbx("exec", name, "no-such-command")
            assert r.returncode == 127 and "Traceback" not in r.stderr
    finally:
        for p in procs:
            p.kill()
            p.wait()
    r = sbx("exec", "kept", "true")  # Docker's daemon errors exit 1; the state is named
    sbxtest.assert_sbx_error(r, 1, "cannot exec container kept: it is exited")
    r = sbx("exec", "nothing-called-this", "true")
    sbxtest.assert_sbx_error(r, 1, "No such container: nothing-called-this")


def test_failed_exec_never_leaves_a_zombie_in_the_sandbox(busybox_rootfs):
    """After joining the pid namespace, the launcher's child forks; the new process's failure
    report can reach the parent before the 'forked' message.  It once went unreaped then,
    a zombie in the sandbox's pid namespace that kept PID 1 from finishing its exit (seen as
    a hang in CI under load).  Every round must end promptly."""
    for _ in range(30):
        with sandbox.Popen(["sh", "-c", "echo up; exec sleep 60"], rootfs=busybox_rootfs,
                           stdout=subprocess.PIPE) as p:
            _started(p)
            with pytest.raises(FileNotFoundError):
                p.exec(["no-such-command"])
            p.kill()
            assert p.wait(timeout=20) == -9
