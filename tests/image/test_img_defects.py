"""Regression tests for image-store defects (issues 14 and 7): repeated layers, malformed store
input, rmi semantics, export of split hardlinks, stable image sizes, removal of files owned by
mapped ids.  Black-box: images are imported from the busybox test root and built with `sbx build`,
then run, pushed, pulled, saved and removed through the CLI as the unprivileged test users."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import sbxtest
from sbx_image_testlib import Entry, build_image, busybox_entries, make_tar, write_layout
from sbxtest import assert_sbx_error, ok


def sbx(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    e = None
    if env:
        e = dict(os.environ)
        e.update(env)
    return sbxtest.sbx(*args, env=e, timeout=timeout, input=input)


@pytest.fixture(scope="module")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Path:
    """The busybox test root as a tar owned by root (as an image's files are)."""
    tar = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"

    def as_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".", filter=as_root)
    return tar


@pytest.fixture
def base(rootfs_tar: Path) -> str:
    """base:1 in this test's own store (SBX_ROOT is per test, see conftest.isolated_env)."""
    ok(sbx("import", str(rootfs_tar), "base:1"))
    return "base:1"


def build(tmp_path: Path, tag: str, dockerfile: str) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / f"ctx-{tag.replace(':', '-').replace('/', '-')}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return sbx("build", "-t", tag, str(ctx), timeout=300)


def inspect(image: str) -> dict:
    docs = json.loads(ok(sbx("inspect", image)))
    return docs[0]


def has_subuid() -> bool:
    from sandbox.runtime import idmap
    idmap._cache.clear()
    return idmap.detect()[0] == "helper"


# --- 14.1: a layer listed several times ------------------------------------------------------------

def test_an_image_may_list_the_same_layer_several_times(tmp_path: Path, base: str, plain_registry) -> None:  # type: ignore[no-untyped-def]
    # RUN steps that change nothing give the same empty layer, in several places.
    ok(build(tmp_path, "dup:1", f"FROM {base}\nRUN true\nRUN true\nRUN echo one > /one\nRUN true\n"))
    layers = inspect("dup:1")["RootFS"]["Layers"]
    assert len(layers) == 5 and len(set(layers)) == 3, layers
    assert ok(sbx("run", "--rm", "dup:1", "cat", "/one")) == "one\n"
    # FROM it, adding more repeats on top.
    ok(build(tmp_path, "dup:2", "FROM dup:1\nRUN true\nRUN cat /one /one > /two\nRUN true\n"))
    assert ok(sbx("run", "--rm", "dup:2", "cat", "/two")) == "one\none\n"
    # Pushed, then pulled into a fresh store (run pulls it).
    dest = f"{plain_registry.host}/test/dup:2"
    ok(sbx("push", "dup:2", dest))
    fresh = {"SBX_ROOT": str(tmp_path / "fresh")}
    r = sbx("run", "--rm", dest, "sh", "-c", "cat /two; ls /", env=fresh)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("one\none\n") and "one" in r.stdout.split()
    ok(build(tmp_path, "dup:3", f"FROM {dest}\nRUN true\nRUN rm /one\n"))
    r = sbx("run", "--rm", "dup:3", "sh", "-c", "cat /two; test -e /one || echo gone")
    assert r.stdout == "one\none\ngone\n", r.stderr


def test_repeated_non_empty_layers_merge_as_listed(tmp_path: Path) -> None:
    # As a registry image may have them: layers [busybox, A, B, A, B, A] where A adds /x and B
    # whites it out: the topmost repeat decides.
    a = make_tar([Entry("x", "file", b"x\n")])
    b = make_tar([Entry(".wh.x", "file")])
    bb = make_tar(busybox_entries())
    for layers, name, want in (([bb, a, b, a, b, a], "abab:1", "x\n"), ([bb, a, b, a, b], "abab:2", "gone\n"),
                               ([bb, b, a, a, bb, b, a], "abab:3", "x\n")):
        img = build_image(layers)
        lay = write_layout(tmp_path / name.replace(":", "-"), [(img, name)])
        ok(sbx("load", "-i", str(lay)))
        assert ok(sbx("run", "--rm", name, "sh", "-c", "cat /x 2>/dev/null || echo gone")) == want, name


