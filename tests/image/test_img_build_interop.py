"""`sbx build` against its peers (issue 4, section 5): the same Dockerfile built by buildah and by sbx gives
the same files, and an sbx-built image pushed to a loopback registry is read by skopeo.

* One multi-step Dockerfile (COPY of files with several modes, an executable and a directory, ADD of a
  local tar, WORKDIR, RUN steps that create files, a symlink, a hardlink, an empty dir, a replaced
  directory, long and unicode names, that delete files of the base, chmod 4755 / 2750 / 1777, and, where
  sbx keeps owners, chown to 1000:1000, COPY --chown and a RUN as USER 1000) is built from the same
  busybox base by `buildah bud --isolation chroot` and by `sbx build`.  The base is an OCI layout made
  offline by sbx_image_testlib (no sbx code), loaded with `sbx load`, written with `sbx save` as a
  docker-archive and pulled from there by `buildah pull docker-archive:...`.
* Both results are flattened and listed: path, type, mode (with setuid/setgid/sticky), uid, gid, symlink
  target, sha256 of the content and which names are hardlinks of each other; never mtimes.  The sbx side is
  `sbx export`; the buildah side is buildah's own mount of a working container, tarred inside
  `buildah unshare` (so owners are what buildah stored, independently of sbx).
* Also: sbx's layers as buildah reads them (`sbx save` -> `buildah pull` -> buildah's own listing), and
  buildah's image as sbx reads it (`buildah push oci-archive:` -> `sbx load` -> `sbx export`).
* sbx-built image pushed with `sbx push`; `skopeo inspect` shows the local manifest digest, and
  `skopeo copy` to an OCI directory succeeds.

Rootless buildah needs a subordinate id range: as a user without one (sbxnosub) the buildah tests skip.
sbx keeps other owners than root only with a range (README, "How rootless works here"), so the chown
parts of the Dockerfile are left out where sbx runs with a single mapped id (no range; also root without a
range in /etc/subuid).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from sbx_image_testlib import SANDBOX_PATH, Entry, build_image, busybox_entries, find_binary, make_tar, skopeo, write_layout
from sbxtest import has_subid_range  # tests/helpers, on sys.path by tests/conftest.py

BASE = "localhost/sbx-interop-base:1"
APPLETS = ("sh", "ls", "cat", "true", "echo", "id", "mkdir", "ln", "rm", "chmod", "chown", "touch", "mv",
           "printf", "mkfifo")
LONG_DIR = "d" * 120
LONG_FILE = "f" * 140

# Left in every image by `buildah bud --isolation chroot`: the mount points of its RUN sandbox (empty
# directories /dev, /proc, /sys, /run and empty files /etc/hostname, /etc/hosts, /etc/resolv.conf, mode
# 0755).  Docker and sbx keep them out of the image (sbx mounts them over an init layer that is not part of
# the image).  They are dropped from buildah's listing, only if they are empty and sbx has no such name.
BUILDAH_MOUNT_POINTS = {"dev": "dir", "proc": "dir", "sys": "dir", "run": "dir",
                        "etc/hostname": "file", "etc/hosts": "file", "etc/resolv.conf": "file"}
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def owners_kept() -> bool:
    """Whether sbx keeps owners other than root in what it builds: only with a subuid range (helper
    mapping); without one every file is root's (single mapped id, also for root itself)."""
    return has_subid_range()


# --- listings ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    type: str          # file, dir, symlink, fifo, chr, blk
    mode: int          # permission bits with setuid/setgid/sticky
    uid: int
    gid: int
    data: str          # sha256 of a file's content, a symlink's target, "major,minor" of a device

    def __str__(self) -> str:
        return f"{self.type} {self.mode:04o} {self.uid}:{self.gid} {self.data[:16] if self.type == 'file' else self.data}"


