"""Image archives: docker-archive (``docker save``), oci-archive (a tar of an OCI layout) and oci-dir.

Saving writes the stored blobs unchanged into OCI layouts (so digests survive a round trip); a
docker-archive needs uncompressed layer tars named by diff_id, so layers are decompressed into it
(and checked against the config's diff_ids on the way). Files are written to a temp name and renamed
when complete.

Loading verifies every blob against its digest while copying it into the store, then records the
image like a pull does. A docker-archive's layers are stored as found in it (tar or compressed) under a
Docker schema 2 manifest made for them; an OCI layout's manifests and blobs are stored as they are.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from sandbox.image import mediatypes as mt
from sandbox.image import platform as plat
from sandbox.image import reference as refs
from sandbox.image.cas import CHUNK, sha256_digest
from sandbox.image.compress import GZIP, NONE, ZSTD, detect, open_decompressed
from sandbox.image.errors import ArchiveError, DigestMismatch, ImageError
from sandbox.image.fsutil import atomic_write, fsync_dir, write_output
from sandbox.image.store import Image, Store, check_layer_count, parse_json, validate_config, validate_manifest

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


# --- saving ----------------------------------------------------------------------------------------

@dataclass
class _Entry:
    image: Image
    name: refs.Reference | None  # the tag to record, if the image was named by one


def _entries(store: Store, names: list[str]) -> list[_Entry]:
    out = []
    for n in names:
        img = store.resolve(n)
        ref = None
        try:
            r = refs.parse(n)
            if r.tagged and r.tagged in img.repo_tags:
                ref = r
        except ImageError:
            pass
        out.append(_Entry(img, ref))
    return out


def _tarinfo(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = mode
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    ti = _tarinfo(name, 0, 0o755)
    ti.type = tarfile.DIRTYPE
    tf.addfile(ti)


class _DiffIdReader:
    """Reads the uncompressed stream of a layer, checks its diff_id and length at the end."""

    def __init__(self, f: BinaryIO, diff_id: str, size: int) -> None:
        import hashlib

        self._f = f
        self._h = hashlib.sha256()
        self._left = size
        self.diff_id = diff_id

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n >= 0 else CHUNK)
        self._h.update(data)
        self._left -= len(data)
        if self._left < 0:
            raise ArchiveError(f"layer {self.diff_id} is longer than recorded")
        if self._left == 0 and data and "sha256:" + self._h.hexdigest() != self.diff_id:
            raise DigestMismatch(f"layer {self.diff_id}: uncompressed content does not match")
        return data


def _uncompressed_size(store: Store, desc: dict[str, Any], diff_id: str) -> int:
    meta = store.layer_meta(diff_id)
    if meta and meta.get("size"):
        return int(meta["size"])
    with store.blobs.open(desc["digest"]) as raw:
        stream, _ = open_decompressed(raw, f"layer {desc['digest'][:19]}")
        n = 0
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            n += len(chunk)
        return n


def _write_docker_archive(store: Store, entries: list[_Entry], out: BinaryIO) -> None:
    manifest = []
    done: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            img = e.image
            cfg_name = img.id[7:] + ".json"
            if cfg_name not in done:
                _add_bytes(tf, cfg_name, store.blobs.read_bytes(img.id))
                done.add(cfg_name)
            layer_names = []
            for desc, diff_id in zip(img.layers, img.diff_ids):
                lname = diff_id[7:] + ".tar"
                layer_names.append(lname)
                if lname in done:
                    continue
                size = _uncompressed_size(store, desc, diff_id)
                with store.blobs.open(desc["digest"]) as raw:
                    stream, _ = open_decompressed(raw, f"layer {desc['digest'][:19]}")
                    tf.addfile(_tarinfo(lname, size), _DiffIdReader(stream, diff_id, size))  # type: ignore[arg-type]
                done.add(lname)
            manifest.append({"Config": cfg_name, "RepoTags": [e.name.familiar()] if e.name else None,
                             "Layers": layer_names})
        _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
        repos: dict[str, dict[str, str]] = {}
        for e in entries:
            if e.name and e.image.diff_ids:
                repos.setdefault(e.name.familiar_name, {})[e.name.tag or "latest"] = e.image.diff_ids[-1][7:]
        if repos:
            _add_bytes(tf, "repositories", json.dumps(repos).encode())


def _oci_index(entries: list[_Entry], store: Store, existing: dict[str, Any] | None = None) -> dict[str, Any]:
    idx = existing or {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    for e in entries:
        img = e.image
        desc: dict[str, Any] = {
            "mediaType": img.manifest.get("mediaType") or mt.OCI_MANIFEST,
            "digest": img.manifest_digest,
            "size": store.blobs.size(img.manifest_digest),
        }
        if e.name:
            desc["annotations"] = {REF_NAME: e.name.tag or "latest", CONTAINERD_NAME: str(e.name)}
            idx["manifests"] = [m for m in idx["manifests"]
                                if (m.get("annotations") or {}).get(REF_NAME) != e.name.tag]
        elif any(m.get("digest") == img.manifest_digest and not m.get("annotations") for m in idx["manifests"]):
            continue
        idx["manifests"].append(desc)
    return idx


def _image_blobs(img: Image) -> list[str]:
    return [img.manifest_digest, img.id, *(d["digest"] for d in img.layers)]


def _write_oci_archive(store: Store, entries: list[_Entry], out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        _add_bytes(tf, "oci-layout", json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}).encode())
        _add_dir(tf, "blobs")
        _add_dir(tf, "blobs/sha256")
        done: set[str] = set()
        for e in entries:
            for d in _image_blobs(e.image):
                if d in done:
                    continue
                done.add(d)
                with store.blobs.open(d) as r:
                    tf.addfile(_tarinfo(f"blobs/sha256/{d[7:]}", store.blobs.size(d)), r)  # type: ignore[arg-type]
                    r.finish()
        _add_bytes(tf, "index.json", json.dumps(_oci_index(entries, store)).encode())


def _write_oci_dir(store: Store, entries: list[_Entry], path: str) -> None:
    existing = None
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ArchiveError(f"{path} exists and is not a directory")
        if os.listdir(path):
            if not os.path.exists(os.path.join(path, "oci-layout")):
                raise ArchiveError(f"{path} is not empty and not an OCI layout")
            try:
                with open(os.path.join(path, "index.json"), "rb") as f:
                    data = f.read(16 << 20)
            except OSError as e:
                raise ArchiveError(f"{path}/index.json: {e.strerror}") from None
            existing = parse_json(data, f"{path}/index.json", error=ArchiveError,
                                  hint="write to an empty directory or a valid OCI layout")
            if not isinstance(existing, dict) or not isinstance(existing.get("manifests"), list) or not all(
                    isinstance(m, dict) for m in existing["manifests"]):
                raise ArchiveError(f"{path}/index.json is not an OCI image index",
                                   hint="write to an empty directory or a valid OCI layout")
    blob_dir = os.path.join(path, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    atomic_write(os.path.join(path, "oci-layout"),
                 json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}).encode())
    for e in entries:
        for d in _image_blobs(e.image):
            dst = os.path.join(blob_dir, d[7:])
            if os.path.exists(dst):
                continue
            def copy(w: BinaryIO, d: str = d) -> None:
                with store.blobs.open(d) as r:
                    shutil.copyfileobj(r, w, CHUNK)  # type: ignore[misc]
                    r.finish()

            write_output(dst, copy)
    fsync_dir(blob_dir)
    atomic_write(os.path.join(path, "index.json"), json.dumps(_oci_index(entries, store, existing)).encode())


def save(store: Store, names: list[str], output: str, fmt: str = "docker-archive") -> None:
    """Write the images ``names`` to ``output`` (a file, ``-`` for stdout, or a directory for oci-dir)."""
    if fmt not in FORMATS:
        raise ArchiveError(f"unknown archive format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    if not names:
        raise ArchiveError("no image to save")
    entries = _entries(store, names)
    _save(store, entries, output, fmt)
    for e in entries:
        store.event("save", e.image.id, e.name.familiar() if e.name is not None else e.image.id)


def _save(store: Store, entries: list[_Entry], output: str, fmt: str) -> None:
    if fmt == "oci-dir":
        if output == "-":
            raise ArchiveError("oci-dir cannot be written to stdout", hint="use --format oci-archive")
        _write_oci_dir(store, entries, output)
        return
    writer: Callable[[Store, list[_Entry], BinaryIO], None] = (
        _write_docker_archive if fmt == "docker-archive" else _write_oci_archive)
    if output == "-":
        import sys

        writer(store, entries, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    write_output(output, lambda f: writer(store, entries, f), "save-")


# --- loading ---------------------------------------------------------------------------------------

class _Source:
    """Random access to the files of an archive (a tar, possibly compressed) or a directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tf: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(path):
            return
        try:
            self.tf = tarfile.open(path, "r:*")
            for m in self.tf.getmembers():
                name = os.path.normpath(m.name).lstrip("/")
                if m.isreg() or m.issym() or m.islnk():
                    self.members[name] = m
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ArchiveError(f"{path}: not a readable archive: {e}") from e

    def exists(self, name: str) -> bool:
        name = os.path.normpath(name)
        if self.tf is None:
            return _inside(self.path, name) and os.path.isfile(os.path.join(self.path, name))
        return name in self.members

    def open(self, name: str) -> BinaryIO:
        name = os.path.normpath(name)
        if self.tf is None:
            if not _inside(self.path, name):
                raise ArchiveError(f"{self.path}: refusing path {name!r} outside the layout")
            try:
                return open(os.path.join(self.path, name), "rb")  # noqa: SIM115
            except FileNotFoundError:
                raise ArchiveError(f"{self.path}: {name} is missing") from None
        m = self.members.get(name)
        if m is None:
            raise ArchiveError(f"{self.path}: {name} is missing from the archive")
        f = self.tf.extractfile(m)
        if f is None:
            raise ArchiveError(f"{self.path}: {name} is not a file")
        return f  # type: ignore[return-value]

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(16 << 20)
        return parse_json(data, f"{self.path}: {name}", error=ArchiveError, hint=CORRUPT)

    def close(self) -> None:
        if self.tf is not None:
            self.tf.close()


