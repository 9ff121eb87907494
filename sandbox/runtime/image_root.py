"""An image as a sandbox's root: its layer directories (overlay lowers, top first) and config.

Layers are unpacked once each and shared.  The ownership they are unpacked with follows the
id mapping the sandbox will use: single-id layers belong to the user; with a subuid range the
layers keep the image's owners, so they are unpacked inside a user namespace with that range
(started through the same launcher as every other process)."""
import os

from ..errors import SandboxError, UsageError
from . import idmap, paths

PULL_POLICIES = ("missing", "always", "never")


class ImageRoot:
    __slots__ = ("ref", "image_id", "lowers", "config")

    def __init__(self, ref, image_id, lowers, config):
        self.ref, self.image_id, self.config = ref, image_id, config
        self.lowers = distinct_lowers(lowers)


def distinct_lowers(lowers):
    """`lowers` (top first) with each directory once, at its topmost place.  An image may list
    one layer several times (two RUN steps that change nothing give the same empty layer;
    registry images repeat empty layers), but overlayfs refuses a lower directory that is
    given twice (ELOOP).  Dropping the lower occurrences changes nothing in the merged view:
    every name, whiteout and opaque marker of the layer is already met, with the same result,
    at its topmost occurrence."""
    seen = set()
    out = []
    for d in lowers:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _ready_layers(store, image, owner_name):
    """The layer roots (bottom first) if every layer is already unpacked, else None.  Only
    stat calls: this is the path every run of an image takes after the first."""
    dirs = []
    for diff_id in image.diff_ids:
        d = store.layer_path(diff_id, owner_name)
        if not os.path.isfile(os.path.join(d, "meta.json")):
            return None
        dirs.append(os.path.join(d, "root"))
    return dirs


def owner_name(userns=None):
    """Which unpacked form of the layers sandboxes of `userns` use: "mapped" (the image's owners,
    with a subuid range) or "single"."""
    return "mapped" if idmap.choose(userns)[0] == "helper" else "single"


def image_store():
    """The image store of the context in force, able to remove and unpack trees of subordinate
    ids (through a worker mapped to the subuid range)."""
    from ..image.store import Store
    from . import userns_worker
    return Store(workers=userns_worker.mapped)


# --- images in use ------------------------------------------------------------------------
# A sandbox running an image holds a shared flock on <store>/inuse/<id> for its whole life
# (the kernel drops it if sbx dies); rmi and prune refuse an image whose lock they cannot
# take exclusively.

def _inuse_path(root, image_id):
    return os.path.join(root, "inuse", image_id.removeprefix("sha256:"))


def hold(image_id):
    """Mark `image_id` in use until the returned fd is closed."""
    from . import flocks
    return flocks.hold(_inuse_path(paths.data_root(), image_id), shared=True, wait=True)


def image_users(image_id, containers=()):
    """Who uses the image: [(container id or None, running)], running ones first.  A container
    (running or not) made from it, from `containers` ((id, image id, running) triples: the
    caller reads them from the container engine, which is above this layer), or a sandbox
    running it (None: one without a container record), as Docker refuses to remove an image a
    container uses."""
    from . import flocks
    users = [(cid, running) for cid, iid, running in containers if iid == image_id]
    if not any(running for _cid, running in users) and flocks.held(
            _inuse_path(paths.data_root(), image_id), holders_shared=True):
        users.append((None, True))
    return sorted(users, key=lambda u: not u[1])


# --- the run cache --------------------------------------------------------------------------
# Resolving through the store costs ~25 ms of imports (json, re, dataclasses...) on every run.
# After the first run of a reference, what the launcher needs (layer dirs and every config key
# spec.build reads: CACHED_CONFIG) is kept in a marshal file, valid while the store's
# references file is unchanged (any pull, tag, rmi or load rewrites it).

# A key left out here is lost from every run but the first (-P without the image's EXPOSE).
CACHED_CONFIG = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "StopSignal", "Labels")


def _cache_path(root, ref, owner_name):
    key = ref.replace("%", "%25").replace("/", "%2F")
    return os.path.join(root, "runcache", f"{key}@{owner_name}")


def _refs_stamp(root):
    try:
        st = os.stat(os.path.join(root, "repositories.json"))
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _cache_lookup(root, ref, owner_name):
    import marshal
    try:
        with open(_cache_path(root, ref, owner_name), "rb") as f:
            stamp, image_id, lowers, config, keys = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None  # a file of an older sbx (four fields) is made again
    if tuple(keys) != CACHED_CONFIG or tuple(stamp) != _refs_stamp(root) or not os.path.isdir(lowers[-1]):
        return None
    return ImageRoot(ref, image_id, list(lowers), config)


