"""The `sbx` pytest plugin, as a project that installed sbx uses it: pytest runs in a subprocess
on a small test file that starts containers through `sbx_container` (one test fails while its
container runs), and afterwards no container and no process of theirs is left."""
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from sbxtest import host_pids_with, ok, sbx

INNER = textwrap.dedent('''
    import os
    from sandbox.containers.ready import wait_for_log

    PIDS = os.environ["PLUGIN_TEST_PIDS"]

    def _note(c):
        with open(PIDS, "a") as f:
            f.write(f"{c.attrs['State']['Pid']}\\n")

    def test_passes(sbx_container, sbx_rootfs):
        c = sbx_container(command=["sh", "-c", "echo up; exec sleep 300"], name="plug-pass")
        _note(c)
        wait_for_log(c, "up")
        assert os.path.isfile(os.path.join(sbx_rootfs, "bin", "busybox"))
        assert c.exec_run(["cat", "/etc/hostname"]).output == c.id[:12].encode() + b"\\n"

    def test_fails_while_its_container_runs(sbx_container):
        c = sbx_container(command=["sh", "-c", "echo said-before-failing; exec sleep 300"], name="plug-fail")
        wait_for_log(c, "said-before-failing")
        _note(c)
        assert c.status == "exited", "deliberate failure"

    def test_removed_by_the_test_itself(sbx_container):
        c = sbx_container(command=["true"])
        c.wait()
        c.remove()

    def test_several_and_stopped(sbx_container):
        cs = [sbx_container(command=["sleep", "300"], labels={"n": str(i)}) for i in range(3)]
        for c in cs:
            _note(c)
        cs[0].stop(timeout=0)
        assert cs[1].labels["n"] == "1" and cs[1].labels["sbx.pytest.test"].endswith("test_several_and_stopped")
''')


def _plugin_installed():
    return any(ep.name == "sbx" and ep.value == "sandbox.pytest_plugin"
               for ep in metadata.entry_points(group="pytest11"))


def _pytest(tmp_path, env_extra, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(env_extra)
    plugin = [] if _plugin_installed() else ["-p", "sandbox.pytest_plugin"]
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin, "-q", "-rA",
                           "--basetemp", str(tmp_path / "inner-tmp"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_plugin_is_registered_through_pytest11():
    try:
        metadata.distribution("sbx")
    except metadata.PackageNotFoundError:
        pytest.skip("sbx is not installed (pip install .): run from a checkout, its entry points do not exist")
    assert _plugin_installed()


def test_sbx_container_removes_everything_it_started(tmp_path):
    store = tmp_path / "store"
    pids = tmp_path / "pids"
    (tmp_path / "test_inner.py").write_text(INNER)
    cp = _pytest(tmp_path, {"SBX_ROOT": str(store), "PLUGIN_TEST_PIDS": str(pids)}, "test_inner.py")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, out                                    # exactly the deliberate failure
    assert "1 failed, 3 passed in" in out and "deliberate failure" in out, out   # no teardown error
    # The failed test's report shows its container's log; the passing ones' do not.
    assert "sbx container plug-fail: the last 50 lines of its log" in out and "said-before-failing" in out, out
    assert "sbx container plug-pass" not in out, out
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 5
    env = dict(os.environ, SBX_ROOT=str(store))
    assert ok(sbx("ps", "-a", "-q", env=env)).split() == []         # no container left
    left = [p for p in started if os.path.exists(f"/proc/{p}")]
    assert left == [], f"container processes left: {left}"
    assert host_pids_with(str(store)) == []                          # no monitor either


def test_sbx_rootfs_skips_without_busybox_and_fails_under_ci(tmp_path):
    """No static busybox: a skip naming the package, but a failure when CI is set."""
    (tmp_path / "conftest.py").write_text(
        "import sandbox.pytest_plugin as p\np._is_static_elf = lambda path: False  # as if none were installed\n")
    (tmp_path / "test_root.py").write_text("def test_root(sbx_rootfs):\n    pass\n")
    cp = _pytest(tmp_path, {"CI": ""}, "test_root.py")
    assert cp.returncode == 0 and "1 skipped" in cp.stdout and "busybox-static" in cp.stdout, cp.stdout
    cp = _pytest(tmp_path, {"CI": "true"}, "test_root.py")
    assert cp.returncode == 1 and "1 error" in cp.stdout and "busybox-static" in cp.stdout, cp.stdout


def test_importing_the_plugin_imports_no_engine():
    """pytest loads the plugin in every run of every project that has sbx installed."""
    code = ("import sys, sandbox.pytest_plugin\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('sandbox'))))")
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(mods) <= {"sandbox", "sandbox.errors", "sandbox.pytest_plugin"}, mods
