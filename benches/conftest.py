"""Benchmark fixtures: one busybox rootfs shared by sbx and its peers, a crun bundle of it,
and a summary of sbx/peer ratios at the end (ratios within one run: the machines are noisy).

Run:  pytest benches/ --benchmark-columns=median,iqr,rounds   (as an unprivileged user)
"""
import os
import shutil
import subprocess
import sys

import pytest

from sandbox.testing import make_busybox_rootfs

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory):
    return make_busybox_rootfs(str(tmp_path_factory.mktemp("bench") / "rootfs"))


@pytest.fixture(scope="session")
def full(pytestconfig) -> bool:
    """Real sizes and rounds, or the small CI variant (--benchmark-disable: every body runs once)."""
    if pytestconfig.getoption("benchmark_skip", False):
        pytest.skip("Benchmarks are skipped (--benchmark-skip was used).")
    return not pytestconfig.getoption("benchmark_disable", False)


@pytest.fixture(scope="session")
def sbx_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), "sbx")
    if not os.access(exe, os.X_OK):
        pytest.skip("the sbx script is not installed next to this python")
    return [exe]


class CrunDriver:
    """crun 1.8 refuses hybrid cgroup hosts unless /sys/fs/cgroup/unified/cgroup.controllers
    reads empty, so a driver process runs in a private user+mount namespace where an empty
    file is bound over it, and starts `crun run` on each request.  A request costs a pipe
    round trip (tens of microseconds) on top of crun itself."""

    def __init__(self, bundle, empty, state):
        script = (
            "import subprocess, sys\n"
            f"cmd = ['crun', '--root', {state!r}, 'run', '-b', {bundle!r}]\n"
            "n = 0\n"
            "for line in sys.stdin:\n"
            "    n += 1\n"
            "    r = subprocess.run(cmd + [f'b{n}'])\n"
            "    sys.stdout.write(f'{r.returncode}\\n'); sys.stdout.flush()\n")
        self.p = subprocess.Popen(
            ["unshare", "-Urm", "sh", "-c",
             f"mount --bind {empty} /sys/fs/cgroup/unified/cgroup.controllers && exec /usr/bin/python3 -c \"$0\"",
             script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self):
        self.p.stdin.write("go\n")
        rc = self.p.stdout.readline().strip()
        if rc != "0":
            raise RuntimeError(f"crun run failed: {rc!r}")

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


@pytest.fixture(scope="session")
def crun(rootfs, tmp_path_factory):
    if not shutil.which("crun") or not shutil.which("unshare"):
        pytest.skip("crun not installed")
    d = tmp_path_factory.mktemp("crun")
    bundle = d / "bundle"
    bundle.mkdir()
    os.symlink(rootfs, bundle / "rootfs")
    subprocess.run(["crun", "spec", "--rootless"], cwd=bundle, check=True)
    import json
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = True
    # The same namespaces as `bwrap --unshare-all` and sbx: `crun spec --rootless` has no netns.
    ns = cfg["linux"]["namespaces"]
    if not any(n["type"] == "network" for n in ns):
        ns.append({"type": "network"})
    (bundle / "config.json").write_text(json.dumps(cfg))
    (d / "empty").write_text("")
    drv = CrunDriver(str(bundle), str(d / "empty"), str(d / "state"))
    drv.dir = d  # benches/test_oci.py runs the same bundle through sbx-runc and runc
    try:
        drv.run()
    except Exception as e:
        drv.close()
        pytest.skip(f"crun does not run here: {e}")
    yield drv
    drv.close()


PAIRS = (
    ("test_api_true", "test_bwrap_true", 0.7),         # with the default seccomp filter
    ("test_api_true_no_seccomp", "test_bwrap_true", 0.6),
    ("test_api_true", "test_crun_true", 0.25),
    ("test_api_true_auto_userns", "test_bwrap_true", 0.6),  # issue 11: a subuid range, kept user namespace
    ("test_api_true_range_mapped_per_sandbox", "test_bwrap_true", None),
    ("test_cli_true", "test_crun_true", 2.0),
    ("test_cli_true_no_seccomp", "test_crun_true", 2.0),
    ("test_cli_true", "test_bwrap_true", None),
    ("test_cli_true", "test_unshare_true", None),
    ("test_api_true_two_phase", "test_api_true_fast_path", None),  # create + no-op hook + release
    ("test_api_true_two_phase_auto", "test_api_true_fast_path_auto", None),
    ("test_oci_sbx_runc_run", "test_oci_crun_run", 1.0),  # the OCI runtimes: run of /bin/true
    ("test_oci_sbx_runc_run", "test_oci_runc_run", None),
    ("test_net_cli_default", "test_net_cli_none", 1.5),  # issue 11: the default network's start-up
    ("test_net_cli_pasta", "test_net_cli_none", None),
    ("test_net_bare_slirp4netns", "test_net_bare_unshare", None),  # the helper alone, without sbx
    ("test_net_run_d_publish_to_accept", "test_net_bare_hostfwd_to_accept", None),  # -p against add_hostfwd by hand
    ("test_net_publish_tcp_transfer", "test_net_hostfwd_tcp_transfer", 1.25),  # -p throughput >= 0.8x
    ("test_bridge_cli_true", "test_net_cli_none", 1.5),  # issue 11: a user-defined network, holder warm
    ("test_bridge_tcp_transfer", "test_veth_tcp_transfer", 1.25),  # throughput >= 0.8x a plain veth pair
)


def pytest_terminal_summary(terminalreporter, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not getattr(bs, "benchmarks", None):
        return
    med = {}
    extra = []
    for b in bs.benchmarks:
        if getattr(b, "stats", None) is not None:
            med[b.name] = b.stats.median
        for k, v in (getattr(b, "extra_info", None) or {}).items():
            if k == "peak_rss_mib":
                extra.append(f"{b.name}: peak RSS {v} MiB   target <= 30 MiB")
    if not med:
        return
    tr = terminalreporter
    tr.section("sbx / peer (medians, this run)")
    for name, m in sorted(med.items()):
        tr.write_line(f"{name:<34} {m * 1000:9.3f} ms")
    for a, b, target in PAIRS:
        if a in med and b in med:
            t = f"   target <= {target}x" if target else ""
            tr.write_line(f"{a} / {b}: {med[a] / med[b]:.2f}x{t}")
    for line in extra:
        tr.write_line(line)
