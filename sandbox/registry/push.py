"""``sbx push``: store -> registry, byte for byte, so the pushed manifest digest equals the local one.

For every blob (layers, then the config): HEAD - present, skip; else try a cross-repository mount from
a repository of the same registry the image is known to come from; else upload (monolithic, or chunked
when ``chunk_size`` is set and the blob is bigger). Blobs go up in parallel; the manifest goes last.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sandbox.image import reference as refs
from sandbox.image.errors import AuthError, ImageError, RegistryError
from sandbox.image.store import Store
from sandbox.registry.client import RegistryClient, blob_opener
from sandbox.registry.transport import RegistryOptions

#: progress(event, digest, amount, total): "exists", "mounted", "upload" (bytes; -1 = restarted),
#: "uploaded", "manifest".
Progress = Callable[[str, str, int, "int | None"], None]


@dataclass(frozen=True)
class PushOptions:
    jobs: int = 4
    chunk_size: int | None = None  # None: one PUT per blob
    mount: bool = True
    registry: RegistryOptions = field(default_factory=RegistryOptions)


def push(store: Store, source: str, dest: str | None = None, options: PushOptions | None = None, *,
         progress: Progress | None = None) -> tuple[refs.Reference, str]:
    """Push the local image ``source`` to ``dest`` (default: ``source`` itself). Returns the destination
    reference and the manifest digest."""
    options = options or PushOptions()
    prog = progress or (lambda *a: None)
    image = store.resolve(source)
    if dest is None:
        try:
            r: refs.Reference | None = refs.parse(source)
        except ImageError:
            r = None
        if r is None or (r.tagged not in image.repo_tags and r.digested not in image.repo_digests):
            raise ImageError(f"cannot push {source!r} without a destination: it is an image id, not a name",
                             hint="give a destination: sbx push IMAGE REGISTRY/REPO:TAG")
        dest = source
    target = refs.parse(dest)
    if target.digest and target.digest != image.manifest_digest:
        raise ImageError(f"cannot push {source} as {dest}: the image's manifest is {image.manifest_digest}")
    manifest_bytes = store.blobs.read_bytes(image.manifest_digest)
    media_type = image.manifest.get("mediaType") or "application/vnd.oci.image.manifest.v1+json"
    descs = [*image.layers, image.manifest["config"]]
    for d in descs:
        if not store.blobs.has(d["digest"]):
            raise ImageError(f"blob {d['digest']} of {source} is missing from the store",
                             hint="pull or load the image again")
    mount_from = [refs.parse(s, default_tag=False).path for s in image.record.get("sources", [])
                  if s.startswith(target.domain + "/") and s != target.name] if options.mount else []

    with RegistryClient(target.domain, options.registry, repo_path=target.path) as client:
        def one(desc: dict[str, Any]) -> None:
            d = desc["digest"]
            size = store.blobs.size(d)
            if client.head_blob(target.path, d, push=True) is not None:
                prog("exists", d, 0, size)
                return
            for src in mount_from:
                try:
                    if client.mount_blob(target.path, d, src):
                        prog("mounted", d, 0, size)
                        return
                except (AuthError, RegistryError):
                    continue
            client.upload_blob(target.path, d, size, blob_opener(store.blobs, d), chunk_size=options.chunk_size,
                               progress=lambda n: prog("upload", d, n, size))
            prog("uploaded", d, 0, size)

        with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="sbx-push") as ex:
            for fut in [ex.submit(one, d) for d in descs]:
                fut.result()
        digest = client.put_manifest(target.path, target.tag or image.manifest_digest, manifest_bytes, media_type)
    if digest != image.manifest_digest:
        raise RegistryError(f"pushed manifest digest {digest} differs from the local {image.manifest_digest}")
    prog("manifest", digest, 0, None)
    with store.adding():
        store.add_image(image.manifest_digest, names=[f"{target.name}@{digest}"], sources=[target.name])
    store.event("push", target.familiar(), target.familiar())
    return target, digest
