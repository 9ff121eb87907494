"""RunOptions/ExecOptions: the flags `sbx run` parses into them (--restart, --label, --label-file,
--stop-signal, --stop-timeout and the rest), the refusals of bad values in Docker's words, and
what reaches the runtime spec."""
import time

import pytest

from sandbox.errors import UsageError
from sandbox.runtime import options, spec as specmod
from sandbox.cli import runopts
from sbxtest import assert_sbx_error, ok, sbx


def to_options(*words, environ=None):
    opts, cmd = runopts.parse(list(words))
    return runopts.to_options(opts, cmd, environ or {})


# --- restart policies -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, name, retries", [
    ("no", "no", 0), ("always", "always", 0), ("unless-stopped", "unless-stopped", 0),
    ("on-failure", "on-failure", 0), ("on-failure:5", "on-failure", 5), ("on-failure:0", "on-failure", 0),
])
def test_restart_policies_parse(text, name, retries):
    p = options.RestartPolicy.parse(text)
    assert (p.name, p.max_retries) == (name, retries)
    assert to_options("--restart", text, "img").restart == p


@pytest.mark.parametrize("text, words", [
    ("sometimes", ["sometimes", "unknown policy"]),
    (":3", [":3", "no policy provided before colon"]),
    ("on-failure:x", ["on-failure:x", "maximum retry count must be an integer"]),
    ("on-failure:-1", ["on-failure:-1", "cannot be negative"]),
    ("always:3", ["always:3", "can only be used with 'on-failure'"]),
    ("on-failure:٣", ["must be an integer"]),
])
def test_bad_restart_policies_are_refused_naming_the_value(text, words, busybox_rootfs):
    with pytest.raises(UsageError) as e:
        options.RestartPolicy.parse(text)
    for w in words:
        assert w in str(e.value)
    cp = sbx("run", "--rm", "--restart", text, "--rootfs", busybox_rootfs, "true")
    assert_sbx_error(cp, 125, *words)


def test_default_restart_policy_is_no():
    assert to_options("img").restart == options.RestartPolicy(name="no", max_retries=0)


@pytest.mark.parametrize("policy", ["always", "on-failure:2", "unless-stopped"])
def test_run_refuses_a_restart_policy_with_rm(policy, busybox_rootfs, tmp_path):
    """Docker's refusal: a container removed when it exits cannot be restarted."""
    marker = tmp_path / "ran"
    cp = sbx("run", "-d", "--rm", "--restart", policy, "-v", f"{tmp_path}:/out", "--rootfs", busybox_rootfs,
             "touch", "/out/ran")
    assert_sbx_error(cp, 125, "Conflicting options: --restart and --rm")
    assert not marker.exists()  # refused before anything started


def test_restart_no_runs(busybox_rootfs):
    assert ok(sbx("run", "--rm", "--restart=no", "--rootfs", busybox_rootfs, "echo", "ran")) == "ran\n"


# --- labels -------------------------------------------------------------------------------------

def test_labels_from_flags_and_files_later_wins(tmp_path):
    f = tmp_path / "labels"
    f.write_text("# a comment\n\na=from-file\nb=file\nempty\n")
    o = to_options("--label-file", str(f), "-l", "a=flag", "--label", "c=x=y", "--label=d", "img")
    assert o.labels == {"a": "flag", "b": "file", "empty": "", "c": "x=y", "d": ""}


@pytest.mark.parametrize("args, words", [
    (["--label", "=v"], ["'=v'", "the key is empty"]),
    (["--label-file", "/nonexistent/labels"], ["/nonexistent/labels"]),
])
def test_bad_labels_are_refused(args, words, busybox_rootfs):
    cp = sbx("run", "--rm", *args, "--rootfs", busybox_rootfs, "true")
    assert_sbx_error(cp, 125, *words)


def test_label_file_line_is_named(tmp_path, busybox_rootfs):
    f = tmp_path / "labels"
    f.write_text("ok=1\n=bad\n")
    assert_sbx_error(sbx("run", "--rm", "--label-file", str(f), "--rootfs", busybox_rootfs, "true"),
                     125, f"{f}:2", "the key is empty")


def test_labels_and_stop_signal_reach_the_spec_annotations(busybox_rootfs):
    o = to_options("--rootfs", str(busybox_rootfs), "-l", "k=v", "--stop-signal", "usr1", "--stop-timeout", "7",
                   "true")
    s = specmod.from_options(o, container_id="0" * 64)
    assert s["sbx"]["labels"] == {"k": "v"}
    assert s["sbx"]["stop_signal"] == "SIGUSR1"
    assert s["sbx"]["stop_timeout"] == 7


# --- stop signal and timeout ------------------------------------------------------------------------

@pytest.mark.parametrize("text, kept, number", [
    ("SIGTERM", "SIGTERM", 15), ("term", "SIGTERM", 15), ("KILL", "SIGKILL", 9), ("10", "10", 10),
    ("SIGRTMIN+3", "SIGRTMIN+3", None),
])
def test_stop_signals(text, kept, number):
    assert options.stop_signal(text) == kept
    if number is not None:
        assert options.signal_number(text) == number
    assert to_options("--stop-signal", text, "img").stop_signal == kept


