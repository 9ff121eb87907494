"""POST /containers/create's body (Config, HostConfig, NetworkingConfig) -> RunOptions, every
value checked as the CLI's parser checks it.  What sbx cannot do is refused by name (400, or
501 where the missing piece is a part of sbx still to come), never dropped: a client that asked
for an isolation or a limit gets it or an error."""
from ..containers import client as _client
from ..containers import volumes as _volumes
from ..errors import UsageError
from ..runtime import options as _options
from .http import ApiError

# Fields whose zero value (what clients send when nothing is asked) is all sbx accepts.
_ZERO_ONLY = {
    "Privileged": "sbx has no privileged mode: add the capabilities the command needs (CapAdd)",
    "Devices": "sbx passes no host devices into a container",
    "DeviceRequests": "sbx passes no host devices into a container",
    "DeviceCgroupRules": "sbx passes no host devices into a container",
    "PidMode": "sbx always gives a container its own pid namespace",
    "IpcMode": "sbx always gives a container its own ipc namespace",
    "UTSMode": "sbx always gives a container its own uts namespace",
    "CgroupParent": "sbx places limited containers in its own delegated cgroup",
    "Sysctls": "sbx sets no sysctls",
    "VolumesFrom": "volumes_from is not supported: name the volumes (Binds, Mounts)",
    "VolumeDriver": "only the local volume driver exists",
    "StorageOpt": "storage options are not supported",
    "OomScoreAdj": "oom_score_adj is not supported",
    "ShmSize": "the size of /dev/shm is fixed (64 MiB tmpfs)",
    "CpuCount": "cpu_count is a Windows limit", "CpuPercent": "cpu_percent is a Windows limit",
    "IOMaximumIOps": "a Windows limit", "IOMaximumBandwidth": "a Windows limit",
    "BlkioWeightDevice": "per-device block IO limits are not supported",
    "CpuRealtimePeriod": "realtime CPU limits are not supported",
    "CpuRealtimeRuntime": "realtime CPU limits are not supported",
    "KernelMemory": "kernel memory limits do not exist in cgroup v2",
    "KernelMemoryTCP": "kernel memory limits do not exist in cgroup v2",
    "MemorySwappiness": None,  # -1 / null: the default
}
_CONFIG_ZERO_ONLY = {
    "Domainname": "sbx sets no domain name",
    "MacAddress": "give the MAC address in NetworkingConfig.EndpointsConfig (a user-defined network's endpoint)",
    "Healthcheck": "sbx runs no health checks",
    "OnBuild": "ONBUILD applies to builds, not containers",
}
_ZERO = (None, False, 0, "", [], {}, "default", "private", "none")


def _bad(msg):
    return ApiError(400, msg)


def _words(v, what):
    try:
        return _client._words(v, what)
    except UsageError as e:
        raise _bad(str(e)) from None


def _binds(binds):
    """HostConfig.Binds ["src:dst[:opts]"] -> sbx volume specs; a src without '/' is a named volume."""
    out = []
    for b in binds or ():
        if not isinstance(b, str):
            raise _bad(f"invalid bind {b!r}: give SOURCE:DESTINATION[:OPTIONS]")
        parts = b.split(":")
        if len(parts) not in (2, 3):
            raise _bad(f"invalid volume specification: {b!r}")
        src, dst = parts[0], parts[1]
        ro = False
        for o in (parts[2].split(",") if len(parts) == 3 and parts[2] else ()):
            if o == "ro":
                ro = True
            elif o in ("rw", "z", "Z", "rprivate", "private", "nocopy"):
                continue  # Docker's defaults here: no SELinux relabelling exists to do, no propagation asked
            else:
                raise _bad(f"invalid mode {o!r} in bind {b!r}: sbx supports ro and rw")
        out.append(f"{src}:{dst}:{'ro' if ro else 'rw'}")
    return out


