"""Docker's confirmation prompt, shared by the prune commands."""
import sys

import typer


def confirm(lines, force):
    """Docker's prompt (on stdout, answer on stdin, anything but y/Y is no); True to go on."""
    if force:
        return True
    typer.echo("\n".join(lines))
    typer.echo("Are you sure you want to continue? [y/N] ", nl=False)
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        typer.echo("")
    return answer.strip() in ("y", "Y")
