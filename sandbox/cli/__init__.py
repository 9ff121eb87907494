"""The `sbx` command.  `main()` sends `run` straight to its own parser (startup time is
measured: typer and click cost ~70 ms to import) and everything else to the typer app.
SandboxError is caught once, here: one line (and a hint) on stderr, Docker's exit codes.
An OSError that no command turned into a SandboxError is reported the same way (exit 125):
the user sees the path and the system's reason, never a traceback.  Any other exception is
a bug: one 'internal error' line, and the traceback only with SBX_DEBUG=1."""
import errno
import os
import sys

from .. import config
from ..errors import SandboxError

GLOBAL_OPTS = {"--root": "root", "--runroot": "runroot"}


def _strip_globals(argv):
    """(the rest of argv, {"root": ..., "runroot": ...}) for the global flags that lead argv."""
    given = {}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in GLOBAL_OPTS:
            break
        if not eq:
            if i + 1 >= len(argv):
                raise SandboxError(f"flag needs an argument: {name}")
            value = argv[i + 1]
            i += 1
        given[GLOBAL_OPTS[name]] = value
        i += 1
    return argv[i:], given


def report(e):
    # One line, whatever the message holds (e.g. a library's multi-line reason).
    msg = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    sys.stderr.write(f"sbx: {msg}\n")
    if getattr(e, "hint", None):
        sys.stderr.write(f"sbx: hint: {e.hint}\n")


_OS_HINTS = {
    errno.ENOSPC: "free space on that filesystem, or point --root (SBX_ROOT) at another one",
    errno.EDQUOT: "free space on that filesystem, or point --root (SBX_ROOT) at another one",
    errno.EFBIG: "the file is over a size limit (ulimit -f, or the filesystem's); free space or raise the limit",
    errno.EACCES: "check the permissions of that path, or choose a path you can write",
    errno.EPERM: "check the permissions and owner of that path, or choose a path you can write",
    errno.EROFS: "that filesystem is read-only: choose a path on a writable one",
    errno.ENOENT: "check that the path and its parent directories exist",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.EISDIR: "give a file name, not a directory",
    errno.EEXIST: "choose another path, or remove what is there",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ELOOP: "the path has a symbolic link loop",
    errno.EMFILE: "too many open files: raise 'ulimit -n'",
    errno.ENOMEM: "the system is out of memory",
}


def _user_path(name):
    """The path the user gave rather than our temporary file beside it (`.tmp-*`)."""
    if name is None:
        return None
    name = os.fsdecode(name) if isinstance(name, bytes) else str(name)
    if os.path.basename(name).startswith(".tmp-"):
        return os.path.dirname(name) or "."
    return name


def os_error(e):
    """A SandboxError for an OSError that reached the top."""
    reason = (e.strerror or os.strerror(e.errno)) if e.errno else str(e)
    names = [p for p in (_user_path(e.filename), _user_path(e.filename2)) if p]
    if e.errno == errno.EISDIR and len(names) == 2:
        names = names[1:]  # renaming onto a directory: that is the one the user named
    where = " -> ".join(names)
    hint = _OS_HINTS.get(e.errno) or "this is an error of the host system; check the path and try again"
    if not where and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = f"free space where sbx writes (the store at {config.current().data_root}, or the output), " \
               "or point --root (SBX_ROOT) at another filesystem"
    return SandboxError(f"{where}: {reason}" if where else reason, hint=hint)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv, given = _strip_globals(argv)
    except SandboxError as e:
        report(e)
        sys.exit(e.exit_code)
    # --root/--runroot hold for this command only, as its configuration context (they never
    # change os.environ: what sbx starts gets the locations it needs explicitly)
    with config.use(config.Context.from_env(**given)):
        code = _run(argv)
    sys.stdout.flush()
    sys.exit(code)


def _run(argv):
    try:
        code = _dispatch(argv)
    except SandboxError as e:
        report(e)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 141
    except OSError as e:
        err = os_error(e)
        report(err)
        code = err.exit_code
    except Exception as e:  # a bug: still one line for the user; SBX_DEBUG=1 shows where
        if os.environ.get("SBX_DEBUG"):
            raise
        report(SandboxError(f"internal error: {type(e).__name__}: {e}",
                            hint="this is a bug in sbx: run again with SBX_DEBUG=1 for the traceback and report it"))
        code = 125
    return code


def _dispatch(argv):
    if argv and argv[0] == "run":
        from .run import main as run_main
        return run_main(argv[1:])
    if argv and argv[0] == "exec":
        from .run import exec_main
        return exec_main(argv[1:])
    if argv and argv[0] == "build":  # typer costs more than a cached build: its plain forms parse here
        from .buildcmd import main as build_main
        code = build_main(argv[1:])
        if code is not None:
            return code
    from .app import main as app_main
    return app_main(argv)
