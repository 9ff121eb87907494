"""Docker's container verbs on the engine: create, start, stop, kill, restart, wait, rm, rename,
pause/unpause, inspect, exec, as `sbx VERB` and `sbx container VERB`; invalid transitions named
with the container and its state; concurrent verbs on one container."""
import json
import os
import subprocess
import time

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


pytestmark = pytest.mark.usefixtures("own_container_store")


_inspect = sbxtest.inspect_container


def _status(ref):
    r = sbx("inspect", "--format", "{{.State.Status}}", ref)
    return r.stdout.strip() if r.returncode == 0 else None


_wait_for = sbxtest.wait_for


LOOP = "trap 'exit 7' TERM; while true; do sleep 0.05; done"


def test_create_start_stop_and_the_no_op_cases(busybox_rootfs):
    cid = ok(sbx("create", "--name", "c1", "--rootfs", busybox_rootfs, "sh", "-c", LOOP)).strip()
    assert len(cid) == 64
    assert _status("c1") == "created"
    assert_sbx_error(sbx("exec", "c1", "true"), 1, "cannot exec container c1: it is created")
    assert_sbx_error(sbx("kill", "c1"), 1, "cannot kill container c1: it is created")
    assert ok(sbx("stop", "c1")) == "c1\n"           # Docker: stopping a stopped container is fine
    assert ok(sbx("start", "c1")) == "c1\n"
    assert _status("c1") == "running"
    pid = _inspect("c1")["State"]["Pid"]
    assert ok(sbx("start", "c1")) == "c1\n"           # running: a no-op, exit 0
    assert _inspect("c1")["State"]["Pid"] == pid
    assert ok(sbx("exec", "c1", "echo", "in")) == "in\n"
    assert ok(sbx("stop", cid[:8])) == f"{cid[:8]}\n"
    doc = _inspect("c1")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 7 and not doc["State"]["Running"]
    assert_sbx_error(sbx("exec", "c1", "true"), 1, "cannot exec container c1: it is exited")
    assert ok(sbx("container", "start", "c1")) == "c1\n"
    assert ok(sbx("container", "stop", "-t", "5", "c1")) == "c1\n"
    assert ok(sbx("rm", "c1")) == "c1\n"
    assert_sbx_error(sbx("start", "c1"), 1, "No such container: c1")


def test_kill_by_name_and_number_and_wait_prints_the_code(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "k", "--rootfs", busybox_rootfs, "sh", "-c",
           "trap 'exit 42' USR1; trap 'exit 43' USR2; while true; do sleep 0.05; done"))
    waiter = sbxtest.sbx_popen("wait", "k")
    assert ok(sbx("kill", "-s", "SIGUSR1", "k")) == "k\n"
    assert waiter.communicate(timeout=30)[0] == "42\n" and waiter.returncode == 0
    ok(sbx("start", "k"))
    assert ok(sbx("kill", "--signal", "12", "k")) == "k\n"     # USR2 by number
    assert ok(sbx("wait", "k")) == "43\n"
    assert_sbx_error(sbx("kill", "k"), 1, "cannot kill container k: it is exited")
    assert_sbx_error(sbx("kill", "-s", "NOPE", "k"), 125, "invalid signal")


def test_stop_signal_and_stop_timeout_come_from_the_container(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "sig", "--stop-signal", "USR1", "--rootfs", busybox_rootfs, "sh", "-c",
           "trap 'exit 11' USR1; trap '' TERM; while true; do sleep 0.05; done"))
    assert _inspect("sig")["Config"]["StopSignal"] == "SIGUSR1"
    ok(sbx("stop", "sig"))
    assert _inspect("sig")["State"]["ExitCode"] == 11           # the stop signal, not SIGKILL
    ok(sbx("run", "-d", "--name", "deaf", "--stop-timeout", "1", "--rootfs", busybox_rootfs, "sh", "-c",
           "trap '' TERM; while true; do sleep 0.05; done"))
    assert _inspect("deaf")["Config"]["StopTimeout"] == 1
    ok(sbx("stop", "deaf"))                                     # --stop-timeout 1, then SIGKILL
    assert _inspect("deaf")["State"]["ExitCode"] == 137


