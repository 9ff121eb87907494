"""sbx stats and Container.stats(): Docker's columns and documents, from the container's cgroup
when it has one (the cgroup v2 VM: tests/test_update.py) and from /proc of its processes
when it has none (this host: cgroup v1 hybrid, so no container has a cgroup of its own here)."""
import json
import os
import re
import select
import signal
import time

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx

pytestmark = pytest.mark.usefixtures("own_container_store")

PY = "/usr/bin/python3"  # the host's, in the host's root (--rootfs /), runnable by every test user
COLUMNS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
JSON_KEYS = {"Container", "ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs", "Source"}
MIB = 1 << 20


def _run_d(name, *argv):
    return ok(sbx("run", "-d", "--name", name, "--rootfs", "/", *argv)).strip()


def _ready(name, needle, timeout=30):
    """Wait until the container's log shows `needle` (it has done its set-up)."""
    assert sbxtest.wait_for(lambda: needle in sbx("logs", name).stdout, timeout), sbx("logs", name)


def _cells(line):
    return re.split(r"\s{2,}", line.strip())


def _host_mem_total():
    with open("/proc/meminfo") as f:
        return int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1]) * 1024


def _bytes(text):
    """'60.65MiB' -> bytes (go-units' binary sizes, as MEM USAGE shows them)."""
    m = re.fullmatch(r"([\d.]+)(B|KiB|MiB|GiB|TiB)", text)
    assert m, text
    return float(m.group(1)) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(m.group(2))


def test_columns_and_figures_from_proc(busybox_rootfs):
    """Docker's table; a container without a cgroup is read in /proc, and the output says so:
    memory a process allocated shows in MEM USAGE, PIDS counts each forked process, a busy
    loop shows in CPU %."""
    _run_d("eater", PY, "-c", "import time; x = b'x' * (96 << 20); print('up', flush=True); time.sleep(1000)")
    _run_d("forks", "/bin/busybox", "sh", "-c", "sleep 1001 & sleep 1002 & echo up; wait")
    _run_d("busy", "/bin/busybox", "sh", "-c", "echo up; while :; do :; done")
    for name in ("eater", "forks", "busy"):
        _ready(name, "up")
    cp = sbx("stats", "--no-stream")
    lines = ok(cp).splitlines()
    assert _cells(lines[0]) == COLUMNS
    rows = {c[1]: c for c in map(_cells, lines[1:])}
    assert set(rows) == {"eater", "forks", "busy"}
    ids = json.loads(ok(sbx("inspect", "eater", "forks", "busy")))
    for doc in ids:
        r = rows[doc["Name"].lstrip("/")]
        assert r[0] == doc["Id"][:12]
        assert r[5] == "0B / 0B"                     # no network of their own but lo
        assert re.fullmatch(r"\d+", r[7])
    # the source is said: on stderr under the default table, and in .Source
    assert "no cgroup of their own" in cp.stderr and "/proc" in cp.stderr
    assert all(n in cp.stderr for n in ("eater", "forks", "busy"))
    used, limit = (_bytes(x) for x in rows["eater"][3].split(" / "))
    assert used >= 96 * MIB
    assert abs(limit - _host_mem_total()) <= limit * 0.001       # no cgroup: the host's memory bounds it
    assert _bytes(rows["forks"][3].split(" / ")[0]) < 96 * MIB
    assert rows["forks"][7] == str(len(_top_pids("forks"))) == "3"  # sh and its two sleeps
    assert float(rows["busy"][2].rstrip("%")) > 10.0
    assert rows["forks"][2] == "0.00%"                           # sleeping processes take no CPU time

    from sandbox import containers
    containers.get("forks").exec_run(["sleep", "1003"], detach=True)   # one more process: counted
    assert sbxtest.wait_for(lambda: len(_top_pids("forks")) == 4)
    out = json.loads(ok(sbx("stats", "--no-stream", "--format", "json", "forks")))
    assert set(out) == JSON_KEYS
    assert out["PIDs"] == "4" and out["Source"] == "proc" and out["Container"] == "forks"


def _top_pids(name):
    return ok(sbx("top", name, "-o", "pid")).split()[1:]


def test_formats_all_and_errors(busybox_rootfs):
    _run_d("up1", "/bin/busybox", "sleep", "1000")
    ok(sbx("create", "--name", "idle", "--rootfs", busybox_rootfs, "true"))
    # -a shows a container that does not run, with zeros, as Docker's
    rows = [json.loads(x) for x in ok(sbx("stats", "-a", "--no-stream", "--no-trunc", "--format", "json")).splitlines()]
    by = {r["Name"]: r for r in rows}
    assert set(by) == {"up1", "idle"}
    assert by["idle"]["MemUsage"] == "0B / 0B" and by["idle"]["PIDs"] == "0" and by["idle"]["Source"] == "none"
    assert by["idle"]["CPUPerc"] == "0.00%" and len(by["idle"]["ID"]) == 64
    out = ok(sbx("stats", "--no-stream", "--format", "table {{.Name}}\t{{.PIDs}}\t{{.Source}}"))
    assert [_cells(x) for x in out.splitlines()] == [["NAME", "PIDS", "SOURCE"], ["up1", "1", "proc"]]
    assert ok(sbx("container", "stats", "--no-stream", "--format", "{{.Name}}: {{.PIDs}}", "up1")) == "up1: 1\n"
    assert_sbx_error(sbx("stats", "--no-stream", "nosuch"), 1, "No such container: nosuch")
    assert_sbx_error(sbx("stats", "--no-stream", "--format", "{{.Nope}}"), 125, "no field 'Nope'")


