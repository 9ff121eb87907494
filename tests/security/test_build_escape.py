"""sbx build's COPY/ADD never write, chmod, chown or read through a symlink to the host (issue 7,
class 2).  Each test plants a symlink to a canary "home" directory on the host (in the context, by
a RUN step, or in another stage), builds with the real `sbx build`, and checks that

- every file of the home is unchanged (content, mode, owner, mtime) and nothing new appeared there;
- the image holds what Docker's in-root resolution gives: a destination through a symlink lands at
  the link's target *inside the image* (an absolute target or `../..` restart at the image root),
  a source through a symlink is looked up inside its own tree.

Run as sbxsub (placement inside a subuid-mapped worker) and sbxnosub (placement in-process)."""
import hashlib
import io
import os
import tarfile

import pytest

from sbxtest import has_subid_range, host_address, sbx


@pytest.fixture(scope="module")
def store_env(tmp_path_factory, busybox_rootfs):
    """base:1, a busybox image, in the session's store."""
    tar = tmp_path_factory.mktemp("escape") / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    r = sbx("import", str(tar), "base:1")
    assert r.returncode == 0, r.stderr


@pytest.fixture()
def home(tmp_path):
    """The victim: a directory of the user's with a secret and a config file."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
    os.chmod(h / ".ssh" / "id_rsa", 0o600)
    (h / "canary").write_text("canary\n")
    os.chmod(h / "canary", 0o640)
    os.utime(h / "canary", ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot(h)
    yield h
    assert _snapshot(h) == before, "a build changed the host directory the image's symlinks point at"


def _snapshot(top):
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in [*dirnames, *filenames, "."]:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest)
    return out


def _ctx(tmp_path, dockerfile, files=None):
    ctx = tmp_path / "ctx"
    for name, content in {"Dockerfile": dockerfile, **(files or {})}.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(content)
    return ctx


def _build(ctx, tag):
    return sbx("build", "-q", "-t", tag, str(ctx), timeout=180)


def _sh(image, script):
    r = sbx("run", "--rm", image, "/bin/sh", "-c", script, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _built(ctx, tag):
    r = _build(ctx, tag)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return tag


def test_several_sources_do_not_write_through_a_link_placed_by_an_earlier_one(store_env, tmp_path, home):
    # `evil` (a symlink to the home) is placed first, then d/'s content brings evil/x: without
    # in-root placement, x is written into the user's home.
    ctx = _ctx(tmp_path, "FROM base:1\nCOPY evil d/ /dst/\nCOPY evil d/ /\n",
               {"d/evil/x": "payload\n", "d/evil/canary": "overwritten\n"})
    (ctx / "evil").symlink_to(home)
    img = _built(ctx, "esc:multi")
    # Docker's rule for a directory entry over an existing non-directory: replaced by the directory.
    out = _sh(img, "cat /dst/evil/x /dst/evil/canary /evil/x; test -d /dst/evil && ! test -L /dst/evil && echo dir")
    assert out == "payload\noverwritten\npayload\ndir\n"


def test_a_context_source_through_a_symlink_is_looked_up_in_the_context(store_env, tmp_path, home):
    ctx = _ctx(tmp_path, "FROM base:1\nCOPY evil/canary /leak\n")
    (ctx / "evil").symlink_to(home)
    r = _build(ctx, "esc:ctxread")
    assert r.returncode == 125 and "no such file" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("link", ["abs", "rel"])
def test_copy_and_heredoc_through_a_symlink_made_by_run(store_env, tmp_path, home, link):
    target = str(home) if link == "abs" else "../" * 12 + str(home).lstrip("/")
    ctx = _ctx(tmp_path, f"""\
FROM base:1
RUN ln -s {target} /out && ln -s {target}/canary /filelink
COPY f /out/f
COPY f2 /out/canary
COPY <<EOF /out/g
from a heredoc
EOF
COPY f3 /out/sub/deeper/
COPY f4 /filelink
""", {"f": "file\n", "f2": "file2\n", "f3": "file3\n", "f4": "file4\n"})
    img = _built(ctx, f"esc:run-{link}")
    # The image's /out resolves to <home path> inside the image; the host home is untouched.
    out = _sh(img, f"cat /out/f /out/g /out/sub/deeper/f3 {home}/f {home}/canary; "
                   f"test -L /out && test -d {home} && echo inside")
    # /filelink -> <home>/canary: the last COPY wrote the image's <home>/canary (the link followed
    # inside the image, as BuildKit resolves a destination in the build root).
    assert out == "file\nfrom a heredoc\nfile3\nfile\nfile4\ninside\n"


def test_copy_from_a_stage_does_not_read_host_files_through_its_links(store_env, tmp_path, home):
    ctx = _ctx(tmp_path, f"""\
FROM base:1 AS stage1
RUN ln -s {home} /link && ln -s ../../../../../../../../..{home}/.ssh/id_rsa /keylink
FROM base:1
COPY --from=stage1 /link /copied-link
COPY --from=stage1 /keylink /copied-key
""")
    img = _built(ctx, "esc:fromlinks")
    # Symlinks are copied as symlinks: nothing of the host is read.
    assert _sh(img, "readlink /copied-link; cat /copied-key 2>/dev/null || echo dangling") == f"{home}\ndangling\n"
    for i, src in enumerate(("/link/.ssh/id_rsa", "/link/canary", "/keylink/../canary")):
        ctx2 = tmp_path / f"c{i}"
        ctx2.mkdir()
        (ctx2 / "Dockerfile").write_text(f"FROM esc:fromlinks AS s\nFROM base:1\nCOPY --from=s {src.replace('/link', '/copied-link')} /leak\n")
        r = _build(ctx2, "esc:leak")
        assert r.returncode == 125 and "no such file" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_add_of_a_local_tar_through_a_symlinked_destination(store_env, tmp_path, home):
    ctx = _ctx(tmp_path, f"FROM base:1\nRUN ln -s {home} /out\nADD payload.tar /out/\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("canary", b"from the tar\n"), ("new/inside.txt", b"inside\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    (ctx / "payload.tar").write_bytes(buf.getvalue())
    img = _built(ctx, "esc:addtar")
    assert _sh(img, f"cat {home}/canary {home}/new/inside.txt /out/canary") == "from the tar\ninside\nfrom the tar\n"


def test_chown_and_chmod_never_apply_through_a_symlink(store_env, tmp_path, home):
    ctx = _ctx(tmp_path, f"""\
