"""Docker's container filters (daemon/list.go, filters.Args): parsing `KEY=VALUE` values and
selecting records, shared by `ps`, the prunes and the Python API (`containers.list(filters=)`).

Values of one key OR (label= ANDs, as Docker's MatchKVList); different keys AND; name= and id=
match the whole text or a regular expression anywhere in it."""
import re

from ..errors import UsageError

FILTERS = ("ancestor", "before", "exited", "id", "label", "name", "since", "status")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def parse(values, accepted):
    """`--filter` values -> {key: [value, ...]} (a key given twice ORs its values; different keys
    AND, which the caller applies).  Keys are lower-cased and values stripped, as Docker's
    ParseFlag; a value without '=' or a key not in `accepted` is a UsageError naming it."""
    out = {}
    for item in values:
        if "=" not in item:
            raise UsageError(f"bad format of filter {item!r} (expected name=value)",
                             hint="e.g. --filter status=exited; keys: " + ", ".join(sorted(accepted)))
        key, _eq, value = item.partition("=")
        key = key.strip().lower()
        if key not in accepted:
            raise UsageError(f"invalid filter '{key}'", hint="sbx accepts: " + ", ".join(sorted(accepted)))
        out.setdefault(key, []).append(value.strip())
    return out


def match_text(patterns, text):
    """Docker's filters.Args.Match: a value matches when it equals `text`, or when, read as a
    regular expression, it matches somewhere in it (a pattern that does not compile matches
    nothing)."""
    for p in patterns:
        if p == text:
            return True
        try:
            if re.search(p, text):
                return True
        except re.error:
            continue
    return False


def match_labels(patterns, labels):
    """Docker's MatchKVList: every `KEY` must be a label, every `KEY=VALUE` a label with that value."""
    for p in patterns:
        key, eq, value = p.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def check(values):
    """--filter values -> {key: [values]}; a bad key or value is a UsageError naming it."""
    f = parse(values, FILTERS)
    for v in f.get("status", []):
        if v not in STATUSES:
            raise UsageError(f"invalid filter 'status={v}'", hint="statuses: " + ", ".join(STATUSES))
    for v in f.get("exited", []):
        try:
            int(v)
        except ValueError:
            raise UsageError(f"invalid filter 'exited={v}'", hint="give an exit code, e.g. exited=0") from None
    return f


def _ancestors(values):
    """Image ids that name= an ancestor filter resolves to, with their layer lists (a container
    of an image built on one of them matches too, as Docker walks the image's children)."""
    from ..image.errors import ImageError
    from ..image.store import Store
    out = []
    store = Store()
    for v in values:
        try:
            img = store.resolve(v)
        except ImageError:
            continue  # Docker: an unknown image matches nothing
        out.append((img.id, img.diff_ids))
    return out


def _descends(rec, ancestors, layers_of):
    iid = rec.doc.get("ImageID") or ""
    for aid, diff_ids in ancestors:
        if iid == aid:
            return True
        mine = layers_of(iid)
        if mine and diff_ids and mine[:len(diff_ids)] == diff_ids:
            return True
    return False


def select(records, filters, *, all_=False, limit=-1, store=None):
    """The records `ps` shows, newest first (Docker's includeContainerInList)."""
    from .state import parse_time
    all_ = all_ or "status" in filters
    since = before = None
    if "since" in filters or "before" in filters:
        from .store import ContainerStore
        st = store or ContainerStore()
        if "since" in filters:
            since = parse_time(st.get(filters["since"][-1]).doc.get("Created"))
        if "before" in filters:
            before = parse_time(st.get(filters["before"][-1]).doc.get("Created"))
    ancestors = _ancestors(filters["ancestor"]) if "ancestor" in filters else None
    layer_cache = {}

    def layers_of(iid):
        if iid not in layer_cache:
            from ..image.errors import ImageError
            from ..image.store import Store
            try:
                layer_cache[iid] = Store().get(iid).diff_ids if iid else []
            except ImageError:
                layer_cache[iid] = []
        return layer_cache[iid]

    out = []
    for rec in records:
        created = parse_time(rec.doc.get("Created"))
        if since is not None and created <= since:
            continue
        if before is not None and created >= before:
            continue
        running = rec.status in ("running", "paused", "restarting")
        if not running and not all_ and limit <= 0 and since is None and before is None:
            continue
        if "name" in filters and not (match_text(filters["name"], rec.name)
                                      or match_text(filters["name"], "/" + rec.name)):
            continue
        if "id" in filters and not match_text(filters["id"], rec.id):
            continue
        if "status" in filters and rec.status not in filters["status"]:
            continue
        labels = (rec.doc.get("Config") or {}).get("Labels") or {}
        if "label" in filters and not match_labels(filters["label"], labels):
            continue
        if "exited" in filters:
            st = rec.doc.get("State") or {}
            started = parse_time(st.get("StartedAt"))
            if running or not started or str(st.get("ExitCode", 0)) not in \
                    {str(int(v)) for v in filters["exited"]}:
                continue
        if ancestors is not None and not _descends(rec, ancestors, layers_of):
            continue
        out.append(rec)
        if 0 < limit <= len(out):
            break
    return out
