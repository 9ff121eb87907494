"""/images/... and /build: Docker's image endpoints on the image store (`sandbox.image`), the
registry client (`sandbox.registry`) and the builder (`sandbox.build`).  Pulls, pushes, loads
and builds answer with Docker's streaming JSON (`status`/`progressDetail`, `stream`, `aux`,
`error`/`errorDetail`), so clients show progress and see failures where Docker puts them."""
import base64
import json
import os
import queue
import shutil
import tempfile
import threading
import time

from .. import config
from ..errors import SandboxError
from .http import ApiError, message_of, not_implemented, status_of

_NAME = r"(.+?)"


def _store():
    from ..runtime.image_root import image_store
    s = image_store()
    s.init()
    return s


def _in_use():
    from ..containers.store import ContainerStore
    from ..runtime.image_root import image_users
    cs = [(c.id, c.doc.get("ImageID"), c.running) for c in ContainerStore().list()]
    return lambda image_id: image_users(image_id, cs)


def _created(img):
    from ..containers.state import parse_time
    return int(parse_time(img.created) or 0) if img.created else 0


def _familiar(names):
    from ..image import reference as refs
    return [refs.parse(n).familiar() for n in names]


def summary(img):
    cfg = img.config.get("config") or {}
    return {"Id": img.id, "ParentId": "", "RepoTags": _familiar(img.repo_tags) or None,
            "RepoDigests": _familiar(img.repo_digests) or None, "Created": _created(img), "Size": img.size,
            "SharedSize": -1, "VirtualSize": img.size, "Labels": cfg.get("Labels") or {}, "Containers": -1}


