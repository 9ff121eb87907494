"""`sbx-runc` (and `sbx oci ...`): runc's command line over sandbox.oci.

    sbx-runc [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup]
             [--rootless auto|true|false] COMMAND [OPTIONS] ID ...

Flags are parsed as runc's (Go's flag package): `--name value`, `--name=value`, `-name`, flags
before the positional arguments.  Errors: one `sbx-runc: ...` line on stderr (and a hint), the
same in the --log file in runc's format (`--log-format json`: {"level","msg","time"} lines, which
containerd and podman read to report the failure), exit 1.  No typer, no argparse: the
create/start path is what containerd's shim and conmon wait on."""
import os
import sys

PROG = "sbx-runc"
GLOBAL = {"root": 1, "log": 1, "log-format": 1, "debug": 0, "systemd-cgroup": 0, "rootless": 1, "criu": 1,
          "help": 0, "h": 0, "version": 0, "v": 0}
COMMANDS = {
    "create": {"bundle": 1, "b": "bundle", "console-socket": 1, "pid-file": 1, "no-pivot": 0,
               "no-new-keyring": 0, "preserve-fds": 1},
    "run": {"bundle": 1, "b": "bundle", "console-socket": 1, "pid-file": 1, "no-pivot": 0, "no-new-keyring": 0,
            "preserve-fds": 1, "detach": 0, "d": "detach", "keep": 0, "no-subreaper": 0},
    "start": {},
    "state": {},
    "kill": {"all": 0, "a": "all"},
    "delete": {"force": 0, "f": "force"},
    "exec": {"console-socket": 1, "cwd": 1, "env": 2, "e": "env", "tty": 0, "t": "tty", "user": 1, "u": "user",
             "additional-gids": 2, "g": "additional-gids", "process": 1, "p": "process", "detach": 0, "d": "detach",
             "pid-file": 1, "process-label": 1, "apparmor": 1, "no-new-privs": 0, "cap": 2, "c": "cap",
             "preserve-fds": 1, "cgroup": 2, "ignore-paused": 0},
    "ps": {"format": 1, "f": "format"},
    "list": {"format": 1, "f": "format", "quiet": 0, "q": "quiet"},
    "pause": {},
    "resume": {},
    "update": {"resources": 1, "r": "resources"},
    "features": {},
    "spec": {"bundle": 1, "b": "bundle", "rootless": 0},
}
USAGE = f"""usage: {PROG} [global options] COMMAND [options] [ID] [args]

sbx as an OCI runtime (runc's command line).

COMMANDS: create start run state kill delete exec ps list pause resume update features spec
GLOBAL OPTIONS: --root DIR  --log FILE  --log-format text|json  --debug  --systemd-cgroup
                --rootless auto|true|false  --version
"""


class CLIError(Exception):
    def __init__(self, msg, hint=None):
        super().__init__(msg)
        self.msg, self.hint = msg, hint


def parse_flags(argv, spec, stop_at_positional=True):
    """Go flag-style parsing: returns (flags dict, positional args).  Flags may also follow
    positional arguments (as crun allows) unless stop_at_positional: then the first positional
    ends the flags (the global ones, and exec's, whose command follows the id)."""
    flags, rest = {}, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i + 1:])
            break
        if not a.startswith("-") or a == "-":
            if stop_at_positional:
                rest.extend(argv[i:])
                break
            rest.append(a)
            i += 1
            continue
        name, eq, value = a.lstrip("-").partition("=")
        kind = spec.get(name)
        if isinstance(kind, str):
            name, kind = kind, spec[kind]
        if kind is None:
            raise CLIError(f"flag provided but not defined: -{name}", hint=f"see '{PROG} --help'")
        if kind == 0:
            if eq and value.lower() not in ("true", "false", "1", "0"):
                raise CLIError(f"invalid boolean value {value!r} for -{name}")
            flags[name] = (value.lower() in ("true", "1")) if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise CLIError(f"flag needs an argument: -{name}")
                value = argv[i]
            if kind == 2:
                flags.setdefault(name, []).append(value)
            else:
                flags[name] = value
        i += 1
    return flags, rest


class Logger:
    """runc's --log / --log-format: `time="..." level=error msg="..."` or JSON lines."""

    def __init__(self, path=None, fmt="text", debug=False):
        self.path, self.fmt, self.debug = path, fmt, debug

    def __call__(self, level, msg):
        if level == "debug" and not self.debug:
            return
        if self.path is None:
            if level != "error":
                sys.stderr.write(f"{PROG}: {level}: {msg}\n")
            return
        from ..oci.state import now_rfc3339
        t = now_rfc3339()
        if self.fmt == "json":
            from ..oci.jsonc import dumps
            line = dumps({"level": level, "msg": msg, "time": t})
        else:
            esc = msg.replace("\\", "\\\\").replace('"', '\\"')
            line = f'time="{t}" level={level} msg="{esc}"'
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass


