"""sbx build, diff and commit, checked by running what they produce."""
import json
import os
import tarfile

import pytest

import sbxtest
from sbxtest import sbx


@pytest.fixture(scope="module")
def store_env(tmp_path_factory, busybox_rootfs):
    """A store with base:1, a busybox image imported from the test rootfs."""
    d = tmp_path_factory.mktemp("buildstore")
    os.environ["SBX_ROOT"] = str(d / "data")
    tar = d / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    r = sbx("import", str(tar), "base:1")
    assert r.returncode == 0, r.stderr
    yield d
    os.environ.pop("SBX_ROOT", None)
    # Layers built with a subuid range hold files of subordinate ids: remove them from inside.
    import sandbox
    sandbox.run(["rm", "-rf", str(d)], rootfs="/", network="host", namespaces=("user",))


def _ctx(tmp_path, dockerfile, files=None):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return ctx


def _build(ctx, *args):
    return sbx("build", *args, str(ctx), timeout=120)


def _run(image, *cmd):
    return sbx("run", "--rm", image, *cmd, timeout=60)


def _inspect(image):
    r = sbx("inspect", image)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return doc[0] if isinstance(doc, list) else doc


def test_instructions_by_running_the_image(store_env, tmp_path):
    tar_src = tmp_path / "payload"
    tar_src.mkdir()
    (tar_src / "inside.txt").write_text("from a tar\n")
    files = {"app/main.sh": "echo main\n", "app/lib/x.txt": "lib\n", "app/skip.log": "no\n",
             ".dockerignore": "app/*.log\n", "notes.md": "n1\n", "more.md": "n2\n"}
    ctx = _ctx(tmp_path, """\
# escape=\\
ARG VERSION=1.0
FROM base:1 AS build
ARG VERSION
ARG EXTRA=default
ENV APP_HOME=/opt/app \\
    MODE=${EXTRA:-none}
WORKDIR $APP_HOME
COPY app/ ./
COPY *.md docs/
COPY --chmod=0751 app/main.sh /usr/local/bin/main
ADD payload.tar /opt/unpacked/
RUN echo "version=$VERSION extra=$EXTRA mode=$MODE" > build.txt
RUN <<EOT
set -e
mkdir -p /opt/app/data
echo heredoc > /opt/app/data/h.txt
EOT
SHELL ["/bin/sh", "-c"]
LABEL org.test.name="built by sbx" version=$VERSION
EXPOSE 8080 53/udp
VOLUME /opt/app/data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD true
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /opt/app/build.txt"]
""", files)
    with tarfile.open(ctx / "payload.tar", "w") as tf:
        tf.add(tar_src / "inside.txt", arcname="inside.txt")
    r = _build(ctx, "-t", "every:1", "--build-arg", "EXTRA=given")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _run("every:1").stdout == "version=1.0 extra=given mode=given\n"
    r = _run("every:1", "pwd; id -u; ls /opt/app; ls /opt/app/docs; cat /opt/app/data/h.txt /opt/unpacked/inside.txt; "
             "ls -l /usr/local/bin/main | cut -c1-10; echo $APP_HOME")
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert out[0] == "/opt/app" and out[1] == "1000"
    assert "main.sh" in r.stdout and "lib" in r.stdout and "skip.log" not in r.stdout   # .dockerignore
    assert "more.md" in r.stdout and "notes.md" in r.stdout                           # glob into a dir
    assert "heredoc" in r.stdout and "from a tar" in r.stdout                          # RUN heredoc, ADD tar
    assert "-rwxr-x--x" in r.stdout and "/opt/app" in out[-2]
    cfg = _inspect("every:1")["Config"]
    assert cfg["Labels"] == {"org.test.name": "built by sbx", "version": "1.0"}
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert list(cfg["Volumes"]) == ["/opt/app/data"]
    assert cfg["StopSignal"] == "SIGINT" and cfg["Healthcheck"]["Retries"] == 2
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["User"] == "1000:1000"


