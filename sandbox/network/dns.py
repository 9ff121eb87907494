"""The few bytes of DNS the holder's responder needs (RFC 1035): read a query's question, answer
A records for the containers of one network, or pass the query on unchanged.  Everything else
(AAAA for a container's name, other types) gets an empty answer, so resolvers fall back to A."""
import struct

A, IN = 1, 1
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5


def question(data):
    """A query -> (id, name in lower case without the final dot, qtype, end of the question),
    or None for anything that is not a single-question query."""
    if len(data) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qd != 1:
        return None
    labels, i = [], 12
    while True:
        if i >= len(data):
            return None
        n = data[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0 or i + n > len(data):
            return None
        labels.append(data[i:i + n].decode("ascii", "replace").lower())
        i += n
    if i + 4 > len(data):
        return None
    qtype, qclass = struct.unpack("!HH", data[i:i + 4])
    return qid, ".".join(labels), qtype, qclass, i + 4


def reply(data, q, addrs=(), rcode=NOERROR, ttl=10):
    """The response to query `data` (parsed as `q`): the question echoed, one A record per
    address (ints), authoritative, recursion available."""
    qid, _, _, _, end = q
    flags = struct.unpack("!H", data[2:4])[0]
    out_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    head = struct.pack("!HHHHHH", qid, out_flags, 1, len(addrs), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, A, IN, ttl, 4) + struct.pack("!I", a) for a in addrs)
    return head + data[12:end] + body
