"""`sbx build` against BuildKit's documented semantics (issue 9), with buildah as a second opinion.

Every test builds a Dockerfile with sbx and reads the produced image the way a registry would see
it (`sbx save --format oci-dir`: the config and the layer tars, flattened with their whiteouts),
then asserts BuildKit's rule (the Dockerfile reference / moby/buildkit's dockerfile2llb and
fsutil copy).  Where buildah can build the same file here (as root, or rootless with a subuid
range), it builds it too and its image is read the same way: the two must agree except where a
comment says BuildKit (whose rule sbx follows) and buildah differ.

Without a subordinate id range every file of an image is owned by root (one id is mapped), so
owner assertions there expect 0:0: the collapse is the documented single-id behaviour."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import sbxtest
from sbxtest import sbx

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAPPED = sbxtest.has_subid_range()           # sbx maps a subuid range (root has none here)
BUILDAH = os.geteuid() == 0 or MAPPED         # buildah can run a step: rootful, or with a range


def owner(uid, gid, mapped=MAPPED):
    """What an image records for a file given (uid, gid): itself where ids are mapped, else root."""
    return (uid, gid) if mapped else (0, 0)


# --- reading images ---------------------------------------------------------------------------------

def read_oci(layout: Path):
    """(config, tree) of the single image in an OCI layout: tree maps "/path" to (type, mode,
    uid, gid, size, link target, sha256 of the content) after applying every layer in order."""
    index = json.loads((layout / "index.json").read_text())

    def blob(desc):
        algo, hexd = desc["digest"].split(":")
        return (layout / "blobs" / algo / hexd).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]))
    if "manifests" in manifest:  # an index of one
        manifest = json.loads(blob(manifest["manifests"][0]))
    config = json.loads(blob(manifest["config"]))
    tree = {}
    for layer in manifest["layers"]:
        data = blob(layer)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for m in tf:
                path = "/" + os.path.normpath(m.name).lstrip("./").lstrip("/")
                path = "/" if path in ("/.", "/") else path
                d, base = os.path.split(path)
                if base == ".wh..wh..opq":
                    for k in [k for k in tree if k.startswith(d.rstrip("/") + "/")]:
                        del tree[k]
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(d, base[4:])
                    for k in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                        del tree[k]
                    continue
                kind = "d" if m.isdir() else "l" if m.issym() else "h" if m.islnk() else "f" if m.isfile() else "o"
                digest = hashlib.sha256(tf.extractfile(m).read()).hexdigest()[:16] if m.isfile() else None
                link = m.linkname if (m.issym() or m.islnk()) else None
                tree[path] = (kind, m.mode & 0o7777, m.uid, m.gid, m.size if m.isfile() else 0, link, digest)
    return config, tree


def sbx_image(ref, tmp: Path):
    out = tmp / f"sbx-oci-{ref.replace(':', '-').replace('/', '-')}"
    shutil.rmtree(out, ignore_errors=True)
    r = sbx("save", "--format", "oci-dir", "-o", str(out), ref, timeout=60)
    assert r.returncode == 0, r.stderr
    return read_oci(out)


def env_of(config):
    return dict(e.partition("=")[::2] for e in config["config"].get("Env") or [])


# --- buildah, the second opinion ------------------------------------------------------------------------

class Buildah:
    """buildah with a throw-away store (vfs, chroot isolation), fed sbx's base image."""

    def __init__(self, work: Path):
        self.work = work
        self.env = dict(os.environ, HOME=str(work / "home"), XDG_RUNTIME_DIR="", BUILDAH_ISOLATION="chroot")
        for v in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "STORAGE_DRIVER"):
            self.env.pop(v, None)
        (work / "home").mkdir(parents=True, exist_ok=True)

    def run(self, *args, timeout=120):
        return subprocess.run(["buildah", "--root", str(self.work / "root"), "--runroot", str(self.work / "run"),
                               "--storage-driver", "vfs", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(self.work))

    def load(self, archive: Path, name: str):
        r = self.run("pull", "--quiet", f"docker-archive:{archive}")
        assert r.returncode == 0, r.stderr
        r = self.run("tag", r.stdout.strip(), name)
        assert r.returncode == 0, r.stderr

    def build(self, ctx: Path, tag: str, *args):
        return self.run("bud", "--isolation", "chroot", "--layers=false", "-t", tag, *args, str(ctx))

    def image(self, tag: str, tmp: Path):
        out = tmp / f"buildah-oci-{tag.replace(':', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        r = self.run("push", "--quiet", tag, f"oci:{out}")
        assert r.returncode == 0, r.stderr
        return read_oci(out)

    def remove(self):
        if os.geteuid() != 0:
            self.run("unshare", "rm", "-rf", str(self.work / "root"), str(self.work / "run"))
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory, busybox_rootfs):
    """base:1 (the busybox test root filesystem, no Env in its config) in sbx's store, and a
    buildah holding the same image as localhost/base:1 (None where buildah cannot build here:
    rootless without a subuid range it cannot run a step)."""
    d = tmp_path_factory.mktemp("fidelity")
    tar = d / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    r = sbx("import", str(tar), "base:1")
    assert r.returncode == 0, r.stderr
    bh = None
    if BUILDAH:
        archive = d / "base.tar"
        r = sbx("save", "-o", str(archive), "base:1", timeout=60)
        assert r.returncode == 0, r.stderr
        bh = Buildah(d / "buildah")
        bh.load(archive, "localhost/base:1")
    yield bh
    if bh is not None:
        bh.remove()


