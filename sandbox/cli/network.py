"""`sbx network create|ls|inspect|rm|prune|connect|disconnect`: user-defined networks (Docker's
bridge driver; sandbox/network/bridge.py, holder.py, netstore.py do the work).  Exit codes are
Docker's: 1 for a network or container that is missing, taken or in use, 125 for bad input."""
import json
from typing import List, Optional

import typer

LS_FIELDS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
             "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT", "Subnet": "SUBNET"}
LS_FILTERS = ("name", "id", "label", "label!", "driver", "scope", "type", "dangling")


def _store():
    from ..network import netstore
    return netstore


def _bridge():
    from ..network import bridge
    return bridge


def _each(refs, fn):
    """Each network's error on its line, the others still done; exit 1 if any failed."""
    from . import report
    from ..errors import SandboxError
    failed = 0
    for ref in refs:
        try:
            out = fn(ref)
        except SandboxError as e:
            report(e)
            failed = e.exit_code if len(refs) == 1 else 1
            continue
        if out is not None:
            typer.echo(out)
    if failed:
        raise typer.Exit(failed)


def create(name: str = typer.Argument(..., help="Network name."),
           subnet: Optional[str] = typer.Option(None, "--subnet", help="Subnet in CIDR form, e.g. 10.89.5.0/24."),
           gateway: Optional[str] = typer.Option(None, "--gateway", help="Gateway address (default: the subnet's first)."),
           internal: bool = typer.Option(False, "--internal", help="No access to the outside."),
           label: List[str] = typer.Option([], "--label", help="Set metadata (KEY=VALUE)."),
           driver: str = typer.Option("bridge", "-d", "--driver", help="Driver (bridge)."),
           opt: List[str] = typer.Option([], "-o", "--opt", help="Driver options (none are supported).")):
    """Create a network; prints its id."""
    from . import labels as _labels
    from ..errors import UsageError
    if opt:
        raise UsageError(f"driver option {opt[0]!r} is not supported", hint="the bridge driver takes no options here")
    rec = _store().create(name, subnet=subnet, gateway=gateway, internal=internal, labels=_labels.parse(label),
                          driver=driver)
    typer.echo(rec["Id"])


def _members():
    return _bridge().members()


def _filters(values):
    from ..errors import UsageError
    out = {}
    for v in values:
        k, eq, val = v.partition("=")
        if not eq or k not in LS_FILTERS:
            raise UsageError(f"invalid filter {v!r}", hint="filters: " + ", ".join(f + "=" for f in LS_FILTERS))
        out.setdefault(k, []).append(val)
    return out


def _labels_match(wanted, labels):
    from ..containers.filters import match_labels
    return match_labels(wanted, labels)


def _select(recs, f, members):
    out = []
    for r in recs:
        if f.get("name") and not any(n in r["Name"] for n in f["name"]):
            continue
        if f.get("id") and not any(r["Id"].startswith(i) for i in f["id"]):
            continue
        if f.get("label") and not _labels_match(f["label"], r["Labels"]):
            continue
        if any(_labels_match([w], r["Labels"]) for w in f.get("label!", [])):
            continue
        if f.get("driver") and r["Driver"] not in f["driver"]:
            continue
        if f.get("scope") and r["Scope"] not in f["scope"]:
            continue
        if f.get("type") and "custom" not in f["type"]:
            continue
        if f.get("dangling"):
            want = f["dangling"][-1] in ("true", "1")
            if want == bool(members.get(r["Id"])):
                continue
        out.append(r)
    return out


