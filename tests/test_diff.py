"""The native layer diff (csrc/sb_diff.c through sandbox.image.layer), on real overlay upperdirs.

Upperdirs come from the kernel: a test mounts an overlay inside ``unshare -Urm`` (the same rootless
mount sbx uses: ``userxattr``, no redirect_dir, no metacopy) with its upper on a real directory, makes its
changes in the merged view with ordinary tools, copies the merged view out (``cp -a``) and unmounts. So
whiteouts are real 0/0 devices and opaque directories carry real ``user.overlay.opaque`` xattrs.

Checks: the change list, the tar (read by Python's tarfile and GNU tar), applying it over the lower with
whiteout semantics gives the merged view, the fallback two-tree compare gives the same change list and the
same bytes, determinism, SOURCE_DATE_EPOCH, digests, xattrs, id maps, errors that name the path. Runs as
root and as an unprivileged user.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox.image import layer
from sandbox.image.errors import LayerError

MOUNT_OPTS = "userxattr,redirect_dir=nofollow,metacopy=off"
OLD = 1_600_000_000  # mtime of every entry of the lower tree (plus some nanoseconds)

L1, L2, L3 = "d" * 120, "e" * 130, "f" * 140  # one path of 120 + 130 + 140 + 7 > 255 bytes
CAP_V2 = bytes.fromhex("01000002" "00100000" "00000000" "00000000" "00000000")  # cap_net_bind_service+e

# Changes made in the merged view.  IDENT avoids the two things the fallback writes differently from
# the overlay walk (a replaced directory and a new hard link to an unchanged lower file), so that the
# two tars must be the same bytes; FULL adds the replaced directory.
IDENT = r"""
set -e
printf 'root:x:0:0:root:/root:/bin/bash\n' > etc/passwd
rm etc/group
echo new > etc/newfile
rm -rf usr/share/doc/a
mv opt/app/config opt/app/config.new
mv opt/app/bin opt/app/bin2
ln -sfn ../../etc/passwd home/user/link
ln -s /nonexistent/target dangling
mkdir hl2 && echo h > hl2/three && ln hl2/three hl2/four
chmod u+s bin/tool
chmod 0755 bin/su
mkdir newempty
rmdir empty
mkdir -p "deep/$L1/$L2" && echo deep > "deep/$L1/$L2/$L3"
ln "deep/$L1/$L2/$L3" hlong
ln -s "deep/$L1/$L2/$L3" longlink
mkdir unicodé && echo u > 'unicodé/ファイル名' && echo e > 'unicodé/emoji-😀'
mkfifo fifo
"""
FULL = IDENT + r"""
rm -rf var/lib/data && mkdir var/lib/data && echo fresh > var/lib/data/fresh
"""

LONG = f"deep/{L1}/{L2}/{L3}"
EXPECTED_FULL = [
    ("C", "/bin"), ("C", "/bin/su"), ("C", "/bin/tool"),
    ("A", "/dangling"),
    ("A", "/deep"), ("A", f"/deep/{L1}"), ("A", f"/deep/{L1}/{L2}"), ("A", f"/{LONG}"),
    ("D", "/empty"),
    ("C", "/etc"), ("D", "/etc/group"), ("A", "/etc/newfile"), ("C", "/etc/passwd"),
    ("A", "/fifo"),
    ("A", "/hl2"), ("A", "/hl2/four"), ("A", "/hl2/three"),
    ("A", "/hlong"),
    ("C", "/home"), ("C", "/home/user"), ("C", "/home/user/link"),
    ("A", "/longlink"),
    ("A", "/newempty"),
    ("C", "/opt"), ("C", "/opt/app"), ("D", "/opt/app/bin"), ("A", "/opt/app/bin2"),
    ("A", "/opt/app/bin2/run"), ("D", "/opt/app/config"), ("A", "/opt/app/config.new"),
    ("A", "/unicodé"), ("A", "/unicodé/emoji-😀"), ("A", "/unicodé/ファイル名"),
    ("C", "/usr"), ("C", "/usr/share"), ("C", "/usr/share/doc"), ("D", "/usr/share/doc/a"),
    ("C", "/var"), ("C", "/var/lib"), ("C", "/var/lib/data"), ("A", "/var/lib/data/fresh"),
    ("D", "/var/lib/data/sub"), ("D", "/var/lib/data/x"), ("D", "/var/lib/data/y"),
]
EXPECTED_IDENT = [c for c in EXPECTED_FULL if not c[1].startswith("/var")]


# --- building trees and upperdirs -------------------------------------------------------------------

def build_lower(root: Path) -> Path:
    files = {
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": (b"root:x:0:\n", 0o644),
        "etc/hosts": (b"127.0.0.1 localhost\n", 0o644),
        "bin/tool": (b"\x7fELF tool\n" * 100, 0o755),
        "bin/su": (b"\x7fELF su\n", 0o4755),
        "usr/share/doc/a/README": (b"a\n", 0o644),
        "usr/share/doc/a/sub/more": (b"more\n", 0o644),
        "usr/share/doc/b/README": (b"b\n", 0o644),
        "var/lib/data/x": (b"x\n", 0o600),
        "var/lib/data/y": (b"y" * 5000, 0o644),
        "var/lib/data/sub/z": (b"z\n", 0o644),
        "opt/app/config": (b"cfg\n", 0o640),
        "opt/app/bin/run": (b"#!/bin/sh\n", 0o755),
        "hl/one": (b"linked\n", 0o644),
    }
    for i in range(5):
        files[f"keep/k{i}"] = (os.urandom(100 + 700 * i), 0o644)
    for rel, (data, mode) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(mode)
    os.link(root / "hl/one", root / "hl/two")
    (root / "home/user").mkdir(parents=True)
    os.symlink("../../etc/hosts", root / "home/user/link")
    (root / "empty").mkdir()
    (root / "var/empty").mkdir()
    set_times(root, OLD)
    return root


def set_times(root: Path, sec: int) -> None:
    ns = sec * 10**9 + 123456789
    paths = [root]
    for dp, dns, fns in os.walk(root):
        paths += [Path(dp) / n for n in dns + fns]
    for p in sorted(paths, key=lambda p: -len(p.parts)):
        os.utime(p, ns=(ns, ns), follow_symlinks=False)


def overlay(tmp: Path, lowers: list[Path], script: str, name: str = "ov") -> SimpleNamespace:
    """Mount lowers (topmost first) + a fresh upper, run `script` in the merged view, copy the merged view
    out, unmount.  Returns the dirs."""
    d = tmp / name
    for sub in ("upper", "work", "mnt", "merged"):
        (d / sub).mkdir(parents=True)
    env = dict(os.environ, L1=L1, L2=L2, L3=L3, LOWER=":".join(map(str, lowers)), D=str(d), LC_ALL="C.UTF-8")
    sh = ('mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$D/upper,workdir=$D/work,' + MOUNT_OPTS
          + '" "$D/mnt" && cd "$D/mnt" && (' + script + '\n) && cd / && cp -a "$D/mnt/." "$D/merged/"; '
          'rc=$?; cd /; umount "$D/mnt"; exit $rc')
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", sh], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise AssertionError(f"overlay session failed ({r.returncode}): {r.stderr}")
    return SimpleNamespace(lowers=lowers, upper=d / "upper", merged=d / "merged", dir=d)


@pytest.fixture(scope="session")
def overlay_ok(tmp_path_factory) -> None:
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed")
    d = tmp_path_factory.mktemp("probe")
    (d / "l").mkdir()
    try:
        overlay(d, [d / "l"], "touch x")
    except AssertionError as e:
        pytest.skip(f"cannot mount a rootless overlay here: {e}")


@pytest.fixture(scope="session")
def lower(tmp_path_factory) -> Path:
    return build_lower(tmp_path_factory.mktemp("lower") / "root")


@pytest.fixture(scope="session")
def full(overlay_ok, lower, tmp_path_factory) -> SimpleNamespace:
    return overlay(tmp_path_factory.mktemp("full"), [lower], FULL)


@pytest.fixture(scope="session")
def ident(overlay_ok, lower, tmp_path_factory) -> SimpleNamespace:
    return overlay(tmp_path_factory.mktemp("ident"), [lower], IDENT)


# --- reading and applying tars -------------------------------------------------------------------------

def copy_tree(src: Path, dst: Path) -> Path:
    """cp -a: keeps hard links, times and modes (shutil.copytree does not keep hard links)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return tf.getmembers()


