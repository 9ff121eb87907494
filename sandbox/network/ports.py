"""Published ports: Docker's `-p [IP:][HOSTPORT:]CTRPORT[/tcp|udp]` (ranges too), `--expose`,
docker-py's `ports={...}`, the random free host port of `-p CTRPORT` and `-P`, and Docker's shape
of NetworkSettings.Ports.  One published port is a plain dict (it goes into the runtime spec):
{"proto": "tcp", "host_ip": "", "host_port": 8080 (0: a free one at start), "container_port": 80}."""
import os

from ..errors import UsageError

PROTOS = ("tcp", "udp")
SYSCTL = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def _port_range(text, what, spec):
    lo, dash, hi = text.partition("-")
    for p in (lo, hi) if dash else (lo,):
        if not (p.isdigit() and p.isascii()) or not 1 <= int(p) <= 65535:
            raise UsageError(f"invalid {what} port {text!r} in {spec!r}", hint="ports are 1 to 65535")
    a, b = int(lo), int(hi) if dash else int(lo)
    if b < a:
        raise UsageError(f"invalid {what} port range {text!r} in {spec!r}: the end is before the start")
    return a, b


def _ip(text, spec):
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts):
        if ":" in text or text.startswith("["):
            raise UsageError(f"invalid host address {text!r} in {spec!r}: IPv6 host addresses are not supported",
                             hint="give an IPv4 address such as 127.0.0.1, or leave it out (all addresses)")
        raise UsageError(f"invalid host address {text!r} in {spec!r}", hint="give an IPv4 address such as 127.0.0.1")
    return text


def _proto(s, where, verb):
    body, _, proto = s.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOS:
        raise UsageError(f"invalid protocol {proto!r} in {where!r}", hint=f"{verb} tcp or udp ports")
    return body, proto


