"""`sbx build`: Dockerfile builds, rootless."""
from typing import List, Optional

import typer


def build(context: str = typer.Argument(..., help="Build context directory."),
          tag: List[str] = typer.Option([], "-t", "--tag", help="Name the image NAME[:TAG] (repeatable)."),
          file: Optional[str] = typer.Option(None, "-f", "--file", help="Dockerfile (default: CONTEXT/Dockerfile)."),
          build_arg: List[str] = typer.Option([], "--build-arg", help="Set a build-time variable K=V."),
          target: Optional[str] = typer.Option(None, "--target", help="Build this stage (name or index)."),
          no_cache: bool = typer.Option(False, "--no-cache", help="Run every step, ignore the layer cache."),
          pull: bool = typer.Option(False, "--pull", help="Always pull base images."),
          network: str = typer.Option("default", "--network", help="Network for RUN steps: default (a private "
                                      "network, as sbx run gives), none, host, slirp4netns[:OPTS] or pasta[:OPTS]."),
          label: List[str] = typer.Option([], "-l", "--label", help="Add a label KEY[=VALUE] to the image (repeatable)."),
          label_file: List[str] = typer.Option([], "--label-file", help="Read labels from a file of KEY=VALUE lines."),
          quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image id."),
          userns: Optional[str] = typer.Option(None, "--userns", help="auto (default) or single."),
          secret: List[str] = typer.Option([], "--secret", help="A secret for RUN --mount=type=secret: "
                                            "id=ID,src=FILE or id=ID,env=VAR (repeatable)."),
          ssh: List[str] = typer.Option([], "--ssh", help="An SSH agent for RUN --mount=type=ssh: default "
                                        "($SSH_AUTH_SOCK) or ID=SOCKET (repeatable)."),
          force: Optional[str] = typer.Option(None, "--force", help="Root emulation in RUN steps: seccomp "
                                              "(default without a subordinate id range: chown, setuid... "
                                              "succeed without effect) or none.")):
    """Build an image from a Dockerfile."""
    from .buildcmd import build as run_build
    run_build(context, tag=tag, file=file, build_arg=build_arg, target=target, no_cache=no_cache, pull=pull,
              network=network, label=label, label_file=label_file, quiet=quiet, userns=userns, secret=secret,
              ssh=ssh, force=force, out=typer.echo)


def register(app):
    app.command("build")(build)
