"""Bad input: sbx's own errors exit 125, a command that cannot run 126, a missing command 127; always
one `sbx: ...` line (plus an optional `sbx: hint: ...` line) on stderr, never a traceback."""

import errno
import os
import subprocess
import sys

import pytest

from sbxtest import assert_sbx_error, host_env, sbx, sbx_argv


def test_missing_rootfs(tmp_path):
    missing = tmp_path / "no-such-rootfs"
    assert_sbx_error(sbx("run", "--rootfs", missing, "true"), 125, str(missing))


def test_rootfs_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    assert_sbx_error(sbx("run", "--rootfs", f, "true"), 125, str(f))


@pytest.mark.parametrize("cmd", ["nosuchcmd", "/no/such/path"])
def test_command_not_found(busybox_rootfs, cmd):
    assert_sbx_error(sbx("run", "--rootfs", busybox_rootfs, cmd), 127, cmd)


def test_command_not_found_with_init(busybox_rootfs):
    assert_sbx_error(sbx("run", "--init", "--rootfs", busybox_rootfs, "nosuchcmd"), 127, "nosuchcmd")


@pytest.mark.parametrize("cmd", ["/etc/marker", "/etc"])
def test_command_not_executable(busybox_rootfs, cmd):
    assert_sbx_error(sbx("run", "--rootfs", busybox_rootfs, cmd), 126, cmd)


@pytest.mark.parametrize("spec, word", [
    ("nocolon", "nocolon"),
    ("{tmp}:relative/path", "relative/path"),
    ("{tmp}/no-such-dir:/data", "no-such-dir"),
    ("{tmp}:/data:bogus", "bogus"),
    (":/data", ""),
    ("{tmp}:", ""),
])
def test_bad_volume_spec(busybox_rootfs, tmp_path, spec, word):
    cp = sbx("run", "-v", spec.format(tmp=tmp_path), "--rootfs", busybox_rootfs, "true")
    assert_sbx_error(cp, 125, *([word] if word else []))