def _one_id(rest, cmd, more=False):
    if not rest:
        raise CLIError(f"\"{cmd}\" requires a container id", hint=f"{PROG} {cmd} [options] <container-id>")
    if len(rest) > 1 and not more:
        raise CLIError(f"\"{cmd}\" requires exactly 1 argument, got {len(rest)}")
    return rest[0]


def _print_json(obj, indent=None):
    """Indented for a person at a terminal (as runc), compact for a program (no `json` import)."""
    if indent is not None and os.isatty(1):
        import json
        text = json.dumps(obj, indent=indent)
    else:
        from ..oci.jsonc import dumps
        text = dumps(obj)
    sys.stdout.write(text + "\n")


def _exec_process(flags, args, c_spec):
    """The OCI process of `exec`: --process FILE, else the container's process with the args
    and the flags applied."""
    from ..oci.jsonc import loads
    if flags.get("process"):
        path = flags["process"]
        try:
            with (sys.stdin if path == "-" else open(path)) as f:
                proc = loads(f.read())
        except (OSError, ValueError) as e:
            raise CLIError(f"--process {path}: {e}") from None
        if args:
            raise CLIError("give the command in the --process file or as arguments, not both")
        return proc
    if not args:
        raise CLIError("exec needs a command (or --process FILE)", hint=f"{PROG} exec ID CMD [ARG...]")
    base = c_spec["process"]
    proc = {"terminal": bool(flags.get("tty")), "args": args, "env": list(base["env"]),
            "cwd": flags.get("cwd") or base["cwd"], "user": dict(base["user"]),
            "capabilities": {k: [f"CAP_{c}" for c in v] for k, v in base["capabilities"].items()},
            "rlimits": base["rlimits"], "noNewPrivileges": base["noNewPrivileges"] or bool(flags.get("no-new-privs"))}
    for e in flags.get("env", ()):
        k = e.partition("=")[0]
        proc["env"] = [x for x in proc["env"] if x.partition("=")[0] != k] + [e]
    if flags.get("user"):
        u, _, g = flags["user"].partition(":")
        if not u.isdigit() or (g and not g.isdigit()):
            raise CLIError(f"--user {flags['user']!r}: give UID[:GID] as numbers")
        proc["user"] = {"uid": int(u), "gid": int(g) if g else 0, "additionalGids": []}
    if flags.get("additional-gids"):
        proc["user"]["additionalGids"] = [int(g) for g in flags["additional-gids"]]
    for c in flags.get("cap", ()):
        name = c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
        for k in ("bounding", "effective", "permitted"):
            if name not in proc["capabilities"][k]:
                proc["capabilities"][k].append(name)
    for k in ("process-label", "apparmor"):
        if flags.get(k):
            raise CLIError(f"--{k} is not supported by sbx-runc (no SELinux/AppArmor here)")
    return proc


def _foreground(pid, pidfd, pty_master=-1):
    """Wait for our child `pid` (signals forwarded; a pty relayed to our terminal)."""
    from ..runtime.process import SandboxProcess
    p = SandboxProcess(pid, pidfd, pty_master=pty_master)
    try:
        if pty_master >= 0:
            code = p.relay_pty(stdin_fd=0 if os.isatty(0) else -1, stdout_fd=1, raw=os.isatty(0), detach_keys=None)
            return p.wait() if code is None else code
        return p.wait()
    finally:
        p.close()


def _pty_pair():
    import socket
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)


def _recv_pty(sock):
    import socket
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise CLIError("the container sent no pty")
    return fds[0]


