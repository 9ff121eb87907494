"""`--network` values -> a small plain `Mode`, and the choice of the default.

    none | host | slirp4netns[:OPT=V,...] | pasta[:OPT,...] | bridge | private | default
         | container:NAME | NAME

`bridge`, `private` and `default` ask for the default private network: slirp4netns when it is
installed (ready in about 3 ms here), else pasta (about 54 ms).  A mode the user names is checked
now (the helper is installed, /dev/net/tun opens) and refused with exit 125 naming the package or
the device; the default for an image (`sbx run IMAGE`, build RUN steps) says in one line why it
falls back to `none` and goes on.  Podman's option syntax: `slirp4netns:allow_host_loopback=true,
mtu=1500,cidr=10.0.3.0/24,enable_ipv6=true,outbound_addr=IP,port_handler=slirp4netns`,
`pasta:-T,8080,--map-gw` (pasta's own options, comma-separated).

On `sbx run`'s path: no `re`, no `shutil` (which imports it)."""
import os

from ..errors import UsageError

TUN = "/dev/net/tun"
BUILTIN = ("none", "host", "slirp4netns", "pasta", "bridge", "private", "default")
PACKAGES = {"slirp4netns": "slirp4netns", "pasta": "passt"}
SLIRP_OPTIONS = ("allow_host_loopback", "cidr", "enable_ipv6", "mtu", "outbound_addr", "outbound_addr6",
                 "port_handler")
PASTA_DNS = "169.254.1.1"  # podman's --dns-forward address
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class Mode:
    """A parsed `--network` value.  kind: none | host | slirp4netns | pasta | private (the
    default private network, not yet resolved) | container | network (a user-defined one);
    `options`: slirp4netns's as a dict, pasta's as a tuple of its own arguments; `target`: the
    container or network name; `helper`: the helper's path once resolved."""
    __slots__ = ("kind", "options", "target", "helper")

    def __init__(self, kind, options=None, target=None, helper=None):
        self.kind, self.options, self.target, self.helper = kind, options, target, helper

    def __eq__(self, other):
        return type(other) is Mode and (self.kind, self.options, self.target, self.helper) == (
            other.kind, other.options, other.target, other.helper)

    def __repr__(self):
        return f"Mode({self.text!r})"

    def __reduce__(self):
        return Mode, (self.kind, self.options, self.target, self.helper)

    @property
    def text(self):
        """The canonical `--network` text (HostConfig.NetworkMode)."""
        if self.kind == "container":
            return f"container:{self.target}"
        if self.kind == "network":
            return self.target
        if self.kind == "slirp4netns" and self.options:
            return "slirp4netns:" + ",".join(f"{k}={v}" for k, v in self.options.items())
        if self.kind == "pasta" and self.options:
            return "pasta:" + ",".join(self.options)
        return self.kind

    @property
    def private(self):
        """A network namespace of its own connected through a helper (ports can be published)."""
        return self.kind in ("slirp4netns", "pasta", "private", "network")

    def annotation(self):
        """What the runtime spec keeps ("sbx" annotations, key "network"): everything the launch
        hook and the generated /etc files need, plain JSON."""
        a = {"mode": self.kind, "text": self.text}
        if self.kind == "slirp4netns":
            o = dict(self.options or {})
            net = _cidr(o.get("cidr", "10.0.2.0/24"))
            a.update(helper=self.helper, allow_host_loopback=o.get("allow_host_loopback") == "true",
                     enable_ipv6=o.get("enable_ipv6") == "true", mtu=int(o.get("mtu", 65520)),
                     cidr=o.get("cidr"), outbound_addr=o.get("outbound_addr"),
                     outbound_addr6=o.get("outbound_addr6"), address=net[100], gateway=net[2], dns=net[3],
                     prefix=net[0])
        elif self.kind == "pasta":
            gw, addr, prefix = host_route()
            a.update(helper=self.helper, setpriv=which("setpriv"), args=list(self.options or ()), dns=PASTA_DNS,
                     gateway=gw, address=addr,
                     prefix=prefix, map_gw="--map-gw" in (self.options or ()))
        elif self.kind == "container":
            a["container"] = self.target
        elif self.kind == "network":
            a.update(self.options or {})  # bridge.py's: the container's name, --network-alias, --ip, --mac-address
            a["network"] = self.target
        return a


def _cidr(text):
    """An IPv4 CIDR -> a function-like table: [offset] -> address; [0] -> prefix length."""
    addr, slash, bits = text.partition("/")
    parts = addr.split(".")
    if (not slash or not bits.isdigit() or len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts)
            or not 8 <= int(bits) <= 25):
        raise UsageError(f"invalid slirp4netns cidr {text!r}", hint="give an IPv4 network of /8 to /25, e.g. cidr=10.0.3.0/24")
    n = 0
    for p in parts:
        n = n * 256 + int(p)
    mask = (0xFFFFFFFF << (32 - int(bits))) & 0xFFFFFFFF
    base = n & mask

    class Table:
        def __getitem__(self, off):
            if off == 0:
                return int(bits)
            v = base + off
            return ".".join(str(v >> s & 255) for s in (24, 16, 8, 0))
    return Table()


