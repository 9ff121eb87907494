"""From changed directories to layers, and config edits: what `sbx commit` and `sbx build` share.

- diff_layer: a changed tree -> a layer blob in the store (native diff, layer.put_layer), run
  by the caller's userns worker: with a subuid range the tree holds files of subordinate ids
  the caller cannot read, so the diff runs inside a user namespace with the same mapping.
- layer_from_upper: that, for an overlay upper directory, which then becomes the layer's
  unpacked form, so it is never unpacked again.
- apply_instruction: one Dockerfile instruction (commit's --change) applied to an image config.

Placement of COPY/ADD sources is the build's (sandbox/build/placement.py); a container's changes
to an image are the engine's (sandbox/containers/commit.py)."""
from __future__ import annotations

import json
import os
import time
from typing import Any

from sandbox.image.compose import NewLayer
from sandbox.image.errors import ImageError
from sandbox.image.fsutil import atomic_write, rmtree_writable
from sandbox.image.layer import DEFAULT_LEVEL, LOCAL_LEVEL
from sandbox.image.store import Store


def diff_layer(worker, store: Store, root: str, lowers: list[str], base: str | None = None,
               level: int = DEFAULT_LEVEL) -> tuple[NewLayer, int]:
    """(the stored layer, its uncompressed size), diffed by `worker` (sandbox.runtime.userns_worker;
    `base`: the tree before the changes, when `root` is not an overlay upper; `level`: gzip's)."""
    d = worker.call("sandbox.image.layer:put_layer_in_store", store=store.root, root=root, lowers=list(lowers),
                    base=base, map_caller_to_root=not worker.in_userns, level=level)
    return NewLayer(d["digest"], d["diff_id"], d["size"]), d["tar_size"]


def layer_from_upper(store: Store, worker, upper: str, lowers: list[str], owner: str) -> NewLayer:
    """Store the layer of `upper` (lowers: the layer dirs below, top first) and keep `upper`
    as its unpacked form.  Blobs are idempotent.  A build's layer: gzip's fastest level."""
    lay, tar_size = diff_layer(worker, store, upper, lowers, level=LOCAL_LEVEL)
    final = store.layer_path(lay.diff_id, owner)
    if os.path.isfile(os.path.join(final, "meta.json")):
        return lay  # the same content was built before
    tmp = final + f".{os.getpid()}.tmp"
    os.makedirs(tmp, 0o700)
    os.rename(upper, os.path.join(tmp, "root"))
    meta = {"diff_id": lay.diff_id, "digest": lay.digest, "size": tar_size, "compression": "gzip",
            "whiteouts": "overlay", "ownership": owner, "entries": 0, "created": time.time(),
            "from": "build"}
    atomic_write(os.path.join(tmp, "meta.json"), json.dumps(meta, indent=1).encode())
    try:
        os.rename(tmp, final)
    except OSError:
        if not os.path.isfile(os.path.join(final, "meta.json")):
            raise
        rmtree_writable(tmp)  # another build got there first
    return lay


def empty_dir(store: Store) -> str:
    """An empty directory in the store's tmp/: the `base` of a diff that takes a whole tree."""
    d = os.path.join(store.tmp_dir, "empty")
    os.makedirs(d, exist_ok=True)
    return d


def apply_instruction(cfg: dict[str, Any], cmd: str, args: list[str], json_form: bool = False,
                      where: str = "") -> None:
    """One parsed Dockerfile instruction (`cmd` upper case, its arguments; `json_form` for the exec
    form of CMD/ENTRYPOINT; EXPOSE's as port keys, "80/tcp") applied to an image config's "config"
    section, as commit's --change."""
    where = where or f"{cmd} {' '.join(args)}"
    shell = cfg.get("Shell") or ["/bin/sh", "-c"]
    command = list(args) if json_form else shell + [" ".join(args)]
    if cmd == "CMD":
        cfg["Cmd"] = command
    elif cmd == "ENTRYPOINT":
        cfg["Entrypoint"] = command
    elif cmd == "ENV":
        env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
        env.update(p.split("=", 1) for p in args)
        cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
    elif cmd == "WORKDIR":
        cfg["WorkingDir"] = os.path.normpath(os.path.join(cfg.get("WorkingDir") or "/", args[0]))
    elif cmd == "USER":
        cfg["User"] = args[0]
    elif cmd == "LABEL":
        cfg.setdefault("Labels", {}).update(p.split("=", 1) for p in args)
    elif cmd == "EXPOSE":
        cfg.setdefault("ExposedPorts", {}).update({p: {} for p in args})
    elif cmd == "VOLUME":
        cfg.setdefault("Volumes", {}).update({v: {} for v in args})
    elif cmd == "STOPSIGNAL":
        cfg["StopSignal"] = args[0]
    else:
        raise ImageError(f"{where}: {cmd} cannot be applied by commit",
                         hint="use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR")
