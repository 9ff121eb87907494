"""Named volumes: directories sbx keeps under the data root, `<data>/volumes/NAME/_data`, with
their metadata beside (`volume.json`: Docker's Name, Driver, Mountpoint, CreatedAt, Labels,
Options, Scope).  A volume is used as `-v NAME:/path` (the CLI, the Python API, the Docker API's
Binds and Mounts): `resolve()` turns those specs into binds of the volume's directory, making
the volume on first use as Docker does.  Docker's API serves create/list/inspect/remove/prune
(sandbox/server/volumes.py).

This module is on `sbx run -v`'s path: nothing heavy is imported unless a volume is named."""
import os

from .. import journal
from ..errors import SandboxError, UsageError

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _NAME_FIRST | frozenset("_.-")
ANONYMOUS = "com.docker.volume.anonymous"


class NoSuchVolume(SandboxError, LookupError):
    exit_code = 1

    def __init__(self, name):
        super().__init__(f"get {name}: no such volume", hint="'sbx volume ls' lists volumes")


class VolumeInUse(SandboxError):
    exit_code = 1


def valid_name(name):
    """Docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (two characters at least)."""
    return (isinstance(name, str) and len(name) >= 2 and name[0] in _NAME_FIRST
            and all(c in _NAME_CHARS for c in name))


def root():
    from .. import config
    return os.path.join(config.current().data_root, "volumes")


def _dir(name):
    return os.path.join(root(), name)


def _doc(name):
    import json
    try:
        with open(os.path.join(_dir(name), "volume.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        raise NoSuchVolume(name) from None


def create(name=None, labels=None, driver="local", options=None, anonymous=False):
    """A new volume (a random name when `name` is None); an existing one of that name is
    returned as it is (Docker's create is idempotent)."""
    import json
    if driver not in (None, "", "local"):
        raise UsageError(f"volume driver {driver!r} is not supported", hint="only the local driver exists")
    if options:
        raise UsageError(f"volume options {sorted(options)} are not supported",
                         hint="a local volume is a directory under sbx's data root; give no options")
    if name is None:
        name = os.urandom(32).hex()
        labels = dict(labels or {}, **{ANONYMOUS: ""}) if anonymous else labels
    if not valid_name(name):
        raise UsageError(f'"{name}" includes invalid characters for a local volume name, only '
                         f'"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed',
                         hint="a name starts with a letter or digit; a path must be absolute")
    from .. import config
    config.current().data_dir()
    os.makedirs(root(), mode=0o700, exist_ok=True)
    d = _dir(name)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        for _ in range(100):  # another creator is writing its metadata
            try:
                return _doc(name)
            except (NoSuchVolume, ValueError):
                import time
                time.sleep(0.01)
        return _doc(name)
    os.mkdir(os.path.join(d, "_data"), 0o755)
    import time
    doc = {"Name": name, "Driver": "local", "Mountpoint": os.path.join(d, "_data"),
           "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "Labels": dict(labels or {}),
           "Options": {}, "Scope": "local"}
    tmp = os.path.join(d, ".volume.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(d, "volume.json"))
    _event("create", name)
    return doc


def _event(action, name):
    from .. import config
    journal.record(config.current().data_root, "volume", action, name, driver="local")


def inspect(name):
    if not valid_name(name):
        raise NoSuchVolume(name)
    return _doc(name)


def names():
    try:
        return sorted(n for n in os.listdir(root()) if valid_name(n) and
                      os.path.exists(os.path.join(root(), n, "volume.json")))
    except FileNotFoundError:
        return []


def list_all():
    out = []
    for n in names():
        try:
            out.append(_doc(n))
        except (NoSuchVolume, ValueError):
            continue
    return out


def users(name):
    """The containers (records) whose mounts use the volume."""
    from .store import ContainerStore
    mp = os.path.join(_dir(name), "_data")
    out = []
    for rec in ContainerStore().list():
        for m in (rec.spec or {}).get("mounts") or ():
            src = m.get("source") or ""
            if src == mp or src.startswith(mp + "/"):
                out.append(rec)
                break
    return out


def remove(name, force=False):
    """Remove a volume and its data; one a container uses is refused (Docker's 409)."""
    inspect(name)
    used = users(name)
    if used:
        raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(r.id for r in used)}]",
                          hint="remove the containers that use it first")
    _rmtree(_dir(name))
    _event("destroy", name)


def _rmtree(path):
    """Remove a tree, including files a container's subordinate ids own (through a user
    namespace mapped like the containers)."""
    import shutil
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    from ..runtime import userns_worker
    w = userns_worker.start("helper" if userns_worker.mapped() is not None else "single")
    try:
        w.call("sandbox.image.store:remove_path", path=path)
    finally:
        w.close()


def prune(filters=None):
    """Remove unused volumes: anonymous ones, or every one with the filter all=true (API 1.42+);
    `label=K[=V]`, `label!=K[=V]`.  Returns (names, bytes)."""
    from . import filters as _filters
    f = filters or {}
    everything = any(v in ("1", "true") for v in f.get("all", []))
    gone, freed = [], 0
    for doc in list_all():
        labels = doc.get("Labels") or {}
        if not everything and ANONYMOUS not in labels:
            continue
        if f.get("label") and not _filters.match_labels(f["label"], labels):
            continue
        if any(_filters.match_labels([x], labels) for x in f.get("label!", [])):
            continue
        if users(doc["Name"]):
            continue
        size = _size(doc["Mountpoint"])
        try:
            remove(doc["Name"])
        except (VolumeInUse, NoSuchVolume):
            continue
        gone.append(doc["Name"])
        freed += size
    return gone, freed


def _size(path):
    total = 0
    for d, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


def _check_rest(spec, rest):
    """The container path and mode of `NAME:rest`, checked as a bind's are (spec.parse_volume)."""
    from ..runtime.spec import parse_volume
    as_bind = ("/", *rest.split(":", 1))
    try:
        parse_volume(as_bind)
    except UsageError as e:  # its words, naming what was given
        raise UsageError(e.msg.replace(repr(as_bind), repr(spec)), hint=e.hint) from None


def resolve(specs):
    """Volume specs (`SRC:DST[:MODE]` strings or (src, dst, mode) tuples) with named volumes
    turned into binds of their directories (made on first use); others unchanged."""
    out = []
    for v in specs:
        if isinstance(v, str):
            src, sep, rest = v.partition(":")
            if sep and src and not src.startswith("/") and not src.startswith("."):
                if not valid_name(src):
                    raise UsageError(f"invalid volume {v!r}: {src!r} is neither an absolute path nor a volume name",
                                     hint="give an absolute host path, or a name of [a-zA-Z0-9][a-zA-Z0-9_.-]+")
                _check_rest(v, rest)  # before the volume is made: a typo leaves none behind
                v = create(src)["Mountpoint"] + ":" + rest
        elif isinstance(v, tuple) and v and isinstance(v[0], str) and v[0] and not v[0].startswith(("/", ".")) \
                and valid_name(v[0]):
            v = (create(v[0])["Mountpoint"],) + tuple(v[1:])
        out.append(v)
    return out

