"""The typer application: every verb but the fast `run` path lives here."""
import difflib

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import UsageError

# Never offered as "did you mean": a typo must not lead anyone to stop, kill or delete things.
# Never suggested for a mistyped command: they stop, delete or publish something.
HARMFUL_VERBS = {"stop", "kill", "rm", "rmi", "prune", "reset", "logout", "push"}


class Group(TyperGroup):
    """Unknown commands: one `sbx:` line, with a suggestion only among harmless verbs."""

    def resolve_command(self, ctx, args):
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None \
                and not ctx.resilient_parsing:
            where = ctx.command_path
            safe = [c for c in self.list_commands(ctx) if c not in HARMFUL_VERBS]
            close = difflib.get_close_matches(args[0], safe, n=1)
            hint = (f"did you mean '{where} {close[0]}'? " if close else "") + f"see '{where} --help'"
            raise UsageError(f"No such command '{args[0]}' in '{where}'", hint=hint)
        return super().resolve_command(ctx, args)


app = typer.Typer(name="sbx", cls=Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Rootless containers and sandboxes: Docker's verbs, no daemon, no root.")


def _print_version(value: bool):
    if value:  # `docker --version`, `podman -v`: the habit is as old as `sbx version`
        version()
        raise typer.Exit()


@app.callback()
def _global(root: str = typer.Option(None, "--root", help="Storage directory (images, containers); also SBX_ROOT."),
            runroot: str = typer.Option(None, "--runroot", help="Runtime state directory; also SBX_RUNROOT."),
            _version: bool = typer.Option(False, "-v", "--version", callback=_print_version, is_eager=True,
                                          help="Show the sbx version and exit.")):
    """Rootless containers and sandboxes: Docker's verbs, no daemon, no root."""
    # sandbox.cli.main() already applied them (before choosing the fast `run` path).


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})
def run(ctx: typer.Context):
    """Run a command in a new sandbox (see 'sbx run --help')."""
    from .run import main as run_main
    raise typer.Exit(run_main(list(ctx.args)))


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                      "help_option_names": []})
def exec_(ctx: typer.Context):
    """Run a command in a running container (see 'sbx exec --help')."""
    from .run import exec_main
    raise typer.Exit(exec_main(list(ctx.args)))


@app.command()
def version():
    """Show the sbx version."""
    typer.echo(f"sbx {__version__}")


def _register():
    from . import build, containers, files, images, port, ps
    build.register(app)
    containers.register(app)
    images.register(app)
    from . import info; info.register(app)  # noqa: E702 - sbx info (cgroups, overlay, id mapping)
    from . import stats; stats.register(app)  # noqa: E702 - sbx stats, sbx update
    from . import oci; oci.register(app)  # noqa: E702 - sbx oci: the OCI runtime (sbx-runc)
    from . import network; network.register(app)  # noqa: E702 - sbx network (user-defined networks)
    from . import volume; volume.register(app)  # noqa: E702 - sbx volume (named volumes)
    from . import service; service.register(app)  # noqa: E702 - sbx system service (the Docker API)
    for verbs in (ps, files, port):  # after images: `sbx system prune` joins its `system` group
        verbs.register(app)
    for group in app.registered_groups:  # `sbx image ...`, `sbx system ...`
        group.typer_instance.info.cls = Group


_register()


def main(argv):
    """Run the app on argv; returns the exit code.  Click's usage errors become one `sbx:` line
    (exit 125, like Docker's) instead of click's three-line usage block."""
    import click
    try:
        rv = app(args=argv, prog_name="sbx", standalone_mode=False)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:  # `sbx image`: the group's help (click >= 8.2)
        e.show()
        return 125
    except click.exceptions.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "sbx"
        raise UsageError(e.format_message(), hint=f"see '{where} --help'") from None
    except click.exceptions.ClickException as e:
        raise UsageError(e.format_message()) from None
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None
    return rv if isinstance(rv, int) else 0
