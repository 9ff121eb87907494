"""User-defined network records: `<data>/networks/<id>.json`, one per network, in the shape of
Docker's `network inspect` (without Containers, which the holder knows), and a name index
`<data>/networks/names/NAME`, a symlink to the id made with symlink(2): of two concurrent
`network create` of one name exactly one wins.  Creation and removal run under a flock on
`<data>/networks/.lock`, so two networks never get overlapping subnets."""
import json
import os
import time

from .. import journal
from ..errors import SandboxError, UsageError
from ..runtime import flocks, paths
from . import ipam

PREDEFINED = ("none", "host", "bridge", "default", "private", "slirp4netns", "pasta")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class NetworkError(SandboxError):
    """Docker's daemon errors on networks (exit 1)."""
    exit_code = 1


class NoSuchNetwork(NetworkError, LookupError):
    def __init__(self, ref):
        NetworkError.__init__(self, f"network {ref} not found", hint="list networks with sbx network ls")
        self.ref = ref


def _dir():
    return os.path.join(paths.data_dir(), "networks")


def _names():
    return os.path.join(_dir(), "names")


def bridge_name(rec):
    return "sbx-" + rec["Id"][:8]


def check_name(name):
    if not name or name[0] in "._-" or not all(c in _NAME_CHARS for c in name) or len(name) > 128:
        raise UsageError(f"invalid network name {name!r}",
                         hint="network names are letters, digits, '_', '.' and '-', starting with a letter or digit")
    if name in PREDEFINED:
        raise NetworkError(f"operation is not permitted on predefined {name} network",
                           hint="choose another name for a user-defined network")


def event(action, rec, **attrs):
    """Network event `action` (create, destroy, connect, disconnect) of `rec` into the events
    journal, in Docker's shape: Actor.ID the network's id, its name and type."""
    journal.record(paths.data_dir(), "network", action, rec["Id"], name=rec["Name"],
                   type=rec.get("Driver") or "bridge", **attrs)


def _now():
    t = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10 ** 9)) + f".{t % 10 ** 9:09d}Z"


def _write(path, doc):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def subnet_of(rec):
    c = rec["IPAM"]["Config"][0]
    return ipam.parse_cidr(c["Subnet"]), ipam.to_int(c["Gateway"])


def create(name, subnet=None, gateway=None, internal=False, labels=None, driver="bridge", options=None):
    """A new network's record; NetworkError if the name is taken or the subnet overlaps."""
    check_name(name)
    if driver not in ("bridge", None, ""):
        raise UsageError(f"network driver {driver!r} is not supported",
                         hint="user-defined networks use the bridge driver (-d bridge)")
    if gateway is not None and subnet is None:
        raise UsageError("--gateway needs --subnet", hint="give the subnet the gateway belongs to")
    want = ipam.parse_cidr(subnet) if subnet is not None else None
    gw = ipam.gateway_for(want, gateway) if want else None
    os.makedirs(_names(), mode=0o700, exist_ok=True)
    lock = flocks.hold(os.path.join(_dir(), ".lock"), wait=True)
    try:
        if os.path.lexists(os.path.join(_names(), name)):
            raise NetworkError(f"network with name {name} already exists", hint="choose another name, or remove it first")
        taken = [ipam.SLIRP] + [subnet_of(r)[0] for r in list_()]
        if want is not None:
            for t in taken:
                if ipam.overlaps(want, t):
                    who = "the holder's own link to the outside" if t == ipam.SLIRP else f"subnet {ipam.cidr_text(t)}"
                    raise NetworkError(f"invalid pool request: pool overlaps with other one on this address space "
                                       f"({subnet} and {who})", hint="choose a subnet that overlaps no other network's")
        else:
            want = ipam.free_subnet(taken)
            if want is None:
                raise NetworkError("no free subnet left in 10.89.0.0/16", hint="give one with --subnet, or remove networks")
            gw = ipam.gateway_for(want)
        nid = os.urandom(32).hex()
        rec = {"Name": name, "Id": nid, "Created": _now(), "Scope": "local", "Driver": "bridge",
               "EnableIPv6": False,
               "IPAM": {"Driver": "default", "Options": {},
                        "Config": [{"Subnet": ipam.cidr_text(want), "Gateway": ipam.to_text(gw)}]},
               "Internal": bool(internal), "Attachable": False, "Ingress": False,
               "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
               "Options": {"com.docker.network.bridge.name": "sbx-" + nid[:8], **(options or {})},
               "Labels": dict(labels or {})}
        _write(os.path.join(_dir(), nid + ".json"), rec)
        try:
            os.symlink(nid, os.path.join(_names(), name))
        except FileExistsError:
            os.unlink(os.path.join(_dir(), nid + ".json"))
            raise NetworkError(f"network with name {name} already exists", hint="choose another name") from None
        event("create", rec)
        return rec
    finally:
        os.close(lock)


def _load(nid):
    try:
        with open(os.path.join(_dir(), nid + ".json")) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def list_():
    """Every network record, oldest first."""
    try:
        names = os.listdir(_dir())
    except FileNotFoundError:
        return []
    out = [r for r in (_load(n[:-5]) for n in names if n.endswith(".json") and len(n) == 69) if r]
    return sorted(out, key=lambda r: r["Created"])


def get(ref):
    """A network by name, full id or unique id prefix (Docker's rules); NoSuchNetwork."""
    ref = str(ref)
    if not ref or "/" in ref or ref in (".", ".."):
        raise NoSuchNetwork(ref)
    try:
        nid = os.readlink(os.path.join(_names(), ref))
    except OSError:
        nid = None
    if nid:
        r = _load(nid)
        if r:
            return r
    if all(c in "0123456789abcdef" for c in ref):
        hits = [r for r in list_() if r["Id"].startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise NetworkError(f"network {ref} is ambiguous ({len(hits)} matches)", hint="give more of the id, or the name")
    raise NoSuchNetwork(ref)


def remove(rec):
    """Drop the record and its name (the caller checked it is not in use)."""
    lock = flocks.hold(os.path.join(_dir(), ".lock"), wait=True)
    try:
        link = os.path.join(_names(), rec["Name"])
        try:
            if os.readlink(link) == rec["Id"]:
                os.unlink(link)
        except OSError:
            pass
        try:
            os.unlink(os.path.join(_dir(), rec["Id"] + ".json"))
        except FileNotFoundError:
            return  # removed meanwhile, by whoever journalled it
        event("destroy", rec)
    finally:
        os.close(lock)
