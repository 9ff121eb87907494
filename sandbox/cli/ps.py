"""`sbx ps` (also `sbx container ls|list|ps`): Docker's container listing.

Which containers: running ones; all with -a, a status filter, -n N / -l (the N newest, any
status) or before=/since=.  Filters are Docker's (daemon/list.go): values of one key OR
(label ANDs, as Docker's MatchKVList), different keys AND; name= and id= match the whole
text or a regular expression anywhere in it.  Columns, status strings and --format fields
are Docker's; PORTS shows a running container's published ports."""
import time
from typing import List, Optional

import typer

PS_FIELDS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
             "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
             "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
             "LocalVolumes": "LOCAL VOLUMES"}
DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def _store():
    from ..containers.store import ContainerStore
    return ContainerStore()


def _ellipsis(s, n):
    """Docker's stringutils.Ellipsis: at most n characters, the last one '…' when cut."""
    return s if len(s) <= n else s[:n - 1] + "…"


def _quote(s):
    """Go's strconv.Quote for the COMMAND column."""
    import json
    return json.dumps(s, ensure_ascii=False)


def _ports(doc, status):
    """The PORTS column: published ports of a running container (Docker's text)."""
    net = doc.get("NetworkSettings")
    if not net or status not in ("running", "paused"):
        return ""
    from ..network.ports import summary
    return summary(net.get("Ports"))


def rows(records, *, no_trunc=False, sizes=None, now=None):
    """Docker's fields of each record (the --format context)."""
    from ..containers.state import ago, parse_time
    now = now or time.time()
    out = []
    for i, rec in enumerate(records):
        doc = rec.doc
        cmd = " ".join([doc.get("Path") or ""] + list(doc.get("Args") or [])).strip()
        created = parse_time(doc.get("Created")) or now
        labels = (doc.get("Config") or {}).get("Labels") or {}
        binds = (doc.get("HostConfig") or {}).get("Binds") or []
        mounts = [b.split(":", 1)[0] for b in binds]
        status = "Removal In Progress" if rec.status == "removing" else rec.status_text(now)
        row = {"ID": rec.id if no_trunc else rec.id[:12], "Image": doc.get("Image") or "",
               "Command": _quote(cmd if no_trunc else _ellipsis(cmd, 20)),
               "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(created)),
               "RunningFor": f"{ago(now - created)} ago", "Ports": _ports(doc, rec.status), "State": rec.status, "Status": status,
               "Names": rec.name, "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
               "Mounts": ",".join(m if no_trunc else _ellipsis(m, 15) for m in mounts), "Networks": "",
               "LocalVolumes": "0"}
        if sizes is not None:
            from ..progress import human_size
            rw, virtual = sizes[i]
            row["Size"] = f"{human_size(rw)} (virtual {human_size(virtual)})" if virtual > 0 else human_size(rw)
        out.append(row)
    return out


def writable_sizes(records):
    """(SizeRw, SizeRootFs) of each record: its writable layer's bytes, and those plus its image's."""
    from ..containers import files
    from ..image.errors import ImageError
    from ..image.store import Store
    places = []
    for rec in records:
        x = (rec.doc.get("Spec") or {}).get("sbx") or {}
        places.append(files.Place(rec.name, rec.upper, [], x.get("userns") or "single"))
    rws = files.sizes(places)
    store = Store()
    out = []
    for rec, rw in zip(records, rws):
        base = 0
        if rec.doc.get("ImageID"):
            try:
                base = store.get(rec.doc["ImageID"]).size
            except ImageError:
                base = 0
        out.append((rw, rw + base if base else 0))  # no image (--rootfs): no virtual size
    return out


def ps(all_: bool = typer.Option(False, "-a", "--all", help="Show all containers (default: running ones)."),
       filter_: List[str] = typer.Option([], "-f", "--filter",
                                         help="Filter: name=, id=, status=, label=KEY[=VALUE], ancestor=IMAGE, "
                                              "exited=CODE, before=CONTAINER, since=CONTAINER (repeatable)."),
       fmt: Optional[str] = typer.Option(None, "--format",
                                         help="'table' (default), 'json', or a Go template: '{{.Names}}', "
                                              "'table {{.ID}}\\t{{.Status}}', '{{json .}}'."),
       last: int = typer.Option(-1, "-n", "--last", help="Show the N last created containers (any status)."),
       latest: bool = typer.Option(False, "-l", "--latest", help="Show the latest created container (any status)."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate ids and commands."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Only print container ids."),
       size: bool = typer.Option(False, "-s", "--size", help="Show the size of each container's writable layer.")):
    """List containers."""
    from . import format as _format
    from ..containers import filters as _filters
    filters = _filters.check(filter_)
    template = _format.compile(fmt, PS_FIELDS)   # a bad template fails before any work
    store = _store()
    limit = 1 if latest else last
    recs = _filters.select(store.list(), filters, all_=all_, limit=limit, store=store)
    if quiet:
        for rec in recs:
            typer.echo(rec.id if no_trunc else rec.id[:12])
        return
    want_size = size or _format.uses(fmt, "Size")
    shown = rows(recs, no_trunc=no_trunc, sizes=writable_sizes(recs) if want_size and recs else None)
    default = DEFAULT + ("\t{{.Size}}" if size else "")
    for line in (template or _format.Template(default, PS_FIELDS)).render(shown):
        typer.echo(line)


def group(app, name, help):
    """The sub-app `sbx NAME` (made once, shared by whoever registers verbs in it)."""
    for g in app.registered_groups:
        if g.name == name:
            return g.typer_instance
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def register(app):
    app.command("ps")(ps)
    c = group(app, "container", "Manage containers.")
    for alias in ("ls", "list", "ps"):
        c.command(alias)(ps)
