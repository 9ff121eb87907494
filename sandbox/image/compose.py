"""Assemble an image from a base image (or none) plus new layers already in the blob store:
the config (rootfs.diff_ids, history, the runtime "config" section) and the OCI manifest.
Used by import, commit and build."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sandbox.image import mediatypes as mt
from sandbox.image import platform as plat
from sandbox.image.store import Image, Store


@dataclass(frozen=True)
class NewLayer:
    digest: str           # the stored (compressed) blob
    diff_id: str          # sha256 of the uncompressed tar
    size: int
    media_type: str = mt.OCI_LAYER_GZIP


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def compose(store: Store, base: Image | None, layers: list[NewLayer], runtime_config: dict[str, Any],
            history: list[dict[str, Any]], *, author: str | None = None, created: str | None = None) -> str:
    """Write the config and manifest blobs; return the manifest digest (record it with
    Store.add_image).  `history` entries are appended to the base's; empty_layer entries are
    allowed (metadata-only steps)."""
    created = created or now_rfc3339()
    if base is not None:
        cfg = json.loads(json.dumps(base.config))
        base_layers = [dict(d) for d in base.layers]
    else:
        host = plat.host()
        cfg = {"architecture": host.architecture, "os": host.os}
        if host.variant:
            cfg["variant"] = host.variant
        base_layers = []
    cfg["created"] = created
    cfg["config"] = runtime_config
    cfg["rootfs"] = {"type": "layers",
                     "diff_ids": list(cfg.get("rootfs", {}).get("diff_ids", [])) + [l.diff_id for l in layers]}
    cfg["history"] = list(cfg.get("history", [])) + [dict(h, created=h.get("created", created)) for h in history]
    if author:
        cfg["author"] = author
    cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
    cfg_digest = store.blobs.put_bytes(cfg_bytes)
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)},
                "layers": base_layers + [{"mediaType": l.media_type, "digest": l.digest, "size": l.size}
                                         for l in layers]}
    return store.put_manifest(json.dumps(manifest, sort_keys=True).encode())