def _mounts(mounts):
    """HostConfig.Mounts -> (volume specs, tmpfs specs)."""
    vols, tmpfs = [], []
    for m in mounts or ():
        if not isinstance(m, dict):
            raise _bad(f"invalid mount {m!r}")
        kind, src, dst = m.get("Type") or "", m.get("Source") or "", m.get("Target") or ""
        if not dst:
            raise _bad(f"invalid mount {m!r}: Target is required")
        ro = bool(m.get("ReadOnly"))
        if kind == "bind":
            if not src.startswith("/"):
                raise _bad(f"invalid mount config for type \"bind\": invalid mount path: {src!r} mount path must be absolute")
            vols.append(f"{src}:{dst}:{'ro' if ro else 'rw'}")
        elif kind == "volume":
            if (m.get("VolumeOptions") or {}).get("DriverConfig"):
                raise _bad("volume driver options are not supported: only the local driver exists")
            name = src or _volumes.create(None, anonymous=True)["Name"]
            vols.append(f"{name}:{dst}:{'ro' if ro else 'rw'}")
        elif kind == "tmpfs":
            t = m.get("TmpfsOptions") or {}
            opts = []
            if t.get("SizeBytes"):
                opts.append(f"size={int(t['SizeBytes'])}")
            if t.get("Mode"):
                opts.append(f"mode={int(t['Mode']):o}")
            if ro:
                opts.append("ro")
            tmpfs.append(f"{dst}:{','.join(opts)}" if opts else dst)
        else:
            raise _bad(f"mount type {kind!r} is not supported: use bind, volume or tmpfs")
    return vols, tmpfs


def _network(host, netcfg, name):
    """NetworkMode (and NetworkingConfig) -> RunOptions.network, resolved as the CLI resolves
    --network (sandbox.network.modes): Docker's default (`default`, `bridge`) is sbx's private
    network for an image, `none` where no helper can give one (said in the create's Warnings);
    a user-defined network takes its endpoint's Aliases, IPv4Address and MacAddress.  More
    user-defined networks in EndpointsConfig are joined at every start too (the bridge hook's
    `connected`, as `sbx network connect` keeps them)."""
    mode = host.get("NetworkMode") or "default"
    endpoints = dict((netcfg or {}).get("EndpointsConfig") or {})
    if mode in ("default", "bridge"):
        for net in list(endpoints):
            if net not in ("default", "bridge"):  # the docker CLI's --network a --network b: a first
                mode = net
                break
    ep = endpoints.pop(mode, None) or endpoints.pop("default", None) or endpoints.pop("bridge", None) or {}
    own = _endpoint(ep, first=True)
    if mode in ("none", "host"):
        _only_user_defined(own, mode, endpoints)
        return mode, []
    from ..network import modes
    warnings = []
    m = modes.resolve(mode, default=mode in ("default", "bridge"), warn=warnings.append)
    if m.kind != "network":
        _only_user_defined(own, mode, endpoints)
        return (m.kind if m.kind in ("none", "host") else m), warnings
    from ..network import bridge, netstore
    bridge.check_options(own)
    connected = []
    for net, more in endpoints.items():
        try:
            rec = netstore.get(net)
        except netstore.NoSuchNetwork:
            raise ApiError(404, f"network {net} not found") from None
        kept = _endpoint(more or {})
        bridge.check_options(kept)
        if rec["Name"] != m.target and all(c["network"] != rec["Name"] for c in connected):
            connected.append({"network": rec["Name"], **kept})
    opts = {**own, "name": name}
    if connected:
        opts["connected"] = connected
    return modes.Mode("network", opts, target=m.target), warnings


def _endpoint_links(netcfg, network):
    """The Links of the endpoint of the container's first network (the docker CLI puts --link
    there as well as in HostConfig.Links); other endpoints' links are refused in `_network`."""
    eps = (netcfg or {}).get("EndpointsConfig") or {}
    ep = eps.get(getattr(network, "target", None) or "") or {}
    return list(ep.get("Links") or ())


def _endpoint(ep, first=False):
    if ep.get("Links") and not first:
        raise _bad("links belong to the container's first network: give them in HostConfig.Links")
    return {"aliases": list(ep.get("Aliases") or ()), "ip": (ep.get("IPAMConfig") or {}).get("IPv4Address") or None,
            "mac": ep.get("MacAddress") or None}


def _only_user_defined(own, mode, others):
    if own["aliases"] or own["ip"] or own["mac"]:
        raise _bad(f"network-scoped aliases, addresses and MAC addresses need a user-defined network, not {mode!r}")
    if others:
        raise _bad(f"network {sorted(others)[0]!r} in NetworkingConfig: a container on {mode!r} cannot join "
                   f"user-defined networks (create it on one of them)")