def test_restart_runs_it_again(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "r", "--rootfs", busybox_rootfs, "sh", "-c", "echo x >> /runs; " + LOOP))
    first = _inspect("r")["State"]
    assert ok(sbx("restart", "-t", "5", "r")) == "r\n"
    second = _inspect("r")["State"]
    assert second["Status"] == "running" and second["Pid"] != first["Pid"]
    assert second["StartedAt"] > first["StartedAt"]
    assert ok(sbx("exec", "r", "wc", "-l", "/runs")).split()[0] == "2"   # the same container, run twice
    ok(sbx("rm", "-f", "r"))
    ok(sbx("create", "--name", "r2", "--rootfs", busybox_rootfs, "sh", "-c", LOOP))
    ok(sbx("container", "restart", "r2"))                                 # a created one: started
    assert _status("r2") == "running"
    ok(sbx("rm", "-f", "r2"))


def test_rm_refuses_a_running_container_and_goes_on_with_the_others(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "up", "--rootfs", busybox_rootfs, "sh", "-c", LOOP))
    ok(sbx("create", "--name", "made", "--rootfs", busybox_rootfs, "true"))
    r = sbx("rm", "up", "nothing", "made")
    assert r.returncode == 1 and r.stdout == "made\n"
    assert "cannot remove container up: it is running" in r.stderr and "No such container: nothing" in r.stderr
    assert "Traceback" not in r.stderr
    assert _status("up") == "running" and _status("made") is None
    assert ok(sbx("rm", "-f", "up")) == "up\n"
    assert _status("up") is None


def test_rename_keeps_the_container_and_frees_the_old_name(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "old", "--rootfs", busybox_rootfs, "sh", "-c", LOOP))
    ok(sbx("create", "--name", "other", "--rootfs", busybox_rootfs, "true"))
    assert_sbx_error(sbx("rename", "old", "other"), 1, "already in use")
    assert_sbx_error(sbx("rename", "old", "bad/name"), 1, "invalid container name")
    assert ok(sbx("rename", "old", "new")) == ""
    assert _inspect("new")["Name"] == "/new" and _status("new") == "running"
    assert_sbx_error(sbx("inspect", "old"), 1, "old")             # neither a container nor an image now
    assert ok(sbx("exec", "new", "echo", "same")) == "same\n"
    ok(sbx("run", "--rm", "--name", "old", "--rootfs", busybox_rootfs, "true"))   # the old name is free
    ok(sbx("rm", "-f", "new", "other"))


def test_pause_is_refused_never_a_silent_no_op(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "p", "--rootfs", busybox_rootfs, "sh", "-c", LOOP))
    for verb in ("pause", "unpause"):
        r = sbx(verb, "p")
        assert r.returncode in (1, 125) and "Traceback" not in r.stderr
    assert_sbx_error(sbx("pause", "p"), 125, "cannot pause container p", "freezer")
    assert_sbx_error(sbx("unpause", "p"), 1, "cannot unpause container p: it is running")
    assert _status("p") == "running"
    ok(sbx("stop", "p"))
    assert_sbx_error(sbx("container", "pause", "p"), 1, "cannot pause container p: it is exited")


