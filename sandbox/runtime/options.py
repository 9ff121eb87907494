"""Typed options for a container's run and exec: built once by the CLI's parser
(`cli/runopts.to_options`), the Python API and later the Docker API mapper, then handed down
(`spec.from_options`, the engine).

Frozen records written without `dataclasses`: that module imports `re` and `inspect`, and this
one is on every `sbx run`'s path (whose start-up is measured).  They behave as frozen
dataclasses do: keyword construction with defaults, read-only fields, `==`, `repr`, plus
`replace(**changes)` and `asdict()`."""
from ..errors import UsageError

_MISSING = object()


class _Frozen:
    """Base of a frozen record; subclasses list FIELDS as (name, default) and may give a
    zero-argument callable as a default (a fresh dict or tuple per instance)."""
    __slots__ = ()
    FIELDS = ()

    def __init__(self, **kw):
        for name, default in self.FIELDS:
            v = kw.pop(name, _MISSING)
            if v is _MISSING:
                if default is _MISSING:
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
                v = default() if callable(default) else default
            object.__setattr__(self, name, v)
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown field {sorted(kw)[0]!r}")

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen: cannot assign to {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other):
        return type(other) is type(self) and self.astuple() == other.astuple()

    __hash__ = None  # labels are a dict: not hashable, as a dataclass with a dict field

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n, _ in self.FIELDS)})"

    def astuple(self):
        return tuple(getattr(self, n) for n, _ in self.FIELDS)

    def asdict(self):
        return {n: getattr(self, n) for n, _ in self.FIELDS}

    def replace(self, **changes):
        return type(self)(**{**self.asdict(), **changes})

    def __reduce__(self):
        return _rebuild, (type(self), self.asdict())


def _rebuild(cls, fields):
    return cls(**fields)


class RestartPolicy(_Frozen):
    """Docker's restart policy: name in no|on-failure|always|unless-stopped; max_retries only
    for on-failure (0: no limit)."""
    __slots__ = ("name", "max_retries")
    FIELDS = (("name", "no"), ("max_retries", 0))

    NAMES = ("no", "on-failure", "always", "unless-stopped")

    @classmethod
    def parse(cls, text):
        """`no`, `on-failure[:N]`, `always`, `unless-stopped` (Docker's --restart)."""
        if text is None or text == "":
            return cls()
        name, colon, count = str(text).partition(":")
        if not name:
            raise UsageError(f"invalid restart policy format {text!r}: no policy provided before colon",
                             hint="use no, on-failure[:N], always or unless-stopped")
        if name not in cls.NAMES:
            raise UsageError(f"invalid restart policy {text!r}: unknown policy {name!r}; use one of "
                             "'no', 'always', 'on-failure', or 'unless-stopped'",
                             hint="use no, on-failure[:N], always or unless-stopped")
        if not colon:
            return cls(name=name)
        if name != "on-failure":
            raise UsageError(f"invalid restart policy {text!r}: maximum retry count can only be used "
                             "with 'on-failure'", hint=f"use --restart {name}, or on-failure:N")
        n = count[1:] if count.startswith("-") else count
        if not n.isdigit() or not n.isascii():
            raise UsageError(f"invalid restart policy {text!r}: maximum retry count must be an integer",
                             hint="use on-failure:N, e.g. on-failure:3")
        if count.startswith("-"):
            raise UsageError(f"invalid restart policy {text!r}: maximum retry count cannot be negative",
                             hint="use on-failure:N with N >= 0")
        return cls(name=name, max_retries=int(n))

    def __str__(self):
        return f"{self.name}:{self.max_retries}" if self.name == "on-failure" and self.max_retries else self.name


def _tuple():
    return ()


def _dict():
    return {}


DEFAULT_NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "network", "cgroup")


class RunOptions(_Frozen):
    """Everything a container's run needs.  The first group are spec.build's (same names and
    meanings; `argv` is the command, after the image's name); the rest are the container's."""
    FIELDS = (
        # spec.build's
        ("argv", _tuple), ("rootfs", None), ("entrypoint", None), ("env", _tuple), ("cwd", None),
        ("user", None), ("volumes", _tuple), ("tmpfs", _tuple), ("network", "none"), ("hostname", None),
        ("read_only", False), ("init", False), ("userns", None), ("cap_add", _tuple), ("cap_drop", _tuple),
        ("no_new_privileges", False), ("ulimits", _tuple), ("group_add", _tuple), ("terminal", False),
        ("seccomp", None), ("namespaces", DEFAULT_NAMESPACES),
        # the container's
        ("image", None), ("pull", "missing"), ("platform", None), ("name", None), ("labels", _dict),
        ("detach", False), ("auto_remove", False), ("interactive", False), ("restart", RestartPolicy),
        ("stop_signal", None), ("stop_timeout", None),
    )
    __slots__ = tuple(n for n, _ in FIELDS)

    SPEC_FIELDS = ("rootfs", "entrypoint", "env", "cwd", "user", "volumes", "tmpfs", "network", "hostname",
                   "read_only", "init", "userns", "cap_add", "cap_drop", "no_new_privileges", "ulimits",
                   "group_add", "terminal", "seccomp", "namespaces")


class ExecOptions(_Frozen):
    """One more process in a running container (`docker exec`)."""
    FIELDS = (("argv", _MISSING), ("env", _tuple), ("cwd", None), ("user", None), ("terminal", False),
              ("interactive", False), ("detach", False), ("privileged", False))
    __slots__ = tuple(n for n, _ in FIELDS)


# --- values shared by every front end ------------------------------------------------------------

def signal_number(text):
    """A signal as Docker takes it (SIGTERM, TERM, term, 15, RTMIN+3) -> its number.  Raises
    UsageError naming the value."""
    s = str(text).strip()
    bad = UsageError(f"invalid signal: '{text}'", hint="give a signal name (SIGTERM, TERM) or number (1-64)")
    if s.isdigit() and s.isascii():
        n = int(s)
        if not 1 <= n <= 64:
            raise bad
        return n
    import signal
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    for base, sign, lim in (("SIGRTMIN+", 1, signal.SIGRTMAX), ("SIGRTMAX-", -1, signal.SIGRTMIN)):
        if name.startswith(base):
            off = name[len(base):]
            if not (off.isdigit() and off.isascii()):
                raise bad
            n = (signal.SIGRTMIN if sign > 0 else signal.SIGRTMAX) + sign * int(off)
            if not signal.SIGRTMIN <= n <= signal.SIGRTMAX:
                raise bad
            return int(n)
    if name in ("SIGRTMIN", "SIGRTMAX"):
        return int(getattr(signal, name))
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise bad from None


def stop_signal(text):
    """--stop-signal: validated; kept as written, uppercased with its SIG prefix (Docker's
    StopSignal), or the number as given."""
    if text is None:
        return None
    signal_number(text)
    s = str(text).strip()
    if s.isdigit():
        return s
    s = s.upper()
    return s if s.startswith("SIG") else "SIG" + s


def stop_timeout(text, flag="--stop-timeout"):
    """--stop-timeout: whole seconds (-1: wait for ever, as Docker)."""
    if text is None:
        return None
    s = str(text).strip()
    n = s[1:] if s.startswith("-") else s
    if not (n.isdigit() and n.isascii()):
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: not an integer',
                         hint="give the seconds to wait, e.g. --stop-timeout 10")
    v = int(s)
    if v < -1 or v > 2 ** 31 - 1:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: out of range',
                         hint="give 0 to 2147483647 seconds, or -1 to wait for ever")
    return v