def _links(links, network):
    """HostConfig.Links ["NAME[:ALIAS]"] (and the first endpoint's Links, which the docker CLI
    sends too) on a user-defined network: ALIAS becomes a name of container NAME for this
    container only, answered by the network's name server with NAME's address at each query
    (Docker's links on user-defined networks; NAME must exist, it need not run).  The network
    Mode with its "links"; refused elsewhere."""
    if not links:
        return network
    from ..containers.store import ContainerStore
    from ..errors import SandboxError
    from ..network import modes
    if getattr(network, "kind", None) != "network":
        raise _bad("links need a user-defined network: create the container on the network of the containers "
                   "it links to (they reach each other by name there)")
    store, out = ContainerStore(), []
    for link in dict.fromkeys(links):
        target, _, alias = str(link).lstrip("/").partition(":")
        alias = (alias or target).lstrip("/").rpartition("/")[2]
        try:
            c = store.get(target)
        except SandboxError:
            raise _bad(f"could not get container for {target}") from None
        out.append({"container": c.id, "name": c.name, "alias": alias})
    return modes.Mode("network", {**(network.options or {}), "links": out}, target=network.target)


def _ports(host, cfg):
    """PortBindings ({"80/tcp": [{"HostIp": "", "HostPort": ""}]}: "" is a random host port) and
    ExposedPorts -> RunOptions.ports / expose (sandbox.network.ports, checked as -p is)."""
    from ..network import ports as _p
    out = []
    for key, binds in (host.get("PortBindings") or {}).items():
        body, _, proto = str(key).partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp", "sctp") or not (body.isdigit() and 1 <= int(body) <= 65535):
            raise _bad(f"invalid port {key!r} in PortBindings")
        for b in binds or [{}]:
            hp = str((b or {}).get("HostPort") or "0")
            lo = hp.split("-")[0]
            if not lo.isdigit() or not 0 <= int(lo) <= 65535:
                raise _bad(f"invalid host port {hp!r} for {key}")
            out.append({"proto": proto, "host_ip": (b or {}).get("HostIp") or "", "host_port": int(lo),
                        "container_port": int(body)})
    expose = []
    for key in (cfg.get("ExposedPorts") or {}):
        expose.extend(_p.parse_expose(str(key)))
    return tuple(_p.check(out)) if out else (), tuple(expose)


def _resources(host):
    from ..cgroups import v2
    pids = host.get("PidsLimit")
    r = _options.resources(
        memory=host.get("Memory") or None, memory_swap=host.get("MemorySwap") or None,
        memory_reservation=host.get("MemoryReservation") or None, cpus=host.get("NanoCpus") or None,
        cpu_shares=host.get("CpuShares") or None, cpu_period=host.get("CpuPeriod") or None,
        cpu_quota=host.get("CpuQuota") or None, cpuset_cpus=host.get("CpusetCpus") or None,
        cpuset_mems=host.get("CpusetMems") or None, pids_limit=pids if pids and pids > 0 else None,
        blkio_weight=host.get("BlkioWeight") or None, oom_kill_disable=bool(host.get("OomKillDisable")),
        device_read_bps=host.get("BlkioDeviceReadBps") or None, device_write_bps=host.get("BlkioDeviceWriteBps") or None,
        device_read_iops=host.get("BlkioDeviceReadIOps") or None,
        device_write_iops=host.get("BlkioDeviceWriteIOps") or None)
    if r:
        v2.require(r)
    return r


def _refuse_unsupported(host, cfg):
    for k, why in _ZERO_ONLY.items():
        v = host.get(k)
        if k == "MemorySwappiness" and v in (None, -1):
            continue
        if k == "MemorySwappiness":
            raise _bad("MemorySwappiness is a cgroup v1 setting: cgroup v2 has none")
        if v not in _ZERO:
            raise _bad(f"HostConfig.{k} is not supported: {why}")
    for k, why in _CONFIG_ZERO_ONLY.items():
        v = cfg.get(k)
        if k == "Healthcheck" and isinstance(v, dict) and v.get("Test") in (None, [], ["NONE"]):
            continue
        if v not in _ZERO:
            raise _bad(f"Config.{k} is not supported: {why}")
    log = (host.get("LogConfig") or {}).get("Type") or ""
    if log not in ("", "json-file", "local", "k8s-file"):
        raise _bad(f"logging driver {log!r} is not supported: sbx keeps each container's log in its own file")
    runtime = host.get("Runtime") or ""
    if runtime not in ("", "sbx", "runc"):
        raise _bad(f"runtime {runtime!r} is not supported")
    userns = host.get("UsernsMode") or ""
    if userns not in ("", "host", "auto", "single"):
        raise _bad(f"UsernsMode {userns!r} is not supported: use auto or single")
    cgroupns = host.get("CgroupnsMode") or ""
    if cgroupns not in ("", "private"):
        raise _bad(f"CgroupnsMode {cgroupns!r} is not supported: sbx always gives a container its own")


