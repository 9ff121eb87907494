"""sbx-runc with a delegated cgroup v2 subtree, in the QEMU VM of tests/vm/harness.py (this host
has hybrid cgroups): a container with linux.resources gets its leaf and limits, `pause` freezes
it (status paused, its counter stops), `resume` thaws it, `update --resources` writes new
limits, `delete` removes the leaf.  Outside the VM the test asserts the VM's verdict."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from ocitest import rt  # noqa: F401 - the fixture
from ocitest import edit_config, make_bundle, wait_file

IN_VM = os.environ.get("SBX_IN_VM") == "1"
HERE = Path(__file__).resolve()


@pytest.fixture(scope="session")
def oci_vm_results(tmp_path_factory):
    sys.path.insert(0, str(HERE.parent / "vm"))
    import harness
    missing = [t for t in ("qemu-system-x86_64", "apt-get", "dpkg-deb") if shutil.which(t) is None]
    assert not missing, f"the cgroup v2 VM needs {', '.join(missing)} (scripts/test.sh installs qemu-system-x86)"
    cache = Path(os.environ.get("SBX_TEST_VM_CACHE") or tmp_path_factory.getbasetemp().parent / "vm-cache")
    vm = harness.Machine(cache).build()
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "-m", "cgroup2vm",
            "--basetemp=/tmp/pt", "--junitxml=/tmp/out/junit.xml", str(HERE)]
    out = tmp_path_factory.mktemp("oci-vm-out")
    rc, results, console = vm.run_pytest(os.getuid(), os.getgid(), argv, out,
                                         os.path.dirname(sys.executable) + ":/usr/bin:/bin:/usr/sbin:/sbin",
                                         timeout=270)
    if not results:
        pytest.fail(f"the VM ran no test (pytest exit {rc}):\n{console[-4000:]}")
    return results


@pytest.mark.cgroup2vm
@pytest.mark.subuid  # one VM boot per CI run (about two minutes under TCG): as sbxsub only
def test_vm_limits_pause_resume_update_delete(request, rt, tmp_path):
    if not IN_VM:
        if os.geteuid() == 0:
            pytest.skip("the cgroup v2 VM runs as the unprivileged test users (a delegated subtree is theirs)")
        outcome, text = request.getfixturevalue("oci_vm_results").get(request.node.name, ("missing", ""))
        assert outcome == "passed", f"in the cgroup v2 VM: {outcome}\n{text}"
        return
    b = make_bundle(tmp_path / "b", ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /count; sleep 0.05; done"])
    edit_config(b, lambda c: c["linux"].update(resources={"pids": {"limit": 50}, "memory": {"limit": 64 << 20}}))
    rt("run", "-d", "--bundle", b, "v1", check=True)
    state = json.loads((rt.root / "v1/state.json").read_text())
    leaf = Path(state["cgroup"])
    assert (leaf / "pids.max").read_text().strip() == "50"
    assert (leaf / "memory.max").read_text().strip() == str(64 << 20)
    assert str(rt.state("v1")["pid"]) in (leaf / "cgroup.procs").read_text().split()
    wait_file(b / "rootfs/count")

    rt("pause", "v1", check=True)
    assert rt.status("v1") == "paused"
    time.sleep(0.3)
    frozen_at = (b / "rootfs/count").read_text()
    time.sleep(1.0)
    assert (b / "rootfs/count").read_text() == frozen_at, "a paused container kept counting"
    assert rt("pause", "v1").returncode == 1                   # paused already: fails, stays paused
    rt("resume", "v1", check=True)
    assert rt.status("v1") == "running"
    deadline = time.monotonic() + 10
    while (b / "rootfs/count").read_text() == frozen_at and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (b / "rootfs/count").read_text() != frozen_at, "the counter did not resume"

    rt("update", "--resources", "-", "v1", input='{"pids": {"limit": 20}}', check=True)
    assert (leaf / "pids.max").read_text().strip() == "20"
    rt("delete", "--force", "v1", check=True)
    assert not leaf.exists(), "the leaf outlived its container"