@dataclass
class Listing:
    items: dict[str, Item]
    hardlinks: set[frozenset[str]]     # groups of names that are one inode

    def drop(self, names: dict[str, str], unless_in: Listing) -> list[str]:
        dropped = []
        for name, kind in names.items():
            it = self.items.get(name)
            if it is None or name in unless_in.items or it.type != kind:
                continue
            if kind == "dir" and any(n.startswith(name + "/") for n in self.items):
                continue
            if kind == "file" and it.data != EMPTY_SHA:
                continue
            del self.items[name]
            dropped.append(name)
        return dropped


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def listing_of_tar(f: IO[bytes]) -> Listing:
    items: dict[str, Item] = {}
    links: dict[str, set[str]] = {}
    with tarfile.open(fileobj=f, mode="r|") as tf:
        for ti in tf:
            name = _norm(ti.name)
            if name in ("", "."):
                continue  # the root directory: buildah's tar has it, sbx export has not
            base = os.path.basename(name)
            assert not base.startswith(".wh."), f"whiteout {name} in a flattened tree"
            mode = ti.mode & 0o7777
            if ti.isreg():
                src = tf.extractfile(ti)
                assert src is not None
                h = hashlib.sha256()
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                items[name] = Item("file", mode, ti.uid, ti.gid, h.hexdigest())
            elif ti.islnk():
                target = _norm(ti.linkname)
                assert target in items, f"hardlink {name} -> {target} before its target"
                items[name] = items[target]
                group = links.get(target) or {target}
                group.add(name)
                for n in group:
                    links[n] = group
            elif ti.issym():
                items[name] = Item("symlink", 0o777, ti.uid, ti.gid, ti.linkname)
            elif ti.isdir():
                items[name] = Item("dir", mode, ti.uid, ti.gid, "")
            elif ti.isfifo():
                items[name] = Item("fifo", mode, ti.uid, ti.gid, "")
            elif ti.ischr() or ti.isblk():
                items[name] = Item("chr" if ti.ischr() else "blk", mode, ti.uid, ti.gid, f"{ti.devmajor},{ti.devminor}")
            else:
                raise AssertionError(f"unexpected tar entry type {ti.type!r} for {name}")
    return Listing(items, {frozenset(g) for g in links.values()})


def listing_of_file(path: Path) -> Listing:
    with open(path, "rb") as f:
        return listing_of_tar(f)


def assert_same(got: Listing, want: Listing, got_name: str, want_name: str) -> None:
    lines = []
    for name in sorted(set(got.items) | set(want.items)):
        a, b = got.items.get(name), want.items.get(name)
        if a != b:
            lines.append(f"  /{name}: {got_name}: {a or '-'}   {want_name}: {b or '-'}")
    if got.hardlinks != want.hardlinks:
        lines.append(f"  hardlinks: {got_name}: {sorted(map(sorted, got.hardlinks))}   "
                     f"{want_name}: {sorted(map(sorted, want.hardlinks))}")
    assert not lines, f"{got_name} and {want_name} differ ({len(lines)}):\n" + "\n".join(lines)


# --- the build ----------------------------------------------------------------------------------------

def base_layout(path: Path) -> Path:
    """A busybox base (independent of sbx) with applets for the RUN steps and files to delete."""
    ents = [e for e in busybox_entries() if not (e.type == "symlink" and e.name.startswith("bin/"))]
    ents += [Entry(f"bin/{a}", "symlink", link="busybox") for a in APPLETS]
    ents += [Entry("etc/group", "file", b"root:x:0:\n"), Entry("etc/motd", "file", b"delete me\n"),
             Entry("usr", "dir"), Entry("usr/share", "dir"), Entry("usr/share/doc", "dir"),
             Entry("usr/share/doc/old", "file", b"old\n"), Entry("usr/share/doc/keep", "dir"),
             Entry("srv", "dir", mode=0o750), Entry("srv/replaced", "dir"), Entry("srv/replaced/old", "file", b"o\n")]
    img = build_image([make_tar(ents)], cmd=["/bin/sh"], env=["PATH=/bin"])
    return write_layout(path, [(img, "1")])


def dockerfile(owners: bool) -> str:
    run_owners = """
RUN mkdir /home && echo u > /home/user && mkdir /home/sub && chown -R 1000:1000 /home \\
    && chown 1000:1000 /data/f600 && chown 0:1000 /srv && chown -h 1000:1000 /opt/app/link
USER 1000:1000
RUN echo by-user > /home/by-user && mkdir /home/userdir && chmod 700 /home/userdir
USER root
COPY --chown=1000:1000 f644 /home/copied
COPY --chown=1000:1000 dir /home/sub/dir/
""" if owners else ""
    return f"""\
FROM {BASE}
COPY f644 f600 run.sh /data/
COPY run.sh /usr/local/bin/run
COPY dir /data/dir/
COPY --chmod=0640 f644 /data/chmodded
ADD payload.tar /opt/unpacked/
WORKDIR /work/dir
RUN echo made > made-here
RUN mkdir -p /opt/app/empty /opt/app/tree/sub && echo hello > /opt/app/file && ln -s file /opt/app/link \\
    && ln -s /nowhere /opt/app/dangling && ln /opt/app/file /opt/app/hard && echo x > /opt/app/tree/sub/x \\
    && rm /etc/motd && rm -r /usr/share/doc && mkfifo /opt/app/fifo
RUN echo suid > /opt/app/suid && chmod 4755 /opt/app/suid && chmod 2750 /opt/app/empty \\
    && chmod 1777 /opt/app/tree && mv /data/f644 /data/renamed && rm -r /srv/replaced \\
    && mkdir /srv/replaced && echo new > /srv/replaced/new && rm -r /opt/app/tree/sub && mkdir /opt/app/tree/sub \\
    && echo y > /opt/app/tree/sub/y && printf 'u' > '/opt/app/ünï cødé' && mkdir -p /opt/{LONG_DIR} \\
    && echo long > /opt/{LONG_DIR}/{LONG_FILE} && echo root:x:0:0:root:/root:/bin/sh > /etc/passwd
{run_owners}
RUN echo last > /opt/app/last
CMD ["/bin/sh"]
"""


