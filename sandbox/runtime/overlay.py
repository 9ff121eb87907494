"""Which overlay the root uses: the kernel's (in a user namespace since Linux 5.11, with
userxattr) or fuse-overlayfs where the kernel refuses.  The first refusal is remembered in
the runtime directory, so later runs go straight to the fallback (containers/storage keeps
its feature probes the same way).  SBX_OVERLAY=kernel|fuse forces one."""
import os

from . import paths

FUSE_OVERLAYFS_DIRS = ("/usr/bin", "/bin", "/usr/local/bin")
_cache = {}


def fuse_overlayfs():
    for d in FUSE_OVERLAYFS_DIRS:
        p = f"{d}/fuse-overlayfs"
        if os.access(p, os.X_OK):
            return p
    return None


def _marker():
    return os.path.join(paths.runtime_dir(), "overlay-driver")


def driver():
    forced = os.environ.get("SBX_OVERLAY")
    if forced in ("kernel", "fuse"):
        return forced
    d = _cache.get("driver")
    if d is None:
        try:
            with open(_marker()) as f:
                d = "fuse" if f.read().strip() == "fuse" else "kernel"
        except OSError:
            d = "kernel"
        _cache["driver"] = d
    return d


def remember_kernel_refused():
    """Called after the kernel refused an overlay mount: use fuse-overlayfs from now on."""
    _cache["driver"] = "fuse"
    tmp = _marker() + f".{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write("fuse\n")
        os.replace(tmp, _marker())
    except OSError:
        pass
