"""Image commands: pull, push, images, rmi, tag, inspect, login, logout, save, load, import,
``image prune``, ``image export``, ``system check``, ``system df``.

Thin on purpose: parse arguments, call :mod:`sandbox.image` / :mod:`sandbox.registry`, print. Errors are
:class:`SandboxError` (message + hint, exit code 125) and are printed once by the top-level entry point.
Heavy modules are imported inside the commands so that ``sbx --help`` and the launcher stay fast.

The store root comes from the Typer context object (``ctx.obj.root`` or ``ctx.obj["root"]``, set by the
main app's ``--root``), else ``SBX_ROOT``, else the XDG default.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import typer

from sandbox.errors import SandboxError, UsageError
from sandbox.progress import bar as _bar, human_size  # pull's bars and sizes, as in other progress

if TYPE_CHECKING:
    from sandbox.image.store import Image, Store
    from sandbox.registry.transport import RegistryOptions

# --- shared helpers ---------------------------------------------------------------------------------


def _store(ctx: typer.Context) -> Store:
    from sandbox.image.store import Store
    from sandbox.runtime import userns_worker

    root = None
    c: Any = ctx
    while c is not None and root is None:
        obj = c.obj
        if isinstance(obj, dict):
            root = obj.get("root")
        elif obj is not None:
            root = getattr(obj, "root", None)
        c = c.parent
    store = Store(root, workers=userns_worker.mapped)
    if os.path.isdir(store.root):
        store.cleanup()
    return store


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _parse_bool(value: str, option: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    from sandbox.image.errors import ImageError

    raise ImageError(f"invalid value {value!r} for {option}", hint=f"use {option}=true or {option}=false")


def _registry_options(tls_verify: str, cert_dir: str | None, authfile: str | None, creds: str | None,
                      username: str | None = None, password: str | None = None) -> RegistryOptions:
    from sandbox.registry.auth import Credentials
    from sandbox.registry.transport import RegistryOptions

    credentials = None
    if creds:
        user, sep, pw = creds.partition(":")
        if not sep or not user:
            from sandbox.image.errors import AuthError

            raise AuthError("--creds must be USERNAME:PASSWORD")
        credentials = Credentials(user, pw, "--creds")
    elif username is not None and password is not None:
        credentials = Credentials(username, password, "command line")
    return RegistryOptions(
        tls_verify=_parse_bool(tls_verify, "--tls-verify"),
        certs_dirs=(cert_dir,) if cert_dir else None,
        credentials=credentials,
        auth_files=(authfile,) if authfile else None,
    )


TLS_OPT = typer.Option("true", "--tls-verify", metavar="BOOL",
                       help="Verify TLS certificates; false also allows plain HTTP (--tls-verify=false).")
CERT_DIR_OPT = typer.Option(None, "--cert-dir", help="Directory with CA certificates (*.crt) and client certs.")
AUTHFILE_OPT = typer.Option(None, "--authfile", help="Credentials file (default: containers auth.json, ~/.docker/config.json).")
CREDS_OPT = typer.Option(None, "--creds", help="USERNAME:PASSWORD for the registry.")


def human_since(created: str | None, now: float | None = None) -> str:
    """Docker's "N units ago" (units.HumanDuration)."""
    ts = parse_time(created)
    if ts is None:
        return "N/A"
    d = max(0.0, (now or time.time()) - ts)
    if d < 1:
        return "Less than a second ago"
    if d < 60:
        return f"{int(d)} seconds ago" if int(d) != 1 else "1 second ago"
    m = d / 60
    if m < 2:
        return "About a minute ago"
    if m < 60:
        return f"{int(m)} minutes ago"
    h = m / 60
    if h < 2:
        return "About an hour ago"
    if h < 48:
        return f"{int(h)} hours ago"
    days = h / 24
    if days < 14:
        return f"{int(days)} days ago"
    if days < 60:
        return f"{int(days / 7)} weeks ago"
    if days < 365 * 2:
        return f"{int(days / 30)} months ago"
    return f"{int(days / 365)} years ago"


def parse_time(s: str | None) -> float | None:
    if not s:
        return None
    from datetime import datetime

    t = s.strip().replace("Z", "+00:00")
    # Python < 3.11 cannot parse nanoseconds; trim fractional seconds to microseconds.
    if "." in t:
        head, frac = t.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        rest = frac[len(digits):]
        t = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        return None