# --- issue 7, class 7: malformed store input ------------------------------------------------------

def _sha(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_blob(root: Path, data: bytes) -> str:
    d = _sha(data)
    path = root / "blobs/sha256" / d[7:]
    if not path.exists():
        path.write_bytes(data)
    return d


def _plant(root: Path, name: str, manifest: bytes | None = None, config: bytes | None = None) -> tuple[str, str]:
    """Put an image into the store whose config or manifest blob is malformed (though it matches its
    digest), next to the good base:1: what a hostile archive or registry, or an older sbx, could leave.
    Returns (image id, manifest digest)."""
    good = json.loads((root / "repositories.json").read_text())["references"]["docker.io/library/base:1"]
    base_manifest = json.loads((root / "blobs/sha256" / good["manifest"][7:]).read_bytes())
    if config is None:  # a good config of its own (another image id than base:1)
        config = json.dumps({**json.loads((root / "blobs/sha256" / good["id"][7:]).read_bytes()),
                             "author": "planted"}).encode()
    cid = _put_blob(root, config)
    if manifest is None:
        manifest = json.dumps({**base_manifest, "config": {**base_manifest["config"], "digest": cid,
                                                           "size": len(config)}}).encode()
    mid = _put_blob(root, manifest)
    (root / "images" / f"{cid[7:]}.json").write_text(json.dumps(
        {"id": cid, "manifests": [mid], "sources": [], "added": 1.0, "diff_ids": []}))
    doc = json.loads((root / "repositories.json").read_text())
    doc["references"][f"docker.io/library/{name}"] = {"id": cid, "manifest": mid}
    (root / "repositories.json").write_text(json.dumps(doc))
    return cid, mid


MALFORMED = [
    ("config-not-utf8", "config", b'{"rootfs": \xff\xfe}'),
    ("config-not-json", "config", b"this is not json"),
    ("config-not-object", "config", b"[1, 2]"),
    ("config-bad-fields", "config", b'{"rootfs": {"diff_ids": [42]}, "config": {"Env": "A=1"}}'),
    ("manifest-not-utf8", "manifest", b"\x80\x81\x82"),
    ("manifest-not-json", "manifest", b"{oops"),
    ("manifest-no-layers", "manifest", b'{"schemaVersion": 2, "config": {"digest": "sha256:'
     + b"0" * 64 + b'", "size": 2}}'),
]


@pytest.mark.parametrize("case,which,data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_stored_blobs_are_refused_naming_the_blob(tmp_path: Path, base: str, plain_registry,  # type: ignore[no-untyped-def]
                                                            case: str, which: str, data: bytes) -> None:
    root = Path(os.environ["SBX_ROOT"])
    cid, mid = _plant(root, "broken:1", **{which: data})
    bad = cid if which == "config" else mid
    out = tmp_path / "out.tar"
    for args in (("run", "--rm", "broken:1", "true"), ("inspect", "broken:1"), ("save", "-o", str(out), "broken:1"),
                 ("push", "broken:1", f"{plain_registry.host}/test/broken:1"), ("export", "-o", str(out), "broken:1"),
                 ("image", "history", "broken:1"), ("history", "broken:1")):
        r = sbx(*args)
        if "history" in args and "No such command" in r.stderr:
            continue  # no history verb (yet)
        assert_sbx_error(r, 125, bad)
    # images lists the readable image, then reports the broken one
    r = sbx("images")
    assert "base" in r.stdout
    assert_sbx_error(r, 125, bad)
    # check finds it; repair removes it; then everything is clean again
    r = sbx("system", "check")
    assert r.returncode == 1 and bad in r.stdout and "Traceback" not in r.stderr, r
    ok(sbx("system", "check", "--repair"))
    assert "broken" not in ok(sbx("images"))
    ok(sbx("run", "--rm", "base:1", "true"))


def test_malformed_stored_image_can_be_removed(base: str) -> None:
    root = Path(os.environ["SBX_ROOT"])
    cid, _ = _plant(root, "broken:1", config=b"\xff not json")
    r = sbx("rmi", "broken:1")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    assert r.stdout.splitlines() == ["Untagged: broken:1", f"Deleted: {cid}"]
    assert ok(sbx("images", "-q")).split() != []


@pytest.mark.parametrize("case,which,data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_load_refuses_archives_with_malformed_blobs(tmp_path: Path, case: str, which: str, data: bytes) -> None:
    img = build_image([make_tar(busybox_entries())])
    config = data if which == "config" else img.config
    cid = _sha(config)
    manifest = (json.dumps({**json.loads(img.manifest), "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cid, "size": len(config)}}).encode()
        if which == "config" else data)
    # an OCI layout
    lay = tmp_path / "layout"
    (lay / "blobs/sha256").mkdir(parents=True)
    for blob in [*img.blobs.values(), config, manifest]:
        (lay / "blobs/sha256" / _sha(blob)[7:]).write_bytes(blob)
    (lay / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "bad:1"}}]}))
    bad = cid if which == "config" else _sha(manifest)
    assert_sbx_error(sbx("load", "-i", str(lay)), 125, bad)
    # as an oci-archive (a tar of the layout)
    arch = tmp_path / "oci.tar"
    with tarfile.open(arch, "w") as tf:
        tf.add(lay, arcname=".")
    assert_sbx_error(sbx("load", "-i", str(arch)), 125, bad)
    if which == "config":  # a docker-archive has no manifest blob, only its config
        d = tmp_path / "docker"
        d.mkdir()
        (d / "cfg.json").write_bytes(config)
        layer = make_tar(busybox_entries())
        (d / "layer.tar").write_bytes(layer)
        (d / "manifest.json").write_text(json.dumps([{"Config": "cfg.json", "Layers": ["layer.tar"],
                                                      "RepoTags": ["bad:1"]}]))
        darch = tmp_path / "docker.tar"
        with tarfile.open(darch, "w") as tf:
            tf.add(d, arcname=".")
        assert_sbx_error(sbx("load", "-i", str(darch)), 125, cid)
    assert ok(sbx("images", "-q")) == ""
    r = sbx("system", "check")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r