def by_name(path: Path) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in members(path)}


def rmtree(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.unlink(p)


def apply_layer(tar_path: Path, dest: Path) -> None:
    """Extract a layer over `dest` with OCI whiteout semantics (what an image unpacker does)."""
    dirs = []
    with tarfile.open(tar_path) as tf:
        for m in tf:
            name = m.name.rstrip("/")
            parent, base = os.path.split(name)
            pdir = os.path.join(dest, parent)
            if base == ".wh..wh..opq":
                for n in os.listdir(pdir):
                    rmtree(os.path.join(pdir, n))
                continue
            if base.startswith(".wh."):
                rmtree(os.path.join(pdir, base[4:]))
                continue
            p = os.path.join(dest, name)
            if os.path.lexists(p) and not (m.isdir() and os.path.isdir(p) and not os.path.islink(p)):
                rmtree(p)
            if m.isdir():
                os.makedirs(p, exist_ok=True)
                dirs.append((p, m))
                continue
            if m.isreg():
                with open(p, "wb") as f:
                    shutil.copyfileobj(tf.extractfile(m), f)  # type: ignore[arg-type]
                os.chmod(p, m.mode)
            elif m.issym():
                os.symlink(m.linkname, p)
            elif m.islnk():
                os.link(os.path.join(dest, m.linkname), p)
                continue
            elif m.isfifo():
                os.mkfifo(p, m.mode)
            else:
                continue
            os.utime(p, (m.mtime, m.mtime), follow_symlinks=False)
    for p, m in reversed(dirs):
        os.chmod(p, m.mode)


def listing(root: Path, *, dir_times: bool = False) -> dict[str, tuple]:
    """What a tree holds, comparable across copies: type, permission bits, content, link target,
    whole-second mtime (not for directories unless asked), and which names share an inode."""
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            mtime = int(st.st_mtime) if (dir_times or not stat.S_ISDIR(st.st_mode)) else None
            if stat.S_ISLNK(st.st_mode):
                mtime = None
            out[rel] = (kind, stat.S_IMODE(st.st_mode), extra, mtime)
    out["<links>"] = tuple(sorted(tuple(sorted(v)) for v in inodes.values() if len(v) > 1))
    return out


def tar_tv(path: Path) -> list[str]:
    r = subprocess.run(["tar", "--quoting-style=literal", "-tvf", str(path)], capture_output=True,
                       env=dict(os.environ, LC_ALL="C.UTF-8"), check=True)
    assert r.stderr == b"", r.stderr
    return r.stdout.decode().splitlines()


# --- the change list ----------------------------------------------------------------------------------

def test_changes_native(full):
    assert layer.changes(full.upper, [full.lowers[0]]) == EXPECTED_FULL


def test_changes_fallback_same_as_native(full, ident, lower):
    assert layer.changes(full.merged, base=lower) == EXPECTED_FULL
    assert layer.changes(ident.merged, base=lower) == EXPECTED_IDENT
    assert layer.changes(ident.upper, [lower]) == EXPECTED_IDENT


def test_changes_without_lowers_says_added(full):
    kinds = {p: k for k, p in layer.changes(full.upper)}
    assert kinds["/etc/passwd"] == "A" and kinds["/etc/group"] == "D"
    assert "/var/lib/data/x" not in kinds  # no lowers: nothing known to be hidden by the opaque dir


# --- the tar -----------------------------------------------------------------------------------------

def test_tar_entries(full, tmp_path):
    out = tmp_path / "l.tar"
    layer.write_layer(full.upper, out, lowers=[full.lowers[0]], compression="none")
    ms = members(out)
    names = [m.name for m in ms]
    assert names[:4] == ["bin", "bin/su", "bin/tool", "dangling"]
    assert not any(n.startswith(("./", "/")) for n in names)
    # parents before children
    seen = set()
    for n in names:
        parent = os.path.dirname(n)
        assert parent == "" or parent in seen, n
        seen.add(n)
    m = by_name(out)
    assert m[".wh.empty"].isreg() and m[".wh.empty"].size == 0 and m[".wh.empty"].mode == 0
    assert m[".wh.empty"].mtime == 0 and m[".wh.empty"].uid == 0
    assert m["etc/.wh.group"].isreg()
    assert m["usr/share/doc/.wh.a"].isreg() and "usr/share/doc/a/README" not in m
    i = names.index("var/lib/data")
    assert names[i + 1: i + 3] == ["var/lib/data/.wh..wh..opq", "var/lib/data/fresh"]
    assert not any(n.startswith("var/lib/data/.wh.") and "opq" not in n for n in names)
    assert m["opt/app/.wh.config"].isreg() and m["opt/app/config.new"].isreg()
    assert m["opt/app/.wh.bin"].isreg() and m["opt/app/bin2/run"].mode == 0o755
    assert m["bin/tool"].mode == 0o4755 and m["bin/su"].mode == 0o755
    assert m["home/user/link"].issym() and m["home/user/link"].linkname == "../../etc/passwd"
    assert m["dangling"].linkname == "/nonexistent/target"
    # the first name in walk order carries the body, the next one links to it
    assert m["hl2/four"].isreg() and m["hl2/four"].size == 2
    assert m["hl2/three"].islnk() and m["hl2/three"].linkname == "hl2/four"
    assert m["fifo"].isfifo()
    assert m["newempty"].isdir() and m["etc"].isdir()
    assert m[LONG].isreg() and len(LONG) > 255
    assert m["hlong"].islnk() and m["hlong"].linkname == LONG  # PAX linkpath
    assert m["longlink"].issym() and m["longlink"].linkname == LONG
    assert m["unicodé/ファイル名"].isreg() and m["unicodé/emoji-😀"].isreg()
    for t in ms:
        assert t.uname == "" and t.gname == ""
        assert set(t.pax_headers) <= {"path", "linkpath", "SCHILY.xattr.security.capability"}, t.pax_headers
    uid = os.getuid()
    assert m["etc/newfile"].uid == uid and m["etc/passwd"].uid == uid
    assert m["etc/passwd"].mtime == int(os.lstat(full.upper / "etc/passwd").st_mtime)
    assert m["bin"].mtime == OLD  # copied-up parent: its time is the lower's
    with tarfile.open(out) as tf:
        assert tf.extractfile("etc/passwd").read() == b"root:x:0:0:root:/root:/bin/bash\n"  # type: ignore[union-attr]


def test_gnu_tar_reads_it(full, tmp_path):
    out = tmp_path / "l.tar"
    layer.write_layer(full.upper, out, lowers=[full.lowers[0]], compression="none")
    lines = tar_tv(out)
    names = [m.name for m in members(out)]
    assert len(lines) == len(names)
    for line, name in zip(lines, names, strict=True):
        assert name in line, (line, name)
    assert any(line.endswith(LONG) for line in lines)
    assert any("unicodé/ファイル名" in line for line in lines)
    gz = tmp_path / "l.tgz"
    layer.write_layer(full.upper, gz, lowers=[full.lowers[0]])
    assert len(tar_tv(gz)) == len(names)
    # GNU tar extracts it too (whiteouts are plain empty files to it)
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["tar", "-xf", str(gz), "-C", str(x)], check=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert (x / "unicodé/ファイル名").read_text() == "u\n"
    assert (x / "hl2/three").stat().st_ino == (x / "hl2/four").stat().st_ino


def test_applying_the_layer_gives_the_merged_view(full, lower, tmp_path):
    for compression in ("none", "gzip"):
        out = tmp_path / f"l.{compression}"
        layer.write_layer(full.upper, out, lowers=[lower], compression=compression)
        dest = tmp_path / f"applied-{compression}"
        copy_tree(lower, dest)
        apply_layer(out, dest)
        assert listing(dest) == listing(full.merged)


def test_fallback_gives_the_same_merged_view(full, lower, tmp_path):
    out = tmp_path / "fallback.tar"
    layer.write_layer(full.merged, out, base=lower, compression="none")
    names = [m.name for m in members(out)]
    assert "var/lib/data/.wh..wh..opq" not in names  # per-entry whiteouts instead
    assert {"var/lib/data/.wh.x", "var/lib/data/.wh.y", "var/lib/data/.wh.sub"} <= set(names)
    dest = tmp_path / "applied"
    copy_tree(lower, dest)
    apply_layer(out, dest)
    assert listing(dest) == listing(full.merged)


def test_fallback_writes_the_same_bytes(ident, lower, tmp_path):
    a, b = tmp_path / "native.tar", tmp_path / "fallback.tar"
    ia = layer.write_layer(ident.upper, a, lowers=[lower], compression="none")
    ib = layer.write_layer(ident.merged, b, base=lower, compression="none")
    assert [m.name for m in members(a)] == [m.name for m in members(b)]
    assert a.read_bytes() == b.read_bytes()
    assert ia == ib
    ga = layer.write_layer(ident.upper, tmp_path / "n.tgz", lowers=[lower])
    gb = layer.write_layer(ident.merged, tmp_path / "f.tgz", base=lower)
    assert ga == gb


def test_fallback_prunes_by_inode(lower, tmp_path):
    """A hardlink farm of the base (cp -al) shares every unchanged inode with it."""
    changed = tmp_path / "changed"
    subprocess.run(["cp", "-al", str(lower), str(changed)], check=True)
    assert layer.changes(changed, base=lower) == []
    (changed / "etc/passwd").unlink()
    (changed / "etc/passwd").write_text("new\n")  # a new inode
    os.unlink(changed / "keep/k3")
    assert layer.changes(changed, base=lower) == [("C", "/etc"), ("C", "/etc/passwd"), ("C", "/keep"),
                                                  ("D", "/keep/k3")]


def test_fallback_compares_content_when_times_are_truncated(lower, tmp_path):
    base, changed = tmp_path / "base", tmp_path / "changed"
    shutil.copytree(lower, base, symlinks=True)
    shutil.copytree(lower, changed, symlinks=True)
    for t in (base, changed):
        set_times(t, OLD)
    (changed / "etc/hosts").write_bytes(b"127.0.0.2 localhost\n")  # same size
    for t in (base, changed):
        for p in ("etc/hosts", "etc/passwd"):
            os.utime(t / p, ns=(OLD * 10**9, OLD * 10**9))  # whole seconds, as after a tar round trip
    os.utime(changed / "etc", ns=(OLD * 10**9 + 123456789,) * 2)
    assert layer.changes(changed, base=base) == [("C", "/etc"), ("C", "/etc/hosts")]


# --- several lower layers --------------------------------------------------------------------------

def test_lowers_decide_added_or_changed(overlay_ok, lower, tmp_path):
    one = overlay(tmp_path, [lower], "rm etc/hosts && rm -rf opt/app && echo 1 > new1", "one")
    two = overlay(tmp_path, [one.upper, lower],
                  "echo again > etc/hosts && mkdir opt/app && echo 2 > opt/app/x && echo 2 > new1 && "
                  "rm -rf keep && mkdir keep && echo k > keep/k0", "two")
    got = layer.changes(two.upper, [one.upper, lower])
    assert got == [
        ("C", "/etc"), ("A", "/etc/hosts"),  # whited out by layer one: added again
        ("C", "/keep"), ("C", "/keep/k0"), ("D", "/keep/k1"), ("D", "/keep/k2"), ("D", "/keep/k3"),
        ("D", "/keep/k4"),
        ("C", "/new1"),
        ("C", "/opt"), ("A", "/opt/app"), ("A", "/opt/app/x"),
    ]
    assert layer.changes(two.merged, base=one.merged) == got
    out = tmp_path / "two.tar"
    layer.write_layer(two.upper, out, lowers=[one.upper, lower], compression="none")
    names = [m.name for m in members(out)]
    assert "keep/.wh..wh..opq" in names
    # opt/app was deleted by layer one: the new directory needs no opaque marker
    assert "opt/app/.wh..wh..opq" not in names
    dest = tmp_path / "applied"
    copy_tree(one.merged, dest)
    apply_layer(out, dest)
    assert listing(dest) == listing(two.merged)


def test_unpacked_by_the_store_and_mounted_gives_the_merged_view(full, lower, tmp_path):
    """Round trip through sbx's own unpacker (overlay form) and a kernel overlay of the result."""
    from sandbox.image.unpack import UnpackOptions, unpack_layer
    from sandbox.image.whiteout import FORMAT_OVERLAY, probe_format

    if probe_format(str(tmp_path)) != FORMAT_OVERLAY:
        pytest.skip("this filesystem cannot hold overlay whiteouts")
    out = tmp_path / "l.tgz"
    info = layer.write_layer(full.upper, out, lowers=[lower])
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with open(out, "rb") as f:
        res = unpack_layer(f, str(unpacked), UnpackOptions(lower_dirs=(str(lower),), expected_diff_id=info.diff_id,
                                                           expected_digest=info.digest))
    assert (res.diff_id, res.digest) == (info.diff_id, info.digest)
    view = overlay(tmp_path, [unpacked, lower], "true", "view")
    want, got = listing(full.merged), listing(view.merged)
    assert {k: v[:1] + v[2:3] for k, v in got.items() if k != "<links>"} == \
           {k: v[:1] + v[2:3] for k, v in want.items() if k != "<links>"}


# --- determinism, timestamps, digests ---------------------------------------------------------------

def test_deterministic(full, tmp_path):
    a = layer.write_layer(full.upper, tmp_path / "a.tgz", lowers=[full.lowers[0]])
    for p in full.upper.rglob("*"):  # reading changes atimes, which must not matter
        if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK):
            p.read_bytes()
    b = layer.write_layer(full.upper, tmp_path / "b.tgz", lowers=[full.lowers[0]])
    assert a == b
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()