@pytest.mark.parametrize("text", ["FOO", "0", "65", "SIGRTMIN+99", "-1", ""])
def test_bad_stop_signals_are_refused(text, busybox_rootfs):
    assert_sbx_error(sbx("run", "--rm", "--stop-signal", text, "--rootfs", busybox_rootfs, "true"),
                     125, f"invalid signal: '{text}'")


@pytest.mark.parametrize("text, value", [("10", 10), ("0", 0), ("-1", -1)])
def test_stop_timeouts(text, value):
    assert to_options("--stop-timeout", text, "img").stop_timeout == value


@pytest.mark.parametrize("text", ["1.5", "ten", "-2", "99999999999"])
def test_bad_stop_timeouts_are_refused(text, busybox_rootfs):
    assert_sbx_error(sbx("run", "--rm", f"--stop-timeout={text}", "--rootfs", busybox_rootfs, "true"),
                     125, f'"{text}"', "--stop-timeout")


def test_stop_uses_the_containers_stop_signal(busybox_rootfs):
    """--stop-signal is what `sbx stop` sends (kept in the container's spec)."""
    name = f"stopsig-{time.monotonic_ns()}"
    cp = sbx("run", "-d", "--name", name, "--stop-signal", "USR1", "--rootfs", busybox_rootfs, "sh", "-c",
             "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done")
    ok(cp)
    try:
        for _ in range(200):
            if "ready" in sbx("logs", name).stdout:
                break
            time.sleep(0.1)
        ok(sbx("stop", "-t", "20", name))
        assert "got-usr1" in sbx("logs", name).stdout
    finally:
        sbx("rm", "-f", name)


# --- the rest of to_options: every check the CLI made before ------------------------------------

def test_to_options_maps_every_flag(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("A=1\n")
    o = to_options("--rootfs", "/r", "-e", "B=2", "-e", "HOSTVAR", "--env-file", str(env_file), "-w", "/w", "-u",
                   "1:2", "-v", "/a:/b", "--tmpfs", "/t", "--network", "host", "-h", "box", "--read-only", "--init",
                   "--userns", "single", "--cap-add", "NET_ADMIN", "--cap-drop", "ALL",
                   "--security-opt", "no-new-privileges", "--security-opt", "seccomp=unconfined",
                   "--ulimit", "nofile=10", "--group-add", "5", "-it", "--name", "n", "--rm",
                   "--entrypoint", "/bin/sh", "cmd", "arg", environ={"HOSTVAR": "h"})
    assert o.argv == ("cmd", "arg") and o.image is None and o.rootfs == "/r" and o.entrypoint == "/bin/sh"
    assert o.env == (("A", "1"), ("B", "2"), ("HOSTVAR", "h"))
    assert (o.cwd, o.user, o.volumes, o.tmpfs, o.network, o.hostname) == ("/w", "1:2", ("/a:/b",), ("/t",), "host", "box")
    assert o.read_only and o.init and o.userns == "single" and o.terminal and o.interactive and o.auto_remove
    assert (o.cap_add, o.cap_drop, o.no_new_privileges, o.seccomp) == (("NET_ADMIN",), ("ALL",), True, "unconfined")
    assert (o.ulimits, o.group_add, o.name) == (("nofile=10",), ("5",), "n")
    i = to_options("--pull", "never", "--platform", "linux/arm64", "-d", "alpine:3", "echo", "hi")
    assert (i.image, i.argv, i.pull, i.platform, i.detach) == ("alpine:3", ("echo", "hi"), "never", "linux/arm64", True)


@pytest.mark.parametrize("args, words", [
    (["-h", "-bad-"], ["invalid hostname"]),
    (["-u", "99999999999"], ["out of range"]),
    (["--group-add", ""], ["--group-add"]),
    (["--security-opt", "apparmor=x"], ["AppArmor"]),
    (["-e", "=x"], ["no variable name"]),
])
def test_to_options_refuses_what_the_cli_refused(args, words):
    with pytest.raises(UsageError) as e:
        to_options(*args, "img")
    for w in words:
        assert w in str(e.value)


def test_options_are_frozen_and_comparable():
    o = options.RunOptions(argv=("true",), rootfs="/")
    with pytest.raises(AttributeError):
        o.argv = ("false",)
    assert o == options.RunOptions(argv=("true",), rootfs="/")
    assert o.replace(name="x").name == "x" and o.name is None
    assert o.labels == {} and o.labels is not options.RunOptions().labels
    with pytest.raises(TypeError):
        options.RunOptions(nonsense=1)
    x = options.ExecOptions(argv=("ls",))
    assert (x.privileged, x.detach, x.env) == (False, False, ())
    with pytest.raises(TypeError):
        options.ExecOptions()
    import pickle
    assert pickle.loads(pickle.dumps(o)) == o


def test_from_options_runs_what_build_runs(busybox_rootfs):
    """The thin mapping: the same spec as spec.build's keywords give."""
    o = to_options("--rootfs", str(busybox_rootfs), "-e", "X=1", "-w", "/tmp", "--cap-drop", "ALL", "-h", "hn",
                   "--entrypoint", "/bin/echo", "a")
    s = specmod.from_options(o, container_id="1" * 64)
    b = specmod.build(["/bin/echo", "a"], rootfs=str(busybox_rootfs), env=[("X", "1")], cwd="/tmp",
                      cap_drop=["ALL"], hostname="hn", container_id="1" * 64)
    assert s["process"] == b["process"]
    assert s["mounts"] == b["mounts"] and s["root"] == b["root"]
