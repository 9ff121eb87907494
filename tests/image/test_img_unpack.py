"""Layer unpacking: overlay form, ownership, compression, and hostile tars."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from sbx_image_testlib import Entry, busybox_entries, compress, make_tar, multi_layers, sha

from sandbox.image import whiteout as wh
from sandbox.image.errors import DigestMismatch, LayerError
from sandbox.image.unpack import SINGLE_ID, UnpackOptions, unpack_layer


def unpack(data: bytes, dest: Path, **kw) -> object:  # type: ignore[no-untyped-def]
    dest.mkdir(parents=True, exist_ok=True)
    return unpack_layer(io.BytesIO(data), str(dest), UnpackOptions(**kw))


def overlay_supported(tmp: Path) -> bool:
    return wh.probe_format(str(tmp)) == wh.FORMAT_OVERLAY


def test_files_dirs_links_modes(tmp_path: Path) -> None:
    data = make_tar([
        Entry("a", "dir", mode=0o555), Entry("a/f", "file", b"x" * 10, mode=0o4755, uid=5, gid=6),
        Entry("a/sym", "symlink", link="/etc/passwd"), Entry("a/hl", "hardlink", link="a/f"),
        Entry("a/fifo", "fifo"), Entry("./b/c/d", "file", b"deep"),
    ])
    res = unpack(data, tmp_path / "l")
    root = tmp_path / "l"
    assert (root / "a/f").read_bytes() == b"x" * 10
    assert os.readlink(root / "a/sym") == "/etc/passwd"
    assert os.stat(root / "a/hl").st_ino == os.stat(root / "a/f").st_ino
    assert stat.S_ISFIFO(os.lstat(root / "a/fifo").st_mode)
    assert (root / "b/c/d").read_bytes() == b"deep"
    # single-id mode: owned by us, owner can always read/write/search
    assert stat.S_IMODE(os.stat(root / "a").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "a/f").st_mode) == 0o4755
    assert os.stat(root / "a/f").st_uid == os.getuid()
    assert os.stat(root / "a/f").st_mtime == 1_700_000_000
    assert res.diff_id == sha(data) and res.compression == "none" and res.size == len(data)


def zstd_blob(data: bytes) -> bytes:
    """zstd-compress with the zstandard module, else with Debian's zstd tool."""
    try:
        return compress(data, "zstd")
    except ImportError:
        pass
    tool = shutil.which("zstd")
    if tool is None:
        pytest.skip("neither the zstandard module nor the zstd tool (Debian package zstd) is available")
    return subprocess.run([tool, "-q", "-c"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("kind", ["gzip", "none", "zstd"])
def test_compressions(tmp_path: Path, kind: str) -> None:
    from sandbox.image.compress import zstd_available

    tar = make_tar(busybox_entries())
    blob = zstd_blob(tar) if kind == "zstd" else compress(tar, kind)
    if kind == "zstd" and not zstd_available():
        # Without a zstd module the error says what to install.
        with pytest.raises(LayerError, match="zstd-compressed and no zstd module") as ei:
            unpack(blob, tmp_path / "l")
        assert "zstandard" in (ei.value.hint or "")
        return
    res = unpack(blob, tmp_path / "l", expected_diff_id=sha(tar), expected_digest=sha(blob))
    assert res.compression == kind and res.diff_id == sha(tar) and res.digest == sha(blob)
    assert os.path.islink(tmp_path / "l/bin/sh")


def test_diff_id_mismatch(tmp_path: Path) -> None:
    tar = make_tar([Entry("f", "file", b"1")])
    with pytest.raises(LayerError, match="the image config says"):
        unpack(compress(tar, "gzip"), tmp_path / "l", expected_diff_id=sha(b"other"))


def test_digest_mismatch(tmp_path: Path) -> None:
    tar = make_tar([Entry("f", "file", b"1")])
    with pytest.raises(DigestMismatch):
        unpack(tar, tmp_path / "l", expected_digest=sha(b"other"))


def test_corrupt_gzip(tmp_path: Path) -> None:
    blob = bytearray(compress(make_tar(busybox_entries()), "gzip"))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(LayerError, match="corrupt or truncated"):
        unpack(bytes(blob), tmp_path / "l", label="layer X")


def test_truncated_tar(tmp_path: Path) -> None:
    tar = make_tar([Entry("f", "file", b"a" * 5000)])
    with pytest.raises(LayerError, match="corrupt or truncated"):
        unpack(tar[:1500], tmp_path / "l")


def test_whiteouts_overlay_form(tmp_path: Path) -> None:
    if not overlay_supported(tmp_path):
        pytest.skip("this filesystem refuses 0/0 whiteouts or user xattrs")
    l3 = multi_layers()[2]
    unpack(l3, tmp_path / "l3")
    st = os.lstat(tmp_path / "l3/etc/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(tmp_path / "l3/data/dir", "user.overlay.opaque") == b"y"
    assert (tmp_path / "l3/data/dir/new").read_bytes() == b"new\n"
    assert not any(n.startswith(".wh.") for _, ds, fs in os.walk(tmp_path / "l3") for n in ds + fs)


def test_whiteouts_aufs_fallback(tmp_path: Path) -> None:
    unpack(multi_layers()[2], tmp_path / "l3", whiteouts=wh.FORMAT_AUFS)
    assert (tmp_path / "l3/etc/.wh.gone").is_file()
    assert (tmp_path / "l3/data/dir/.wh..wh..opq").is_file()
    assert not os.path.lexists(tmp_path / "l3/etc/gone")


def test_whiteout_and_file_in_same_layer(tmp_path: Path) -> None:
    """Whiteouts apply to lower layers only: the layer's own file wins, in either order."""
    unpack(make_tar([Entry("x", "file", b"1"), Entry(".wh.x", "file"), Entry(".wh.y", "file"),
                     Entry("y", "file", b"2")]), tmp_path / "l")
    assert (tmp_path / "l/x").read_bytes() == b"1"
    assert (tmp_path / "l/y").read_bytes() == b"2"


def test_whiteout_then_dir_becomes_opaque(tmp_path: Path) -> None:
    if not overlay_supported(tmp_path):
        pytest.skip("this filesystem refuses 0/0 whiteouts or user xattrs")
    unpack(make_tar([Entry(".wh.d", "file"), Entry("d/f", "file", b"z")]), tmp_path / "l")
    assert (tmp_path / "l/d/f").read_bytes() == b"z"
    assert os.getxattr(tmp_path / "l/d", "user.overlay.opaque") == b"y"


def test_device_nodes_skipped_with_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    unpack(make_tar([Entry("dev", "dir"), Entry("dev/null", "chr"), Entry("ok", "file", b"1")]), tmp_path / "l",
           warn=warnings.append)
    assert not os.path.lexists(tmp_path / "l/dev/null")
    assert (tmp_path / "l/ok").exists()
    assert len(warnings) == 1 and "'dev/null'" in warnings[0] and "device" in warnings[0]


def test_xattrs_from_tar_are_not_applied(tmp_path: Path) -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("d")
        ti.type = tarfile.DIRTYPE
        ti.pax_headers = {"SCHILY.xattr.user.overlay.opaque": "y", "SCHILY.xattr.user.overlay.redirect": "/etc"}
        tf.addfile(ti)
    unpack(buf.getvalue(), tmp_path / "l")
    assert os.listxattr(tmp_path / "l/d") == []


# --- hostile tars -----------------------------------------------------------------------------------

HOSTILE = [
    ("dotdot", [Entry("../evil", "file", b"x")], "'../evil'", "'..'"),
    ("dotdot-inner", [Entry("a/../../evil", "file", b"x")], "'a/../../evil'", "'..'"),
    ("absolute", [Entry("/etc/evil", "file", b"x")], "'/etc/evil'", "absolute"),
    ("symlink-parent", [Entry("lnk", "symlink", link="/tmp"), Entry("lnk/evil", "file", b"x")],
     "'lnk/evil'", "symbolic link"),
    ("symlink-parent-rel", [Entry("lnk", "symlink", link="../../.."), Entry("lnk/evil", "file", b"x")],
     "'lnk/evil'", "symbolic link"),
    ("symlink-dir-then-dir", [Entry("d", "symlink", link="/"), Entry("d/etc", "dir")], "'d/etc'", "symbolic link"),
    ("hardlink-abs", [Entry("h", "hardlink", link="/etc/passwd")], "'h'", "absolute"),
    ("hardlink-dotdot", [Entry("h", "hardlink", link="../../etc/passwd")], "'h'", "'..'"),
    ("hardlink-through-symlink", [Entry("l", "symlink", link="/etc"), Entry("h", "hardlink", link="l/passwd")],
     "'h'", "symbolic link"),
    ("hardlink-missing", [Entry("h", "hardlink", link="nope")], "'h'", "does not exist"),
    ("hardlink-dir", [Entry("d", "dir"), Entry("h", "hardlink", link="d")], "'h'", "directory"),
    ("whiteout-dotdot", [Entry(".wh...", "file")], "'.wh...'", "outside"),
    ("whiteout-meta", [Entry(".wh..wh.plnk", "file")], "'.wh..wh.plnk'", "meta"),
    ("whiteout-escape", [Entry("../.wh.etc", "file")], "'../.wh.etc'", "'..'"),
    ("parent-is-file", [Entry("f", "file", b"1"), Entry("f/x", "file", b"2")], "'f/x'", "not a directory"),
]


@pytest.mark.parametrize("name,entries,entry,why", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_tar_refused(tmp_path: Path, name: str, entries: list[Entry], entry: str, why: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "l"
    with pytest.raises(LayerError) as ei:
        unpack(make_tar(entries), dest, label="layer 1/1")
    msg = str(ei.value)
    assert entry in msg and why in msg and msg.startswith("layer 1/1: ")
    assert not (tmp_path / "evil").exists() and not (outside / "evil").exists()
    assert not os.path.exists("/tmp/evil")


def test_hardlink_escape_through_earlier_layer(tmp_path: Path) -> None:
    """Layer 1 makes `l` a symlink to /; layer 2 hardlinks to l/etc/passwd: refused, names the entry."""
    lower = tmp_path / "l1"
    unpack(make_tar([Entry("l", "symlink", link="/")]), lower)
    with pytest.raises(LayerError, match=r"'h'.*symbolic link 'l' in earlier layer 1"):
        unpack(make_tar([Entry("h", "hardlink", link="l/etc/passwd")]), tmp_path / "l2", lower_dirs=[str(lower)])


def test_hardlink_to_earlier_layer_is_copied(tmp_path: Path) -> None:
    lower = tmp_path / "l1"
    unpack(make_tar([Entry("d", "dir"), Entry("d/f", "file", b"data", mode=0o640)]), lower)
    unpack(make_tar([Entry("h", "hardlink", link="d/f")]), tmp_path / "l2", lower_dirs=[str(lower)])
    h = tmp_path / "l2/h"
    assert h.read_bytes() == b"data"
    assert os.stat(h).st_ino != os.stat(lower / "d/f").st_ino


def test_hardlink_to_whited_out_file_refused(tmp_path: Path) -> None:
    l1, l2 = tmp_path / "l1", tmp_path / "l2"
    unpack(make_tar([Entry("f", "file", b"data")]), l1)
    unpack(make_tar([Entry(".wh.f", "file")]), l2)
    with pytest.raises(LayerError, match="does not exist"):
        unpack(make_tar([Entry("h", "hardlink", link="f")]), tmp_path / "l3", lower_dirs=[str(l1), str(l2)])


def test_symlink_into_earlier_layer_is_not_followed(tmp_path: Path) -> None:
    """A directory in this layer shadows an earlier layer's symlink; nothing is written through it."""
    lower = tmp_path / "l1"
    target = tmp_path / "target"
    target.mkdir()
    unpack(make_tar([Entry("lib", "symlink", link=str(target))]), lower)
    unpack(make_tar([Entry("lib/x", "file", b"1")]), tmp_path / "l2", lower_dirs=[str(lower)])
    assert not (target / "x").exists()
    assert (tmp_path / "l2/lib/x").read_bytes() == b"1"


def test_overlay_mount_of_layers(tmp_path: Path) -> None:
    """The layer dirs really work as overlay lowers (in a user namespace): whiteouts hide, opaque hides."""
    if not overlay_supported(tmp_path):
        pytest.skip("this filesystem refuses 0/0 whiteouts or user xattrs")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) not installed")
    dirs = []
    for i, layer in enumerate(multi_layers()):
        d = tmp_path / f"l{i}"
        unpack(layer, d, lower_dirs=[str(x) for x in dirs])
        dirs.append(d)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lower = ":".join(str(d) for d in reversed(dirs))
    script = (f"mount -t overlay overlay -o userxattr,lowerdir={lower} {mnt} && "
              f"ls -a {mnt}/etc {mnt}/data/dir && cat {mnt}/etc/hello {mnt}/data/keep")
    p = subprocess.run([unshare, "-Urm", "sh", "-c", script], capture_output=True, text=True)
    if p.returncode != 0 and ("Operation not permitted" in p.stderr or "unshare failed" in p.stderr):
        pytest.skip(f"no unprivileged overlay here: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr
    listing = p.stdout.split()
    assert "gone" not in listing and "hello" in listing and "passwd" in listing
    assert "old" not in listing and "new" in listing
    assert "hello\nkeep\n" in p.stdout


def test_single_id_ownership_keeps_removability(tmp_path: Path) -> None:
    unpack(make_tar([Entry("ro", "dir", mode=0o000), Entry("ro/f", "file", b"1", mode=0o000)]), tmp_path / "l")
    assert os.access(tmp_path / "l/ro/f", os.R_OK)
    from sandbox.image.fsutil import rmtree_writable

    rmtree_writable(str(tmp_path / "l"))
    assert not (tmp_path / "l").exists()
    assert SINGLE_ID.name == "single"


MAPPED_SCRIPT = r"""
import io, json, os, sys
from sandbox.image.errors import LayerError
from sandbox.image.unpack import MappedOwnership, UnpackOptions, unpack_layer
tar, dest, bad = sys.argv[1], sys.argv[2], sys.argv[3]
os.mkdir(dest)
unpack_layer(open(tar, "rb"), dest, UnpackOptions(owner=MappedOwnership(), label="layer m"))
out = {}
for root, dirs, files in os.walk(dest):
    for n in dirs + files:
        p = os.path.join(root, n)
        st = os.lstat(p)
        out[os.path.relpath(p, dest)] = [st.st_uid, st.st_gid, st.st_mode & 0o7777]
os.mkdir(dest + "-bad")
try:
    unpack_layer(open(bad, "rb"), dest + "-bad", UnpackOptions(owner=MappedOwnership(), label="layer b"))
except LayerError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_mapped_ownership_in_user_namespace(tmp_path: Path) -> None:
    """MappedOwnership keeps the tar's owners when run inside a user namespace with a subuid range (what
    the launcher does); an id outside the range fails naming the entry."""
    import json
    import sys

    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("newuidmap") is None:
        pytest.skip("needs unshare (util-linux) and newuidmap (uidmap)")
    from sbx_image_testlib import SANDBOX_PATH

    tar = tmp_path / "owners.tar"
    tar.write_bytes(make_tar([
        Entry("home", "dir"), Entry("home/user", "dir", mode=0o750, uid=1000, gid=1000),
        Entry("home/user/f", "file", b"x", mode=0o4755, uid=1000, gid=100),
        Entry("srv", "dir", uid=33, gid=33), Entry("srv/l", "symlink", link="/etc", uid=33, gid=33),
        Entry("root-file", "file", b"r", mode=0o600),
    ]))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(make_tar([Entry("far", "file", b"x", uid=1_000_000)]))
    dest = tmp_path / "layer"
    script = f"{sys.executable} -c '{MAPPED_SCRIPT}' {tar} {dest} {bad}; rc=$?; rm -rf {dest} {dest}-bad; exit $rc"
    env = dict(os.environ, PYTHONPATH=SANDBOX_PATH)
    p = subprocess.run([unshare, "--map-auto", "--map-root-user", "sh", "-c", script], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=60)
    if p.returncode != 0 and any(w in p.stderr for w in ("unshare", "newuidmap", "newgidmap")):
        pytest.skip(f"no subordinate id range usable for this user: {p.stderr.strip()[:200]}")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["home/user"] == [1000, 1000, 0o750]
    assert got["home/user/f"] == [1000, 100, 0o4755]  # setuid kept: chmod after chown
    assert got["srv"][:2] == [33, 33] and got["srv/l"][:2] == [33, 33]
    assert got["root-file"] == [0, 0, 0o600]
    assert "'far'" in got["error"] and "1000000" in got["error"]
