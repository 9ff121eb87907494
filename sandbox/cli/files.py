"""`sbx cp`, `sbx export`, `sbx top`, `sbx container prune`, `sbx system prune`: parse, call
the engine (sandbox.containers.files / top / lifecycle), print as Docker does."""
import os
import sys
from typing import List, Optional

import typer

from .prompt import confirm
from .ps import group


def _store():
    from ..containers.store import ContainerStore
    return ContainerStore()


def _place(rec):
    from ..containers import files
    return files.Place.of(rec, rec.status in ("running", "paused"))


def _split(arg):
    """Docker's splitCpArg: CONTAINER:PATH, unless the argument is an absolute or ./ path."""
    if arg.startswith("/"):
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep or name.startswith("."):
        return None, arg
    return name, path


def cp(src: str = typer.Argument(..., metavar="SRC", help="CONTAINER:SRC_PATH, a local path, or - (a tar on stdin)."),
       dest: str = typer.Argument(..., metavar="DEST", help="CONTAINER:DEST_PATH, a local path, or - (a tar on stdout)."),
       archive: bool = typer.Option(False, "-a", "--archive", help="Keep uid/gid of the source (archive mode)."),
       follow: bool = typer.Option(False, "-L", "--follow-link", help="Follow a symbolic link given as SRC_PATH."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Do not print 'Successfully copied ...' on stderr.")):
    """Copy files between a container and the local filesystem (Docker's rules: a trailing
    '/.' copies a directory's contents, a directory destination receives the source by name)."""
    from ..containers import files
    from ..errors import UsageError
    sname, spath = _split(src)
    dname, dpath = _split(dest)
    if not spath:
        raise UsageError("source can not be empty", hint="sbx cp CONTAINER:SRC_PATH DEST | SRC CONTAINER:DEST_PATH")
    if not dpath:
        raise UsageError("destination can not be empty",
                         hint="sbx cp CONTAINER:SRC_PATH DEST | SRC CONTAINER:DEST_PATH")
    if sname and dname:
        raise UsageError("copying between containers is not supported", hint="copy to a local path, then on")
    if not sname and not dname:
        raise UsageError("must specify at least one container source",
                         hint="sbx cp CONTAINER:SRC_PATH DEST | SRC CONTAINER:DEST_PATH")
    st = _store()
    if sname:
        rec = st.get(sname)
        if dpath == "-" and sys.stdout.isatty():
            raise UsageError("refusing to write a tar to a terminal", hint="redirect stdout, or give a local path")
        sys.stdout.flush()
        n = files.copy_from(st, _place(rec), spath, dpath, follow=follow, archive=archive, out=sys.stdout.buffer)
        _copied(n, dpath, quiet or dpath == "-")
        return
    rec = st.get(dname)
    if spath == "-" and sys.stdin.isatty():
        raise UsageError("refusing to read a tar from a terminal", hint="pipe a tar archive into 'sbx cp -'")
    n = files.copy_to(st, _place(rec), spath, dpath, follow=follow, archive=archive, stdin=sys.stdin.buffer)
    _copied(n, dest, quiet or spath == "-")


def _copied(n, dest, quiet):
    """Docker's closing line on stderr (not with -q, nor for a tar stream)."""
    if not quiet:
        from ..progress import human_size
        sys.stderr.write(f"Successfully copied {human_size(n)} to {dest}\n")


def export(ctx: typer.Context,
           name: str = typer.Argument(..., metavar="CONTAINER", help="Container (or, as before, an image)."),
           output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to a file (default stdout).")):
    """Export a container's filesystem as a tar archive (its image layers and its changes; not
    its volumes).  An image name that is no container's exports the image's filesystem."""
    from ..containers.state import NoSuchContainer
    try:
        rec = _store().get(name)
    except NoSuchContainer:
        from .images import export as export_image
        return export_image(ctx, name, output)
    _export(rec, output)


def container_export(container: str = typer.Argument(..., help="Container name or id."),
                     output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to a file (default stdout).")):
    """Export a container's filesystem as a tar archive."""
    _export(_store().get(container), output)


def _export(rec, output):
    from ..containers import files
    from ..errors import UsageError
    from ..image.fsutil import write_output
    place = _place(rec)
    if output is None or output == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a tar to a terminal", hint="use -o FILE or redirect stdout")
        sys.stdout.flush()
        files.export(None, place, sys.stdout.fileno())
        return
    write_output(output, lambda f: (f.flush(), files.export(None, place, f.fileno())), "export-")


def top(ctx: typer.Context, container: str = typer.Argument(..., help="Container name or id.")):
    """Show a container's processes (host pids), as `ps -ef`, or `ps` with the options given
    after the container ('sbx top NAME -o pid,user,args')."""
    from ..containers import top as _top
    from .format import tabulate
    got = _top.top(_store(), container, list(ctx.args) or None)
    titles, rows = got["Titles"], got["Processes"]
    for line in tabulate(["\t".join(titles)] + ["\t".join(r) for r in rows], minwidth=20):
        typer.echo(line)


# --- prune -------------------------------------------------------------------------------------------

def _print_report(sections, freed):
    from ..progress import human_size
    for title, items in sections:
        if items:
            typer.echo(title)
            for i in items:
                typer.echo(i)
            typer.echo("")
    typer.echo(f"Total reclaimed space: {human_size(freed)}")


def container_prune(force: bool = typer.Option(False, "-f", "--force", help="Do not prompt for confirmation."),
                    filter_: List[str] = typer.Option([], "--filter", help="until=TIME|DURATION, label=KEY[=VALUE], "
                                                                            "label!=KEY[=VALUE] (repeatable).")):
    """Remove all stopped containers."""
    from ..containers import pruning as prune
    flt = prune.check(filter_)  # bad filters fail before the question
    if not confirm(["WARNING! This will remove all stopped containers."], force):
        raise typer.Exit(1)
    ids, freed = prune.containers(flt)
    _print_report([("Deleted Containers:", ids)], freed)


def system_prune(all_: bool = typer.Option(False, "-a", "--all", help="Remove all unused images, not just dangling ones."),
                 force: bool = typer.Option(False, "-f", "--force", help="Do not prompt for confirmation."),
                 volumes: bool = typer.Option(False, "--volumes", help="Also anonymous volumes (sbx keeps none)."),
                 filter_: List[str] = typer.Option([], "--filter", help="until=, label= (containers)")):
    """Remove stopped containers, dangling images (every unused one with -a) and build cache."""
    from ..containers import pruning as prune
    from ..image.store import Store
    from .images import _in_use_hook, _warn
    flt = prune.check(filter_)
    lines = ["WARNING! This will remove:", "  - all stopped containers"]
    if volumes:
        lines.append("  - all anonymous volumes not used by at least one container")
    lines.append("  - all images without at least one container associated to them" if all_
                 else "  - all dangling images")
    lines += ["  - all build cache" if all_ else "  - unused build cache", ""]
    if not confirm(lines, force):
        raise typer.Exit(1)
    ids, freed = prune.containers(flt)
    store = Store()
    removed = store.prune(all_images=all_, in_use=_in_use_hook()) if os.path.isdir(store.root) else []
    cache, cache_bytes = _prune_build_cache(store, everything=all_)
    res = store.gc(timeout=10) if os.path.isdir(store.root) else (0, 0)
    freed += cache_bytes + (res[1] if res else 0)
    _print_report([("Deleted Containers:", ids), ("Deleted Images:", [f"deleted: {i}" for i in removed]),
                   ("Deleted build cache objects:", cache)], freed)
    if res is None:
        _warn("another sbx command is busy; blobs will be collected by a later prune")


def _prune_build_cache(store, everything):
    """Build cache records: all of them (-a), else those whose layer is gone (dangling).
    Never while a build holds the store's content lock."""
    import json
    root = os.path.join(store.root, "buildcache")
    if not os.path.isdir(root):
        return [], 0
    gone, freed = [], 0
    with store.deleting(timeout=10) as ok:
        if not ok:
            return [], 0
        for owner in sorted(os.listdir(root)):
            d = os.path.join(root, owner)
            if not os.path.isdir(d):
                continue
            for key in sorted(os.listdir(d)):
                p = os.path.join(d, key)
                if not everything:
                    try:
                        with open(p) as f:
                            digest = json.load(f)["layer"]["digest"]
                        if store.blobs.has(digest):
                            continue
                    except (OSError, ValueError, KeyError, TypeError):
                        pass  # unreadable: dangling
                try:
                    freed += os.lstat(p).st_size
                    os.unlink(p)
                except OSError:
                    continue
                gone.append(key)
    return gone, freed


def register(app):
    app.command("cp")(cp)
    app.command("export")(export)
    app.command("top", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(top)
    c = group(app, "container", "Manage containers.")
    c.command("cp")(cp)
    c.command("export")(container_export)
    c.command("top", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(top)
    c.command("prune")(container_prune)
    group(app, "system", "Store maintenance.").command("prune")(system_prune)
