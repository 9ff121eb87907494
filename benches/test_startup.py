"""Start-to-exit of /bin/true in a busybox rootfs, rootless, the namespaces of
`bwrap --unshare-all` (user, mount, pid, uts, ipc, net, cgroup), single-id mapping as bwrap
uses.  sbx through the Python API in a warm process and through the CLI as a whole process;
peers bwrap, crun (rootless bundle) and unshare.  Ratios are printed at the end."""
import os
import shutil
import subprocess

import pytest

import sandbox


def _run(cmd):
    subprocess.run(cmd, check=True)


def test_api_true(benchmark, rootfs):
    r = benchmark(sandbox.run, ["/bin/true"], rootfs=rootfs, userns="single")
    assert r.returncode == 0


def test_api_true_auto_userns(benchmark, rootfs):
    """The default mapping: a subuid range through newuidmap/newgidmap when configured."""
    r = benchmark(sandbox.run, ["/bin/true"], rootfs=rootfs)
    assert r.returncode == 0


def test_cli_true(benchmark, rootfs, sbx_cmd):
    benchmark(_run, sbx_cmd + ["run", "--rm", "--userns", "single", "--rootfs", rootfs, "/bin/true"])


def test_bwrap_true(benchmark, rootfs):
    if not shutil.which("bwrap"):
        pytest.skip("bwrap not installed")
    benchmark(_run, ["bwrap", "--unshare-all", "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true"])


def test_unshare_true(benchmark):
    benchmark(_run, ["unshare", "-Urm", "--pid", "--fork", "/bin/true"])


def test_crun_true(benchmark, crun):
    benchmark(crun.run)


def test_api_100_sequential(benchmark, rootfs):
    """100 sandboxes one after the other from one process (target: <= 0.3 s)."""
    def hundred():
        for _ in range(100):
            sandbox.run(["/bin/true"], rootfs=rootfs, userns="single", check=True)
    benchmark.pedantic(hundred, rounds=5, iterations=1)


def test_cli_peak_rss(benchmark, rootfs, sbx_cmd):
    """Peak RSS of one `sbx run` process (target: <= 30 MiB), from wait4's rusage."""
    def once():
        p = subprocess.Popen(sbx_cmd + ["run", "--rm", "--userns", "single", "--rootfs", rootfs, "/bin/true"])
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        assert p.returncode == 0
        return ru.ru_maxrss
    kib = benchmark.pedantic(once, rounds=3, iterations=1)
    benchmark.extra_info["peak_rss_mib"] = round(kib / 1024, 1)
    assert kib > 0
