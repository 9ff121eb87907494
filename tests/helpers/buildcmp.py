"""Built images read the way a registry sees them, compared field by field, and buildah as a second
opinion: shared by tests/test_build_fidelity.py and tests/test_build_debian.py (issue 9)."""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from sbxtest import sbx

#: The fields of a tree entry, in order (read_oci).
FIELDS = ("type", "mode", "uid", "gid", "size", "link", "sha256", "xattrs", "hardlinks")
XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")


def _xattrs(m: tarfile.TarInfo) -> tuple:
    """((name, hex value), ...) of a member's extended attributes, sorted."""
    out = []
    for k, v in m.pax_headers.items():
        for p in XATTR_PREFIXES:
            if k.startswith(p):
                raw = v.encode("utf-8", "surrogateescape")
                if p.startswith("LIBARCHIVE"):
                    import base64
                    raw = base64.b64decode(raw + b"=" * (-len(raw) % 4))
                out.append((k[len(p):], raw.hex()))
    return tuple(sorted(out))


def read_oci(layout: Path):
    """(config, tree) of the single image in an OCI layout.  tree maps "/path" to (type, mode, uid,
    gid, size, link target, sha256 of the content, xattrs, hardlink group) after applying every
    layer in order with its whiteouts: type d/f/l/o (a hard link is an "f" like the file it names),
    xattrs ((name, hex value), ...), the group the sorted paths of every name of that file where it
    has more than one, else None."""
    index = json.loads((layout / "index.json").read_text())

    def blob(desc):
        algo, hexd = desc["digest"].split(":")
        return (layout / "blobs" / algo / hexd).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]))
    if "manifests" in manifest:  # an index of one
        manifest = json.loads(blob(manifest["manifests"][0]))
    config = json.loads(blob(manifest["config"]))
    tree, groups = {}, {}   # groups: path -> the set of names of its file (shared by them)

    def drop(path):
        tree.pop(path, None)
        g = groups.pop(path, None)
        if g is not None:
            g.discard(path)

    def norm(name):
        path = "/" + os.path.normpath(name).lstrip("./").lstrip("/")
        return "/" if path in ("/.", "/") else path

    for layer in manifest["layers"]:
        data = blob(layer)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for m in tf:
                path = norm(m.name)
                d, base = os.path.split(path)
                if base == ".wh..wh..opq":
                    for k in [k for k in tree if k.startswith(d.rstrip("/") + "/")]:
                        drop(k)
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(d, base[4:])
                    for k in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                        drop(k)
                    continue
                if m.islnk():
                    target = norm(m.linkname)
                    assert target in tree, f"{path}: hard link to {target}, which no layer so far holds"
                    drop(path)
                    g = groups.setdefault(target, {target})
                    g.add(path)
                    groups[path] = g
                    tree[path] = tree[target]
                    continue
                if path in tree and not (m.isdir() and tree[path][0] == "d"):
                    drop(path)
                kind = "d" if m.isdir() else "l" if m.issym() else "f" if m.isfile() else "o"
                digest = hashlib.sha256(tf.extractfile(m).read()).hexdigest()[:16] if m.isfile() else None
                link = m.linkname if m.issym() else None
                tree[path] = (kind, m.mode & 0o7777, m.uid, m.gid, m.size if m.isfile() else 0, link, digest,
                              _xattrs(m))
                if m.isfile():
                    groups[path] = {path}
    return config, {p: (*e, tuple(sorted(groups[p])) if len(groups.get(p, ())) > 1 else None)
                    for p, e in tree.items()}


def sbx_image(ref, tmp: Path):
    """(config, tree) of an image of sbx's store, as `sbx save --format oci-dir` writes it."""
    out = tmp / f"sbx-oci-{ref.replace(':', '-').replace('/', '-')}"
    shutil.rmtree(out, ignore_errors=True)
    r = sbx("save", "--format", "oci-dir", "-o", str(out), ref, timeout=120)
    assert r.returncode == 0, r.stderr
    return read_oci(out)


def env_of(config):
    return dict(e.partition("=")[::2] for e in config["config"].get("Env") or [])


#: overlayfs's own attributes: an image never carries them (rootless buildah 1.28 on native overlay
#: leaks them into its layers; neither BuildKit nor sbx does).
OVERLAY_XATTR = re.compile(r"(user|trusted)\.overlay\..*")


