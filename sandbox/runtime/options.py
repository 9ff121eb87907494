"""Typed options for a container's run and exec: built once by the CLI's parser
(`cli/runopts.to_options`), the Python API and later the Docker API mapper, then handed down
(`spec.from_options`, the engine).

Frozen records written without `dataclasses`: that module imports `re` and `inspect`, and this
one is on every `sbx run`'s path (whose start-up is measured).  They behave as frozen
dataclasses do: keyword construction with defaults, read-only fields, `==`, `repr`, plus
`replace(**changes)` and `asdict()`."""
import os

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


class Resources(_Frozen):
    """A container's cgroup limits, docker-py's names and Docker's units (bytes, nano CPUs,
    microseconds); None: not set.  Enforced by `sandbox.cgroups` or refused there."""
    FIELDS = (("mem_limit", None), ("memswap_limit", None), ("mem_reservation", None), ("nano_cpus", None),
              ("cpu_shares", None), ("cpu_period", None), ("cpu_quota", None), ("cpuset_cpus", None),
              ("cpuset_mems", None), ("pids_limit", None), ("blkio_weight", None), ("oom_kill_disable", False),
              # ((device path, rate), ...): --device-read-bps /dev/sda:1mb and friends (io.max)
              ("device_read_bps", None), ("device_write_bps", None), ("device_read_iops", None),
              ("device_write_iops", None))
    __slots__ = tuple(n for n, _ in FIELDS)

    def __bool__(self):
        """True when any limit is asked for."""
        return any(v not in (None, False) for v in self.astuple())


class RunOptions(_Frozen):
    """Everything a container's run needs.  The first group are spec.build's (same names and
    meanings; `argv` is the command, after the image's name); the rest are the container's.
    `network`: "none", "host", or a mode resolved by sandbox.network.modes.resolve (a Mode);
    `ports`: sandbox.network.ports dicts (-p), `publish_all` (-P), `expose` ("80/tcp" strings),
    `dns`, `dns_search`, `dns_options`, `extra_hosts` (NAME:IP, NAME:host-gateway)."""
    FIELDS = (
        # spec.build's
        ("argv", _tuple), ("rootfs", None), ("entrypoint", None), ("env", _tuple), ("cwd", None),
        ("user", None), ("volumes", _tuple), ("tmpfs", _tuple), ("network", "none"), ("hostname", None),
        ("read_only", False), ("init", False), ("userns", None), ("cap_add", _tuple), ("cap_drop", _tuple),
        ("no_new_privileges", False), ("ulimits", _tuple), ("group_add", _tuple), ("terminal", False),
        ("seccomp", None), ("namespaces", DEFAULT_NAMESPACES),
        ("ports", _tuple), ("publish_all", False), ("expose", _tuple), ("dns", _tuple), ("dns_search", _tuple),
        ("dns_options", _tuple), ("extra_hosts", _tuple),
        # the container's
        ("image", None), ("pull", "missing"), ("platform", None), ("name", None), ("labels", _dict),
        ("detach", False), ("auto_remove", False), ("interactive", False), ("restart", RestartPolicy),
        ("stop_signal", None), ("stop_timeout", None), ("resources", Resources),
    )
    __slots__ = tuple(n for n, _ in FIELDS)

    SPEC_FIELDS = ("rootfs", "entrypoint", "env", "cwd", "user", "volumes", "tmpfs", "network", "hostname",
                   "read_only", "init", "userns", "cap_add", "cap_drop", "no_new_privileges", "ulimits",
                   "group_add", "terminal", "seccomp", "namespaces", "ports", "publish_all", "expose", "dns",
                   "dns_search", "dns_options", "extra_hosts")


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


# --- resource limits: Docker's units and checks (docker/cli opts, the daemon's verify*Resources) --

MIN_MEMORY = 6 * 1024 * 1024  # the daemon's linuxMinMemory
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _bad(text, flag, why, hint):
    return UsageError(f'invalid argument "{text}" for "{flag}" flag: {why}', hint=hint)


def ram_in_bytes(text, flag="-m, --memory"):
    """Docker's RAMInBytes: `64m`, `1.5g`, `512MiB`, `100 k`, `1024` (bytes); binary units."""
    if isinstance(text, int):
        return text
    low = str(text).strip().lower()
    if low.endswith("b"):
        low = low[:-1]
    if low.endswith("i"):
        low = low[:-1]
    unit = low[-1:] if low[-1:] in "kmgtp" else ""
    num = low[:-1] if unit else low
    if num.endswith(" "):
        num = num[:-1]
    parts = num.split(".")
    ok = num and len(parts) <= 2 and all(p.isdigit() and p.isascii() for p in parts)
    if not ok:
        raise _bad(text, flag, f"invalid size: '{text}'", "give a size such as 64m, 1.5g or 1048576 (bytes)")
    return int(float(num) * _UNITS[unit])