def parse(text):
    """A `--network` value -> Mode (syntax checked; nothing looked up)."""
    if text is None:
        return Mode("private")
    if isinstance(text, Mode):
        return text
    t = str(text)
    kind, colon, rest = t.partition(":")
    if kind in ("none", "host", "bridge", "private", "default") and not colon:
        return Mode("private" if kind in ("bridge", "private", "default") else kind)
    if kind == "slirp4netns":
        return Mode("slirp4netns", _slirp_options(t, rest) if colon else None)
    if kind == "pasta":
        args = tuple(a for a in rest.split(",") if a) if colon else ()
        return Mode("pasta", args or None)
    if kind == "container":
        if not rest:
            raise UsageError(f"invalid network mode {t!r}: no container named", hint="use --network container:NAME")
        return Mode("container", target=rest)
    if kind in ("ns", "slirp") or colon:
        raise UsageError(f"network mode {t!r} is not supported",
                         hint="use none, host, slirp4netns[:OPTS], pasta[:OPTS], bridge, container:NAME or a network's name")
    if not t or t[0] in "._-" or not all(c in _NAME_CHARS for c in t):
        raise UsageError(f"invalid network name {t!r}",
                         hint="network names are letters, digits, '_', '.' and '-', starting with a letter or digit")
    return Mode("network", target=t)


def _slirp_options(text, rest):
    out = {}
    for item in rest.split(","):
        if not item:
            continue
        k, eq, v = item.partition("=")
        if k not in SLIRP_OPTIONS or not eq:
            raise UsageError(f"unknown slirp4netns option {item!r} in {text!r}",
                             hint="options: " + ", ".join(f"{o}=..." for o in SLIRP_OPTIONS))
        if k in ("allow_host_loopback", "enable_ipv6") and v not in ("true", "false"):
            raise UsageError(f"slirp4netns option {k} takes true or false, not {v!r}")
        if k == "mtu" and not (v.isdigit() and 68 <= int(v) <= 65521):
            raise UsageError(f"slirp4netns option mtu={v!r} is out of range", hint="give 68 to 65521")
        if k == "cidr":
            _cidr(v)
        if k == "port_handler" and v != "slirp4netns":
            raise UsageError(f"slirp4netns port_handler={v!r} is not supported",
                             hint="sbx publishes ports through slirp4netns's own API: use port_handler=slirp4netns "
                                  "or leave it out")
        out[k] = v
    return out or None


def bridge_module(name):
    """sandbox.network.bridge (user-defined networks), or UsageError "network NAME not found"
    where it is not there."""
    import importlib
    try:
        return importlib.import_module(__package__ + ".bridge")
    except ModuleNotFoundError as e:
        if e.name != __package__ + ".bridge":
            raise
        raise UsageError(f"network {name} not found", hint=f"create it first: sbx network create {name}") from None


def which(name):
    """The path of an executable `name` on PATH, or None (shutil.which without `re`)."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d or ".", name)
        if os.access(p, os.X_OK) and not os.path.isdir(p):
            return p
    return None


def tun_problem(path=None):
    """Why the tap device cannot be opened (a sentence), or None when it can."""
    path = path or TUN
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        return None
    except OSError as e:
        return f"{path} cannot be opened ({e.strerror})"


def _tun_hint(why):
    if "Permission" in why or "not permitted" in why:
        return (f"slirp4netns and pasta need a tap device: make it usable for users (as udev does on desktops): "
                f"sudo chmod 0666 {TUN}")
    return f"slirp4netns and pasta need a tap device: load the tun module (sudo modprobe tun)"


def resolve(mode, *, default=False, warn=None):
    """A parsed Mode -> the one to run: `private` becomes slirp4netns (installed) or pasta, the
    helper's path is found, the tap device is checked.  A mode asked for that cannot work raises
    UsageError naming the package or the device; with `default` (the user asked for nothing),
    `warn(line)` says why and `none` is returned instead."""
    m = parse(mode)
    if m.kind in ("none", "host", "container"):
        return m
    if m.kind == "network":
        bridge = bridge_module(m.target)
        check = getattr(bridge, "check", None)
        if check is not None:
            check(m.target)
        return m
    kinds = ("slirp4netns", "pasta") if m.kind == "private" else (m.kind,)
    helper = None
    for kind in kinds:
        helper = which(kind)
        if helper:
            break
    why = hint = None
    if helper is None:
        if m.kind == "private":
            why = "neither slirp4netns nor pasta is installed"
            hint = "install the package slirp4netns (or passt), or use --network none"
        else:
            why = f"{m.kind} is not installed"
            hint = f"install the package {PACKAGES[m.kind]}, or use --network none"
    else:
        why = tun_problem()
        hint = _tun_hint(why) if why else None
    if why is None:
        options = m.options if m.kind == kind else None
        return Mode(kind, options, helper=helper)
    if default:
        if warn is not None:
            warn(f"no network access: {why}; running with --network none")
        return Mode("none")
    what = "give the container a network of its own" if m.kind == "private" else f"use --network {m.text}"
    raise UsageError(f"cannot {what}: {why}", hint=hint)


def host_route():
    """The host's default IPv4 gateway, the address it is reached from and that address's
    prefix length (what pasta copies into the namespace); Nones without a default route."""
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None, None, None
    gw = dev = None
    for line in lines:
        f = line.split()
        if len(f) > 7 and f[1] == "00000000" and f[7] == "00000000":
            dev, g = f[0], int(f[2], 16)
            gw = ".".join(str(g >> s & 255) for s in (0, 8, 16, 24))
            break
    if gw is None:
        return None, None, None
    prefix = None
    for line in lines:
        f = line.split()
        if len(f) > 7 and f[0] == dev and f[1] != "00000000":
            prefix = bin(int(f[7], 16)).count("1")
            break
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((gw, 9))  # nothing is sent: the kernel picks the source address
        addr = s.getsockname()[0]
    except OSError:
        addr = None
    finally:
        s.close()
    return gw, addr, prefix