FROM base:1
RUN ln -s {home} /out && ln -s {home}/canary /lnk
COPY --chown=1000:1000 --chmod=0777 f /out/
COPY --chown=1000:1000 --chmod=0700 d/ /dd/
COPY --chown=1000:1000 --chmod=0777 f /lnk
""", {"f": "file\n", "d/plain": "p\n"})
    (ctx / "d" / "hostlink").symlink_to(home / "canary")
    (ctx / "d" / "hostdir").symlink_to(home)
    img = _built(ctx, "esc:chown")
    owner = "1000 1000" if has_subid_range() else "0 0"  # single id: --chown warns, files stay root's
    out = _sh(img, f"for p in {home}/f /dd/plain {home}/canary; do ls -ln $p | awk '{{print $1, $3, $4}}'; done; "
                   "readlink /dd/hostlink; readlink /dd/hostdir; ls -lnd /dd/hostlink | awk '{print $3, $4}'")
    assert out.split("\n") == [f"-rwxrwxrwx {owner}", f"-rwx------ {owner}", f"-rwxrwxrwx {owner}",
                                f"{home}/canary", str(home), owner, ""]


def test_symlinks_of_the_base_image_resolve_inside_it(store_env, tmp_path, home):
    """The merged view: /app -> /opt/app and /lib -> usr/lib in an earlier layer are followed inside
    the image (the copied-up /opt/app keeps its mode and owner), a directory deleted by a RUN is
    made anew without its old content, and /app and /lib stay symlinks."""
    ctx = _ctx(tmp_path, """\
FROM base:1
RUN mkdir -p /opt/app /usr/lib /gone && echo old > /gone/old && chmod 750 /opt/app \\
 && (chown 1000:1000 /opt/app 2>/dev/null || true) && ln -s /opt/app /app && rm -rf /lib && ln -s usr/lib /lib
RUN rm -rf /gone
COPY x /app/
COPY r/ /
COPY x /gone/
COPY r2/ /
""", {"x": "x\n", "r/lib/libz.so": "lib\n", "r/etc/conf": "conf\n"})
    for d in ("opt", "lib", "gone"):  # empty directories over the image's own (and a symlink to one)
        (ctx / "r2" / d).mkdir(parents=True)
    img = _built(ctx, "esc:merged")
    owner = "1000 1000" if has_subid_range() else "0 0"
    out = _sh(img, "cat /opt/app/x /usr/lib/libz.so /etc/conf /gone/x; ls /gone; readlink /app; readlink /lib; "
                   "ls -lnd /opt/app | awk '{print $1, $3, $4}'")
    assert out == f"x\nlib\nconf\nx\nx\n/opt/app\nusr/lib\ndrwxr-x--- {owner}\n"


def test_symlink_loops_and_files_in_the_way_are_errors(store_env, tmp_path, home):
    ctx = _ctx(tmp_path, "FROM base:1 AS s\nRUN ln -s loop /loop\n", {"x": "x\n"})
    _built(ctx, "esc:loop")
    for i, line in enumerate(("COPY x /loop/y", "COPY --from=esc:loop /loop/y /y", "COPY x /etc/passwd/y",
                              "COPY x x /etc/passwd")):
        ctx2 = tmp_path / f"c{i}"
        ctx2.mkdir()
        (ctx2 / "Dockerfile").write_text(f"FROM esc:loop\n{line}\n")
        (ctx2 / "x").write_text("x\n")
        r = _build(ctx2, "esc:err")
        assert r.returncode == 125 and "Dockerfile:2" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert ("symbolic links" in r.stderr) if i < 2 else ("not a directory" in r.stderr), r.stderr


def test_copy_from_an_empty_stage_does_not_read_the_context(store_env, tmp_path, home):
    ctx = _ctx(tmp_path, "FROM scratch AS empty\nFROM base:1\nCOPY --from=empty /x /x\n", {"x": "context\n"})
    r = _build(ctx, "esc:empty")
    assert r.returncode == 125 and "no such file" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_add_of_urls_through_symlinks(store_env, tmp_path, home):
    import http.server
    import threading
    served = tmp_path / "served"
    served.mkdir()
    for name in ("canary", "x", "other"):
        (served / name).write_text(f"{name} over http\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    addr = host_address()  # not 127.0.0.1: a build reaches the host's loopback only with --network host
    assert addr, "this machine has no non-loopback address to serve on"
    srv = http.server.ThreadingHTTPServer((addr, 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://{addr}:{srv.server_address[1]}"
        ctx = _ctx(tmp_path, f"""\
FROM base:1
RUN ln -s {home} /out && ln -s {home}/canary /lnk
ADD {url}/canary /out/
ADD {url}/x /out/sub/
ADD {url}/other /lnk
""")
        img = _built(ctx, "esc:addurl")
    finally:
        srv.shutdown()
    assert _sh(img, f"cat /out/sub/x {home}/canary; readlink /lnk") == f"x over http\nother over http\n{home}/canary\n"
