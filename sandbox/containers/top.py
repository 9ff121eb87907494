"""`top`: the processes of a running container, with host pids (as `docker top` shows them).

Which processes: those in the pid namespace of the container's first process (the same
`/proc/PID/ns/pid`), plus its descendants (a nested pid namespace, or a container sharing the
host's pid namespace, where only descendants count).  The caller owns the container's user
namespace, so the kernel lets it read those links even for processes of subordinate ids.

Without ps options the table is `ps -ef`'s (UID PID PPID C STIME TTY TIME CMD), computed from
/proc, so no `ps` binary is needed.  With options, the host's `ps` runs with them and the rows
whose PID is the container's are kept, exactly Docker's way (daemon/top_unix.go): a row whose
PID is "-" (a thread, with `-m`) follows the process row before it.
"""
from __future__ import annotations

import os
import pwd
import time

from ..errors import SandboxError, UsageError

DEFAULT_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat split after the command name: [state, ppid, ...] (field 3 onwards), and the
    comm in front.  None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lp, rp = data.find("("), data.rfind(")")
    return [data[lp + 1:rp]] + data[rp + 2:].split()


def _ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def pids(init_pid: int, pid_start: int | None = None) -> list[int]:
    """The host pids of the container whose first process is `init_pid` (checked against its
    start time, field 22 of /proc/PID/stat, when given), sorted.  Empty when it is gone."""
    st = _stat(init_pid)
    if st is None or (pid_start is not None and int(st[20]) != int(pid_start)):
        return []
    ns = _ns(init_pid)
    own = ns is None or ns == _ns(os.getpid())   # the host's pid namespace: descendants only
    parents: dict[int, int] = {}
    members = {init_pid}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        s = _stat(pid)
        if s is None:
            continue
        parents[pid] = int(s[2])
        if not own and pid != init_pid and _ns(pid) == ns:
            members.add(pid)
    for pid in parents:   # descendants, whatever namespace they are in
        seen = set()
        p = pid
        while p in parents and p not in seen and p not in members and p > 1:
            seen.add(p)
            p = parents[p]
        if p in members:
            members.add(pid)
            members.update(seen)
    return sorted(members)


def _user(uid: int) -> str:
    """ps's user column: the name (cut to 7 characters and '+' past 8, as procps does), or the id."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
    return name if len(name) <= 8 else name[:7] + "+"


def _tty(nr: int) -> str:
    if nr == 0:
        return "?"
    major, minor = os.major(nr), os.minor(nr)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    if major == 5 and minor == 0:
        return "tty"
    return f"{major},{minor}"


def _clock(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _row(pid: int, hz: int, boot: float, now: float) -> list[str] | None:
    s = _stat(pid)
    if s is None:
        return None
    comm, state, ppid, tty_nr = s[0], s[1], int(s[2]), int(s[5])
    cpu_ticks = int(s[12]) + int(s[13])
    started = boot + int(s[20]) / hz
    try:
        uid = int(open(f"/proc/{pid}/status").read().split("\nUid:")[1].split()[1])   # the effective uid
    except (OSError, IndexError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0")]
    except OSError:
        argv = []
    while argv and argv[-1] == "":
        argv.pop()
    cmd = " ".join(argv) if argv else f"[{comm}]"
    if state == "Z":
        cmd = f"[{comm}] <defunct>"
    elapsed = now - started
    c = min(99, int(cpu_ticks * 100 / hz / elapsed)) if elapsed > 0 else 0
    lt = time.localtime(started)
    if now - started < 86400:
        stime = time.strftime("%H:%M", lt)
    elif lt.tm_year == time.localtime(now).tm_year:
        stime = time.strftime("%b%d", lt)
    else:
        stime = time.strftime("%Y", lt)
    return [_user(uid), str(pid), str(ppid), str(c), stime, _tty(tty_nr), _clock(cpu_ticks // hz), cmd]


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise SandboxError("cannot read the boot time from /proc/stat")


def top(where, ref, ps_args: list[str] | None = None) -> dict:
    """`docker top` of the container `ref` in `where` (a store, a data root, None):
    {"Titles": [...], "Processes": [[...], ...]}; StateError when it does not run."""
    from . import lifecycle, state
    rec = lifecycle.store(where).get(ref)
    state.transition(rec, "top")
    titles, rows = table(rec.state.get("Pid"), rec.state.get("PidStart"), ps_args)
    return {"Titles": titles, "Processes": rows}


def table(init_pid: int, pid_start: int | None = None, ps_args: list[str] | None = None
          ) -> tuple[list[str], list[list[str]]]:
    """(titles, rows) for the container's processes: `ps -ef`'s columns from /proc without
    `ps_args`, else the host's `ps ARGS` filtered to the container's pids (Docker's way)."""
    members = pids(init_pid, pid_start)
    if not members:
        raise UsageError("the container is not running", hint="start it first ('sbx start NAME')")
    if ps_args:
        return _ps(ps_args, members)
    hz = os.sysconf("SC_CLK_TCK")
    boot, now = _boot_time(), time.time()
    rows = [r for r in (_row(p, hz, boot, now) for p in members) if r is not None]
    return list(DEFAULT_TITLES), rows


def _ps(args: list[str], members: list[int]) -> tuple[list[str], list[list[str]]]:
    import subprocess
    text = " ".join(args)
    # Docker refuses a renamed PID column (`-o pid=PID`-like tricks that would hide the pids).
    words = text.split()
    for i, w in enumerate(words):
        key, eq, value = w.partition("=")
        if eq and value.startswith("PID") and key.split(",")[-1] != "pid":
            raise UsageError(f'specifying "{key.split(",")[-1]}={value}" is not allowed',
                             hint="ps options may not name another column PID")
    argv = ["ps", *words]
    try:
        out = subprocess.run(argv + ["-q", ",".join(map(str, members))], capture_output=True)
        if out.returncode != 0:  # some options (f) cannot go with -q: all processes, filtered below
            out = subprocess.run(argv, capture_output=True)
    except FileNotFoundError:
        raise SandboxError("the host has no 'ps' command to run with those options",
                           hint="install procps, or run 'sbx top CONTAINER' without ps options") from None
    if out.returncode != 0:
        err = out.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"ps {text}: {err[0] if err else f'exit status {out.returncode}'}",
                         hint="give options the host's ps accepts, e.g. 'sbx top NAME -o pid,args'")
    return parse_ps(out.stdout.decode("utf-8", "replace"), set(members))


def parse_ps(output: str, members: set[int]) -> tuple[list[str], list[list[str]]]:
    """ps output -> (titles, the rows of `members`), as moby's parsePSOutput."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise UsageError("couldn't find the PID field in the ps output", hint="keep the pid column: -o pid,...")
    idx = titles.index("PID")
    rows = []
    kept = False
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) <= idx:
            continue
        if fields[idx] == "-":
            if kept:
                rows.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[idx])
        except ValueError:
            raise SandboxError(f"unexpected pid {fields[idx]!r} in the ps output") from None
        kept = pid in members
        if kept:
            rows.append(_fit(fields, len(titles)))
    return titles, rows


def _fit(fields: list[str], n: int) -> list[str]:
    """The last column takes the rest of the line (CMD holds spaces)."""
    return fields[:n - 1] + [" ".join(fields[n - 1:])]
