"""Run the `cgroup2vm` tests in the cgroup v2 VM (tests/vm/harness.py), one boot for all of
them (conftest's session fixture `cgroup_vm` boots it with every file that has such tests), and
give each of those tests the VM's verdict on the host:

    @pytest.mark.cgroup2vm
    @pytest.mark.timeout(cgvm.DEADLINE + 60)   # the first VM test to run waits for the whole VM
    def test_vm_x(request):
        if not cgvm.inside(request, "cgroup_vm"):
            return          # on the host: the VM's verdict was asserted
        ...                 # in the VM: the test itself
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

IN_VM = os.environ.get("SBX_IN_VM") == "1"
# The whole VM session (boot, every cgroup2vm test under emulation, power-off) runs inside the
# first VM test: on a loaded 2-core host an `sbx` command takes 4-15 s under TCG.
DEADLINE = 600


def boot(tmp_path_factory, test_files, timeout=DEADLINE):
    """Boot the VM once, run the cgroup2vm tests of `test_files` in it as this user: {test
    name: (outcome, text)}.  A missing qemu fails under CI and skips elsewhere.  A VM that
    hangs is reported with its console."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "vm"))
    import harness
    if os.geteuid() == 0:
        pytest.skip("the cgroup v2 VM tests run as the unprivileged test users (a delegated subtree is theirs)")
    missing = [t for t in ("qemu-system-x86_64", "apt-get", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        msg = f"the cgroup v2 VM needs {', '.join(missing)} (scripts/test.sh installs qemu-system-x86)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    cache = Path(os.environ.get("SBX_TEST_VM_CACHE") or tmp_path_factory.getbasetemp().parent / "vm-cache")
    vm = harness.Machine(cache).build()
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "-m", "cgroup2vm",
            "--basetemp=/tmp/pt", "--junitxml=/tmp/out/junit.xml", *map(str, test_files)]
    if _has_timeout_plugin():
        argv[-len(test_files):-len(test_files)] = ["--timeout", "200"]
    out = tmp_path_factory.mktemp("vm-out")
    rc, results, console = vm.run_pytest(os.getuid(), os.getgid(), argv, out,
                                         os.path.dirname(sys.executable) + ":/usr/bin:/bin:/usr/sbin:/sbin",
                                         timeout=timeout)
    sys.stderr.write(f"\ncgroup v2 VM: pytest exit {rc}, timings {vm.timings}\n")
    if not results:
        pytest.fail(f"the VM ran no test (pytest exit {rc}):\n{console[-4000:]}")
    return dict(results, **{"": ("console", console)})


def _has_timeout_plugin():
    try:
        import pytest_timeout  # noqa: F401
        return True
    except ImportError:
        return False


def inside(request, fixture):
    """True inside the VM (run the test); on the host the VM's verdict for this test (from the
    session fixture named `fixture`) is asserted and False returned."""
    if IN_VM:
        return True
    results = request.getfixturevalue(fixture)
    outcome, text = results.get(request.node.name, ("missing", "the VM did not report this test:\n"
                                                               + results[""][1][-4000:]))
    if outcome == "skipped":
        pytest.fail(f"skipped in the VM: {text}")
    if outcome != "passed":
        pytest.fail(f"in the cgroup v2 VM: {outcome}\n{text}")
    return False