def make_context(d: Path, owners: bool) -> Path:
    d.mkdir()
    (d / "Dockerfile").write_text(dockerfile(owners))
    files = {"f644": (b"plain\n", 0o644), "f600": (b"secret\n", 0o600), "run.sh": (b"#!/bin/sh\necho run\n", 0o755),
             "dir/a": (b"a\n", 0o640), "dir/sub/b": (b"b\n", 0o444), "dir/exe": (b"#!/bin/sh\n", 0o750)}
    for name, (data, mode) in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(mode)
    (d / "dir/empty").mkdir()
    (d / "dir/link").symlink_to("a")
    (d / "dir/ro").mkdir()
    (d / "dir/ro/r").write_bytes(b"r\n")
    (d / "dir/ro").chmod(0o555)
    (d / "dir/sub").chmod(0o750)
    (d / "dir").chmod(0o755)
    # ADD of a local tar keeps the archive's owners (Docker, buildah: like `tar -x` as root).
    owner = 1000 if owners else 0
    (d / "payload.tar").write_bytes(make_tar([
        Entry("inner", "dir", mode=0o755), Entry("inner/t.txt", "file", b"from the tar\n", uid=owner, gid=owner),
        Entry("inner/x", "file", b"#!/bin/sh\n", mode=0o700)]))
    return d


class Peer:
    """Subprocesses with their output in the assertion message."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd

    def run(self, argv: list[str], *, stdout: Any = subprocess.PIPE, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        assert p.returncode == 0, f"{' '.join(argv)}: exit {p.returncode}\n{p.stdout or ''}\n{p.stderr}"
        return p


class Sbx(Peer):
    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "sandbox", *args], **kw)

    def export(self, image: str, out: Path) -> Listing:
        self("export", "-o", str(out), image)
        return listing_of_file(out)

    def cleanup(self, root: Path) -> None:
        # Layers built with a subuid range hold files of subordinate ids: remove them from inside.
        import sandbox

        sandbox.run(["rm", "-rf", str(root)], rootfs="/", network="host", namespaces=("user",),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Buildah(Peer):
    def __init__(self, env: dict[str, str], cwd: Path, store: Path) -> None:
        super().__init__(env, cwd)
        self.exe = find_binary("buildah") or "buildah"
        self.store = store
        self.flags = ["--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs"]

    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run([self.exe, *self.flags, *args], **kw)

    def listing(self, image: str, out: Path) -> Listing:
        """buildah's own view: a working container's mount, tarred inside `buildah unshare` (as root:
        directly), so owners are as buildah stored them."""
        ctr = self("from", "--pull=false", "--quiet", image).stdout.strip()
        try:
            mount = shlex.join([self.exe, *self.flags, "mount", ctr])
            script = ["sh", "-c", f'exec tar -C "$({mount})" --numeric-owner -cf - .']
            with open(out, "wb") as f:
                if os.geteuid() == 0:
                    self.run(script, stdout=f)
                else:
                    self("unshare", *script, stdout=f)
        finally:
            self("rm", ctr)
        return listing_of_file(out)

    def cleanup(self) -> None:
        if os.geteuid() != 0:
            subprocess.run([self.exe, *self.flags, "unshare", "rm", "-rf", str(self.store)], env=self.env,
                           capture_output=True, timeout=120)
        shutil.rmtree(self.store, ignore_errors=True)


@dataclass
class Built:
    work: Path
    sbx: Sbx
    buildah: Buildah
    owners: bool
    sbx_listing: Listing         # `sbx export` of the sbx-built image
    buildah_listing: Listing     # buildah's own listing of the buildah-built image


def _user_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for v in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE",
              "BUILDAH_LAYERS", "BUILDAH_FORMAT", "STORAGE_DRIVER", "DOCKER_CONFIG", "SBX_PLATFORM"):
        env.pop(v, None)
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_RUNTIME_DIR="", BUILDAH_ISOLATION="chroot", LC_ALL="C.UTF-8")
    env["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The Dockerfile built by sbx and by buildah from the same base, both listed."""
    if find_binary("buildah") is None:
        pytest.skip("buildah is not installed (Debian package buildah)")
    if os.geteuid() != 0 and not has_subid_range():
        pytest.skip("rootless buildah needs a subordinate uid/gid range (/etc/subuid, /etc/subgid) "
                    "and newuidmap/newgidmap; this user has none")
    work = tmp_path_factory.mktemp("build-interop")
    env = _user_env(work / "home")
    env["SBX_ROOT"] = str(work / "sbxroot")
    sbx = Sbx(env, work)
    buildah = Buildah(env, work, work / "buildah")
    owners = owners_kept()
    try:
        ctx = make_context(work / "ctx", owners)
        sbx("load", "-q", "-i", str(base_layout(work / "base-layout")), "--repository", BASE.rsplit(":", 1)[0])
        sbx("save", "-o", str(work / "base.tar"), BASE)
        buildah("pull", "--quiet", f"docker-archive:{work / 'base.tar'}")
        sbx("build", "-q", "-t", "localhost/interop:sbx", str(ctx))
        buildah("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers=false",
                "-t", "localhost/interop:buildah", str(ctx))
        sbx_listing = sbx.export("localhost/interop:sbx", work / "sbx-export.tar")
        buildah_listing = buildah.listing("localhost/interop:buildah", work / "buildah-own.tar")
        buildah_listing.drop(BUILDAH_MOUNT_POINTS, unless_in=sbx_listing)
        yield Built(work, sbx, buildah, owners, sbx_listing, buildah_listing)
    finally:
        buildah.cleanup()
        sbx.cleanup(work / "sbxroot")