# --- 14.3: rmi removes what it is asked to, as Docker does ---------------------------------------

def test_rmi_of_a_tag_removes_only_that_tag(base: str) -> None:
    iid = inspect(base)["Id"]
    ok(sbx("tag", base, "base:2"))
    ok(sbx("tag", base, "other/name:x"))
    assert ok(sbx("rmi", "-f", "base:2")) == "Untagged: base:2\n"
    assert ok(sbx("rmi", "base:1")) == "Untagged: base:1\n"
    assert inspect("other/name:x")["RepoTags"] == ["other/name:x"]
    ok(sbx("tag", "other/name:x", "base:1"))
    # by id, with tags in two repositories: must be forced, then every tag goes with the image
    r = sbx("rmi", iid[7:19])
    assert_sbx_error(r, 125, f"conflict: unable to delete {iid[7:19]} (must be forced) - image is referenced in "
                             "multiple repositories")
    assert ok(sbx("images", "-q", "--no-trunc")).split() == [iid]
    r = sbx("rmi", "-f", iid[7:19])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(["Untagged: base:1", "Untagged: other/name:x", f"Deleted: {iid}"])
    assert ok(sbx("images", "-q")) == ""


def test_rmi_names_the_containers_that_use_the_image(base: str) -> None:
    iid = inspect(base)["Id"]
    short = iid[7:19]
    ok(sbx("run", "--name", "keep", base, "sh", "-c", "echo kept > /state"))
    cid = ok(sbx("ps", "-a", "-q")).strip()
    assert len(cid) == 12
    r = sbx("rmi", base)
    assert_sbx_error(r, 125, f'conflict: unable to remove repository reference "{base}" (must force) - container '
                             f"{cid} is using its referenced image {short}")
    r = sbx("rmi", short)
    assert_sbx_error(r, 125, f"conflict: unable to delete {short} (must be forced) - image is being used by stopped "
                             f"container {cid}")
    # a running container: cannot be forced
    run = sbxtest.sbx_popen("run", "--name", "up", "-i", base, "sh", "-c", "echo up; read x", stdin=subprocess.PIPE)
    try:
        assert run.stdout.readline() == "up\n"
        up = ok(sbx("ps", "-q")).strip()
        r = sbx("rmi", "-f", short)
        assert_sbx_error(r, 125, f"conflict: unable to delete {short} (cannot be forced) - image is being used by "
                                 f"running container {up}")
    finally:
        run.kill()
        run.wait(30)
    ok(sbx("rm", "-f", "up"))
    # forced by name: untagged, and kept for the stopped container, which still starts
    assert ok(sbx("rmi", "-f", base)) == f"Untagged: {base}\n"
    assert ok(sbx("images", "-q", "--no-trunc")).split() == [iid]
    r = sbx("start", "-a", "keep")
    assert r.returncode == 0, r.stderr
    assert "A /state" in ok(sbx("diff", "keep"))
    ok(sbx("rm", "keep"))
    assert ok(sbx("rmi", short)) == f"Deleted: {iid}\n"
    assert ok(sbx("images", "-q")) == ""


