"""IPv4 address arithmetic for user-defined networks: a subnet in CIDR form, its gateway, the free
subnet for a new network (podman's 10.89.N.0/24 pool) and the lowest free host address.  Plain
integers, no `ipaddress` (it is small, but this is all a /24 pool needs, and the checks give
Docker's messages).  The holder (holder.py) is the only allocator of container addresses: it
serves one request at a time, so an address is never handed out twice."""
from ..errors import UsageError

POOL = (10 << 24 | 89 << 16, 256)   # 10.89.0.0/16, as /24s: podman's default pool
SLIRP = (10 << 24 | 2 << 8, 24)      # 10.0.2.0/24: the holder's own link to the outside


def to_int(text, what="IP address"):
    parts = str(text).split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 3 and int(p) < 256 for p in parts):
        raise UsageError(f"invalid {what} {text!r}", hint="give an IPv4 address such as 10.89.5.1")
    n = 0
    for p in parts:
        n = n << 8 | int(p)
    return n


def to_text(n):
    return ".".join(str(n >> s & 255) for s in (24, 16, 8, 0))


def parse_cidr(text):
    """'10.89.3.0/24' -> (network int, prefix); host bits must be zero (Docker refuses them too)."""
    addr, slash, bits = str(text).partition("/")
    if not slash or not (bits.isdigit() and bits.isascii()):
        raise UsageError(f"invalid CIDR address: {text}", hint="give --subnet as ADDRESS/PREFIX, e.g. 10.89.5.0/24")
    n, prefix = to_int(addr, "subnet address"), int(bits)
    if not 8 <= prefix <= 30:
        raise UsageError(f"invalid subnet {text}: the prefix must be /8 to /30",
                         hint="a network needs room for a gateway and containers, e.g. /24")
    if n & ~mask(prefix) & 0xFFFFFFFF:
        raise UsageError(f"invalid subnet {text}: host bits are set",
                         hint=f"did you mean {to_text(n & mask(prefix))}/{prefix}?")
    return n, prefix


def mask(prefix):
    return (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF


def cidr_text(net):
    return f"{to_text(net[0])}/{net[1]}"


def contains(net, addr):
    return addr & mask(net[1]) == net[0]


def overlaps(a, b):
    p = min(a[1], b[1])
    return a[0] & mask(p) == b[0] & mask(p)


def hosts(net):
    """The usable host addresses (network and broadcast excluded), as a range of ints."""
    return range(net[0] + 1, net[0] + (1 << (32 - net[1])) - 1)


def gateway_for(net, text=None):
    """The gateway: `text` checked to be a host address of the subnet, else its first host."""
    if text is None:
        return net[0] + 1
    g = to_int(text, "gateway")
    if g not in hosts(net):
        raise UsageError(f"gateway {text} is not a host address of subnet {cidr_text(net)}",
                         hint="give an address inside the subnet, or leave --gateway out (the first address)")
    return g


def free_subnet(taken):
    """The first /24 of the pool that overlaps none of `taken` ((int, prefix) pairs)."""
    base, count = POOL
    for i in range(count):
        cand = (base + (i << 8), 24)
        if not any(overlaps(cand, t) for t in taken):
            return cand
    return None


def pick(net, used, gateway, want=None):
    """A host address of `net` not in `used` and not the gateway: `want` (text) if given and
    free, else the lowest; ValueError says why not."""
    if want is not None:
        a = to_int(want)
        if a not in hosts(net):
            raise ValueError(f"address {want} is not in the network's subnet {cidr_text(net)}")
        if a == gateway or a in used:
            raise ValueError(f"address {want} is already in use on the network")
        return a
    for a in hosts(net):
        if a != gateway and a not in used:
            return a
    raise ValueError(f"no free address left in subnet {cidr_text(net)}")


def mac_for(addr):
    """Docker's scheme: 02:42 and the four bytes of the address (unique within a network)."""
    return "02:42:" + ":".join(f"{addr >> s & 255:02x}" for s in (24, 16, 8, 0))


def check_mac(text):
    parts = str(text).split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise UsageError(f"invalid MAC address {text!r}", hint="give six hex bytes, e.g. 02:42:0a:59:00:05")
    if int(parts[0], 16) & 1:
        raise UsageError(f"invalid MAC address {text!r}: it is a multicast address",
                         hint="the first byte must be even, e.g. 02:...")
    return text.lower()