def test_the_listing_covers_the_dockerfile(built: Built) -> None:
    """Guard against comparing trees that miss what the Dockerfile is about: each step's work is in
    buildah's tree (the reference), and sbx has every one of those names."""
    it = built.buildah_listing.items
    assert it["usr/local/bin/run"].mode == 0o755 and it["data/f600"].mode == 0o600
    assert it["data/chmodded"].mode == 0o640 and it["data/dir/sub/b"].mode == 0o444
    assert it["data/dir/ro"].mode == 0o555 and it["data/dir/ro/r"].type == "file"
    assert it["data/dir/link"] == Item("symlink", 0o777, 0, 0, "a") and it["data/dir/empty"].type == "dir"
    assert it["opt/unpacked/inner/t.txt"].data == hashlib.sha256(b"from the tar\n").hexdigest()
    assert it["work/dir/made-here"].type == "file" and it["opt/app/fifo"].type == "fifo"
    assert it["opt/app/suid"].mode == 0o4755 and it["opt/app/empty"].mode == 0o2750
    assert it["opt/app/tree"].mode == 0o1777 and it["opt/app/link"].data == "file"
    assert "opt/app/tree/sub/x" not in it and "opt/app/tree/sub/y" in it
    assert "srv/replaced/old" not in it and "srv/replaced/new" in it and it["srv"].mode == 0o750
    assert "etc/motd" not in it and "usr/share/doc" not in it and "data/f644" not in it
    assert f"opt/{LONG_DIR}/{LONG_FILE}" in it and "opt/app/ünï cødé" in it
    assert frozenset({"opt/app/file", "opt/app/hard"}) in built.buildah_listing.hardlinks
    if built.owners:
        assert (it["home/by-user"].uid, it["home/by-user"].gid) == (1000, 1000)
        assert (it["opt/unpacked/inner/t.txt"].uid, it["opt/unpacked/inner/t.txt"].gid) == (1000, 1000)
    assert not set(it) - set(built.sbx_listing.items), "names missing in sbx's image"


def test_sbx_build_gives_the_same_files_as_buildah(built: Built) -> None:
    assert_same(built.sbx_listing, built.buildah_listing, "sbx build + sbx export", "buildah bud")


def test_sbx_layers_read_by_buildah(built: Built) -> None:
    """sbx's layer tars (whiteouts, hardlinks, owners), as buildah applies them: `sbx save` docker-archive
    -> `buildah pull` -> buildah's own listing equals that of buildah's build."""
    built.sbx("save", "-o", str(built.work / "sbx-built.tar"), "localhost/interop:sbx")
    built.buildah("pull", "--quiet", f"docker-archive:{built.work / 'sbx-built.tar'}")
    seen = built.buildah.listing("localhost/interop:sbx", built.work / "sbx-by-buildah.tar")
    assert_same(seen, built.buildah_listing, "sbx build read by buildah", "buildah bud")