def ls(filter_: List[str] = typer.Option([], "-f", "--filter", help="Filter (name=, id=, label=, driver=, dangling=...)."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Only display network ids."),
       fmt: Optional[str] = typer.Option(None, "--format", help="Go-template subset, 'table ...' or json."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Full network ids.")):
    """List user-defined networks."""
    from . import format as _format
    f = _filters(filter_)
    template = _format.compile(fmt, LS_FIELDS)
    members = _members() if f.get("dangling") else {}
    recs = _select(_store().list_(), f, members)
    if quiet:
        for r in recs:
            typer.echo(r["Id"] if no_trunc else r["Id"][:12])
        return
    rows = [{"ID": r["Id"] if no_trunc else r["Id"][:12], "Name": r["Name"], "Driver": r["Driver"],
             "Scope": r["Scope"], "IPv6": "false", "Internal": str(r["Internal"]).lower(),
             "Labels": ",".join(f"{k}={v}" for k, v in r["Labels"].items()), "CreatedAt": r["Created"],
             "Subnet": r["IPAM"]["Config"][0]["Subnet"]} for r in recs]
    if template is None:
        template = _format.Template("table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", LS_FIELDS)
    for line in template.render(rows):
        typer.echo(line)


def _with_members(rec, members):
    doc = dict(rec)
    doc["Containers"] = {cid: {k: v for k, v in m.items() if k in ("Name", "MacAddress", "IPv4Address", "IPv6Address")}
                         | {"EndpointID": ""} for cid, m in members.get(rec["Id"], {}).items()}
    return doc


def inspect(networks: List[str] = typer.Argument(..., help="Networks (names or ids)."),
            fmt: Optional[str] = typer.Option(None, "-f", "--format", help="Template, e.g. '{{.IPAM.Config}}'.")):
    """Show networks' details as JSON (Docker's shape, with the connected containers)."""
    from . import format as _format, report
    from ..errors import SandboxError
    template = _format.Template(fmt, None) if fmt else None
    members = _members()
    docs, failed = [], 0
    for ref in networks:
        try:
            docs.append(_with_members(_store().get(ref), members))
        except SandboxError as e:
            report(e)
            failed = 1
    if template is not None:
        for line in template.render(docs):
            typer.echo(line)
    else:
        typer.echo(json.dumps(docs, indent=4))
    if failed:
        raise typer.Exit(1)


def _remove(rec, members):
    store = _store()
    if members.get(rec["Id"]):
        names = ", ".join(sorted(m["Name"] or cid[:12] for cid, m in members[rec["Id"]].items()))
        raise store.NetworkError(f"error while removing network: network {rec['Name']} id {rec['Id']} has active "
                                 f"endpoints ({names})", hint="stop or disconnect those containers first")
    _bridge().drop(rec)
    store.remove(rec)


def rm(networks: List[str] = typer.Argument(..., help="Networks (names or ids)."),
       force: bool = typer.Option(False, "-f", "--force", help="No error if a network does not exist.")):
    """Remove networks (refused while a running container is connected)."""
    store = _store()
    members = _members()

    def one(ref):
        try:
            rec = store.get(ref)
        except store.NoSuchNetwork:
            if force:
                return None
            raise
        _remove(rec, members)
        return ref
    _each(networks, one)


def prune(filter_: List[str] = typer.Option([], "--filter", help="until=, label=, label!=."),
          force: bool = typer.Option(False, "-f", "--force", help="Do not prompt for confirmation.")):
    """Remove every network no running container is connected to."""
    from ..errors import UsageError
    f = {}
    for v in filter_:
        k, eq, val = v.partition("=")
        if not eq or k not in ("until", "label", "label!"):
            raise UsageError(f"invalid filter {v!r}", hint="prune accepts: until, label, label!")
        f.setdefault(k, []).append(val)
    until = None
    if f.get("until"):
        from ..containers.pruning import parse_until
        until = min(parse_until(v) for v in f["until"])
    from .prompt import confirm
    if not confirm(["WARNING! This will remove all custom networks not used by at least one container."], force):
        raise typer.Exit(1)
    from ..containers.state import parse_time
    members = _members()
    gone = []
    for r in _store().list_():
        if members.get(r["Id"]):
            continue
        if until is not None and parse_time(r["Created"]) >= until:
            continue
        if f.get("label") and not _labels_match(f["label"], r["Labels"]):
            continue
        if any(_labels_match([w], r["Labels"]) for w in f.get("label!", [])):
            continue
        _remove(r, members)
        gone.append(r["Name"])
    if gone:
        typer.echo("Deleted Networks:")
        for n in gone:
            typer.echo(n)


def _container(ref):
    from ..containers.store import ContainerStore
    return ContainerStore().get(ref)


def connect(network: str = typer.Argument(..., help="Network."),
            container: str = typer.Argument(..., help="Container."),
            alias: List[str] = typer.Option([], "--alias", help="Another name of the container on this network."),
            ip: Optional[str] = typer.Option(None, "--ip", help="IPv4 address on this network."),
            mac: Optional[str] = typer.Option(None, "--mac-address", help="MAC address on this network.")):
    """Connect a container to a network: a running one now, a stopped one at its next start (kept across restarts)."""
    from ..containers import netconnect
    netconnect.connect(_container(container), _store().get(network), aliases=alias, ip=ip, mac=mac)


def disconnect(network: str = typer.Argument(..., help="Network."),
               container: str = typer.Argument(..., help="Container."),
               force: bool = typer.Option(False, "-f", "--force", help="No error if it is not connected.")):
    """Disconnect a container from a network (now if it runs, and at its later starts)."""
    from ..containers import netconnect
    netconnect.disconnect(_container(container), _store().get(network), force=force)


def register(app: typer.Typer) -> None:
    net = typer.Typer(help="Manage user-defined networks.", no_args_is_help=True)
    for name, fn in (("create", create), ("ls", ls), ("list", ls), ("inspect", inspect), ("rm", rm),
                     ("remove", rm), ("prune", prune), ("connect", connect), ("disconnect", disconnect)):
        net.command(name)(fn)
    app.add_typer(net, name="network")
