"""Docker's container stats: the documents of `GET /containers/ID/stats` (docker-py's
`Container.stats`), and the figures `docker stats` shows, computed as the Docker CLI computes
them (cli/command/container/stats_helpers.go).

Where the figures come from, said in each document (`doc["sbx"]["source"]`):
- "cgroup": the container's own leaf (sandbox.cgroups.v2) when it has one (it was started
  with limits on a machine that enforces them): cpu.stat, memory.current/memory.stat/memory.max,
  pids.current/pids.max, io.stat; what Docker reads on cgroup v2.
- "proc": otherwise, the processes of its pid namespace (containers/top.pids) read in /proc:
  CPU time is utime+stime (+ cutime+cstime: what exited children left to their reaper) of each,
  memory the sum of their RSS (a page shared by two processes counts twice), PIDS their
  threads, block I/O read_bytes/write_bytes of /proc/PID/io where readable; the limit is the
  host's MemTotal (nothing else bounds them).
- "none": the container does not run; every figure is 0, as Docker's.
NET I/O is /proc/PID/net/dev of the container's first process in both cases: every interface
but `lo`; none when it shares the host's network namespace (Docker shows none for --network
host).

CPU %: two samples; (delta of the container's CPU time) / (delta of the host's CPU time, the
first seven fields of /proc/stat's cpu line) x online CPUs x 100.  MEM USAGE: usage minus
inactive_file (Docker's figure for cgroup v2, page cache that can go at once)."""
import os
import time

from . import state as _state
from . import top as _top

INTERVAL = 1.0  # seconds between the two samples of a CPU %, and between streamed documents
NS = 10 ** 9


def _read(path):
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def system_cpu_usage():
    """The host's CPU time in nanoseconds (user nice system idle iowait irq softirq of
    /proc/stat's cpu line: moby's getSystemCPUUsage)."""
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu "):
            return sum(int(v) for v in line.split()[1:8]) * NS // os.sysconf("SC_CLK_TCK")
    return 0


def online_cpus():
    return os.sysconf("SC_NPROCESSORS_ONLN")


