"""What a container's network costs at start-up (issue 11): start-to-exit of `sbx run --rm
/bin/true` with the default private network (`bridge`: slirp4netns here) and with pasta, against
`--network none`; the same helpers attached bare to `unshare -Urn` (no sbx) against that bare
namespace alone; and the time from `sbx run -d -p` to the published port answering.

Podman is the natural peer, but rootless podman cannot start any container on this host class
(crun refuses its hybrid cgroup layout, even with --cgroups=disabled: see
shared/reference/next-capabilities.md §0), so there is no podman figure to set beside these.
The ratios are printed in the summary (conftest.PAIRS); the added milliseconds are the
difference of the medians, and sbx's should be close to the bare helper's."""
import os
import socket
import subprocess
import time

import pytest


def _run(cmd):
    subprocess.run(cmd, check=True)


def _sbx_true(sbx_cmd, rootfs, network):
    return sbx_cmd + ["run", "--rm", "--userns", "single", "--network", network, "--rootfs", rootfs, "/bin/true"]


def test_net_cli_none(benchmark, rootfs, sbx_cmd):
    benchmark(_run, _sbx_true(sbx_cmd, rootfs, "none"))


def test_net_cli_default(benchmark, rootfs, sbx_cmd):
    """`bridge`: the default of an image run (slirp4netns when installed)."""
    benchmark(_run, _sbx_true(sbx_cmd, rootfs, "bridge"))


def test_net_cli_pasta(benchmark, rootfs, sbx_cmd):
    benchmark(_run, _sbx_true(sbx_cmd, rootfs, "pasta"))


def _bare(helper):
    """`unshare -Urn` holding a namespace until its stdin closes, with `helper` attached (and
    waited for) or not: the helper's own cost, without sbx."""
    ns = subprocess.Popen(["unshare", "-Urn", "cat"], stdin=subprocess.PIPE)
    mine = os.readlink("/proc/self/ns/net")
    while os.readlink(f"/proc/{ns.pid}/ns/net") == mine:  # unshare has not unshared yet
        time.sleep(0.0002)
    try:
        if helper == "slirp4netns":
            r, w = os.pipe()
            p = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", f"--ready-fd={w}",
                                  "--disable-host-loopback", str(ns.pid), "tap0"], pass_fds=(w,))
            os.close(w)
            assert os.read(r, 1) == b"1"
            os.close(r)
            p.kill()
            p.wait()
    finally:
        ns.stdin.close()
        ns.wait()


def test_net_bare_unshare(benchmark):
    benchmark(_bare, None)


def test_net_bare_slirp4netns(benchmark):
    benchmark(_bare, "slirp4netns")


def test_net_run_d_publish_to_accept(benchmark, rootfs, sbx_cmd, tmp_path):
    """From `sbx run -d -p 127.0.0.1:PORT:8080` to the first answer through the port."""
    env = dict(os.environ, SBX_ROOT=str(tmp_path / "store"))
    names = iter(range(1000))
    made = []

    def start_and_connect():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        name = f"pub{next(names)}"
        made.append(name)
        subprocess.run(sbx_cmd + ["run", "-d", "--name", name, "--network", "slirp4netns", "-p",
                                  f"127.0.0.1:{port}:8080", "--rootfs", rootfs, "sh", "-c",
                                  "while true; do echo up | nc -l -p 8080; done"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                    if c.recv(10) == b"up\n":
                        return
            except OSError:
                pass
            time.sleep(0.002)
        pytest.fail(f"port {port} never answered")

    def remove_previous():
        if made:
            subprocess.run(sbx_cmd + ["rm", "-f", *made], env=env, stdout=subprocess.DEVNULL)
            made.clear()
        return (), {}

    try:
        benchmark.pedantic(start_and_connect, setup=remove_previous, rounds=5)
    finally:
        remove_previous()
