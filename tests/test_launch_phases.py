"""The two-phase launch (runtime/launch.py create/release/start over csrc/sb_spawn.c): a child held
after clone() in its new namespaces before it mounts or runs anything, hooks that run while it is
held, a launch that waits just before execve until started (also from another process, through
its FIFO), aborts that leave no process behind, and the fast path that stays vfork-like.

Real sandboxes, run as each test user: sbxsub's default mapping writes a subuid range through
newuidmap/newgidmap (helper mode), sbxnosub's is the single id the child maps itself."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sandbox
from sandbox import _native
from sandbox.errors import CommandNotExecutable, CommandNotFound, LaunchError
from sandbox.runtime import hooks, launch, plan as plan_mod, spec as spec_mod

NS = ("user", "mnt", "pid", "net", "uts", "ipc")


def _spec(rootfs, argv, vol=None, **kw):
    return spec_mod.build(list(argv), rootfs=str(rootfs), volumes=[f"{vol}:/v"] if vol else (),
                          container_id=os.urandom(32).hex(), **kw)


def _exit_code(pid, pidfd=-1):
    _, status = os.waitpid(pid, 0)
    if pidfd >= 0:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(status)


def _assert_gone(pid):
    """The process is reaped: not ours to wait for any more, and not in /proc (no zombie)."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not os.path.exists(f"/proc/{pid}"), Path(f"/proc/{pid}/status").read_text()


class Observer(hooks.Hook):
    """Records what a held child looks like from the host."""
    name = "observer"

    def __init__(self, side_effect=None):
        self.side_effect = side_effect
        self.seen = None
        self.torn_down = 0

    def attach(self, pid):
        self.seen = {
            "pid": pid,
            "ns": {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in NS},
            "uid_map": Path(f"/proc/{pid}/uid_map").read_text(),
            "mountinfo": Path(f"/proc/{pid}/mountinfo").read_text(),
            "side_effect": self.side_effect is not None and os.path.lexists(self.side_effect),
        }

    def teardown(self):
        self.torn_down += 1


class Raising(hooks.Hook):
    name = "refuser"

    def __init__(self):
        self.pid = None
        self.torn_down = 0

    def attach(self, pid):
        self.pid = pid
        raise OSError(13, "the cgroup refused the pid")

    def teardown(self):
        self.torn_down += 1


# --- the stage tables --------------------------------------------------------------------------

C_TO_PY = {"NONE": "none", "CLONE": "clone", "SIGNALS": "reset signals", "PDEATHSIG": "set parent-death signal",
           "SYNC": "wait for id maps", "UID_MAP": "write uid_map", "SETGROUPS_DENY": "deny setgroups",
           "GID_MAP": "write gid_map", "NEWUIDMAP": "newuidmap", "NEWGIDMAP": "newgidmap",
           "MOUNT_PRIVATE": "make mounts private", "OP": "mount", "PIVOT": "pivot_root",
           "HOSTNAME": "sethostname", "LOOPBACK": "bring up loopback", "RLIMIT": "setrlimit",
           "CWD": "chdir to working directory", "CAPBSET": "drop bounding capabilities",
           "SETGROUPS": "setgroups", "SETGID": "setgid", "SETUID": "setuid", "CAPSET": "set capabilities",
           "NO_NEW_PRIVS": "set no_new_privs", "STDIO": "set up stdio", "SETSID": "setsid",
           "CLOSE_FDS": "close file descriptors", "INIT": "start init", "EXEC": "exec",
           "SETNS": "join namespaces", "CONSOLE": "allocate the pty", "FORKED": "forked",
           "DUMPABLE": "make the exec process non-dumpable", "KEYRING": "join a new session keyring",
           "SECCOMP": "install the seccomp filter", "PARENT": "launcher", "HELD": "held", "READY": "ready",
           "LATE_UNSHARE": "enter its cgroup namespace"}


def test_c_stages_and_python_names_agree():
    header = Path(__file__).resolve().parents[1] / "csrc" / "sb_launch.h"
    if not header.exists():
        pytest.skip("no csrc/ next to the tests")
    body = re.search(r"enum sb_stage \{(.*?)\};", header.read_text(), re.S).group(1)
    names = re.findall(r"^\s*SB_STAGE_(\w+)", body, re.M)
    assert names[-1] == "COUNT"
    names = names[:-1]
    assert len(names) == len(launch.STAGES) == _native.STAGE_COUNT
    assert [C_TO_PY[n] for n in names] == list(launch.STAGES)


# --- create / hooks / release --------------------------------------------------------------------