def test_buildah_image_read_by_sbx(built: Built) -> None:
    """The other way: `buildah push oci-archive:` -> `sbx load` -> `sbx export` equals buildah's own view."""
    arch = built.work / "buildah-built.tar"
    built.buildah("push", "--quiet", "localhost/interop:buildah", f"oci-archive:{arch}:localhost/interop:from-buildah")
    built.sbx("load", "-q", "-i", str(arch))
    seen = built.sbx.export("localhost/interop:from-buildah", built.work / "buildah-by-sbx.tar")
    seen.drop(BUILDAH_MOUNT_POINTS, unless_in=built.sbx_listing)
    assert_same(seen, built.buildah_listing, "buildah bud read by sbx", "buildah bud")


def test_copy_into_a_directory_only_its_owner_may_enter(built: Built) -> None:
    """COPY into a directory of mode 0700 owned by 1000 (a home directory as Debian's adduser makes it):
    the copy lands there with the directory's owner kept, as buildah does."""
    if not built.owners:
        pytest.skip("sbx keeps owners other than root only with a subordinate id range")
    ctx = built.work / "ctx-private"
    ctx.mkdir()
    (ctx / "f").write_text("mine\n")
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN mkdir -p /home/app && chmod 700 /home/app && chown 1000:1000 /home/app\n"
                                    "COPY --chown=1000:1000 f /home/app/f\nUSER 1000\nRUN echo more >> /home/app/f\n")
    built.sbx("build", "-q", "-t", "localhost/private:sbx", str(ctx))
    built.buildah("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers=false",
                  "-t", "localhost/private:buildah", str(ctx))
    want = built.buildah.listing("localhost/private:buildah", built.work / "private-buildah.tar")
    want.drop(BUILDAH_MOUNT_POINTS, unless_in=Listing({}, set()))
    assert want.items["home/app/f"] == Item("file", 0o644, 1000, 1000, hashlib.sha256(b"mine\nmore\n").hexdigest())
    built.sbx("save", "-o", str(built.work / "private-sbx.tar"), "localhost/private:sbx")
    built.buildah("pull", "--quiet", f"docker-archive:{built.work / 'private-sbx.tar'}")
    got = built.buildah.listing("localhost/private:sbx", built.work / "private-sbx-by-buildah.tar")
    assert_same(got, want, "sbx build read by buildah", "buildah bud")


# --- the registry -------------------------------------------------------------------------------------

def test_sbx_built_image_pushed_and_read_by_skopeo(plain_registry, sbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Built FROM the registry's busybox, pushed next to it; skopeo sees the local manifest digest and
    copies the image to an OCI layout whose manifest is byte-identical."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from the context\n")
    (ctx / "Dockerfile").write_text(f"FROM {plain_registry.host}/test/busybox\nCOPY hello.txt /hello.txt\n"
                                    "RUN echo built > /built.txt\nLABEL org.test.built=sbx\n"
                                    'CMD ["cat", "/built.txt"]\n')
    env = dict(os.environ)  # isolated_env's HOME, XDG dirs and SBX_ROOT, shared with the `sbx` fixture
    env["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    main = Sbx(env, tmp_path)  # `build` is in the main CLI, not in sandbox.cli.images
    try:
        main("build", "-q", "-t", "localhost/pushed:1", str(ctx))
        local = sbx("inspect", "-f", "{{.Manifest.Digest}} {{.Id}}", "localhost/pushed:1")
        assert local.returncode == 0, local.stderr
        digest, image_id = local.stdout.split()
        dest = f"{plain_registry.host}/test/built:1"
        p = sbx("push", "--tls-verify=false", "localhost/pushed:1", dest)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.strip().endswith(f"digest: {digest}")
        info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dest}").stdout)
        assert info["Digest"] == digest
        assert info["Labels"] == {"org.test.built": "sbx"} and len(info["Layers"]) == 3
        cfg = json.loads(skopeo("inspect", "--tls-verify=false", "--config", f"docker://{dest}").stdout)
        assert cfg["config"]["Cmd"] == ["cat", "/built.txt"]
        raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{dest}").stdout
        assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
        layout = tmp_path / "oci"
        skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:copied")
        (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
        assert desc["digest"] == digest
        manifest = json.loads((layout / "blobs/sha256" / digest[7:]).read_bytes())
        assert manifest["config"]["digest"] == image_id
        for layer in manifest["layers"]:
            data = (layout / "blobs/sha256" / layer["digest"][7:]).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"] and len(data) == layer["size"]
    finally:
        main.cleanup(Path(os.environ["SBX_ROOT"]))
