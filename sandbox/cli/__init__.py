"""The `sbx` command.  `main()` sends `run` straight to its own parser (startup time is
measured: typer and click cost ~70 ms to import) and everything else to the typer app.
SandboxError is caught once, here: one line (and a hint) on stderr, Docker's exit codes."""
import os
import sys

from ..errors import SandboxError

GLOBAL_OPTS = {"--root": "SBX_ROOT", "--runroot": "SBX_RUNROOT"}


def _strip_globals(argv):
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
        os.environ[GLOBAL_OPTS[name]] = value
        i += 1
    return argv[i:]


def report(e):
    sys.stderr.write(f"sbx: {e}\n")
    if getattr(e, "hint", None):
        sys.stderr.write(f"sbx: hint: {e.hint}\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv = _strip_globals(argv)
        if argv and argv[0] == "run":
            from .run import main as run_main
            code = run_main(argv[1:])
        elif argv and argv[0] == "exec":
            from .run import exec_main
            code = exec_main(argv[1:])
        else:
            from .app import main as app_main
            code = app_main(argv)
    except SandboxError as e:
        report(e)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 141
    sys.stdout.flush()
    sys.exit(code)