def overlay_xattrs(tree: dict) -> list:
    """The paths of a tree that carry overlayfs's own attributes."""
    return [p for p, e in tree.items() if any(OVERLAY_XATTR.fullmatch(k) for k, _ in e[7])]


def tree_differences(a: dict, b: dict, volatile=(), skip=()) -> list:
    """Where two trees differ, one line each ("PATH: field a != b", "PATH: only in a/b"); paths matching
    a regular expression of ``skip`` are left out; for those matching one of ``volatile`` (files whose
    content holds a time or the build's order, such as logs) the size and content are not compared;
    overlayfs's own attributes are not compared (see ``overlay_xattrs``)."""
    skip_re = re.compile("|".join(skip)) if skip else None
    vol_re = re.compile("|".join(volatile)) if volatile else None

    def clean(e):
        return (*e[:7], tuple(x for x in e[7] if not OVERLAY_XATTR.fullmatch(x[0])), *e[8:])
    a = {p: clean(e) for p, e in a.items()}
    b = {p: clean(e) for p, e in b.items()}
    out = []
    for p in sorted(set(a) | set(b)):
        if skip_re and skip_re.fullmatch(p):
            continue
        if p not in b or p not in a:
            out.append(f"{p}: only in {'a' if p in a else 'b'} {a.get(p) or b.get(p)}")
            continue
        for i, name in enumerate(FIELDS):
            if name in ("size", "sha256") and vol_re and vol_re.fullmatch(p):
                continue
            if a[p][i] != b[p][i]:
                out.append(f"{p}: {name} {a[p][i]!r} != {b[p][i]!r}")
    return out


#: Image config fields compared between builders (buildah adds its io.buildah.version label).
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "User", "WorkingDir", "ExposedPorts", "Volumes", "StopSignal")


def config_view(config: dict) -> dict:
    c = config.get("config") or {}
    view = {k: c.get(k) or None for k in CONFIG_FIELDS}
    view["Labels"] = {k: v for k, v in (c.get("Labels") or {}).items() if k != "io.buildah.version"} or None
    view["os/arch"] = (config.get("os"), config.get("architecture"))
    view["layers"] = len(config["rootfs"]["diff_ids"])
    return view


class Buildah:
    """buildah with a throw-away store (chroot isolation; vfs, or native overlay when asked and it
    works), fed the images the tests give sbx."""

    def __init__(self, work: Path, driver: str = "vfs"):
        self.work = work
        self.driver = driver
        self.env = dict(os.environ, HOME=str(work / "home"), XDG_RUNTIME_DIR="", BUILDAH_ISOLATION="chroot")
        for v in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "STORAGE_DRIVER"):
            self.env.pop(v, None)
        (work / "home").mkdir(parents=True, exist_ok=True)

    def run(self, *args, timeout=120):
        return subprocess.run(["buildah", "--root", str(self.work / "root"), "--runroot", str(self.work / "run"),
                               "--storage-driver", self.driver, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=str(self.work), stdin=subprocess.DEVNULL)

    def pull(self, source: str, name: str):
        """Pull ``source`` (docker-archive:PATH, oci:DIR:REF) and tag it ``name``."""
        r = self.run("pull", "--quiet", source, timeout=300)
        assert r.returncode == 0, r.stderr
        r = self.run("tag", r.stdout.strip().splitlines()[-1], name)
        assert r.returncode == 0, r.stderr

    def load(self, archive: Path, name: str):
        self.pull(f"docker-archive:{archive}", name)

    def build(self, ctx: Path, tag: str, *args, layers=False, timeout=120):
        return self.run("bud", "--isolation", "chroot", f"--layers={str(layers).lower()}", "-t", tag, *args,
                        str(ctx), timeout=timeout)

    def image(self, tag: str, tmp: Path):
        out = tmp / f"buildah-oci-{tag.replace(':', '-').replace('/', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        r = self.run("push", "--quiet", tag, f"oci:{out}", timeout=300)
        assert r.returncode == 0, r.stderr
        return read_oci(out)

    def remove(self):
        if os.geteuid() != 0:
            self.run("unshare", "rm", "-rf", str(self.work / "root"), str(self.work / "run"))
        shutil.rmtree(self.work, ignore_errors=True)