class _Progress:
    """Pull/push progress: redrawn bars when stdout is a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool, verb: str) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty() and not quiet
        self.verb = verb
        self.state: dict[str, list[Any]] = {}
        self.drawn = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, event: str, digest: str, amount: int = 0, total: int | None = None) -> None:
        if self.quiet:
            return
        with self.lock:  # called from the download/upload threads
            self._event(event, digest, amount, total)

    def _event(self, event: str, digest: str, amount: int, total: int | None) -> None:
        short = digest[7:19]
        if event == "extract":  # unpacking a downloaded layer: a bar on a terminal only
            st = self.state.setdefault(short, [0, total, "Extracting"])
            if st[2] != "Extracting":
                st[:] = [0, total, "Extracting"]
            st[0] += amount
            if self.tty and time.monotonic() - self.last > 0.1:
                self._draw()
            return
        if event in ("download", "upload"):
            st = self.state.setdefault(short, [0, total, self.verb])
            st[0] = 0 if amount < 0 else st[0] + amount
            if self.tty and time.monotonic() - self.last > 0.1:
                self._draw()
            return
        words = {"exists": "Already exists", "mounted": "Mounted from another repository",
                 "downloaded": "Download complete", "uploaded": "Pushed", "unpacked": "Unpacked"}
        if event in words:
            st = self.state.setdefault(short, [0, total, ""])
            st[2] = words[event]
            if self.tty:
                self._draw()
            elif event != "unpacked":  # plain output stays as it was before pulls unpacked
                typer.echo(f"{short}: {words[event]}")

    def _draw(self) -> None:
        self.last = time.monotonic()
        out = sys.stdout
        if self.drawn:
            out.write(f"\x1b[{self.drawn}A")
        for short, (done, total, what) in self.state.items():
            if what in (self.verb, "Extracting") and total:
                line = f"{short}: {what} [{_bar(done, total)}] {human_size(done)}/{human_size(total)}"
            else:
                line = f"{short}: {what}"
            out.write("\x1b[2K" + line + "\n")
        self.drawn = len(self.state)
        out.flush()


def _warn(msg: str) -> None:
    _err(f"warning: {msg}")


def _in_use_hook() -> Any:
    """Who uses an image: kept containers made from it, and running sandboxes (which hold a
    shared lock on it): ``image_id -> [(container id or None, running)]``."""
    from sandbox.containers.store import ContainerStore
    from sandbox.runtime.image_root import image_users
    containers = [(c.id, c.doc.get("ImageID"), c.running) for c in ContainerStore().list()]
    return lambda image_id: image_users(image_id, containers)


# --- commands ---------------------------------------------------------------------------------------

def pull(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Image reference, e.g. busybox or registry:5000/repo:tag."),
    platform: Optional[str] = typer.Option(None, "--platform", help="os/arch[/variant] to pull from a multi-platform image."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image id."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Parallel layer downloads."),
    tls_verify: str = TLS_OPT,
    cert_dir: Optional[str] = CERT_DIR_OPT,
    authfile: Optional[str] = AUTHFILE_OPT,
    creds: Optional[str] = CREDS_OPT,
) -> None:
    """Pull an image from a registry."""
    from sandbox.image import platform as plat
    from sandbox.image import reference as refs
    from sandbox.registry.pull import PullOptions
    from sandbox.registry.pull import pull as do_pull
    from sandbox.runtime.image_root import owner_name

    store = _store(ctx)
    ref = refs.parse(image)
    # As Docker does, the layers are unpacked now (for the caller's default id mapping), so the
    # first run starts at once; a run with another mapping unpacks its own copy.
    opts = PullOptions(platform=plat.parse(platform) if platform else None, jobs=jobs, owner=owner_name(),
                       registry=_registry_options(tls_verify, cert_dir, authfile, creds))
    if not quiet:
        typer.echo(f"Pulling {ref.familiar()}")
    prog = _Progress(quiet, "Downloading")
    img = do_pull(store, image, opts, progress=prog, warn=_warn)
    if quiet:
        typer.echo(img.id)
        return
    typer.echo(f"Digest: {img.manifest_digest}")
    typer.echo(f"Image ID: {img.id}")
    typer.echo(str(ref))


def push(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Local image to push."),
    destination: Optional[str] = typer.Argument(None, help="Where to push it (default: the image's name)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the manifest digest."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Parallel blob uploads."),
    chunk_size: Optional[str] = typer.Option(None, "--chunk-size", help="Upload blobs bigger than this in chunks (e.g. 16M)."),
    digestfile: Optional[str] = typer.Option(None, "--digestfile", help="Write the pushed manifest digest to this file."),
    tls_verify: str = TLS_OPT,
    cert_dir: Optional[str] = CERT_DIR_OPT,
    authfile: Optional[str] = AUTHFILE_OPT,
    creds: Optional[str] = CREDS_OPT,
) -> None:
    """Push an image to a registry; the pushed manifest digest equals the local one."""
    from sandbox.registry.push import PushOptions
    from sandbox.registry.push import push as do_push

    store = _store(ctx)
    opts = PushOptions(jobs=jobs, chunk_size=_parse_size(chunk_size) if chunk_size else None,
                       registry=_registry_options(tls_verify, cert_dir, authfile, creds))
    target, digest = do_push(store, image, destination, opts, progress=_Progress(quiet, "Pushing"))
    if digestfile:
        with open(digestfile, "w") as f:
            f.write(digest)
    if quiet:
        typer.echo(digest)
    else:
        typer.echo(f"{target.familiar()}: digest: {digest}")


def _parse_size(s: str) -> int:
    s = s.strip().upper().rstrip("B")
    mult = 1
    if s and s[-1] in "KMG":
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[s[-1]]
        s = s[:-1]
    try:
        n = int(float(s) * mult)
    except ValueError:
        from sandbox.image.errors import ImageError

        raise ImageError(f"invalid size {s!r}", hint="use a number with an optional K, M or G suffix") from None
    if n < 1:
        from sandbox.image.errors import ImageError

        raise ImageError("the chunk size must be positive")
    return n


def _rows(images: list[Image]) -> list[dict[str, Any]]:
    from sandbox.image import reference as refs

    rows = []
    for img in images:
        base = {"ID": img.short_id, "FullID": img.id, "CreatedAt": img.created or "",
                "CreatedSince": human_since(img.created), "Size": human_size(img.size), "SizeBytes": img.size,
                "Digest": "<none>"}
        digests = {refs.parse(d).name: refs.parse(d).digest for d in img.repo_digests}
        if img.repo_tags:
            for t in img.repo_tags:
                r = refs.parse(t)
                rows.append({**base, "Repository": r.familiar_name, "Tag": r.tag,
                             "Digest": digests.get(r.name) or "<none>"})
        elif img.repo_digests:
            for d in img.repo_digests:
                r = refs.parse(d)
                rows.append({**base, "Repository": r.familiar_name, "Tag": "<none>", "Digest": r.digest})
        else:
            rows.append({**base, "Repository": "<none>", "Tag": "<none>"})
    return rows


IMAGE_FIELDS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
                "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Size": "SIZE", "VirtualSize": "VIRTUAL SIZE"}


def images(
    ctx: typer.Context,
    repository: Optional[str] = typer.Argument(None, help="Only images of this repository."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only image ids."),
    fmt: Optional[str] = typer.Option(None, "--format", help="'json' (one object per line), 'table' (default), or a "
                                                              "Go template: '{{.Repository}}:{{.Tag}}', 'table {{.ID}}\\t{{.Size}}'."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Full image ids."),
    digests: bool = typer.Option(False, "--digests", help="Show digests."),
    filter_: list[str] = typer.Option([], "-f", "--filter",
                                      help="dangling=true|false, reference=PATTERN (app:*), label=K[=V]."),
) -> None:
    """List local images."""
    from sandbox.containers import filters as _filters

    f = _filters.parse(filter_, IMAGE_FILTERS)
    store = _store(ctx)
    errors: list[Any] = []
    imgs = [i for i in store.images(errors) if _image_matches(i, f)]
    _list_images(imgs, repository, quiet, fmt, no_trunc, digests, f.get("reference"))
    if errors:  # the readable images are listed; a broken one is an error, not silence
        from sandbox.image.errors import StoreError

        e = errors[0]
        if len(errors) > 1:
            e = StoreError(f"{len(errors)} images cannot be read; the first: {e}", hint=e.hint)
        raise e


IMAGE_FILTERS = ("dangling", "reference", "label")


def _image_matches(img: Image, f: dict[str, list[str]]) -> bool:
    """`docker images --filter` on one image: dangling (no tag) and label; reference is by row."""
    from sandbox.containers import filters as _filters

    for v in f.get("dangling", []):
        if v.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter 'dangling={v}'", hint="give dangling=true or dangling=false")
        if (v.lower() in ("true", "1")) == bool(img.repo_tags):
            return False
    labels = (img.config.get("config") or {}).get("Labels") or {}
    return not f.get("label") or _filters.match_labels(f["label"], labels)


def _list_images(imgs: list[Image], repository: str | None, quiet: bool, fmt: str | None, no_trunc: bool,
                 digests: bool, references: list[str] | None = None) -> None:
    import fnmatch

    from sandbox.cli import format as _format
    from sandbox.image import reference as refs

    template = _format.compile(fmt, IMAGE_FIELDS)  # a bad template fails first
    rows = _rows(imgs)
    if references:  # Docker's: a pattern matches the name, or the name:tag
        rows = [r for r in rows if any(fnmatch.fnmatchcase(r["Repository"], p) or
                                       fnmatch.fnmatchcase(f"{r['Repository']}:{r['Tag']}", p) for p in references)]
    if repository:
        want = refs.parse(repository, default_tag=False)
        rows = [r for r in rows if r["Repository"] == want.familiar_name and (not want.tag or r["Tag"] == want.tag)]
    if no_trunc:
        for r in rows:
            r["ID"] = r["FullID"]
    if quiet:
        seen: list[str] = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        for i in seen:
            typer.echo(i)
        return
    for r in rows:
        r["VirtualSize"] = r["Size"]
    default = "table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if digests else "") + \
        "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    for line in (template or _format.Template(default, IMAGE_FIELDS)).render(rows):
        typer.echo(line)


def rmi(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Images (references or ids) to remove."),
    force: bool = typer.Option(False, "-f", "--force", help="Remove even if used or tagged several times."),
) -> None:
    """Remove images."""
    from sandbox.image import reference as refs
    from sandbox.image.errors import ImageError

    store = _store(ctx)
    failed: ImageError | None = None
    for n in names:
        try:
            untagged, deleted = store.remove(n, force=force, in_use=_in_use_hook())
        except ImageError as e:
            if len(names) == 1:
                raise
            _err(f"sbx: {e}")
            failed = e
            continue
        for u in untagged:
            typer.echo(f"Untagged: {refs.parse(u).familiar()}")
        for d in deleted:
            typer.echo(f"Deleted: {d}")
    store.gc(timeout=2)
    if failed is not None:
        raise typer.Exit(getattr(failed, "exit_code", 125))


def tag(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Existing image (reference or id)."),
    target: str = typer.Argument(..., help="New reference, e.g. registry:5000/repo:tag."),
) -> None:
    """Create a reference TARGET that refers to SOURCE."""
    _store(ctx).tag(source, target)


def inspect_doc(store: Store, img: Image) -> dict[str, Any]:
    """A ``docker image inspect``-shaped description of an image."""
    from sandbox.image import reference as refs

    cfg = img.config
    return {
        "Id": img.id,
        "RepoTags": [refs.parse(t).familiar() for t in img.repo_tags],
        "RepoDigests": [refs.parse(d).familiar() for d in img.repo_digests],
        "Parent": "",
        "Comment": (cfg.get("history") or [{}])[-1].get("comment", "") if cfg.get("history") else "",
        "Created": cfg.get("created", ""),
        "Author": cfg.get("author", ""),
        "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", ""),
        "Variant": cfg.get("variant"),
        "Os": cfg.get("os", ""),
        "Size": img.size,
        "RootFS": {"Type": (cfg.get("rootfs") or {}).get("type", "layers"), "Layers": img.diff_ids},
        "Metadata": {"LastTagTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(img.record.get("added", 0)))},
        "Manifest": {"Digest": img.manifest_digest, "MediaType": img.manifest.get("mediaType", ""),
                     "Layers": [{"Digest": d["digest"], "Size": d.get("size"), "MediaType": d.get("mediaType")}
                                for d in img.layers]},
        "GraphDriver": {"Name": "overlay", "Data": {
            "LowerDirs": [store.layer_path(d) + "/root" for d in reversed(img.diff_ids)]}},
    }


def _container_or_image_doc(store: Store, name: str) -> dict[str, Any]:
    """Docker's order: a container of that name or id first, then an image."""
    from sandbox.containers import lifecycle
    from sandbox.containers.state import NoSuchContainer
    from sandbox.image.errors import ImageNotFound

    try:
        return lifecycle.inspect(None, name)
    except NoSuchContainer:
        pass
    try:
        return inspect_doc(store, store.resolve(name))
    except (ImageNotFound, UsageError):  # neither a container nor an image (nor a reference)
        raise NoSuchObject(f"No such object: {name}",
                           hint="'sbx ps -a' lists containers, 'sbx images' images") from None


