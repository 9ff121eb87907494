"""Helpers for the network benchmarks (benches/test_network*.py): a free host port and iperf3
(Debian's package iperf3) as client and readiness probe.  A transfer is a fixed number of
bytes, timed by the benchmark: the time ratio of two transfers is the inverse of their
throughput ratio (<= 1.25 is a throughput >= 0.8x)."""
import shutil
import socket
import subprocess
import time

import pytest

IPERF = shutil.which("iperf3")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def transfer_size(full):
    """Bytes per timed transfer: 500 MiB, or 20 MiB in the CI variant (--benchmark-disable)."""
    return 500 * 2 ** 20 if full else 20 * 2 ** 20


def iperf_client(host, size, port=5201, prefix=(), **kw):
    """One iperf3 transfer of `size` bytes to the server at host:port (run under `prefix`;
    `kw` for subprocess.run)."""
    subprocess.run([*prefix, IPERF, "-c", host, "-p", str(port), "-n", str(size), "--connect-timeout", "5000"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=300, **kw)


def until_iperf_answers(host, port=5201, prefix=(), **kw):
    """Wait until a 1 KiB transfer to the iperf3 server at host:port succeeds (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run([*prefix, IPERF, "-c", host, "-p", str(port), "-n", "1K", "--connect-timeout", "2000"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60, **kw).returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"no iperf3 server answered at {host}:{port}")


@pytest.fixture(scope="module")
def iperf3():
    if not IPERF:
        pytest.skip("iperf3 not installed (Debian package iperf3)")
    return IPERF