def inspect_doc(store, img):
    cfg = img.config
    hist = cfg.get("history") or []
    return {
        "Id": img.id, "RepoTags": _familiar(img.repo_tags), "RepoDigests": _familiar(img.repo_digests),
        "Parent": "", "Comment": hist[-1].get("comment", "") if hist else "", "Created": cfg.get("created", ""),
        "Container": "", "ContainerConfig": {}, "DockerVersion": "", "Author": cfg.get("author", ""),
        "Config": cfg.get("config") or {}, "Architecture": cfg.get("architecture", ""),
        "Variant": cfg.get("variant"), "Os": cfg.get("os", "linux"), "Size": img.size, "VirtualSize": img.size,
        "GraphDriver": {"Name": "overlay", "Data": {}},
        "RootFS": {"Type": (cfg.get("rootfs") or {}).get("type", "layers"), "Layers": img.diff_ids},
        "Metadata": {"LastTagTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                  time.gmtime(img.record.get("added", 0)))}}


def _resolve(store, name):
    from ..image.errors import ImageNotFound
    try:
        return store.resolve(name)
    except ImageNotFound:
        raise ApiError(404, f"No such image: {name}") from None


def list_(req):
    from ..image import reference as refs
    f = req.filters()
    bad = set(f) - {"reference", "dangling", "label", "before", "since"}
    if bad:
        raise ApiError(400, f"invalid filter '{sorted(bad)[0]}'")
    store = _store()
    imgs = store.images()
    out = []
    for img in imgs:
        s = summary(img)
        if "dangling" in f:
            dangling = not img.repo_tags
            if any(v in ("1", "true") for v in f["dangling"]) != dangling:
                continue
        if "reference" in f:
            import fnmatch
            names = [refs.parse(t) for t in img.repo_tags]
            if not any(fnmatch.fnmatch(n.familiar(), p) or fnmatch.fnmatch(n.familiar_name, p)
                       or fnmatch.fnmatch(str(n), p) for n in names for p in f["reference"]):
                continue
        if "label" in f:
            from ..containers.filters import match_labels
            if not match_labels(f["label"], s["Labels"]):
                continue
        out.append(s)
    for k in ("before", "since"):
        if k in f:
            ref = _resolve(store, f[k][-1])
            t = _created(ref)
            out = [s for s in out if (s["Created"] < t if k == "before" else s["Created"] > t)]
    req.json_reply(out)


def inspect(req):
    store = _store()
    req.json_reply(inspect_doc(store, _resolve(store, req.params[0])))


def history(req):
    store = _store()
    img = _resolve(store, req.params[0])
    hist = img.config.get("history") or []
    out = []
    for i, h in enumerate(reversed(hist)):
        from ..containers.state import parse_time
        out.append({"Id": img.id if i == 0 else "<missing>", "Created": int(parse_time(h.get("created")) or 0)
                    if h.get("created") else 0, "CreatedBy": h.get("created_by", ""),
                    "Tags": _familiar(img.repo_tags) if i == 0 else None, "Size": 0, "Comment": h.get("comment", "")})
    req.json_reply(out)


def tag(req):
    repo = req.arg("repo")
    if not repo:
        raise ApiError(400, "repository name (repo) is required")
    t = req.arg("tag") or "latest"
    store = _store()
    _resolve(store, req.params[0])
    store.tag(req.params[0], f"{repo}:{t}")
    req.send(201, b"", content_type="text/plain")


def delete(req):
    from ..image.errors import ImageError
    store = _store()
    _resolve(store, req.params[0])
    try:
        untagged, deleted = store.remove(req.params[0], force=req.flag("force"), in_use=_in_use())
    except ImageError as e:
        if "conflict" in str(e).lower() or "used by" in str(e).lower() or "in use" in str(e).lower() \
                or "referenced" in str(e).lower():
            raise ApiError(409, message_of(e)) from None
        raise
    store.gc(timeout=2)
    req.json_reply([{"Untagged": u} for u in _familiar(untagged)] + [{"Deleted": d} for d in deleted])


def prune(req):
    f = req.filters()
    dangling = f.get("dangling", ["true"])
    all_images = any(v in ("0", "false") for v in dangling)
    store = _store()
    before = {i.id: i.size for i in store.images()}
    removed = store.prune(all_images=all_images, in_use=_in_use())
    store.gc(timeout=2)
    req.json_reply({"ImagesDeleted": [{"Deleted": i} for i in removed] or None,
                    "SpaceReclaimed": sum(before.get(i, 0) for i in removed)})


def search(req):
    raise not_implemented("GET /images/search", "sbx does not search registries; pull by name")


# --- registry: pull and push, with streaming JSON progress -------------------------------------------

def _registry_options(req):
    """X-Registry-Auth (base64 JSON of username/password) -> RegistryOptions."""
    from ..registry.auth import Credentials
    from ..registry.transport import RegistryOptions
    raw = req.headers.get("X-Registry-Auth")
    creds = None
    if raw:
        try:
            doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            doc = {}
        if isinstance(doc, dict) and doc.get("username"):
            creds = Credentials(doc["username"], doc.get("password") or "", "X-Registry-Auth")
    return RegistryOptions(credentials=creds)


class _Progress:
    """Registry progress events -> Docker's JSON messages, on a queue the request thread writes."""

    def __init__(self, q, verb):
        self.q, self.verb = q, verb
        self.done = {}
        self.lock = threading.Lock()

    def __call__(self, event, digest, amount=0, total=None):
        short = digest[7:19]
        with self.lock:
            if event in ("download", "upload"):
                n = self.done[short] = 0 if amount < 0 else self.done.get(short, 0) + amount
                self.q.put({"status": self.verb, "progressDetail": {"current": n, "total": total or 0},
                            "id": short})
                return
            words = {"exists": "Already exists", "mounted": "Mounted from another repository",
                     "downloaded": "Download complete", "uploaded": "Pushed", "extract": "Extracting",
                     "unpacked": "Pull complete"}
            if event in words and event != "extract":
                self.q.put({"status": words[event], "progressDetail": {}, "id": short})


def _streamed(req, work, first):
    """Run `work(q)` in a thread; its messages go out as Docker's JSON stream.  A failure
    before any message is an ordinary error answer (404 for an unknown image); after, an
    `error` line."""
    q = queue.Queue()
    out = {}
    ctx = config.current()

    def run():
        try:
            with config.use(ctx):
                out["result"] = work(q)
        except BaseException as e:  # noqa: B902 - reported to the client
            out["error"] = e
        finally:
            q.put(None)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    w = None
    while True:
        msg = q.get()
        if msg is None:
            break
        if w is None:
            w = req.stream()
            if first:
                w.json(first)
        w.json(msg)
    t.join()
    if "error" in out:
        e = out["error"]
        if w is None:
            if isinstance(e, SandboxError) and status_of(e) == 500:
                raise ApiError(404 if "not found" in str(e).lower() or "unknown" in str(e).lower() else 500,
                               message_of(e))
            raise e
        msg = message_of(e)
        w.json({"errorDetail": {"message": msg}, "error": msg})
        w.close()
        return None, None
    if w is None:
        w = req.stream()
        if first:
            w.json(first)
    return w, out.get("result")


def create(req):
    """POST /images/create: pull `fromImage[:tag]` (fromSrc imports are not served)."""
    from ..image import platform as plat
    from ..image import reference as refs
    from ..registry.pull import PullOptions, pull
    from ..runtime.image_root import owner_name
    if req.arg("fromSrc"):
        raise not_implemented("POST /images/create?fromSrc", "importing a root filesystem is 'sbx import'")
    name = req.arg("fromImage")
    if not name:
        raise ApiError(400, "fromImage is required")
    tag = req.arg("tag")
    if tag:
        name = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
    ref = refs.parse(name)
    platform = req.arg("platform")
    opts = PullOptions(platform=plat.parse(platform) if platform else None, owner=owner_name(),
                       registry=_registry_options(req))
    req.drain()

    def work(q):
        return pull(_store(), str(ref), opts, progress=_Progress(q, "Downloading"), warn=lambda s: None)
    w, img = _streamed(req, work, {"status": f"Pulling from {ref.familiar_name}", "id": ref.tag or ref.digest})
    if w is None:
        return
    w.json({"status": f"Digest: {img.manifest_digest}"})
    w.json({"status": f"Status: Downloaded newer image for {ref.familiar()}"})
    w.close()


def push(req):
    from ..registry.push import PushOptions, push as do_push
    name = req.params[0]
    tag = req.arg("tag")
    if tag:
        name = f"{name}:{tag}"
    opts = PushOptions(registry=_registry_options(req))
    store = _store()
    _resolve(store, name)

    def work(q):
        return do_push(store, name, None, opts, progress=_Progress(q, "Pushing"))
    w, result = _streamed(req, work, {"status": f"The push refers to repository [{name.rsplit(':', 1)[0]}]"})
    if w is None:
        return
    target, digest = result
    w.json({"status": f"{target.tag or 'latest'}: digest: {digest}"})
    w.json({"progressDetail": {}, "aux": {"Tag": target.tag or "latest", "Digest": digest, "Size": 0}})
    w.close()


# --- archives -----------------------------------------------------------------------------------

def _tmpdir():
    ctx = config.current()
    base = ctx.data_dir()
    return tempfile.mkdtemp(prefix=".api-", dir=base)


def get(req):
    from ..image import archive
    names = [req.params[0]] if req.params else list(req.query.get("names") or [])
    if not names:
        raise ApiError(400, "no image named (names=)")
    store = _store()
    for n in names:
        _resolve(store, n)
    d = _tmpdir()
    try:
        path = os.path.join(d, "images.tar")
        archive.save(store, names, path)
        w = req.stream("application/x-tar")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                w.write(chunk)
        w.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def load(req):
    from ..image import archive
    d = _tmpdir()
    try:
        path = os.path.join(d, "images.tar")
        with open(path, "wb") as f:
            for chunk in req.body_chunks():
                f.write(chunk)
        loaded = archive.load(_store(), path)
        w = req.stream()
        for img, names in loaded:
            for n in _familiar(names) or [img.id]:
                w.json({"stream": f"Loaded image{'' if names else ' ID'}: {n}\n"})
        w.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- build --------------------------------------------------------------------------------------

def _extract_context(chunks, dest):
    """The build context tar (plain or gzip) into `dest`, refusing entries that leave it."""
    import tarfile
    path = os.path.join(dest, ".context.tar")
    with open(path, "wb") as f:
        for c in chunks:
            f.write(c)
    ctx_dir = os.path.join(dest, "context")
    os.mkdir(ctx_dir)
    def inside(p):
        real = os.path.realpath(p)
        return real == ctx_dir or real.startswith(ctx_dir + "/")
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                rel = os.path.normpath(m.name.lstrip("/"))
                dest = os.path.join(ctx_dir, rel)
                if not inside(os.path.dirname(dest)) or rel == ".." or rel.startswith("../"):
                    raise ApiError(400, f"build context entry {m.name!r} leaves the context")
                if m.islnk():
                    m.linkname = os.path.normpath(m.linkname.lstrip("/"))
                    if not inside(os.path.join(ctx_dir, m.linkname)):
                        raise ApiError(400, f"build context hard link {m.name!r} points outside the context")
                if m.isdev():
                    continue  # devices are never part of a context (Docker skips them too)
                m.name = rel  # tarfile writes an absolute name where it says
                if rel != "." and os.path.islink(dest):
                    os.unlink(dest)  # an entry replaces a link of the context, never writes through it
                m.mode &= 0o7777 & ~0o6000  # no set-id bits on the host
                tf.extract(m, ctx_dir, set_attrs=not m.issym(), numeric_owner=True)
    except (tarfile.TarError, OSError, KeyError) as e:
        raise ApiError(400, f"the build context is not a valid tar archive: {e}") from None
    finally:
        os.unlink(path)
    return ctx_dir


def _json_arg(req, name, default):
    raw = req.arg(name)
    if not raw:
        return default
    try:
        v = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid {name}: not JSON") from None
    return v


def build(req):
    from ..build.builder import Builder, Options
    if req.arg("remote"):
        raise not_implemented("POST /build?remote", "sbx builds from the context sent in the request body")
    network = req.arg("networkmode") or "default"
    if network == "bridge":
        network = "default"  # Docker's default: RUN steps on the private network `sbx build` gives them
    if network.split(":")[0] not in ("default", "none", "host", "slirp4netns", "pasta"):
        raise ApiError(400, f"network mode {network!r} is not supported for builds: use default, none, host, "
                            f"slirp4netns or pasta")
    tags = [t for t in req.query.get("t") or [] if t]
    args = {k: v for k, v in (_json_arg(req, "buildargs", {}) or {}).items() if v is not None}
    labels = _json_arg(req, "labels", {}) or {}
    platform = req.arg("platform")
    if platform:
        from ..image import platform as plat
        if plat.parse(platform) != plat.host():
            raise ApiError(400, f"building for platform {platform} is not supported: sbx builds for the host's")
    d = _tmpdir()
    try:
        ctx_dir = _extract_context(req.body_chunks(), d)
        dockerfile = req.arg("dockerfile") or "Dockerfile"
        df_path = os.path.normpath(os.path.join(ctx_dir, dockerfile))
        if not (os.path.realpath(df_path) + "/").startswith(os.path.realpath(ctx_dir) + "/"):  # links too
            raise ApiError(400, f"the Dockerfile {dockerfile!r} is outside the build context")
        quiet = req.flag("q")

        def work(q):
            import codecs
            text = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two reads

            def run_output(data):  # a RUN step's output, to the client as it comes
                s = text.decode(data)
                if s:
                    q.put({"stream": s})
            b = Builder(Options(context=ctx_dir, dockerfile=df_path, tags=tuple(tags), build_args=args,
                                target=req.arg("target") or None, no_cache=req.flag("nocache"),
                                pull=req.flag("pull"), network=network, labels=labels, quiet=quiet),
                        out=lambda s: q.put({"stream": s + "\n"}), run_output=run_output)
            return b.build()
        w, image = _streamed(req, work, None)
        if w is None:
            return
        w.json({"aux": {"ID": image.id}})
        if not quiet:
            w.json({"stream": f"Successfully built {image.short_id}\n"})
            from ..image import reference as refs
            for t in tags:
                w.json({"stream": f"Successfully tagged {refs.parse(t).familiar()}\n"})
        w.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


ROUTES = [
    ("GET", "/images/json", list_),
    ("POST", "/images/create", create),
    ("POST", "/images/load", load),
    ("GET", "/images/get", get),
    ("GET", "/images/search", search),
    ("POST", "/images/prune", prune),
    ("POST", "/build", build),
    ("GET", f"/images/{_NAME}/json", inspect),
    ("GET", f"/images/{_NAME}/history", history),
    ("GET", f"/images/{_NAME}/get", get),
    ("POST", f"/images/{_NAME}/tag", tag),
    ("POST", f"/images/{_NAME}/push", push),
    ("DELETE", f"/images/{_NAME}", delete),
]