def test_directory_order_does_not_matter(tmp_path):
    """Two trees with the same content created in opposite orders (different getdents order)."""
    names = [f"n{i:03d}" for i in range(300)]
    trees = []
    for t, order in (("a", names), ("b", names[::-1])):
        root = tmp_path / t
        (root / "sub").mkdir(parents=True)
        for n in order:
            (root / "sub" / n).write_text(n)
        set_times(root, OLD)
        trees.append(root)
    outs = [layer.write_layer(r, tmp_path / f"{r.name}.tar", compression="none") for r in trees]
    assert outs[0] == outs[1]
    assert [m.name for m in members(tmp_path / "a.tar")][1:4] == ["sub/n000", "sub/n001", "sub/n002"]


def test_source_date_epoch(full, tmp_path):
    epoch = 1_700_000_000
    newfile = full.upper / "etc/newfile"
    st = os.lstat(newfile)
    os.utime(newfile, (OLD - 10**8, OLD - 10**8))  # older than the epoch: kept
    try:
        plain = layer.write_layer(full.upper, tmp_path / "p.tgz", lowers=[full.lowers[0]])
        a = layer.write_layer(full.upper, tmp_path / "a.tgz", lowers=[full.lowers[0]], source_date_epoch=epoch)
        b = layer.write_layer(full.upper, tmp_path / "b.tgz", lowers=[full.lowers[0]], source_date_epoch=epoch)
    finally:
        os.utime(newfile, ns=(st.st_atime_ns, st.st_mtime_ns))  # the upper is shared by other tests
    assert a == b and a.diff_id != plain.diff_id
    m = by_name(tmp_path / "a.tgz")
    assert all(t.mtime <= epoch for t in m.values())
    assert m["etc/passwd"].mtime == epoch
    assert m["etc/newfile"].mtime == OLD - 10**8
    assert m["bin"].mtime == OLD
    assert layer.source_date_epoch({"SOURCE_DATE_EPOCH": "1700000000"}) == epoch
    assert layer.source_date_epoch({"SOURCE_DATE_EPOCH": ""}) is None
    with pytest.raises(LayerError):
        layer.source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"})