def _inside(root: str, name: str) -> bool:
    return not (name.startswith("/") or name == ".." or name.startswith("../"))


def _import_blob(store: Store, src: _Source, name: str, digest: str | None, size: int | None = None) -> str:
    try:
        with src.open(name) as f:
            if digest and store.blobs.has(digest):
                return digest
            return store.blobs.put_stream(f, digest, size)
    except DigestMismatch as e:
        raise ArchiveError(f"{src.path}: {name} does not match its digest {digest}",
                           hint="the archive is corrupt") from e


def load(store: Store, path: str, *, repository: str | None = None, unpack: bool = True,
         platform: plat.Platform | None = None, warn: Callable[[str], None] | None = None,
         owner: str = "single") -> list[tuple[Image, list[str]]]:
    """Load every image of a docker-archive, oci-archive or OCI layout directory. Returns
    ``[(image, names)]``. ``repository`` names images whose OCI ref.name is only a tag.
    ``owner`` "mapped" (the user has a subuid range) also unpacks the layers with the images'
    owners, as a pull does, so the first run or build does not."""
    if not os.path.exists(path):
        raise ArchiveError(f"{path}: no such file or directory")
    mode = os.stat(path).st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):  # /dev/zero would be read for ever
        raise ArchiveError(f"{path}: a device, not an archive", hint="give a tar file or an OCI layout directory")
    store.init()
    store.cleanup()
    src = _Source(path)
    ok = False
    try:
        with store.adding():
            if src.exists("index.json") and src.exists("oci-layout"):
                result = _load_oci(store, src, repository, platform)
            elif src.exists("manifest.json"):
                result = _load_docker(store, src)
            else:
                raise ArchiveError(f"{path}: neither a docker-archive (manifest.json) nor an OCI layout "
                                   "(oci-layout, index.json)")
            out = []
            for mdigest, names in result:
                img = store.preview(mdigest)
                if unpack:
                    store.unpack(img, warn=warn)
                sizes = store.layer_sizes(img.diff_ids) if unpack else None
                out.append((store.add_image(mdigest, names=names, sizes=sizes), names))
            ok = True
            if unpack and owner == "mapped":  # after the records, as pull.py does
                for img, _names in out:
                    store.unpack_mapped(img)
        for img, names in out:
            store.event("load", img.id, refs.parse(names[0]).familiar() if names else img.id)
        return out
    finally:
        src.close()
        if not ok:
            store.gc(timeout=0)