class NoSuchObject(SandboxError):
    exit_code = 1  # Docker's, as for a missing container


def inspect(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Containers or images to inspect."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="Template, e.g. '{{.Id}}' or '{{json .Config}}'."),
) -> None:
    """Show container or image details as JSON (like `docker inspect`): a kept container's
    state, configuration and confinement (HostConfig.SecurityOpt names its seccomp profile)."""
    from sandbox.cli import format as _format

    store = _store(ctx)
    _format.show_each(names, lambda n: _container_or_image_doc(store, n), fmt)


def login(
    server: str = typer.Argument("docker.io", help="Registry host[:port]."),
    username: Optional[str] = typer.Option(None, "-u", "--username"),
    password: Optional[str] = typer.Option(None, "-p", "--password", help="Insecure: prefer --password-stdin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="File to store credentials in (default ~/.docker/config.json)."),
    tls_verify: str = TLS_OPT,
    cert_dir: Optional[str] = CERT_DIR_OPT,
) -> None:
    """Log in to a registry; credentials are checked, then stored (mode 0600)."""
    from sandbox.image.errors import AuthError
    from sandbox.registry.auth import Credentials, save_login
    from sandbox.registry.client import RegistryClient

    domain = _login_domain(server)
    if password_stdin:
        if password:
            raise AuthError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise AuthError("no username given", hint="use -u USERNAME")
        username = typer.prompt("Username")
    if password is None:
        if not sys.stdin.isatty():
            raise AuthError("no password given", hint="use --password-stdin")
        password = typer.prompt("Password", hide_input=True)
    elif not password_stdin:
        _warn("using --password on the command line is insecure; use --password-stdin")
    if not username or not password:
        raise AuthError("username and password must not be empty")
    creds = Credentials(username, password, "login")
    opts = _registry_options(tls_verify, cert_dir, None, None, username, password)
    with RegistryClient(domain, opts) as client:
        client.ping()
        if client.transport.auth.challenge is None:
            _warn(f"registry {domain} did not ask for credentials; storing them anyway")
    path = save_login(domain, creds, authfile)
    typer.echo(f"Login Succeeded (credentials stored in {path})")


def _login_domain(server: str) -> str:
    from sandbox.image import reference as refs

    s = server.strip()
    for prefix in ("https://", "http://"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    s = s.split("/", 1)[0]
    if s in ("index.docker.io", "registry-1.docker.io"):
        s = refs.DEFAULT_DOMAIN
    return s


def logout(
    server: str = typer.Argument("docker.io", help="Registry host[:port]."),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="Credentials file (default ~/.docker/config.json)."),
) -> None:
    """Forget the stored credentials of a registry."""
    from sandbox.image.errors import AuthError
    from sandbox.registry.auth import remove_login

    domain = _login_domain(server)
    if not remove_login(domain, authfile):
        raise AuthError(f"not logged in to {domain}")
    typer.echo(f"Removing login credentials for {domain}")


def save(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Images to save."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="File (or directory for oci-dir); '-' for stdout."),
    fmt: str = typer.Option("docker-archive", "--format", help="docker-archive, oci-archive or oci-dir."),
) -> None:
    """Save images to an archive."""
    from sandbox.image import archive
    from sandbox.image.errors import ArchiveError

    store = _store(ctx)
    if output is None:
        if sys.stdout.isatty():
            raise ArchiveError("refusing to write an archive to a terminal", hint="use -o FILE or redirect stdout")
        output = "-"
    archive.save(store, names, output, fmt)


def load(
    ctx: typer.Context,
    input_: Optional[str] = typer.Option(None, "-i", "--input",
                                         help="docker-archive, oci-archive or OCI layout directory (default: stdin)."),
    repository: Optional[str] = typer.Option(None, "--repository", help="Name for OCI images tagged only with a tag."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Load images from an archive or an OCI layout directory."""
    from sandbox.image import archive
    from sandbox.image import reference as refs
    from sandbox.runtime.image_root import owner_name

    store = _store(ctx)
    spool = None
    if input_ in (None, "-"):  # Docker's: the archive on stdin (`sbx save IMG | sbx load`)
        spool = _spool_stdin(store)
        input_ = f"/proc/self/fd/{spool.fileno()}"
    try:
        loaded = archive.load(store, input_, repository=repository, warn=_warn, owner=owner_name())
    finally:
        if spool is not None:
            spool.close()
    for img, names in loaded:
        if names:
            for n in names:
                typer.echo(n if quiet else f"Loaded image: {refs.parse(n).familiar()}")
        else:
            typer.echo(img.id if quiet else f"Loaded image ID: {img.id}")


HISTORY_FIELDS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
                  "Size": "SIZE", "Comment": "COMMENT"}


def history(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Image (name, id or digest)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only image ids."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Full ids and commands."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Go-template subset, 'table ...' or json."),
) -> None:
    """Show the history of an image: one line per step, the newest first (`docker history`)."""
    from sandbox.cli import format as _format

    template = _format.compile(fmt, HISTORY_FIELDS)
    store = _store(ctx)
    img = store.resolve(name)
    sizes = store.layer_sizes(img.diff_ids)
    packed = [int(d.get("size") or 0) for d in img.layers]
    layers = iter(range(len(img.diff_ids)))
    rows = []
    for h in img.config.get("history") or []:
        size = 0
        if not h.get("empty_layer"):
            i = next(layers, None)
            if i is not None:
                size = sizes.get(img.diff_ids[i], packed[i] if i < len(packed) else 0)
        by = h.get("created_by", "")
        if not no_trunc and len(by) > 45:
            by = by[:44] + "…"
        created = h.get("created") or ""
        rows.append({"ID": "<missing>", "CreatedAt": created, "CreatedSince": human_since(created), "CreatedBy": by,
                     "Size": human_size(size), "Comment": h.get("comment", "")})
    rows.reverse()
    if rows:
        rows[0]["ID"] = img.id if no_trunc else img.short_id
    else:
        rows = [{"ID": img.short_id, "CreatedAt": img.created or "", "CreatedSince": human_since(img.created),
                 "CreatedBy": "", "Size": human_size(img.size), "Comment": ""}]
    if quiet:
        for r in rows:
            typer.echo(r["ID"])
        return
    if template is None:
        template = _format.Template("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
                                    HISTORY_FIELDS)
    for line in template.render(rows):
        typer.echo(line)


def _spool_stdin(store: Store):
    """stdin copied to an unnamed file in the store (an archive is read out of order): gone with
    the process, whatever ends it."""
    import shutil
    import tempfile

    from sandbox.image.errors import ArchiveError

    if sys.stdin.isatty():
        raise ArchiveError("requested load from stdin, but stdin is a terminal", hint="use -i FILE or pipe an archive in")
    store.init()
    f = tempfile.TemporaryFile(dir=store.root)
    shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    if not f.tell():
        f.close()
        raise ArchiveError("requested load from stdin, but stdin is empty", hint="use -i FILE or pipe an archive in")
    f.flush()
    return f


def _apply_change(cfg: dict[str, Any], change: str) -> None:
    """``--change`` for import: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL (Dockerfile syntax, JSON or
    shell form for CMD/ENTRYPOINT)."""
    from sandbox.image.errors import ImageError

    word, _, rest = change.strip().partition(" ")
    word, rest = word.upper(), rest.strip()
    if word in ("CMD", "ENTRYPOINT"):
        try:
            val = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
        except ValueError:
            raise ImageError(f"--change {change!r}: invalid JSON array") from None
        cfg["Cmd" if word == "CMD" else "Entrypoint"] = val
    elif word == "ENV":
        k, eq, v = rest.partition("=")
        if not eq:
            k, _, v = rest.partition(" ")
        cfg.setdefault("Env", []).append(f"{k.strip()}={v.strip()}")
    elif word == "WORKDIR":
        cfg["WorkingDir"] = rest
    elif word == "USER":
        cfg["User"] = rest
    elif word == "LABEL":
        k, _, v = rest.partition("=")
        cfg.setdefault("Labels", {})[k.strip()] = v.strip().strip('"')
    else:
        raise ImageError(f"--change {change!r}: unsupported instruction",
                         hint="supported: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL")


def import_(
    ctx: typer.Context,
    tarball: str = typer.Argument(..., help="Root filesystem tar (plain, gzip or zstd), or '-' for stdin."),
    name: Optional[str] = typer.Argument(None, help="Reference for the new image, e.g. myimage:1."),
    change: list[str] = typer.Option([], "--change", "-c", help="Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL."),
) -> None:
    """Create a single-layer image from a root filesystem tarball."""
    from sandbox.image.tarball import import_rootfs
    from sandbox.runtime.image_root import owner_name

    cfg: dict[str, Any] = {}
    for c in change:
        _apply_change(cfg, c)
    img = import_rootfs(_store(ctx), tarball, name, config=cfg, warn=_warn, owner=owner_name())
    typer.echo(img.id)


def export(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Image whose flattened root filesystem to write."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (default stdout)."),
) -> None:
    """Write an image's root filesystem (all layers merged) as a tar."""
    from sandbox.image.errors import ArchiveError
    from sandbox.image.fsutil import write_output
    from sandbox.image.tarball import export_image

    store = _store(ctx)
    img = store.resolve(image)
    if output is None or output == "-":
        if sys.stdout.isatty():
            raise ArchiveError("refusing to write a tar to a terminal", hint="use -o FILE or redirect stdout")
        export_image(store, img, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    write_output(output, lambda f: export_image(store, img, f), "export-")


def prune(
    ctx: typer.Context,
    all_images: bool = typer.Option(False, "-a", "--all", help="Remove all images no container uses, not just dangling ones."),
    force: bool = typer.Option(False, "-f", "--force", help="Do not prompt."),
) -> None:
    """Remove unused images and free their space."""
    store = _store(ctx)
    if not force and sys.stdin.isatty():
        what = "all images without at least one container" if all_images else "all dangling images"
        if not typer.confirm(f"WARNING! This will remove {what}. Are you sure?", default=False):
            raise typer.Exit(1)
    removed = store.prune(all_images=all_images, in_use=_in_use_hook())
    res = store.gc(timeout=10)
    if removed:
        typer.echo("Deleted Images:")
        for i in removed:
            typer.echo(f"deleted: {i}")
    freed = res[1] if res else 0
    typer.echo(f"Total reclaimed space: {human_size(freed)}")
    if res is None:
        _warn("another sbx command is busy; blobs will be collected by a later prune")


def _check_creatable(root: str) -> None:
    """A store that does not exist yet is fine if it can be made: a directory can be made in its
    nearest existing parent (else `check` would call ok a store no command can use)."""
    from sandbox.image.errors import StoreError

    parent = os.path.dirname(root)
    while parent and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    import tempfile

    try:  # access() is not enough: root may "write" /proc, where mkdir still fails
        os.rmdir(tempfile.mkdtemp(prefix=".sbx-probe-", dir=parent))
    except OSError as e:
        raise StoreError(f"no image store at {root}, and it cannot be created there ({parent}: {e.strerror})",
                         hint="set SBX_ROOT (or --root) to a writable directory") from None


def check(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Delete what is corrupt so that pulling again fixes it."),
) -> None:
    """Verify every blob digest, image record, reference and layer directory of the store."""
    store = _store(ctx)
    if not os.path.isdir(store.root):
        _check_creatable(store.root)
        typer.echo(f"store {store.root}: empty (nothing stored yet)")
        return
    problems = store.check(repair=repair)
    for p in problems:
        typer.echo(str(p))
    left = [p for p in problems if not p.repaired]
    if not problems:
        typer.echo(f"store {store.root}: ok")
    elif left:
        typer.echo(f"{len(left)} problem(s) found" + ("" if repair else "; run `sbx system check --repair`"))
        raise typer.Exit(1)
    else:
        typer.echo(f"{len(problems)} problem(s) repaired; pull or load affected images again")


def df(
    ctx: typer.Context,
    fmt: Optional[str] = typer.Option(None, "--format", help="'json' for machine-readable output."),
) -> None:
    """Show the disk space used by images, blobs and unpacked layers."""
    store = _store(ctx)
    info = store.df() if os.path.isdir(store.root) else {
        "root": store.root, "images": 0, "dangling_images": 0,
        "blobs": {"count": 0, "size": 0, "reclaimable": 0}, "layers": {"count": 0, "size": 0, "reclaimable": 0}}
    if fmt == "json":
        typer.echo(json.dumps(info))
        return
    rows = [["TYPE", "TOTAL", "SIZE", "RECLAIMABLE"],
            ["Images", str(info["images"]), "", f"{info['dangling_images']} dangling"],
            ["Blobs", str(info["blobs"]["count"]), human_size(info["blobs"]["size"]),
             human_size(info["blobs"]["reclaimable"])],
            ["Layers", str(info["layers"]["count"]), human_size(info["layers"]["size"]),
             human_size(info["layers"]["reclaimable"])]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def unshare(ctx: typer.Context) -> None:
    """Run a shell (or CMD) as root of your mapped user namespace, e.g. to remove files of
    subordinate ids by hand (podman's `unshare`)."""
    import sandbox
    from sandbox.runtime.paths import data_root

    cmd = list(ctx.args) or [os.environ.get("SHELL") or "/bin/sh"]
    env = dict(os.environ, SBX_ROOT=data_root())
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    p = sandbox.run(cmd, rootfs="/", network="host", namespaces=("user",), userns="auto", env=env, cwd=cwd)
    raise typer.Exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)


# What sbx keeps in its data directory (`system reset` removes these, and temp entries).
DATA_ENTRIES = ("blobs", "images", "layers", "tmp", "containers", "buildcache", "inuse", "runcache",
                "names", "repositories.json", "lock", "gc.lock")


def _refuse_unless_store(root: str) -> None:
    """A --root/SBX_ROOT given by hand may be any directory: reset only one that holds sbx's
    data and nothing else, so a typo never deletes a user's own 'images' or 'tmp'."""
    from sandbox.errors import UsageError
    from sandbox.image.fsutil import TMP_PREFIX

    names = os.listdir(root)
    foreign = sorted(n for n in names if n not in DATA_ENTRIES and not n.startswith(TMP_PREFIX))
    marker = {"repositories.json", "blobs", "containers"} & set(names)
    if foreign or (names and not marker):
        what = f"it holds {foreign[0]!r}, which is not sbx's" if foreign else "it holds no sbx store"
        raise UsageError(f"refusing to reset {root}: {what}",
                         hint="check --root / SBX_ROOT: system reset removes an sbx data directory")


def reset(
    ctx: typer.Context,
    force: bool = typer.Option(False, "-f", "--force", help="Do not ask for confirmation."),
) -> None:
    """Remove all of your sbx data: containers, images, layers and caches."""
    from sandbox.errors import UsageError
    from sandbox.image.fsutil import TMP_PREFIX
    from sandbox import config
    from sandbox.runtime import flocks
    from sandbox.containers.store import ContainerStore

    store = _store(ctx)
    root = store.root
    # Every sbx run is a container (foreground ones too), so the records name all that run.
    running = [c.name for c in ContainerStore(root).list() if c.running] if os.path.isdir(root) else []
    if running:
        raise UsageError(f"containers are running: {', '.join(running)}",
                         hint=f"stop them first (`sbx stop {' '.join(running)}`)")
    try:
        busy = [n for n in os.listdir(os.path.join(root, "inuse"))
                if flocks.held(os.path.join(root, "inuse", n), holders_shared=True)]
    except OSError:
        busy = []
    if busy:
        raise UsageError(f"sandboxes are running image {', '.join('sha256:' + b[:12] for b in busy)}",
                         hint="wait for them to exit")
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = os.path.join(xdg_cache, "sbx")
    if not force:
        if not sys.stdin.isatty():
            raise UsageError("system reset removes all containers, images and caches; refusing without a "
                             "confirmation", hint="run it on a terminal, or pass -f")
        typer.echo(f"WARNING! This will remove all of sbx's data:\n - containers, images, layers, build cache "
                   f"in {root}\n - the cache in {cache}")
        if not typer.confirm("Are you sure you want to continue?", default=False):
            raise typer.Exit(1)
    everything = root == config.xdg_data_root()  # the default directory holds only sbx's data
    existed = os.path.isdir(root)
    if existed and not everything:
        _refuse_unless_store(root)
    # The compiled-seccomp cache is shared by every store of the user: only a reset of the
    # default store removes it.
    doomed = [cache] if everything and os.path.isdir(cache) else []
    if os.path.isdir(root):
        with store.deleting(timeout=0) as ok:
            if not ok:
                raise UsageError("another sbx command is using the store", hint="try again when it is done")
            doomed += [os.path.join(root, n) for n in sorted(os.listdir(root))
                       if everything or n in DATA_ENTRIES or n.startswith(TMP_PREFIX)]
            left = store.remove_trees(doomed)
    else:
        left = store.remove_trees(doomed)
    from sandbox.runtime import keeper
    keeper.stop()  # the kept user namespace's process (podman's pause process); restarted on demand
    if left:
        from sandbox.image.errors import StoreError

        raise StoreError(f"cannot remove {left[0]}" + (f" and {len(left) - 1} more" if len(left) > 1 else ""),
                         hint=f"remove it with `sbx unshare rm -rf {left[0]}`")
    try:
        os.rmdir(root)  # only if nothing else is in it
    except OSError:
        pass
    if not existed:
        typer.echo(f"There is no sbx data in {root}" + (f"; removed the cache in {cache}" if doomed else ""))
        return
    typer.echo(f"Removed all sbx data in {root}")


def register(app: typer.Typer) -> None:
    """Add the image commands, and the ``image`` and ``system`` sub-apps, to ``app``."""
    for name, fn in (("pull", pull), ("push", push), ("images", images), ("rmi", rmi), ("tag", tag),
                     ("inspect", inspect), ("login", login), ("logout", logout), ("save", save), ("load", load),
                     ("import", import_), ("history", history)):  # `sbx export` is cli/files.py's
        app.command(name)(fn)
    app.command("unshare", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                             "help_option_names": []})(unshare)
    image_app = typer.Typer(help="Manage images.", no_args_is_help=True)
    image_app.command("prune")(prune)
    for name, fn in (("ls", images), ("pull", pull), ("push", push), ("rm", rmi), ("tag", tag),
                     ("inspect", inspect), ("save", save), ("load", load), ("import", import_), ("export", export),
                     ("history", history)):
        image_app.command(name)(fn)
    app.add_typer(image_app, name="image")
    system_app = typer.Typer(help="Store maintenance.", no_args_is_help=True)
    system_app.command("check")(check)
    system_app.command("df")(df)
    system_app.command("reset")(reset)
    app.add_typer(system_app, name="system")


def main(argv: list[str] | None = None) -> int:
    """Run the image commands on their own (``python -m sandbox.cli.images``), printing SandboxError the
    way the main CLI does: ``sbx: MESSAGE`` and ``sbx: hint: ...``, exit code 125."""
    from sandbox.image.errors import SandboxError

    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

    @app.callback()
    def _root(ctx: typer.Context,
              root: Optional[str] = typer.Option(None, "--root", help="Store root (default $SBX_ROOT or ~/.local/share/sbx).")) -> None:
        ctx.obj = {"root": root}

    register(app)
    app.command("export")(export)  # on its own, `export` is the image's (sbx's is cli/files.py's)
    try:
        app(args=argv, prog_name="sbx", standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except SandboxError as e:
        _err(f"sbx: {e}")
        if getattr(e, "hint", None):
            _err(f"sbx: hint: {e.hint}")
        return int(getattr(e, "exit_code", 125))
    except KeyboardInterrupt:
        _err("sbx: interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
