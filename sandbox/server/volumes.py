"""/volumes/...: named volumes (sandbox.containers.volumes)."""
from ..containers import volumes as _volumes
from ..errors import UsageError
from .http import ApiError


def _with_usage(doc):
    return dict(doc, UsageData={"Size": -1, "RefCount": len(_volumes.users(doc["Name"]))})


def all_docs():
    return _volumes.list_all()


def create(req):
    body = req.json()
    try:
        doc = _volumes.create(body.get("Name") or None, labels=body.get("Labels") or {},
                              driver=body.get("Driver") or "local", options=body.get("DriverOpts") or None)
    except UsageError as e:
        raise ApiError(400, str(e)) from None
    req.json_reply(doc, status=201)


def list_(req):
    f = req.filters()
    bad = set(f) - {"name", "label", "dangling", "driver"}
    if bad:
        raise ApiError(400, f"invalid filter '{sorted(bad)[0]}'")
    from ..containers.filters import match_labels
    out = []
    for doc in _volumes.list_all():
        if "name" in f and not any(n in doc["Name"] for n in f["name"]):
            continue
        if "driver" in f and doc["Driver"] not in f["driver"]:
            continue
        if "label" in f and not match_labels(f["label"], doc.get("Labels") or {}):
            continue
        if "dangling" in f:
            dangling = not _volumes.users(doc["Name"])
            if any(v in ("1", "true") for v in f["dangling"]) != dangling:
                continue
        out.append(doc)
    req.json_reply({"Volumes": out, "Warnings": None})


def inspect(req):
    req.json_reply(_volumes.inspect(req.params[0]))


def delete(req):
    _volumes.remove(req.params[0], force=req.flag("force"))
    req.empty(204)


def prune(req):
    names, freed = _volumes.prune(req.filters())
    req.json_reply({"VolumesDeleted": names or None, "SpaceReclaimed": freed})


ROUTES = [
    ("POST", "/volumes/create", create),
    ("GET", "/volumes", list_),
    ("POST", "/volumes/prune", prune),
    ("GET", r"/volumes/([^/]+)", inspect),
    ("DELETE", r"/volumes/([^/]+)", delete),
]
