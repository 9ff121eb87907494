"""`docker update`: change a container's limits and restart policy, running or not.

The new limits are merged into the container's (a flag not given keeps its value, as Docker's
update), the merged set checked as `run` checks it (options.resources: Docker's units and
messages) and refused unless this machine enforces every one (cgroups.v2.require: the same
refusal, exit 125, as `run -m ...`).  A running container gets them in its cgroup leaf at once;
the record (Spec's linux.resources and "sbx" annotation, which the next launch reads, and
HostConfig's Docker fields) keeps them for its next start.  A running container that has no
leaf (it was started without limits) cannot be limited until it starts again: refused, saying
so.  The restart policy is the record's alone (the monitor reads it at each exit)."""
from ..runtime import options as _options
from . import state as _state

#: a Resources field -> options.resources()'s keyword (Docker's flag) for it
ARG_OF = {"mem_limit": "memory", "memswap_limit": "memory_swap", "mem_reservation": "memory_reservation",
          "nano_cpus": "cpus", "cpu_shares": "cpu_shares", "cpu_period": "cpu_period", "cpu_quota": "cpu_quota",
          "cpuset_cpus": "cpuset_cpus", "cpuset_mems": "cpuset_mems", "pids_limit": "pids_limit",
          "blkio_weight": "blkio_weight", "oom_kill_disable": "oom_kill_disable"}

#: HostConfig's Docker names of the limits (what `inspect` shows)
HOST_CONFIG = {"mem_limit": "Memory", "memswap_limit": "MemorySwap", "mem_reservation": "MemoryReservation",
               "nano_cpus": "NanoCpus", "cpu_shares": "CpuShares", "cpu_period": "CpuPeriod", "cpu_quota": "CpuQuota",
               "cpuset_cpus": "CpusetCpus", "cpuset_mems": "CpusetMems", "pids_limit": "PidsLimit",
               "blkio_weight": "BlkioWeight", "oom_kill_disable": "OomKillDisable",
               "device_read_bps": "BlkioDeviceReadBps", "device_write_bps": "BlkioDeviceWriteBps",
               "device_read_iops": "BlkioDeviceReadIOps", "device_write_iops": "BlkioDeviceWriteIOps"}


def resources_of(spec):
    """The Resources a container's runtime spec carries (its "sbx" annotation)."""
    return _options.Resources(**((spec.get("sbx") or {}).get("resources") or {}))


def args_of(resources):
    """Resources -> options.resources() keywords (numbers: Docker's units already; a field
    without an entry in ARG_OF has the keyword's name)."""
    return {ARG_OF.get(k, k): v for k, v in resources.asdict().items() if v not in (None, False)}


class Change:
    """What an update asks: `given`, options.resources() keywords (Docker's flags, as typed or
    numbers), and a RestartPolicy or None."""

    def __init__(self, given, restart):
        self.given, self.restart = dict(given), restart

    @classmethod
    def parse(cls, given, restart=None):
        """Check each value alone (units, ranges) before any container is read; `restart`:
        Docker's text (on-failure:3) or a RestartPolicy."""
        kept = {}
        for key, value in given.items():
            if key == "memory_swap":  # alone it needs -m; the container's own may do (see merged)
                if str(value).strip() == "-1" or _options.ram_in_bytes(value, "--memory-swap"):
                    kept[key] = value
            elif _options.resources(**{key: value}):
                kept[key] = value
            elif key == "pids_limit":  # Docker's update: 0 is unlimited
                kept[key] = -1
            # else 0: not set, the container's value stays (Docker's update)
        if restart is not None and not isinstance(restart, _options.RestartPolicy):
            restart = _options.RestartPolicy.parse(restart)
        return cls(kept, restart)

    def merged(self, current):
        """The container's Resources `current` with the given values over it, checked as a
        whole (memory vs swap, --cpus vs --cpu-period...)."""
        return _options.resources(**{**args_of(current), **self.given})


def host_config_fields(resources):
    """HostConfig's limit fields for `resources` (0 / "" / false where not set, as Docker's)."""
    out = {}
    for field, key in HOST_CONFIG.items():
        v = getattr(resources, field, None)
        if field.startswith("device_"):  # ((path, rate), ...) -> Docker's [{"Path", "Rate"}]
            out[key] = [{"Path": p, "Rate": r} for p, r in v or ()]
        else:
            out[key] = v if v is not None else ("" if field.startswith("cpuset") else False
                                                if field == "oom_kill_disable" else 0)
    return out


def update(where, ref, change, machine=None):
    """Apply `change` (a Change) to the container `ref`; returns the updated Record.  Raises
    CgroupError (exit 125) where the limits cannot be enforced, StateError for a container
    being removed, UsageError for values Docker refuses."""
    from . import lifecycle
    store = lifecycle.store(where)
    rec = store.get(ref)
    if change.restart is not None and change.restart.name != "no" and rec.auto_remove:
        raise _state.ContainerError("Restart policy cannot be updated because AutoRemove is enabled for the container",
                                    hint=f"a --rm container is removed when it exits; run it again without --rm")
    merged = None
    if change.given:
        from ..cgroups import v2
        merged = change.merged(resources_of(rec.spec))
        machine = v2.require(merged, machine) or machine

    def apply(doc):
        status = doc["State"]["Status"]
        if status in ("removing", "dead"):
            raise _state.StateError("update", rec.name, status)
        if merged is not None:
            _limit_running(rec.name, doc["State"], merged, machine)
            from ..runtime.spec import oci_resources
            spec = doc["Spec"]
            spec["sbx"]["resources"] = {k: v for k, v in merged.asdict().items() if v not in (None, False)}
            spec["linux"]["resources"] = oci_resources(merged)
            doc["HostConfig"].update(host_config_fields(merged))
        if change.restart is not None:
            doc["HostConfig"]["RestartPolicy"] = {"Name": change.restart.name,
                                                  "MaximumRetryCount": change.restart.max_retries}
    return store.update(rec, apply)


def _limit_running(name, st, resources, machine):
    """Write `resources` into the leaf of a running (or paused) container; nothing for one that
    does not run (its next launch reads the record)."""
    pid, start = st.get("Pid"), st.get("PidStart")
    if st["Status"] not in ("running", "paused") or not _state.pid_alive(pid, start):
        return
    from ..cgroups import v2
    leaf = v2.leaf_of(pid, machine)
    if leaf is None:
        raise v2.CgroupError(f"container {name} has no cgroup of its own: it was started without limits, and a "
                             "running container's processes are not moved into one",
                             hint=f"stop it ('sbx stop {name}'), update it, start it again: the limits of a "
                                  "stopped container apply from its next start")
    leaf.set(v2.limit_files(resources), swap_asked=resources.memswap_limit is not None)