def dispatch(g, cmd, flags, rest, log):
    from ..oci import runtime as rt
    from ..oci.state import default_root
    root = g.get("root") or default_root()
    rootless = {"auto": None, "true": True, "false": False, None: None}.get(g.get("rootless"), "bad")
    if rootless == "bad":
        raise CLIError(f"--rootless {g.get('rootless')!r}: use auto, true or false")
    if g.get("systemd-cgroup"):
        raise CLIError("--systemd-cgroup cannot be honoured: sbx-runc has no systemd cgroup manager "
                       "(and this host runs no systemd)",
                       hint="drop --systemd-cgroup (containerd: SystemdCgroup = false; podman: "
                            "--cgroup-manager cgroupfs)")
    if cmd == "create":
        cid = _one_id(rest, cmd)
        rt.create(root, cid, flags.get("bundle") or ".", pid_file=flags.get("pid-file"),
                  console_socket=flags.get("console-socket"), preserve_fds=_int(flags.get("preserve-fds", "0")),
                  rootless=rootless)
        return 0
    if cmd == "run":
        cid = _one_id(rest, cmd)
        return _run(rt, root, cid, flags, rootless, log)
    if cmd == "start":
        rt.start(root, _one_id(rest, cmd), log=log)
        return 0
    if cmd == "state":
        _print_json(rt.state(root, _one_id(rest, cmd)), indent="  ")
        return 0
    if cmd == "kill":
        cid = _one_id(rest, cmd, more=True)
        if len(rest) > 2:
            raise CLIError("\"kill\" takes an id and at most one signal")
        rt.kill(root, cid, rest[1] if len(rest) > 1 else "SIGTERM", all_=bool(flags.get("all")))
        return 0
    if cmd == "delete":
        for cid in rest or [_one_id(rest, cmd)]:
            rt.delete(root, cid, force=bool(flags.get("force")), log=log)
        return 0
    if cmd == "exec":
        cid = _one_id(rest, cmd, more=True)
        return _exec(rt, root, cid, flags, rest[1:])
    if cmd == "ps":
        return _ps(rt, root, _one_id(rest, cmd, more=True), flags.get("format", "table"), rest[1:])
    if cmd == "list":
        return _list(rt, root, flags)
    if cmd in ("pause", "resume"):
        getattr(rt, cmd)(root, _one_id(rest, cmd))
        return 0
    if cmd == "update":
        cid = _one_id(rest, cmd)
        src = flags.get("resources")
        if not src:
            raise CLIError("update needs --resources FILE (- for stdin)")
        from ..oci.jsonc import loads
        try:
            with (sys.stdin if src == "-" else open(src)) as f:
                res = loads(f.read())
        except (OSError, ValueError) as e:
            raise CLIError(f"--resources {src}: {e}") from None
        rt.update(root, cid, res)
        return 0
    if cmd == "features":
        _print_json(rt.features(), indent="    ")
        return 0
    if cmd == "spec":
        rt.write_spec(flags.get("bundle"), rootless=bool(flags.get("rootless")))
        return 0
    raise CLIError(f"unknown command {cmd!r}")


def _int(v):
    if not str(v).isdigit():
        raise CLIError(f"--preserve-fds {v!r} is not a number")
    return int(v)


def _with_pty(want, launch_fn):
    """launch_fn(fd of our end of a socket pair for the pty, or None) -> (its result, the pty
    master or -1): a terminal for a foreground run or exec without --console-socket."""
    if not want:
        return launch_fn(None), -1
    a, b = _pty_pair()
    try:
        result = launch_fn(b.fileno())
        b.close()
        return result, _recv_pty(a)
    finally:
        a.close()
        b.close()


def _run(rt, root, cid, flags, rootless, log):
    detach = bool(flags.get("detach"))
    want_pty = False
    if not detach and not flags.get("console-socket"):
        from ..oci.bundle import load
        cfg, _ = load(flags.get("bundle") or ".")
        want_pty = bool((cfg.get("process") or {}).get("terminal"))
    (c, _h), master = _with_pty(want_pty, lambda fd: rt.create(
        root, cid, flags.get("bundle") or ".", pid_file=flags.get("pid-file"),
        console_socket=flags.get("console-socket"), preserve_fds=_int(flags.get("preserve-fds", "0")),
        rootless=rootless, _keep_pty=fd))
    try:
        rt.start(root, cid, log=log)
    except BaseException:
        rt.delete(root, cid, force=True, log=log)
        raise
    if detach:
        return 0
    try:
        code = _foreground(c.pid, os.pidfd_open(c.pid), master)
    finally:
        if not flags.get("keep"):
            rt.delete(root, cid, force=True, log=log)
    return code


def _exec(rt, root, cid, flags, args):
    from ..oci.state import Container
    c = Container.load(root, cid)
    proc = _exec_process(flags, args, c.data["spec"])
    if flags.get("tty"):
        proc["terminal"] = True
    detach = bool(flags.get("detach"))
    want_pty = bool(proc.get("terminal")) and not flags.get("console-socket")
    if want_pty and detach:
        raise CLIError("exec --detach with a terminal needs --console-socket")
    (pid, pidfd), master = _with_pty(want_pty, lambda fd: rt.exec_(
        root, cid, proc, console_socket=flags.get("console-socket"), pid_file=flags.get("pid-file"),
        preserve_fds=_int(flags.get("preserve-fds", "0")), pty=fd))
    if detach:
        if pidfd >= 0:
            os.close(pidfd)
        return 0
    return _foreground(pid, pidfd, master)


