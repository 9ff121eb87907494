"""Root filesystem tarballs: ``sbx import`` (tar -> single-layer image) and ``export`` (an image's layers,
flattened, as one tar).

Flattening reads the unpacked layer directories, top layer first, the way overlayfs would merge them:
the topmost layer that has a name wins; a whiteout (char 0/0, or a ``.wh.NAME`` file in the fallback
form) hides the name in every layer below; an opaque directory hides the lower layers' contents of that
directory. Symlinks are never followed. Owners of single-id layers are written as 0:0 (the ids were
collapsed to the user when unpacking; root is what the image had for almost every file).
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from sandbox.image import reference as refs
from sandbox.image import whiteout as wh
from sandbox.image.cas import CHUNK
from sandbox.image.compress import open_decompressed
from sandbox.image.errors import ArchiveError
from sandbox.image.store import Image, Store


# --- export -----------------------------------------------------------------------------------------

def _is_deleted(layer: str, rel_dir: str, name: str) -> bool | None:
    """True if ``layer`` deletes ``name`` in ``rel_dir``, False if it has it, None if it says nothing."""
    p = os.path.join(layer, rel_dir, name)
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        return True if os.path.lexists(os.path.join(layer, rel_dir, wh.WH_PREFIX + name)) else None
    return True if wh.is_whiteout_stat(st) else False


def _opaque(layer: str, rel_dir: str) -> bool:
    d = os.path.join(layer, rel_dir)
    return wh.is_opaque(d) or os.path.lexists(os.path.join(d, wh.WH_OPAQUE))


def merged_entries(layers_top_first: list[str], rel: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(relative path, layer root that provides it)`` for the merged view, parents first.
    ``layers_top_first`` are the layers in which ``rel`` is a directory that shows through."""
    names: set[str] = set()
    for layer in layers_top_first:
        try:
            names.update(n for n in os.listdir(os.path.join(layer, rel)) if not n.startswith(wh.WH_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            continue
    for name in sorted(names):
        path = os.path.join(rel, name) if rel else name
        provider = None
        below: list[str] = []  # layers whose directory `path` is merged into the provider's
        for layer in layers_top_first:
            state = _is_deleted(layer, rel, name)
            if state is None:
                continue  # this layer says nothing about `name`
            if state:
                break  # whited out here: hidden in this layer and every layer below
            if not stat.S_ISDIR(os.lstat(os.path.join(layer, path)).st_mode):
                if provider is None:
                    provider = layer
                break  # a non-directory hides everything below it
            provider = provider or layer
            below.append(layer)
            if _opaque(layer, path):
                break
        if provider is None:
            continue
        yield path, provider
        if below:
            yield from merged_entries(below, path)


def _norm(name: str) -> str:
    """'./a/b/', '/a/b', 'a/b' -> 'a/b'; '.' and './' -> ''."""
    return os.path.normpath("/" + name).lstrip("/")


def _layer_members(store: Store, desc: dict) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    with store.blobs.open(desc["digest"]) as raw:
        stream, _ = open_decompressed(raw, desc["digest"][:19])
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                yield tf, m


def export_image(store: Store, image: Image, out: BinaryIO) -> None:
    """Write ``image``'s flattened root filesystem to ``out`` as an uncompressed tar, from the
    layer blobs themselves, so owners and modes are exactly the image's (unpacked layers may
    have collapsed them to the user in single-id mode).  Two streaming passes: the first
    decides which layer's entry survives each path (whiteouts and opaque markers hide what
    lower layers had) and which file each hardlink shares its data with, the second copies
    exactly those entries.

    Hardlinks follow the merged view: when a later layer replaces or deletes the name a
    surviving hardlink points to (a chmod in a later layer copies up one name of a linked
    pair), the link's data are written as a regular file under the first surviving name, and
    its other surviving names link to that one."""
    survivor: dict[str, int] = {}
    current: dict[str, tuple[int, str]] = {}   # path -> (layer, path) of the file holding its data now
    link_origin: dict[tuple[int, str], tuple[int, str]] = {}
    for i, desc in enumerate(image.layers):
        for _tf, m in _layer_members(store, desc):
            path = _norm(m.name)
            parent, base = os.path.split(path)
            if base == wh.WH_OPAQUE:
                prefix = parent + "/" if parent else ""
                for k in [k for k, li in survivor.items() if li < i and k.startswith(prefix) and k != parent]:
                    del survivor[k]
                    current.pop(k, None)
                continue
            if base.startswith(wh.WH_PREFIX):
                gone = os.path.join(parent, base[len(wh.WH_PREFIX):])
                for k in [k for k in survivor if k == gone or k.startswith(gone + "/")]:
                    del survivor[k]
                    current.pop(k, None)
                continue
            if not m.isdir():
                for k in [k for k, li in survivor.items() if li < i and k.startswith(path + "/")]:
                    del survivor[k]
                    current.pop(k, None)
            survivor[path] = i
            if m.isreg():
                current[path] = (i, path)
            elif m.islnk() and _norm(m.linkname) in current:
                current[path] = link_origin[(i, path)] = current[_norm(m.linkname)]
            else:
                current.pop(path, None)
    # the data of files that surviving hardlinks need but that do not survive under their own name
    needed = {o for (i, path), o in link_origin.items() if survivor.get(path) == i and survivor.get(o[1]) != o[0]}
    spooled: dict[tuple[int, str], tuple[tarfile.TarInfo, Any]] = {}
    written: dict[tuple[int, str], str] = {}   # origin -> output name that holds its data
    tmp_dir = store.tmp_dir if os.path.isdir(store.tmp_dir) else None
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf_out:
            for i, desc in enumerate(image.layers):
                for tf, m in _layer_members(store, desc):
                    path = _norm(m.name)
                    if (i, path) in needed and m.isreg():
                        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, dir=tmp_dir)
                        shutil.copyfileobj(tf.extractfile(m), spool, CHUNK)  # type: ignore[misc]
                        spooled[(i, path)] = (copy.copy(m), spool)
                    if not path or survivor.get(path) != i:
                        continue
                    m.name = path
                    origin = link_origin.get((i, path))
                    if origin is not None and origin not in written and origin in spooled:
                        info, spool = spooled[origin]
                        info = copy.copy(info)
                        info.name = path
                        spool.seek(0)
                        tf_out.addfile(info, spool)
                        written[origin] = path
                        continue
                    if origin is not None and origin in written:
                        m.linkname = written[origin]
                    elif m.islnk():
                        m.linkname = _norm(m.linkname)
                    if m.isreg():
                        written[(i, path)] = path
                    tf_out.addfile(m, tf.extractfile(m) if m.isreg() else None)
    finally:
        for _info, spool in spooled.values():
            spool.close()


# --- import -----------------------------------------------------------------------------------------

class _Tee:
    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.hash = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self.src.read(n)
        self.hash.update(data)
        return data


def import_rootfs(store: Store, path: str, name: str | None = None, *, config: dict[str, Any] | None = None,
                  warn: Any = None, owner: str = "single") -> Image:
    """Make a single-layer image from a root filesystem tar (plain, gzip or zstd; ``-`` is stdin). The
    layer is stored gzip-compressed (layer.LOCAL_LEVEL, in blocks on every CPU); ``config`` entries
    (Cmd, Env, ...) go into the image config.  The layer is unpacked as the user's runs and builds
    use it: ``owner`` "mapped" (a subuid range) also unpacks it with the image's owners, as a pull
    does, so the first build FROM it does not."""
    import sys

    from sandbox.image.layer import LOCAL_LEVEL, GzipWriter

    ref = refs.parse(name) if name else None
    store.init()
    src: BinaryIO
    if path == "-":
        src = sys.stdin.buffer
    else:
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise ArchiveError(f"{path}: {e.strerror}") from e
    ok = False
    try:
        with store.adding():
            stream, _kind = open_decompressed(src, path)
            tee = _Tee(stream)
            with store.blobs.writer() as w:
                gz = GzipWriter(w.write, LOCAL_LEVEL)
                size = 0
                try:
                    while True:
                        chunk = tee.read(CHUNK)
                        if not chunk:
                            break
                        size += len(chunk)
                        gz.write(chunk)
                    gz.close()
                finally:
                    gz.abort()
                layer_digest = w.commit()
            if size == 0:
                raise ArchiveError(f"{path}: empty input")
            diff_id = "sha256:" + tee.hash.hexdigest()
            from sandbox.image.compose import NewLayer, compose
            mdigest = compose(store, None, [NewLayer(layer_digest, diff_id, store.blobs.size(layer_digest))],
                              config or {}, [{"created_by": f"sbx import {os.path.basename(path)}"}])
            img = store.preview(mdigest)
            store.unpack(img, warn=warn)  # validates the tar (hostile entries are refused here)
            image = store.add_image(mdigest, names=[ref.tagged] if ref and ref.tagged else [],
                                    sizes=store.layer_sizes(img.diff_ids))
            ok = True
            if owner == "mapped":  # after the record, as pull.py does: mapped layers are never garbage
                store.unpack_mapped(image)
        store.event("import", image.id, ref.familiar() if ref and ref.tagged else image.id)
        return image
    finally:
        if src is not sys.stdin.buffer:
            src.close()
        if not ok:
            store.gc(timeout=0)
