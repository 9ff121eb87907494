"""Progress of long operations (unpacking a layer, committing one) on the terminal.

A Meter is one line on stderr, in the style of `sbx pull`'s progress
(`abc123def456: Extracting [=====>     ] 12.3MB/50.1MB`).  It appears only when stderr is a
terminal and the operation has run for DELAY seconds (so quick ones print nothing), is redrawn
in place every 0.1 s, and is erased when the operation ends: the command's own output follows
as if nothing had been drawn.  When stderr is not a terminal, nothing at all is written.

SBX_PROGRESS_DELAY sets DELAY (seconds; default 0.5)."""
import os
import threading
import time

INTERVAL = 0.1


def _delay():
    try:
        return max(0.0, float(os.environ.get("SBX_PROGRESS_DELAY", "0.5")))
    except ValueError:
        return 0.5


def human_size(n):
    """Docker's units.HumanSize (as pull shows sizes): decimal units, 3 significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            break
        n /= 1000.0
    else:
        unit = "PB"
    return f"{n:.3g}{unit}"


def bar(done, total, width=30):
    filled = int(width * min(done, total) / total) if total else 0
    return "=" * filled + (">" if filled < width else "") + " " * max(0, width - filled - 1)


class Meter:
    """`with Meter("abc123def456", "Extracting", total) as m: ... m.add(n) ...`"""

    def __init__(self, label, verb, total=None, fd=2):
        self.label, self.verb, self.total, self.fd = label, verb, total, fd
        self.done = 0
        self.drawn = False
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def add(self, n):
        self.done += n

    def line(self):
        if self.total:
            return (f"{self.label}: {self.verb} [{bar(self.done, self.total)}] "
                    f"{human_size(self.done)}/{human_size(self.total)}")
        if self.label:
            return f"{self.label}: {self.verb} {human_size(self.done)}"
        return f"{self.verb}: {human_size(self.done)}"

    def _write(self, text):
        try:
            os.write(self.fd, text.encode())
        except OSError:
            self._stop.set()

    def _draw(self):
        with self._lock:
            if not self._stop.is_set():
                self._write("\r\x1b[2K" + self.line())
                self.drawn = True

    def _run(self, delay):
        if self._stop.wait(delay):
            return
        while True:
            self._draw()
            if self._stop.wait(INTERVAL):
                return

    def __enter__(self):
        try:
            tty = os.isatty(self.fd)
        except OSError:
            tty = False
        if tty:
            delay = _delay()
            if delay == 0:
                self._draw()
            self._thread = threading.Thread(target=self._run, args=(delay,), daemon=True,
                                            name="sbx-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with self._lock:
                if self.drawn:
                    self._write("\r\x1b[2K")
        return False


class LayerMeters:
    """The callback Store.unpack takes, progress(digest, nbytes, total): one Meter per layer,
    each ended when the next layer starts or when this object is closed."""

    def __init__(self, verb="Extracting"):
        self.verb = verb
        self.digest = None
        self.meter = None

    def __call__(self, digest, n, total):
        if digest != self.digest:
            self.close()
            self.digest = digest
            self.meter = Meter(digest[7:19], self.verb, total).__enter__()
        self.meter.add(n)

    def close(self):
        if self.meter is not None:
            self.meter.__exit__(None, None, None)
            self.meter = None
        self.digest = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class CountingReader:
    """A file's read() that reports how many bytes each call returned."""

    def __init__(self, f, report):
        self._f, self._report = f, report

    def read(self, n=-1):
        data = self._f.read(n)
        if data:
            self._report(len(data))
        return data


class CountingBlobs:
    """A BlobStore whose writer() reports the bytes written (to follow a layer commit)."""

    def __init__(self, blobs, report):
        self._blobs, self._report = blobs, report

    def writer(self):
        import contextlib

        @contextlib.contextmanager
        def counted():
            with self._blobs.writer() as w:
                yield _CountingWriter(w, self._report)
        return counted()


class _CountingWriter:
    def __init__(self, w, report):
        self._w, self._report = w, report

    def write(self, data):
        r = self._w.write(data)
        self._report(len(data))
        return r

    def commit(self):
        return self._w.commit()
