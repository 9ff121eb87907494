"""`--mount type=bind|volume|tmpfs,KEY=VALUE,...` (Docker's syntax) -> the `-v` and `--tmpfs`
specs the rest of sbx takes.  Every key is either honoured or refused by name: a mount option
that were dropped silently would leave a container less isolated than asked (a bind meant to be
read-only) or shaped otherwise.  Imported only when --mount is given."""
from ..errors import UsageError
from ..runtime.options import ram_in_bytes
from .runopts import host_path

SOURCE = ("source", "src")
TARGET = ("target", "destination", "dst")
READONLY = ("readonly", "ro")
HINT = ("e.g. --mount type=bind,src=/data,dst=/data,readonly; type=volume,src=NAME,dst=/data; "
        "type=tmpfs,dst=/cache,tmpfs-size=64m")


def _bool(text, key, spec):
    low = text.lower()
    if low in ("", "1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise UsageError(f"invalid --mount {spec!r}: {key}={text!r} is not a boolean", hint="give true or false")


def parse(spec):
    """One --mount value -> ("volume", "SRC:DST:ro|rw") or ("tmpfs", "DST[:size=N,mode=M]")."""
    fields = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not key:
            raise UsageError(f"invalid --mount {spec!r}: an empty field", hint=HINT)
        if key in fields:
            raise UsageError(f"invalid --mount {spec!r}: {key} given twice", hint=HINT)
        fields[key] = value if eq else None
    kind = fields.pop("type", None) or "volume"
    if kind not in ("bind", "volume", "tmpfs"):
        raise UsageError(f"invalid --mount {spec!r}: type {kind!r} is not supported", hint="use bind, volume or tmpfs")
    src = next((fields.pop(k) for k in SOURCE if k in fields), None)
    dst = next((fields.pop(k) for k in TARGET if k in fields), None)
    ro = any([_bool(fields.pop(k) or "", k, spec) for k in READONLY if k in fields])
    fields.pop("consistency", None)  # macOS's bind caching mode: nothing to do on Linux (Docker ignores it too)
    if not dst:
        raise UsageError(f"invalid --mount {spec!r}: no target", hint=HINT)
    if kind == "tmpfs":
        if src:
            raise UsageError(f"invalid --mount {spec!r}: a tmpfs takes no source", hint=HINT)
        opts = []
        if "tmpfs-size" in fields:
            opts.append(f"size={ram_in_bytes(fields.pop('tmpfs-size') or '', '--mount tmpfs-size')}")
        if "tmpfs-mode" in fields:
            mode = fields.pop("tmpfs-mode") or ""
            if not mode or any(c not in "01234567" for c in mode) or int(mode, 8) > 0o7777:
                raise UsageError(f"invalid --mount {spec!r}: tmpfs-mode={mode!r} is not an octal mode",
                                 hint="e.g. tmpfs-mode=1777")
            opts.append(f"mode={mode}")
        if ro:
            opts.append("ro")
        out = ("tmpfs", dst + (":" + ",".join(opts) if opts else ""))
    else:
        if not src:
            raise UsageError(f"invalid --mount {spec!r}: no source" + (" (anonymous volumes are not supported)"
                                                                      if kind == "volume" else ""),
                             hint="give src=HOST_PATH for a bind, src=NAME for a volume")
        if kind == "bind" and not src.startswith(("/", ".")):
            raise UsageError(f"invalid --mount {spec!r}: bind source {src!r} is not a path",
                             hint="give an absolute path, or one starting with ./")
        if kind == "volume" and src.startswith(("/", ".")):
            raise UsageError(f"invalid --mount {spec!r}: volume source {src!r} is a path, not a volume name",
                             hint="use type=bind for a host path")
        out = ("volume", f"{host_path(src)}:{dst}:{'ro' if ro else 'rw'}")
    if fields:
        raise UsageError(f"invalid --mount {spec!r}: {', '.join(sorted(fields))} not supported for type={kind}",
                         hint=HINT)
    return out


def split(specs):
    """--mount values -> (volume specs, tmpfs specs)."""
    vols, tmpfs = [], []
    for s in specs:
        kind, value = parse(s)
        (tmpfs if kind == "tmpfs" else vols).append(value)
    return vols, tmpfs
