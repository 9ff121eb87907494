"""/networks/...: the network modes sbx has (none, host) as Docker's network objects; user-
defined networks (create, connect, disconnect, delete, prune) wait for h-bridge's library
(issue 11) and answer 501 naming it."""
from .http import ApiError, not_implemented

_BUILTIN = {
    "none": "sbx's default: a network namespace with only loopback",
    "host": "the host's network namespace",
}
_MISSING = "user-defined networks come with 'sbx network' (h-bridge, issue 11), not landed yet"


def _doc(name):
    return {"Name": name, "Id": name, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": "null" if name == "none" else "host", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False, "Attachable": False,
            "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
            "Options": {}, "Labels": {}}


def list_(req):
    f = req.filters()
    names = [n for n in _BUILTIN if not f.get("name") or any(x in n for x in f["name"])]
    if f.get("id"):
        names = [n for n in names if any(n.startswith(x) for x in f["id"])]
    if f.get("driver"):
        names = [n for n in names if _doc(n)["Driver"] in f["driver"]]
    if f.get("label"):
        names = []  # the built-in networks carry no labels
    req.json_reply([_doc(n) for n in names])


def inspect(req):
    name = req.params[0]
    if name not in _BUILTIN:
        raise ApiError(404, f"network {name} not found")
    req.json_reply(_doc(name))


def _refuse(what):
    def fn(req):
        raise not_implemented(what.format(*req.params), _MISSING)
    return fn


ROUTES = [
    ("GET", "/networks", list_),
    ("POST", "/networks/create", _refuse("POST /networks/create")),
    ("POST", "/networks/prune", _refuse("POST /networks/prune")),
    ("GET", r"/networks/([^/]+)", inspect),
    ("DELETE", r"/networks/([^/]+)", _refuse("DELETE /networks/{}")),
    ("POST", r"/networks/([^/]+)/connect", _refuse("POST /networks/{}/connect")),
    ("POST", r"/networks/([^/]+)/disconnect", _refuse("POST /networks/{}/disconnect")),
]