def ctx_of(tmp_path, dockerfile, files=None, name="ctx"):
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, content in (files or {}).items():
        p = ctx / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    return ctx


def build(ctx, tag, *args):
    r = sbx("build", "-t", tag, *args, str(ctx), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def both(base, ctx, tmp_path, tag, *args):
    """Build with sbx (and buildah where it runs): [(config, tree, ids mapped)] of each, sbx first."""
    build(ctx, tag, *args)
    out = [(*sbx_image(tag, tmp_path), MAPPED)]
    if base is not None:
        r = base.build(ctx, tag, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        out.append((*base.image(tag, tmp_path), True))
    return out


def tar_bytes(entries):
    """A tar of (name, type, mode, uid, gid, content) entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, mode, uid, gid, content in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, 1700000000
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, content
                tf.addfile(ti)
            else:
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


# --- 1. the default PATH -------------------------------------------------------------------------------

def test_path_is_set_when_the_base_sets_none(base, tmp_path):
    """BuildKit puts PATH=/usr/local/sbin:... into every stage whose base has none (scratch
    included), so ENV PATH=/opt/x/bin:$PATH extends it; a base's own PATH is kept as it is."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
ENV PATH=/opt/x/bin:$PATH
RUN echo "$PATH" > /seen
""")
    images = both(base, ctx, tmp_path, "fid-path:1")
    for config, tree, _ in images:
        assert env_of(config)["PATH"] == "/opt/x/bin:" + DEFAULT_PATH
    r = sbx("run", "--rm", "fid-path:1", "cat", "/seen")
    assert r.stdout == "/opt/x/bin:" + DEFAULT_PATH + "\n", r.stderr
    # A base with a PATH of its own: no default appended, nothing duplicated.
    child = ctx_of(tmp_path, "FROM base:1 AS own\nENV PATH=/own\nFROM base:1 AS other\nFROM own\nENV X=1\n", name="own")
    config, _, _ = both(base, child, tmp_path, "fid-path:2")[0]
    assert [e for e in config["config"]["Env"] if e.startswith("PATH=")] == ["PATH=/own"]
    # FROM scratch: BuildKit sets the default PATH in the config (buildah leaves Env empty there:
    # one of the documented differences, so only sbx's image is checked).
    scratch = ctx_of(tmp_path, "FROM scratch\nCOPY f /f\n", {"f": "x"}, name="scratch")
    build(scratch, "fid-path:3")
    config, tree = sbx_image("fid-path:3", tmp_path)
    assert config["config"]["Env"] == ["PATH=" + DEFAULT_PATH]
    assert tree["/f"][0] == "f"


# --- 2. several pairs on one line ----------------------------------------------------------------------

def test_one_line_pairs_expand_with_the_values_from_before_it(base, tmp_path):
    """Docker's rule for ENV, ARG and LABEL: every value on one line is expanded with the
    environment as it was before the instruction, not with pairs set earlier on the line."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
ENV a=1
ENV a=2 b=$a c=${a}x d="$a $b"
ARG x=old
ARG x=new y=$x
LABEL a.l=$a b.l=$b
RUN echo "$a $b $c $d $x $y" > /seen
ENV e=$b
""")
    images = both(base, ctx, tmp_path, "fid-env:1")
    config, _, _ = images[0]
    env = env_of(config)
    assert (env["a"], env["b"], env["c"], env["d"], env["e"]) == ("2", "1", "1x", "1 ", "1")
    assert config["config"]["Labels"] == {"a.l": "2", "b.l": "1"}
    assert sbx("run", "--rm", "fid-env:1", "cat", "/seen").stdout == "2 1 1x 1  new old\n"
    for other, _, _ in images[1:]:  # buildah applies the same rule to ENV and LABEL
        assert {k: env_of(other)[k] for k in "abcde"} == {k: env[k] for k in "abcde"}
        labels = {k: v for k, v in other["config"]["Labels"].items() if k != "io.buildah.version"}
        assert labels == config["config"]["Labels"]


# --- 3. the scope of --chown ------------------------------------------------------------------------

def test_chown_applies_to_what_the_copy_creates_only(base, tmp_path):
    """COPY/ADD --chown gives its owner to the files it copies and to the directories the copy
    itself creates (the destination's missing parents included), never to a directory that
    already exists in the image as the destination (/usr/local/bin and /srv below)."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN mkdir -p /usr/local/bin /srv/keep && chmod 755 /usr/local/bin
COPY --chown=1000:1001 app/ /usr/local/bin/
COPY --chown=1000:1001 f /new/deep/dir/f
COPY --chown=1000:1001 tree/ /srv/
ADD --chown=1000:1001 f /added/
""", {"app/tool": "#!/bin/sh\n", "f": "f\n", "tree/keep/k": "k\n", "tree/sub/s": "s\n"})
    images = both(base, ctx, tmp_path, "fid-chown:1")
    for n, (_, tree, mapped) in enumerate(images):
        u = owner(1000, 1001, mapped)
        # owners as images record them (uid, gid)
        o = {p: tree[p][2:4] for p in tree}
        assert o["/usr/local/bin"] == (0, 0) and o["/usr/local/bin/tool"] == u
        assert o["/new"] == o["/new/deep"] == o["/new/deep/dir"] == o["/new/deep/dir/f"] == u
        assert o["/srv"] == (0, 0), n   # the destination existed before the step: left alone
        # A source directory merged into one the image has takes the source's metadata, as
        # fsutil's copy (BuildKit) overwrites a target's metadata below the destination.
        assert o["/srv/keep"] == u and o["/srv/keep/k"] == u and o["/srv/sub"] == u and o["/srv/sub/s"] == u
        assert o["/added"] == u and o["/added/f"] == u
        assert tree["/usr/local/bin"][1] == 0o755


# --- 4. COPY --from keeps owners --------------------------------------------------------------------

def test_copy_from_a_stage_keeps_the_sources_owners(base, tmp_path):
    """COPY --from=<stage> without --chown keeps each file's owner, mode and link (BuildKit); with
    --chown the given owner wins; from the context everything is root's."""
    data = tar_bytes([("data", "d", 0o750, 1000, 1000, b""), ("data/f", "f", 0o640, 1000, 2000, b"x\n"),
                      ("data/sub", "d", 0o700, 3000, 3000, b""), ("data/sub/g", "f", 0o600, 3000, 3001, b"g\n"),
                      ("data/link", "l", 0o777, 1000, 1000, "f")])
    ctx = ctx_of(tmp_path, """\
FROM base:1 AS src
ADD data.tar /
FROM base:1
COPY --from=src /data /copied
COPY --from=src /data/sub /sub
COPY --from=src --chown=42:43 /data /chowned
COPY data.tar /ctx.tar
""", {"data.tar": data})
    images = both(base, ctx, tmp_path, "fid-from:1")
    for _, tree, mapped in images:
        assert tree["/copied/f"][1:4] == (0o640, *owner(1000, 2000, mapped))
        assert tree["/copied/sub"][1:4] == (0o700, *owner(3000, 3000, mapped))
        assert tree["/copied/sub/g"][1:4] == (0o600, *owner(3000, 3001, mapped))
        assert tree["/copied/link"][0] == "l" and tree["/copied/link"][2:4] == owner(1000, 1000, mapped)
        assert tree["/sub/g"][2:4] == owner(3000, 3001, mapped)
        assert tree["/chowned/f"][2:4] == tree["/chowned/sub/g"][2:4] == owner(42, 43, mapped)
        assert tree["/ctx.tar"][2:4] == (0, 0)


# --- 5. ADD of a local tar ------------------------------------------------------------------------

def test_add_tar_applies_its_root_entry_to_the_destination(base, tmp_path):
    """ADD of a local archive unpacks it into the destination and gives the destination directory
    the mode and owner of the archive's "./" entry, whether the directory is new or not."""
    t = tar_bytes([("./", "d", 0o700, 1000, 1000, b""), ("./in", "f", 0o644, 1000, 1000, b"in\n")])
    plain = tar_bytes([("only", "f", 0o644, 0, 0, b"x\n")])
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN mkdir -m 755 /existing
ADD t.tar /fresh/
ADD t.tar /existing/
ADD plain.tar /noroot/
""", {"t.tar": t, "plain.tar": plain})
    images = both(base, ctx, tmp_path, "fid-addtar:1")
    for _, tree, mapped in images:
        assert tree["/fresh"][1:4] == (0o700, *owner(1000, 1000, mapped))
        assert tree["/existing"][1:4] == (0o700, *owner(1000, 1000, mapped))
        assert tree["/fresh/in"][1:4] == (0o644, *owner(1000, 1000, mapped))
        assert tree["/noroot"][1:4] == (0o755, 0, 0) and tree["/noroot/only"][0] == "f"


# --- 7. only the stages the target needs ------------------------------------------------------------

def test_only_stages_reachable_from_the_target_are_built(base, tmp_path):
    """BuildKit builds the target and what it reaches through FROM, COPY --from (its value
    expanded) and RUN --mount from=; an unused stage that fails does not fail the build."""
    ctx = ctx_of(tmp_path, """\
ARG PICK=picked
FROM base:1 AS broken
RUN echo running-broken; exit 7
FROM base:1 AS picked
RUN echo picked > /p
FROM base:1 AS unused
RUN echo running-unused
FROM picked AS via-from
RUN echo via > /v
FROM base:1
ARG PICK
COPY --from=$PICK /p /p
COPY --from=via-from /v /v
""")
    r = build(ctx, "fid-stages:1")
    assert "running-broken" not in r.stdout and "running-unused" not in r.stdout
    assert sbx("run", "--rm", "fid-stages:1", "cat", "/p", "/v").stdout == "picked\nvia\n"
    if base is not None:  # buildah builds only what the target needs as well
        r = base.build(ctx, "fid-stages:1")
        assert r.returncode == 0 and "running-broken" not in r.stdout, r.stdout + r.stderr
    r = sbx("build", "--target", "broken", str(ctx), timeout=120)
    assert r.returncode == 125 and "running-broken" in r.stdout and "non-zero code: 7" in r.stderr
    # A stage the target reaches that fails fails the build.
    r = sbx("build", "--build-arg", "PICK=broken", str(ctx), timeout=120)
    assert r.returncode == 125 and "running-broken" in r.stdout
