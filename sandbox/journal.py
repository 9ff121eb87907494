"""The events journal, `<data>/containers/events.log`: one line per event, appended by the
process that made it happen (the CLI, a monitor, the Python API, the Docker API service), so
the service's `/events` sees what every one of them does without holding any state of its own.
It ranks with `config` (docs/engine.md, "Layers") so that the one place each verb passes
through appends its event, whatever the entry point: containers (`append`), networks
(network/netstore.py, bridge.py), volumes (containers/volumes.py), images (image/store.py's tag
and remove, registry pull and push, image/archive.py's load and save, import) (`record`).

A line is tab-separated, `\\`, tab and newline escaped: `TIME_NS TYPE ACTION ID KEY=VALUE...`
(the attributes Docker's events carry: a container's name, image, labels, exitCode...).  One
write(2) with O_APPEND per line, so lines of concurrent writers never mix; past `LIMIT` bytes
the file is renamed to events.log.1 (one generation kept) by the writer that crossed it.  This
is on `sbx run`'s path: no json, nothing imported, and a failure to write never fails a verb."""
import os
import time

NAME = "events.log"
LIMIT = 1 << 20


def _esc(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def append_raw(root, kind, action, ident, attrs):
    """One event of `kind` (container, network, volume, image) into the journal of the
    containers directory `root`."""
    fields = [str(time.time_ns()), kind, action, ident]
    fields += [f"{k}={v}" for k, v in attrs.items()]
    line = ("\t".join(_esc(str(f)) for f in fields) + "\n").encode("utf-8", "surrogateescape")
    path = os.path.join(root, NAME)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line)
        st = os.fstat(fd)
        if st.st_size > LIMIT and os.stat(path).st_ino == st.st_ino:
            os.replace(path, path + ".1")
    except OSError:
        pass
    finally:
        os.close(fd)


def record(data_root, kind, action, ident, **attrs):
    """An event of `kind` (network, volume, image) into the journal of the data root `data_root`."""
    root = os.path.join(data_root, "containers")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError:
        return
    append_raw(root, kind, action, ident, attrs)


def append(store, action, rec, **extra):
    """A container event of `rec` (a state.Record) into `store`'s journal."""
    doc = rec.doc
    cfg = doc.get("Config") or {}
    attrs = dict(cfg.get("Labels") or ())
    attrs["image"] = doc.get("Image") or cfg.get("Image") or ""
    attrs["name"] = doc.get("Name") or ""
    attrs.update(extra)
    append_raw(store.root, "container", action, doc["Id"], attrs)


def parse(line):
    """A journal line -> (time_ns, kind, action, id, attrs), or None for a torn or foreign one."""
    parts = [_unesc(p) for p in line.rstrip("\n").split("\t")]
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    attrs = {}
    for p in parts[4:]:
        k, eq, v = p.partition("=")
        if eq:
            attrs[k] = v
    return int(parts[0]), parts[1], parts[2], parts[3], attrs


def _unesc(s):
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append({"t": "\t", "n": "\n"}.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)