def nano_cpus(text, flag="--cpus"):
    """--cpus 1.5 -> 1500000000 (Docker's NanoCPUs; at most 9 decimals)."""
    if isinstance(text, int):
        return text
    s = str(text).strip()
    whole, dot, frac = s.partition(".")
    if not (whole or frac) or not all(p.isdigit() and p.isascii() for p in (whole or "0", frac or "0")) \
            or (dot and not frac and not whole):
        raise _bad(text, flag, f"failed to parse {text} as a rational number",
                   "give a number of CPUs, e.g. --cpus 1.5")
    if len(frac) > 9:
        raise _bad(text, flag, "value is too precise", "give at most 9 decimals")
    return int(whole or "0") * 10 ** 9 + int((frac or "0").ljust(9, "0"))


def _int(text, flag, lo=-2 ** 63, hi=2 ** 63 - 1):
    if isinstance(text, int):
        v = text
    else:
        s = str(text).strip()
        n = s[1:] if s.startswith("-") else s
        if not (n.isdigit() and n.isascii()):
            raise _bad(text, flag, f'strconv.ParseInt: parsing "{text}": invalid syntax', "give an integer")
        v = int(s)
    if not lo <= v <= hi:
        raise _bad(text, flag, f'strconv.ParseInt: parsing "{text}": value out of range', "give a smaller integer")
    return v


def _cpuset(text, what):
    """A list such as 0-3,5 (Docker: 'Invalid value 0-x for cpuset cpus')."""
    s = str(text).strip()
    if s == "":
        return None
    for part in s.split(","):
        lo, dash, hi = part.partition("-")
        if not (lo.isdigit() and lo.isascii()) or (dash and not (hi.isdigit() and hi.isascii())) \
                or (dash and int(hi) < int(lo)):
            raise UsageError(f"Invalid value {text} for cpuset {what}",
                             hint=f"give a list of {'CPUs' if what == 'cpus' else 'memory nodes'} such as 0-1,3")
    return s


def throttles(values, flag):
    """Docker's --device-read-bps/--device-write-bps (`/dev/sda:1mb`) and --device-*-iops
    (`/dev/sda:1000`) values, or docker-py's [{"Path": ..., "Rate": ...}] -> ((path, rate), ...),
    None when there are none."""
    out = []
    iops = flag.endswith("iops")
    for v in values or ():
        if isinstance(v, dict):
            v = f"{v.get('Path', '')}:{v.get('Rate', '')}"
        elif not isinstance(v, str) and len(v) == 2:
            v = f"{v[0]}:{v[1]}"
        path, sep, rate = str(v).partition(":")
        if not sep or not path:
            raise _bad(v, flag, f"bad format: {v}", "give DEVICE:RATE, e.g. /dev/sda:1mb")
        if not path.startswith("/dev/"):
            raise _bad(v, flag, f"bad format for device path: {v}", "give a path under /dev, e.g. /dev/sda:1mb")
        fmt = "<device-path>:<number>" + ("" if iops else "[<unit>]")
        why = (f"invalid rate for device: {v}. The correct format is {fmt}. Number must be a positive integer"
               + ("" if iops else ". Unit is optional and can be kb, mb, or gb"))
        try:
            n = _int(rate, flag, 0) if iops else ram_in_bytes(rate, flag)
        except UsageError:
            raise _bad(v, flag, why, "e.g. /dev/sda:1mb (bytes per second) or /dev/sda:1000 (iops)") from None
        out.append((path, n))
    return tuple(out) or None


