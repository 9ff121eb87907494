"""From changed directories to layers and images: what `sbx commit` and `sbx build` share.

- layer_from_upper: an overlay upper directory -> a layer blob in the store (native diff,
  layer.put_layer) and the directory itself -> that layer's unpacked form, so it is never
  unpacked again.  With a subuid range the upper holds files of subordinate ids the caller
  cannot read, so the diff runs inside a user namespace with the same mapping.
- copy_into: COPY/ADD sources (the build context, or another stage's or image's layers)
  placed into an upper directory.
- commit_container: a kept container's upper -> a new image on top of its image."""
from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import time
from typing import Any

from sandbox.image import tarball
from sandbox.image.compose import NewLayer
from sandbox.image.errors import ImageError
from sandbox.image.fsutil import atomic_write, rmtree_writable
from sandbox.image.store import Store

def _diff(worker, store: Store, root: str, lowers: list[str], base: str | None = None) -> tuple[NewLayer, int]:
    """(the stored layer, its uncompressed size), diffed by `worker` (sandbox.runtime.nsworker)."""
    d = worker.call("diff", store=store.root, root=root, lowers=list(lowers), base=base)
    return NewLayer(d["digest"], d["diff_id"], d["size"]), d["tar_size"]


def layer_from_upper(store: Store, worker, upper: str, lowers: list[str], owner: str) -> NewLayer:
    """Store the layer of `upper` (lowers: the layer dirs below, top first) and keep `upper`
    as its unpacked form.  Blobs are idempotent."""
    lay, tar_size = _diff(worker, store, upper, lowers)
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


# --- COPY / ADD ------------------------------------------------------------------------------------

def _provider(roots: list[str], rel: str) -> str | None:
    """The root (top first) that shows `rel` in the merged view, or None."""
    if not rel:
        return roots[0] if roots else None
    parent, name = os.path.split(rel)
    for root in roots:
        state = tarball._is_deleted(root, parent, name)
        if state is None:
            continue
        return None if state else root
    return None


def _check_rel(src: str, where: str) -> str:
    rel = os.path.normpath(src.lstrip("/"))
    if rel == ".":
        return ""
    if rel == ".." or rel.startswith("../"):
        raise ImageError(f"{where}: source {src!r} is outside the build context")
    return rel


def matches(roots: list[str], src: str, where: str = "") -> list[str]:
    """The paths (relative to the roots) a COPY source names; globs allowed in the last part."""
    rel = _check_rel(src, where)
    parent, name = os.path.split(rel)
    if not glob.has_magic(name):
        return [rel] if _provider(roots, rel) is not None else []
    import fnmatch
    names = set()
    for root in roots:
        try:
            names.update(os.listdir(os.path.join(root, parent)))
        except OSError:
            continue
    return sorted(os.path.join(parent, n) for n in names
                  if fnmatch.fnmatchcase(n, name) and _provider(roots, os.path.join(parent, n)) is not None)


def _walk(roots: list[str], rel: str):
    """(relative path, absolute path) of `rel` and everything below it, parents first."""
    top = _provider(roots, rel)
    if top is None:
        return
    yield rel, os.path.join(top, rel)
    if not stat.S_ISDIR(os.lstat(os.path.join(top, rel)).st_mode):
        return
    below = [r for r in roots if os.path.isdir(os.path.join(r, rel))]
    for path, provider in tarball.merged_entries(below, rel):
        yield path, os.path.join(provider, path)


def resolve_sources(roots: list[str], src: str, ignore=None):
    from sandbox.build.builder import ignored
    for m in matches(roots, src):
        for rel, abspath in _walk(roots, m):
            if ignore and rel and ignored(rel, ignore):
                continue
            yield rel, abspath


def hash_sources(roots: list[str], sources: list[str], ignore=None) -> str:
    """A digest of what COPY sources name: paths, types, modes, owners, content."""
    import hashlib
    h = hashlib.sha256()
    ignore = [tuple(x) for x in ignore] if ignore else ignore
    for src in sources:
        if src.startswith(("http://", "https://")):
            continue
        for rel, abspath in resolve_sources(roots, src, ignore):
            st = os.lstat(abspath)
            h.update(f"{rel}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0".encode())
            if stat.S_ISREG(st.st_mode):
                with open(abspath, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(abspath).encode())
    return h.hexdigest()


