"""A container's output: one file, <dir>/container.log, in the CRI log format (as containerd and
CRI-O write it, which `crictl logs` and log shippers read):

    2026-11-30T17:02:48.123456789Z stdout F a whole line
    2026-11-30T17:02:48.123500000Z stderr P the start of a line without its newline

stdout and stderr interleave in the order their supervisor read them.  F ends a line (its newline
is not stored); P is a piece of a line that goes on in the next record of the same stream (a
prompt, a last line without newline).  Every run of a container is logged, as Docker does: the
detached monitor's, and a foreground `sbx run` / `sbx start -a` (its output also goes to the
caller; a tty's as stdout).  Only a foreground `--rm` run, gone when it ends, is not."""
import os
import time

from .state import parse_time, rfc3339

LOG = "container.log"


class Writer:
    """Appends the output of one container; `write(stream, data)` with stream "stdout"/"stderr"."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def write(self, stream, data):
        """One record per line of `data` (F), and a P record for what follows its last newline;
        every record of one write has the same timestamp."""
        if not data:
            return
        ts = rfc3339(time.time_ns()).encode()
        st = stream.encode()
        body, nl, last = bytes(data).rpartition(b"\n")
        out = b""
        if nl:  # whole lines: one prefix per line, made by a replace (tens of MB stay cheap)
            full = b"%s %s F " % (ts, st)
            out = full + body.replace(b"\n", b"\n" + full) + b"\n"
        if last:
            out += b"%s %s P %s\n" % (ts, st, last)
        view = memoryview(out)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- reading ---------------------------------------------------------------------------------------

def parse_time_arg(text, now=None, flag="--since"):
    """Docker's --since/--until: RFC 3339 (2026-11-30T17:00:00Z, with or without a fraction or an
    offset; a date alone), a unix time (1700000000 or 1700000000.5), or a Go duration before now
    (10m, 1h30m, 1.5s, 300ms).  Returns seconds since the epoch.  ValueError with the reason."""
    s = str(text).strip()
    now = time.time() if now is None else now
    if not s:
        raise ValueError(f"invalid value for {flag}: empty")
    try:
        return float(s)
    except ValueError:
        pass
    if len(s) >= 10 and s[4:5] == "-" and s[7:8] == "-":
        if len(s) == 10:
            s += "T00:00:00Z"
        try:
            return parse_time(s)
        except ValueError:
            raise ValueError(f"invalid time for {flag}: {text!r}") from None
    return now - go_duration(s, flag)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text, flag="--since"):
    """Go's time.ParseDuration: a sequence of decimal numbers with units (ns us ms s m h)."""
    s = text
    total = 0.0
    if not s:
        raise ValueError(f"invalid duration for {flag}: {text!r}")
    while s:
        i = 0
        while i < len(s) and (s[i].isdigit() or s[i] == "."):
            i += 1
        if i == 0:
            raise ValueError(f"invalid duration for {flag}: {text!r}")
        num = s[:i]
        j = i
        while j < len(s) and not (s[j].isdigit() or s[j] == "."):
            j += 1
        unit = s[i:j]
        if unit not in _UNITS or num.count(".") > 1 or num == ".":
            raise ValueError(f"invalid duration for {flag}: {text!r}")
        total += float(num) * _UNITS[unit]
        s = s[j:]
    return total


def _parse_line(line):
    """b"TS STREAM TAG CONTENT" -> (ts, stream, full, content) or None for a damaged line."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace"), parts[2] == b"F", content


def read(path, *, tail=None, since=None, until=None, follow=False, running=None, poll=0.1):
    """Yield (stream, timestamp, bytes) for each piece of output: a whole line with its newline,
    or a piece of one (P records).  `tail`: only the last N lines; `since`/`until`: seconds since
    the epoch; `follow`: keep reading while running() is true (then what was written last) and, with
    `until`, no later than that."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        if not follow:
            return
        while running is not None and running() and not os.path.exists(path):
            time.sleep(poll)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
    with f:
        records = []
        data = f.read()
        complete, _, rest = data.rpartition(b"\n")
        for line in complete.split(b"\n") if complete else ():
            r = _parse_line(line)
            if r is not None:
                records.append(r)
        if tail is not None:
            records = _last_lines(records, tail)
        for r in records:
            out = _emit(r, since, until)
            if out is not None:
                yield out
        if not follow:
            return
        pending = rest
        # Quiet logs are looked at again after 5 ms, then less and less often up to `poll`: a
        # container that prints and exits at once (docker-py's run(detach=False)) is followed to
        # its end in milliseconds, an idle one costs no more than before.
        nap = min(0.005, poll)
        while True:
            alive = running() if running is not None else False
            # Docker's: following ends at --until (what was written before it is read first),
            # and the container goes on
            past = until is not None and time.time() >= until
            chunk = f.read()
            if chunk:
                nap = min(0.005, poll)
                pending += chunk
                complete, _, pending = pending.rpartition(b"\n")
                for line in complete.split(b"\n") if complete else ():
                    r = _parse_line(line)
                    if r is not None:
                        out = _emit(r, since, until)
                        if out is not None:
                            yield out
                if not past:
                    continue
            if not alive or past:
                return
            time.sleep(nap)
            nap = min(nap * 2, poll)


def _emit(r, since, until):
    ts, stream, full, content = r
    if since is not None or until is not None:
        t = parse_time(ts)
        if since is not None and t < since:
            return None
        if until is not None and t > until:
            return None
    return stream, ts, content + b"\n" if full else content


def _last_lines(records, n):
    """The records of the last `n` lines (a line: P pieces up to its F record)."""
    if n < 0:
        return records
    if n == 0:
        return []
    count = 0
    for i in range(len(records) - 1, -1, -1):
        if records[i][2] or i == len(records) - 1:
            count += 1
            if count > n:
                return records[i + 1:]
    return records