def _cache_store(root, ref, owner_name, img_root, stamp):
    import marshal
    config = {k: img_root.config[k] for k in CACHED_CONFIG if k in img_root.config}
    path = _cache_path(root, ref, owner_name)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            marshal.dump((stamp, img_root.image_id, tuple(img_root.lowers), config, CACHED_CONFIG), f)
        os.replace(tmp, path)
    except (OSError, ValueError):
        pass  # only a cache


def prepare(ref, *, pull="missing", platform=None, userns=None, progress=None, warn=None):
    """Resolve `ref` in the local store (pulling it per the policy) and make sure its layers
    are unpacked for the id mapping in use.  Returns an ImageRoot."""
    if pull not in PULL_POLICIES:
        raise UsageError(f"invalid --pull value {pull!r}", hint="use missing, always or never")
    owner = owner_name(userns)
    root = paths.data_root()
    if pull != "always" and not platform:  # the cache does not know the image's platform
        hit = _cache_lookup(root, ref, owner)
        if hit is not None:
            return hit
    stamp = _refs_stamp(root)
    result = _prepare(ref, pull, platform, userns, owner, progress, warn)
    # Cache only what was resolved against an unchanged references file (a pull, or another
    # command, changed it meanwhile: the next run caches).
    if stamp is not None and stamp == _refs_stamp(root):
        _cache_store(root, ref, owner, result, stamp)
    return result


def _platform_mismatch(ref, image, platform):
    """Docker's words when a local image is not of the --platform asked for, else None."""
    if not platform:
        return None
    from ..image import platform as plat
    want = plat.parse(platform)
    cfg = image.config
    have = {"os": cfg.get("os", ""), "architecture": cfg.get("architecture", ""), "variant": cfg.get("variant")}
    if want.matches(have):
        return None
    actual = "/".join(v for v in (have["os"], have["architecture"], have["variant"]) if v)
    return f"image with reference {ref} was found but does not match the specified platform: " \
           f"wanted {want}, actual: {actual}"


def _prepare(ref, pull, platform, userns, owner_name, progress, warn):
    from ..image.errors import ImageNotFound
    store = image_store()
    image = None
    mismatch = None
    if pull != "always":
        try:
            image = store.resolve(ref)
        except ImageNotFound:
            if pull == "never":
                raise
        mismatch = _platform_mismatch(ref, image, platform) if image is not None else None
        if mismatch is not None:  # Docker's: the platform asked for is pulled, never ignored
            if pull == "never":
                raise UsageError(mismatch, hint=f"drop --platform, or pull {ref} for it (--pull missing)")
            image = None
    if image is None:
        from ..image import platform as plat
        from ..registry.pull import PullOptions, pull as do_pull
        opts = PullOptions(platform=plat.parse(platform) if platform else None, unpack=False)
        try:
            image = do_pull(store, ref, opts, progress=progress, warn=warn)
        except SandboxError as e:  # say which image, and that it was not found locally (Docker's words)
            where = f"{mismatch}; " if mismatch else (f"Unable to find image '{ref}' locally; " if pull != "always"
                                                       else "")
            e.msg = where + f"pull {ref}: {e}"
            e.args = (e.msg,)
            raise  # (a pulled image is of the platform asked for: pull checks it)

    dirs = _ready_layers(store, image, owner_name)
    if dirs is None:
        if store.whiteout_format != "overlay":
            raise UsageError(f"the image store at {store.root} cannot hold overlay whiteouts",
                             hint="point SBX_ROOT (--root) at a local filesystem such as ext4, xfs or btrfs")
        if owner_name == "mapped":
            store.unpack_mapped(image)
            dirs = _ready_layers(store, image, owner_name)
            if dirs is None:
                raise UsageError(f"unpacking {image.short_id} left layers missing")
        else:
            from ..progress import LayerMeters
            with LayerMeters() as meters:  # the first run of a big image: progress on a terminal
                dirs = store.unpack(image, warn=warn, progress=meters)
    if not dirs:
        raise UsageError(f"image {ref} has no layers", hint="an image built FROM scratch needs at least one layer")
    return ImageRoot(ref, image.id, list(reversed(dirs)), image.config.get("config") or {})
