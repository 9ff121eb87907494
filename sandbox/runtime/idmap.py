"""User-namespace id mapping: single id (no helpers), or the caller plus a subordinate range
from /etc/subuid and /etc/subgid written by newuidmap/newgidmap (shadow's setuid helpers)."""
import os
import pwd

from ..errors import UsageError

SUBID_SIZE = 65536
_HELPER_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin")
_cache = {}


def _find_helper(name):
    for d in _HELPER_DIRS:
        p = f"{d}/{name}"
        if os.access(p, os.X_OK):
            return p
    return None


def _subid_range(path, uid, name):
    """The first range of at least SUBID_SIZE ids for the user (by name or uid), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in data.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (name, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count >= SUBID_SIZE:
            return start, count
    return None


def detect():
    """(mode, uid_range, gid_range): mode "helper" when the caller has ranges in /etc/subuid
    and /etc/subgid and newuidmap/newgidmap exist, else "single".  Cached per process."""
    r = _cache.get("detect")
    if r is None:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        newuidmap, newgidmap = _find_helper("newuidmap"), _find_helper("newgidmap")
        ur = _subid_range("/etc/subuid", uid, name)
        gr = _subid_range("/etc/subgid", uid, name)
        if newuidmap and newgidmap and ur and gr:
            r = ("helper", ur, gr, newuidmap, newgidmap)
        else:
            r = ("single", None, None, newuidmap, newgidmap)
        _cache["detect"] = r
    return r


def choose(userns):
    """The mapping for --userns=auto|single (None means auto)."""
    if userns in (None, "", "auto"):
        return detect()
    if userns == "single":
        return ("single", None, None, None, None)
    raise UsageError(f"invalid --userns value {userns!r}", hint="use auto or single")


def mappings(mode, uid_range, gid_range, inside_uid, inside_gid):
    """OCI uidMappings/gidMappings for the mode."""
    hu, hg = os.geteuid(), os.getegid()
    if mode == "single":
        return ([{"containerID": inside_uid, "hostID": hu, "size": 1}],
                [{"containerID": inside_gid, "hostID": hg, "size": 1}])
    return ([{"containerID": 0, "hostID": hu, "size": 1},
             {"containerID": 1, "hostID": uid_range[0], "size": SUBID_SIZE}],
            [{"containerID": 0, "hostID": hg, "size": 1},
             {"containerID": 1, "hostID": gid_range[0], "size": SUBID_SIZE}])


def map_text(maps):
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)


def helper_argv(helper, maps):
    argv = [helper, "PID"]
    for m in maps:
        argv += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    return argv
