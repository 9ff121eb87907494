"""sbx cp (both ways, '-' streams, -a, -L), sbx export, and the Python get_archive/put_archive:
Docker's rules, owners as mapped, and paths that never leave the container's root."""
import io
import os
import subprocess
import tarfile

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))


def _made(rootfs, name, script, *extra):
    """A stopped container whose command ran `script`."""
    ok(sbx("run", "--name", name, *extra, "--rootfs", str(rootfs), "sh", "-c", script))


def _tar_out(ref_path):
    """`sbx cp CONTAINER:PATH -`: {name: (member, content)}."""
    r = subprocess.run(sbxtest.sbx_argv("cp", ref_path, "-"), capture_output=True, cwd=sbxtest.NEUTRAL_CWD,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    out = {}
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        for m in tf:
            out[m.name] = (m, tf.extractfile(m).read() if m.isreg() else None)
    return out


def _tar(entries):
    """A tar from (name, kind, data/linkname, uid) tuples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, uid in entries:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cp_in(stream, dest, *flags):
    return subprocess.run(sbxtest.sbx_argv("cp", *flags, "-", dest), input=stream, capture_output=True,
                          cwd=sbxtest.NEUTRAL_CWD, timeout=60)


def test_from_a_container_follows_dockers_rules(busybox_rootfs, tmp_path):
    _made(busybox_rootfs, "src", "mkdir -p /data/sub && echo a > /data/a && echo b > /data/sub/b && echo f > /file")
    out = tmp_path / "out"
    out.mkdir()
    r = sbx("cp", "src:/file", out / "new")                       # missing destination: a file of that name
    assert ok(r) == "" and (out / "new").read_text() == "f\n"
    assert r.stderr == f"Successfully copied 2.05kB to {out / 'new'}\n"   # the archive's bytes, as Docker
    assert sbx("cp", "-q", "src:/file", out / "quiet").stderr == ""
    ok(sbx("cp", "src:/file", out))                               # an existing directory: into it, by name
    assert (out / "file").read_text() == "f\n"
    (out / "old").write_text("overwrite me")
    ok(sbx("cp", "src:/file", out / "old"))                       # an existing file: overwritten
    assert (out / "old").read_text() == "f\n"
    ok(sbx("cp", "src:/data", out / "copy"))                      # a directory to a new path: that directory
    assert (out / "copy/a").read_text() == "a\n" and (out / "copy/sub/b").read_text() == "b\n"
    ok(sbx("cp", "src:/data", out))                               # a directory into an existing one, by name
    assert (out / "data/sub/b").read_text() == "b\n"
    (out / "dot").mkdir()
    ok(sbx("cp", "src:/data/.", out / "dot"))                     # trailing /. : the contents only
    assert sorted(os.listdir(out / "dot")) == ["a", "sub"]
    ok(sbx("cp", "src:/data/.", out / "newdot"))                  # ... to a new path: made, with them
    assert sorted(os.listdir(out / "newdot")) == ["a", "sub"]
    assert_sbx_error(sbx("cp", "src:/data", out / "old"), 1, "cannot copy directory")
    assert_sbx_error(sbx("cp", "src:/file", str(out / "nodir") + "/"), 1, "no such directory")
    assert_sbx_error(sbx("cp", "src:/file", out / "missing/parent/x"), 1, "stat", "missing")
    assert_sbx_error(sbx("cp", "src:/nope", out / "x"), 1, "Could not find the file /nope in container src")
    assert_sbx_error(sbx("cp", "src:/file/", out / "x"), 1, "not a directory")
    assert not (out / "x").exists()


def test_into_a_container_follows_dockers_rules(busybox_rootfs, tmp_path):
    _made(busybox_rootfs, "dst", "mkdir -p /srv/keep && echo k > /srv/keep/k && echo p > /srv/plain")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "one").write_text("1\n")
    (src / "sub/two").write_text("2\n")
    assert sbx("cp", src / "one", "dst:/srv").stderr.startswith("Successfully copied ")   # file into a directory
    (src / "link").symlink_to(src / "one")
    ok(sbx("cp", "-L", src / "link", "dst:/srv/followed"))       # -L: the file a local link names
    ok(sbx("cp", src / "one", "dst:/srv/plain"))                  # file onto a file: replaced
    ok(sbx("cp", src, "dst:/fresh"))                              # directory to a new path
    ok(sbx("cp", str(src) + "/.", "dst:/srv/keep"))               # contents merged into a directory
    ok(sbx("cp", src, "dst:/srv/keep"))                           # directory into a directory, by name
    got = _tar_out("dst:/")
    assert got["srv/one"][1] == b"1\n" and got["srv/plain"][1] == b"1\n"
    assert got["fresh/one"][1] == b"1\n" and got["fresh/sub/two"][1] == b"2\n"
    assert got["srv/keep/k"][1] == b"k\n" and got["srv/keep/one"][1] == b"1\n"
    assert got["srv/keep/src/sub/two"][1] == b"2\n"
    assert got["srv/followed"][1] == b"1\n" and got["srv/keep/src/link"][0].issym()
    assert got["srv/one"][0].uid == 0                            # without -a: the container's root
    assert_sbx_error(sbx("cp", src, "dst:/srv/plain"), 1, "cannot copy directory")
    assert_sbx_error(sbx("cp", src / "one", "dst:/nowhere/x"), 1, "Could not find the file /nowhere in container dst")
    assert_sbx_error(sbx("cp", src / "one", "dst:/absent/"), 1, "no such directory")
    assert_sbx_error(sbx("cp", tmp_path / "nothing", "dst:/srv"), 1, "lstat", "no such file")
    r = _cp_in(_tar([("t.txt", "file", b"t\n", 0)]), "dst:/srv/plain")
    assert r.returncode == 1 and b'destination "dst:/srv/plain" must be a directory' in r.stderr
    assert _cp_in(_tar([("t.txt", "file", b"t\n", 0)]), "dst:/srv").returncode == 0
    assert _tar_out("dst:/srv/t.txt")["t.txt"][1] == b"t\n"
    _made(busybox_rootfs, "del", "rm -rf /bin")                  # a directory deleted in the container
    fresh = tmp_path / "bin"
    fresh.mkdir()
    (fresh / "new").write_text("n\n")
    ok(sbx("cp", fresh, "del:/"))                                 # comes back with only what was copied
    assert sorted(_tar_out("del:/bin")) == ["bin", "bin/new"]
    # the image's files on the host are never touched
    assert (busybox_rootfs / "etc/marker").read_text() == sbxtest.MARKER_CONTENT
    assert not (busybox_rootfs / "srv").exists()


@pytest.mark.parametrize("args, words", [
    (["a", "b"], ["must specify at least one container"]),
    (["x:/a", "y:/b"], ["between containers"]),
    (["x:", "/tmp/y"], ["source can not be empty"]),
    (["nosuch:/a", "/tmp/y"], ["No such container: nosuch"]),
])
def test_bad_arguments(args, words):
    r = sbx("cp", *args)
    assert_sbx_error(r, r.returncode, *words)
    assert r.returncode in (1, 125)


def test_running_container_and_its_volume(busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "host.txt").write_text("from the host\n")
    p = sbxtest.sbx_popen("run", "--name", "live", "-v", f"{vol}:/vol", "--rootfs", busybox_rootfs,
                          "sh", "-c", "echo made > /tmp/made; echo up; exec sleep 60")
    try:
        assert p.stdout.readline() == "up\n"
        local = tmp_path / "local.txt"
        local.write_text("sent\n")
        ok(sbx("cp", local, "live:/vol/"))                        # through the volume to the host
        assert (vol / "local.txt").read_text() == "sent\n"
        ok(sbx("cp", local, "live:/tmp/"))
        assert ok(sbx("exec", "live", "cat", "/tmp/local.txt", "/tmp/made")) == "sent\nmade\n"
        ok(sbx("cp", "live:/vol/host.txt", tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "from the host\n"
        names = _tar_out("live:/")
        assert "tmp/made" in names and "vol/host.txt" in names
        assert "proc" in names and not any(n.startswith("proc/") for n in names)   # no kernel files
        # Directories the copy makes, and modes set on what it writes: in a running container's
        # root /proc is the container's, so no chmod may go through /proc/self/fd.
        tree = tmp_path / "tree"
        (tree / "a" / "b").mkdir(parents=True)
        (tree / "a" / "b" / "f").write_text("deep\n")
        (tree / "a" / "b").chmod(0o750)
        os.mkfifo(tree / "a" / "fifo", 0o604)
        ok(sbx("cp", tree / "a", "live:/tmp/new/"))
        listing = ok(sbx("exec", "live", "sh", "-c",
                         "cat /tmp/new/b/f; stat -c '%A %n' /tmp/new/b /tmp/new/fifo"))
        assert listing == "deep\ndrwxr-x--- /tmp/new/b\nprw----r-- /tmp/new/fifo\n", listing
    finally:
        p.kill()
        p.wait()


@pytest.mark.subuid
def test_owners_round_trip_as_mapped(busybox_rootfs, tmp_path):
    _made(busybox_rootfs, "own", "mkdir -p /home/app/d && echo x > /home/app/d/f && chown -R 1000:1000 /home/app && "
                                 "chmod 700 /home/app/d && mkdir /in")
    got = _tar_out("own:/home/app")
    assert {n: (m.uid, m.gid) for n, (m, _) in got.items()} == {"app": (1000, 1000), "app/d": (1000, 1000),
                                                                  "app/d/f": (1000, 1000)}
    r = subprocess.run(sbxtest.sbx_argv("cp", "own:/home/app", "-"), capture_output=True, cwd=sbxtest.NEUTRAL_CWD)
    assert _cp_in(r.stdout, "own:/in", "-a").returncode == 0       # -a: the archive's owners
    back = _tar_out("own:/in/app")
    assert (back["app/d/f"][0].uid, back["app/d/f"][0].gid) == (1000, 1000) and back["app/d/f"][1] == b"x\n"
    assert back["app/d"][0].uid == 1000
    ok(sbx("run", "--name", "dummy", "--rootfs", busybox_rootfs, "true"))
    assert _cp_in(r.stdout, "own:/tmp").returncode == 0              # without -a: the container's root
    assert _tar_out("own:/tmp/app/d/f")["f"][0].uid == 0
    assert _cp_in(_tar([("far", "file", b"x", 70000)]), "own:/in", "-a").returncode == 1   # not mapped


def test_links_never_reach_the_host(busybox_rootfs, tmp_path):
    """A container's symlink to a host path (absolute, or ../ past its root) is resolved inside
    the container; a hostile archive cannot write through a link or leave the destination."""
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    host_passwd = open("/etc/passwd").read()
    _made(busybox_rootfs, "hostile", f"ln -s {victim} /victim; ln -s /etc/passwd /pw; "
                                     "ln -s ../../../../../../../../.. /up; mkdir /drop")
    out = tmp_path / "out"
    out.mkdir()
    ok(sbx("cp", "-L", "hostile:/pw", out / "pw"))                 # the container's passwd, not the host's
    assert (out / "pw").read_text() == sbxtest.PASSWD and (out / "pw").read_text() != host_passwd
    assert_sbx_error(sbx("cp", "-L", "hostile:/victim", out / "v"), 1, "Could not find the file")
    r = sbx("cp", "hostile:/up/etc/passwd", out / "up")            # ../ stops at the container's root
    assert ok(r) == "" and (out / "up").read_text() == sbxtest.PASSWD
    ok(sbx("cp", "hostile:/pw", out / "link"))                     # without -L: the link itself
    assert os.readlink(out / "link") == "/etc/passwd"
    payload = tmp_path / "payload"
    payload.write_text("overwritten\n")
    # a link as the destination is followed inside the container only: the host path it names
    # does not exist there, and the container's own /etc/passwd is what /up/etc/passwd means
    assert_sbx_error(sbx("cp", payload, "hostile:/victim"), 1, "Could not find the file")
    ok(sbx("cp", payload, "hostile:/up/etc/passwd"))
    assert victim.read_text() == "host file\n" and open("/etc/passwd").read() == host_passwd
    assert _tar_out("hostile:/etc/passwd")["passwd"][1] == b"overwritten\n"
    hostile = [
        [("ln", "link", str(tmp_path), 0), ("ln/victim", "file", b"through a link\n", 0)],
        [("../../escape", "file", b"x", 0)],
        [("/abs", "file", b"x", 0)],
        [("h", "hard", str(victim), 0)],
        [("h", "hard", "../../../etc/passwd", 0)],
    ]
    for entries in hostile:
        r = _cp_in(_tar(entries), "hostile:/drop")
        assert r.returncode == 1 and b"refusing entry" in r.stderr, r.stderr
    assert victim.read_text() == "host file\n" and open("/etc/passwd").read() == host_passwd
    r = _cp_in(_tar([("null", "chr", None, 0), ("fine", "file", b"ok\n", 0)]), "hostile:/drop")
    assert r.returncode == 0 and b"skipping device node 'null'" in r.stderr
    got = _tar_out("hostile:/drop")
    assert "drop/fine" in got and "drop/null" not in got
    r = _cp_in(_tar([("dir", "dir", None, 0), ("dir", "file", b"x", 0)]), "hostile:/drop")
    assert r.returncode == 1 and b"cannot overwrite directory" in r.stderr


def test_export(busybox_rootfs, tmp_path):
    _made(busybox_rootfs, "exp", "echo new > /new; rm /etc/marker; mkdir -p /home/app/x")
    ok(sbx("export", "exp", "-o", tmp_path / "exp.tar"))
    with tarfile.open(tmp_path / "exp.tar") as tf:
        names = set(tf.getnames())
        assert tf.extractfile("new").read() == b"new\n"
    assert {"bin/busybox", "bin/sh", "etc/passwd", "home/app/x"} <= names
    assert "etc/marker" not in names                               # deleted in the container
    r = subprocess.run(sbxtest.sbx_argv("container", "export", "exp"), capture_output=True, cwd=sbxtest.NEUTRAL_CWD)
    assert r.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        assert set(tf.getnames()) == names
    assert_sbx_error(sbx("container", "export", "nosuch"), 1, "No such container")


def test_python_get_and_put_archive(busybox_rootfs):
    from sandbox.containers import files
    _made(busybox_rootfs, "py", "mkdir /box && echo inside > /box/f")
    chunks, st = files.get_archive(None, "py", "/box/f")
    assert st["name"] == "f" and st["size"] == 7 and st["mode"] & 0o777 == 0o644 and st["linkTarget"] == ""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tf:
        assert tf.extractfile("f").read() == b"inside\n"
    files.put_archive(None, "py", "/box", _tar([("added", "file", b"added\n", 0), ("same", "hard", "added", 0)]))
    chunks, st = files.get_archive(None, "py", "/box")
    assert st["mode"] & (1 << 31)                                  # Go's ModeDir
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tf:
        assert tf.extractfile("box/added").read() == b"added\n"
        assert tf.getmember("box/same").islnk() and tf.getmember("box/same").linkname == "box/added"
    with pytest.raises(files.CopyError, match="must be a directory"):
        files.put_archive(None, "py", "/box/f", _tar([("x", "file", b"x", 0)]))
    with pytest.raises(files.CopyError, match="Could not find"):
        files.get_archive(None, "py", "/nope")