def _ps(rt, root, cid, fmt, ps_args):
    from ..oci.state import Container
    c = Container.load(root, cid)
    pids = rt.container_pids(c) if c.alive() else []
    if fmt == "json":
        _print_json(pids)
        return 0
    if fmt != "table":
        raise CLIError(f"invalid format option {fmt!r}", hint="use table or json")
    import subprocess
    out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True)
    if out.returncode != 0:
        raise CLIError(f"ps failed: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    head = lines[0].split()
    if "PID" not in head:
        raise CLIError("couldn't find PID field in ps output")
    col = head.index("PID")
    sys.stdout.write(lines[0] + "\n")
    want = set(pids)
    for line in lines[1:]:
        f = line.split()
        if len(f) > col and f[col].isdigit() and int(f[col]) in want:
            sys.stdout.write(line + "\n")
    return 0


def _list(rt, root, flags):
    states = rt.list_states(root)
    if flags.get("quiet"):
        for s in states:
            sys.stdout.write(s["id"] + "\n")
        return 0
    fmt = flags.get("format", "table")
    if fmt == "json":
        _print_json(states)
        return 0
    if fmt != "table":
        raise CLIError(f"invalid format option {fmt!r}", hint="use table or json")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]) for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        sys.stdout.write("".join(v.ljust(w + 3) if i < 5 else v for i, (v, w) in enumerate(zip(r, widths))).rstrip()
                         + "\n")
    return 0


def version_text():
    from .. import __version__
    from ..oci.runtime import SPEC_VERSION
    return f"{PROG} version {__version__}\ncommit: sbx-{__version__}\nspec: {SPEC_VERSION}\n"


def run(argv):
    """The command line -> exit code (errors reported here)."""
    g = {}
    log = Logger()
    try:
        g, rest = parse_flags(argv, GLOBAL)
        log = Logger(g.get("log"), g.get("log-format", "text"), bool(g.get("debug")))
        if g.get("log-format", "text") not in ("text", "json"):
            raise CLIError(f"--log-format {g['log-format']!r}: use text or json")
        if g.get("version") or g.get("v"):
            sys.stdout.write(version_text())
            return 0
        if g.get("help") or g.get("h") or not rest:
            sys.stdout.write(USAGE)
            return 0 if rest or g.get("help") or g.get("h") else 1
        cmd, rest = rest[0], rest[1:]
        if cmd not in COMMANDS:
            if cmd in ("checkpoint", "restore", "events"):
                raise CLIError(f"{cmd} is not supported by sbx-runc",
                               hint="checkpoint/restore (CRIU) and events are not implemented")
            raise CLIError(f"No help topic for '{cmd}'", hint=f"commands: {' '.join(COMMANDS)}")
        if "-h" in rest[:1] or "--help" in rest[:1]:
            sys.stdout.write(USAGE)
            return 0
        flags, rest = parse_flags(rest, COMMANDS[cmd], stop_at_positional=cmd == "exec")
        log("debug", f"{cmd} {' '.join(rest)}")
        return dispatch(g, cmd, flags, rest, log)
    except (CLIError, Exception) as e:
        from ..errors import SandboxError
        if not isinstance(e, (CLIError, SandboxError, OSError)):
            if os.environ.get("SBX_DEBUG"):
                raise
            msg, hint = f"internal error: {type(e).__name__}: {e}", "run again with SBX_DEBUG=1 for the traceback"
        elif isinstance(e, OSError) and not isinstance(e, SandboxError):
            msg = f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
            hint = None
        else:
            msg, hint = "; ".join(x.strip() for x in str(e).splitlines() if x.strip()), getattr(e, "hint", None)
        log("error", msg)
        sys.stderr.write(f"{PROG}: {msg}\n")
        if hint:
            sys.stderr.write(f"{PROG}: hint: {hint}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def main():
    sys.exit(run(sys.argv[1:]))


def register(app):
    """`sbx oci COMMAND ...`: the same command line as sbx-runc."""
    import typer

    @app.command("oci", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                          "help_option_names": []})
    def oci(ctx: typer.Context):
        """sbx as an OCI runtime: runc's commands (see 'sbx oci --help')."""
        raise typer.Exit(run(list(ctx.args)))
