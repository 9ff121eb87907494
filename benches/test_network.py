"""What a container's network costs at start-up (issue 11): start-to-exit of `sbx run --rm
/bin/true` with the default private network (`bridge`: slirp4netns here) and with pasta, against
`--network none`; the same helpers attached bare to `unshare -Urn` (no sbx) against that bare
namespace alone; and the time from `sbx run -d -p` to the published port answering.

Podman is the natural peer, but rootless podman cannot start any container on this host class
(crun refuses its hybrid cgroup layout, even with --cgroups=disabled: see
shared/reference/next-capabilities.md §0), so there is no podman figure to set beside these.
The ratios are printed in the summary (conftest.PAIRS); the added milliseconds are the
difference of the medians, and sbx's should be close to the bare helper's.

Published ports against slirp4netns's own forwarding set up by hand (`BareSlirp`: `unshare
-Urn` + slirp4netns with the flags sbx gives it + `add_hostfwd` on its API socket): the time
from start to the first answer through the port, and the TCP throughput of iperf3 (a fixed
transfer, timed: a time ratio <= 1.25 is a throughput >= 0.8x)."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from net_support import free_port, iperf3, iperf_client, transfer_size, until_iperf_answers  # noqa: F401

SERVE = "while true; do echo up | {nc} -l -p 8080; done"  # the server whose first answer is timed


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
    """pasta, the fallback default, measured 2.9x none before slirp4netns's tap was handed to the
    namespace.  Most of it is pasta's own start (~50-60 ms here, strace of a bare `pasta
    --config-net -P FILE PID`): it joins the namespace's user namespace, configures the
    namespace through short-lived clone(CLONE_VM|CLONE_VFORK) children that setns(2) into it
    (six, ~3-4 ms apiece on this machine), and fills pools of pre-opened TCP sockets (~130)
    on both sides before it writes its pid file.  Its end also unregisters its tap in its
    exit: joining the user namespace leaves it undumpable, so its tap fd cannot be taken to
    make the tap the namespace's as slirp4netns's is (helper.Process.tap_with_namespace)."""
    benchmark(_run, _sbx_true(sbx_cmd, rootfs, "pasta"))


def _unshared(cmd):
    """`unshare -Urn cmd`, once its network namespace exists (in a session of its own, as a
    container is: see BareSlirp)."""
    ns = subprocess.Popen(["unshare", "-Urn", *cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          start_new_session=True)
    mine = os.readlink("/proc/self/ns/net")
    while os.readlink(f"/proc/{ns.pid}/ns/net") == mine:  # unshare has not unshared yet
        time.sleep(0.0002)
    return ns


class BareSlirp:
    """`cmd` in a namespace of `unshare -Urn`, connected by slirp4netns as sbx connects a
    container (--configure --mtu=65520 --disable-host-loopback), with an API socket in
    `directory` for `add_hostfwd` (slirp4netns's own port forwarding), without sbx.

    Both run in sessions of their own, as a detached container and its helper do: with the
    scheduler's autogroups (a group per session), processes that share the iperf3 client's
    session are scheduled as one group, and on a loaded machine that alone made the peer's
    transfers twice as fast as the same transfers with the server in another session."""

    def __init__(self, cmd, directory=None):
        self.ns = _unshared(cmd)
        self.sock = os.path.join(directory, f"api-{self.ns.pid}.sock") if directory else None
        r, w = os.pipe()
        self.slirp = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", f"--ready-fd={w}",
                                       "--disable-host-loopback"] + ([f"--api-socket={self.sock}"] if directory else [])
                                      + [str(self.ns.pid), "tap0"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(w)
        ready = os.read(r, 1)
        os.close(r)
        if ready != b"1":
            self.close()
            pytest.fail("slirp4netns did not connect the namespace")

    def add_hostfwd(self, host_port, guest_port):
        req = {"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1",
                                                        "host_port": host_port, "guest_port": guest_port}}
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(self.sock)
            c.sendall(json.dumps(req).encode())
            c.shutdown(socket.SHUT_WR)
            reply = json.loads(c.recv(4096))
        assert "return" in reply, reply

    def close(self):
        for p in (self.slirp, self.ns):
            os.killpg(p.pid, signal.SIGKILL)  # cmd's children too (a shell's nc)
            p.wait()
        if self.sock and os.path.exists(self.sock):
            os.unlink(self.sock)


def _bare(helper):
    """A namespace of `unshare -Urn` with slirp4netns attached (and waited for) or not, then
    both ended: the helper's own cost, without sbx."""
    if helper == "slirp4netns":
        BareSlirp(["sleep", "60"]).close()
    else:
        ns = _unshared(["sleep", "60"])
        ns.kill()
        ns.wait()


def test_net_bare_unshare(benchmark):
    benchmark(_bare, None)


def test_net_bare_slirp4netns(benchmark):
    benchmark(_bare, "slirp4netns")


def _first_answer(port, deadline=20):
    """Poll 127.0.0.1:port until the server behind it answers "up"."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                if c.recv(10) == b"up\n":
                    return
        except OSError:
            pass
        time.sleep(0.002)
    pytest.fail(f"port {port} never answered")


def test_net_run_d_publish_to_accept(benchmark, rootfs, sbx_cmd, tmp_path):
    """From `sbx run -d -p 127.0.0.1:PORT:8080` to the first answer through the port."""
    env = dict(os.environ, SBX_ROOT=str(tmp_path / "store"))
    names = iter(range(1000))
    made = []

    def start_and_connect():
        port = free_port()
        name = f"pub{next(names)}"
        made.append(name)
        subprocess.run(sbx_cmd + ["run", "-d", "--name", name, "--network", "slirp4netns", "-p",
                                  f"127.0.0.1:{port}:8080", "--rootfs", rootfs, "sh", "-c", SERVE.format(nc="nc")],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        _first_answer(port)

    def remove_previous():
        if made:
            subprocess.run(sbx_cmd + ["rm", "-f", *made], env=env, stdout=subprocess.DEVNULL)
            made.clear()
        return (), {}

    try:
        benchmark.pedantic(start_and_connect, setup=remove_previous, rounds=5)
    finally:
        remove_previous()


def test_net_bare_hostfwd_to_accept(benchmark, rootfs, tmp_path):
    """The same by hand: the same server in `unshare -Urn`, slirp4netns, add_hostfwd, first answer."""
    bb = os.path.join(rootfs, "bin", "busybox")
    made = []

    def start_and_connect():
        port = free_port()
        b = BareSlirp([bb, "sh", "-c", SERVE.format(nc=f"{bb} nc")], str(tmp_path))
        made.append(b)
        b.add_hostfwd(port, 8080)
        _first_answer(port)

    def remove_previous():
        while made:
            made.pop().close()
        return (), {}

    try:
        benchmark.pedantic(start_and_connect, setup=remove_previous, rounds=5)
    finally:
        remove_previous()


# --- TCP throughput through a published port ----------------------------------------------------

@pytest.fixture(scope="module")
def published_iperf(iperf3, sbx_cmd, tmp_path_factory):
    """`sbx run -d -p 127.0.0.1:PORT:5201 iperf3 -s` (the host's iperf3: --rootfs /); yields PORT."""
    env = dict(os.environ, SBX_ROOT=str(tmp_path_factory.mktemp("iperf-store")))
    port = free_port()
    subprocess.run(sbx_cmd + ["run", "-d", "--name", "iperf", "--network", "slirp4netns", "-p",
                              f"127.0.0.1:{port}:5201", "--rootfs", "/", iperf3, "-s"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        until_iperf_answers("127.0.0.1", port)
        yield port
    finally:
        subprocess.run(sbx_cmd + ["rm", "-f", "iperf"], env=env, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def hostfwd_iperf(iperf3, tmp_path_factory):
    """`iperf3 -s` in `unshare -Urn`, published by slirp4netns's add_hostfwd; yields the port."""
    b = BareSlirp([iperf3, "-s"], str(tmp_path_factory.mktemp("slirp-api")))
    try:
        port = free_port()
        b.add_hostfwd(port, 5201)
        until_iperf_answers("127.0.0.1", port)
        yield port
    finally:
        b.close()


def test_net_publish_tcp_transfer(benchmark, published_iperf, full):
    """host 127.0.0.1:PORT -> `-p` -> iperf3 -s in a container."""
    benchmark.pedantic(iperf_client, args=("127.0.0.1", transfer_size(full), published_iperf), rounds=5)


def test_net_hostfwd_tcp_transfer(benchmark, hostfwd_iperf, full):
    """host 127.0.0.1:PORT -> slirp4netns add_hostfwd -> iperf3 -s in `unshare -Urn`."""
    benchmark.pedantic(iperf_client, args=("127.0.0.1", transfer_size(full), hostfwd_iperf), rounds=5)
