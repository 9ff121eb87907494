"""Exit statuses, signals (sent inside, from outside, forwarded by sbx), --init and zombie reaping."""

import os
import signal

import pytest

from sbxtest import container_init_pid, ok, sbx, sbx_popen, Lines

# --- exit status ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 3, 125, 126, 127, 255])
def test_exit_status_is_the_commands(busybox_rootfs, code):
    cp = sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", f"exit {code}")
    assert cp.returncode == code, cp.stderr
    assert cp.stderr == ""


def test_false(busybox_rootfs):
    assert sbx("run", "--rootfs", busybox_rootfs, "false").returncode == 1


def test_command_killed_by_a_signal_gives_128_plus_n(busybox_rootfs):
    # PID 1 ignores signals it has no handler for, even SIGKILL, when they come from inside its
    # namespace, so the signal comes from the host (an ancestor namespace).
    p = sbx_popen("run", "--rootfs", busybox_rootfs, "sh", "-c", "echo ready; exec sleep 60")
    try:
        Lines(p.stdout).wait_for("ready")
        os.kill(container_init_pid(p.pid), signal.SIGKILL)
        assert p.wait(timeout=20) == 128 + signal.SIGKILL
    finally:
        p.kill()
        p.wait()


def test_self_kill_under_init_gives_143(busybox_rootfs):
    cp = sbx("run", "--init", "--rootfs", busybox_rootfs, "sh", "-c", "kill -TERM $$; sleep 5")
    assert cp.returncode == 143, cp.stderr


def test_exit_status_under_init(busybox_rootfs):
    assert sbx("run", "--init", "--rootfs", busybox_rootfs, "sh", "-c", "exit 5").returncode == 5


# --- signals sent to sbx are forwarded -----------------------------------------------------------

@pytest.mark.parametrize("sig", ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2"])
def test_signal_to_sbx_reaches_a_trapping_command(busybox_rootfs, sig):
    script = f"trap 'echo got-{sig}; exit 7' {sig}; echo ready; while :; do sleep 0.1; done"
    p = sbx_popen("run", "--rootfs", busybox_rootfs, "sh", "-c", script)
    try:
        lines = Lines(p.stdout)
        lines.wait_for("ready")
        p.send_signal(getattr(signal, "SIG" + sig))
        try:
            lines.wait_for(f"got-{sig}")
        except AssertionError as e:
            p.kill()
            raise AssertionError(f"{e}; sbx exited {p.wait()}, stderr {p.stderr.read()!r}") from None
        assert p.wait(timeout=20) == 7
    finally:
        p.kill()
        p.wait()


def test_sigterm_to_sbx_with_init_stops_the_command(busybox_rootfs):
    p = sbx_popen("run", "--init", "--rootfs", busybox_rootfs, "sh", "-c", "echo ready; exec sleep 60")
    try:
        Lines(p.stdout).wait_for("ready")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        p.kill()
        p.wait()


# --- --init ----------------------------------------------------------------------------------------

def test_without_init_the_command_is_pid_1_and_orphans_are_its_own(busybox_rootfs):
    # Docker semantics: the command is PID 1, so an orphan it does not reap stays a zombie.
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "echo $$; exec /bin/probe zombie"))
    assert out.split() == ["1", "zombie"]


def test_init_is_pid_1_and_the_command_is_not(busybox_rootfs):
    out = ok(sbx("run", "--init", "--rootfs", busybox_rootfs, "sh", "-c",
                 "echo $$; /bin/probe pid; cat /proc/1/comm; readlink /proc/1/exe || echo unreadable"))
    shell_pid, probe_line, init_comm, init_exe = out.splitlines()
    assert shell_pid != "1"
    probe_pid, probe_ppid = probe_line.split()
    assert probe_pid != "1" and probe_ppid == shell_pid
    assert init_comm not in ("sh", "probe", "busybox"), init_comm
    assert not init_exe.endswith("/busybox"), init_exe


def test_init_reaps_zombies(busybox_rootfs):
    out = ok(sbx("run", "--init", "--rootfs", busybox_rootfs, "/bin/probe", "zombie"))
    assert out == "reaped\n"


def test_init_reaps_zombies_left_by_a_shell(busybox_rootfs):
    script = ("(sleep 0.1 &) ; sleep 1; "
              "for s in /proc/[0-9]*/stat; do cut -d' ' -f3 $s 2>/dev/null; done | grep -c Z || true")
    assert ok(sbx("run", "--init", "--rootfs", busybox_rootfs, "sh", "-c", script)).strip() == "0"