def parse(spec):
    """One `-p` value -> a list of published ports."""
    s = str(spec)
    body, proto = _proto(s, s, "publish")
    parts = body.split(":")
    if len(parts) == 1:
        ip, host, ctr = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, ctr = "", parts[0], parts[1]
    elif len(parts) == 3:
        ip, host, ctr = parts
    else:
        raise UsageError(f"invalid port specification {s!r}", hint="use [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
    if ip:
        ip = _ip(ip, s)
    c0, c1 = _port_range(ctr, "container", s)
    if host:
        h0, h1 = _port_range(host, "host", s)
        if h1 - h0 != c1 - c0:
            raise UsageError(f"invalid port specification {s!r}: the host range and the container range differ in size",
                             hint="give ranges of the same length, e.g. 8000-8001:80-81")
    else:
        h0 = 0
    return [{"proto": proto, "host_ip": ip, "host_port": h0 + i if h0 else 0, "container_port": c0 + i}
            for i in range(c1 - c0 + 1)]


def parse_expose(spec):
    """One `--expose PORT[-PORT][/PROTO]` -> ["80/tcp", ...]."""
    s = str(spec)
    body, proto = _proto(s, f"--expose {s}", "expose")
    a, b = _port_range(body, "exposed", s)
    return [f"{p}/{proto}" for p in range(a, b + 1)]


def unprivileged_start():
    try:
        with open(SYSCTL) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def check(ports):
    """Refuse duplicate host ports and, unless root, host ports below the kernel's
    net.ipv4.ip_unprivileged_port_start (the helper could not bind them)."""
    seen = {}
    for p in ports:
        if p["host_port"]:
            key = (p["proto"], p["host_port"])
            if key in seen and (seen[key] in ("", p["host_ip"]) or not p["host_ip"]):
                raise UsageError(f"host port {p['host_port']}/{p['proto']} is published twice",
                                 hint="give each published port its own host port")
            seen[key] = p["host_ip"]
    if os.geteuid() == 0:
        return ports
    low = [p["host_port"] for p in ports if p["host_port"] and p["host_port"] < unprivileged_start()]
    if low:
        start = unprivileged_start()
        raise UsageError(f"cannot publish host port {low[0]}: ports below {start} are privileged "
                         f"(net.ipv4.ip_unprivileged_port_start={start})",
                         hint=f"publish a host port of {start} or above (e.g. -p {start + 8000}:{low[0]}), or lower "
                              f"it: sudo sysctl net.ipv4.ip_unprivileged_port_start={low[0]}")
    return ports


def from_docker_py(ports):
    """docker-py's `ports={"80/tcp": None | 8080 | ("127.0.0.1", 8080) | [8080, 8081], 81: ...}`."""
    out = []
    for key, val in (ports or {}).items():
        k = str(key)
        body, _, proto = k.partition("/")
        proto = proto or "tcp"
        if proto not in PROTOS or not (body.isdigit() and 1 <= int(body) <= 65535):
            raise UsageError(f"invalid port {key!r} in ports", hint="use keys such as '80/tcp' or 80")
        vals = val if isinstance(val, list) else [val]
        for v in vals:
            ip, host = "", v
            if isinstance(v, tuple):
                ip, host = (v[0], v[1] if len(v) > 1 else None)
                ip = _ip(str(ip), k) if ip else ""
            if host is None:
                host = 0
            elif not (isinstance(host, int) or str(host).isdigit()) or not 0 <= int(host) <= 65535:
                raise UsageError(f"invalid host port {host!r} for {key!r} in ports", hint="give 1 to 65535, or None")
            out.append({"proto": proto, "host_ip": ip, "host_port": int(host), "container_port": int(body)})
    return check(out)


def free_port(proto, ip):
    """A host port nobody uses now (the kernel's pick)."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((ip or "0.0.0.0", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def assign(ports):
    """The ports with every random one (host_port 0) given a free host port."""
    return [dict(p, host_port=p["host_port"] or free_port(p["proto"], p["host_ip"])) for p in ports]


def busy(p):
    """Why the host side of `p` cannot be bound now (a sentence), or None."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((p["host_ip"] or "0.0.0.0", p["host_port"]))
        return None
    except OSError as e:
        return e.strerror
    finally:
        s.close()


def busy_error(p, why):
    from .helper import HelperError
    where = f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}/{p['proto']}"
    return HelperError(f"cannot publish {where} -> {p['container_port']}: {why}",
                       hint="another program holds that host port: pick another one (-p HOSTPORT:"
                            f"{p['container_port']}) or let sbx choose (-p {p['container_port']})")


def docker_ports(ports, exposed=()):
    """NetworkSettings.Ports: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": None}."""
    out = {e: None for e in exposed}
    for p in ports:
        out.setdefault(f"{p['container_port']}/{p['proto']}", None)
        key = f"{p['container_port']}/{p['proto']}"
        out[key] = (out[key] or []) + [{"HostIp": p["host_ip"] or "0.0.0.0", "HostPort": str(p["host_port"])}]
    return out


def _by_port(doc_ports):
    return sorted((doc_ports or {}).items(), key=lambda kv: (int(kv[0].split("/")[0]), kv[0]))


def lines(doc_ports, which=None):
    """`sbx port` lines ("80/tcp -> 0.0.0.0:8080") from NetworkSettings.Ports; `which` (80,
    80/tcp) keeps one container port, and then only the host side is shown."""
    out = []
    for key, binds in _by_port(doc_ports):
        if which is not None and key != which and key != f"{which}/tcp":
            continue
        for b in binds or ():
            host = f"{b['HostIp']}:{b['HostPort']}"
            out.append(host if which is not None else f"{key} -> {host}")
    return out


def summary(doc_ports):
    """The PORTS column of `ps`: "0.0.0.0:8080->80/tcp, 443/tcp"."""
    out = []
    for key, binds in _by_port(doc_ports):
        if not binds:
            out.append(key)
        for b in binds or ():
            out.append(f"{b['HostIp']}:{b['HostPort']}->{key}")
    return ", ".join(out)