def host_memory():
    """MemTotal in bytes: the limit of a container that no cgroup limits (as Docker shows)."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def networks(pid):
    """Docker's `networks` of the network namespace of `pid`: {iface: {rx_bytes, ...}} for every
    interface but lo; {} when it is the host's (or unreadable)."""
    try:
        if os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            return {}
        text = _read(f"/proc/{pid}/net/dev")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        v = rest.split()
        if not sep or name == "lo" or len(v) < 12:
            continue
        v = [int(x) for x in v]
        out[name] = {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                     "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11]}
    return out


def _zero_cpu():
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": 0, "online_cpus": 0,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def _blkio(entries=None, serviced=None):
    return {"io_service_bytes_recursive": entries, "io_serviced_recursive": serviced, "io_queue_recursive": None,
            "io_service_time_recursive": None, "io_wait_time_recursive": None, "io_merged_recursive": None,
            "io_time_recursive": None, "sectors_recursive": None}


def empty(rec):
    """The document of a container that does not run: zeros, Docker's zero times."""
    return {"read": _state.ZERO_TIME, "preread": _state.ZERO_TIME, "pids_stats": {}, "blkio_stats": _blkio(),
            "num_procs": 0, "storage_stats": {}, "cpu_stats": _zero_cpu(), "precpu_stats": _zero_cpu(),
            "memory_stats": {}, "name": "/" + rec.name, "id": rec.id, "sbx": {"source": "none", "cgroup": None}}


# --- one sample ----------------------------------------------------------------------------------

def _from_proc(pid, pid_start):
    """(cpu_stats, memory_stats, pids_stats, blkio_stats) of the processes of the container
    whose first process is `pid`, read in /proc."""
    hz = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    user = kernel = rss = threads = rbytes = wbytes = 0
    for p in _top.pids(pid, pid_start):
        s = _top._stat(p)
        if s is None:
            continue
        # s[0] is the comm (field 2): field N of /proc/PID/stat is s[N - 2]
        user += int(s[12]) + int(s[14])      # utime + cutime
        kernel += int(s[13]) + int(s[15])    # stime + cstime
        threads += int(s[18])
        rss += int(s[22]) * page
        try:
            io = dict(line.split(": ", 1) for line in _read(f"/proc/{p}/io").splitlines() if ": " in line)
            rbytes += int(io.get("read_bytes", 0))
            wbytes += int(io.get("write_bytes", 0))
        except (OSError, ValueError):
            pass  # not readable (another user's, a setuid program): left out
    cpu = _zero_cpu()
    cpu["cpu_usage"] = {"total_usage": (user + kernel) * NS // hz, "usage_in_kernelmode": kernel * NS // hz,
                        "usage_in_usermode": user * NS // hz}
    memory = {"usage": rss, "limit": host_memory(), "stats": {"rss": rss}}
    entries = [{"major": 0, "minor": 0, "op": "read", "value": rbytes},
               {"major": 0, "minor": 0, "op": "write", "value": wbytes}]
    return cpu, memory, {"current": threads, "limit": 0}, _blkio(entries)


def _num(v, default=0):
    return v if isinstance(v, int) else default


def _from_cgroup(cg):
    """The same from the container's cgroup v2 leaf (moby's stats for cgroup v2)."""
    st = cg.stats()
    c = st.get("cpu") or {}
    cpu = _zero_cpu()
    cpu["cpu_usage"] = {"total_usage": _num(c.get("usage_usec")) * 1000,
                        "usage_in_kernelmode": _num(c.get("system_usec")) * 1000,
                        "usage_in_usermode": _num(c.get("user_usec")) * 1000}
    cpu["throttling_data"] = {"periods": _num(c.get("nr_periods")), "throttled_periods": _num(c.get("nr_throttled")),
                              "throttled_time": _num(c.get("throttled_usec")) * 1000}
    limit = st.get("memory_max")
    memory = {"usage": _num(st.get("memory_current")),
              "limit": limit if isinstance(limit, int) else host_memory(),
              "stats": {k: v for k, v in (st.get("memory_stat") or {}).items() if isinstance(v, int)}}
    pids = {"current": _num(st.get("pids_current")), "limit": _num(st.get("pids_max"))}  # max: 0, no limit
    entries, serviced = [], []
    for dev, io in sorted((st.get("io") or {}).items()):
        major, _, minor = dev.partition(":")
        where = {"major": int(major), "minor": int(minor or 0)}
        entries += [dict(where, op="read", value=io.get("rbytes", 0)), dict(where, op="write", value=io.get("wbytes", 0))]
        serviced += [dict(where, op="read", value=io.get("rios", 0)), dict(where, op="write", value=io.get("wios", 0))]
    return cpu, memory, pids, _blkio(entries, serviced)


def leaf(rec):
    """The container's cgroup leaf (a v2.Cgroup), or None: it has none where the machine has no
    delegated cgroup v2 subtree."""
    pid = rec.state.get("Pid")
    if not pid:
        return None
    from ..cgroups import v2
    return v2.leaf_of(pid)


def sample(rec):
    """One document for the container `rec` as it is now (precpu_stats empty); `empty(rec)`
    once it does not run."""
    pid, start = rec.state.get("Pid"), rec.state.get("PidStart")
    if rec.status not in ("running", "paused") or not _state.pid_alive(pid, start):
        return empty(rec)
    cg = leaf(rec)
    read = _state.now()
    if cg is not None:
        cpu, memory, pids, blkio = _from_cgroup(cg)
    else:
        cpu, memory, pids, blkio = _from_proc(pid, start)
    cpu["system_cpu_usage"] = system_cpu_usage()
    cpu["online_cpus"] = online_cpus()
    if not _state.pid_alive(pid, start):  # it ended while read: what was read may be partial
        return empty(rec)
    return {"read": read, "preread": _state.ZERO_TIME, "pids_stats": pids, "blkio_stats": blkio, "num_procs": 0,
            "storage_stats": {}, "cpu_stats": cpu, "precpu_stats": _zero_cpu(), "memory_stats": memory,
            "name": "/" + rec.name, "id": rec.id, "networks": networks(pid),
            "sbx": {"source": "proc" if cg is None else "cgroup", "cgroup": None if cg is None else cg.path}}


def follow(prev, doc):
    """`doc` with `prev`'s CPU figures as its precpu_stats (Docker's stream does this)."""
    if prev is not None and prev.get("read") != _state.ZERO_TIME:
        doc["precpu_stats"] = prev["cpu_stats"]
        doc["preread"] = prev["read"]
    return doc


def stats(where, ref, stream=False, one_shot=False, interval=INTERVAL):
    """docker-py's `stats`: with `stream` a generator of documents every `interval` seconds
    (each with the previous one's CPU figures as precpu_stats) until the container no longer
    runs; else one document, from two samples `interval` apart unless `one_shot`."""
    from . import lifecycle
    store = lifecycle.store(where)
    rec = store.get(ref)
    if not stream:
        first = sample(rec)
        if one_shot or first["read"] == _state.ZERO_TIME:
            return first
        time.sleep(interval)
        return follow(first, sample(store.load(rec.id) or rec))
    return _stream(store, rec, interval)


def _stream(store, rec, interval):
    prev = None
    while True:
        doc = follow(prev, sample(rec))
        yield doc
        if doc["read"] == _state.ZERO_TIME:
            return
        prev = doc
        time.sleep(interval)
        rec = store.load(rec.id)
        if rec is None:
            return


# --- what `docker stats` shows ---------------------------------------------------------------------

def cpu_percent(doc):
    """Docker's calculateCPUPercentUnix."""
    cpu, pre = doc.get("cpu_stats") or {}, doc.get("precpu_stats") or {}
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or ())
    if sys_delta > 0 and cpu_delta > 0:
        return cpu_delta / sys_delta * ncpu * 100.0
    return 0.0


def memory_usage(doc):
    """Docker's calculateMemUsageUnixNoCache: usage minus inactive file pages."""
    mem = doc.get("memory_stats") or {}
    usage = mem.get("usage", 0)
    st = mem.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):  # cgroup v1's name, then v2's
        if key in st and st[key] < usage:
            return usage - st[key]
    return usage