def _load_docker(store: Store, src: _Source) -> list[tuple[str, list[str]]]:
    doc = src.read_json("manifest.json")
    if not isinstance(doc, list) or not doc:
        raise ArchiveError(f"{src.path}: manifest.json lists no image")
    out = []
    for ent in doc:
        if (not isinstance(ent, dict) or not isinstance(ent.get("Config"), str) or not isinstance(ent.get("Layers"), list)
                or not all(isinstance(x, str) for x in ent["Layers"])
                or not all(isinstance(x, str) for x in ent.get("RepoTags") or [])):
            raise ArchiveError(f"{src.path}: malformed manifest.json entry")
        with src.open(ent["Config"]) as f:
            cfg_bytes = f.read(16 << 20)
        what = f"{src.path}: image config {ent['Config']} ({sha256_digest(cfg_bytes)})"
        config = parse_json(cfg_bytes, what, error=ArchiveError, hint=CORRUPT)
        validate_config(config, what, error=ArchiveError, hint=CORRUPT)
        cfg_digest = store.blobs.put_bytes(cfg_bytes)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(ent["Layers"]):
            raise ArchiveError(f"{src.path}: {ent['Config']} lists {len(diff_ids)} layers, manifest.json {len(ent['Layers'])}")
        layers = []
        zstd_used = False
        for lname, diff_id in zip(ent["Layers"], diff_ids):
            with src.open(lname) as f:
                head = f.read(4)
            kind = detect(head)
            digest = _import_blob(store, src, lname, diff_id if kind == NONE else None)
            if kind == ZSTD:
                zstd_used = True
            layers.append((digest, store.blobs.size(digest), kind))
        if zstd_used:
            types = {NONE: mt.OCI_LAYER, GZIP: mt.OCI_LAYER_GZIP, ZSTD: mt.OCI_LAYER_ZSTD}
            manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                        "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)}}
        else:
            types = {NONE: mt.DOCKER_LAYER, GZIP: mt.DOCKER_LAYER_GZIP}
            manifest = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
                        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)}}
        manifest["layers"] = [{"mediaType": types[k], "digest": d, "size": s} for d, s, k in layers]
        mdigest = store.put_manifest(json.dumps(manifest, indent=3).encode())
        names = []
        for t in ent.get("RepoTags") or []:
            r = refs.parse(t)
            if r.tagged:
                names.append(r.tagged)
        out.append((mdigest, names))
    return out


