"""`sbx volume create|ls|inspect|rm|prune`: named volumes (sandbox/containers/volumes.py does the
work; `-v NAME:/path` and `--mount type=volume` use them).  Exit codes are Docker's: 1 for a
volume that is missing or in use, 125 for bad input."""
from typing import List, Optional

import typer

LS_FIELDS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
             "Labels": "LABELS", "CreatedAt": "CREATED AT"}
LS_FILTERS = ("name", "label", "label!", "driver", "dangling")


def _volumes():
    from ..containers import volumes
    return volumes


def create(name: Optional[str] = typer.Argument(None, help="Volume name (a random one if none)."),
           label: List[str] = typer.Option([], "--label", "-l", help="Set metadata (KEY=VALUE)."),
           driver: str = typer.Option("local", "-d", "--driver", help="Driver (local)."),
           opt: List[str] = typer.Option([], "-o", "--opt", help="Driver options (none are supported).")):
    """Create a volume; prints its name (an existing one of that name is kept as it is)."""
    from . import labels as _labels
    opts = dict(o.partition("=")[::2] for o in opt)
    doc = _volumes().create(name, labels=_labels.parse(label), driver=driver, options=opts)
    typer.echo(doc["Name"])


def _select(docs, f):
    from ..containers.filters import match_labels
    vols = _volumes()
    out = []
    for d in docs:
        labels = d.get("Labels") or {}
        if f.get("name") and not any(n in d["Name"] for n in f["name"]):
            continue
        if f.get("label") and not match_labels(f["label"], labels):
            continue
        if any(match_labels([w], labels) for w in f.get("label!", [])):
            continue
        if f.get("driver") and d["Driver"] not in f["driver"]:
            continue
        if f.get("dangling") and (f["dangling"][-1] in ("true", "1")) == bool(vols.users(d["Name"])):
            continue
        out.append(d)
    return out


def ls(filter_: List[str] = typer.Option([], "-f", "--filter", help="Filter (name=, label=, driver=, dangling=)."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Only display volume names."),
       fmt: Optional[str] = typer.Option(None, "--format", help="Go-template subset, 'table ...' or json.")):
    """List volumes."""
    from . import format as _format
    from ..containers.filters import parse
    f = parse(filter_, LS_FILTERS)
    template = _format.compile(fmt, LS_FIELDS)
    docs = _select(_volumes().list_all(), f)
    if quiet:
        for d in docs:
            typer.echo(d["Name"])
        return
    rows = [{"Name": d["Name"], "Driver": d["Driver"], "Scope": d.get("Scope", "local"),
             "Mountpoint": d["Mountpoint"], "CreatedAt": d.get("CreatedAt", ""),
             "Labels": ",".join(f"{k}={v}" for k, v in (d.get("Labels") or {}).items())} for d in docs]
    if template is None:
        template = _format.Template("table {{.Driver}}\t{{.Name}}", LS_FIELDS)
    for line in template.render(rows):
        typer.echo(line)


def inspect(names: List[str] = typer.Argument(..., help="Volume names."),
            fmt: Optional[str] = typer.Option(None, "-f", "--format", help="Template, e.g. '{{.Mountpoint}}'.")):
    """Show volumes' details as JSON (Docker's shape)."""
    from . import format as _format
    _format.show_each(names, _volumes().inspect, fmt)


def rm(names: List[str] = typer.Argument(..., help="Volume names."),
       force: bool = typer.Option(False, "-f", "--force", help="No error if a volume does not exist.")):
    """Remove volumes and their data (refused while a container uses one)."""
    from . import report
    from ..errors import SandboxError
    vols = _volumes()
    failed = 0
    for n in names:
        try:
            vols.remove(n)
        except vols.NoSuchVolume as e:
            if force:
                continue
            report(e)
            failed = e.exit_code
            continue
        except SandboxError as e:
            report(e)
            failed = e.exit_code
            continue
        typer.echo(n)
    if failed:
        raise typer.Exit(failed)


def prune(all_: bool = typer.Option(False, "-a", "--all", help="Every unused volume, not only anonymous ones."),
          filter_: List[str] = typer.Option([], "--filter", help="label=, label!=."),
          force: bool = typer.Option(False, "-f", "--force", help="Do not prompt for confirmation.")):
    """Remove volumes no container uses: anonymous ones, or every one with -a."""
    from ..containers.filters import parse
    from ..progress import human_size
    from .prompt import confirm
    f = parse(filter_, ("label", "label!", "all"))
    if all_:
        f["all"] = ["true"]
    what = "all local volumes" if all_ else "all anonymous local volumes"
    if not confirm([f"WARNING! This will remove {what} not used by at least one container."], force):
        raise typer.Exit(1)
    gone, freed = _volumes().prune(f)
    if gone:
        typer.echo("Deleted Volumes:")
        for n in gone:
            typer.echo(n)
        typer.echo("")
    typer.echo(f"Total reclaimed space: {human_size(freed)}")


def register(app: typer.Typer) -> None:
    vol = typer.Typer(help="Manage named volumes.", no_args_is_help=True)
    for name, fn in (("create", create), ("ls", ls), ("list", ls), ("inspect", inspect), ("rm", rm),
                     ("remove", rm), ("prune", prune)):
        vol.command(name)(fn)
    app.add_typer(vol, name="volume")
