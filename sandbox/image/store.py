"""The local image store: blobs, image records, references and unpacked layers under one root.

Layout (``root`` is ``$SBX_ROOT``, else ``$XDG_DATA_HOME/sbx``, else ``~/.local/share/sbx``)::

    blobs/sha256/<hex>        manifests, configs and layer blobs, content-addressed (see cas.py)
    images/<hex>.json         one record per image; the image id is the config digest (like Docker)
    repositories.json         references: "host/repo:tag" and "host/repo@sha256:..." -> image id + manifest
    layers/<hex>/             one unpacked layer (hex of its diff_id): root/ in overlay form + meta.json
    tmp/                      temp files and directories; anything here is a crash leftover when no
                              command is running
    lock                      flock: held exclusively while repositories.json or images/ change
    gc.lock                   flock: held shared by every command that adds content (pull, load,
                              unpack), exclusively by those that delete content (gc, prune, repair) and
                              by the start-up cleanup of tmp/

Crash safety: every file is written to a temp name, fsynced and renamed; every directory is built in
tmp/ and renamed into place; deletions of layer directories rename them into tmp/ first. So kill -9 at any
point leaves either the old or the new state plus temp files, which the next command removes.
An image record is written before the references that point to it; a record without references is a
dangling image (listed as <none>, removed by ``sbx image prune``), not corruption.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbox import journal
from sandbox.image import reference as refs
from sandbox.image.cas import BlobStore
from sandbox.image.errors import ImageError, ImageNotFound, StoreError
from sandbox.image.fsutil import TMP_PREFIX, FileLock, atomic_write, fsync_dir, rmtree_writable, tmp_name

REPOSITORIES = "repositories.json"


def default_root() -> str:
    """The data root of the context in force (``sandbox.config``): ``sbx --root``, else
    ``$SBX_ROOT``, else ``$XDG_DATA_HOME/sbx``, else ``~/.local/share/sbx``."""
    from sandbox import config
    return config.current().data_root


def _hex(digest: str) -> str:
    return refs.check_digest(digest)[7:]


@dataclass
class Image:
    """A local image. ``manifest_digest`` is the manifest this view was resolved through."""

    id: str
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    record: dict[str, Any]
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[7:19]

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def created(self) -> str | None:
        return self.config.get("created")

    @property
    def size(self) -> int:
        """Docker's image size: the sum of its layers' uncompressed (tar) sizes, each layer counted
        as often as the image lists it. The same before and after a run, whatever is unpacked."""
        sizes = self.record.get("layer_sizes")
        if isinstance(sizes, list) and all(type(n) is int for n in sizes):
            return sum(sizes)
        return int(self.record.get("size") or sum(int(d.get("size", 0)) for d in self.layers))

    @property
    def platform(self) -> str:
        s = f"{self.config.get('os', 'linux')}/{self.config.get('architecture', 'unknown')}"
        return f"{s}/{self.config['variant']}" if self.config.get("variant") else s


@dataclass
class Problem:
    """One finding of :meth:`Store.check`."""

    kind: str
    subject: str
    detail: str
    repaired: bool = False

    def __str__(self) -> str:
        s = f"{self.kind}: {self.subject}: {self.detail}"
        return s + (" (repaired)" if self.repaired else "")


REPAIR_HINT = "run `sbx system check --repair`, then pull or load the image again"


def parse_json(data: bytes, what: str, *, error: type[ImageError] = StoreError, hint: str | None = REPAIR_HINT) -> Any:
    """``data`` (a manifest, index or config blob) as JSON, or ``error`` naming ``what`` (which names
    the blob digest). Image JSON is UTF-8 (OCI image spec)."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text", hint=hint) from None
    except (ValueError, RecursionError):
        raise error(f"{what} is not valid JSON", hint=hint) from None


