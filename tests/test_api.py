"""The Python API for harnesses: sandbox.run, sandbox.Popen and the errors, used in this process."""

import os
import signal
import subprocess
import sys
import time

import pytest

import sandbox
from sbxtest import MARKER_CONTENT, host_pids_with, parse_idmap


# --- import cost -------------------------------------------------------------------------------

def test_import_does_not_pull_in_the_cli_or_networking(neutral_cwd):
    code = ("import sandbox, sys; "
            "print([m for m in sys.modules if m.split('.')[0] in {'typer', 'click', 'rich', 'pyroute2'}])")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=neutral_cwd, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "[]"


def test_public_names():
    assert issubclass(sandbox.Popen, subprocess.Popen)
    assert issubclass(sandbox.CalledProcessError, subprocess.CalledProcessError)
    assert issubclass(sandbox.SandboxError, Exception)


# --- run ---------------------------------------------------------------------------------------

def test_run_returns_a_completed_process(busybox_rootfs):
    r = sandbox.run(["cat", "/etc/marker"], rootfs=busybox_rootfs, capture_output=True)
    assert isinstance(r, subprocess.CompletedProcess)
    assert r.args == ["cat", "/etc/marker"]
    assert r.returncode == 0
    assert r.stdout == MARKER_CONTENT.encode()
    assert r.stderr == b""


