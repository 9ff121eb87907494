"""sbx-runc against crun and runc as OCI runtimes: `run` (create + start + wait + delete) of
/bin/true, the same bundle for all three (`crun spec --rootless` plus a network namespace, as
conftest's crun bench), each with its own --root.  crun goes through conftest's CrunDriver
(hybrid-cgroup workaround, shared/README.md), which adds a pipe round trip.

The ratios (sbx-runc / crun, sbx-runc / runc) are printed in the summary (conftest.PAIRS).
sbx-runc is a Python program: its start-up (~10 ms of interpreter) is part of what it costs."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ids = itertools.count()


@pytest.fixture(scope="module")
def oci_bundle(crun):
    """conftest's crun bundle, and a copy of its config for runc, which wants the id maps spelled
    out (crun and sbx-runc map our ids to root without them) and a root that is no symlink."""
    d = crun.dir
    cfg = json.loads((d / "bundle/config.json").read_text())
    cfg["root"]["path"] = os.path.realpath(d / "bundle/rootfs")
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    (d / "runc-bundle").mkdir(exist_ok=True)
    (d / "runc-bundle/config.json").write_text(json.dumps(cfg))
    return d


def _sbx_runc():
    exe = os.path.join(os.path.dirname(sys.executable), "sbx-runc")
    return [exe] if os.access(exe, os.X_OK) else [sys.executable, os.path.join(REPO, "bin", "sbx-runc")]


def _runner(argv, bundle, state):
    def run():
        subprocess.run([*argv, "--root", str(state), "run", "--bundle", str(bundle), f"b{next(_ids)}"],
                       stdin=subprocess.DEVNULL, check=True)
    return run


def test_oci_sbx_runc_run(benchmark, oci_bundle):
    run = _runner(_sbx_runc(), oci_bundle / "bundle", oci_bundle / "sbx-state")
    run()
    benchmark(run)


def test_oci_runc_run(benchmark, oci_bundle):
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc not installed")
    run = _runner([runc], oci_bundle / "runc-bundle", oci_bundle / "runc-state")
    run()
    benchmark(run)


def test_oci_crun_run(benchmark, crun):
    benchmark(crun.run)
