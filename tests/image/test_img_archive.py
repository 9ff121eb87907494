"""docker-archive / oci-archive / oci-dir: sbx writes what skopeo and umoci read, and reads what they write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from sbx_image_testlib import build_image, busybox_entries, find_binary, make_tar, need, run, sha, skopeo, write_layout

from sandbox.image import archive
from sandbox.image.errors import ArchiveError, ImageNotFound
from sandbox.image.store import Store
from sandbox.registry.pull import PullOptions, pull
from sandbox.registry.transport import RegistryOptions

FAST = PullOptions(registry=RegistryOptions(retries=1, backoff=0.05))


@pytest.fixture
def multi(store: Store, plain_registry):  # type: ignore[no-untyped-def]
    return pull(store, f"{plain_registry.host}/test/multi", FAST)


def test_save_docker_archive_read_by_skopeo(store: Store, multi, multi_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "multi.tar"
    archive.save(store, [multi.repo_tags[0]], str(out))
    info = json.loads(skopeo("inspect", f"docker-archive:{out}").stdout)
    assert info["Layers"] == multi.diff_ids  # uncompressed layers named by diff_id
    cfg = skopeo("inspect", "--config", "--raw", f"docker-archive:{out}").stdout
    assert sha(cfg.encode()) == multi.id == multi_image.id
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [multi.repo_tags[0]]
    # skopeo can copy it into an OCI layout, and the layers stay the same
    skopeo("copy", f"docker-archive:{out}", f"oci:{tmp_path / 'oci'}:x")
    assert not os.listdir(store.tmp_dir)


def test_save_oci_archive_and_dir_read_by_skopeo_and_umoci(store: Store, multi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "multi-oci.tar"
    archive.save(store, [multi.repo_tags[0]], str(out), "oci-archive")
    info = json.loads(skopeo("inspect", f"oci-archive:{out}").stdout)
    assert info["Digest"] == multi.manifest_digest  # blobs kept byte for byte
    d = tmp_path / "layout"
    archive.save(store, [multi.repo_tags[0]], str(d), "oci-dir")
    info = json.loads(skopeo("inspect", f"oci:{d}:latest").stdout)
    assert info["Digest"] == multi.manifest_digest
    umoci = find_binary("umoci")
    if umoci:
        p = run([umoci, "stat", "--image", f"{d}:latest", "--json"])
        assert json.loads(p.stdout)["history"]


def test_roundtrip_docker_archive(store: Store, multi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "a.tar"
    archive.save(store, [multi.repo_tags[0]], str(out))
    other = Store(str(tmp_path / "other"))
    ((img, names),) = archive.load(other, str(out))
    assert img.id == multi.id and names == multi.repo_tags
    dirs = other.unpack(img)
    assert os.path.isfile(os.path.join(dirs[1], "etc/hello"))
    assert other.check() == []


def test_roundtrip_oci_archive_keeps_manifest_digest(store: Store, multi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "o.tar"
    archive.save(store, [multi.repo_tags[0], multi.id], str(out), "oci-archive")
    other = Store(str(tmp_path / "other"))
    loaded = archive.load(other, str(out))
    assert {img.manifest_digest for img, _ in loaded} == {multi.manifest_digest}
    assert other.resolve(multi.repo_tags[0]).id == multi.id


def test_load_skopeo_docker_archive_and_oci_layout(store: Store, plain_registry, multi_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = f"docker://{plain_registry.host}/test/multi:latest"
    skopeo("copy", "--src-tls-verify=false", src, f"docker-archive:{tmp_path / 'd.tar'}:example.com/team/multi:v1")
    ((img, names),) = archive.load(store, str(tmp_path / "d.tar"))
    assert img.id == multi_image.id and names == ["example.com/team/multi:v1"]
    skopeo("copy", "--src-tls-verify=false", src, f"oci:{tmp_path / 'lay'}:v2")
    ((img2, names2),) = archive.load(store, str(tmp_path / "lay"), repository="example.com/team/multi")
    assert img2.manifest_digest == multi_image.digest and names2 == ["example.com/team/multi:v2"]
    ((img3, names3),) = archive.load(store, str(tmp_path / "lay"))  # tag only, no repository: untagged
    assert names3 == [] and img3.id == multi_image.id
    assert store.check() == []


def test_load_umoci_layout(store: Store, tmp_path: Path) -> None:
    umoci = need("umoci")
    lay = tmp_path / "umoci"
    run([umoci, "init", "--layout", str(lay)])
    run([umoci, "new", "--image", f"{lay}:latest"])
    bundle = tmp_path / "bundle"
    run([umoci, "unpack", "--rootless", "--image", f"{lay}:latest", str(bundle)])
    rootfs = bundle / "rootfs"
    (rootfs / "hello.txt").write_text("from umoci\n")
    (rootfs / "sub").mkdir()
    (rootfs / "sub" / "x").write_text("x")
    run([umoci, "repack", "--image", f"{lay}:latest", str(bundle)])
    run([umoci, "config", "--image", f"{lay}:latest", "--config.cmd", "/hello"])
    ((img, names),) = archive.load(store, str(lay), repository="umoci/test")
    assert names == ["docker.io/umoci/test:latest"]
    assert img.config["config"]["Cmd"] == ["/hello"]
    top = store.unpack(img)[-1]
    assert Path(top, "hello.txt").read_text() == "from umoci\n"


def test_load_multi_platform_layout(store: Store, busybox_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sbx_image_testlib import Entry, multi_arch_index

    other = build_image([make_tar([Entry("ARM", "file", b"arm\n")])], arch="arm64")
    lay = multi_arch_index(tmp_path / "idx", busybox_image, other, "arm64", "ref")
    ((img, _),) = archive.load(store, str(lay), repository="multi/arch")
    assert img.id == busybox_image.id


def test_load_refuses_corrupt_archives(store: Store, busybox_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lay = write_layout(tmp_path / "lay", [(busybox_image, "latest")])
    layer = json.loads(busybox_image.manifest)["layers"][0]["digest"]
    p = lay / "blobs" / "sha256" / layer[7:]
    data = bytearray(p.read_bytes())
    data[-100] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="does not match its digest"):
        archive.load(store, str(lay), repository="x/y")
    assert store.images() == [] and list(store.blobs) == []
    with pytest.raises(ArchiveError, match="neither a docker-archive"):
        empty = tmp_path / "empty.tar"
        with tarfile.open(empty, "w"):
            pass
        archive.load(store, str(empty))
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError):
        archive.load(store, str(tmp_path / "junk"))
    with pytest.raises(ArchiveError, match="no such file"):
        archive.load(store, str(tmp_path / "missing.tar"))


def test_hostile_layer_in_archive_refused(store: Store, tmp_path: Path) -> None:
    from sbx_image_testlib import Entry

    from sandbox.image.errors import LayerError

    img = build_image([make_tar(busybox_entries()), make_tar([Entry("x", "symlink", link="/"), Entry("x/evil", "file", b"1")])])
    lay = write_layout(tmp_path / "lay", [(img, "latest")])
    with pytest.raises(LayerError, match="'x/evil'"):
        archive.load(store, str(lay), repository="evil/image")
    assert store.images() == [] and store.check() == []


def test_save_errors(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        archive.save(store, ["nothere"], str(tmp_path / "x.tar"))
    with pytest.raises(ArchiveError, match="unknown archive format"):
        archive.save(store, ["x"], str(tmp_path / "x.tar"), "zip")
    assert not (tmp_path / "x.tar").exists()


def test_podman_loads_sbx_archive(store: Store, multi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (Debian package podman)")
    out = tmp_path / "p.tar"
    archive.save(store, [multi.repo_tags[0]], str(out))
    env = dict(os.environ, HOME=str(tmp_path / "phome"), XDG_DATA_HOME=str(tmp_path / "pdata"),
               XDG_CONFIG_HOME=str(tmp_path / "pconf"), XDG_RUNTIME_DIR=str(tmp_path / "prun"))
    for d in ("phome", "pdata", "pconf", "prun"):
        (tmp_path / d).mkdir(exist_ok=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sbxp") as runroot:  # podman wants a runroot < 50 characters
        root = ["--root", str(tmp_path / "pstore"), "--runroot", runroot, "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
        p = subprocess.run([podman, *root, "load", "-i", str(out)], capture_output=True, text=True, env=env, timeout=120)
        if p.returncode != 0 and any(s in p.stderr for s in ("insufficient UIDs", "newuidmap", "lchown",
                                                             "cannot set up namespace", "setgroups")):
            pytest.skip(f"rootless podman cannot store images for this user: {p.stderr.strip()[:200]}")
        assert p.returncode == 0, p.stderr
        try:
            p = subprocess.run([podman, *root, "image", "inspect", "--format", "{{.Id}}", multi.repo_tags[0]],
                               capture_output=True, text=True, env=env, timeout=60)
            assert p.stdout.strip() == multi.id[7:], p.stderr
        finally:
            # Rootless podman stored files owned by subordinate ids: only its user namespace can remove them.
            subprocess.run([podman, *root, "unshare", "rm", "-rf", str(tmp_path / "pstore")], capture_output=True,
                           env=env, timeout=60)
