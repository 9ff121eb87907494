"""The typer application: every verb but the fast `run` path lives here."""
import typer

from .. import __version__

app = typer.Typer(name="sbx", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Rootless containers and sandboxes: Docker's verbs, no daemon, no root.")


@app.callback()
def _global(root: str = typer.Option(None, "--root", help="Storage directory (images, containers); also SBX_ROOT."),
            runroot: str = typer.Option(None, "--runroot", help="Runtime state directory; also SBX_RUNROOT.")):
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
    from . import build, containers, images
    build.register(app)
    containers.register(app)
    images.register(app)


_register()


def main(argv):
    """Run the app on argv; returns the exit code (usage errors exit 125, like Docker's)."""
    try:
        app(args=argv, prog_name="sbx")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 125 if code == 2 else code
    return 0
