"""Layer compression: detect gzip / zstd / none by magic bytes and open a decompressing reader.

Detection is by content, not by media type: registries and tools mislabel layers often enough.
zstd needs a zstd module: ``compression.zstd`` (Python >= 3.14) or the ``zstandard`` package; without one a
zstd layer fails with a clear error saying what to install. gzip uses the standard library.
"""

from __future__ import annotations

import gzip
import io
from typing import BinaryIO

from sandbox.image.errors import LayerError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

NONE, GZIP, ZSTD = "none", "gzip", "zstd"


def zstd_available() -> bool:
    """True if zstd layers can be read here (``compression.zstd`` or the ``zstandard`` package)."""
    from importlib.util import find_spec

    try:
        if find_spec("compression") is not None and find_spec("compression.zstd") is not None:
            return True
    except (ImportError, ValueError):
        pass
    return find_spec("zstandard") is not None


def detect(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    return NONE


class _Peekable(io.RawIOBase):
    """Wrap a reader that has no peek() so that we can look at its first bytes and still read them."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._head = b""

    def peek_head(self, n: int) -> bytes:
        while len(self._head) < n:
            chunk = self._raw.read(n - len(self._head))
            if not chunk:
                break
            self._head += chunk
        return self._head

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_decompressed(raw: BinaryIO, label: str = "layer") -> tuple[BinaryIO, str]:
    """Return ``(reader, kind)``: a reader of the uncompressed tar stream and ``gzip``/``zstd``/``none``."""
    src = _Peekable(raw)
    kind = detect(src.peek_head(4))
    buffered = io.BufferedReader(src, 1 << 20)
    if kind == GZIP:
        return gzip.GzipFile(fileobj=buffered, mode="rb"), kind  # type: ignore[return-value]
    if kind == ZSTD:
        try:
            from compression import zstd  # type: ignore[import-not-found]

            return zstd.ZstdFile(buffered, "rb"), kind  # type: ignore[return-value]
        except ImportError:
            pass
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise LayerError(
                f"{label} is zstd-compressed and no zstd module is available",
                hint="install the `zstandard` Python package (pip install zstandard), or use Python >= 3.14",
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True), kind
    return buffered, kind  # type: ignore[return-value]


def compressed_media_suffix(kind: str) -> str:
    return {GZIP: "+gzip", ZSTD: "+zstd"}.get(kind, "")