def test_digests(full, tmp_path):
    raw, gz = tmp_path / "l.tar", tmp_path / "l.tar.gz"
    r = layer.write_layer(full.upper, raw, lowers=[full.lowers[0]], compression="none")
    g = layer.write_layer(full.upper, gz, lowers=[full.lowers[0]], compression="gzip")
    data = raw.read_bytes()
    assert r.diff_id == r.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert r.size == r.tar_size == len(data) and len(data) % 512 == 0
    assert g.diff_id == r.diff_id and g.tar_size == r.tar_size
    assert g.digest == "sha256:" + hashlib.sha256(gz.read_bytes()).hexdigest()
    assert g.size == gz.stat().st_size
    assert gzip.decompress(gz.read_bytes()) == data
    assert gz.read_bytes()[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
    # to an fd and to a writer object: the same bytes
    with open(tmp_path / "fd.tar", "wb") as f:
        assert layer.write_layer(full.upper, f.fileno(), lowers=[full.lowers[0]], compression="none") == r
    chunks: list[bytes] = []

    class W:
        def write(self, b):
            chunks.append(bytes(b))

    assert layer.write_layer(full.upper, W(), lowers=[full.lowers[0]], compression="none") == r
    assert b"".join(chunks) == data
    assert layer.media_type("gzip").endswith("tar+gzip") and layer.media_type("none").endswith(".tar")


def test_gzip_blocks_do_not_depend_on_threads(tmp_path):
    """Several 1 MiB blocks: one deflate stream any gunzip reads, the same bytes with 1 or 4 threads."""
    root = tmp_path / "big"
    root.mkdir()
    (root / "random").write_bytes(os.urandom(1_500_000))
    (root / "text").write_bytes(b"".join(b"line %d of a text file\n" % i for i in range(150_000)))
    set_times(root, OLD)
    raw = layer.write_layer(root, tmp_path / "l.tar", compression="none")
    one = layer.write_layer(root, tmp_path / "1.tgz", threads=1)
    four = layer.write_layer(root, tmp_path / "4.tgz", threads=4)
    assert one == four and one.diff_id == raw.diff_id
    data = (tmp_path / "4.tgz").read_bytes()
    assert data == (tmp_path / "1.tgz").read_bytes()
    assert gzip.decompress(data) == (tmp_path / "l.tar").read_bytes()
    assert len(data) < raw.size * 0.6
    subprocess.run(["gzip", "-t", str(tmp_path / "4.tgz")], check=True)


def test_put_layer_into_the_store(full, tmp_path):
    from sandbox.image.cas import BlobStore

    blobs = BlobStore(str(tmp_path / "store"))
    blobs.init()
    info = layer.put_layer(blobs, full.upper, lowers=[full.lowers[0]])
    assert blobs.has(info.digest) and blobs.size(info.digest) == info.size
    assert blobs.verify(info.digest)
    assert os.listdir(blobs.tmp_dir) == []
    again = layer.put_layer(blobs, full.upper, lowers=[full.lowers[0]])  # idempotent
    assert again == info


# --- xattrs, ids, special files ---------------------------------------------------------------------

def test_xattrs_filtered_and_capability_kept(overlay_ok, lower, tmp_path):
    script = (f"{sys.executable} -c \"import os; os.setxattr('bin/tool', 'security.capability', "
              f"bytes.fromhex('{CAP_V2.hex()}'))\"")
    try:
        ov = overlay(tmp_path, [lower], script, "cap")
    except AssertionError as e:
        pytest.skip(f"cannot set security.capability in a user namespace here: {e}")
    try:
        os.setxattr(ov.upper / "bin", "user.sbx-test", b"x")  # not an overlay xattr: dropped too
    except OSError as e:
        pytest.skip(f"no user xattrs on this filesystem: {e}")
    on_disk = os.getxattr(ov.upper / "bin/tool", "security.capability")
    out = tmp_path / "cap.tar"
    layer.write_layer(ov.upper, out, lowers=[lower], compression="none")
    m = by_name(out)
    with tarfile.open(out, encoding="utf-8") as tf:
        rec = tf.getmember("bin/tool").pax_headers["SCHILY.xattr.security.capability"]
    assert rec.encode("utf-8", "surrogateescape") == on_disk
    assert m["bin"].pax_headers == {}  # user.overlay.origin/impure and user.* are not copied
    # with the container's id map, a namespaced (v3) capability becomes the v2 one the container sees
    uid, gid = os.getuid(), os.getgid()
    out2 = tmp_path / "cap2.tar"
    layer.write_layer(ov.upper, out2, lowers=[lower], compression="none",
                      uid_map=[{"containerID": 0, "hostID": uid, "size": 1}], gid_map=[(0, gid, 1)])
    with tarfile.open(out2, encoding="utf-8") as tf:
        t = tf.getmember("bin/tool")
        rec = t.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
    assert rec == CAP_V2
    assert (t.uid, t.gid) == (0, 0)


def test_id_maps(full, tmp_path):
    uid, gid = os.getuid(), os.getgid()
    out = tmp_path / "m.tar"
    layer.write_layer(full.upper, out, lowers=[full.lowers[0]], compression="none",
                      uid_map=[(0, uid, 1), (1, 200000, 65536)], gid_map=[(0, gid, 1)])
    for t in members(out):
        if not t.name.rsplit("/", 1)[-1].startswith(".wh."):
            assert (t.uid, t.gid) == (0, 0), t.name
    with pytest.raises(LayerError, match="not in the id map") as ei:
        layer.write_layer(full.upper, tmp_path / "bad.tar", lowers=[full.lowers[0]], uid_map=[(0, uid + 1, 1)])
    assert str(full.upper) in str(ei.value)
    assert not (tmp_path / "bad.tar").exists()  # a failed write leaves nothing behind


def test_special_files_and_manual_whiteouts(tmp_path):
    """Whiteout forms the kernel may leave (xattr whiteouts, trusted.* as root), sockets, big ids."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "gone-dir/sub").mkdir(parents=True)
    (lower / "opq").mkdir()
    (lower / "opq/old").write_text("old")
    (lower / "xwh").write_text("x")
    upper.mkdir()
    (upper / "xwh").write_bytes(b"")
    try:
        os.setxattr(upper / "xwh", "user.overlay.whiteout", b"")
    except OSError as e:
        pytest.skip(f"no user xattrs here: {e}")
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "user.overlay.opaque", b"y")
    (upper / "opq/new").write_text("n")
    (upper / "fresh").mkdir()
    os.setxattr(upper / "fresh", "user.overlay.opaque", b"y")  # not in a lower: no marker
    (upper / "notopq").mkdir()
    os.setxattr(upper / "notopq", "user.overlay.opaque", b"x")  # "x": has xattr whiteouts, not opaque
    os.mkfifo(upper / "fifo")
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(upper / "sock"))
    s.close()
    ts = {}
    if os.geteuid() == 0:
        (upper / "trusted").mkdir()
        (lower / "trusted").mkdir()
        os.setxattr(upper / "trusted", "trusted.overlay.opaque", b"y")
        os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        (upper / "bigid").write_text("b")
        os.chown(upper / "bigid", 3_000_000, 4_000_000)
        ts["bigid"] = True
    out = tmp_path / "s.tar"
    layer.write_layer(upper, out, lowers=[lower], compression="none")
    m = by_name(out)
    assert m[".wh.xwh"].isreg() and "xwh" not in m
    assert "opq/.wh..wh..opq" in m and "fresh/.wh..wh..opq" not in m and "notopq/.wh..wh..opq" not in m
    assert m["fifo"].isfifo() and "sock" not in m
    assert layer.changes(upper, [lower]) == [
        ("A", "/bigid")] * bool(ts) + [
        ("A", "/fifo"), ("A", "/fresh"), ("A", "/notopq"),
    ] + [("A", "/null")] * bool(ts) + [
        ("C", "/opq"), ("A", "/opq/new"), ("D", "/opq/old"),
    ] + [("C", "/trusted")] * bool(ts) + [("D", "/xwh")]
    if ts:
        assert "trusted/.wh..wh..opq" in m
        assert m["null"].ischr() and (m["null"].devmajor, m["null"].devminor) == (1, 3)
        assert (m["bigid"].uid, m["bigid"].gid) == (3_000_000, 4_000_000)
        assert m["bigid"].pax_headers == {"uid": "3000000", "gid": "4000000"}
    assert tar_tv(out)


def test_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "u"
    root.mkdir()
    bad = os.fsencode(str(root)) + b"/caf\xe9"  # Latin-1, not UTF-8
    with open(bad, "wb") as f:
        f.write(b"x")
    os.symlink(b"caf\xe9", os.fsencode(str(root)) + b"/link\xff")
    out = tmp_path / "n.tar"
    layer.write_layer(root, out, compression="none")
    with tarfile.open(out, encoding="utf-8", errors="surrogateescape") as tf:
        names = {os.fsencode(m.name): m for m in tf}
    assert set(names) == {b"caf\xe9", b"link\xff"}
    assert os.fsencode(names[b"link\xff"].linkname) == b"caf\xe9"
    assert layer.changes(root) == [("A", "/" + os.fsdecode(b"caf\xe9")), ("A", "/" + os.fsdecode(b"link\xff"))]
    r = subprocess.run(["tar", "--quoting-style=escape", "-tf", str(out)], capture_output=True, check=True,
                       env=dict(os.environ, LC_ALL="C"))
    assert r.stdout.splitlines() == [b"caf\\351", b"link\\377"] and r.stderr == b""


def test_unreadable_files_are_read(overlay_ok, lower, tmp_path):
    ov = overlay(tmp_path, [lower], "echo secret > shadow && chmod 000 shadow && mkdir locked && "
                                    "echo in > locked/f && chmod 000 locked", "perm")
    out = tmp_path / "p.tar"
    layer.write_layer(ov.upper, out, lowers=[lower], compression="none")
    with tarfile.open(out) as tf:
        assert tf.extractfile("shadow").read() == b"secret\n"  # type: ignore[union-attr]
        assert tf.getmember("shadow").mode == 0 and tf.getmember("locked").mode == 0
        assert tf.extractfile("locked/f").read() == b"in\n"  # type: ignore[union-attr]
    assert stat.S_IMODE(os.lstat(ov.upper / "shadow").st_mode) == 0  # modes restored
    assert stat.S_IMODE(os.lstat(ov.upper / "locked").st_mode) == 0
    os.chmod(ov.upper / "locked", 0o700)  # so that pytest can clean up


# --- errors --------------------------------------------------------------------------------------------

def test_refuses_wh_names(tmp_path):
    (tmp_path / "u/etc").mkdir(parents=True)
    (tmp_path / "u/etc/.wh.evil").write_text("")
    with pytest.raises(LayerError, match=r"\.wh\.") as ei:
        layer.write_layer(tmp_path / "u", tmp_path / "x.tar")
    assert "u/etc/.wh.evil" in str(ei.value)
    with pytest.raises(LayerError, match=r"\.wh\."):
        layer.changes(tmp_path / "u")
    base = tmp_path / "b"
    base.mkdir()
    with pytest.raises(LayerError, match=r"u/etc/\.wh\.evil"):
        layer.write_layer(tmp_path / "u", tmp_path / "y.tar", base=base)


def test_refuses_redirect_dir(tmp_path):
    (tmp_path / "u/moved").mkdir(parents=True)
    try:
        os.setxattr(tmp_path / "u/moved", "user.overlay.redirect", b"/orig")
    except OSError as e:
        pytest.skip(f"no user xattrs here: {e}")
    with pytest.raises(LayerError, match="redirect") as ei:
        layer.write_layer(tmp_path / "u", tmp_path / "x.tar")
    assert "u/moved" in str(ei.value)


def test_missing_root(tmp_path):
    with pytest.raises(LayerError, match="nope"):
        layer.write_layer(tmp_path / "nope", tmp_path / "x.tar")
    with pytest.raises(LayerError, match="nope"):
        layer.changes(tmp_path / "nope")
    with pytest.raises(LayerError, match="compression"):
        layer.write_layer(tmp_path, tmp_path / "x.tar", compression="lz4")


def test_sink_errors_stop_the_walker(full):
    class Boom(Exception):
        pass

    class W:
        n = 0

        def write(self, b):
            raise Boom()

    with pytest.raises(Boom):
        layer.write_layer(full.upper, W(), lowers=[full.lowers[0]], compression="none")
    # and the next diff works (no thread or buffer left behind)
    assert layer.changes(full.upper, [full.lowers[0]]) == EXPECTED_FULL
