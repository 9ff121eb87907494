"""sbx import (rootfs tar -> image) and image export (layers merged like overlayfs, as one tar)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from sbx_image_testlib import Entry, busybox_entries, compress, make_tar, multi_layers, sha, skopeo

from sandbox.image import archive
from sandbox.image.errors import ArchiveError, LayerError
from sandbox.image.store import Store
from sandbox.image.tarball import export_image, import_rootfs


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_import_then_export_roundtrip(store: Store, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar.gz"
    rootfs.write_bytes(compress(make_tar(busybox_entries()), "gzip"))
    img = import_rootfs(store, str(rootfs), "imported/busybox:1", config={"Cmd": ["/bin/sh"]})
    assert img.repo_tags == ["docker.io/imported/busybox:1"]
    assert img.config["config"]["Cmd"] == ["/bin/sh"]
    assert img.diff_ids == [sha(make_tar(busybox_entries()))]
    assert store.check() == []
    out = io.BytesIO()
    export_image(store, img, out)
    m = members(out.getvalue())
    assert m["bin/busybox"].isreg() and m["bin/sh"].issym() and m["bin/sh"].linkname == "busybox"
    assert m["bin/busybox"].uid == 0 and m["tmp"].mode == 0o1777
    # skopeo can read what we store for it
    archive.save(store, ["imported/busybox:1"], str(tmp_path / "i.tar"), "oci-archive")
    assert json.loads(skopeo("inspect", f"oci-archive:{tmp_path / 'i.tar'}").stdout)["Layers"] == [img.layers[0]["digest"]]


def test_export_merges_layers_like_overlayfs(store: Store, tmp_path: Path) -> None:
    from sbx_image_testlib import build_image, write_layout

    img = build_image(multi_layers() + [make_tar([Entry("data", "dir"), Entry("data/keep", "file", b"v2\n")])])
    ((loaded, _),) = archive.load(store, str(write_layout(tmp_path / "lay", [(img, "latest")])), repository="t/m")
    out = io.BytesIO()
    export_image(store, loaded, out)
    m = members(out.getvalue())
    assert "etc/gone" not in m and "etc/hello" in m and "etc/passwd" in m  # whiteout hides layer 2's file
    assert "data/dir/old" not in m and "data/dir/new" in m  # opaque directory
    assert not any(n.split("/")[-1].startswith(".wh.") for n in m)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert tf.extractfile("data/keep").read() == b"v2\n"  # type: ignore[union-attr]
    assert m["data/link"].isreg() or m["data/link"].islnk()
    assert "usr/bin/tool" in m


def test_import_refuses_hostile_and_bad_input(store: Store, tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    evil.write_bytes(make_tar([Entry("x", "symlink", link="/"), Entry("x/etc/passwd", "file", b"pwned")]))
    with pytest.raises(LayerError, match="'x/etc/passwd'"):
        import_rootfs(store, str(evil), "evil/image")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ArchiveError, match="empty"):
        import_rootfs(store, str(empty), "e/e")
    with pytest.raises(ArchiveError):
        import_rootfs(store, str(tmp_path / "missing.tar"), "e/e")
    assert store.images() == [] and list(store.blobs) == [] and store.check() == []


def test_import_export_cli(sbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rootfs = tmp_path / "r.tar"
    rootfs.write_bytes(make_tar(busybox_entries()))
    p = sbx("import", "-c", 'CMD ["/bin/echo", "hi"]', "-c", "ENV A=b", "-c", "WORKDIR /tmp", str(rootfs), "cli/imp:v1")
    assert p.returncode == 0, p.stderr
    doc = json.loads(sbx("inspect", "cli/imp:v1").stdout)[0]
    assert doc["Id"] == p.stdout.strip()
    assert doc["Config"] == {"Cmd": ["/bin/echo", "hi"], "Env": ["A=b"], "WorkingDir": "/tmp"}
    assert sbx("image", "export", "-o", str(tmp_path / "out.tar"), "cli/imp:v1").returncode == 0
    assert "bin/busybox" in members((tmp_path / "out.tar").read_bytes())
    p = sbx("import", "-c", "RUN true", str(rootfs))
    assert p.returncode == 125 and "unsupported instruction" in p.stderr


def test_export_keeps_owners_modes_and_dot_names(store: Store, tmp_path: Path) -> None:
    """export reads the layer blobs: owners and modes are the image's, not the (possibly
    collapsed) unpacked copy's, and names beginning with a dot survive."""
    from sbx_image_testlib import build_image, write_layout

    img = build_image([make_tar([Entry("home", "dir", mode=0o755, uid=1000, gid=1000),
                                 Entry("home/.bashrc", "file", b"rc\n", mode=0o444, uid=1000, gid=1000),
                                 Entry("ro", "dir", mode=0o555)]),
                       make_tar([Entry("home", "dir", mode=0o750, uid=1000, gid=1000),
                                 Entry("home/.wh..bashrc", "file")])])
    ((loaded, _),) = archive.load(store, str(write_layout(tmp_path / "lay", [(img, "latest")])), repository="t/o")
    out = io.BytesIO()
    export_image(store, loaded, out)
    m = members(out.getvalue())
    assert (m["home"].uid, m["home"].gid, m["home"].mode) == (1000, 1000, 0o750)   # the top layer's header
    assert "home/.bashrc" not in m and m["ro"].mode == 0o555
    img2 = build_image([make_tar([Entry(".hidden", "file", b"x", mode=0o444, uid=7, gid=8)])])
    ((loaded2, _),) = archive.load(store, str(write_layout(tmp_path / "lay2", [(img2, "latest")])), repository="t/p")
    out = io.BytesIO()
    export_image(store, loaded2, out)
    m = members(out.getvalue())
    assert (m[".hidden"].uid, m[".hidden"].gid, m[".hidden"].mode) == (7, 8, 0o444)