def test_inspect_has_dockers_shape(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    ok(sbx("run", "-d", "--name", "i", "--label", "a=b", "--restart", "on-failure:3", "-v", f"{vol}:/v:ro",
           "--tmpfs", "/scratch", "-e", "K=V", "-w", "/tmp", "--rootfs", busybox_rootfs, "sh", "-c", LOOP))
    doc = _inspect("i")
    for key in ("Id", "Created", "Path", "Args", "State", "Image", "Name", "RestartCount", "HostConfig", "Mounts",
                "Config", "NetworkSettings", "GraphDriver", "LogPath"):
        assert key in doc, key
    assert doc["Path"] == "sh" and doc["Args"] == ["-c", LOOP]
    assert doc["State"]["Running"] and doc["State"]["Pid"] > 0 and doc["RestartCount"] == 0
    assert doc["Config"]["Labels"]["a"] == "b" and "K=V" in doc["Config"]["Env"] and doc["Config"]["WorkingDir"] == "/tmp"
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert doc["HostConfig"]["Binds"] == [f"{vol}:/v:ro"] and "/scratch" in doc["HostConfig"]["Tmpfs"]
    assert {"Type": "bind", "Source": str(vol), "Destination": "/v", "Mode": "ro", "RW": False,
            "Propagation": "rprivate"} in doc["Mounts"]
    assert doc["NetworkSettings"]["Networks"].keys() == {"none"}
    assert ok(sbx("container", "inspect", "--format", "{{.State.Status}} {{.Name}}", "i")) == "running /i\n"
    assert_sbx_error(sbx("container", "inspect", "nothing"), 1, "No such container: nothing")
    ok(sbx("rm", "-f", "i"))


def test_start_attach_runs_in_the_foreground(busybox_rootfs):
    ok(sbx("create", "--name", "fa", "--rootfs", busybox_rootfs, "sh", "-c", "echo hello; exit 3"))
    r = sbx("start", "-a", "fa")
    assert r.returncode == 3 and r.stdout == "hello\n"
    assert _inspect("fa")["State"]["ExitCode"] == 3


def test_concurrent_stop_rm_start_of_one_container(busybox_rootfs):
    """Several processes stop, start and rm -f the same container at once: every one ends with
    an answer (no traceback), and the end state is consistent: the container is gone or it is
    in one state, and nothing of it runs once it is removed."""
    marker = "conc-marker-4711"
    ok(sbx("run", "-d", "--name", "conc", "--rootfs", busybox_rootfs, "sh", "-c", f"echo {marker} >/dev/null; " + LOOP))
    verbs = [("stop", "-t", "2", "conc"), ("start", "conc"), ("rm", "-f", "conc"), ("stop", "-t", "2", "conc"),
             ("start", "conc"), ("restart", "-t", "1", "conc"), ("rm", "-f", "conc")]
    procs = [sbxtest.sbx_popen(*v) for v in verbs]
    for v, p in zip(verbs, procs):
        out, err = p.communicate(timeout=120)
        assert "Traceback" not in err and "internal error" not in err, (v, err)
        assert p.returncode in (0, 1), (v, p.returncode, err)
        if p.returncode:
            assert err.startswith("sbx: "), (v, err)
    status = _status("conc")
    assert status in (None, "running", "exited", "created"), status
    if status is not None:
        ok(sbx("rm", "-f", "conc"))
    assert _status("conc") is None
    assert _wait_for(lambda: not sbxtest.host_pids_with(marker), 20)
    data = os.environ["SBX_ROOT"]
    assert [d for d in os.listdir(os.path.join(data, "containers")) if len(d) == 64] == []


def test_named_popen_can_be_stopped_and_inspected(busybox_rootfs):
    import sandbox
    p = sandbox.Popen(["sh", "-c", "echo up; " + LOOP], rootfs=str(busybox_rootfs), name="pyc",
                      stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        assert _inspect("pyc")["State"]["Pid"] == p.pid
        assert ok(sbx("stop", "pyc")) == "pyc\n"
        assert p.wait(timeout=30) == 7
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert _status("pyc") is None


def test_wait_reads_the_exit_code_of_an_autoremove_container(busybox_rootfs, tmp_path):
    """`docker wait` on a `run -d --rm` container gives its exit code, though the record goes
    as soon as it exits: the remover lets each waiter read the code first (wait.lock)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    gate.chmod(0o777)
    for code in (7, 0, 3):
        go = gate / f"go{code}"
        cid = ok(sbx("run", "-d", "--rm", "-v", f"{gate}:/gate", "--rootfs", busybox_rootfs, "sh", "-c",
                     f"while [ ! -e /gate/go{code} ]; do sleep 0.02; done; exit {code}")).strip()
        waiter = sbxtest.sbx_popen("wait", cid)
        # The container exits only once the waiter holds the record's wait.lock: on a loaded
        # machine a fixed sleep could end before `sbx wait` has even started.
        assert _wait_for(lambda: _holds(waiter.pid, "wait.lock"), 30), "sbx wait never took wait.lock"
        go.touch()
        out, err = waiter.communicate(timeout=60)
        assert (waiter.returncode, out) == (0, f"{code}\n"), err
        assert_sbx_error(sbx("container", "inspect", cid), 1, "No such container")


def _holds(pid, name):
    """Has process `pid` a file called `name` open?"""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/fd/{fd}")) == name:
                return True
        except OSError:
            pass
    return False
