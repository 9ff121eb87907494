"""`sbx stats` and `sbx update` (also under `sbx container`): parse, call the engine
(sandbox.containers.stats / update), print as Docker does."""
import sys
from typing import List, Optional

import typer

from .ps import group

STATS_FIELDS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
                "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
                "PIDs": "PIDS", "Source": "SOURCE"}
DEFAULT = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
CLEAR = "\033[2J\033[H"  # what docker stats writes before each refresh


def _store():
    from ..containers.store import ContainerStore
    return ContainerStore()


def row(ref, rec, doc, no_trunc=False):
    """The --format fields of one container (Docker's, plus Source: cgroup, proc or none)."""
    from ..containers import stats as _stats
    from ..progress import human_size
    f = _stats.figures(doc)
    return {"Container": ref, "ID": rec.id if no_trunc else rec.id[:12], "Name": rec.name,
            "CPUPerc": f"{f['cpu_percent']:.2f}%",
            "MemUsage": f"{_stats.bytes_size(f['memory'])} / {_stats.bytes_size(f['memory_limit'])}",
            "MemPerc": f"{f['memory_percent']:.2f}%",
            "NetIO": f"{human_size(f['net_rx'])} / {human_size(f['net_tx'])}",
            "BlockIO": f"{human_size(f['block_read'])} / {human_size(f['block_write'])}",
            "PIDs": str(f["pids"]), "Source": f["source"]}


def _note(rows):
    """Which rows were read in /proc (no cgroup of their own), said once under the table."""
    names = [r["Name"] for r in rows if r["Source"] == "proc"]
    if not names:
        return None
    return (f"note: {', '.join(names)}: no cgroup of {'its' if len(names) == 1 else 'their'} own; figures read in "
            "/proc of the processes (CPU: utime+stime, MEM: sum of RSS, BLOCK I/O: /proc/PID/io)")


def stats(containers: List[str] = typer.Argument(None, help="Containers (names or ids); default: the running ones."),
          all_: bool = typer.Option(False, "-a", "--all", help="Show all containers (default: running ones)."),
          fmt: Optional[str] = typer.Option(None, "--format",
                                            help="'table' (default), 'json', or a Go template: '{{.Name}} "
                                                 "{{.MemUsage}}', 'table {{.Name}}\\t{{.CPUPerc}}'; .Source says "
                                                 "where figures come from (cgroup, proc, none)."),
          no_stream: bool = typer.Option(False, "--no-stream", help="Print once instead of refreshing every second."),
          no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate ids.")):
    """Show containers' resource usage (CPU %, memory, network and block I/O, PIDS): from a
    container's cgroup when it has one, else from /proc of its processes (said under the
    table, and in the Source field).  Refreshes every second until Ctrl-C unless --no-stream."""
    from . import format as _format, report
    from ..containers import stats as _stats
    from ..containers.state import ACTIVE
    from ..errors import SandboxError
    template = _format.compile(fmt, STATS_FIELDS)   # a bad template fails before any work
    st = _store()
    named = []
    failed = False
    for ref in containers or ():
        try:
            named.append((ref, st.get(ref)))
        except SandboxError as e:
            report(e)
            failed = True
    if failed:
        raise typer.Exit(1)

    def chosen():
        if containers:
            return [(ref, st.load(rec.id) or rec) for ref, rec in named]
        return [(r.name, r) for r in st.list() if all_ or r.status in ACTIVE]

    def frame(prev):
        docs = {}
        out = []
        for ref, rec in chosen():
            doc = _stats.follow(prev.get(rec.id), _stats.sample(rec))
            docs[rec.id] = doc
            out.append(row(ref, rec, doc, no_trunc))
        return docs, out

    def render(rows):
        lines = (template or _format.Template(DEFAULT, STATS_FIELDS)).render(rows)
        return lines, (None if template is not None else _note(rows))

    import time
    try:
        prev, _ = frame({})
        time.sleep(_stats.INTERVAL)
        while True:
            prev, rows = frame(prev)
            lines, note = render(rows)
            if no_stream:
                for line in lines:
                    typer.echo(line)
                if note:
                    sys.stderr.write(f"sbx: {note}\n")
                return
            sys.stdout.write(CLEAR + "".join(line + "\n" for line in lines) + (note + "\n" if note else ""))
            sys.stdout.flush()
            time.sleep(_stats.INTERVAL)
    except KeyboardInterrupt:   # the way out of the stream, as Docker's: quietly, exit 0
        if not no_stream:
            sys.stdout.write("\n")
            return
        raise


def update(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
           blkio_weight: Optional[str] = typer.Option(None, "--blkio-weight", help="Block IO weight, 10 to 1000."),
           cpu_period: Optional[str] = typer.Option(None, "--cpu-period", help="CPU CFS period (microseconds)."),
           cpu_quota: Optional[str] = typer.Option(None, "--cpu-quota", help="CPU CFS quota (microseconds)."),
           cpu_shares: Optional[str] = typer.Option(None, "-c", "--cpu-shares", help="CPU shares (relative weight)."),
           cpus: Optional[str] = typer.Option(None, "--cpus", help="Number of CPUs (1.5)."),
           cpuset_cpus: Optional[str] = typer.Option(None, "--cpuset-cpus", help="CPUs allowed (0-3, 0,1)."),
           cpuset_mems: Optional[str] = typer.Option(None, "--cpuset-mems", help="Memory nodes allowed (0-3, 0,1)."),
           memory: Optional[str] = typer.Option(None, "-m", "--memory", help="Memory limit (64m, 1.5g)."),
           memory_reservation: Optional[str] = typer.Option(None, "--memory-reservation", help="Memory soft limit."),
           memory_swap: Optional[str] = typer.Option(None, "--memory-swap",
                                                     help="Memory plus swap limit (-1: unlimited swap)."),
           pids_limit: Optional[str] = typer.Option(None, "--pids-limit",
                                                    help="Maximum number of processes (-1: unlimited)."),
           restart: Optional[str] = typer.Option(None, "--restart",
                                                 help="Restart policy: no, on-failure[:N], always, unless-stopped.")):
    """Change containers' limits and restart policy, running or not.  A running container's
    cgroup gets the new limits at once; the record keeps them for its next start.  Limits need
    cgroup v2 with the controllers delegated ('sbx info'); --restart works everywhere."""
    from ..containers import update as _update
    from ..errors import UsageError
    from .containers import _each
    values = dict(blkio_weight=blkio_weight, cpu_period=cpu_period, cpu_quota=cpu_quota, cpu_shares=cpu_shares,
                  cpus=cpus, cpuset_cpus=cpuset_cpus, cpuset_mems=cpuset_mems, memory=memory,
                  memory_reservation=memory_reservation, memory_swap=memory_swap, pids_limit=pids_limit)
    given = {k: v for k, v in values.items() if v is not None}
    if not given and restart is None:
        raise UsageError("you must provide one or more flags when using this command",
                         hint="e.g. 'sbx update --memory 256m NAME' or 'sbx update --restart always NAME'")
    change = _update.Change.parse(given, restart)   # bad values fail before any container is touched
    st = _store()
    _each(containers, lambda ref: _update.update(st, ref, change) and None)


def register(app):
    app.command("stats")(stats)
    app.command("update")(update)
    c = group(app, "container", "Manage containers.")
    c.command("stats")(stats)
    c.command("update")(update)