def test_run_text_and_input(busybox_rootfs):
    r = sandbox.run(["sh", "-c", "cat; echo err >&2; exit 4"], rootfs=str(busybox_rootfs), input="in\n",
                    capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (4, "in\n", "err\n")


def test_run_bytes_input(busybox_rootfs):
    data = bytes(range(256)) * 1000
    r = sandbox.run(["cat"], rootfs=busybox_rootfs, input=data, capture_output=True)
    assert r.stdout == data


def test_run_without_capture_does_not_capture(busybox_rootfs):
    r = sandbox.run(["true"], rootfs=busybox_rootfs)
    assert r.returncode == 0 and r.stdout is None and r.stderr is None


def test_run_stdout_to_a_file_and_stderr_pipe(busybox_rootfs, tmp_path):
    with open(tmp_path / "out", "wb") as f:
        r = sandbox.run(["sh", "-c", "echo to-file; echo to-pipe >&2"], rootfs=busybox_rootfs, stdout=f,
                        stderr=subprocess.PIPE)
    assert (tmp_path / "out").read_bytes() == b"to-file\n"
    assert r.stderr == b"to-pipe\n"


def test_run_stderr_to_stdout(busybox_rootfs):
    r = sandbox.run(["sh", "-c", "echo a; echo b >&2"], rootfs=busybox_rootfs, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True)
    assert (r.stdout, r.stderr) == ("a\nb\n", None)


def test_run_check(busybox_rootfs):
    assert sandbox.run(["true"], rootfs=busybox_rootfs, check=True).returncode == 0
    with pytest.raises(sandbox.CalledProcessError) as e:
        sandbox.run(["sh", "-c", "echo partial; exit 3"], rootfs=busybox_rootfs, check=True, capture_output=True)
    assert isinstance(e.value, subprocess.CalledProcessError)
    assert e.value.returncode == 3
    assert e.value.stdout == b"partial\n"


def test_run_timeout_kills_the_sandbox(busybox_rootfs):
    marker = f"sbx-timeout-marker-{os.getpid()}"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.run(["sh", "-c", f"sleep 60; : {marker}"], rootfs=busybox_rootfs, timeout=1)
    assert time.monotonic() - t0 < 30
    deadline = time.monotonic() + 10
    while host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not host_pids_with(marker), "the sandbox outlived the timeout"


def test_run_options(busybox_rootfs, tmp_path):
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir(), ro.mkdir()
    (ro / "f").write_text("ro-data\n")
    script = ("echo $FOO; pwd; hostname; cat /ro/f; echo x > /ro/g 2>/dev/null || echo ro-refused;"
              " echo w > /rw/f; echo t > /scratch/t && echo tmpfs-ok; cat /proc/net/dev | tail -n +3 | wc -l")
    r = sandbox.run(["/bin/sh", "-c", script], rootfs=busybox_rootfs, env={"FOO": "bar"}, cwd="/made/here",
                    volumes=[f"{rw}:/rw", (str(ro), "/ro", "ro")], hostname="apibox", tmpfs=["/scratch"],
                    network="none", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bar", "/made/here", "apibox", "ro-data", "ro-refused", "tmpfs-ok", "1"]
    assert (rw / "f").read_text() == "w\n"
    assert sorted(os.listdir(ro)) == ["f"]


def test_run_volume_tuple(busybox_rootfs, tmp_path):
    r = sandbox.run(["sh", "-c", "echo v > /v/f"], rootfs=busybox_rootfs, volumes=[(tmp_path, "/v")])
    assert r.returncode == 0
    assert (tmp_path / "f").read_text() == "v\n"


def test_run_user(busybox_rootfs):
    r = sandbox.run(["sh", "-c", "id -u; id -g"], rootfs=busybox_rootfs, user="1000:1000", capture_output=True,
                    text=True)
    assert r.stdout.split() == ["1000", "1000"]
    r = sandbox.run(["id", "-u"], rootfs=busybox_rootfs, user="app", capture_output=True, text=True)
    assert r.stdout == "1000\n"


def test_run_env_is_not_inherited(busybox_rootfs, monkeypatch):
    monkeypatch.setenv("SBX_API_LEAK", "1")
    r = sandbox.run(["env"], rootfs=busybox_rootfs, capture_output=True, text=True)
    assert "SBX_API_LEAK" not in r.stdout
    assert "PATH=" in r.stdout


def test_run_init_and_read_only_and_userns(busybox_rootfs):
    r = sandbox.run(["sh", "-c", "echo $$; touch /x 2>/dev/null || echo ro; cat /proc/self/uid_map"],
                    rootfs=busybox_rootfs, init=True, read_only=True, userns="single", capture_output=True,
                    text=True)
    pid, ro, *idmap = r.stdout.splitlines()
    assert pid != "1" and ro == "ro"
    assert parse_idmap("\n".join(idmap)) == [(0, os.getuid(), 1)]


def test_run_network_host(busybox_rootfs):
    r = sandbox.run(["readlink", "/proc/self/ns/net"], rootfs=busybox_rootfs, network="host", capture_output=True,
                    text=True)
    assert r.stdout.strip() == os.readlink("/proc/self/ns/net")


def test_no_fd_leaks_from_the_calling_process(busybox_rootfs):
    fd = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        r = sandbox.run(["/bin/probe", "fds"], rootfs=busybox_rootfs, capture_output=True, text=True)
    finally:
        os.close(fd)
    assert r.stdout.split() == ["0", "1", "2"]


def test_many_sandboxes_in_one_process(busybox_rootfs):
    for i in range(20):
        r = sandbox.run(["sh", "-c", f"exit {i}"], rootfs=busybox_rootfs)
        assert r.returncode == i


# --- Popen -------------------------------------------------------------------------------------

def test_popen_communicate(busybox_rootfs):
    with sandbox.Popen(["sh", "-c", "cat; echo err >&2"], rootfs=busybox_rootfs, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert isinstance(p, subprocess.Popen)
        out, err = p.communicate(b"hello", timeout=30)
    assert (out, err, p.returncode) == (b"hello", b"err\n", 0)


def test_popen_streams_while_running(busybox_rootfs):
    p = sandbox.Popen(["sh", "-c", "echo first; read x; echo second $x"], rootfs=busybox_rootfs,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "first\n"
        assert p.poll() is None
        p.stdin.write("go\n")
        p.stdin.close()
        assert p.stdout.readline() == "second go\n"
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()
        p.wait()


def test_popen_kill(busybox_rootfs):
    p = sandbox.Popen(["sh", "-c", "echo ready; exec sleep 60"], rootfs=busybox_rootfs, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        assert p.poll() is None
        p.kill()
        assert p.wait(timeout=20) == -signal.SIGKILL
    finally:
        p.kill()
        p.wait()


def test_popen_leaves_the_callers_signals_alone_and_its_pidfd_is_closed_on_exit(busybox_rootfs):
    """The supervisor under Popen holds no signals (a harness's Ctrl-C stays its own) and its
    teardown runs when subprocess reaps the sandbox."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    p = sandbox.Popen(["sh", "-c", "echo ready; exec sleep 60"], rootfs=busybox_rootfs, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == before
        pidfd = p.pidfd
        assert pidfd >= 0
        p.kill()
        assert p.wait(timeout=20) == -signal.SIGKILL
        assert p.pidfd == -1
        with pytest.raises(OSError):
            os.fstat(pidfd)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_popen_terminate_with_init(busybox_rootfs):
    p = sandbox.Popen(["sh", "-c", "echo ready; exec sleep 60"], rootfs=busybox_rootfs, init=True,
                      stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.terminate()
        # The init (PID 1) forwards SIGTERM and, like tini and docker-init, exits 128+N.
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        p.kill()
        p.wait()


def test_popen_wait_timeout(busybox_rootfs):
    with sandbox.Popen(["sleep", "60"], rootfs=busybox_rootfs) as p:
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.5)
        p.kill()
    assert p.returncode == -signal.SIGKILL


# --- errors ------------------------------------------------------------------------------------

def test_command_not_found(busybox_rootfs):
    with pytest.raises(sandbox.SandboxError) as e:
        sandbox.run(["nosuchcmd"], rootfs=busybox_rootfs)
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.exit_code == 127
    assert "nosuchcmd" in str(e.value)
    with pytest.raises(FileNotFoundError):
        sandbox.Popen(["/no/such/cmd"], rootfs=busybox_rootfs).wait()


def test_command_not_executable(busybox_rootfs):
    with pytest.raises(sandbox.SandboxError) as e:
        sandbox.run(["/etc/marker"], rootfs=busybox_rootfs)
    assert e.value.exit_code == 126


BAD_INPUT = {
    "volume-without-colon": (lambda tmp: {"volumes": ["nocolon"]}, "nocolon"),
    "volume-missing-host-path": (lambda tmp: {"volumes": [("/no/such/host/dir", "/x")]}, "/no/such/host/dir"),
    "volume-relative-target": (lambda tmp: {"volumes": [(str(tmp), "relative")]}, "relative"),
    "volume-bad-mode": (lambda tmp: {"volumes": [(str(tmp), "/x", "bogus")]}, "bogus"),
    "unknown-user": (lambda tmp: {"user": "nosuchuser"}, "nosuchuser"),
    "missing-rootfs": (lambda tmp: {"rootfs": tmp / "no-such-rootfs"}, "no-such-rootfs"),
    "bad-network": (lambda tmp: {"network": "bogus"}, "bogus"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_validation_errors_before_anything_runs(busybox_rootfs, tmp_path, case):
    make, word = BAD_INPUT[case]
    good = tmp_path / "good"
    good.mkdir()
    kw = {"rootfs": busybox_rootfs, **make(tmp_path)}
    volumes = [(str(good), "/good"), *kw.pop("volumes", [])]
    with pytest.raises(sandbox.SandboxError) as e:
        sandbox.run(["touch", "/good/ran"], volumes=volumes, **kw)
    assert e.value.exit_code == 125
    assert word in str(e.value)
    assert not isinstance(e.value, subprocess.CalledProcessError)
    assert not (good / "ran").exists()


def test_errors_have_a_hint_attribute(tmp_path):
    with pytest.raises(sandbox.SandboxError) as e:
        sandbox.run(["true"], rootfs=tmp_path / "missing")
    assert e.value.hint is None or isinstance(e.value.hint, str)


@pytest.mark.parametrize("kw", [{"user": "99999999999"}, {"user": "0:4294967295"}, {"user": "-1"}])
def test_out_of_range_ids_are_usage_errors(busybox_rootfs, kw):
    """Python callers get the same range check as the CLI (an OverflowError in C otherwise, or a
    uid silently truncated)."""
    with pytest.raises(sandbox.UsageError):
        sandbox.run(["true"], rootfs=busybox_rootfs, **kw)


def test_cli_run_path_imports_nothing_heavy(busybox_rootfs, neutral_cwd):
    """`sbx run` is timed against crun: its path must not import typer/click (~70 ms), re (~10 ms
    with enum and functools), json or hashlib.  Checked on a real run, from a fresh process."""
    code = ("import sys, runpy\n"
            "sys.argv = ['sbx', 'run', '--rm', '--rootfs', sys.argv[1], 'true']\n"
            "from sandbox.cli import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "heavy = {'typer', 'click', 'rich', 're', 'json', 'hashlib', 'pyroute2', 'urllib3'}\n"
            "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in {'typer', 'click'}))\n")
    cp = subprocess.run([sys.executable, "-c", code, str(busybox_rootfs)], capture_output=True, text=True,
                        cwd=neutral_cwd, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip().splitlines()[-1] == "[]", cp.stdout
