"""`container prune`: remove stopped containers (Docker's POST /containers/prune), with its
filters until= (a time, or a duration before now), label= and label!=.  Returns what went and
the bytes of their writable layers.  (Not `prune.py`: `sandbox.containers.prune` is the
docker-py-shaped function of client.py.)"""
import time

from ..errors import UsageError
from . import filters as _filters

FILTERS = ("until", "label", "label!")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_until(value, now=None):
    """until=: a Go duration before now (10m, 1h30m), unix seconds, or an RFC 3339 time or a
    date (Docker's GetTimestamp); seconds since the epoch.  UsageError naming it otherwise."""
    v = value.strip()
    total, num, i, ok = 0.0, "", 0, bool(v)
    while i < len(v) and ok:
        if v[i].isdigit() or v[i] == ".":
            num += v[i]
            i += 1
            continue
        unit = next((u for u in ("ns", "us", "µs", "ms", "s", "m", "h") if v.startswith(u, i)), None)
        if unit is None or not num:
            ok = False
            break
        try:
            total += float(num) * _UNITS[unit]
        except ValueError:
            ok = False
            break
        num, i = "", i + len(unit)
    if ok and not num:
        return (now or time.time()) - total
    try:
        return float(v)
    except ValueError:
        pass
    from .state import parse_time
    try:
        if len(v) >= 19 and v[10] == "T":
            time.strptime(v[:19], "%Y-%m-%dT%H:%M:%S")
            return parse_time(v if v[19:] else v + "Z")
        if len(v) == 10:
            return time.mktime(time.strptime(v, "%Y-%m-%d"))
    except (ValueError, IndexError):
        pass
    raise UsageError(f"invalid filter 'until={value}'",
                     hint="give a duration (10m, 24h) or a time (2024-01-02T15:04:05Z, 2024-01-02, unix seconds)")


def check(values):
    """Prune filter values (['until=1h', 'label=a'] or {key: [values]}) -> {key: [values]},
    every value checked: bad ones are UsageErrors before anything is removed."""
    f = _filters.parse(values, FILTERS) if not isinstance(values, dict) else dict(values)
    bad = set(f) - set(FILTERS)
    if bad:
        raise UsageError(f"invalid filter '{sorted(bad)[0]}'", hint="prune accepts: until, label, label!")
    for v in f.get("until", []):
        parse_until(v)
    return f


def containers(filters=None, store=None):
    """Remove every stopped container (created, exited, dead) the filters keep: (ids, bytes)."""
    from . import files, lifecycle
    from .state import ContainerError, parse_time
    from .store import ContainerStore
    f = check(filters or {})
    until = min(parse_until(v) for v in f["until"]) if f.get("until") else None
    st = store or ContainerStore()
    doomed = []
    for rec in st.list():
        if rec.status not in ("created", "exited", "dead"):
            continue
        if until is not None and parse_time(rec.doc.get("Created")) >= until:
            continue
        labels = (rec.doc.get("Config") or {}).get("Labels") or {}
        if f.get("label") and not _filters.match_labels(f["label"], labels):
            continue
        if any(_filters.match_labels([x], labels) for x in f.get("label!", [])):
            continue
        doomed.append(rec)
    sizes = files.sizes([files.Place.of(r, False) for r in doomed]) if doomed else []
    ids, freed = [], 0
    for rec, size in zip(doomed, sizes):
        try:
            lifecycle.remove(st, rec.id)
        except ContainerError:
            continue  # started again meanwhile, or removed by someone else: not ours to count
        ids.append(rec.id)
        freed += size
    return ids, freed
