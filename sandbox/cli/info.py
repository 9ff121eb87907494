"""`sbx info [--format json]`: what this machine lets sbx do and why: cgroups (version,
delegated controllers, what limits and pause do here), the overlay driver, id mapping, seccomp,
network helpers, the version and where things are stored.  The first thing to run when a flag
is refused."""
import os
import shutil

import typer

from .. import __version__


def _seccomp():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return {"Available": True, "DefaultProfile": "default (docker-compatible)",
                            "ThisProcessMode": int(line.split()[1])}
    except OSError:
        pass
    return {"Available": False, "DefaultProfile": None}


def gather():
    """The facts, as a dict (what --format json prints)."""
    from .. import config
    from ..cgroups import v2
    from ..containers import lifecycle
    from ..runtime import idmap, overlay
    from ..server import http
    m = v2.probe()
    mode, ur, gr, newuidmap, newgidmap = idmap.detect()
    if m.usable:
        limits = (f"enforced in {m.base}/sbx-<id>: -m/--memory and friends need 'memory', --cpus/--cpu-* 'cpu', "
                  f"--cpuset-* 'cpuset', --pids-limit 'pids', --blkio-weight and --device-* 'io'; delegated here: "
                  f"{' '.join(m.controllers) or 'none'}")
        missing = [c for c in ("memory", "cpu", "cpuset", "pids", "io") if c not in m.controllers]
        if missing:
            limits += f" (limits needing {', '.join(missing)} are refused: {v2.HINT_DELEGATE})"
        pause = ("cgroup.freeze in the container's leaf" if m.freeze
                 else "refused: the kernel has no cgroup.freeze (Linux 5.2+)")
        if m.freeze and not os.path.exists(lifecycle.UNIFIED):
            # only containers with limits get a leaf where cgroup2 is not at /sys/fs/cgroup
            pause += f" (containers with limits only: cgroup2 is mounted at {m.mount}, not /sys/fs/cgroup)"
    else:
        limits = f"refused (exit 125): {m.reason}; {m.hint}"
        pause = f"refused (exit 125): the cgroup v2 freezer needs a delegated cgroup: {m.reason}"
    ctx = config.current()
    return {
        "Version": __version__,
        "Cgroups": {"Version": m.version, "Mount": m.mount, "Own": m.path, "Base": m.base,
                    "Controllers": list(m.controllers), "V1Controllers": list(m.v1),
                    "KernelFreezer": m.freeze, "KernelKill": m.kill, "Limits": limits, "Pause": pause,
                    "Ulimits": "--ulimit (rlimits) works everywhere"},
        "Overlay": {"Driver": overlay.driver(), "FuseOverlayfs": overlay.fuse_overlayfs()},
        "IdMapping": {"Mode": mode, "SubUID": list(ur) if ur else None, "SubGID": list(gr) if gr else None,
                      "Newuidmap": newuidmap, "Newgidmap": newgidmap},
        "Seccomp": _seccomp(),
        "Network": {"slirp4netns": shutil.which("slirp4netns"), "pasta": shutil.which("pasta"),
                    "TunDevice": os.access("/dev/net/tun", os.R_OK | os.W_OK)},
        "Storage": {"DataRoot": ctx.data_root, "RuntimeRoot": ctx.runtime_root},
        # podman's place for it: export DOCKER_HOST=unix://$(sbx info -f '{{.Host.RemoteSocket.Path}}')
        "Host": {"RemoteSocket": {"Path": http.default_socket(ctx)}},
    }


def _text(d):
    lines = [f"sbx version: {d['Version']}"]
    for section in ("Cgroups", "Overlay", "IdMapping", "Seccomp", "Network", "Storage"):
        lines.append(f"{section}:")
        for k, v in d[section].items():
            if isinstance(v, list):
                v = " ".join(map(str, v)) if v else "none"
            elif v is None:
                v = "-"
            lines.append(f"  {k}: {v}")
    lines.append(f"Service:\n  Socket: {d['Host']['RemoteSocket']['Path']} ('sbx system service' listens there)")
    return "\n".join(lines) + "\n"


def info(format: str = typer.Option(None, "--format", "-f",
                                   help="json, or a template such as '{{.Host.RemoteSocket.Path}}'")):
    """Show what this machine lets sbx do: cgroups, limits, pause, overlay, id mapping, seccomp."""
    d = gather()
    if format in (None, ""):
        typer.echo(_text(d), nl=False)
    elif format.strip() in ("json", "{{json .}}"):
        import json
        typer.echo(json.dumps(d, indent=None, sort_keys=False))
    else:
        from . import format as _format
        from ..errors import UsageError
        template = _format.Template(format, None)
        for part in template.parts:  # Docker's Info is a struct: a field it lacks is an error
            if isinstance(part, tuple) and part[1] and _missing(d, part[1]):
                raise UsageError(f"--format {format!r}: no field .{part[1]}",
                                 hint="'sbx info --format json' shows them")
        for line in template.render([d]):
            typer.echo(line)


def _missing(doc, path):
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return True
        doc = doc[key]
    return False


def register(app):
    app.command("info")(info)