def validate_manifest(doc: Any, what: str, *, error: type[ImageError] = ImageError, hint: str | None = None) -> None:
    """Check the shape of an image manifest (config + layers descriptors with sha256 digests)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
        raise error(f"{what} is not an image manifest", hint=hint)
    if not isinstance(doc.get("mediaType", ""), str):
        raise error(f"{what} has an invalid mediaType", hint=hint)
    for d in [doc["config"], *doc["layers"]]:
        if (not isinstance(d, dict) or not isinstance(d.get("digest"), str) or type(d.get("size", 0)) is not int
                or not isinstance(d.get("mediaType", ""), str)):
            raise error(f"{what} has an invalid descriptor", hint=hint)
        if not refs.is_digest(d["digest"]):
            raise error(f"{what} has an invalid digest {d['digest'][:80]!r}", hint=hint)


_RUNTIME_FIELDS: dict[str, tuple[type, ...]] = {
    "Entrypoint": (list,), "Cmd": (list,), "Env": (list,), "WorkingDir": (str,), "User": (str,),
    "Labels": (dict,), "ExposedPorts": (dict,), "Volumes": (dict,), "StopSignal": (str,), "OnBuild": (list,),
    "Shell": (list,), "Healthcheck": (dict,)}


def validate_config(doc: Any, what: str, *, error: type[ImageError] = ImageError, hint: str | None = None) -> None:
    """Check the fields of an image config that sbx reads (OCI image spec types): a JSON object whose
    ``rootfs.diff_ids`` are sha256 digests and whose runtime ``config`` has well-typed fields."""
    def bad(field: str) -> ImageError:
        return error(f"{what} has an invalid {field}", hint=hint)

    if not isinstance(doc, dict):
        raise error(f"{what} is not an image config (not a JSON object)", hint=hint)
    for k in ("created", "author", "architecture", "os", "variant"):
        if doc.get(k) is not None and not isinstance(doc[k], str):
            raise bad(k)
    rootfs = doc.get("rootfs", {})
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids", []), list):
        raise bad("rootfs")
    for d in rootfs.get("diff_ids", []):
        if not isinstance(d, str) or not refs.is_digest(d):
            raise bad("diff_id")
    history = doc.get("history")
    if history is not None and (not isinstance(history, list) or not all(isinstance(h, dict) for h in history)):
        raise bad("history")
    rc = doc.get("config")
    if rc is None:
        return
    if not isinstance(rc, dict):
        raise bad("config")
    for k, types in _RUNTIME_FIELDS.items():
        v = rc.get(k)
        if v is not None and not isinstance(v, types):
            raise bad(f"config.{k}")
        if isinstance(v, list) and not all(isinstance(x, str) for x in v):
            raise bad(f"config.{k}")


def check_layer_count(manifest: dict[str, Any], config: dict[str, Any], what: str, *,
                      error: type[ImageError] = ImageError, hint: str | None = None) -> None:
    n = len((config.get("rootfs") or {}).get("diff_ids") or [])
    if n != len(manifest["layers"]):
        raise error(f"{what}: the config lists {n} layers, the manifest {len(manifest['layers'])}", hint=hint)


class Store:
    """An image store rooted at ``root``. Cheap to construct; directories are created on first write."""

    def __init__(self, root: str | None = None, *, workers: Any = None) -> None:
        """``workers``: a callable that starts a worker in a user namespace mapped to the caller's
        subuid range (``sandbox.runtime.userns_worker.mapped``), or returns None where ids cannot
        be mapped; what removes trees of subordinate ids and unpacks with the image's owners.
        Without it, such trees are left (and reported) and :meth:`unpack_mapped` is refused."""
        self.root = os.path.abspath(root or default_root())
        self.workers = workers
        self.blobs = BlobStore(self.root)
        self.images_dir = os.path.join(self.root, "images")
        self.layers_dir = os.path.join(self.root, "layers")
        self.tmp_dir = self.blobs.tmp_dir
        self._whiteout_format: str | None = None

    # --- setup, locks, cleanup ---------------------------------------------------------------------

    def init(self) -> None:
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            self.blobs.init()
            os.makedirs(self.images_dir, exist_ok=True)
            os.makedirs(self.layers_dir, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the image store at {self.root}: {e.strerror}",
                             hint="set SBX_ROOT (or --root) to a writable directory") from e

    def _lock_path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def meta_lock(self) -> FileLock:
        self.init()
        return FileLock(self._lock_path("lock"))

    @contextmanager
    def adding(self) -> Iterator[None]:
        """Hold the shared content lock: GC cannot delete anything while we add content."""
        self.init()
        lock = FileLock(self._lock_path("gc.lock"), shared=True)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def deleting(self, timeout: float | None = None) -> Iterator[bool]:
        """Hold the exclusive content lock; yields False (without the lock) if ``timeout`` ran out."""
        self.init()
        lock = FileLock(self._lock_path("gc.lock"))
        ok = lock.acquire(timeout)
        try:
            yield ok
        finally:
            lock.release()

    def cleanup(self) -> int:
        """Remove crash leftovers (temp files/dirs) if no other command is adding or deleting content.
        Cheap; every CLI command calls it. Returns how many entries were removed."""
        if not os.path.isdir(self.tmp_dir):
            return 0
        try:
            if not os.listdir(self.tmp_dir) and not self._stray_tmp():
                return 0
        except OSError:
            return 0
        with self.deleting(timeout=0) as ok:
            if not ok:
                return 0
            # Metadata writers (tag, rmi) hold only the meta lock while their temp file exists.
            meta = self.meta_lock()
            if not meta.acquire(0):
                return 0
            try:
                entries = self._leftovers()
                return len(entries) - len(self.remove_trees(entries))
            finally:
                meta.release()

    def _leftovers(self) -> list[str]:
        """Temp entries: everything in tmp/, and .tmp-* names elsewhere in the store."""
        try:
            out = [os.path.join(self.tmp_dir, n) for n in os.listdir(self.tmp_dir)]
        except OSError:
            out = []
        out += self._stray_tmp()
        out += [os.path.join(self.blobs.blob_dir, n) for n in self.blobs.stray_files() if n.startswith(TMP_PREFIX)]
        return out

    def remove_trees(self, paths: list[str]) -> list[str]:
        """Remove these trees; return those that could not be removed. Layers unpacked with the
        image's owners, and containers' changes, hold files of subordinate ids that only root of
        a user namespace mapped to the user's range may delete: what the caller cannot remove
        itself is removed there, by a worker from ``self.workers`` (`sbx unshare` is the manual way)."""
        left = []
        for p in paths:
            try:
                rmtree_writable(p)
            except OSError:
                left.append(p)
        if left and self.workers is not None:
            from sandbox.image.errors import SandboxError

            try:
                w = self.workers()
                try:
                    for p in left if w is not None else ():
                        try:
                            w.call("sandbox.image.store:remove_path", path=p)
                        except SandboxError:
                            continue
                finally:
                    if w is not None:
                        w.close()
            except (SandboxError, OSError):
                pass
            left = [p for p in left if os.path.lexists(p)]
        return left

    def _stray_tmp(self) -> list[str]:
        out = []
        for d in (self.images_dir, self.layers_dir, self.root):
            try:
                out += [os.path.join(d, n) for n in os.listdir(d) if n.startswith(TMP_PREFIX)]
            except OSError:
                pass
        return out

    # --- references and records --------------------------------------------------------------------

    def _read_json(self, path: str, default: Any) -> Any:
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return default
        except (ValueError, OSError) as e:
            raise StoreError(f"corrupt store metadata {path}: {e}", hint="run `sbx system check --repair`") from e

    def references(self) -> dict[str, dict[str, str]]:
        """``{"host/repo:tag" or "host/repo@digest": {"id": image id, "manifest": manifest digest}}``."""
        doc = self._read_json(os.path.join(self.root, REPOSITORIES), {})
        r = doc.get("references", {}) if isinstance(doc, dict) else {}
        return r if isinstance(r, dict) else {}

    def _write_references(self, r: dict[str, dict[str, str]]) -> None:
        data = json.dumps({"references": dict(sorted(r.items()))}, indent=1).encode() + b"\n"
        _write(os.path.join(self.root, REPOSITORIES), data, "write the image references")

    def _record_path(self, image_id: str) -> str:
        return os.path.join(self.images_dir, _hex(image_id) + ".json")

    def record(self, image_id: str) -> dict[str, Any] | None:
        rec = self._read_json(self._record_path(image_id), None)
        return rec if isinstance(rec, dict) else None

    def _write_record(self, rec: dict[str, Any]) -> None:
        _write(self._record_path(rec["id"]), json.dumps(rec, indent=1, sort_keys=True).encode() + b"\n",
               f"write the record of image {rec['id']}")

    def image_ids(self) -> list[str]:
        try:
            names = os.listdir(self.images_dir)
        except FileNotFoundError:
            return []
        return sorted("sha256:" + n[:-5] for n in names
                      if n.endswith(".json") and not n.startswith(TMP_PREFIX) and refs.is_digest("sha256:" + n[:-5]))

    def read_manifest(self, digest: str, *, error: type[ImageError] = StoreError,
                      hint: str | None = REPAIR_HINT) -> dict[str, Any]:
        """The stored image manifest ``digest``, checked (or ``error`` naming the blob)."""
        what = f"manifest blob {digest}"
        doc = parse_json(self.blobs.read_bytes(digest), what, error=error, hint=hint)
        validate_manifest(doc, what, error=error, hint=hint)
        return doc

    def read_config(self, digest: str, *, error: type[ImageError] = StoreError,
                    hint: str | None = REPAIR_HINT) -> dict[str, Any]:
        """The stored image config ``digest``, checked (or ``error`` naming the blob)."""
        what = f"image config blob {digest}"
        doc = parse_json(self.blobs.read_bytes(digest), what, error=error, hint=hint)
        validate_config(doc, what, error=error, hint=hint)
        return doc

    def _read_image(self, manifest_digest: str, *, error: type[ImageError] = StoreError,
                    hint: str | None = REPAIR_HINT) -> tuple[dict[str, Any], dict[str, Any]]:
        """(manifest, config) of a stored manifest, both checked, and consistent with each other."""
        manifest = self.read_manifest(manifest_digest, error=error, hint=hint)
        config = self.read_config(manifest["config"]["digest"], error=error, hint=hint)
        check_layer_count(manifest, config, f"manifest blob {manifest_digest}", error=error, hint=hint)
        return manifest, config

    def _load(self, image_id: str, manifest_digest: str | None, all_refs: dict[str, dict[str, str]]) -> Image:
        rec = self.record(image_id)
        if rec is None:
            raise ImageNotFound(f"image {image_id} has no record in the store", hint="run `sbx system check --repair`")
        manifests = rec.get("manifests") or []
        md = manifest_digest or (manifests[0] if manifests else None)
        if not md or not isinstance(md, str) or not refs.is_digest(md):
            raise StoreError(f"image {image_id} has no manifest", hint="run `sbx system check --repair`")
        manifest, config = self._read_image(md)
        if manifest["config"]["digest"] != image_id:
            raise StoreError(f"manifest blob {md} does not describe image {image_id}", hint=REPAIR_HINT)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if not _sizes_ok(rec.get("layer_sizes"), diff_ids):  # a record of an older sbx
            rec = self._add_sizes(image_id, manifest, diff_ids) or rec
        tags = sorted(k for k, v in all_refs.items() if v.get("id") == image_id and "@" not in k)
        digests = sorted(k for k, v in all_refs.items() if v.get("id") == image_id and "@" in k)
        return Image(image_id, md, manifest, config, rec, tags, digests)

    def _add_sizes(self, image_id: str, manifest: dict[str, Any], diff_ids: list[str]) -> dict[str, Any] | None:
        """Record the layer sizes of an image recorded without them; None if that cannot be done now."""
        try:
            sizes = self._tar_sizes(manifest["layers"], diff_ids, {})
            lock = self.meta_lock()
            if not lock.acquire(5):
                return None
            try:
                rec = self.record(image_id)
                if rec is None:
                    return None
                rec["layer_sizes"], rec["size"] = sizes, sum(sizes)
                self._write_record(rec)
                return rec
            finally:
                lock.release()
        except (ImageError, OSError):
            return None

    def _tar_sizes(self, layers: list[dict[str, Any]], diff_ids: list[str], known: dict[str, int]) -> list[int]:
        """The uncompressed tar size of each layer: given, from an unpacked copy's meta.json, from
        another image's record, or counted by decompressing the blob once."""
        known = dict(known)
        missing = [d for d in diff_ids if d not in known]
        for d in missing:
            for owner in ("single", "mapped"):
                meta = self.layer_meta(d, owner)
                if meta and type(meta.get("size")) is int:
                    known[d] = meta["size"]
                    break
        if any(d not in known for d in diff_ids):
            for iid in self.image_ids():
                rec = self.record(iid) or {}
                if _sizes_ok(rec.get("layer_sizes"), rec.get("diff_ids")):
                    for d, n in zip(rec["diff_ids"], rec["layer_sizes"]):
                        known.setdefault(d, n)
        for desc, d in zip(layers, diff_ids):
            if d not in known:
                known[d] = self._count_tar(desc["digest"])
        return [known[d] for d in diff_ids]

    def _count_tar(self, digest: str) -> int:
        from sandbox.image.compress import open_decompressed

        n = 0
        try:
            # Verified when it was stored, and again whenever it is unpacked: counting need not.
            with self.blobs.open(digest, verify=False) as raw:
                stream, _kind = open_decompressed(raw, f"layer blob {digest}")
                while True:
                    chunk = stream.read(1 << 20)
                    if not chunk:
                        break
                    n += len(chunk)
        except (OSError, EOFError, ValueError) as e:
            from sandbox.image.errors import LayerError

            raise LayerError(f"layer blob {digest} cannot be decompressed: {e}",
                             hint="the image is corrupt; pull or load it again") from None
        return n

    def images(self, errors: list[ImageError] | None = None) -> list[Image]:
        """Every image, newest first. Images that cannot be read are left out; their errors are
        appended to ``errors`` when it is given."""
        all_refs = self.references()
        out = []
        for iid in self.image_ids():
            try:
                out.append(self._load(iid, None, all_refs))
            except ImageError as e:
                if errors is not None:
                    errors.append(e)
                continue
        out.sort(key=lambda i: (i.created or "", i.id), reverse=True)
        return out

    def resolve(self, name: str) -> Image:
        """Find a local image by reference (``busybox``, ``host/repo:tag``, ``repo@sha256:..``) or by
        (a unique prefix of) its id. Raises :class:`ImageNotFound`."""
        all_refs = self.references()
        image_id, manifest_digest = self.find(name, all_refs)
        return self._load(image_id, manifest_digest, all_refs)

    def find(self, name: str, all_refs: dict[str, dict[str, str]] | None = None) -> tuple[str, str | None]:
        """(image id, manifest digest or None) that ``name`` refers to, reading no blob: what
        removing an image needs, even when its blobs are unreadable. Raises :class:`ImageNotFound`."""
        image_id, manifest, _key = self._find(name, self.references() if all_refs is None else all_refs)
        return image_id, manifest

    def _find(self, name: str, all_refs: dict[str, dict[str, str]]) -> tuple[str, str | None, str | None]:
        """Like :meth:`find`, plus the references key ``name`` matched (None: found by id)."""
        ref = None
        parse_error: ImageError | None = None
        try:
            ref = refs.parse(name)
        except ImageError as e:
            parse_error = e
        if ref is not None:
            keys = [k for k in (ref.digested, ref.tagged) if k]
            for k in keys:
                ent = all_refs.get(k)
                if isinstance(ent, dict) and isinstance(ent.get("id"), str) and refs.is_digest(ent["id"]):
                    return ent["id"], ent.get("manifest"), k
            if ref.digest:
                # repo@digest where digest is a manifest we hold for that repository under another name
                for k, ent in all_refs.items():
                    if ent.get("manifest") == ref.digest and k.startswith(ref.name + ":"):
                        return ent["id"], ent["manifest"], None
        if refs.looks_like_image_id(name):
            h = name[7:] if name.startswith("sha256:") else name
            matches = [i for i in self.image_ids() if i[7:].startswith(h)]
            if len(matches) == 1:
                return matches[0], None, None
            if len(matches) > 1:
                raise ImageError(f"image id prefix {name!r} is ambiguous ({len(matches)} images match)",
                                 hint="give more digits of the id")
        if parse_error is not None:
            raise parse_error
        assert ref is not None
        raise ImageNotFound(f"no such image: {ref.familiar()}",
                            hint=f"pull it with `sbx pull {ref.familiar()}`; `sbx images` lists local images")

    def get(self, image_id: str, manifest_digest: str | None = None) -> Image:
        """The image with exactly this id (and manifest, if given)."""
        return self._load(image_id, manifest_digest, self.references())

    # --- adding images -----------------------------------------------------------------------------

    def add_image(self, manifest_digest: str, *, names: Iterable[str] = (), sources: Iterable[str] = (),
                  sizes: dict[str, int] | None = None) -> Image:
        """Record the image whose manifest blob is ``manifest_digest`` and point ``names`` (full references,
        ``host/repo:tag`` or ``host/repo@digest``) at it. Every blob the manifest names must be in the
        store already. Idempotent. Call it while holding :meth:`adding`."""
        manifest, config = self._read_image(manifest_digest, error=ImageError, hint=None)
        image_id = manifest["config"]["digest"]
        for d in [manifest["config"], *manifest["layers"]]:
            if not self.blobs.has(d["digest"]):
                raise StoreError(f"image {image_id}: blob {d['digest']} is not in the store")
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        with self.meta_lock():
            rec = self.record(image_id) or {"id": image_id, "manifests": [], "sources": [], "added": time.time()}
            before = json.dumps(rec, sort_keys=True)
            if manifest_digest not in rec["manifests"]:
                rec["manifests"].append(manifest_digest)
            for s in sources:
                if s not in rec["sources"]:
                    rec["sources"].append(s)
            rec["diff_ids"] = diff_ids
            if not _sizes_ok(rec.get("layer_sizes"), diff_ids):
                rec["layer_sizes"] = self._tar_sizes(manifest["layers"], diff_ids, sizes or {})
            rec["size"] = sum(rec["layer_sizes"])
            if json.dumps(rec, sort_keys=True) != before:  # a cached rebuild: nothing to write (nor fsync)
                self._write_record(rec)
            all_refs = self.references()
            changed = False
            for n in names:
                ent = {"id": image_id, "manifest": manifest_digest}
                if all_refs.get(n) != ent:
                    all_refs[n] = ent
                    changed = True
            if changed:
                self._write_references(all_refs)
            return self._load(image_id, manifest_digest, all_refs)

    def preview(self, manifest_digest: str) -> Image:
        """An :class:`Image` for a stored manifest that is not recorded (yet): to unpack before
        :meth:`add_image`, so that a failure leaves no reference to a half-usable image."""
        manifest, config = self._read_image(manifest_digest, error=ImageError, hint=None)
        return Image(manifest["config"]["digest"], manifest_digest, manifest, config, {})

    def put_manifest(self, data: bytes) -> str:
        return self.blobs.put_bytes(data)

    def tag(self, source: str, target: str) -> str:
        """Point reference ``target`` at the image ``source`` resolves to. Returns the full reference."""
        img = self.resolve(source)
        ref = refs.parse(target)
        if ref.digest:
            raise ImageError(f"cannot tag with a digest reference: {target!r}", hint="give a name with a tag")
        assert ref.tagged
        with self.meta_lock():
            all_refs = self.references()
            all_refs[ref.tagged] = {"id": img.id, "manifest": img.manifest_digest}
            self._write_references(all_refs)
        self.event("tag", img.id, ref.familiar())
        return ref.tagged

    def add_source(self, image_id: str, source: str) -> None:
        with self.meta_lock():
            rec = self.record(image_id)
            if rec is not None and source not in rec.setdefault("sources", []):
                rec["sources"].append(source)
                self._write_record(rec)

    # --- removing images ---------------------------------------------------------------------------

    def remove(self, name: str, *, force: bool = False, in_use: Any = None) -> tuple[list[str], list[str]]:
        """``sbx rmi``, with Docker's rules (moby's ImageService.ImageDelete).

        By reference: drop that reference; a tag's same-repository digest references go with the
        repository's last tag; the image is deleted when no reference is left. By id: delete the
        image and every reference to it; with tags of several repositories that needs ``force``.
        ``in_use(image_id)`` lists the image's users, ``[(container id or None, running)]``: a
        running one always refuses deletion; a stopped one refuses unless ``force``, and with it
        the image is kept (untagged) for that container, whose layers it holds. The image's own
        blobs need not be readable. Returns (untagged references, deleted ids); blobs and layers
        are collected by :meth:`gc` afterwards."""
        untagged: list[str] = []
        deleted: list[str] = []
        with self.meta_lock():
            all_refs = self.references()
            image_id, _manifest, key = self._find(name, all_refs)
            short = image_id[7:19]

            def mine() -> list[str]:
                return sorted(k for k, v in all_refs.items() if v.get("id") == image_id)

            cached: list[list[tuple[str | None, bool]]] = []

            def users() -> list[tuple[str | None, bool]]:
                if not cached:
                    u = in_use(image_id) if in_use is not None else []
                    cached.append([(None, True)] if u is True else list(u or []))
                return cached[0]

            def drop(k: str) -> None:
                all_refs.pop(k, None)
                untagged.append(k)

            if key is not None:
                if not force and _single_reference(mine()) and users():
                    raise ImageError(
                        f'conflict: unable to remove repository reference "{refs.parse(key).familiar()}" '
                        f"(must force) - {_container_words(users(), 'is using its referenced image')} {short}",
                        hint=_remove_hint(users()))
                drop(key)
                repo = refs.parse(key).name
                if "@" not in key and not any("@" not in k and refs.parse(k).name == repo for k in mine()):
                    for k in [k for k in mine() if "@" in k and refs.parse(k).name == repo]:
                        drop(k)
            else:
                if _single_reference(mine()):
                    self._delete_conflict(short, users(), force, referenced=False)
                    for k in mine():
                        drop(k)
                self._delete_conflict(short, users(), force, referenced=bool(mine()))
                for k in mine():
                    drop(k)
            if mine() or users():
                # Other references remain; or (forced, or by reference as in Docker) a container
                # uses the image: it stays, untagged, with the layers that container needs.
                self._write_references(all_refs)
                return self._removed(image_id, untagged, deleted)
            try:
                os.unlink(self._record_path(image_id))
                fsync_dir(self.images_dir)
            except FileNotFoundError:
                pass
            deleted.append(image_id)
            self._write_references(all_refs)
        return self._removed(image_id, untagged, deleted)

    def event(self, action: str, ident: str, name: str) -> None:
        """Image event `action` into the events journal of this store's data root (Docker's
        shape: Actor.ID the image id, or the reference for pull and push; `name` a reference)."""
        journal.record(self.root, "image", action, ident, name=name)

    def _removed(self, image_id: str, untagged: list[str], deleted: list[str]) -> tuple[list[str], list[str]]:
        for k in untagged:
            self.event("untag", image_id, refs.parse(k).familiar())
        for d in deleted:
            self.event("delete", d, d)
        return untagged, deleted

    @staticmethod
    def _delete_conflict(short: str, users: list[tuple[str | None, bool]], force: bool, referenced: bool) -> None:
        """Docker's checkImageDeleteConflict: running users cannot be forced; several references and
        stopped containers must be."""
        running = [u for u in users if u[1]]
        if running:
            raise ImageError(f"conflict: unable to delete {short} (cannot be forced) - image is being used by "
                             + _container_words(running), hint=_remove_hint(running))
        if force:
            return
        if referenced:
            raise ImageError(f"conflict: unable to delete {short} (must be forced) - image is referenced in "
                             "multiple repositories", hint="remove it by name, or use `sbx rmi -f`")
        if users:
            raise ImageError(f"conflict: unable to delete {short} (must be forced) - image is being used by "
                             + _container_words(users), hint=_remove_hint(users))

    def prune(self, *, all_images: bool = False, in_use: Any = None) -> list[str]:
        """Delete dangling images (no tag), or with ``all_images`` every image no container uses."""
        removed = []
        with self.meta_lock():
            all_refs = self.references()
            for iid in self.image_ids():
                tagged = any(v.get("id") == iid and "@" not in k for k, v in all_refs.items())
                if (tagged and not all_images) or (in_use is not None and in_use(iid)):
                    continue
                for k in [k for k, v in all_refs.items() if v.get("id") == iid]:
                    all_refs.pop(k)
                try:
                    os.unlink(self._record_path(iid))
                except FileNotFoundError:
                    pass
                removed.append(iid)
            if removed:
                self._write_references(all_refs)
        return removed

    def referenced(self) -> tuple[set[str], set[str]]:
        """(blob digests, layer diff_ids) that some image record needs."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for iid in self.image_ids():
            rec = self.record(iid)
            if rec is None:
                continue
            blobs.add(iid)
            layers.update(d for d in _str_list(rec.get("diff_ids")) if refs.is_digest(d))
            for md in _str_list(rec.get("manifests")):
                if not refs.is_digest(md):
                    continue
                blobs.add(md)
                try:
                    m = self.read_manifest(md)
                except ImageError:
                    continue
                blobs.update(d["digest"] for d in m["layers"])
        return blobs, layers

    def gc(self, *, timeout: float | None = 0) -> tuple[int, int] | None:
        """Delete blobs and layer directories no image needs. Returns (items removed, bytes freed), or
        None if another command holds the content lock (then the garbage waits for the next gc)."""
        with self.deleting(timeout=timeout) as ok:
            if not ok:
                return None
            blobs, layers = self.referenced()
            n = freed = 0
            for d in list(self.blobs):
                if d not in blobs:
                    try:
                        freed += os.lstat(self.blobs.path(d)).st_size
                    except OSError:
                        pass
                    self.blobs.delete(d)
                    n += 1
            doomed = []
            for name, diff_id, path in self._layer_entries():
                if diff_id not in layers:
                    freed += _du(path)
                    doomed.append(path)
                    n += 1
            self._delete_dirs(doomed)
            return n, freed

    def _delete_dirs(self, paths: list[str]) -> list[str]:
        """Rename into tmp/ first so that a crash never leaves a half-deleted layer in place, then
        remove (see :meth:`remove_trees`). What cannot be removed stays in tmp/, where `check`
        reports it; returns those paths."""
        moved = []
        for path in paths:
            tmp = tmp_name(self.tmp_dir, "del-")
            os.rename(path, tmp)
            moved.append(tmp)
        left = self.remove_trees(moved)
        if left:
            import logging

            logging.getLogger("sandbox.image.store").warning("cannot remove %s", ", ".join(left))
        return left

    # --- layers ------------------------------------------------------------------------------------

    def _layer_entries(self) -> list[tuple[str, str, str]]:
        try:
            names = os.listdir(self.layers_dir)
        except FileNotFoundError:
            return []
        out = []
        for n in sorted(names):
            if n.startswith(TMP_PREFIX):
                continue
            h = n.split("-", 1)[0]
            out.append((n, "sha256:" + h, os.path.join(self.layers_dir, n)))
        return out

    def layer_path(self, diff_id: str, owner_name: str = "single") -> str:
        h = _hex(diff_id)
        return os.path.join(self.layers_dir, h if owner_name == "single" else f"{h}-{owner_name}")

    def layer_meta(self, diff_id: str, owner_name: str = "single") -> dict[str, Any] | None:
        meta = self._read_json(os.path.join(self.layer_path(diff_id, owner_name), "meta.json"), None)
        return meta if isinstance(meta, dict) else None

    @property
    def whiteout_format(self) -> str:
        if self._whiteout_format is None:
            from sandbox.image.whiteout import probe_format

            self.init()
            self._whiteout_format = probe_format(self.tmp_dir)
        return self._whiteout_format

    def unpack_layer(self, desc: dict[str, Any], diff_id: str, lower_dirs: list[str], *, owner: Any = None,
                     warn: Any = None, label: str = "layer", progress: Any = None) -> str:
        """Unpack one layer blob (unless already done) and return its ``root`` directory. ``lower_dirs`` are
        the roots of the layers below it (for hardlinks into them). Call while holding :meth:`adding`.
        Safe to run concurrently with another command unpacking the same layer: the first rename wins.
        ``progress(n)`` is called with the number of blob bytes each read returned."""
        from sandbox.image.unpack import SINGLE_ID, UnpackOptions, unpack_layer

        owner = owner or SINGLE_ID
        final = self.layer_path(diff_id, owner.name)
        if os.path.isfile(os.path.join(final, "meta.json")):
            return os.path.join(final, "root")
        fmt = self.whiteout_format
        tmp = tmp_name(self.tmp_dir, "layer-")
        os.mkdir(tmp, 0o700)
        try:
            os.mkdir(os.path.join(tmp, "root"), 0o755)
            with self.blobs.open(desc["digest"]) as raw:
                if progress is not None:
                    from sandbox.progress import CountingReader
                    raw = CountingReader(raw, progress)
                res = unpack_layer(raw, os.path.join(tmp, "root"), UnpackOptions(
                    whiteouts=fmt, owner=owner, lower_dirs=tuple(lower_dirs), expected_diff_id=diff_id,
                    expected_digest=desc["digest"], label=label, warn=warn))
            meta = {"diff_id": res.diff_id, "digest": res.digest, "size": res.size,
                    "compression": res.compression, "whiteouts": fmt, "ownership": owner.name,
                    "entries": res.entries, "created": time.time()}
            _write(os.path.join(tmp, "meta.json"), json.dumps(meta, indent=1).encode(), f"store layer {diff_id}")
            fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError as e:
                if not os.path.isfile(os.path.join(final, "meta.json")):
                    raise StoreError(f"cannot move layer {diff_id} into place: {e.strerror}") from e
                rmtree_writable(tmp)  # another command unpacked it first
            fsync_dir(self.layers_dir)
        except BaseException:
            rmtree_writable(tmp)
            raise
        return os.path.join(final, "root")

    def unpack(self, image: Image, *, owner: Any = None, warn: Any = None, progress: Any = None) -> list[str]:
        """Make sure every layer of ``image`` is unpacked; return their ``root`` directories, bottom layer
        first (reverse it for overlay's ``lowerdir``). Each layer is unpacked once and shared by every
        image that has it (keyed by diff_id; a hardlink to a file of a lower layer is copied in).
        ``progress(digest, n, size)`` follows the reading of each layer blob that is unpacked."""
        from sandbox.image.unpack import SINGLE_ID

        owner = owner or SINGLE_ID
        dirs: list[str] = []
        with self.adding():
            n = len(image.layers)
            for i, (desc, diff_id) in enumerate(zip(image.layers, image.diff_ids)):
                report = None
                if progress is not None:
                    def report(k: int, d: dict[str, Any] = desc) -> None:
                        progress(d["digest"], k, d.get("size"))
                dirs.append(self.unpack_layer(desc, diff_id, dirs, owner=owner, warn=warn, progress=report,
                                              label=f"layer {i + 1}/{n} ({desc['digest'][:19]})"))
        return dirs

    def unpack_mapped(self, image: Image) -> None:
        """Unpack the layers of ``image`` with the image's owners ("mapped"), in a user namespace
        mapped to the subuid range (a worker from ``self.workers``).  A terminal shows each
        layer's progress on stderr."""
        w = self.workers() if self.workers is not None else None
        if w is None:
            raise StoreError(f"cannot unpack {image.short_id} with its owners: no subordinate id range to map",
                             hint="add ranges for your user to /etc/subuid and /etc/subgid, or use --userns=single")
        try:
            w.call("sandbox.image.store:unpack_with_owners", store=self.root, image=image.id)
        finally:
            w.close()

    def layer_sizes(self, diff_ids: list[str], owner_name: str = "single") -> dict[str, int]:
        sizes = {}
        for d in diff_ids:
            meta = self.layer_meta(d, owner_name)
            if meta:
                sizes[d] = int(meta.get("size", 0))
        return sizes

    # --- check and df ------------------------------------------------------------------------------

    def check(self, *, repair: bool = False) -> list[Problem]:
        """Verify every blob digest, image record, reference and layer directory. With ``repair``, delete
        what is corrupt (corrupt blobs, records of images whose blobs are gone, dangling references,
        broken layer directories, temp leftovers) so that pulling again restores a clean state."""
        problems: list[Problem] = []
        if not os.path.isdir(self.root):
            return problems
        self.init()
        lock = FileLock(self._lock_path("gc.lock"))
        # With the exclusive lock nobody else is writing, so temp entries are crash leftovers. Without
        # --repair, do not wait for it: share the lock with running commands and skip that part.
        exclusive = lock.acquire(None if repair else 0)
        if not exclusive:
            lock = FileLock(self._lock_path("gc.lock"), shared=True)
            lock.acquire()
        try:
            return self._check_locked(repair, exclusive)
        finally:
            lock.release()

    def _check_locked(self, repair: bool, exclusive: bool) -> list[Problem]:
        problems: list[Problem] = []
        with self.meta_lock():
            self._check_leftovers(repair, exclusive, problems)
        self._check_content(repair, problems)
        return problems

    def _check_leftovers(self, repair: bool, exclusive: bool, problems: list[Problem]) -> None:
        leftovers = self._leftovers()
        if leftovers and exclusive:
            p = Problem("leftover", "tmp", f"{len(leftovers)} temp entries from interrupted commands")
            if repair:
                left = self.remove_trees(leftovers)
                p.repaired = not left
                if left:
                    p.detail += (f"; {len(left)} cannot be removed, e.g. {left[0]} (try "
                                 f"`sbx unshare rm -rf {left[0]}`)")
            problems.append(p)

    def _check_content(self, repair: bool, problems: list[Problem]) -> None:
        for n in self.blobs.stray_files():
            if not n.startswith(TMP_PREFIX):
                p = Problem("stray", os.path.join("blobs/sha256", n), "not a sha256 blob name")
                if repair:
                    p.repaired = not self.remove_trees([os.path.join(self.blobs.blob_dir, n)])
                problems.append(p)
        corrupt = set()
        for d in list(self.blobs):
            if not self.blobs.verify(d):
                corrupt.add(d)
                p = Problem("corrupt-blob", d, "content does not match its digest")
                if repair:
                    self.blobs.delete(d)
                    p.repaired = True
                problems.append(p)
        with self.meta_lock():
            all_refs = self.references()
            bad_images = set()
            for iid in self.image_ids():
                why = self._check_image(iid, corrupt)
                if why:
                    bad_images.add(iid)
                    p = Problem("image", iid, why)
                    if repair:
                        try:
                            os.unlink(self._record_path(iid))
                        except FileNotFoundError:
                            pass
                        p.repaired = True
                    problems.append(p)
            changed = False
            for k, v in list(all_refs.items()):
                why = None
                try:
                    r = refs.parse(k)
                    if str(r) != k:
                        why = "not a normalised reference"
                except ImageError as e:
                    why = str(e)
                iid = v.get("id") if isinstance(v, dict) else None
                if why is None and (not iid or not refs.is_digest(iid) or iid in bad_images
                                    or self.record(iid) is None):
                    why = f"points to missing or broken image {iid}"
                elif why is None and v.get("manifest") not in (self.record(iid) or {}).get("manifests", []):
                    why = f"points to manifest {v.get('manifest')} that image {iid[:19]} does not have"
                if why:
                    p = Problem("reference", k, why)
                    if repair:
                        all_refs.pop(k)
                        changed = True
                        p.repaired = True
                    problems.append(p)
            if changed:
                self._write_references(all_refs)
        for name, diff_id, path in self._layer_entries():
            why = None
            if not refs.is_digest(diff_id):
                why = "not a layer directory name"
            else:
                meta = self._read_json(os.path.join(path, "meta.json"), None) if os.path.isdir(path) else None
                if not isinstance(meta, dict) or meta.get("diff_id") != diff_id:
                    why = "missing or wrong meta.json (interrupted unpack?)"
                elif not os.path.isdir(os.path.join(path, "root")):
                    why = "missing root directory"
            if why:
                p = Problem("layer", name, why)
                if repair:
                    p.repaired = not self._delete_dirs([path])
                problems.append(p)

    def _check_image(self, iid: str, corrupt: set[str]) -> str | None:
        try:
            rec = self.record(iid)
        except StoreError as e:
            return str(e)
        if rec is None or rec.get("id") != iid:
            return "unreadable image record"
        if iid in corrupt or not self.blobs.has(iid):
            return "config blob missing or corrupt"
        manifests = rec.get("manifests")
        if not isinstance(manifests, list) or not all(isinstance(m, str) and refs.is_digest(m) for m in manifests):
            return "unreadable image record"
        for md in manifests:
            if md in corrupt or not self.blobs.has(md):
                return f"manifest {md} missing or corrupt"
            try:
                m, _config = self._read_image(md)
            except ImageError as e:
                return str(e)
            if m["config"]["digest"] != iid:
                return f"manifest {md} describes another config"
            for d in m["layers"]:
                if d["digest"] in corrupt or not self.blobs.has(d["digest"]):
                    return f"layer blob {d['digest']} missing or corrupt"
        if not rec.get("manifests"):
            return "no manifest"
        return None

    def df(self) -> dict[str, Any]:
        """Space used: images (count, size), blobs, unpacked layers, and what gc/prune would reclaim."""
        blobs_needed, layers_needed = self.referenced()
        all_refs = self.references()
        blob_total = blob_free = 0
        for d in self.blobs:
            try:
                s = os.lstat(self.blobs.path(d)).st_size
            except OSError:
                continue
            blob_total += s
            if d not in blobs_needed:
                blob_free += s
        layer_total = layer_free = nlayers = 0
        for _name, diff_id, path in self._layer_entries():
            s = _du(path)
            nlayers += 1
            layer_total += s
            if diff_id not in layers_needed:
                layer_free += s
        ids = self.image_ids()
        dangling = [i for i in ids if not any(v.get("id") == i and "@" not in k for k, v in all_refs.items())]
        return {"root": self.root, "images": len(ids), "dangling_images": len(dangling),
                "blobs": {"count": len(list(self.blobs)), "size": blob_total, "reclaimable": blob_free},
                "layers": {"count": nlayers, "size": layer_total, "reclaimable": layer_free}}


def _single_reference(keys: list[str]) -> bool:
    """moby's isSingleReference: one tag, plus digest references of that repository only."""
    if not keys:
        return False
    tags = [k for k in keys if "@" not in k]
    digest_repos = {refs.parse(k).name for k in keys if "@" in k}
    if len(tags) > 1:
        return False
    if not tags:
        return len(digest_repos) == 1
    return digest_repos <= {refs.parse(tags[0]).name}


def _container_words(users: list[tuple[str | None, bool]], tail: str = "") -> str:
    """'running container 0123456789ab, stopped container ...' (Docker names the first; we name all)."""
    words = []
    for cid, running in users:
        state = "running" if running else "stopped"
        words.append(f"{state} container {cid[:12]}" if cid else f"{state} sandbox (sbx run --rm)")
    if tail:  # "container X is using its referenced image"
        words = [w.split(" ", 1)[1] for w in words]
        return ", ".join(words) + (" are " if len(words) > 1 else " is ") + tail.split(" ", 1)[1]
    return ", ".join(words)


def _remove_hint(users: list[tuple[str | None, bool]]) -> str:
    ids = [cid[:12] for cid, _ in users if cid]
    if not ids:
        return "wait for the sandbox that runs it to exit"
    return f"remove the container first (`sbx rm -f {' '.join(ids)}`), or use `sbx rmi -f` to keep it only for them"


def _write(path: str, data: bytes, what: str) -> None:
    """atomic_write, with a full disk or a permission problem as a StoreError that says what failed."""
    from sandbox.image.cas import _store_error

    try:
        atomic_write(path, data)
    except OSError as e:
        raise _store_error(e, what) from None


def unpack_with_owners(store: str, image: str) -> None:
    """Unpack the layers of image ``image`` of the store at ``store`` keeping the image's owners.
    A worker call (``Store.unpack_mapped``): runs as root of a user namespace mapped to the
    subuid range.  A terminal shows each layer's progress on stderr."""
    import sys

    from sandbox.image.unpack import MappedOwnership
    from sandbox.progress import LayerMeters

    s = Store(store)
    with LayerMeters() as meters:
        s.unpack(s.get(image), owner=MappedOwnership(), progress=meters,
                 warn=lambda m: sys.stderr.write(f"sbx: warning: {m}\n"))


def remove_path(path: str) -> None:
    """Remove ``path`` (a tree too) if it exists.  A worker call: files of subordinate ids are
    removed as root of the user namespace mapped to them."""
    if os.path.lexists(path):
        rmtree_writable(path)


def _sizes_ok(sizes: Any, diff_ids: Any) -> bool:
    return (isinstance(sizes, list) and isinstance(diff_ids, list) and len(sizes) == len(diff_ids)
            and all(type(n) is int for n in sizes))


def _str_list(v: Any) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def _du(path: str) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


__all__ = ["Image", "Problem", "Store", "default_root", "validate_manifest"]