def _load_oci(store: Store, src: _Source, repository: str | None,
              platform: plat.Platform | None) -> list[tuple[str, list[str]]]:
    layout = src.read_json("oci-layout")
    if not isinstance(layout, dict) or not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise ArchiveError(f"{src.path}: unsupported OCI layout version")
    idx = src.read_json("index.json")
    if not isinstance(idx, dict) or not isinstance(idx.get("manifests"), list):
        raise ArchiveError(f"{src.path}: index.json has no manifests")
    out: list[tuple[str, list[str]]] = []
    for desc in idx["manifests"]:
        if not isinstance(desc, dict):
            raise ArchiveError(f"{src.path}: index.json has an invalid descriptor", hint=CORRUPT)
        digest = refs.check_digest(desc.get("digest", ""), f"digest in {src.path}/index.json")
        mdesc = desc
        data = _read_blob(store, src, digest, desc.get("size"))
        doc = _manifest_doc(src, data, digest)
        mtype = mt.manifest_media_type(doc, desc.get("mediaType"))
        if mtype in mt.INDEX_TYPES:
            want = platform or plat.host()
            if not isinstance(doc.get("manifests"), list) or not all(isinstance(m, dict) for m in doc["manifests"]):
                raise ArchiveError(f"{src.path}: index blob {digest} has no valid manifests list", hint=CORRUPT)
            chosen = plat.choose(doc["manifests"], want)
            if chosen is None:
                raise ArchiveError(f"{src.path}: no image for platform {want}",
                                   hint=f"available: {plat.describe(doc.get('manifests') or [])}")
            mdesc = chosen
            digest = refs.check_digest(chosen.get("digest", ""), f"digest in index blob {digest}")
            data = _read_blob(store, src, digest, chosen.get("size"))
            doc = _manifest_doc(src, data, digest)
            mtype = mt.manifest_media_type(doc, chosen.get("mediaType"))
        if mtype not in mt.MANIFEST_TYPES:
            raise ArchiveError(f"{src.path}: manifest {digest} has unsupported media type {mtype!r}")
        what = f"{src.path}: manifest blob {digest}"
        validate_manifest(doc, what, error=ArchiveError, hint=CORRUPT)
        cfg = doc["config"]["digest"]
        cfg_data = _read_blob(store, src, cfg, doc["config"].get("size"))
        config = parse_json(cfg_data, f"{src.path}: image config blob {cfg}", error=ArchiveError, hint=CORRUPT)
        validate_config(config, f"{src.path}: image config blob {cfg}", error=ArchiveError, hint=CORRUPT)
        check_layer_count(doc, config, what, error=ArchiveError, hint=CORRUPT)
        for d in [doc["config"], *doc["layers"]]:
            _import_blob(store, src, f"blobs/sha256/{d['digest'][7:]}", d["digest"], d.get("size"))
        store.blobs.put_bytes(data, digest)
        names = _oci_names(desc, repository)
        del mdesc
        out.append((digest, names))
    return out


