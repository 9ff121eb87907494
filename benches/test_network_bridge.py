"""User-defined networks (issue 11): start-to-exit of `sbx run --rm --network NET /bin/true`
with the network holder warm (a member keeps it up) against `--network none`, and TCP
throughput container-to-container on one network against the same over a plain veth pair
between two network namespaces of one user namespace (no bridge, no sbx), both with iperf3:
a fixed transfer timed (net_support), the client started anew each round (`sbx exec` into
the sending container; `nsenter` for the plain pair), so the transfer is large enough that
the start is a small part of it.  The ratios are in the summary (conftest.PAIRS)."""
import os
import subprocess
import time

import pytest

from net_support import iperf3, iperf_client, transfer_size, until_iperf_answers  # noqa: F401


def _size(full):
    return 4 * transfer_size(full)  # veth and bridge run at tens of Gbit/s, slirp4netns at ~2


@pytest.fixture(scope="module")
def bridge_net(iperf3, sbx_cmd, rootfs, tmp_path_factory):
    """A network with an iperf3 server and a sender container running (so the holder stays
    up); yields (the environment of that store, the sbx exec prefix of the sender)."""
    env = dict(os.environ, SBX_ROOT=str(tmp_path_factory.mktemp("bridge-store")))

    def sbx(*args):
        subprocess.run(sbx_cmd + list(args), check=True, env=env, stdout=subprocess.DEVNULL)
    sbx("network", "create", "benchnet")
    try:
        sbx("run", "-d", "--name", "recv", "--network", "benchnet", "--rootfs", "/", iperf3, "-s")
        sbx("run", "-d", "--name", "send", "--network", "benchnet", "--rootfs", "/", "sleep", "3600")
        prefix = sbx_cmd + ["exec", "send"]
        until_iperf_answers("recv", prefix=prefix, env=env)
        yield env, prefix
    finally:
        subprocess.run(sbx_cmd + ["rm", "-f", "recv", "send"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(sbx_cmd + ["network", "rm", "benchnet"], env=env, stdout=subprocess.DEVNULL)


def test_bridge_cli_true(benchmark, rootfs, sbx_cmd, bridge_net):
    cmd = sbx_cmd + ["run", "--rm", "--network", "benchnet", "--rootfs", rootfs, "/bin/true"]
    benchmark(subprocess.run, cmd, check=True, env=bridge_net[0])


def test_bridge_tcp_transfer(benchmark, bridge_net, full):
    env, prefix = bridge_net
    benchmark.pedantic(iperf_client, args=("recv", _size(full)), kwargs={"prefix": prefix, "env": env}, rounds=3)


@pytest.fixture(scope="module")
def veth_pair(iperf3):
    """Two network namespaces of one user namespace joined by a veth pair, iperf3 -s in the
    second; yields the nsenter prefix of the first."""
    a = subprocess.Popen(["unshare", "-Urn", "sleep", "3600"])
    procs = [a]
    try:
        time.sleep(0.2)
        enter_a = ["nsenter", "-t", str(a.pid), "-U", "-n", "--preserve-credentials"]
        b = subprocess.Popen(enter_a + ["unshare", "-n", "sleep", "3600"])
        procs.append(b)
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{b.pid}/ns/net") == os.readlink(f"/proc/{a.pid}/ns/net"):
            assert time.monotonic() < deadline, "the second network namespace never appeared"
            time.sleep(0.02)
        enter_b = ["nsenter", "-t", str(b.pid), "-U", "-n", "--preserve-credentials"]
        for cmd in (enter_a + ["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    enter_a + ["ip", "link", "set", "vb", "netns", str(b.pid)],
                    enter_a + ["ip", "addr", "add", "10.99.0.1/24", "dev", "va"],
                    enter_a + ["ip", "link", "set", "va", "up"],
                    enter_b + ["ip", "addr", "add", "10.99.0.2/24", "dev", "vb"],
                    enter_b + ["ip", "link", "set", "vb", "up"]):
            subprocess.run(cmd, check=True)
        # in a session of its own, as the receiving container is (see test_network.BareSlirp)
        procs.append(subprocess.Popen(enter_b + [iperf3, "-s"], stdout=subprocess.DEVNULL, start_new_session=True))
        until_iperf_answers("10.99.0.2", prefix=enter_a)
        yield enter_a
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()


def test_veth_tcp_transfer(benchmark, veth_pair, full):
    benchmark.pedantic(iperf_client, args=("10.99.0.2", _size(full)), kwargs={"prefix": veth_pair}, rounds=3)
