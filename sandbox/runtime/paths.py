"""Where sbx keeps things: XDG directories with fallbacks, created on first use and checked.

Runtime state (mount points, sockets) lives under $XDG_RUNTIME_DIR/sbx, or /tmp/sbx-UID when
that is unset (su, sudo, ssh, batch jobs); persistent data under $SBX_ROOT, else
$XDG_DATA_HOME/sbx, else ~/.local/share/sbx."""
import os
import stat

from ..errors import StateError

_cache = {}


def _ensure_private_dir(path, what, env_hint):
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StateError(f"cannot create {what} {path}: {e.strerror}",
                         hint=f"point {env_hint} at a directory you can write") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise StateError(f"{what} {path} is not a directory owned by you",
                         hint=f"remove it, or point {env_hint} elsewhere")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"{what} {path} is not writable",
                         hint=f"point {env_hint} at a directory you can write")
    return path


def runtime_dir():
    d = _cache.get("run")
    if d is None:
        base = os.environ.get("SBX_RUNROOT")
        if not base:
            xdg = os.environ.get("XDG_RUNTIME_DIR")
            base = os.path.join(xdg, "sbx") if xdg else f"/tmp/sbx-{os.geteuid()}"
        d = _cache["run"] = _ensure_private_dir(base, "runtime directory", "SBX_RUNROOT or XDG_RUNTIME_DIR")
    return d


def mount_base():
    """An empty directory every sandbox mounts its private tmpfs on, inside its own mount
    namespace: one host directory serves all of them and nothing is left behind."""
    d = _cache.get("mnt")
    if d is None:
        d = _cache["mnt"] = _ensure_private_dir(os.path.join(runtime_dir(), "mnt"),
                                                "mount directory", "SBX_RUNROOT or XDG_RUNTIME_DIR")
    return d


def data_root():
    """Where persistent data goes: $SBX_ROOT, else $XDG_DATA_HOME/sbx, else ~/.local/share/sbx.
    Only the rule: nothing is created (the image store and the run cache use it as it is)."""
    root = os.environ.get("SBX_ROOT")
    if root:
        return os.path.abspath(root)
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "sbx")


def data_dir():
    """data_root(), created and checked (once per path)."""
    root = data_root()
    if _cache.get("data") != root:
        _cache["data"] = _ensure_private_dir(root, "storage directory", "SBX_ROOT or --root")
    return root


def reset():
    """Forget cached directories (tests change the environment)."""
    _cache.clear()