def test_held_child_is_in_new_namespaces_and_has_run_nothing(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    obs = Observer(side_effect=vol / "ran")
    h = launch.create(_spec(busybox_rootfs, ["sh", "-c", "echo ran > /v/ran"], vol), hooks=[obs])
    try:
        seen = obs.seen
        assert seen["pid"] == h.pid
        ours = {n: os.readlink(f"/proc/self/ns/{n}") for n in NS}
        for n in NS:
            assert seen["ns"][n] != ours[n], n
        assert seen["uid_map"].split(), "the id maps are written before the hooks run"
        assert not seen["side_effect"]
        assert not (vol / "ran").exists()
        # nothing mounted yet: the new mount namespace is still a copy of ours (no sbx tmpfs,
        # no root, no volume)
        assert str(vol) not in seen["mountinfo"] and " sbx " not in seen["mountinfo"]
        assert h.state == "held" and h.clone_mode == "fork"
    except BaseException:
        h.abort()
        raise
    pid, pidfd = h.release()
    assert pid == seen["pid"]
    assert _exit_code(pid, pidfd) == 0
    assert (vol / "ran").read_text() == "ran\n"
    assert obs.torn_down == 0  # the owner tears down once the sandbox is done
    h.teardown()
    assert obs.torn_down == 1


def _uid_map_while_held(rootfs):
    """The held child's uid_map as a hook reads it (the sandbox then runs to exit 0)."""
    obs = Observer()
    h = launch.create(_spec(rootfs, ["true"]), hooks=[obs])
    assert _exit_code(*h.release()) == 0
    return [line.split() for line in obs.seen["uid_map"].splitlines()]


@pytest.mark.subuid
def test_helper_mode_maps_the_range_before_the_hooks(busybox_rootfs):
    lines = _uid_map_while_held(busybox_rootfs)
    assert len(lines) >= 2 and int(lines[1][2]) >= 65536, lines


@pytest.mark.nosubuid
def test_single_id_mode_maps_our_uid_before_the_hooks(busybox_rootfs):
    assert _uid_map_while_held(busybox_rootfs) == [["0", str(os.getuid()), "1"]]


def test_pidfile_hook_names_the_held_child(busybox_rootfs, tmp_path):
    pidfile = tmp_path / "pid"
    h = launch.create(_spec(busybox_rootfs, ["true"]), hooks=[hooks.PidFile(pidfile)])
    assert pidfile.read_text() == f"{h.pid}\n"
    pid, pidfd = h.release()
    assert _exit_code(pid, pidfd) == 0
    h.teardown()
    assert not pidfile.exists()


def test_raising_hook_aborts_and_leaves_no_process(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    first, bad, never = Observer(), Raising(), Observer()
    with pytest.raises(LaunchError) as ei:
        launch.create(_spec(busybox_rootfs, ["sh", "-c", "echo ran > /v/ran"], vol), hooks=[first, bad, never])
    assert "refuser" in str(ei.value) and "the cgroup refused the pid" in str(ei.value)
    assert ei.value.stage == "hook refuser"
    assert first.torn_down == 1 and bad.torn_down == 1  # the failing hook may have half set up
    assert never.seen is None and never.torn_down == 0
    _assert_gone(bad.pid)
    assert not (vol / "ran").exists()


def test_abort_of_a_held_child(busybox_rootfs):
    obs = Observer()
    h = launch.create(_spec(busybox_rootfs, ["true"]), hooks=[obs])
    pid = h.pid
    h.abort()
    _assert_gone(pid)
    assert obs.torn_down == 1 and h.state == "gone"
    h.abort()  # idempotent
    with pytest.raises(LaunchError):
        h.release()


def test_failed_step_after_release_is_reported_and_reaped(busybox_rootfs):
    obs = Observer()
    h = launch.create(_spec(busybox_rootfs, ["true"], cwd="/etc/passwd/x"), hooks=[obs])
    pid = h.pid
    with pytest.raises(LaunchError) as ei:
        h.release()
    assert ei.value.stage == "chdir to working directory"
    _assert_gone(pid)
    assert obs.torn_down == 1


def test_command_not_found_is_reported_by_release(busybox_rootfs):
    h = launch.create(_spec(busybox_rootfs, ["no-such-command"]))
    pid = h.pid
    with pytest.raises(CommandNotFound):
        h.release()
    _assert_gone(pid)


def test_exec_into_a_running_sandbox_is_held_inside_its_namespaces(busybox_rootfs):
    """An exec joins a pid namespace by forking once more: the held process is the forked one."""
    class NsPid(hooks.Hook):
        # An exec turns non-dumpable before it joins (its /proc/PID/ns is not ours to read), but
        # /proc/PID/status says which pid namespaces it is in.
        name = "nspid"

        def attach(self, pid):
            self.pid = pid
            self.nspid = re.search(r"NSpid:\s+(.*)", Path(f"/proc/{pid}/status").read_text()).group(1).split()

        def teardown(self):
            pass

    with sandbox.Popen(["sleep", "60"], rootfs=busybox_rootfs) as box:
        try:
            hook = NsPid()
            h = launch.create(spec_mod.build_exec(box.spec, box.pid, ["true"]), hooks=[hook])
            assert hook.pid == h.pid
            assert len(hook.nspid) == 2 and int(hook.nspid[1]) > 1, hook.nspid  # inside, not its PID 1
            pid, pidfd = h.release()
            assert pid == hook.pid
            assert _exit_code(pid, pidfd) == 0
        finally:
            box.kill()


def test_exec_into_a_sandbox_without_a_pid_namespace_is_held_too(busybox_rootfs, tmp_path):
    """Joining no pid namespace there is no fork: the held process is the child itself."""
    vol = tmp_path / "vol"
    vol.mkdir()
    with sandbox.Popen(["sleep", "60"], rootfs=busybox_rootfs, volumes=[f"{vol}:/v"],
                       namespaces=("user", "mount")) as box:
        try:
            pidfile = tmp_path / "pid"
            sp = spec_mod.build_exec(box.spec, box.pid, ["sh", "-c", "echo ran > /v/ran"])
            h = launch.create(sp, hooks=[hooks.PidFile(pidfile)])
            assert pidfile.read_text() == f"{h.pid}\n"
            assert not (vol / "ran").exists()
            pid, pidfd = h.release()
            assert pid == h.pid
            assert _exit_code(pid, pidfd) == 0
            assert (vol / "ran").read_text() == "ran\n"
            h.teardown()
        finally:
            box.kill()


# --- the fast path -------------------------------------------------------------------------------

def test_fast_path_clones_vfork_like(busybox_rootfs):
    p = plan_mod.compile(_spec(busybox_rootfs, ["true"], userns="single"))
    pid, pidfd = launch.spawn(p)
    assert _exit_code(pid, pidfd) == 0
    assert p.clone_mode == "vfork"
    # and a two-phase launch of the same spec cannot be
    h = launch.create(_spec(busybox_rootfs, ["true"], userns="single"))
    assert h.clone_mode == "fork"
    assert _exit_code(*h.release()) == 0


# --- wait before execve (OCI create/start) -------------------------------------------------------

def _waiting(rootfs, vol, argv, start_dir=None, hooks=()):
    h = launch.create(_spec(rootfs, argv, vol), wait_start=True, start_dir=start_dir, hooks=hooks)
    pid, pidfd = h.release()
    assert h.state == "waiting"
    return h, pid, pidfd


def test_wait_start_release_returns_before_exec_and_start_runs_it(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    h, pid, pidfd = _waiting(busybox_rootfs, vol, ["sh", "-c", "echo ran > /v/ran"])
    try:
        time.sleep(0.2)
        assert not (vol / "ran").exists()
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # alive, waiting
        # waiting in the sealed holder (csrc/sb_init.c): the command has not exec'd
        assert Path(f"/proc/{pid}/comm").read_text() == "memfd:sbx-init\n"
    except BaseException:
        h.abort()
        raise
    h.start()
    assert h.state == "running"
    assert _exit_code(pid, pidfd) == 0
    assert (vol / "ran").read_text() == "ran\n"


def test_wait_start_under_init(busybox_rootfs, tmp_path):
    """With --init the command is looked up before READY too, and sbx-init runs it once started."""
    vol = tmp_path / "vol"
    vol.mkdir()
    h = launch.create(_spec(busybox_rootfs, ["sh", "-c", "echo $$ > /v/ran"], vol, init=True), wait_start=True)
    pid, pidfd = h.release()
    assert not (vol / "ran").exists()
    h.start()
    assert _exit_code(pid, pidfd) == 0
    assert int((vol / "ran").read_text()) > 1  # not PID 1: the init is


@pytest.mark.parametrize("fifo", [False, True], ids=["pipe", "fifo"])
def test_start_of_a_child_killed_while_waiting_is_refused(busybox_rootfs, tmp_path, fifo):
    obs = Observer()
    h = launch.create(_spec(busybox_rootfs, ["true"]), hooks=[obs], wait_start=True,
                      start_dir=tmp_path if fifo else None)
    pid, pidfd = h.release()
    os.kill(pid, 9)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped yet
    with pytest.raises(LaunchError, match="no longer waiting|nothing waits"):
        h.start()
    os.close(pidfd)
    _assert_gone(pid)
    assert obs.torn_down == 1


def test_wait_start_from_another_process_through_the_fifo(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    h, pid, pidfd = _waiting(busybox_rootfs, vol, ["sh", "-c", "echo ran > /v/ran"], start_dir=state)
    fifo = Path(h.start_fifo)
    assert fifo.parent == state and fifo.is_fifo() and (fifo.stat().st_mode & 0o777) == 0o600
    assert not (vol / "ran").exists()
    r = subprocess.run([sys.executable, "-c", "import sys; from sandbox.runtime import launch; "
                        "launch.start_fifo(sys.argv[1])", str(fifo)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    h.wait_exec()
    assert _exit_code(pid, pidfd) == 0
    assert (vol / "ran").read_text() == "ran\n"
    assert not fifo.exists()  # started once: a second start finds nothing waiting
    with pytest.raises(LaunchError, match="nothing waits"):
        launch.start_fifo(fifo)


def test_abort_of_a_waiting_child(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    h, pid, pidfd = _waiting(busybox_rootfs, vol, ["sh", "-c", "echo ran > /v/ran"], start_dir=tmp_path)
    fifo = h.start_fifo
    h.abort()
    os.close(pidfd)
    _assert_gone(pid)
    assert not os.path.exists(fifo)
    with pytest.raises(LaunchError):
        launch.start_fifo(fifo)
    assert not (vol / "ran").exists()


def test_exec_failure_after_start_is_reported(busybox_rootfs, tmp_path):
    """The command exists when the sandbox gets ready (it is looked up then, as runc does), but
    cannot be executed once started: the error still reaches whoever waits for the exec."""
    vol = tmp_path / "vol"
    vol.mkdir()
    cmd = vol / "cmd"
    cmd.write_text("#!/bin/sh\nexit 0\n")
    cmd.chmod(0o755)
    obs = Observer()
    h, pid, pidfd = _waiting(busybox_rootfs, vol, ["/v/cmd"], hooks=[obs])
    cmd.write_bytes(b"\x7fELF not really\n")  # same file, now an executable of no known format
    with pytest.raises(CommandNotExecutable, match="exec format error"):
        h.start()
    os.close(pidfd)
    _assert_gone(pid)
    assert obs.torn_down == 1

    cmd.write_text("#!/bin/sh\nexit 0\n")
    h, pid, pidfd = _waiting(busybox_rootfs, vol, ["/v/cmd"])
    cmd.unlink()
    with pytest.raises(CommandNotFound):
        h.start()
    os.close(pidfd)
    _assert_gone(pid)


def test_wait_start_command_not_found_is_reported_by_release(busybox_rootfs, tmp_path):
    h = launch.create(_spec(busybox_rootfs, ["no-such-command"]), wait_start=True, start_dir=tmp_path)
    pid = h.pid
    with pytest.raises(CommandNotFound):
        h.release()
    _assert_gone(pid)
    assert not os.path.exists(h.start_fifo)


def _children():
    return {pid for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()}


def test_start_dir_that_cannot_hold_the_fifo_is_refused_before_clone(busybox_rootfs, tmp_path):
    before = _children()
    with pytest.raises(LaunchError, match="cannot make the start FIFO") as ei:
        launch.create(_spec(busybox_rootfs, ["true"]), wait_start=True, start_dir=tmp_path / "missing")
    assert ei.value.hint
    assert _children() == before  # no child was made


@pytest.mark.root
@pytest.mark.skipif(not shutil.which("fuse-overlayfs"), reason="fuse-overlayfs not installed")
def test_overlay_refused_at_release_falls_back_to_fuse_and_attaches_the_hooks_again(
        busybox_rootfs, tmp_path, monkeypatch):
    """The kernel refuses a lower layer on /proc ("filesystem not supported"), fuse-overlayfs takes
    it: the refusal shows only when the released child mounts, so release retries with
    fuse-overlayfs, as launch.start does, and the hooks follow the new child.  (/dev/fuse is
    root's only on this machine class.)"""
    from sandbox.runtime import overlay
    monkeypatch.setenv("SBX_RUNROOT", str(tmp_path / "run"))  # the remembered refusal stays here
    monkeypatch.delenv("SBX_OVERLAY", raising=False)
    monkeypatch.setitem(overlay._cache, "driver", "kernel")
    sp = _spec(busybox_rootfs, ["sh", "-c", "test -e /acct && grep -q '^fuse-overlayfs / ' /proc/self/mounts"])
    sp["sbx"]["lowers"].append("/proc/sys/kernel")  # under the image: /acct comes from it
    pids = []

    class Tracker(Observer):
        def attach(self, pid):
            pids.append(pid)
            super().attach(pid)

    obs = Tracker()
    h = launch.create(sp, hooks=[obs])
    assert pids == [h.pid] and h.plan.newroot
    pid, pidfd = h.release()
    assert len(pids) == 2 and pids[1] == pid != pids[0]
    assert obs.torn_down == 1  # once, for the refused child
    _assert_gone(pids[0])
    assert _exit_code(pid, pidfd) == 0
    assert overlay.driver() == "fuse"