def _ensure_parents(upper: str, lowers: list[str], rel_dir: str) -> None:
    """Create rel_dir in upper, each new directory with the mode of the one it covers."""
    cur = ""
    for part in [p for p in rel_dir.split("/") if p]:
        cur = os.path.join(cur, part)
        target = os.path.join(upper, cur)
        if os.path.isdir(target):
            continue
        mode, owner = 0o755, None
        prov = _provider(lowers, cur)
        if prov is not None:
            st = os.lstat(os.path.join(prov, cur))
            if not stat.S_ISDIR(st.st_mode):
                raise ImageError(f"cannot copy into /{cur}: it is not a directory in the image")
            mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
        os.mkdir(target, 0o700)
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            os.lchown(target, *owner)
        os.chmod(target, mode)


def _place(abspath: str, target: str, chmod: int | None, dir_modes: list) -> None:
    st = os.lstat(abspath)
    if stat.S_ISDIR(st.st_mode):
        dir_modes.append((target, chmod if chmod is not None else stat.S_IMODE(st.st_mode)))
    if stat.S_ISLNK(st.st_mode):
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(os.readlink(abspath), target)
        return
    if stat.S_ISDIR(st.st_mode):
        if not os.path.isdir(target):
            os.mkdir(target, 0o700)  # its own mode once its content is in (see copy_into)
        return
    if stat.S_ISREG(st.st_mode):
        if os.path.lexists(target) and not os.path.isfile(target):
            rmtree_writable(target) if os.path.isdir(target) else os.unlink(target)
        shutil.copyfile(abspath, target, follow_symlinks=False)
        os.chmod(target, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return
    raise ImageError(f"cannot copy {abspath}: not a file, directory or symlink")


def _is_archive(path: str) -> bool:
    import tarfile
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def copy_into(upper: str, lowers: list[str], plan: list, dest: str, *, context: str,
              roots: list[str] | None, ignore, add: bool, chmod: int | None, where: str,
              keep_owners: bool = False) -> None:
    """Docker's COPY/ADD rules: a directory source copies its contents; a destination ending in
    '/' (or several sources) is a directory; ADD extracts local tar archives (keeping their
    owners when `keep_owners`, i.e. in a subuid-mapped namespace) and fetches URLs.
    `plan`: [kind, source, heredoc text] with kind path | url | heredoc."""
    roots = roots or [context]
    ignore = [tuple(x) for x in ignore] if ignore else ignore
    dir_modes: list = []
    dest_rel = dest.strip("/")
    n_sources = sum(len(matches(roots, s, where)) if k == "path" else 1 for k, s, _ in plan)
    to_dir = dest.endswith("/") or n_sources > 1 or (
        _provider(lowers, dest_rel) is not None and os.path.isdir(os.path.join(_provider(lowers, dest_rel), dest_rel)))
    if n_sources == 0:
        raise ImageError(f"{where}: no source files were specified" if not plan else
                         f"{where}: {plan[0][1]!r}: no such file or directory in the build context")
    _ensure_parents(upper, lowers, dest_rel if to_dir else os.path.dirname(dest_rel))
    for kind, src, content in plan:
        if kind == "heredoc":
            target = os.path.join(upper, dest_rel, src) if to_dir else os.path.join(upper, dest_rel)
            with open(target, "wb") as f:
                f.write(content.encode())
            os.chmod(target, chmod if chmod is not None else 0o644)
            continue
        if kind == "url":
            name = os.path.basename(src.split("?")[0]) or "index.html"
            target = os.path.join(upper, dest_rel, name) if to_dir else os.path.join(upper, dest_rel)
            _fetch(src, target, where)
            os.chmod(target, chmod if chmod is not None else 0o600)
            continue
        found = matches(roots, src, where)
        if not found:
            raise ImageError(f"{where}: {src!r}: no such file or directory", hint="paths are relative to the build context")
        for m in found:
            top = _provider(roots, m)
            top_abs = os.path.join(top, m)
            if add and roots == [context] and os.path.isfile(top_abs) and _is_archive(top_abs):
                _extract(top_abs, os.path.join(upper, dest_rel), where, keep_owners)
                continue
            is_dir = stat.S_ISDIR(os.lstat(top_abs).st_mode)
            for rel, abspath in _walk(roots, m):
                if ignore and rel and _ignored(rel, ignore):
                    continue
                sub = os.path.relpath(rel, m) if rel != m else ""
                if is_dir:
                    target = os.path.join(upper, dest_rel, sub) if sub else os.path.join(upper, dest_rel)
                    if not sub:
                        _ensure_parents(upper, lowers, dest_rel)
                        continue
                else:
                    target = (os.path.join(upper, dest_rel, os.path.basename(m)) if to_dir
                              else os.path.join(upper, dest_rel))
                _place(abspath, target, chmod, dir_modes)
    for target, mode in reversed(dir_modes):  # deepest first: a 0555 dir after its content
        os.chmod(target, mode)


def _ignored(rel, ignore):
    from sandbox.build.builder import ignored
    return ignored(rel, ignore)


def _extract(archive: str, target_dir: str, where: str, keep_owners: bool) -> None:
    """ADD of a local tar: unpacked with the same defences as image layers (.., absolute
    paths, link escapes and devices refused); owners kept where ids are mapped."""
    from sandbox.image.unpack import SINGLE_ID, MappedOwnership, UnpackOptions, unpack_layer
    os.makedirs(target_dir, exist_ok=True)
    owner = MappedOwnership() if keep_owners else SINGLE_ID
    with open(archive, "rb") as f:
        unpack_layer(f, target_dir, UnpackOptions(whiteouts="overlay", owner=owner, label=f"{where}: ADD"))


def _fetch(url: str, target: str, where: str) -> None:
    import urllib3
    try:
        r = urllib3.PoolManager().request("GET", url, preload_content=False, timeout=60)
    except urllib3.exceptions.HTTPError as e:
        raise ImageError(f"{where}: ADD {url}: {e}") from None
    if r.status != 200:
        raise ImageError(f"{where}: ADD {url}: HTTP {r.status}")
    with open(target, "wb") as f:
        for chunk in r.stream(1 << 20):
            f.write(chunk)
    r.release_conn()


# --- commit --------------------------------------------------------------------------------------

def commit_container(c, name: str | None, *, message: str | None = None, author: str | None = None,
                     changes: list[str] = ()) -> Any:
    """A new image: the container's image (or its root filesystem as a first layer) plus one
    layer with the container's changes; -c changes (Dockerfile instructions) applied."""
    from sandbox.image import reference as refs
    from sandbox.image.compose import compose
    store = Store()
    store.init()
    from sandbox.runtime import nsworker
    spec = c.spec
    x = spec["sbx"]
    img = (x.get("image") or {}).get("id")
    base = store.get(img) if img else None
    runtime = json.loads(json.dumps(base.config.get("config") or {})) if base else {}
    runtime.setdefault("Cmd", spec["process"]["args"])
    for ch in changes:
        _apply_change(runtime, ch)
    layers = []
    history = []
    worker = nsworker.start(x.get("userns"))
    try:
        with store.adding():
            if base is None:
                # A container made from a root filesystem directory: that tree is the first layer.
                lay, _ = _diff(worker, store, spec["root"]["path"], [], base=_empty_dir(store))
                layers.append(lay)
                history.append({"created_by": f"sbx commit: root filesystem {spec['root']['path']}"})
            lay, _ = _diff(worker, store, c.upper, list(x["lowers"]))
            layers.append(lay)
            history.append({"created_by": " ".join(spec["process"]["args"]), "comment": message or ""})
            mdigest = compose(store, base, layers, runtime, history, author=author)
            names = [refs.parse(name).tagged] if name else []
            image = store.add_image(mdigest, names=names)
    finally:
        worker.close()
    return image


def _empty_dir(store: Store) -> str:
    d = os.path.join(store.tmp_dir, "empty")
    os.makedirs(d, exist_ok=True)
    return d


def _apply_change(cfg: dict[str, Any], change: str) -> None:
    from sandbox.build import dockerfile as dfmod
    instr = dfmod.parse(f"FROM scratch\n{change}\n", name="--change").stages[0].instructions[0]
    cmd = instr.cmd
    shell = cfg.get("Shell") or ["/bin/sh", "-c"]
    command = list(instr.args) if instr.json_form else shell + [" ".join(instr.args)]
    if cmd == "CMD":
        cfg["Cmd"] = command
    elif cmd == "ENTRYPOINT":
        cfg["Entrypoint"] = command
    elif cmd == "ENV":
        env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
        env.update(p.split("=", 1) for p in instr.args)
        cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
    elif cmd == "WORKDIR":
        cfg["WorkingDir"] = instr.args[0]
    elif cmd == "USER":
        cfg["User"] = instr.args[0]
    elif cmd == "LABEL":
        cfg.setdefault("Labels", {}).update(p.split("=", 1) for p in instr.args)
    elif cmd == "EXPOSE":
        cfg.setdefault("ExposedPorts", {}).update({p if "/" in p else f"{p}/tcp": {} for p in instr.args})
    elif cmd == "VOLUME":
        cfg.setdefault("Volumes", {}).update({v: {} for v in instr.args})
    elif cmd == "STOPSIGNAL":
        cfg["StopSignal"] = instr.args[0]
    else:
        raise ImageError(f"--change {change!r}: {cmd} cannot be applied by commit",
                         hint="use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR")
