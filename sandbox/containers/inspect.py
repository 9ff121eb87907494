"""`docker container inspect`-shaped documents: the record's Docker fields, its State as the
kernel sees it, Mounts, NetworkSettings and GraphDriver derived from the runtime spec."""
from . import state as _state


def seccomp_opt(x):
    """The seccomp entry of HostConfig.SecurityOpt, as Docker shows it."""
    src = x.get("seccomp")
    if src is None:  # records from before seccomp: their launches ran without a filter
        return "seccomp=unconfined"
    return f"seccomp={src}"


def network_settings(live, mode, net):
    """Docker's NetworkSettings: what the network hook reported at start (`live`, gone once the
    container stopped), else the exposed ports alone; every network a user-defined one joins."""
    ports = live.get("Ports") or {e: None for e in net.get("exposed") or ()}
    one = {"NetworkID": "", "IPAddress": live.get("IPAddress", ""), "IPPrefixLen": live.get("IPPrefixLen", 0),
           "Gateway": live.get("Gateway", ""), "MacAddress": live.get("MacAddress", "")}
    nets = {**(live.get("Networks") or {}), mode: dict(live.get("Networks", {}).get(mode) or one)}
    if net.get("mode") == "network":  # the other user-defined networks it joins at start (connect)
        for k in net.get("connected") or ():
            nets.setdefault(k["network"], {**one, "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": ""})
    return {"Bridge": "", "SandboxID": "", "SandboxKey": live.get("SandboxKey", ""), "Ports": ports,
            "IPAddress": one["IPAddress"], "IPPrefixLen": one["IPPrefixLen"], "Gateway": one["Gateway"],
            "MacAddress": one["MacAddress"], "Networks": nets}


def container_doc(rec):
    s = rec.spec
    x = s["sbx"]
    doc = rec.doc
    st = rec.state
    status = st["Status"]
    running = status in _state.ACTIVE
    mounts = []
    for m in s["mounts"]:
        src = m["source"]
        if m["type"] == "bind" and not src.startswith(("sbx-file:", "/dev/")) and m["destination"] not in (
                "/proc", "/sys"):
            rw = "ro" not in m["options"]
            mounts.append({"Type": "bind", "Source": src, "Destination": m["destination"], "Mode": "" if rw else "ro",
                           "RW": rw, "Propagation": "rprivate"})
        elif m["type"] == "tmpfs" and m["destination"] not in ("/dev", "/dev/shm"):
            mounts.append({"Type": "tmpfs", "Source": "", "Destination": m["destination"], "Mode": "",
                           "RW": "ro" not in m["options"], "Propagation": ""})
    host = dict(doc["HostConfig"])
    host.update(Privileged=False, MaskedPaths=s["linux"]["maskedPaths"], ReadonlyPaths=s["linux"]["readonlyPaths"],
                SecurityOpt=[seccomp_opt(x)] + (["no-new-privileges"] if s["process"].get("noNewPrivileges") else []))
    network = host.get("NetworkMode") or "none"
    upper = rec.upper if x.get("upper") else ""
    return {
        "Id": rec.id,
        "Created": doc["Created"],
        "Path": doc["Path"],
        "Args": doc["Args"],
        "State": {
            "Status": status,
            "Running": running,
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": bool(st.get("OOMKilled")),  # the run's cgroup memory.events oom_kill
            "Dead": status == "dead",
            "Pid": st.get("Pid") or 0 if running else 0,
            "ExitCode": st.get("ExitCode", 0),
            "Error": st.get("Error", ""),
            "StartedAt": st.get("StartedAt") or _state.ZERO_TIME,
            "FinishedAt": st.get("FinishedAt") or _state.ZERO_TIME,
        },
        "Image": doc.get("ImageID") or "",
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": rec.path("container.log"),
        "Name": "/" + rec.name,
        "RestartCount": st.get("RestartCount", 0),
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": host,
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": upper, "LowerDir": ":".join(x.get("lowers") or [])}},
        "Mounts": mounts,
        "Config": dict(doc["Config"], AttachStdin=bool(doc["Config"].get("OpenStdin")),
                       AttachStdout=True, AttachStderr=True, StdinOnce=False),
        # What the network hook reported at start holds while it runs (a dead monitor's record
        # still has it, but its helper died with it).
        "NetworkSettings": network_settings(doc.get("NetworkSettings") or {} if running else {}, network,
                                            x.get("network") or {}),
    }