def resources(memory=None, memory_swap=None, memory_reservation=None, cpus=None, cpu_shares=None,
              cpu_period=None, cpu_quota=None, cpuset_cpus=None, cpuset_mems=None, pids_limit=None,
              blkio_weight=None, oom_kill_disable=False, ncpu=None, device_read_bps=None, device_write_bps=None,
              device_read_iops=None, device_write_iops=None):
    """Docker's limit flags (text as typed, or numbers) -> Resources, checked as the Docker CLI
    and daemon check them, with their messages."""
    mem = ram_in_bytes(memory) if memory not in (None, "") else None
    swap = None
    if memory_swap not in (None, ""):
        swap = -1 if str(memory_swap).strip() == "-1" else ram_in_bytes(memory_swap, "--memory-swap")
    res = ram_in_bytes(memory_reservation, "--memory-reservation") if memory_reservation not in (None, "") else None
    if mem == 0:
        mem = None
    if mem is not None and mem < MIN_MEMORY:
        raise UsageError("Minimum memory limit allowed is 6MB", hint="give -m 6m or more")
    if swap is not None and swap != 0:
        if mem is None:
            raise UsageError("You should always set the Memory limit when using Memoryswap limit, see usage",
                             hint="add -m, e.g. -m 64m --memory-swap 128m")
        if swap > 0 and swap < mem:
            raise UsageError("Minimum memoryswap limit should be larger than memory limit, see usage",
                             hint="--memory-swap is memory plus swap: give at least the -m value, or -1")
    if res is not None:
        if res == 0:
            res = None
        elif res < MIN_MEMORY:
            raise UsageError("Minimum memory reservation allowed is 6MB", hint="give --memory-reservation 6m or more")
        elif mem is not None and mem < res:
            raise UsageError("Minimum memory limit can not be less than memory reservation limit, see usage",
                             hint="give a -m at least as large as --memory-reservation")
    nano = nano_cpus(cpus) if cpus not in (None, "") else None
    period = _int(cpu_period, "--cpu-period") if cpu_period not in (None, "") else None
    quota = _int(cpu_quota, "--cpu-quota") if cpu_quota not in (None, "") else None
    nano = nano or None
    if nano is not None:
        if period:
            raise UsageError("Conflicting options: Nano CPUs and CPU Period cannot both be set",
                             hint="use --cpus alone, or --cpu-period with --cpu-quota")
        if quota:
            raise UsageError("Conflicting options: Nano CPUs and CPU Quota cannot both be set",
                             hint="use --cpus alone, or --cpu-period with --cpu-quota")
        n = ncpu or os.cpu_count() or 1
        if nano < 10 ** 7 or nano > n * 10 ** 9:
            raise UsageError(f"Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available",
                             hint=f"give --cpus between 0.01 and {n}")
    if period == 0:
        period = None
    if period is not None and not 1000 <= period <= 1000000:
        raise UsageError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
                         hint="give --cpu-period between 1000 and 1000000 microseconds")
    if quota is not None and quota == 0:
        quota = None
    if quota is not None and 0 < quota < 1000:
        raise UsageError("CPU cfs quota can not be less than 1ms (i.e. 1000)",
                         hint="give --cpu-quota of 1000 microseconds or more (or -1: no quota)")
    if quota is not None and quota < 0:
        quota = None if period is None else -1
    shares = _int(cpu_shares, "-c, --cpu-shares") if cpu_shares not in (None, "") else None
    if shares is not None and shares < 0:
        raise UsageError("shares: invalid argument", hint="give --cpu-shares 2 to 262144 (1024 is the default)")
    pids = _int(pids_limit, "--pids-limit") if pids_limit not in (None, "") else None
    if pids == 0:  # Docker: 0 and -1 are unlimited; 0 means "not set"
        pids = None
    blkio = _int(blkio_weight, "--blkio-weight", 0, 65535) if blkio_weight not in (None, "") else None
    if blkio == 0:
        blkio = None
    if blkio is not None and not 10 <= blkio <= 1000:
        raise UsageError("Range of blkio weight is from 10 to 1000", hint="give --blkio-weight between 10 and 1000")
    return Resources(mem_limit=mem, memswap_limit=swap if swap else None, mem_reservation=res, nano_cpus=nano,
                     cpu_shares=shares or None, cpu_period=period, cpu_quota=quota,
                     cpuset_cpus=_cpuset(cpuset_cpus, "cpus") if cpuset_cpus is not None else None,
                     cpuset_mems=_cpuset(cpuset_mems, "mems") if cpuset_mems is not None else None,
                     pids_limit=pids, blkio_weight=blkio, oom_kill_disable=bool(oom_kill_disable),
                     device_read_bps=throttles(device_read_bps, "--device-read-bps"),
                     device_write_bps=throttles(device_write_bps, "--device-write-bps"),
                     device_read_iops=throttles(device_read_iops, "--device-read-iops"),
                     device_write_iops=throttles(device_write_iops, "--device-write-iops"))
