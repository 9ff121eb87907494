"""`--label KEY[=VALUE]` and `--label-file FILE`, as Docker reads them (run, create, build).

No heavy imports: `sbx run`'s fast parser uses this too."""
from ..errors import UsageError


def parse(labels=(), files=()):
    """The labels given: every file first (in order), then every --label, a later key winning.

    A file holds one KEY[=VALUE] a line; lines that are blank or start with '#' are skipped and
    leading whitespace is dropped (Docker's `parseKeyValueFile`).  A label without '=' has the
    empty value (`--label foo` -> foo="", as Docker's ConvertKVStringsToMap)."""
    items = []
    for path in files:
        items.extend(_read_file(path))
    items.extend((f"--label {item!r}", item) for item in labels)
    out = {}
    for where, item in items:
        key, _eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid label {where}: the key is empty", hint="use KEY=VALUE or KEY")
        out[key] = value
    return out


def _read_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 24)
    except OSError as e:
        raise UsageError(f"cannot read label file {path}: {e.strerror}", hint="give a readable file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"label file {path}: invalid utf8 bytes at byte {e.start}",
                         hint="label files are UTF-8 text") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.partition("=")[0]
        if any(c.isspace() for c in key):
            raise UsageError(f"label file {path}, line {n}: key {key!r} contains whitespace",
                             hint="write KEY=VALUE, the key without spaces")
        out.append((f"{path}:{n}", line))
    return out
