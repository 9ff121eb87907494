"""`sbx run IMAGE` and `sandbox.run(..., image=)`: images from a real registry (pushed with
skopeo) run as an overlay of their unpacked layers, with the image config applied by
Docker's rules.  Runs as the unprivileged test users (with and without a subuid range)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbx_image_testlib import SANDBOX_PATH, Entry, build_image, busybox_entries, make_tar, write_layout


def _has_subuid():
    from sandbox.runtime import idmap
    idmap._cache.clear()
    return idmap.detect()[0] == "helper"


@pytest.fixture
def run_cli(tmp_path):
    def _run(*args, input=None, env=None, timeout=120):
        e = dict(os.environ)
        e["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        e.update(env or {})
        return subprocess.run([sys.executable, "-m", "sandbox", "run", *args], capture_output=True, text=True,
                              input=input, env=e, timeout=timeout, cwd=tmp_path)
    return _run


@pytest.fixture(scope="session")
def config_registry(tmp_path_factory, plain_registry):
    """test/config: an image whose config sets Entrypoint, Cmd, Env, WorkingDir and User."""
    img = build_image([make_tar(busybox_entries() + [
        Entry("work", "dir", mode=0o777), Entry("work/file", "file", b"in work\n")])],
        cmd=["default-cmd"], env=["PATH=/bin", "FROM_IMAGE=yes", "OVERRIDE=image"],
        config={"Entrypoint": ["/bin/echo", "ep"], "WorkingDir": "/work", "User": "1000:1000"})
    lay = write_layout(tmp_path_factory.mktemp("cfg") / "layout", [(img, "config")])
    plain_registry.push_layout(lay, "config", "test/config:latest")
    return plain_registry


def test_run_pulls_a_missing_image_and_applies_its_layers(run_cli, plain_registry):
    ref = f"{plain_registry.host}/test/multi"
    r = run_cli("--rm", ref)  # the image's Cmd: cat /etc/hello
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"
    assert "Pull complete" in r.stderr  # pulled on first use (--pull=missing)
    r = run_cli("--rm", ref, "sh", "-c", "ls /etc; ls /data/dir; cat /data/dir/new; ls /usr/bin")
    assert r.returncode == 0, r.stderr
    assert "gone" not in r.stdout.split()          # whiteout in layer 3
    assert "old" not in r.stdout.split()           # opaque directory in layer 3
    assert "new" in r.stdout and "tool" in r.stdout
    assert "Pull complete" not in r.stderr         # second run: from the store


def test_image_ownership_follows_the_id_mapping(run_cli, plain_registry):
    r = run_cli("--rm", f"{plain_registry.host}/test/multi", "ls", "-ln", "/data/keep")
    assert r.returncode == 0, r.stderr
    owner = r.stdout.split()[2:4]
    if _has_subuid():
        assert owner == ["1000", "1000"]   # kept: unpacked inside the subuid-mapped namespace
    else:
        assert owner == ["0", "0"]         # single id: collapses to the user (root inside)
    r = run_cli("--rm", "--userns", "single", f"{plain_registry.host}/test/multi", "ls", "-ln", "/data/keep")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[2:4] == ["0", "0"]


def test_entrypoint_cmd_env_workdir_user_rules(run_cli, config_registry):
    ref = f"{config_registry.host}/test/config"
    assert run_cli("--rm", ref).stdout == "ep default-cmd\n"            # Entrypoint + Cmd
    assert run_cli("--rm", ref, "a", "b").stdout == "ep a b\n"          # words replace Cmd
    assert run_cli("--rm", "--entrypoint", "/bin/echo", ref).stdout == "\n"   # --entrypoint drops Cmd
    r = run_cli("--rm", "--entrypoint", "", "-e", "OVERRIDE=cli", ref, "sh", "-c",
                "echo $FROM_IMAGE $OVERRIDE; pwd; cat file; id -u; id -g")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["yes", "cli", "/work", "in", "work", "1000", "1000"]
    r = run_cli("--rm", "--entrypoint", "", "-u", "0", "-w", "/tmp", ref, "sh", "-c", "id -u; pwd")
    assert r.stdout.split() == ["0", "/tmp"]


def test_writes_do_not_reach_the_layers(run_cli, plain_registry, tmp_path):
    ref = f"{plain_registry.host}/test/multi"
    assert run_cli("--rm", ref, "true").returncode == 0
    layers = Path(os.environ["SBX_ROOT"]) / "layers"
    before = sorted((str(p), p.lstat().st_mtime_ns, p.lstat().st_size) for p in layers.rglob("*"))
    r = run_cli("--rm", ref, "sh", "-c", "echo x > /etc/hello; rm /bin/ls; mkdir /newdir")
    assert r.returncode == 0, r.stderr
    after = sorted((str(p), p.lstat().st_mtime_ns, p.lstat().st_size) for p in layers.rglob("*"))
    assert before == after
    assert run_cli("--rm", ref).stdout == "hello\n"


def test_pull_policies_and_bad_references(run_cli, plain_registry):
    ref = f"{plain_registry.host}/test/busybox"
    r = run_cli("--rm", "--pull", "never", ref, "true")
    assert r.returncode == 125 and "no such image" in r.stderr and "Traceback" not in r.stderr
    assert run_cli("--rm", ref, "true").returncode == 0
    r = run_cli("--rm", "--pull", "always", ref, "true")
    assert r.returncode == 0 and "Digest: sha256:" in r.stderr
    r = run_cli("--rm", "--pull", "sometimes", ref, "true")
    assert r.returncode == 125 and "--pull" in r.stderr
    r = run_cli("--rm", "Not_A//Valid:ref", "true")
    assert r.returncode == 125 and "Traceback" not in r.stderr
    r = run_cli("--rm", f"{plain_registry.host}/test/absent", "true")
    assert r.returncode == 125 and "Traceback" not in r.stderr


def test_python_api_image(plain_registry):
    import sandbox
    ref = f"{plain_registry.host}/test/multi"
    r = sandbox.run(["cat", "/etc/hello"], image=ref, capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "hello\n")
    r = sandbox.run([], image=ref, capture_output=True, text=True)  # the image's Cmd
    assert r.stdout == "hello\n"
    with pytest.raises(TypeError):
        sandbox.run(["true"], image=ref, rootfs="/")
    with pytest.raises(sandbox.SandboxError):
        sandbox.run(["true"], image=f"{plain_registry.host}/test/absent", pull="never")


def test_retag_is_seen_by_the_next_run(run_cli, config_registry, sbx):
    """The run cache follows the store: a name moved to another image runs the new image."""
    multi, config = f"{config_registry.host}/test/multi", f"{config_registry.host}/test/config"
    assert sbx("pull", multi).returncode == 0 and sbx("pull", config).returncode == 0
    assert sbx("tag", multi, "mine:1").returncode == 0
    assert run_cli("--rm", "mine:1").stdout == "hello\n"
    assert run_cli("--rm", "mine:1").stdout == "hello\n"        # cached
    assert sbx("tag", config, "mine:1").returncode == 0
    assert run_cli("--rm", "mine:1").stdout == "ep default-cmd\n"
    assert sbx("rmi", "mine:1").returncode == 0
    r = run_cli("--rm", "--pull", "never", "mine:1")
    assert r.returncode == 125 and "no such image" in r.stderr


def test_rmi_refuses_an_image_a_sandbox_is_running(plain_registry, sbx):
    import sandbox
    ref = f"{plain_registry.host}/test/busybox"
    assert sbx("pull", ref).returncode == 0
    with sandbox.Popen(["sh", "-c", "echo up; read x; exit 0"], image=ref, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"up\n"
        r = sbx("rmi", ref)
        assert r.returncode == 125 and "Traceback" not in r.stderr, r
        assert sbx("images", "-q").stdout.strip()        # still there
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    assert sbx("rmi", ref).returncode == 0               # free again once it exited
