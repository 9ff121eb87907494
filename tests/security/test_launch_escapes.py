"""Escapes a hostile image or container could try against the launcher, attacked from inside real
sandboxes (issue 7, classes 1, 3, 4 and 5, and the runc/crun CVE classes they belong to).

Each test puts canaries on the host (files in a directory standing for the user's home, a key in
the caller's session keyring, secrets in the caller's environment and argv) and checks that the
sandbox neither changed nor read them."""

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sandbox
from sandbox import _native
from sbxtest import build_busybox_rootfs, compile_probe, ok, sbx, sbx_popen, tree_snapshot

ATTACK_SRC = Path(__file__).resolve().parent / "attack.c"


@pytest.fixture(scope="module")
def attack_rootfs(tmp_path_factory) -> Path:
    """A busybox root with /bin/attack, /bin/probe and a 40-link symlink chain at /loop/l0
    (resolving it costs the kernel a while: a long PATH of it keeps an exec from exec'ing)."""
    root = build_busybox_rootfs(tmp_path_factory.mktemp("attack") / "rootfs")
    compile_probe(root / "bin/probe")
    cp = subprocess.run([shutil.which("gcc") or "cc", "-static", "-O1", "-o", str(root / "bin/attack"),
                         str(ATTACK_SRC)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    (root / "loop").mkdir()
    for i in range(39):
        os.symlink(f"l{i + 1}", root / "loop" / f"l{i}")
    os.symlink("/nonexistent", root / "loop" / "l39")
    return root


@pytest.fixture()
def home(tmp_path) -> Path:
    """Stands for the user's home: canary files that must never change."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
    (h / ".bashrc").write_text("echo hi\n")
    return h


def evil_root(rootfs: Path, tmp_path: Path, links: dict[str, str]) -> Path:
    """A copy of `rootfs` (symlinks preserved) with extra symlinks an image could ship."""
    root = tmp_path / "evil"
    shutil.copytree(rootfs, root, symlinks=True)
    for name, target in links.items():
        os.symlink(target, root / name)
    return root


# --- class 1: paths inside the root are resolved inside the root ------------------------------

@pytest.mark.parametrize("link", ["abs", "rel"])
@pytest.mark.parametrize("kind", ["volume-dir", "volume-file", "tmpfs"])
def test_mount_targets_resolve_inside_the_root(attack_rootfs, tmp_path, home, link, kind):
    target = str(home) if link == "abs" else "../" * 12 + str(home).lstrip("/")
    root = evil_root(attack_rootfs, tmp_path, {"data": target})
    # Inside the root the link's target exists too, so the mount has somewhere to go there.
    (root / str(home).lstrip("/")).mkdir(parents=True)
    before = tree_snapshot(home)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from the volume\n")
    opt = {"volume-dir": ["-v", f"{src}:/data/x/y"], "volume-file": ["-v", f"{src / 'f'}:/data/x/file"],
           "tmpfs": ["--tmpfs", "/data/x/t"]}[kind]
    out = ok(sbx("run", "--rm", *opt, "--rootfs", root, "sh", "-c", f"find {home} | sort"))
    assert tree_snapshot(home) == before, "the host's home changed"
    # ... and the mount is where the image's symlink points inside the root.
    leaf = {"volume-dir": "x/y", "volume-file": "x/file", "tmpfs": "x/t"}[kind]
    assert f"{home}/{leaf}" in out.split()
    assert not (root / str(home).lstrip("/") / "x").exists(), "the rootfs on the host was written"


def test_dangling_link_target_is_made_inside_the_root(attack_rootfs, tmp_path, home):
    """/data -> HOME/made, which the root lacks: as Docker does, the mount point is made where
    the link points inside the root, and nothing on the host."""
    root = evil_root(attack_rootfs, tmp_path, {"data": str(home / "made")})
    before = tree_snapshot(home)
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "inside").write_text("v")
    out = ok(sbx("run", "--rm", "-v", f"{tmp_path / 'vol'}:/data/x", "--rootfs", root, "ls", f"{home}/made/x"))
    assert out.split() == ["inside"]
    assert tree_snapshot(home) == before
    assert not (root / str(home).lstrip("/")).exists(), "the rootfs on the host was written"


def test_kept_container_cannot_redirect_its_mounts(attack_rootfs, tmp_path, home):
    """The first run replaces /mnt with a link to the host's home; the second start mounts the
    volume again: inside the root (the persistent upper is the container's to write)."""
    src = tmp_path / "vol"
    src.mkdir()
    name = f"redirect-{os.getpid()}"
    ok(sbx("run", "--name", name, "-v", f"{src}:/a/b/inner", "--rootfs", attack_rootfs,
           "sh", "-c", f"mv /a /moved && ln -s {home} /a && ls -l /a"))
    try:
        before = tree_snapshot(home)
        cp = sbx("start", "-a", name)
        assert "Traceback" not in cp.stderr
        assert tree_snapshot(home) == before, "the host's home changed"
    finally:
        sbx("rm", "-f", name)


def test_user_space_walk_resolves_like_openat2(attack_rootfs, tmp_path, home):
    """Kernels without openat2 get the component walk: same confinement."""
    root = evil_root(attack_rootfs, tmp_path, {"data": str(home), "rel": "../" * 9 + str(home).lstrip("/")})
    (root / str(home).lstrip("/")).mkdir(parents=True)
    before = tree_snapshot(home)
    _native.inroot_force_walk(True)
    try:
        r = sandbox.run(["sh", "-c", f"ls {home}"], rootfs=root, volumes=[(str(tmp_path), "/data/a/b")],
                        tmpfs=["/rel/c"], capture_output=True, text=True)
    finally:
        _native.inroot_force_walk(False)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"a", "c"}
    assert tree_snapshot(home) == before


def test_in_root_resolution_from_python(tmp_path, home):
    """The resolver itself: absolute and relative links, `..` past the top, both code paths."""
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(home), root / "abs")
    os.symlink("../../../../.." + str(home), root / "etc" / "rel")
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for walk in (False, True):
            _native.inroot_force_walk(walk)
            for path in ("abs/.ssh/id_rsa", "etc/rel/.ssh/id_rsa", "../../../" + str(home) + "/.ssh/id_rsa"):
                with pytest.raises(FileNotFoundError):
                    os.close(_native.open_in_root(rfd, path, os.O_RDONLY))
            # A link to nothing: its target is made inside the root, never on the host.
            os.close(_native.mkdirs_in_root(rfd, f"abs/new-{walk}/dir"))
            assert (root / str(home).lstrip("/") / f"new-{walk}" / "dir").is_dir()
            os.close(_native.mkdirs_in_root(rfd, f"etc/made-{walk}/dir"))
            assert (root / "etc" / f"made-{walk}" / "dir").is_dir()
    finally:
        _native.inroot_force_walk(False)
        os.close(rfd)
    assert not list(home.glob("new-*")), "mkdirs_in_root created a directory on the host"


# --- class 3: exec exposes nothing of the caller ----------------------------------------------

def test_exec_exposes_no_host_environment_argv_or_fds(attack_rootfs, tmp_path):
    """While `sbx exec` is joining (kept from exec'ing for a while by a long PATH of symlink
    loops), a watcher inside scans every /proc/N: the caller's environment, its argv (which
    names the container), its executable and its files must not be visible."""
    name = f"watched-{os.getpid()}"
    secret_env = f"HOSTSECRET{os.getpid()}"
    secret_file = tmp_path / f"secretfile{os.getpid()}"
    secret_file.write_text("x")
    watcher = sbx_popen("run", "--rm", "--name", name, "--rootfs", attack_rootfs,
                        "attack", "watch", secret_env, name, "python3", secret_file.name, "--", "8")
    try:
        deadline = time.time() + 10
        while sbx("exec", name, "true").returncode != 0:
            assert time.time() < deadline, "the watcher did not start"
            time.sleep(0.1)
        slow_path = ":".join(["/loop/l0"] * 12000)
        with open(secret_file) as held:
            os.set_inheritable(held.fileno(), True)
            for _ in range(3):
                cp = sbx("exec", "-e", f"PATH={slow_path}", name, "nonexistent-command",
                         env={**os.environ, "SBX_TEST_SECRET": secret_env}, close_fds=False)
                assert cp.returncode == 127, cp.stderr
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
    assert "scans" in out, err
    assert "FOUND" not in out, out
    # It did see the joining processes (each was visible for a while before failing to exec).
    assert int(out.split("others")[1].split()[0]) >= 3, out


def test_exec_gets_no_host_cwd_or_fds(attack_rootfs, tmp_path, monkeypatch):
    """CVE-2024-21626's class: the exec'd process's cwd and fds are the sandbox's, whatever the
    caller had open or was standing in."""
    secret_dir = tmp_path / "secretdir"
    secret_dir.mkdir()
    (secret_dir / "inside-secret").write_text("s")
    p = sandbox.Popen(["sleep", "30"], rootfs=attack_rootfs)
    monkeypatch.chdir(secret_dir)
    try:
        fd = os.open(secret_dir / "inside-secret", os.O_RDONLY)
        os.set_inheritable(fd, True)
        try:
            e = p.exec(["sh", "-c", "probe fds; readlink /proc/self/cwd; ls /proc/self/cwd/"],
                       stdout=subprocess.PIPE, text=True, cwd=None, pass_fds=())
            out = e.communicate(timeout=20)[0]
        finally:
            os.close(fd)
    finally:
        p.kill()
        p.wait()
    lines = out.splitlines()
    assert lines[0].split() == ["0", "1", "2"]
    assert lines[1] == "/"
    assert "inside-secret" not in out


# --- class 4: sbx's own binaries cannot be rewritten from inside --------------------------------

def test_init_runs_from_a_sealed_copy(attack_rootfs):
    from sandbox.runtime.sealed import INIT_PATH
    before = hashlib.sha256(Path(INIT_PATH).read_bytes()).hexdigest()
    out = ok(sbx("run", "--rm", "--init", "--rootfs", attack_rootfs, "sh", "-c",
                 "readlink /proc/1/exe; echo pwned > /proc/1/exe && echo WROTE; "
                 "(exec 3<>/proc/1/exe) 2>/dev/null && echo OPENED; true"))
    assert "memfd:sbx-init" in out.splitlines()[0]
    assert "WROTE" not in out and "OPENED" not in out
    assert hashlib.sha256(Path(INIT_PATH).read_bytes()).hexdigest() == before


# --- class 5: keyrings -------------------------------------------------------------------------

def _keyctl(*args):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(250, *args)


def test_session_keyring_is_not_shared(attack_rootfs):
    """Put a key in this process's own session keyring: a sandbox started from here (with
    seccomp off, so the keyring itself is what is tested) sees a keyring of its own."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    assert _keyctl(1, b"sbx-test-session", 0, 0, 0) > 0  # KEYCTL_JOIN_SESSION_KEYRING
    serial = libc.syscall(248, b"user", b"sbx-test-secret", b"hunter2", 7, -3)  # add_key to @s
    assert serial > 0, os.strerror(ctypes.get_errno())
    host_session = _keyctl(0, -3, 0, 0, 0)  # KEYCTL_GET_KEYRING_ID @s
    r = sandbox.run(["attack", "keyring", str(serial)], rootfs=attack_rootfs, seccomp="unconfined",
                    capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert int(res["session"]) != host_session
    assert res["read"] != "ok" and res["search"] != "ok", r.stdout


# --- classes of runc/crun CVEs: /proc, devices, host processes, owners ------------------------

def test_proc_is_masked_and_read_only(attack_rootfs):
    out = ok(sbx("run", "--rm", "--rootfs", attack_rootfs, "sh", "-c",
                 "cat /proc/kcore 2>/dev/null | wc -c; cat /proc/keys | wc -c; ls /proc/acpi 2>/dev/null | wc -l; "
                 "echo 1 > /proc/sysrq-trigger && echo SYSRQ; echo x > /proc/sys/kernel/hostname && echo SYSCTL; "
                 "test -d /proc/acpi && { touch /proc/acpi/x || mkdir /proc/acpi/d; } 2>/dev/null && echo MASKW; "
                 "echo done"))
    lines = out.split()
    assert lines[:3] == ["0", "0", "0"], out
    assert "SYSRQ" not in out and "SYSCTL" not in out and "MASKW" not in out


def test_no_device_nodes_can_be_made_or_reached(attack_rootfs):
    out = ok(sbx("run", "--rm", "--rootfs", attack_rootfs, "sh", "-c",
                 "mknod /tmp/sda b 8 0 && echo MKNOD; mknod /tmp/mem c 1 1 && echo MKNODC; "
                 "ls /dev | tr '\\n' ' '; echo"))
    assert "MKNOD" not in out
    devs = set(out.split())
    assert devs <= {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx",
                    "fd", "stdin", "stdout", "stderr", "core", "console"}, out


def test_host_processes_are_out_of_reach(attack_rootfs):
    """No host process can be signalled, traced or read through /proc/N/root from inside."""
    host = subprocess.Popen(["sleep", "60"])
    try:
        out = ok(sbx("run", "--rm", "--rootfs", attack_rootfs, "sh", "-c",
                     f"kill -0 {host.pid} 2>/dev/null && echo SIGNALLED; ls /proc/{host.pid}/root 2>/dev/null && echo ROOT; "
                     "ls -d /proc/[0-9]* | wc -l"))
        assert "SIGNALLED" not in out and "ROOT" not in out
        assert int(out.split()[-1]) <= 4  # sh, ls, wc, and the shell's pipeline helpers
        assert host.poll() is None
    finally:
        host.kill()
        host.wait()


def test_files_made_inside_belong_to_the_users_ids(attack_rootfs, tmp_path):
    """A setuid-root file made inside is owned, on the host, by the user or one of the user's
    subordinate ids: never by anyone else (in particular never by the host's root)."""
    from sbxtest import subid_range
    vol = tmp_path / "vol"
    vol.mkdir()
    ok(sbx("run", "--rm", "-v", f"{vol}:/vol", "--rootfs", attack_rootfs, "sh", "-c",
           "cp /bin/busybox /vol/suid && chmod 4755 /vol/suid"))
    st = os.stat(vol / "suid")
    allowed = {os.getuid()}
    rng = subid_range("/etc/subuid")
    if rng:
        allowed |= set(range(rng[0], rng[0] + rng[1]))
    assert st.st_uid in allowed
    if os.getuid() != 0:
        assert st.st_uid != 0


def test_user_lookup_reads_the_roots_passwd_not_the_hosts(attack_rootfs, tmp_path, home):
    """`-u NAME` reads /etc/passwd of the root: an image whose /etc is a link to a host
    directory must not make sbx read a passwd file of the host's."""
    (home / "passwd").write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    root = tmp_path / "evil"
    shutil.copytree(attack_rootfs, root, symlinks=True)
    shutil.rmtree(root / "etc")
    os.symlink(str(home), root / "etc")
    cp = sbx("run", "--rm", "-u", "hostonly", "--rootfs", root, "id", "-u")
    assert cp.returncode == 125 and "hostonly" in cp.stderr and "Traceback" not in cp.stderr, cp.stderr


@pytest.mark.parametrize("target", ["private/etc", "/private/etc"])
def test_an_image_whose_etc_is_a_link_keeps_its_own_etc(tmp_path, target):
    """`/etc -> private/etc` (or absolute): the mount points sbx adds (/etc/hostname, hosts,
    resolv.conf) are made through the link inside the root, so the image's /etc stays whole, and
    nothing on the host is looked up through it (an absolute link means the image's path)."""
    root = build_busybox_rootfs(tmp_path / "rootfs")
    (root / "private").mkdir()
    (root / "etc").rename(root / "private" / "etc")
    (root / "etc").symlink_to(target)
    for name in ("hostname", "hosts", "resolv.conf"):
        (root / "private" / "etc" / name).unlink(missing_ok=True)
    r = sandbox.run(["sh", "-c", "cat /etc/passwd | head -1; cat /etc/hostname; readlink /etc; id -un"],
                    rootfs=str(root), capture_output=True, text=True, hostname="linked")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["root:x:0:0:root:/root:/bin/sh", "linked", target, "root"], r.stdout
    assert not (root / "private" / "etc" / "hostname").exists(), "the mount point went into the image"