CORRUPT = "the archive is corrupt or was not written by an image tool"


def _manifest_doc(src: _Source, data: bytes, digest: str) -> dict[str, Any]:
    doc = parse_json(data, f"{src.path}: manifest blob {digest}", error=ArchiveError, hint=CORRUPT)
    if not isinstance(doc, dict):
        raise ArchiveError(f"{src.path}: manifest blob {digest} is not a JSON object", hint=CORRUPT)
    return doc


def _read_blob(store: Store, src: _Source, digest: str, size: int | None) -> bytes:
    with src.open(f"blobs/sha256/{digest[7:]}") as f:
        data = f.read(16 << 20)
    if sha256_digest(data) != digest:
        raise ArchiveError(f"{src.path}: blob {digest} does not match its digest", hint="the archive is corrupt")
    return data


def _oci_names(desc: dict[str, Any], repository: str | None) -> list[str]:
    ann = desc.get("annotations") or {}
    full = ann.get(CONTAINERD_NAME)
    if full:
        r = refs.parse(full)
        if r.tagged:
            return [r.tagged]
    name = ann.get(REF_NAME)
    if not name:
        return []
    if "/" in name or ":" in name:
        try:
            r = refs.parse(name)
            if r.tagged:
                return [r.tagged]
        except ImageError:
            pass
    if repository:
        return [refs.parse(repository, default_tag=False).with_tag(name).tagged or ""]
    return []


__all__ = ["FORMATS", "load", "save"]
