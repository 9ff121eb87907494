"""sandbox.runtime.inroot: paths resolved inside a tree never leave it, with the kernel's openat2
and with the component-by-component fallback (forced through inroot.use_openat2 = False)."""
import errno
import os
import stat

import pytest

from sandbox.runtime import inroot


@pytest.fixture(params=["openat2", "fallback"])
def mode(request, monkeypatch):
    if request.param == "openat2":
        if not inroot._have_openat2():
            pytest.skip("this kernel has no openat2")
        monkeypatch.setattr(inroot, "use_openat2", True)
    else:
        monkeypatch.setattr(inroot, "use_openat2", False)
    return request.param


@pytest.fixture()
def tree(tmp_path):
    """root/ with hostile links, and a 'host' canary directory beside it."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "secret").write_text("root secret\n")
    (root / "abs").symlink_to(host)                         # absolute: must mean root/<host path>
    (root / "rel").symlink_to("../../../../../../" + str(host).lstrip("/"))
    (root / "up").symlink_to("..")                          # .. at the root stays there
    (root / "etclink").symlink_to("/etc")
    (root / "loop").symlink_to("loop")
    (root / "file").write_text("f\n")
    (root / "magic").symlink_to("/proc/self/fd/0")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield root, host, fd
    os.close(fd)


def _read(fd):
    try:
        return os.read(fd, 100).decode()
    finally:
        os.close(fd)


def _host_unchanged(host):
    assert sorted(os.listdir(host)) == ["secret"]
    assert (host / "secret").read_text() == "host secret\n"


def test_symlinks_resolve_inside_the_root(mode, tree):
    root, host, rfd = tree
    assert _read(inroot.open_in_root(rfd, "/etclink/secret", os.O_RDONLY)) == "root secret\n"
    assert _read(inroot.open_in_root(rfd, "up/up/../etc/secret", os.O_RDONLY)) == "root secret\n"
    for p in ("abs/secret", "rel/secret", "/abs/secret", "../../" + str(host) + "/secret"):
        with pytest.raises(FileNotFoundError):
            os.close(inroot.open_in_root(rfd, p, os.O_RDONLY))
    with pytest.raises(OSError) as e:
        inroot.open_in_root(rfd, "loop/x")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        inroot.open_in_root(rfd, "file/x")
    assert e.value.errno == errno.ENOTDIR
    # A magic link is never followed out: /proc/self/fd/0 means root/proc/self/fd/0 here.
    with pytest.raises(OSError):
        os.close(inroot.open_in_root(rfd, "magic", os.O_RDONLY))
    _host_unchanged(host)


def test_creation_through_links_lands_inside(mode, tree):
    root, host, rfd = tree
    with pytest.raises(FileNotFoundError):  # the parent does not exist inside the root
        inroot.open_in_root(rfd, "abs/new", os.O_WRONLY | os.O_CREAT, 0o600)
    dfd = inroot.makedirs_in_root(rfd, "rel/made/deeper", 0o750)
    os.close(dfd)
    inside = root / str(host).lstrip("/") / "made" / "deeper"
    assert inside.is_dir() and stat.S_IMODE(inside.stat().st_mode) == 0o750 & ~_umask()
    fd = inroot.open_in_root(rfd, "abs/made/deeper/f", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x")
    os.close(fd)
    assert (inside / "f").read_bytes() == b"x"
    pfd, name = inroot.parent_in_root(rfd, "/up/abs/made/file-here")
    assert name == "file-here"
    assert os.readlink(f"/proc/self/fd/{pfd}") == str(root / str(host).lstrip("/") / "made")
    os.close(pfd)
    _host_unchanged(host)


def test_final_symlink_is_not_followed_with_nofollow(mode, tree):
    root, host, rfd = tree
    fd = inroot.open_in_root(rfd, "abs", os.O_PATH | os.O_NOFOLLOW)
    assert stat.S_ISLNK(os.fstat(fd).st_mode)
    os.close(fd)
    with pytest.raises(OSError) as e:
        inroot.open_in_root(rfd, "etclink", os.O_RDONLY | os.O_NOFOLLOW)
    assert e.value.errno == errno.ELOOP


def test_makedirs_reports_what_it_made_and_follows_dangling_links_inside(mode, tree):
    root, host, rfd = tree
    made = []
    os.close(inroot.makedirs_in_root(rfd, "etc/a/b", on_create=lambda d, n: made.append(n)))
    assert made == ["a", "b"]
    os.symlink("/nowhere-sbx-test/deep", root / "dangling")
    made.clear()
    os.close(inroot.makedirs_in_root(rfd, "dangling/x", on_create=lambda d, n: made.append(n)))
    assert made == ["nowhere-sbx-test", "deep", "x"]
    assert (root / "nowhere-sbx-test" / "deep" / "x").is_dir()
    assert not os.path.lexists("/nowhere-sbx-test")
    os.symlink("self", root / "self")
    with pytest.raises(OSError) as e:
        inroot.makedirs_in_root(rfd, "self/x")
    assert e.value.errno == errno.ELOOP


def _umask():
    u = os.umask(0)
    os.umask(u)
    return u
