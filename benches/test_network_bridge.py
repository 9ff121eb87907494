"""User-defined networks (issue 11): start-to-exit of `sbx run --rm --network NET /bin/true`
with the network holder warm (a member keeps it up) against `--network none`, and a 1 GB TCP
transfer container-to-container on one network against the same transfer over a plain veth
pair between two network namespaces of one user namespace (no bridge, no sbx).  The ratios are
in the summary (conftest.PAIRS).  Each round starts its sender anew (`sbx exec` into the
sending container; `nsenter` for the plain pair), so the transfer is large enough that the
start is a small part of it."""
import os
import subprocess
import time

import pytest

PY = "/usr/bin/python3"  # Debian's: the benchmark's venv may sit under the sandbox's tmpfs
RECV = ("import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',5001))\ns.listen(4)\nwhile True:\n c,_=s.accept()\n"
        " while c.recv(1<<20):\n  pass\n c.close()\n")
SEND = ("import socket,sys\nb=b'x'*(1<<18)\nc=socket.create_connection((sys.argv[1],5001))\nn=0\n"
        "while n<int(sys.argv[2]):\n c.sendall(b)\n n+=len(b)\nc.shutdown(socket.SHUT_WR)\nc.recv(1)\n")
PROBE = "import socket,sys\nsocket.create_connection((sys.argv[1],5001),timeout=2).close()\n"
SIZE = 10 ** 9


def _until(cmd, what, **kw):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, **kw).returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"{what} never answered")


@pytest.fixture(scope="module")
def bridge_net(sbx_cmd, rootfs, tmp_path_factory):
    """A network with a receiver and a sender container running (so the holder stays up)."""
    env = dict(os.environ, SBX_ROOT=str(tmp_path_factory.mktemp("bridge-store")))

    def sbx(*args):
        subprocess.run(sbx_cmd + list(args), check=True, env=env, stdout=subprocess.DEVNULL)
    sbx("network", "create", "benchnet")
    sbx("run", "-d", "--name", "recv", "--network", "benchnet", "--rootfs", "/", PY, "-c", RECV)
    sbx("run", "-d", "--name", "send", "--network", "benchnet", "--rootfs", "/", "sleep", "3600")
    _until(sbx_cmd + ["exec", "send", PY, "-c", PROBE, "recv"], "the receiver on the network", env=env)
    yield env
    subprocess.run(sbx_cmd + ["rm", "-f", "recv", "send"], env=env, stdout=subprocess.DEVNULL)
    subprocess.run(sbx_cmd + ["network", "rm", "benchnet"], env=env, stdout=subprocess.DEVNULL)


def test_bridge_cli_true(benchmark, rootfs, sbx_cmd, bridge_net):
    cmd = sbx_cmd + ["run", "--rm", "--network", "benchnet", "--rootfs", rootfs, "/bin/true"]
    benchmark(subprocess.run, cmd, check=True, env=bridge_net)


def test_bridge_tcp_transfer(benchmark, sbx_cmd, bridge_net):
    cmd = sbx_cmd + ["exec", "send", PY, "-c", SEND, "recv", str(SIZE)]
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"check": True, "env": bridge_net}, rounds=3)


@pytest.fixture(scope="module")
def veth_pair():
    """Two network namespaces of one user namespace joined by a veth pair, a receiver in the
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
        procs.append(subprocess.Popen(enter_b + [PY, "-c", RECV]))
        _until(enter_a + [PY, "-c", PROBE, "10.99.0.2"], "the receiver on the veth pair")
        yield enter_a
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()


def test_veth_tcp_transfer(benchmark, veth_pair):
    cmd = veth_pair + [PY, "-c", SEND, "10.99.0.2", str(SIZE)]
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"check": True}, rounds=3)
