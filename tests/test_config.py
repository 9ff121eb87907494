"""sandbox.config: where sbx keeps things, passed explicitly.  `sbx --root/--runroot` hold for the
command they run without changing the environment; the rules of SBX_ROOT, SBX_RUNROOT and the XDG
directories; a context per thread."""

import os
import tarfile
import threading

import pytest

from sandbox import config
from sandbox.errors import StateError
from sbxtest import assert_sbx_error, host_env, ok, sbx


def test_rules_of_the_environment(tmp_path):
    env = {"HOME": "/home/u"}
    ctx = config.Context.from_env(env)
    assert ctx == config.Context("/home/u/.local/share/sbx", f"/tmp/sbx-{os.geteuid()}")
    env.update(XDG_DATA_HOME="/x/data", XDG_RUNTIME_DIR="/run/user/7")
    assert config.Context.from_env(env) == config.Context("/x/data/sbx", "/run/user/7/sbx")
    env.update(SBX_ROOT="/s/root", SBX_RUNROOT="/s/run")
    assert config.Context.from_env(env) == config.Context("/s/root", "/s/run")
    # flags win; empty values count as unset; relative paths are made absolute
    assert config.Context.from_env(env, root="/a", runroot="/b") == config.Context("/a", "/b")
    assert config.Context.from_env(dict(env, SBX_ROOT=""), root="").data_root == "/x/data/sbx"
    assert config.Context.from_env(env, root="rel").data_root == os.path.abspath("rel")


def test_a_child_gets_the_context_from_its_environment_mapping():
    ctx = config.Context("/data/x", "/run/x")
    assert config.Context.from_env({"HOME": "/elsewhere", **ctx.environ()}) == ctx


def test_a_context_is_frozen_and_a_value():
    ctx = config.Context("/a", "/b")
    with pytest.raises(AttributeError):
        ctx.data_root = "/c"
    assert ctx == config.Context("/a", "/b") and hash(ctx) == hash(config.Context("/a", "/b"))
    assert ctx.replace(data_root="/c") == config.Context("/c", "/b") and ctx.data_root == "/a"


def test_current_reads_the_environment_each_time_unless_a_context_is_in_use(monkeypatch, tmp_path):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "one"))
    assert config.current().data_root == str(tmp_path / "one")
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "two"))
    assert config.current().data_root == str(tmp_path / "two")  # no cache
    outer, inner = config.Context("/outer", "/r"), config.Context("/inner", "/r")
    with config.use(outer):
        with config.use(inner):
            assert config.current() is inner
        assert config.current() is outer
    assert config.current().data_root == str(tmp_path / "two")


def test_each_thread_sees_its_own_context():
    seen = {}
    start = threading.Barrier(2)

    def work(name):
        with config.use(config.Context(f"/{name}", "/r")):
            start.wait()  # both contexts are in use at once
            seen[name] = config.current().data_root
            start.wait()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": "/a", "b": "/b"}


def test_private_directory_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    (tmp_path / "link").symlink_to(tmp_path)
    ctx = config.Context(str(f / "data"), str(tmp_path / "link"))
    with pytest.raises(StateError, match="cannot create storage directory") as e:
        ctx.data_dir()
    assert "--root" in e.value.hint
    with pytest.raises(StateError, match="not a directory owned by you"):
        ctx.runtime_dir()
    good = config.Context(str(tmp_path / "d"), str(tmp_path / "r"))
    assert good.data_dir() == str(tmp_path / "d") and good.mount_base() == str(tmp_path / "r" / "mnt")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700


@pytest.fixture
def base_tar(tmp_path, busybox_rootfs):
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    return tar


def test_root_flag_holds_for_the_command_and_what_it_starts(tmp_path, base_tar):
    """--root reaches every part of the command, the image unpacking done in a user namespace
    (with a subuid range) included, while SBX_ROOT points elsewhere."""
    flagged, other = tmp_path / "flagged", tmp_path / "other"
    env = host_env(SBX_ROOT=str(other))
    ok(sbx("--root", flagged, "import", base_tar, "cfg-base:1", env=env, timeout=120))
    assert "cfg-base" in ok(sbx(f"--root={flagged}", "images", env=env))
    assert "cfg-base" not in ok(sbx("images", env=env))
    out = ok(sbx("--root", flagged, "run", "--rm", "cfg-base:1", "cat", "/etc/marker", env=env, timeout=120))
    assert out.strip()
    assert os.listdir(flagged / "layers") and not (other / "layers").exists()
    ok(sbx("--root", flagged, "system", "reset", "-f", env=env, timeout=120))
    assert not flagged.exists()


def test_reset_of_a_root_given_by_flag_removes_only_sbx_data(tmp_path, base_tar):
    """A root given with --root may be any directory: reset refuses one with foreign entries, as
    it does for SBX_ROOT (the flag no longer reaches reset through the environment)."""
    root = tmp_path / "mine"
    ok(sbx("--root", root, "import", base_tar, "cfg-base:1", timeout=120))
    (root / "thesis.tex").write_text("keep me")
    assert_sbx_error(sbx("--root", root, "system", "reset", "-f", timeout=120), 125, "thesis.tex")
    assert (root / "thesis.tex").read_text() == "keep me"


def test_runroot_flag_is_checked_like_the_variable(tmp_path, busybox_rootfs):
    f = tmp_path / "file"
    f.write_text("")
    assert_sbx_error(sbx("--runroot", f / "state", "run", "--rm", "--rootfs", busybox_rootfs, "true"),
                     125, str(f), "--runroot")
    run = tmp_path / "run"
    ok(sbx("--runroot", run, "run", "--rm", "--rootfs", busybox_rootfs, "true",
           env=host_env(SBX_RUNROOT=str(f / "state"))))
    assert (run / "mnt").is_dir()