def test_bad_volume_is_refused_before_anything_runs(busybox_rootfs, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    cp = sbx("run", "-v", f"{good}:/good", "-v", "nocolon", "--rootfs", busybox_rootfs, "touch", "/good/ran")
    assert_sbx_error(cp, 125)
    assert not (good / "ran").exists()


@pytest.mark.parametrize("spec, word", [("nosuchuser", "nosuchuser"), ("app:nosuchgroup", "nosuchgroup"),
                                        ("nosuchuser:1000", "nosuchuser")])
def test_unknown_user(busybox_rootfs, spec, word):
    assert_sbx_error(sbx("run", "-u", spec, "--rootfs", busybox_rootfs, "true"), 125, word)


@pytest.mark.parametrize("opts, word", [
    (("--network", "bogus"), "bogus"),
    (("--userns", "bogus"), "bogus"),
    (("--ulimit", "nofile=abc"), "nofile"),
    (("--ulimit", "nosuchlimit=1:1"), "nosuchlimit"),
    (("--cap-add", "NOT_A_CAP"), "NOT_A_CAP"),
    (("--security-opt", "bogus-opt"), "bogus-opt"),
    (("-e", "=novalue"), "=novalue"),
    (("--env-file", "/no/such/env-file"), "/no/such/env-file"),
    (("--tmpfs", "relative"), "relative"),
])
def test_bad_option_values(busybox_rootfs, opts, word):
    assert_sbx_error(sbx("run", *opts, "--rootfs", busybox_rootfs, "true"), 125, word)


def test_unknown_flag_exits_125(busybox_rootfs):
    cp = sbx("run", "--no-such-flag", "--rootfs", busybox_rootfs, "true")
    assert cp.returncode == 125, cp.stderr
    assert "Traceback" not in cp.stderr
    assert "no-such-flag" in cp.stderr


# --- unwritable state directory ----------------------------------------------------------------

def test_sbx_runroot_under_a_file(busybox_rootfs, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    cp = sbx("run", "--rootfs", busybox_rootfs, "true", env=host_env(SBX_RUNROOT=str(f / "state")))
    assert_sbx_error(cp, 125, str(f))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_sbx_runroot_read_only(busybox_rootfs, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    cp = sbx("run", "--rootfs", busybox_rootfs, "true", env=host_env(SBX_RUNROOT=str(ro)))
    assert_sbx_error(cp, 125, str(ro))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_xdg_runtime_dir_read_only(busybox_rootfs, tmp_path):
    ro = tmp_path / "xdg"
    ro.mkdir(mode=0o555)
    env = {k: v for k, v in host_env(XDG_RUNTIME_DIR=str(ro)).items() if k != "SBX_RUNROOT"}
    cp = sbx("run", "--rootfs", busybox_rootfs, "true", env=env)
    assert_sbx_error(cp, 125, str(ro))


def test_xdg_runtime_dir_under_a_file(busybox_rootfs, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    env = {k: v for k, v in host_env(XDG_RUNTIME_DIR=str(f / "run")).items() if k != "SBX_RUNROOT"}
    cp = sbx("run", "--rootfs", busybox_rootfs, "true", env=env)
    assert_sbx_error(cp, 125, str(f))


# --- user namespaces unavailable ---------------------------------------------------------------

def test_user_namespaces_disabled_names_the_fix(busybox_rootfs, tmp_path, neutral_cwd):
    """Run sbx in a user namespace whose user.max_user_namespaces is 0: clone(CLONE_NEWUSER) fails
    as it does where unprivileged user namespaces are disabled."""
    run = tmp_path / "run"
    run.mkdir()
    script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
    cp = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh",
                         *sbx_argv("run", "--rootfs", busybox_rootfs, "true")],
                        capture_output=True, text=True, timeout=30, cwd=neutral_cwd, stdin=subprocess.DEVNULL,
                        env=host_env(XDG_RUNTIME_DIR=str(run)))
    assert_sbx_error(cp, 125, os.strerror(errno.ENOSPC))
    hint = cp.stderr.splitlines()[-1]
    assert hint.startswith("sbx: hint: ") and "unprivileged_userns_clone" in hint, cp.stderr


# --- issue 14 -------------------------------------------------------------------------------------

def test_called_process_error_is_a_sandbox_error(busybox_rootfs):
    import sandbox
    with pytest.raises(sandbox.SandboxError) as e:
        sandbox.run(["sh", "-c", "exit 3"], rootfs=busybox_rootfs, check=True)
    assert isinstance(e.value, sandbox.CalledProcessError) and isinstance(e.value, subprocess.CalledProcessError)
    assert e.value.returncode == 3 and "exit status 3" in str(e.value) and e.value.hint is None


@pytest.mark.nosubuid
def test_chown_in_run_without_a_range_says_why(busybox_rootfs, tmp_path):
    import tarfile
    env = host_env(SBX_ROOT=str(tmp_path / "store"))
    tar = tmp_path / "r.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    assert sbx("import", tar, "chown-base:1", env=env, timeout=120).returncode == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM chown-base:1\nRUN chown 1000:1000 /tmp\n")
    # Root emulation (issue 9, on by default for single-id builds) makes the chown succeed
    # without effect; turned off, the step fails and the error says why.
    assert sbx("build", "-q", ctx, env=env, timeout=120).returncode == 0
    cp = sbx("build", "-q", "--no-cache", "--force=none", ctx, env=env, timeout=120)
    assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
    sbx_lines = [ln for ln in cp.stderr.splitlines() if ln.startswith("sbx: ")]
    assert "Dockerfile:2" in sbx_lines[0] and "single id" in sbx_lines[0], cp.stderr
    assert "usermod --add-subuids" in sbx_lines[-1], cp.stderr


def test_a_bug_is_one_line_and_its_traceback_is_one_variable_away(neutral_cwd):
    """Whatever escapes every handler is still one 'sbx:' line (exit 125); SBX_DEBUG=1 shows it."""
    code = ("import sys, sandbox.cli.run as r\n"
            "def boom(argv): raise ZeroDivisionError('deliberate')\n"
            "r.main = boom\n"
            "import sandbox.cli; sandbox.cli.main(['run', 'x'])\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=neutral_cwd, timeout=30,
                        env=host_env(SBX_DEBUG=""))
    lines = cp.stderr.splitlines()
    assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
    assert lines[0] == "sbx: internal error: ZeroDivisionError: deliberate" and "SBX_DEBUG=1" in lines[1], cp.stderr
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=neutral_cwd, timeout=30,
                        env=host_env(SBX_DEBUG="1"))
    assert "Traceback" in cp.stderr and "deliberate" in cp.stderr