def test_stream_refreshes_until_ctrl_c(busybox_rootfs):
    _run_d("ticker", "/bin/busybox", "sleep", "1000")
    p = sbxtest.sbx_popen("stats", "ticker", text=False)
    out = b""
    deadline = time.monotonic() + 30
    while out.count(b"\033[2J") < 2 and time.monotonic() < deadline:   # two screens: it refreshes
        if select.select([p.stdout], [], [], 1)[0]:
            out += os.read(p.stdout.fileno(), 65536)
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=30)
    assert out.count(b"\033[2J\033[H") >= 2, out
    frames = (out + rest).split(b"\033[2J\033[H")[1:]
    assert all(_cells(f.decode().splitlines()[0]) == COLUMNS and b"ticker" in f for f in frames)
    assert p.returncode == 0 and err.strip() == b"", err


def test_net_io_is_read_in_the_containers_network_namespace():
    """A container with a network of its own: its interface's counters (not lo's, not the host's)."""
    from sandbox import containers
    _run_d("net", "--network", "slirp4netns", "/bin/busybox", "sh", "-c",
           "ping -c 3 -W 1 10.0.2.2; echo up; sleep 1000")
    _ready("net", "up")
    nets = containers.get("net").stats(stream=False, one_shot=True)["networks"]
    assert len(nets) == 1 and "lo" not in nets, nets
    assert next(iter(nets.values()))["tx_packets"] >= 3                 # the three echo requests at least
    row = json.loads(ok(sbx("stats", "--no-stream", "--format", "json", "net")))
    assert row["NetIO"].split(" / ")[1] != "0B"


def test_python_stats_has_dockers_shape(busybox_rootfs):
    from sandbox import containers
    c = containers.run(rootfs="/", command=[PY, "-c", "import time; sum(range(10 ** 7)); print('up', flush=True); "
                                                     "time.sleep(1000)"],
                       name="pystats")
    with c:
        assert sbxtest.wait_for(lambda: b"up" in c.logs())
        d = c.stats(stream=False)
        for key in ("read", "preread", "cpu_stats", "precpu_stats", "memory_stats", "pids_stats", "blkio_stats",
                    "networks", "name", "id"):
            assert key in d, key
        assert d["name"] == "/pystats" and d["id"] == c.id and d["sbx"]["source"] == "proc"
        assert d["preread"] < d["read"]                       # two samples, a second apart
        cpu, pre = d["cpu_stats"], d["precpu_stats"]
        assert cpu["online_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
        assert cpu["system_cpu_usage"] > pre["system_cpu_usage"] > 0
        assert cpu["cpu_usage"]["total_usage"] >= pre["cpu_usage"]["total_usage"] > 0   # its sum() counted
        assert set(cpu["cpu_usage"]) >= {"total_usage", "usage_in_kernelmode", "usage_in_usermode"}
        assert d["memory_stats"]["limit"] == _host_mem_total()
        assert 0 < d["memory_stats"]["usage"] < d["memory_stats"]["limit"]
        assert d["pids_stats"]["current"] == 1
        assert {e["op"] for e in d["blkio_stats"]["io_service_bytes_recursive"]} == {"read", "write"}
        assert d["networks"] == {}                             # only lo
        gen = c.stats(decode=True)
        a, b = next(gen), next(gen)
        gen.close()
        assert b["precpu_stats"] == a["cpu_stats"] and b["preread"] == a["read"]
        raw = c.stats(stream=True)
        assert json.loads(next(raw))["id"] == c.id             # docker-py: JSON bytes without decode
        raw.close()
        one = c.stats(stream=False, one_shot=True)
        assert one["preread"] == "0001-01-01T00:00:00Z" and one["pids_stats"]["current"] == 1
        c.kill()
        c.wait()
        z = c.stats(stream=False)
        assert z["read"] == "0001-01-01T00:00:00Z" and z["sbx"]["source"] == "none" and z["memory_stats"] == {}
        assert list(c.stats(decode=True)) == [z]                # a stream ends with the container


def test_stats_figures_follow_dockers_formulas():
    """The arithmetic of docker/cli's stats_helpers.go on a fixed document."""
    from sandbox.containers import stats
    doc = {"cpu_stats": {"cpu_usage": {"total_usage": 3 * 10 ** 9}, "system_cpu_usage": 20 * 10 ** 9,
                         "online_cpus": 4},
           "precpu_stats": {"cpu_usage": {"total_usage": 2 * 10 ** 9}, "system_cpu_usage": 10 * 10 ** 9},
           "memory_stats": {"usage": 300 * MIB, "limit": 1024 * MIB, "stats": {"inactive_file": 44 * MIB}},
           "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 20}, "eth1": {"rx_bytes": 500, "tx_bytes": 0}},
           "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 7}, {"op": "Write", "value": 9},
                                                          {"op": "read", "value": 3}]},
           "pids_stats": {"current": 5}}
    f = stats.figures(doc)
    assert f["cpu_percent"] == pytest.approx(40.0)            # 1 s of 10 s, 4 CPUs
    assert f["memory"] == 256 * MIB and f["memory_percent"] == pytest.approx(25.0)
    assert (f["net_rx"], f["net_tx"], f["block_read"], f["block_write"], f["pids"]) == (2000, 20, 10, 9, 5)
    assert [stats.bytes_size(n) for n in (0, 1023, 1024, 256 * MIB, 1536 * MIB)] == [
        "0B", "1023B", "1KiB", "256MiB", "1.5GiB"]

