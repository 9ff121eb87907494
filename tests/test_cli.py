"""The `sbx run` command line: entry points, option parsing, environment, stdin, --rm, state dirs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbxtest import DEFAULT_PATH, MARKER_CONTENT, assert_sbx_error, host_env, ok, sbx


def inner_env(rootfs, *opts, env=None):
    out = ok(sbx("run", *opts, "--rootfs", rootfs, "env", env=env))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# --- entry points ----------------------------------------------------------------------------------

def test_console_script(busybox_rootfs, neutral_cwd):
    script = Path(sys.executable).parent / "sbx"
    assert script.exists(), f"no sbx console script next to {sys.executable}"
    cp = subprocess.run([str(script), "run", "--rootfs", str(busybox_rootfs), "cat", "/etc/marker"],
                        capture_output=True, text=True, timeout=30, cwd=neutral_cwd, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == MARKER_CONTENT


def test_python_m_sandbox(busybox_rootfs):
    assert ok(sbx("run", "--rootfs", busybox_rootfs, "echo", "hello")) == "hello\n"


def test_help():
    cp = sbx("--help")
    assert cp.returncode == 0 and "run" in cp.stdout, cp.stdout + cp.stderr
    cp = sbx("run", "--help")
    assert cp.returncode == 0, cp.stderr
    for opt in ("--rootfs", "--volume", "--env", "--workdir", "--user", "--tmpfs", "--read-only", "--hostname",
                "--network", "--init", "--userns", "--rm", "--env-file"):
        assert opt in cp.stdout, opt


# --- option parsing ----------------------------------------------------------------------------

def test_arguments_after_the_command_belong_to_it(busybox_rootfs):
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "echo", "--hostname", "x", "-e", "A=1", "--rm"))
    assert out == "--hostname x -e A=1 --rm\n"


def test_double_dash(busybox_rootfs):
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "--", "sh", "-c", 'echo "$@"', "sh", "-v", "--init"))
    assert out == "-v --init\n"


def test_rootfs_given_with_equals_and_options_in_any_order(busybox_rootfs):
    out = ok(sbx("run", f"--rootfs={busybox_rootfs}", "--hostname=h2", "-e", "A=1", "sh", "-c", "echo $A $(hostname)"))
    assert out == "1 h2\n"


def test_rm_and_name(busybox_rootfs):
    for _ in range(2):   # the name is free again once a --rm sandbox has exited
        assert ok(sbx("run", "--rm", "--name", "sbx-test-name", "--rootfs", busybox_rootfs, "true")) == ""


def test_rm_leaves_nothing_behind(busybox_rootfs, tmp_path):
    names = ("SBX_ROOT", "SBX_RUNROOT", "XDG_RUNTIME_DIR", "HOME", "XDG_DATA_HOME", "TMPDIR")
    dirs = {k: tmp_path / k for k in names}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    env = host_env(**{k: str(v) for k, v in dirs.items()})
    marker = "sbx-rm-marker-file"
    ok(sbx("run", "--rm", "--rootfs", busybox_rootfs, "sh", "-c", f"echo x > /{marker}; echo y > /tmp/{marker}",
           env=env))
    left = [p for p in tmp_path.rglob("*") if marker in p.name]
    assert not left, left


# --- environment -------------------------------------------------------------------------------

def test_default_environment(busybox_rootfs):
    env = inner_env(busybox_rootfs, env=host_env(SBX_LEAK_CHECK="secret"))
    assert env["PATH"] == DEFAULT_PATH
    assert env["HOME"] == "/root"
    assert len(env["HOSTNAME"]) == 12
    assert "SBX_LEAK_CHECK" not in env
    assert "PYTEST_CURRENT_TEST" not in env
    assert not {"USER", "LOGNAME", "XDG_RUNTIME_DIR", "VIRTUAL_ENV"} & set(env)


def test_env_option(busybox_rootfs):
    env = inner_env(busybox_rootfs, "-e", "FOO=bar", "--env", "EMPTY=", "-e", "EQ=a=b", "-e", "FROMHOST",
                    "-e", "NOT_ON_HOST", "-e", "PATH=/bin",
                    env={k: v for k, v in host_env(FROMHOST="hostval").items() if k != "NOT_ON_HOST"})
    assert env["FOO"] == "bar"
    assert env["EMPTY"] == ""
    assert env["EQ"] == "a=b"
    assert env["FROMHOST"] == "hostval"
    assert "NOT_ON_HOST" not in env
    assert env["PATH"] == "/bin"


def test_env_file(busybox_rootfs, tmp_path):
    f = tmp_path / "env"
    f.write_text("# a comment\nA=1\n\nB=two words\nC\nD=override-me\n")
    env = inner_env(busybox_rootfs, "--env-file", str(f), "-e", "D=overridden", env=host_env(C="from-host"))
    assert env["A"] == "1"
    assert env["B"] == "two words"
    assert env["C"] == "from-host"
    assert env["D"] == "overridden"
    assert not [k for k in env if k.startswith("#")]


def test_home_follows_the_user(busybox_rootfs):
    assert inner_env(busybox_rootfs, "-u", "app")["HOME"] == "/home/app"
    assert inner_env(busybox_rootfs, "-e", "HOME=/elsewhere")["HOME"] == "/elsewhere"


# --- stdin -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-i", "--interactive"])
def test_interactive_passes_stdin(busybox_rootfs, flag):
    cp = sbx("run", flag, "--rootfs", busybox_rootfs, "sh", "-c", "cat; echo; echo done", input="line1\nline2")
    assert ok(cp) == "line1\nline2\ndone\n"


def test_large_stdin_and_stdout(busybox_rootfs):
    data = "x" * 1_000_000 + "\n"
    cp = sbx("run", "-i", "--rootfs", busybox_rootfs, "cat", input=data)
    assert ok(cp) == data


def test_stdin_is_not_passed_without_interactive(busybox_rootfs):
    cp = sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "cat; echo end", input="should not arrive\n")
    assert ok(cp) == "end\n"


def test_stdout_and_stderr_stay_apart(busybox_rootfs):
    cp = sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "echo out; echo err >&2")
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, "out\n", "err\n")


# --- state directory -------------------------------------------------------------------------------

def test_works_without_xdg_runtime_dir(busybox_rootfs):
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    assert ok(sbx("run", "--rootfs", busybox_rootfs, "true", env=env)) == ""


def test_works_with_xdg_runtime_dir(busybox_rootfs, tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    assert ok(sbx("run", "--rootfs", busybox_rootfs, "true", env=host_env(XDG_RUNTIME_DIR=str(run)))) == ""



# --- input that must not be ignored (issue 14) -----------------------------------------------------

def test_entrypoint_applies_with_rootfs(busybox_rootfs):
    assert ok(sbx("run", "--rm", "--rootfs", busybox_rootfs, "--entrypoint", "echo", "a", "b")) == "a b\n"
    assert ok(sbx("run", "--rm", "--rootfs", busybox_rootfs, "--entrypoint", "/bin/echo")) == "\n"
    # '' means no entrypoint: the command alone
    assert ok(sbx("run", "--rm", "--rootfs", busybox_rootfs, "--entrypoint", "", "echo", "c")) == "c\n"


def test_env_file_export_line_is_refused(busybox_rootfs, tmp_path):
    f = tmp_path / "env"
    f.write_text("A=1\nexport C=3\n")
    r = sbx("run", "--rm", "--env-file", f, "--rootfs", busybox_rootfs, "env")
    assert_sbx_error(r, 125, str(f), "line 2", "export C")


@pytest.mark.parametrize("name", ["bad_host!name", "-lead", "trail-", "a..b", "x" * 65, "a" * 64 + ".b", "sp ace"])
def test_invalid_hostnames_are_refused(busybox_rootfs, name):
    assert_sbx_error(sbx("run", "--rm", "-h", name, "--rootfs", busybox_rootfs, "true"), 125, "hostname")


@pytest.mark.parametrize("name", ["a", "web-1", "Host.Example.com", "x" * 63, "1.2.3"])
def test_valid_hostnames_are_kept(busybox_rootfs, name):
    assert ok(sbx("run", "--rm", "-h", name, "--rootfs", busybox_rootfs, "hostname")) == name + "\n"


def test_ps_format_templates(busybox_rootfs, tmp_path):
    env = host_env(SBX_ROOT=str(tmp_path / "store"))
    ok(sbx("run", "--name", "fmt-one", "--rootfs", busybox_rootfs, "true", env=env))
    assert sbx("run", "--name", "fmt-two", "--rootfs", busybox_rootfs, "sh", "-c", "exit 3", env=env).returncode == 3
    out = ok(sbx("ps", "-a", "--format", "{{.Names}}", env=env))
    assert sorted(out.split()) == ["fmt-one", "fmt-two"]
    out = ok(sbx("ps", "-a", "--format", r"table {{.Names}}\t{{.State}}", env=env)).splitlines()
    assert out[0].split() == ["NAMES", "STATE"]
    assert sorted(line.split() for line in out[1:]) == [["fmt-one", "exited"], ["fmt-two", "exited"]]
    import json
    docs = [json.loads(line) for line in ok(sbx("ps", "-a", "--format", "{{json .}}", env=env)).splitlines()]
    assert {d["Names"] for d in docs} == {"fmt-one", "fmt-two"} and all(len(d["ID"]) == 12 for d in docs)
    assert ok(sbx("ps", "-a", "--format", "{{upper .Names}}", "--no-trunc", env=env)).split().count("FMT-ONE") == 1


@pytest.mark.parametrize("fmt, word", [("{{.Nope}}", "Nope"), ("{{if .ID}}x{{end}}", "if"), ("{{.Names", "unclosed"),
                                       ("{{.Names | upper}}", "|")])
def test_ps_format_refuses_what_it_cannot_do(fmt, word):
    assert_sbx_error(sbx("ps", "--format", fmt), 125, word)


def test_images_format_templates(busybox_rootfs, tmp_path):
    import tarfile
    env = host_env(SBX_ROOT=str(tmp_path / "store"))
    tar = tmp_path / "r.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    ok(sbx("import", tar, "fmtimg:7", env=env, timeout=120))
    assert ok(sbx("images", "--format", "{{.Repository}}:{{.Tag}}", env=env)) == "fmtimg:7\n"
    out = ok(sbx("images", "--format", r"table {{.Repository}}\t{{.Tag}}", env=env)).splitlines()
    assert [line.split() for line in out] == [["REPOSITORY", "TAG"], ["fmtimg", "7"]]
    assert_sbx_error(sbx("images", "--format", "{{.Nope}}", env=env), 125, "Nope")


# --- messages (issue 14) ---------------------------------------------------------------------------

def test_unknown_command_is_one_line_and_never_suggests_a_harmful_verb():
    for word in ("top", "stpo", "kil", "rmm", "pause"):
        r = sbx(word)
        assert_sbx_error(r, 125, word)
        for verb in ("stop", "kill", "rm", "rmi", "prune", "push"):
            assert f"'sbx {verb}'" not in r.stderr and f"'{verb}'" not in r.stderr, r.stderr
    r = sbx("imgaes")
    assert_sbx_error(r, 125, "imgaes")
    assert r.stderr.count("did you mean") == 1 and "'sbx images'" in r.stderr


def test_subcommand_usage_errors_are_one_sbx_line():
    assert_sbx_error(sbx("stop", "-t", "abc", "x"), 125, "abc")
    assert_sbx_error(sbx("image", "prune", "--bogus"), 125, "--bogus")


@pytest.mark.parametrize("opt, word", [("apparmor=unconfined", "AppArmor"), ("label=disable", "SELinux"),
                                       ("seccomp", "seccomp"), ("no-new-privileges=maybe", "no-new-privileges"),
                                       ("systempaths=unconfined", "systempaths")])
def test_security_opt_refused_by_name(busybox_rootfs, opt, word):
    assert_sbx_error(sbx("run", "--rm", "--security-opt", opt, "--rootfs", busybox_rootfs, "true"), 125, word)


def test_security_opt_parse():
    """The parse alone (what run passes on to the spec)."""
    from sandbox.cli import runopts
    from sandbox.errors import UsageError

    def parse(*items):
        opts, _ = runopts.parse([a for s in items for a in ("--security-opt", s)] + ["img"])
        return runopts.security_opts(opts)

    assert parse() == {"no_new_privileges": False, "seccomp": None}
    assert parse("seccomp=unconfined") == {"no_new_privileges": False, "seccomp": "unconfined"}
    assert parse("seccomp=default")["seccomp"] == "default"
    assert parse("seccomp:/p/profile.json", "no-new-privileges") == {"no_new_privileges": True,
                                                                     "seccomp": "/p/profile.json"}
    assert parse("no-new-privileges:true", "no-new-privileges=false")["no_new_privileges"] is False
    for bad in ("apparmor=docker-default", "label=type:x", "seccomp=", "bogus", "no-new-privileges=1"):
        with pytest.raises(UsageError):
            parse(bad)


def test_security_opt_seccomp_profile_reaches_the_sandbox(busybox_rootfs, tmp_path):
    prof = tmp_path / "deny-mkdir.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
                    '[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}')
    r = sbx("run", "--rm", "--security-opt", f"seccomp={prof}", "--rootfs", busybox_rootfs, "mkdir", "/tmp/x")
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    r = sbx("run", "--rm", "--security-opt", "seccomp=unconfined", "--rootfs", busybox_rootfs, "mkdir", "/tmp/x")
    assert r.returncode == 0, r.stderr
