"""`docker container inspect`-shaped documents for kept containers (runtime/containers.py).

The record holds the runtime spec the container was started from; the document says in Docker's
words what it runs, how it is confined (capabilities, seccomp, no-new-privileges, read-only root)
and what it mounts."""
import datetime

from . import spec as _spec


def _iso(t):
    if not t:
        return "0001-01-01T00:00:00Z"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def seccomp_opt(x):
    """The seccomp entry of HostConfig.SecurityOpt, as Docker shows it."""
    src = x.get("seccomp")
    if src is None:  # records from before seccomp: their launches ran without a filter
        return "seccomp=unconfined"
    return f"seccomp={src}"


def container_doc(c):
    s = c.spec
    x = s["sbx"]
    proc = s["process"]
    st = c.doc.get("State", {})
    running = c.running()
    caps = set(proc["capabilities"]["bounding"])
    defaults = set(_spec.DEFAULT_CAPS)
    binds, tmpfs, mounts = [], {}, []
    for m in s["mounts"]:
        src = m["source"]
        if m["type"] == "bind" and not src.startswith(("sbx-file:", "/dev/")) and m["destination"] not in (
                "/proc", "/sys"):
            rw = "ro" not in m["options"]
            binds.append(f"{src}:{m['destination']}" + ("" if rw else ":ro"))
            mounts.append({"Type": "bind", "Source": src, "Destination": m["destination"], "Mode": "" if rw else "ro",
                           "RW": rw, "Propagation": "rprivate"})
        elif m["type"] == "tmpfs" and m["destination"] not in ("/dev", "/dev/shm"):
            opts = [o for o in m["options"] if not o.startswith("sbx-")]
            tmpfs[m["destination"]] = ",".join(opts)
    no_new_privs = proc.get("noNewPrivileges", False)
    security = [seccomp_opt(x)] + (["no-new-privileges"] if no_new_privs else [])
    ns = {n["type"] for n in s["linux"]["namespaces"]}
    return {
        "Id": c.id,
        "Created": _iso(c.doc.get("Created")),
        "Path": proc["args"][0] if proc["args"] else "",
        "Args": proc["args"][1:],
        "State": {
            "Status": "running" if running else ("exited" if st.get("StartedAt") else "created"),
            "Running": running,
            "Paused": False,
            "Restarting": False,
            "Dead": False,
            "Pid": st.get("Pid", 0) if running else 0,
            "ExitCode": st.get("ExitCode", 0) if not running else 0,
            "StartedAt": _iso(st.get("StartedAt")),
            "FinishedAt": _iso(st.get("FinishedAt")) if not running else _iso(None),
        },
        "Image": (x.get("image") or {}).get("id") or "",
        "Name": "/" + c.name,
        "Driver": "overlay",
        "AppArmorProfile": "",
        "HostConfig": {
            "Binds": binds or None,
            "NetworkMode": "none" if "network" in ns else "host",
            "Privileged": False,
            "ReadonlyRootfs": bool(s["root"]["readonly"]),
            "CapAdd": sorted("CAP_" + n for n in caps - defaults) or None,
            "CapDrop": sorted("CAP_" + n for n in defaults - caps) or None,
            "SecurityOpt": security,
            "Tmpfs": tmpfs or None,
            "Init": bool(x.get("init")),
            "UsernsMode": "",
            "MaskedPaths": s["linux"]["maskedPaths"],
            "ReadonlyPaths": s["linux"]["readonlyPaths"],
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": s.get("hostname", ""),
            "User": f"{proc['user']['uid']}:{proc['user']['gid']}",
            "Env": proc["env"],
            "Cmd": c.doc.get("Command") or proc["args"],
            "Image": c.doc.get("Image", ""),
            "WorkingDir": proc["cwd"],
            "StopSignal": x.get("stop_signal") or "SIGTERM",
        },
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": c.upper,
                                                    "LowerDir": ":".join(x.get("lowers") or [])}},
    }

