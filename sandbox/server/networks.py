"""/networks/...: the built-in modes (none, host) as Docker's network objects, and the
user-defined networks of `sbx network` (sandbox.network.netstore records; containers join
through the holder, sandbox.network.bridge)."""
from ..errors import SandboxError
from .http import ApiError

_BUILTIN = ("none", "host")
_BRIDGE_OPT = "com.docker.network.bridge.name"
FILTERS = ("name", "id", "label", "driver", "scope", "type", "dangling")


def _store():
    from ..network import netstore
    return netstore


def _members():
    from ..network import bridge
    return bridge.members()


def _builtin(name):
    return {"Name": name, "Id": name, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": "null" if name == "none" else "host", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False, "Attachable": False,
            "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
            "Options": {}, "Labels": {}}


def _doc(rec, members):
    doc = dict(rec)
    opts = dict(doc.get("Options") or {})
    if opts.get(_BRIDGE_OPT) == "sbx-" + rec["Id"][:8]:
        del opts[_BRIDGE_OPT]  # sbx's own choice, not an option the client gave (compose compares them)
    doc["Options"] = opts
    doc["Containers"] = {cid: {"Name": m.get("Name", ""), "EndpointID": "", "MacAddress": m.get("MacAddress", ""),
                               "IPv4Address": m.get("IPv4Address", ""), "IPv6Address": m.get("IPv6Address", "")}
                         for cid, m in members.get(rec["Id"], {}).items()}
    return doc


def _get(ref):
    from ..network import netstore
    try:
        return netstore.get(ref)
    except netstore.NoSuchNetwork:
        raise ApiError(404, f"network {ref} not found") from None


def _conflict(e):
    return ApiError(409, str(e)) if "already exists" in str(e) or "overlaps" in str(e) else e


def list_(req):
    from ..containers.filters import match_labels
    f = req.filters()
    bad = set(f) - set(FILTERS)
    if bad:
        raise ApiError(400, f"invalid filter '{sorted(bad)[0]}'")
    members = _members()
    docs = [_builtin(n) for n in _BUILTIN] + [_doc(r, members) for r in _store().list_()]
    out = []
    for d in docs:
        custom = d["Name"] not in _BUILTIN
        if f.get("name") and not any(n in d["Name"] for n in f["name"]):
            continue
        if f.get("id") and not any(d["Id"].startswith(i) for i in f["id"]):
            continue
        if f.get("label") and not match_labels(f["label"], d.get("Labels") or {}):
            continue
        if f.get("driver") and d["Driver"] not in f["driver"]:
            continue
        if f.get("scope") and d["Scope"] not in f["scope"]:
            continue
        if f.get("type") and ("custom" if custom else "builtin") not in f["type"]:
            continue
        if f.get("dangling") and (f["dangling"][-1] in ("1", "true")) != (custom and not d["Containers"]):
            continue
        out.append(d)
    req.json_reply(out)


def inspect(req):
    name = req.params[0]
    if name in _BUILTIN:
        return req.json_reply(_builtin(name))
    req.json_reply(_doc(_get(name), _members()))


def create(req):
    body = req.json()
    name = body.get("Name")
    if not name:
        raise ApiError(400, "the network's Name is required")
    if body.get("EnableIPv6"):
        raise ApiError(400, "IPv6 networks are not supported")
    cfg = ((body.get("IPAM") or {}).get("Config") or [{}])
    if len(cfg) > 1:
        raise ApiError(400, "a network has one subnet in sbx")
    cfg = cfg[0] or {}
    if cfg.get("IPRange") or cfg.get("AuxiliaryAddresses"):
        raise ApiError(400, "IPRange and AuxiliaryAddresses are not supported")
    try:
        rec = _store().create(name, subnet=cfg.get("Subnet") or None, gateway=cfg.get("Gateway") or None,
                              internal=bool(body.get("Internal")), labels=body.get("Labels") or {},
                              driver=body.get("Driver") or "bridge", options=body.get("Options") or None)
    except SandboxError as e:
        raise _conflict(e) from None
    req.json_reply({"Id": rec["Id"], "Warning": ""}, status=201)


def _remove(rec, members):
    if members.get(rec["Id"]):
        names = ", ".join(sorted(m.get("Name") or cid[:12] for cid, m in members[rec["Id"]].items()))
        raise ApiError(403, f"error while removing network: network {rec['Name']} id {rec['Id']} has active "
                            f"endpoints ({names})")
    from ..network import bridge
    bridge.drop(rec)
    _store().remove(rec)


def delete(req):
    if req.params[0] in _BUILTIN:
        raise ApiError(403, f"{req.params[0]} is a pre-defined network and cannot be removed")
    _remove(_get(req.params[0]), _members())
    req.empty(204)


def prune(req):
    from ..containers.filters import match_labels
    from ..containers.state import parse_time
    f = req.filters()
    until = None
    if f.get("until"):
        from ..containers.pruning import parse_until
        until = min(parse_until(v) for v in f["until"])
    members = _members()
    gone = []
    for r in _store().list_():
        if members.get(r["Id"]) or (until is not None and parse_time(r["Created"]) >= until):
            continue
        if f.get("label") and not match_labels(f["label"], r["Labels"]):
            continue
        if any(match_labels([w], r["Labels"]) for w in f.get("label!", [])):
            continue
        _remove(r, members)
        gone.append(r["Name"])
    req.json_reply({"NetworksDeleted": gone or None})


def _container(ref):
    from ..containers.store import ContainerStore
    return ContainerStore().get(ref)


def connect(req):
    """A running container joins now; a created or stopped one at its next start.  Either way
    the connection is kept in its spec (containers.netconnect, shared with `sbx network
    connect`), so later starts join again and inspect shows it."""
    from ..containers import netconnect
    rec = _get(req.params[0])
    body = req.json()
    c = _container(body.get("Container") or "")
    ep = body.get("EndpointConfig") or {}
    netconnect.connect(c, rec, aliases=list(ep.get("Aliases") or ()),
                       ip=(ep.get("IPAMConfig") or {}).get("IPv4Address") or None, mac=ep.get("MacAddress") or None)
    req.send(200, b"", content_type="text/plain")


def disconnect(req):
    from ..containers import netconnect
    rec = _get(req.params[0])
    body = req.json()
    c = _container(body.get("Container") or "")
    netconnect.disconnect(c, rec, force=bool(body.get("Force")))
    req.send(200, b"", content_type="text/plain")


ROUTES = [
    ("GET", "/networks", list_),
    ("POST", "/networks/create", create),
    ("POST", "/networks/prune", prune),
    ("GET", r"/networks/([^/]+)", inspect),
    ("DELETE", r"/networks/([^/]+)", delete),
    ("POST", r"/networks/([^/]+)/connect", connect),
    ("POST", r"/networks/([^/]+)/disconnect", disconnect),
]
