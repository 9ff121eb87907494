"""``sbx pull``: registry -> store.

1. GET the manifest for the tag or digest; an index / manifest list is resolved for the host platform
   (or ``options.platform``) and the chosen manifest fetched by digest.
2. Fetch the config and the layers that are not in the store yet, in parallel threads, each streamed
   into the CAS with its digest verified.
3. Unpack the layers in order as their downloads finish (pipelined), each into its own directory,
   as Docker does, so that the first run starts at once.  The layers are unpacked for the id
   mapping the caller's sandboxes use by default: single-id in this process; with a subuid range,
   with the image's owners inside a user namespace mapped to it, once the image is recorded (step
   4).  A run with another mapping unpacks its own copy on first use (runtime/image_root.py).
4. Record the image and point ``repo:tag`` and ``repo@digest`` at it - only now, so a failure at any
   earlier step leaves no reference to a half-pulled image (unreferenced blobs are garbage for gc).

The whole pull holds the store's shared content lock, so a concurrent ``rmi``/``prune`` cannot delete a
blob we decided not to download because it was present.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from sandbox.image import mediatypes as mt
from sandbox.image import platform as plat
from sandbox.image import reference as refs
from sandbox.image.errors import ImageError, RegistryError
from sandbox.image.store import Image, Store, parse_json, validate_config, validate_manifest
from sandbox.registry.client import RegistryClient
from sandbox.registry.transport import RegistryOptions

#: progress(event, digest, amount, total): events "resolved" (digest = manifest digest),
#: "exists", "download" (amount = new bytes, -1 = restarted), "downloaded", "extract" (amount = blob
#: bytes unpacked), "unpacked", "done".
Progress = Callable[[str, str, int, "int | None"], None]


@dataclass(frozen=True)
class PullOptions:
    platform: plat.Platform | None = None
    jobs: int = 4
    unpack: bool = True
    #: the unpacked form the layers get: "single" (owned by the caller, unpacked here) or "mapped"
    #: (the image's owners, by ``Store.unpack_mapped``: the store's worker in a user namespace
    #: mapped to the subuid range); the caller knows its sandboxes' mapping (runtime.image_root)
    owner: str = "single"
    registry: RegistryOptions = field(default_factory=RegistryOptions)


class _Cancelled(Exception):
    """Stops the other downloads once one layer failed."""


BROKEN = "the registry serves a malformed image; ask its publisher to push it again"


def _noop(event: str, digest: str, amount: int = 0, total: int | None = None) -> None:
    return None


def resolve_manifest(client: RegistryClient, ref: refs.Reference, want: plat.Platform | None,
                     warn: Callable[[str], None]) -> tuple[bytes, str, str]:
    """Return (manifest bytes, manifest digest, top-level digest) for ``ref``, resolving an index."""
    data, media_type, digest = client.get_manifest(ref.path, ref.digest or ref.tag or "latest")
    top = digest
    if media_type in mt.INDEX_TYPES:
        idx = parse_json(data, f"{ref.familiar()}: index {digest}", error=RegistryError, hint=BROKEN)
        entries = idx.get("manifests") if isinstance(idx, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise RegistryError(f"{ref.familiar()}: index {digest} has no valid manifests list", hint=BROKEN)
        target = want or plat.host()
        chosen = plat.choose(entries, target)
        if chosen is None:
            raise ImageError(f"{ref.familiar()}: no image for platform {target} in the index",
                             hint=f"available: {plat.describe(entries)}; choose one with --platform")
        refs.check_digest(chosen.get("digest", ""), f"digest in index of {ref.familiar()}")
        data, media_type, digest = client.get_manifest(ref.path, chosen["digest"])
        if media_type in mt.INDEX_TYPES:
            raise ImageError(f"{ref.familiar()}: nested image indexes are not supported")
    if media_type in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED):
        raise ImageError(f"{ref.familiar()}: Docker image manifest schema 1 is not supported",
                         hint="the image is very old; rebuild or re-push it with a current tool")
    if media_type not in mt.MANIFEST_TYPES:
        raise ImageError(f"{ref.familiar()}: unsupported manifest media type {media_type!r}")
    return data, digest, top


def pull(store: Store, name: str, options: PullOptions | None = None, *,
         progress: Progress | None = None, warn: Callable[[str], None] | None = None) -> Image:
    """Pull ``name`` into ``store`` and return the image. Repeated pulls skip what is present."""
    options = options or PullOptions()
    progress = progress or _noop
    warn = warn or (lambda s: None)
    ref = refs.parse(name)
    store.init()
    store.cleanup()
    ok = False
    try:
        with store.adding(), RegistryClient(ref.domain, options.registry, repo_path=ref.path) as client:
            image = _pull_locked(store, client, ref, options, progress, warn)
            ok = True
        store.event("pull", ref.familiar(), ref.familiar())
        return image
    finally:
        if not ok:
            store.gc(timeout=0)  # drop what this failed pull downloaded, unless others are busy


def _pull_locked(store: Store, client: RegistryClient, ref: refs.Reference, options: PullOptions,
                 progress: Progress, warn: Callable[[str], None]) -> Image:
    data, digest, top = resolve_manifest(client, ref, options.platform, warn)
    progress("resolved", digest, 0, None)
    manifest = parse_json(data, f"{ref.familiar()}: manifest {digest}", error=RegistryError, hint=BROKEN)
    validate_manifest(manifest, f"manifest {digest} of {ref.familiar()}")
    cfg = manifest["config"]
    if not store.blobs.has(cfg["digest"]):
        client.fetch_blob(ref.path, cfg["digest"], store.blobs, size=cfg.get("size"))
    what = f"{ref.familiar()}: image config {cfg['digest']}"
    config = parse_json(store.blobs.read_bytes(cfg["digest"]), what, error=RegistryError, hint=BROKEN)
    validate_config(config, what, error=RegistryError, hint=BROKEN)
    _check_platform(ref, config, options.platform, top != digest, warn)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = manifest["layers"]
    if len(diff_ids) != len(layers):
        raise ImageError(f"{ref.familiar()}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}")
    for d in layers:
        if d.get("mediaType") and d["mediaType"] not in mt.LAYER_TYPES:
            raise ImageError(f"{ref.familiar()}: layer {d['digest'][:19]} has unsupported media type {d['mediaType']!r}")

    cancel = threading.Event()

    def fetch(desc: dict[str, Any]) -> None:
        d = desc["digest"]
        if cancel.is_set():
            return
        if store.blobs.has(d):
            progress("exists", d, 0, desc.get("size"))
            return
        def on_bytes(n: int) -> None:
            if cancel.is_set():
                raise _Cancelled()
            progress("download", d, n, desc.get("size"))

        client.fetch_blob(ref.path, d, store.blobs, size=desc.get("size"), progress=on_bytes)
        progress("downloaded", d, 0, desc.get("size"))

    owner_name = _owner_name(options)
    lower: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="sbx-pull") as ex:
        futures: list[Any] = []
        try:
            # Inside the try: a Ctrl-C that lands while the downloads start must abort those
            # already started too, or the pull waits for a stalled one before it can exit.
            for d in layers:
                futures.append(ex.submit(fetch, d))
            for i, (fut, desc, diff_id) in enumerate(zip(futures, layers, diff_ids)):
                fut.result()
                if owner_name == "single":
                    fresh = store.layer_meta(diff_id) is None

                    def extracted(n: int, d: str = desc["digest"], size: int | None = desc.get("size")) -> None:
                        progress("extract", d, n, size)
                    lower.append(store.unpack_layer(
                        desc, diff_id, lower, warn=warn, progress=extracted,
                        label=f"{ref.familiar()}: layer {i + 1}/{len(layers)} ({desc['digest'][:19]})"))
                    if fresh:
                        progress("unpacked", desc["digest"], 0, None)
        except BaseException:  # a failed layer, or Ctrl-C: stop the other downloads at once
            cancel.set()
            client.abort_downloads()
            for f in futures:
                f.cancel()
            wait(futures, return_when=FIRST_EXCEPTION)
            raise
    stored = store.put_manifest(data)
    if stored != digest:  # cannot happen: the client verified it
        raise RegistryError(f"{ref.familiar()}: manifest digest changed while storing")
    names = [n for n in (ref.tagged, f"{ref.name}@{top}") if n]
    sizes = store.layer_sizes(diff_ids) if owner_name == "single" else None
    image = store.add_image(digest, names=names, sources=[ref.name], sizes=sizes)
    if owner_name == "mapped":
        # After the image is recorded, so that layers with mapped owners are never garbage (only
        # a process in that namespace could delete them): an interrupted or failed unpack leaves
        # the image as a pull without unpacking did, and its first run unpacks the rest.
        fresh = [desc["digest"] for desc, d in zip(layers, diff_ids) if store.layer_meta(d, "mapped") is None]
        store.unpack_mapped(image)
        for d in fresh:
            progress("unpacked", d, 0, None)
    progress("done", digest, 0, None)
    return image


def _owner_name(options: PullOptions) -> str | None:
    """Which unpacked form the pull makes: "single", "mapped" (subuid range) or None."""
    if not options.unpack:
        return None
    if options.owner not in ("single", "mapped"):
        raise ValueError(f"PullOptions.owner must be 'single' or 'mapped', not {options.owner!r}")
    return options.owner


def _check_platform(ref: refs.Reference, config: dict[str, Any], want: plat.Platform | None, from_index: bool,
                    warn: Callable[[str], None]) -> None:
    if from_index:
        return
    have = {"os": config.get("os", "linux"), "architecture": config.get("architecture", ""),
            "variant": config.get("variant")}
    target = want or plat.host()
    if target.matches(have):
        return
    desc = f"{have['os']}/{have['architecture']}" + (f"/{have['variant']}" if have.get("variant") else "")
    if want is not None:
        raise ImageError(f"{ref.familiar()} is for {desc}, not the requested {want}")
    warn(f"{ref.familiar()} is for {desc}, this host is {target}")
