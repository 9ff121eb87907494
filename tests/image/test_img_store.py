"""The content-addressed store: atomic writes, verification, references, GC, check/repair, locks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sbx_image_testlib import SANDBOX_PATH, Entry, build_image, busybox_entries, make_tar, sha, write_layout

from sandbox.image import archive
from sandbox.image.cas import BlobStore
from sandbox.image.errors import DigestMismatch, ImageError, ImageNotFound, StoreError
from sandbox.image.store import Store, default_root


def load_image(store: Store, tmp_path: Path, img, name: str):  # type: ignore[no-untyped-def]
    d = tmp_path / f"layout-{sha(img.manifest)[7:15]}"
    if not d.exists():
        write_layout(d, [(img, "latest")])
    ((loaded, _),) = archive.load(store, str(d), repository=name)
    return loaded


# --- CAS --------------------------------------------------------------------------------------------

def test_blob_write_verify_and_mismatch(tmp_path: Path) -> None:
    b = BlobStore(str(tmp_path))
    b.init()
    d = b.put_bytes(b"hello")
    assert d == sha(b"hello") and b.read_bytes(d) == b"hello"
    assert b.put_bytes(b"hello") == d  # idempotent
    with pytest.raises(DigestMismatch):
        b.put_bytes(b"hello", sha(b"other"))
    import io

    with pytest.raises(DigestMismatch, match="failed verification"):
        b.put_stream(io.BytesIO(b"payload"), sha(b"something else"))
    with pytest.raises(DigestMismatch, match="larger than"):
        b.put_stream(io.BytesIO(b"payload"), sha(b"payload"), size=3)
    assert list(b) == [d] and os.listdir(b.tmp_dir) == []
    # corruption on disk is noticed by readers
    p = b.path(d)
    os.chmod(p, 0o644)
    Path(p).write_bytes(b"hellO")
    with pytest.raises(DigestMismatch, match="corrupt"):
        b.read_bytes(d)
    with b.open(d) as r, pytest.raises(DigestMismatch):
        r.finish()
    assert not b.verify(d)
    with pytest.raises(StoreError, match="missing"):
        b.read_bytes(sha(b"nothing"))


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SBX_ROOT")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_root() == str(tmp_path / "data" / "sbx")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_root() == os.path.expanduser("~/.local/share/sbx")
    monkeypatch.setenv("SBX_ROOT", "rel/root")
    assert default_root() == os.path.abspath("rel/root")


# --- references, rmi, gc ----------------------------------------------------------------------------

def test_tag_rmi_and_gc_keep_shared_layers(store: Store, tmp_path: Path) -> None:
    base = make_tar(busybox_entries())
    a = build_image([base, make_tar([Entry("a", "file", b"a")])])
    b = build_image([base, make_tar([Entry("b", "file", b"b")])], created="2024-02-02T00:00:00Z")
    ia = load_image(store, tmp_path, a, "test/a")
    ib = load_image(store, tmp_path, b, "test/b")
    assert store.resolve("test/a").id == ia.id and store.resolve("docker.io/test/b:latest").id == ib.id
    assert [i.id for i in store.images()] == [ib.id, ia.id]  # newest first
    assert store.tag("test/a", "other/name:v1") == "docker.io/other/name:v1"
    assert store.resolve("other/name:v1").id == ia.id
    # by id with two tags: refused without force
    with pytest.raises(ImageError, match="must be forced.*referenced in multiple repositories"):
        store.remove(ia.id[7:19])
    untagged, deleted = store.remove("other/name:v1")
    assert untagged == ["docker.io/other/name:v1"] and deleted == []
    untagged, deleted = store.remove("test/a")
    assert deleted == [ia.id]
    with pytest.raises(ImageNotFound, match="no such image: test/a:latest"):
        store.resolve("test/a")
    n, freed = store.gc()  # type: ignore[misc]
    assert n == 4 and freed > 0  # a's manifest, config, top layer blob and top layer dir
    shared = store.layer_path(sha(base))
    assert os.path.isdir(shared) and store.blobs.has(ib.layers[0]["digest"])
    assert store.check() == []
    store.remove("test/b")
    store.gc()
    assert list(store.blobs) == [] and store._layer_entries() == []


def test_in_use_hook_and_prune(store: Store, tmp_path: Path) -> None:
    img = load_image(store, tmp_path, build_image([make_tar([Entry("f", "file", b"1")])]), "test/used")
    with pytest.raises(ImageError, match="container 0123456789ab is using its referenced image"):
        store.remove("test/used", in_use=lambda i: [("0123456789ab" * 5, False)] if i == img.id else [])
    with pytest.raises(ImageError, match="cannot be forced.*running container 0123456789ab"):
        store.remove(img.id, force=True, in_use=lambda i: [("0123456789ab" * 5, True)])
    # forced: untagged, but kept for the (stopped) container that uses it
    assert store.remove("test/used", force=True, in_use=lambda i: [("0123456789ab" * 5, False)]) == (
        ["docker.io/test/used:latest"], [])
    assert store.remove(img.id, in_use=lambda i: []) == ([], [img.id])
    # dangling images: loaded without a name
    lay = write_layout(tmp_path / "dangling", [(build_image([make_tar([Entry("g", "file", b"2")])]), "latest")])
    ((dangling, names),) = archive.load(store, str(lay))
    assert names == []
    kept = load_image(store, tmp_path, build_image([make_tar([Entry("h", "file", b"3")])]), "test/kept")
    assert store.prune() == [dangling.id]
    assert store.prune(all_images=True, in_use=lambda i: i == kept.id) == []
    assert store.prune(all_images=True) == [kept.id]
    store.gc()
    assert list(store.blobs) == []


def test_resolve_by_id_prefix_and_errors(store: Store, tmp_path: Path) -> None:
    img = load_image(store, tmp_path, build_image([make_tar([Entry("f", "file", b"1")])]), "test/x")
    assert store.resolve(img.id).id == img.id
    assert store.resolve(img.id[7:11]).id == img.id
    with pytest.raises(ImageNotFound):
        store.resolve("test/y")
    with pytest.raises(ImageError, match="invalid reference"):
        store.resolve("Bad/Ref")


# --- check / repair ---------------------------------------------------------------------------------

def test_check_finds_and_repairs_corruption(store: Store, tmp_path: Path) -> None:
    img = load_image(store, tmp_path, build_image([make_tar(busybox_entries())]), "test/c")
    other = load_image(store, tmp_path, build_image([make_tar([Entry("o", "file", b"o")])]), "test/ok")
    assert store.check() == []
    layer_blob = store.blobs.path(img.layers[0]["digest"])
    os.chmod(layer_blob, 0o644)
    with open(layer_blob, "r+b") as f:
        f.seek(500)
        f.write(b"XXXX")
    os.unlink(os.path.join(store.layer_path(other.diff_ids[0]), "meta.json"))
    Path(store.tmp_dir, ".tmp-blob-crashed").write_bytes(b"partial")
    problems = store.check()
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["corrupt-blob", "image", "layer", "leftover", "reference"], problems
    assert all(not p.repaired for p in problems)
    repaired = store.check(repair=True)
    assert all(p.repaired for p in repaired)
    assert store.check() == []
    with pytest.raises(ImageNotFound):
        store.resolve("test/c")
    assert store.resolve("test/ok").id == other.id
    assert os.listdir(store.tmp_dir) == []
    # the layer directory is unpacked again on demand
    assert os.path.isdir(store.unpack(store.resolve("test/ok"))[0])


def test_check_reports_bad_metadata(store: Store, tmp_path: Path) -> None:
    load_image(store, tmp_path, build_image([make_tar([Entry("f", "file", b"1")])]), "test/m")
    refs_file = Path(store.root, "repositories.json")
    doc = json.loads(refs_file.read_text())
    doc["references"]["docker.io/test/ghost:latest"] = {"id": "sha256:" + "f" * 64, "manifest": "sha256:" + "e" * 64}
    refs_file.write_text(json.dumps(doc))
    Path(store.blobs.blob_dir, "junk").write_text("x")
    problems = store.check(repair=True)
    assert {(p.kind, p.subject) for p in problems} >= {("reference", "docker.io/test/ghost:latest"),
                                                         ("stray", "blobs/sha256/junk")}
    assert store.check() == []


# --- crash leftovers and locks ----------------------------------------------------------------------

def test_cleanup_respects_running_writers(store: Store) -> None:
    leftover = Path(store.tmp_dir, ".tmp-layer-abc")
    leftover.mkdir()
    (leftover / "f").write_text("x")
    os.chmod(leftover, 0o500)
    with store.adding():  # another command is writing: its temp files must survive
        assert store.cleanup() == 0
        assert leftover.exists()
    assert store.cleanup() == 1
    assert not leftover.exists()


def _cli(args: list[str], root: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=SANDBOX_PATH, SBX_ROOT=root)
    return subprocess.Popen([sys.executable, "-m", "sandbox.cli.images", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=os.path.dirname(root))


def test_concurrent_tags_lose_nothing(store: Store, tmp_path: Path) -> None:
    img = load_image(store, tmp_path, build_image([make_tar([Entry("f", "file", b"1")])]), "test/base")
    procs = [_cli(["tag", img.id, f"test/t{i}:v{i}"], store.root) for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    tags = store.resolve("test/base").repo_tags
    assert len(tags) == 9
    assert store.check() == []


def test_disk_full_leaves_nothing_half_stored(tmp_path: Path) -> None:
    """A 3 MiB tmpfs as the store (in a user+mount namespace): loading a 5 MiB image fails cleanly."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) not installed")
    big = build_image([make_tar([Entry("big", "file", os.urandom(5 << 20))])], comp="none")
    small = build_image([make_tar([Entry("small", "file", b"s")])])
    lay = write_layout(tmp_path / "big", [(big, "latest")])
    lay2 = write_layout(tmp_path / "small", [(small, "latest")])
    root = tmp_path / "full"
    root.mkdir()
    cli = f"{sys.executable} -m sandbox.cli.images"
    script = (f"mount -t tmpfs -o size=3m tmpfs {root} || exit 99; "
              f"{cli} load -i {lay2} --repository test/small >/dev/null || exit 98; "
              f"{cli} load -i {lay} --repository test/big; echo rc=$?; "
              f"{cli} system check; echo check=$?; {cli} images -q; ls -A {root}/tmp")
    env = dict(os.environ, PYTHONPATH=SANDBOX_PATH, SBX_ROOT=str(root))
    p = subprocess.run([unshare, "-Urm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120,
                       cwd=tmp_path)
    if p.returncode in (99, 1) and "rc=" not in p.stdout:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {p.stderr.strip()[:200]}")
    assert "rc=125" in p.stdout, p.stdout + p.stderr
    assert "no space left on device" in p.stderr
    assert "check=0" in p.stdout, p.stdout
    assert p.stdout.count(small.id[7:19]) == 1 and big.id[7:19] not in p.stdout