def test_multi_stage_target_and_onbuild(store_env, tmp_path):
    ctx = _ctx(tmp_path, """\
FROM base:1 AS first
RUN echo one > /one
ONBUILD RUN echo triggered > /from-onbuild

FROM first AS second
RUN cat /one > /two

FROM base:1
COPY --from=second /two /final
CMD ["cat", "/final"]
""")
    assert _build(ctx, "-t", "ms:1").returncode == 0
    assert _run("ms:1").stdout == "one\n"
    r = _build(ctx, "-t", "ms:first", "--target", "first")
    assert r.returncode == 0
    assert _run("ms:first", "cat", "/one").stdout == "one\n"
    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text("FROM ms:first\nRUN cat /from-onbuild\n")
    r = _build(child, "-t", "child:1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _run("child:1", "cat", "/from-onbuild").stdout == "triggered\n"
    r = _build(ctx, "--target", "nope")
    assert r.returncode == 125 and "nope" in r.stderr


def test_onbuild_copy_from_a_stage_builds_that_stage(store_env, tmp_path):
    """BuildKit counts the ONBUILD triggers a base brings when it works out which stages the
    target needs: ONBUILD COPY --from=assets makes `assets` needed (from a base stage of the same
    file, and from a base image's config), while a stage nothing reaches is still not built."""
    ctx = _ctx(tmp_path, """\
FROM base:1 AS broken
RUN exit 7

FROM base:1 AS assets
RUN echo asset-1 > /asset

FROM base:1 AS tmpl
ONBUILD COPY --from=assets /asset /got-asset

FROM tmpl
RUN cat /got-asset > /seen
""")
    r = _build(ctx, "-t", "onb:1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _run("onb:1", "cat", "/seen").stdout == "asset-1\n"
    r = _build(ctx, "-t", "onb:tmpl", "--target", "tmpl")  # the template image keeps its trigger
    assert r.returncode == 0, r.stdout + r.stderr
    assert _inspect("onb:tmpl")["Config"]["OnBuild"] == ["COPY --from=assets /asset /got-asset"]
    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text("FROM base:1 AS broken\nRUN exit 7\n"
                                      "FROM base:1 AS assets\nRUN echo asset-2 > /asset\n"
                                      "FROM onb:tmpl\nRUN cat /got-asset > /seen\n")
    r = _build(child, "-t", "onb:2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _run("onb:2", "cat", "/seen").stdout == "asset-2\n"


def test_cache_follows_content_not_timestamps(store_env, tmp_path):
    """The context's file digests are remembered by stat (device, inode, size, mtime, ctime):
    a file rewritten with the same size and its old mtime put back still misses the cache (its
    ctime moved), a rebuild with nothing changed hits it, and so does one after a touch."""
    import time
    ctx = _ctx(tmp_path, "FROM base:1\nCOPY d/ /d/\nRUN cat /d/f /d/g > /out\n",
               {"d/f": "aaaa\n", "d/g": "gggg\n"})
    time.sleep(2.1)  # older than the racy window: the digests are remembered
    first = _build(ctx, "-q", "-t", "memo:1")
    assert first.returncode == 0, first.stderr
    again = _build(ctx, "-t", "memo:1")
    assert again.stdout.count("CACHED") == 2 and again.stdout.strip().splitlines()[-1] == first.stdout.strip()
    f = ctx / "d" / "f"
    st = os.stat(f)
    f.write_text("bbbb\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_size == st.st_size and os.stat(f).st_mtime_ns == st.st_mtime_ns
    changed = _build(ctx, "-t", "memo:2")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.count("CACHED") == 0
    assert _run("memo:2", "cat", "/out").stdout == "bbbb\ngggg\n"
    os.utime(ctx / "d" / "g")  # new times, same content: still the same step
    touched = _build(ctx, "-t", "memo:2")
    assert touched.stdout.count("CACHED") == 2, touched.stdout


def test_layers_are_reproducible_and_readable_by_gzip(store_env, tmp_path):
    """A build's layers are gzip'd fast (zlib's level 1, in blocks on several threads) and still
    reproducible: two --no-cache builds of the same COPY give the same blob digest (a RUN's files
    get the time they were made), and each blob is one gzip stream any gunzip reads back to the
    tar its diffID names."""
    import gzip
    import hashlib
    big = os.urandom(1 << 20).hex().encode() * 2  # 4 MiB: several compression blocks
    ctx = _ctx(tmp_path, "FROM base:1\nCOPY big /big\nRUN cp /big /big2 && echo x > /x\n", {"big": big})
    digests = []
    for tag in ("repro:1", "repro:2"):
        r = _build(ctx, "--no-cache", "-q", "-t", tag)
        assert r.returncode == 0, r.stderr
        doc = _inspect(tag)
        digests.append([(lay["Digest"], lay["Size"]) for lay in doc["Manifest"]["Layers"][-2:]])
    assert digests[0][0] == digests[1][0]
    doc = _inspect("repro:1")
    blobs = os.path.join(os.environ["SBX_ROOT"], "blobs", "sha256")
    for (digest, size), diff_id in zip(digests[0], doc["RootFS"]["Layers"][-2:]):
        with open(os.path.join(blobs, digest.split(":", 1)[1]), "rb") as f:
            data = f.read()
        assert len(data) == size and "sha256:" + hashlib.sha256(data).hexdigest() == digest
        assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == diff_id


def test_run_steps_have_a_volatile_overlay_and_containers_do_not(store_env, tmp_path):
    """A RUN step's root is an overlay mounted volatile (fsync there is a no-op: the step's layer
    blob is what is made durable), while a container run from the image keeps fsync."""
    ctx = _ctx(tmp_path, "FROM base:1\nRUN grep ' / ' /proc/mounts > /step-mounts\n")
    r = _build(ctx, "-t", "vol:1")
    assert r.returncode == 0, r.stdout + r.stderr
    step = _run("vol:1", "cat", "/step-mounts").stdout
    assert step.startswith("overlay / overlay ") and "volatile" in step, step
    run = _run("vol:1", "grep", " / ", "/proc/mounts").stdout
    assert run.startswith("overlay / overlay ") and "volatile" not in run, run


def test_cache_hit_miss_and_no_cache(store_env, tmp_path):
    ctx = _ctx(tmp_path, "FROM base:1\nARG N=1\nCOPY f /f\nRUN cat /f > /g; echo $N >> /g\n", {"f": "v1\n"})
    first = _build(ctx, "-q")
    assert first.returncode == 0, first.stderr
    again = _build(ctx)
    assert again.stdout.count("CACHED") == 2
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip()      # the same image id
    (ctx / "f").write_text("v2\n")
    changed = _build(ctx, "-t", "cache:2")
    assert changed.stdout.count("CACHED") == 0
    assert _run("cache:2", "cat", "/g").stdout == "v2\n1\n"
    arg = _build(ctx, "-t", "cache:3", "--build-arg", "N=2")
    assert arg.stdout.count("CACHED") == 1                                      # COPY hit, RUN re-run
    assert _run("cache:3", "cat", "/g").stdout == "v2\n2\n"
    assert _build(ctx, "--no-cache").stdout.count("CACHED") == 0


def test_failing_run_stores_nothing(store_env, tmp_path):
    before = sbx("images", "-q").stdout
    ctx = _ctx(tmp_path, "FROM base:1\nRUN echo output-of-step; exit 3\n")
    r = _build(ctx, "-t", "broken:1")
    assert r.returncode == 125
    assert "output-of-step" in r.stdout and "non-zero code: 3" in r.stderr and "Traceback" not in r.stderr
    assert sbx("images", "-q").stdout == before
    assert sbx("run", "--rm", "--pull", "never", "broken:1", "true").returncode == 125


@pytest.mark.parametrize("text,line,word", [
    ("FROM base:1\nFOO bar\n", 2, "unknown instruction"),
    ("RUN true\n", 1, "FROM"),
    ("FROM base:1\nRUN <<EOF\necho\n", 2, "heredoc"),
])
def test_malformed_dockerfiles_have_line_numbers(store_env, tmp_path, text, line, word):
    r = _build(_ctx(tmp_path, text))
    assert r.returncode == 125 and f"Dockerfile:{line}" in r.stderr and word in r.stderr


def test_diff_and_commit_round_trip(store_env, tmp_path):
    long = "d" * 120
    script = (f"cd /srv && rm gone && rm -r olddir && mkdir olddir && echo fresh > olddir/new && "
              f"mv torename renamed && ln keep hard && ln -s keep soft && chmod 4755 suid && "
              f"mkdir emptydir && mkdir -p {long}/x && echo u > 'ünïcødé' && echo long > {long}/x/{'f' * 100}")
    ctx = _ctx(tmp_path, """\
FROM base:1
RUN mkdir /srv && cd /srv && echo g > gone && mkdir olddir && echo o > olddir/old && \
    echo r > torename && echo k > keep && echo s > suid
""")
    assert _build(ctx, "-t", "rt:1").returncode == 0
    sbx("rm", "-f", "rt-c")
    r = sbx("run", "--name", "rt-c", "rt:1", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    d = sbx("diff", "rt-c")
    assert d.returncode == 0, d.stderr
    lines = set(d.stdout.splitlines())
    for want in ("D /srv/gone", "D /srv/torename", "A /srv/renamed", "A /srv/hard", "A /srv/soft",
                 "C /srv/suid", "A /srv/emptydir", "A /srv/ünïcødé", "C /srv/olddir", "A /srv/olddir/new"):
        assert want in lines, (want, d.stdout)
    assert not [x for x in lines if x.endswith(("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"))]
    c = sbx("commit", "-c", "CMD [\"ls\", \"/srv\"]", "-m", "round trip", "rt-c", "rt:2")
    assert c.returncode == 0, c.stderr
    assert sbx("rm", "rt-c").returncode == 0
    check = ("cd /srv && test ! -e gone && test ! -e olddir/old && cat olddir/new renamed && "
             "test $(stat -c %i keep) = $(stat -c %i hard) && readlink soft && stat -c %a suid && "
             f"test -d emptydir && cat 'ünïcødé' {long}/x/{'f' * 100}")
    r = _run("rt:2", "sh", "-c", check)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["fresh", "r", "keep", "4755", "u", "long"]
    assert _run("rt:2").stdout.split()[0] == long        # the -c CMD


def test_commit_of_a_rootfs_container(store_env, tmp_path, busybox_rootfs):
    sbx("rm", "-f", "fs-c")
    r = sbx("run", "--name", "fs-c", "--rootfs", str(busybox_rootfs), "sh", "-c", "echo made > /made")
    assert r.returncode == 0, r.stderr
    assert sbx("commit", "fs-c", "fromfs:1").returncode == 0
    assert _run("fromfs:1", "cat", "/made", "/etc/marker").stdout == "made\n" + sbxtest.MARKER_CONTENT
    sbx("rm", "fs-c")


def test_add_fetches_urls(store_env, tmp_path):
    """ADD URL downloads over HTTP (a server on loopback here) into the image, mode 0600."""
    import http.server
    import threading
    served = tmp_path / "served"
    served.mkdir()
    (served / "data.txt").write_text("over http\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    addr = sbxtest.host_address()  # not 127.0.0.1: a build reaches the host's loopback only with --network host
    assert addr, "this machine has no non-loopback address to serve on"
    srv = http.server.ThreadingHTTPServer((addr, 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://{addr}:{srv.server_address[1]}/data.txt"
        ctx = _ctx(tmp_path, f"FROM base:1\nADD {url} /fetched/\nADD {url} /renamed.txt\n")
        r = _build(ctx, "-t", "addurl:1")
        assert r.returncode == 0, r.stdout + r.stderr
        r = _run("addurl:1", "sh", "-c", "cat /fetched/data.txt /renamed.txt; stat -c %a /renamed.txt")
        assert r.stdout == "over http\nover http\n600\n", r.stderr
        (tmp_path / "b").mkdir()
        bad = _ctx(tmp_path / "b", f"FROM base:1\nADD {url}.missing /x\n")
        r = _build(bad)
        assert r.returncode == 125 and "404" in r.stderr and "Traceback" not in r.stderr
    finally:
        srv.shutdown()


def _refused(r, where, words):
    """One `sbx: WHERE: ...` error line (exit 125) holding each of words; no traceback."""
    err = [x for x in r.stderr.splitlines() if x.startswith("sbx: ") and not x.startswith("sbx: hint: ")]
    assert r.returncode == 125, r.stdout + r.stderr
    assert "sbx: hint: " in r.stderr, r.stderr
    assert len(err) == 1 and err[0].startswith(f"sbx: {where}: "), r.stderr
    assert all(w in err[0] for w in words), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


@pytest.mark.parametrize("step,words", [
    ("COPY --chmod=99999 f /f", ["invalid --chmod value '99999'"]),
    ("COPY --chmod=abc f /f", ["invalid --chmod value 'abc'"]),
    ("COPY --chmod=u+x f /f", ["invalid --chmod value 'u+x'"]),
    ("ADD --chmod=888 f /f", ["invalid --chmod value '888'"]),
    ("COPY --chmod=-1 f /f", ["invalid --chmod value '-1'"]),
    ("COPY --chmod=7777777 f /f", ["invalid --chmod value '7777777'"]),
    ("RUN --security=insecure true", ["RUN --security=insecure is not supported yet"]),
    ("COPY --exclude=*.md f /f", ["COPY --exclude=*.md is not supported yet"]),
    ("ADD --exclude=*.md f /f", ["ADD --exclude", "not supported yet"]),
    ("COPY --parents f /f", ["COPY --parents is not supported yet"]),
    ("ADD --checksum=sha256:0000 f /f", ["ADD --checksum", "not supported yet"]),
    ("ADD --unpack=true f /f", ["ADD --unpack", "not supported yet"]),
    ("ADD --keep-git-dir f /f", ["ADD --keep-git-dir", "not supported yet"]),
    ("STOPSIGNAL 99", ["invalid signal '99'"]),
    ("STOPSIGNAL SIGFOO", ["invalid signal 'SIGFOO'"]),
    ("EXPOSE abc", ["invalid port 'abc'"]),
    ("EXPOSE 99999999", ["invalid port '99999999'"]),
    ("EXPOSE 80/bogus", ["invalid protocol 'bogus'"]),
    ("USER 1:2:3", ["invalid user '1:2:3'"]),
])
def test_bad_or_unsupported_steps_are_refused_before_any_work(store_env, tmp_path, step, words):
    ctx = _ctx(tmp_path, f"FROM base:1\nRUN echo ran-a-step\n{step}\n", {"f": "f\n"})
    r = _build(ctx, "-t", "refused:1")
    _refused(r, "Dockerfile:3", words)
    assert "ran-a-step" not in r.stdout and "STEP" not in r.stdout   # refused before the first step
    assert "refused:1" not in sbx("images").stdout


@pytest.mark.parametrize("step,words", [
    ("COPY --chmod=$V f /f", ["invalid --chmod value '9'"]),
    ("STOPSIGNAL $V", ["invalid signal '9x'"]),
    ("EXPOSE $V", ["invalid port '9x'"]),
])
def test_values_from_variables_are_checked_once_expanded(store_env, tmp_path, step, words):
    v = "9" if "chmod" in step else "9x"
    ctx = _ctx(tmp_path, f"FROM base:1\nARG V={v}\n{step}\n", {"f": "f\n"})
    _refused(_build(ctx), "Dockerfile:3", words)


def test_values_docker_accepts_still_build(store_env, tmp_path):
    ctx = _ctx(tmp_path, """\
FROM base:1
ARG M=0640
COPY --chmod=4755 f /suid
COPY --chmod=$M f /plain
COPY --chmod=0 f /none
WORKDIR /srv
WORKDIR rel/../sub
EXPOSE 8000-8002/udp 90/SCTP
STOPSIGNAL 9
ARG NOUSER
USER $NOUSER
RUN test "$(id -u)" = 0
USER 1000:
CMD ["/bin/sh", "-c", "pwd; stat -c %a /suid /plain /none"]
""", {"f": "f\n"})
    r = _build(ctx, "-t", "accepted:1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _run("accepted:1").stdout.split() == ["/srv/sub", "4755", "640", "0"]
    cfg = _inspect("accepted:1")["Config"]
    assert set(cfg["ExposedPorts"]) == {"8000/udp", "8001/udp", "8002/udp", "90/sctp"}
    assert cfg["StopSignal"] == "9" and cfg["User"] == "1000:"


def test_from_platform_other_than_the_hosts_is_refused(store_env, tmp_path):
    ctx = _ctx(tmp_path, "FROM base:1\nRUN echo ran-a-step\nFROM --platform=linux/s390x base:1\n")
    r = _build(ctx)
    _refused(r, "Dockerfile:3", ["FROM --platform=linux/s390x is not supported yet"])
    assert "ran-a-step" not in r.stdout
    (tmp_path / "host").mkdir()
    ctx = _ctx(tmp_path / "host", "FROM --platform=$BUILDPLATFORM base:1\nRUN echo ran-a-step\n")
    r = _build(ctx)      # the host's own platform, as BuildKit's automatic ARG names it
    assert r.returncode == 0 and "ran-a-step" in r.stdout, r.stdout + r.stderr


def test_copy_from_a_missing_stage_or_image_names_the_line(store_env, tmp_path):
    ctx = _ctx(tmp_path, "FROM base:1\nCOPY --from=nostage /etc/marker /m\n")
    _refused(_build(ctx), "Dockerfile:2", ["--from=nostage"])


def test_commit_changes_are_checked(store_env, tmp_path):
    sbx("rm", "-f", "chg-c")
    assert sbx("run", "--name", "chg-c", "base:1", "true").returncode == 0
    try:
        for change, words in [("ENV =x", ["names can not be blank"]), ("STOPSIGNAL 99", ["invalid signal '99'"]),
                              ("EXPOSE 80/bogus", ["invalid protocol 'bogus'"]), ("USER 1:2:3", ["invalid user"]),
                              ("CMD true\nENV a=b", ["exactly one instruction"])]:
            r = sbx("commit", "-c", change, "chg-c", "chg:bad")
            _refused(r, f"--change {change!r}", words)
        assert "chg:bad" not in sbx("images").stdout
        # Docker takes CMD text that is not a JSON array as the shell form; WORKDIR may be relative.
        r = sbx("commit", "-c", "CMD [bad", "-c", "WORKDIR /a", "-c", "WORKDIR b", "-c", "STOPSIGNAL SIGINT",
                "chg-c", "chg:1")
        assert r.returncode == 0, r.stderr
        cfg = _inspect("chg:1")["Config"]
        assert cfg["Cmd"] == ["/bin/sh", "-c", "[bad"] and cfg["WorkingDir"] == "/a/b" and cfg["StopSignal"] == "SIGINT"
    finally:
        sbx("rm", "-f", "chg-c")


def test_labels_from_flags_and_files_override_the_dockerfiles(store_env, tmp_path):
    """--label/-l and --label-file go into the image config's Labels: files first, then the
    flags, a later key winning, and both over the Dockerfile's LABEL (Docker's order)."""
    ctx = _ctx(tmp_path, "FROM base:1\nLABEL from.file=dockerfile kept=yes\n")
    lf = tmp_path / "labels"
    lf.write_text("# a comment\n\n  from.file=label-file\nbare\nspaced=a b = c\nflag=from-file\n")
    r = _build(ctx, "-t", "labelled:1", "--label-file", str(lf), "--label", "flag=from-flag", "-l", "empty",
               "-l", "eq=x=y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _inspect("labelled:1")["Config"]["Labels"] == {
        "from.file": "label-file", "kept": "yes", "bare": "", "spaced": "a b = c", "flag": "from-flag",
        "empty": "", "eq": "x=y"}


@pytest.mark.parametrize("content,args,words", [
    (None, (), ["cannot read label file", "missing"]),
    (b"good=1\nbad key=2\n", (), ["line 2", "'bad key'", "whitespace"]),
    (b"k=\xff\n", (), ["invalid utf8"]),
    (b"", ("--label", "=v"), ["invalid label", "empty"]),
])
def test_bad_labels_are_refused_before_building(store_env, tmp_path, content, args, words):
    ctx = _ctx(tmp_path, "FROM base:1\nRUN touch /ran\n")
    lf = tmp_path / "missing"
    if content is not None:
        lf = tmp_path / "lf"
        lf.write_bytes(content)
    r = _build(ctx, "--label-file", str(lf), *args)
    assert r.returncode == 125, r.stdout + r.stderr
    assert r.stderr.startswith("sbx: ") and "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr
    assert "RUN" not in r.stdout