def to_options(body, name=None, platform=None):
    """The create body -> (RunOptions, warnings) (with `image`; pull 'never': an image that is not local is
    Docker's 404 "No such image", after which clients pull and retry)."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    cfg = body
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise _bad("HostConfig must be an object")
    image = cfg.get("Image")
    if not image or not isinstance(image, str):
        raise _bad("Config.Image is required")
    _refuse_unsupported(host, cfg)
    argv = _words(cfg.get("Cmd"), "Cmd")
    ep = cfg.get("Entrypoint")
    entrypoint = None
    if ep is not None:
        ep = _words(ep, "Entrypoint")
        if ep:
            entrypoint, argv = ep[0], ep[1:] + (argv or [])
        else:
            entrypoint = ""
    volumes = _binds(host.get("Binds"))
    mvols, mtmpfs = _mounts(host.get("Mounts"))
    volumes += mvols
    tmpfs = list(_client._tmpfs(host.get("Tmpfs"))) + mtmpfs
    taken = {v.split(":")[1] for v in volumes} | {t.split(":")[0] for t in tmpfs}
    for path in (cfg.get("Volumes") or {}):  # anonymous volumes (Config.Volumes not otherwise mounted)
        if path not in taken:
            volumes.append(f"{_volumes.create(None, anonymous=True)['Name']}:{path}:rw")
    try:
        volumes = _volumes.resolve(volumes)
        nnp, seccomp = _client._security(host.get("SecurityOpt"))
        network, warnings = _network(host, body.get("NetworkingConfig"), name)
        ports, expose = _ports(host, cfg)
        network = _links(list(host.get("Links") or ()) + _endpoint_links(body.get("NetworkingConfig"), network),
                         network)
        userns = host.get("UsernsMode") or None
        return _options.RunOptions(
            argv=tuple(argv or ()), entrypoint=entrypoint, env=tuple(_client._env(cfg.get("Env"), "Env")),
            cwd=cfg.get("WorkingDir") or None, user=cfg.get("User") or None, volumes=tuple(volumes),
            tmpfs=tuple(tmpfs), network=network, ports=ports, publish_all=bool(host.get("PublishAllPorts")),
            expose=expose, dns=tuple(host.get("Dns") or ()), dns_search=tuple(host.get("DnsSearch") or ()),
            dns_options=tuple(host.get("DnsOptions") or ()),
            extra_hosts=tuple(host.get("ExtraHosts") or ()),
            hostname=_client._hostname(cfg.get("Hostname") or None), read_only=bool(host.get("ReadonlyRootfs")),
            init=bool(host.get("Init")), userns=None if userns in (None, "host") else userns,
            cap_add=tuple(host.get("CapAdd") or ()), cap_drop=tuple(host.get("CapDrop") or ()),
            no_new_privileges=nnp, ulimits=_client._ulimits(host.get("Ulimits")),
            group_add=tuple(str(g) for g in host.get("GroupAdd") or ()), terminal=bool(cfg.get("Tty")),
            seccomp=seccomp, image=image, pull="never", platform=platform or None, name=name or None,
            labels=_client._labels(cfg.get("Labels")), detach=True, auto_remove=bool(host.get("AutoRemove")),
            interactive=bool(cfg.get("OpenStdin")), restart=_client._restart(host.get("RestartPolicy")),
            stop_signal=_options.stop_signal(cfg.get("StopSignal") or None),
            stop_timeout=_options.stop_timeout(cfg.get("StopTimeout")), resources=_resources(host)), warnings
    except UsageError as e:
        raise _bad(f"{e} ({e.hint})" if e.hint else str(e)) from None