def figures(doc):
    """The numbers of one `docker stats` row."""
    mem = memory_usage(doc)
    limit = (doc.get("memory_stats") or {}).get("limit", 0)
    rx = sum(n.get("rx_bytes", 0) for n in (doc.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (doc.get("networks") or {}).values())
    blk_r = blk_w = 0
    for e in (doc.get("blkio_stats") or {}).get("io_service_bytes_recursive") or ():
        op = (e.get("op") or " ")[0].lower()
        if op == "r":
            blk_r += e.get("value", 0)
        elif op == "w":
            blk_w += e.get("value", 0)
    return {"cpu_percent": cpu_percent(doc), "memory": mem, "memory_limit": limit,
            "memory_percent": mem / limit * 100.0 if limit else 0.0, "net_rx": rx, "net_tx": tx,
            "block_read": blk_r, "block_write": blk_w, "pids": (doc.get("pids_stats") or {}).get("current", 0),
            "source": (doc.get("sbx") or {}).get("source", "none")}


_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def bytes_size(n):
    """go-units BytesSize: binary units, 4 significant digits (MEM USAGE / LIMIT).  NET I/O and
    BLOCK I/O use decimal units: progress.human_size (go-units HumanSize)."""
    n = float(n)
    i = 0
    while n >= 1024.0 and i < len(_BINARY) - 1:
        n /= 1024.0
        i += 1
    return f"{n:.4g}{_BINARY[i]}"