# --- 14.4: export follows the merged view of hardlinks a later layer split ---------------------

def _extract(tmp_path: Path, image: str, name: str) -> Path:
    out = tmp_path / f"{name}.tar"
    ok(sbx("export", "-o", str(out), image))
    dest = tmp_path / name
    dest.mkdir()
    r = subprocess.run(["tar", "-xf", str(out), "-C", str(dest), "--no-same-owner"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return dest


def test_export_of_hardlinks_split_by_a_later_layer(tmp_path: Path, base: str) -> None:
    ok(build(tmp_path, "split:1", f"FROM {base}\n"
                                  "RUN echo data > /a && chmod 644 /a && ln /a /b && ln /a /c\n"
                                  "RUN chmod 600 /a\n"))
    d = _extract(tmp_path, "split:1", "split1")
    st = {n: os.lstat(d / n) for n in "abc"}
    assert {n: oct(s.st_mode & 0o777) for n, s in st.items()} == {"a": "0o600", "b": "0o644", "c": "0o644"}
    assert all((d / n).read_text() == "data\n" for n in "abc")
    assert st["b"].st_ino == st["c"].st_ino != st["a"].st_ino       # b and c are still one file
    # the name the others linked to is deleted later: the others keep the data, still linked
    ok(build(tmp_path, "split:2", "FROM split:1\nRUN rm /a\nRUN echo more >> /c\n"))
    ok(build(tmp_path, "split:3", f"FROM {base}\n"
                                  "RUN echo data > /a && ln /a /b && ln /a /c\nRUN rm /a\n"))
    d = _extract(tmp_path, "split:3", "split3")
    assert not (d / "a").exists()
    assert (d / "b").read_text() == (d / "c").read_text() == "data\n"
    assert os.lstat(d / "b").st_ino == os.lstat(d / "c").st_ino
    d = _extract(tmp_path, "split:2", "split2")
    assert not (d / "a").exists() and (d / "c").read_text() == "data\nmore\n"
    # what the image's own sandbox sees, for the same image
    r = sbx("run", "--rm", "split:2", "sh", "-c", "cat /b /c")
    assert r.stdout == (d / "b").read_text() + (d / "c").read_text(), r.stderr


# --- 14.5: one definition of an image's size -----------------------------------------------------

def _sizes(*images: str, env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """(inspect Size, the SIZE column of `sbx images`) of each image."""
    out = []
    rows = [json.loads(line) for line in ok(sbx("images", "--format", "json", env=env)).splitlines()]
    for image in images:
        docs = json.loads(ok(sbx("inspect", image, env=env)))
        repo, _, tag = image.rpartition(":")
        col = [r["Size"] for r in rows if r["Repository"] == repo and r["Tag"] == tag]
        assert len(col) == 1, (image, rows)
        out.append((docs[0]["Size"], col[0]))
    return out


def test_image_size_is_the_sum_of_its_layers_tar_sizes(tmp_path: Path, base: str, rootfs_tar: Path,  # type: ignore[no-untyped-def]
                                                       plain_registry) -> None:
    ((base_size, _),) = _sizes(base)
    assert base_size == rootfs_tar.stat().st_size        # the one layer's uncompressed tar
    ok(build(tmp_path, "big:1", f"FROM {base}\nRUN head -c 300000 /dev/zero > /zeros\nRUN true\nRUN true\n"))
    before = _sizes(base, "big:1")
    ok(sbx("run", "--rm", "big:1", "true"))                 # unpacks the layers
    assert _sizes(base, "big:1") == before
    (_, _), (big, _) = before
    # a derived image is its base plus its own layers (the empty one counted each time it is listed)
    assert big > base_size + 300000
    layers = inspect("big:1")["RootFS"]["Layers"]
    assert layers[-1] == layers[-2]
    # pulled into a fresh store: the same size, before and after the first run
    dest = f"{plain_registry.host}/test/big:1"
    ok(sbx("push", "big:1", dest))
    fresh = {"SBX_ROOT": str(tmp_path / "fresh")}
    ok(sbx("pull", dest, env=fresh))
    ref = dest.split("/", 1)[0] + "/test/big:1"
    pulled = _sizes(ref, env=fresh)
    assert pulled[0] == before[1]
    ok(sbx("run", "--rm", dest, "true", env=fresh))
    assert _sizes(ref, env=fresh) == pulled


# --- 14.2: files of mapped ids are removed; sbx unshare; sbx system reset -------------------------

def chown(args: str) -> str:
    """`chown ARGS`, where the id mapping has other ids (a single-id mapping has none: true)."""
    return f"chown {args}" if has_subuid() else "true"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_removal_of_files_owned_by_mapped_ids(tmp_path: Path, base: str) -> None:
    root = Path(os.environ["SBX_ROOT"])
    ok(build(tmp_path, "owned:1", f"FROM {base}\n"
                                  f"RUN mkdir -p /d/e && echo x > /d/e/f && chmod 700 /d/e && {chown('-R 1000:1000 /d')}\n"))
    r = sbx("run", "--rm", "owned:1", "stat", "-c", "%u", "/d/e/f")
    assert r.stdout == ("1000\n" if has_subuid() else "0\n"), r.stderr
    ok(sbx("run", "--name", "c", "owned:1", "sh", "-c",
           f"mkdir -p /g/h && touch /g/h/i && chmod 700 /g/h && {chown('-R 1000:1000 /g')}"))
    assert ok(sbx("rm", "c")) == "c\n"
    # What stays: the store's lock, the names directory and the events journal (containers/journal.py).
    assert not (root / "containers").exists() or \
        set(_tree(root / "containers")) <= {".lock", "names", "events.log"}
    r = sbx("rmi", "owned:1")
    assert r.returncode == 0 and "Deleted: sha256:" in r.stdout, r.stderr
    assert _tree(root / "tmp") == []                        # nothing left behind
    layers = {p.name.split("-")[0] for p in (root / "layers").iterdir()}
    assert layers <= {d[7:] for d in inspect(base)["RootFS"]["Layers"]}
    assert ok(sbx("system", "check")).startswith("store ")  # "store ROOT: ok"


@pytest.mark.subuid
def test_leftovers_of_mapped_ids_are_repaired(base: str) -> None:
    # What an older sbx left: a tree of another mapped id in tmp/, that the user cannot remove.
    root = Path(os.environ["SBX_ROOT"])
    left = root / "tmp" / ".tmp-del-0123456789abcdef"
    ok(sbx("unshare", "sh", "-c", f"mkdir -p {left}/a/b && touch {left}/a/b/c && chmod 500 {left}/a "
                                  f"&& chown -R 1000:1000 {left}/a && id -u"))
    r = subprocess.run(["rm", "-rf", str(left)], capture_output=True, text=True)
    assert r.returncode != 0 and left.exists()             # the user alone cannot
    r = sbx("system", "check", "--repair")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    assert not left.exists()
    assert ok(sbx("system", "check")).startswith("store ")


def test_unshare_runs_as_root_of_the_mapped_namespace(tmp_path: Path) -> None:
    assert ok(sbx("unshare", "id", "-u")) == "0\n"
    maps = ok(sbx("unshare", "cat", "/proc/self/uid_map")).split()
    assert maps[:3] == ["0", str(os.getuid()), "1"]
    assert (len(maps) == 6 and maps[5] == "65536") if has_subuid() else len(maps) == 3
    assert sbx("unshare", "sh", "-c", "exit 7").returncode == 7
    # no command: a shell, reading stdin
    r = sbx("unshare", input="echo in $SBX_ROOT; id -u\n")
    assert r.stdout == f"in {os.environ['SBX_ROOT']}\n0\n", r.stderr


def test_system_reset_removes_everything(tmp_path: Path, base: str) -> None:
    root = Path(os.environ["SBX_ROOT"])
    ok(build(tmp_path, "owned:1", f"FROM {base}\nRUN mkdir /d && touch /d/f && chmod 700 /d && {chown('-R 1000 /d')}\n"))
    ok(sbx("run", "--name", "kept", "owned:1", "sh", "-c", f"mkdir /g && chmod 700 /g && {chown('1000 /g')}"))
    run = sbxtest.sbx_popen("run", "--name", "up", "-i", base, "sh", "-c", "echo up; read x", stdin=subprocess.PIPE)
    try:
        assert run.stdout.readline() == "up\n"
        assert_sbx_error(sbx("system", "reset", "-f"), 125, "running", "up")
    finally:
        run.kill()
        run.wait(30)
    assert "kept" in ok(sbx("ps", "-a"))
    # not on a terminal and without -f: refused, nothing removed
    assert_sbx_error(sbx("system", "reset"), 125, "-f")
    assert ok(sbx("images", "-q")) != ""
    r = sbx("system", "reset", "-f")
    assert r.returncode == 0, r.stderr
    assert not root.exists() or _tree(root) == []
    assert ok(sbx("images", "-q")) == "" and ok(sbx("ps", "-a", "-q")) == ""
    assert ok(sbx("system", "check")).startswith("store ")


def _registry_put(host: str, repo: str, tag: str, blobs: list[bytes], manifest: bytes, media_type: str) -> None:
    """Upload blobs and a manifest with the registry API itself (skopeo would parse the config)."""
    import urllib.request

    for data in blobs:
        req = urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as r:
            loc = r.headers["Location"]
        url = loc if loc.startswith("http") else f"http://{host}{loc}"
        url += ("&" if "?" in url else "?") + "digest=" + _sha(data)
        req = urllib.request.Request(url, method="PUT", data=data, headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=30).close()
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="PUT", data=manifest,
                                 headers={"Content-Type": media_type})
    urllib.request.urlopen(req, timeout=30).close()


@pytest.mark.parametrize("config", [b'{"rootfs": \xff\xfe}', b"not json", b'{"rootfs": {"diff_ids": "x"}}'],
                         ids=["not-utf8", "not-json", "bad-fields"])
def test_pull_refuses_a_malformed_config_naming_it(plain_registry, config: bytes) -> None:  # type: ignore[no-untyped-def]
    img = build_image([make_tar(busybox_entries())])
    layers = [b for d, b in img.blobs.items() if d not in (img.digest, img.id)]
    cid = _sha(config)
    manifest = json.dumps({**json.loads(img.manifest), "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cid, "size": len(config)}}).encode()
    _registry_put(plain_registry.host, "test/badconfig", cid[7:19], [*layers, config], manifest,
                  "application/vnd.oci.image.manifest.v1+json")
    ref = f"{plain_registry.host}/test/badconfig:{cid[7:19]}"
    assert_sbx_error(sbx("pull", ref), 125, cid)
    r = sbx("run", "--rm", ref, "true")   # says that it pulls first, then fails the same way
    assert r.returncode == 125 and "Traceback" not in r.stderr, r
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("sbx: ") and cid in ln], r.stderr
    assert ok(sbx("images", "-q")) == ""


def test_system_check_of_a_store_that_cannot_exist(tmp_path: Path) -> None:
    # issue 14: `sbx --root /proc/foo system check` said ok for a store that does not exist
    assert_sbx_error(sbx("--root", "/proc/foo", "system", "check"), 125, "/proc/foo")
    r = sbx("--root", str(tmp_path / "not-yet"), "system", "check")
    assert r.returncode == 0 and "empty" in r.stdout, r


def test_tag_on_a_full_store_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """issue 14: ENOSPC while a tag is written. A 1 MiB tmpfs as the store (user+mount namespace)."""
    import shutil
    import sys

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) not installed")
    lay = write_layout(tmp_path / "small", [(build_image([make_tar([Entry("small", "file", b"s")])]), "latest")])
    root = tmp_path / "full"
    root.mkdir()
    cli = f"{sys.executable} -m sandbox"
    script = (f"mount -t tmpfs -o size=1m tmpfs {root} || exit 99; "
              f"{cli} load -i {lay} --repository test/small >/dev/null || exit 98; "
              f"head -c 2000000 /dev/zero > {root}/filler 2>/dev/null; "
              f"{cli} tag test/small test/other:1; echo rc=$?; rm {root}/filler; "
              f"{cli} images --format json")
    env = dict(os.environ, SBX_ROOT=str(root))
    p = subprocess.run([unshare, "-Urm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120,
                       cwd=sbxtest.NEUTRAL_CWD)
    if p.returncode in (99, 1) and "rc=" not in p.stdout:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {p.stderr.strip()[:200]}")
    assert "rc=125" in p.stdout and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert "sbx: write the image references: no space left on device" in p.stderr, p.stderr
    assert '"Repository": "test/small"' in p.stdout and "test/other" not in p.stdout   # nothing lost


def test_system_reset_of_a_store_that_does_not_exist_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "never-made"
    out = ok(sbx("--root", str(missing), "system", "reset", "-f"))
    assert out.startswith(f"There is no sbx data in {missing}") and "Removed all" not in out
    assert not missing.exists()


def test_system_reset_refuses_a_directory_that_is_not_an_sbx_store(tmp_path: Path) -> None:
    """--root given by hand may be a typo: a directory with files of the user's, or with only an
    'images' directory, is left alone."""
    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "photo.jpg").write_text("x")
    (mine / "notes.txt").write_text("y")
    bare = tmp_path / "bare"
    (bare / "images").mkdir(parents=True)
    for d, word in ((mine, "notes.txt"), (bare, "no sbx store")):
        assert_sbx_error(sbx("--root", str(d), "system", "reset", "-f"), 125, "refusing", word)
    assert (mine / "images" / "photo.jpg").exists() and (mine / "notes.txt").exists()
    assert (bare / "images").is_dir()
