"""`sbx build` against BuildKit's documented semantics (issue 9), with buildah as a second opinion.

Every test builds a Dockerfile with sbx and reads the produced image the way a registry would see
it (`sbx save --format oci-dir`: the config and the layer tars, flattened with their whiteouts),
then asserts BuildKit's rule (the Dockerfile reference / moby/buildkit's dockerfile2llb and
fsutil copy).  Where buildah can build the same file here (as root, or rootless with a subuid
range), it builds it too and its image is read the same way: the two must agree except where a
comment says BuildKit (whose rule sbx follows) and buildah differ.

Without a subordinate id range every file of an image is owned by root (one id is mapped), so
owner assertions there expect 0:0: the collapse is the documented single-id behaviour."""
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile

import pytest

import sbxtest
from buildcmp import Buildah, env_of, sbx_image
from debian_image import tar_bytes
from sbxtest import sbx

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAPPED = sbxtest.has_subid_range()           # sbx maps a subuid range (root has none here)
BUILDAH = os.geteuid() == 0 or MAPPED         # buildah can run a step: rootful, or with a range


def owner(uid, gid, mapped=MAPPED):
    """What an image records for a file given (uid, gid): itself where ids are mapped, else root."""
    return (uid, gid) if mapped else (0, 0)


@pytest.fixture(scope="module")
def base(tmp_path_factory, busybox_rootfs):
    """base:1 (the busybox test root filesystem, no Env in its config) in sbx's store, and a
    buildah holding the same image as localhost/base:1 (None where buildah cannot build here:
    rootless without a subuid range it cannot run a step)."""
    d = tmp_path_factory.mktemp("fidelity")
    old = os.environ.get("SBX_ROOT")
    os.environ["SBX_ROOT"] = str(d / "data")   # a store of the module's own
    tar = d / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    r = sbx("import", str(tar), "base:1")
    assert r.returncode == 0, r.stderr
    bh = None
    if BUILDAH:
        archive = d / "base.tar"
        r = sbx("save", "-o", str(archive), "base:1", timeout=60)
        assert r.returncode == 0, r.stderr
        bh = Buildah(d / "buildah")
        bh.load(archive, "localhost/base:1")
    yield bh
    if bh is not None:
        bh.remove()
    if old is None:
        os.environ.pop("SBX_ROOT", None)
    else:
        os.environ["SBX_ROOT"] = old
    # Layers built with a subuid range hold files of subordinate ids: remove them from inside.
    import sandbox
    sandbox.run(["rm", "-rf", str(d / "data")], rootfs="/", network="host", namespaces=("user",))


def ctx_of(tmp_path, dockerfile, files=None, name="ctx"):
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, content in (files or {}).items():
        p = ctx / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    return ctx


def build(ctx, tag, *args):
    r = sbx("build", "-t", tag, *args, str(ctx), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def both(base, ctx, tmp_path, tag, *args):
    """Build with sbx (and buildah where it runs): [(config, tree, ids mapped)] of each, sbx first."""
    build(ctx, tag, *args)
    out = [(*sbx_image(tag, tmp_path), MAPPED)]
    if base is not None:  # on a copy: buildah's rw bind mounts write through to the context (BuildKit's don't)
        copy = ctx.parent / f"{ctx.name}-buildah"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(ctx, copy, symlinks=True)
        r = base.build(copy, tag, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        out.append((*base.image(tag, tmp_path), True))
    return out



# --- 1. the default PATH -------------------------------------------------------------------------------

def test_path_is_set_when_the_base_sets_none(base, tmp_path):
    """BuildKit puts PATH=/usr/local/sbin:... into every stage whose base has none (scratch
    included), so ENV PATH=/opt/x/bin:$PATH extends it; a base's own PATH is kept as it is."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
ENV PATH=/opt/x/bin:$PATH
RUN echo "$PATH" > /seen
""")
    images = both(base, ctx, tmp_path, "fid-path:1")
    for config, tree, _ in images:
        assert env_of(config)["PATH"] == "/opt/x/bin:" + DEFAULT_PATH
    r = sbx("run", "--rm", "fid-path:1", "cat", "/seen")
    assert r.stdout == "/opt/x/bin:" + DEFAULT_PATH + "\n", r.stderr
    # A base with a PATH of its own: no default appended, nothing duplicated.
    child = ctx_of(tmp_path, "FROM base:1 AS own\nENV PATH=/own\nFROM base:1 AS other\nFROM own\nENV X=1\n", name="own")
    config, _, _ = both(base, child, tmp_path, "fid-path:2")[0]
    assert [e for e in config["config"]["Env"] if e.startswith("PATH=")] == ["PATH=/own"]
    # FROM scratch: the default PATH is in the config too (BuildKit and buildah alike).
    scratch = ctx_of(tmp_path, "FROM scratch\nCOPY f /f\n", {"f": "x"}, name="scratch")
    for config, tree, _ in both(base, scratch, tmp_path, "fid-path:3"):
        assert config["config"]["Env"] == ["PATH=" + DEFAULT_PATH]
        assert tree["/f"][0] == "f"


# --- 2. several pairs on one line ----------------------------------------------------------------------

def test_one_line_pairs_expand_with_the_values_from_before_it(base, tmp_path):
    """Docker's rule for ENV, ARG and LABEL: every value on one line is expanded with the
    environment as it was before the instruction, not with pairs set earlier on the line."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
ENV a=1
ENV a=2 b=$a c=${a}x d="$a $b"
ARG x=old
ARG x=new y=$x
LABEL a.l=$a b.l=$b
RUN echo "$a $b $c $d $x $y" > /seen
ENV e=$b
""")
    images = both(base, ctx, tmp_path, "fid-env:1")
    config, _, _ = images[0]
    env = env_of(config)
    assert (env["a"], env["b"], env["c"], env["d"], env["e"]) == ("2", "1", "1x", "1 ", "1")
    assert config["config"]["Labels"] == {"a.l": "2", "b.l": "1"}
    assert sbx("run", "--rm", "fid-env:1", "cat", "/seen").stdout == "2 1 1x 1  new old\n"
    for other, _, _ in images[1:]:  # buildah applies the same rule to ENV and LABEL
        assert {k: env_of(other)[k] for k in "abcde"} == {k: env[k] for k in "abcde"}
        labels = {k: v for k, v in other["config"]["Labels"].items() if k != "io.buildah.version"}
        assert labels == config["config"]["Labels"]


# --- 3. the scope of --chown ------------------------------------------------------------------------

def test_chown_applies_to_what_the_copy_creates_only(base, tmp_path):
    """COPY/ADD --chown gives its owner to the files it copies and to the directories the copy
    itself creates (the destination's missing parents included), never to a directory that
    already exists in the image as the destination (/usr/local/bin and /srv below)."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN mkdir -p /usr/local/bin /srv/keep && chmod 755 /usr/local/bin
COPY --chown=1000:1001 app/ /usr/local/bin/
COPY --chown=1000:1001 f /new/deep/dir/f
COPY --chown=1000:1001 tree/ /srv/
ADD --chown=1000:1001 f /added/
""", {"app/tool": "#!/bin/sh\n", "f": "f\n", "tree/keep/k": "k\n", "tree/sub/s": "s\n"})
    images = both(base, ctx, tmp_path, "fid-chown:1")
    for n, (_, tree, mapped) in enumerate(images):
        u = owner(1000, 1001, mapped)
        # owners as images record them (uid, gid)
        o = {p: tree[p][2:4] for p in tree}
        assert o["/usr/local/bin"] == (0, 0) and o["/usr/local/bin/tool"] == u
        assert o["/new"] == o["/new/deep"] == o["/new/deep/dir"] == o["/new/deep/dir/f"] == u
        assert o["/srv"] == (0, 0), n   # the destination existed before the step: left alone
        # A source directory merged into one the image has takes the source's metadata, as
        # fsutil's copy (BuildKit) overwrites a target's metadata below the destination.
        assert o["/srv/keep"] == u and o["/srv/keep/k"] == u and o["/srv/sub"] == u and o["/srv/sub/s"] == u
        assert o["/added"] == u and o["/added/f"] == u
        assert tree["/usr/local/bin"][1] == 0o755


# --- 4. COPY --from keeps owners --------------------------------------------------------------------

def test_copy_from_a_stage_keeps_the_sources_owners(base, tmp_path):
    """COPY --from=<stage> without --chown keeps each file's owner, mode and link (BuildKit); with
    --chown the given owner wins; from the context everything is root's."""
    data = tar_bytes([("data", "d", 0o750, 1000, 1000, b""), ("data/f", "f", 0o640, 1000, 2000, b"x\n"),
                      ("data/sub", "d", 0o700, 3000, 3000, b""), ("data/sub/g", "f", 0o600, 3000, 3001, b"g\n"),
                      ("data/link", "l", 0o777, 1000, 1000, "f")])
    ctx = ctx_of(tmp_path, """\
FROM base:1 AS src
ADD data.tar /
FROM base:1
COPY --from=src /data /copied
COPY --from=src /data/sub /sub
COPY --from=src --chown=42:43 /data /chowned
COPY data.tar /ctx.tar
""", {"data.tar": data})
    images = both(base, ctx, tmp_path, "fid-from:1")
    for _, tree, mapped in images:
        assert tree["/copied/f"][1:4] == (0o640, *owner(1000, 2000, mapped))
        assert tree["/copied/sub"][1:4] == (0o700, *owner(3000, 3000, mapped))
        assert tree["/copied/sub/g"][1:4] == (0o600, *owner(3000, 3001, mapped))
        assert tree["/copied/link"][0] == "l" and tree["/copied/link"][2:4] == owner(1000, 1000, mapped)
        assert tree["/sub/g"][2:4] == owner(3000, 3001, mapped)
        assert tree["/chowned/f"][2:4] == tree["/chowned/sub/g"][2:4] == owner(42, 43, mapped)
        assert tree["/ctx.tar"][2:4] == (0, 0)


# --- 5. ADD of a local tar ------------------------------------------------------------------------

def test_add_tar_applies_its_root_entry_to_the_destination(base, tmp_path):
    """ADD of a local archive unpacks it into the destination and gives the destination directory
    the mode and owner of the archive's "./" entry, whether the directory is new or not."""
    t = tar_bytes([("./", "d", 0o700, 1000, 1000, b""), ("./in", "f", 0o644, 1000, 1000, b"in\n")])
    plain = tar_bytes([("only", "f", 0o644, 0, 0, b"x\n")])
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN mkdir -m 755 /existing
ADD t.tar /fresh/
ADD t.tar /existing/
ADD plain.tar /noroot/
""", {"t.tar": t, "plain.tar": plain})
    images = both(base, ctx, tmp_path, "fid-addtar:1")
    for _, tree, mapped in images:
        assert tree["/fresh"][1:4] == (0o700, *owner(1000, 1000, mapped))
        assert tree["/existing"][1:4] == (0o700, *owner(1000, 1000, mapped))
        assert tree["/fresh/in"][1:4] == (0o644, *owner(1000, 1000, mapped))
        assert tree["/noroot"][1:4] == (0o755, 0, 0) and tree["/noroot/only"][0] == "f"


# --- 7. only the stages the target needs ------------------------------------------------------------

def test_only_stages_reachable_from_the_target_are_built(base, tmp_path):
    """BuildKit builds the target and what it reaches through FROM, COPY --from (its value
    expanded) and RUN --mount from=; an unused stage that fails does not fail the build."""
    ctx = ctx_of(tmp_path, """\
ARG PICK=picked
FROM base:1 AS broken
RUN echo running-broken; exit 7
FROM base:1 AS picked
RUN echo picked > /p
FROM base:1 AS unused
RUN echo running-unused
FROM picked AS via-from
RUN echo via > /v
FROM base:1
ARG PICK
COPY --from=$PICK /p /p
COPY --from=via-from /v /v
""")
    r = build(ctx, "fid-stages:1")
    assert "running-broken" not in r.stdout and "running-unused" not in r.stdout
    assert sbx("run", "--rm", "fid-stages:1", "cat", "/p", "/v").stdout == "picked\nvia\n"
    if base is not None:  # buildah builds only what the target needs as well
        r = base.build(ctx, "fid-stages:1")
        assert r.returncode == 0 and "running-broken" not in r.stdout, r.stdout + r.stderr
    r = sbx("build", "--target", "broken", str(ctx), timeout=120)
    assert r.returncode == 125 and "running-broken" in r.stdout and "non-zero code: 7" in r.stderr
    # A stage the target reaches that fails fails the build.
    r = sbx("build", "--build-arg", "PICK=broken", str(ctx), timeout=120)
    assert r.returncode == 125 and "running-broken" in r.stdout


# --- 6. RUN --mount, --network, --security ------------------------------------------------------------

def test_bind_mounts_show_sources_and_leave_no_trace(base, tmp_path):
    """type=bind mounts a context path (read-only unless rw, whose writes are discarded) or a
    stage's path (owners kept); .dockerignore'd files are not in it; the content is part of the
    step's cache key; no mount point is left in the image.  buildah agrees on the image's tree."""
    data = tar_bytes([("data", "d", 0o755, 0, 0, b""), ("data/s", "f", 0o640, 1000, 1001, b"from-stage\n")])
    ctx = ctx_of(tmp_path, """\
FROM base:1 AS stage
ADD data.tar /
FROM base:1
RUN --mount=type=bind,target=/ctx cat /ctx/f > /out1 && ls /ctx > /listed && ! touch /ctx/new 2>/dev/null
RUN --mount=type=bind,source=sub,target=/sub,rw touch /sub/written && cat /sub/g > /out2
RUN --mount=type=bind,from=stage,source=/data,target=/mnt/d cat /mnt/d/s > /out3 && stat -c %u:%g /mnt/d/s > /own
RUN --mount=type=bind,source=f,target=/file.txt cat /file.txt > /out4
""", {"f": "context-f\n", "sub/g": "g\n", "secret.key": "no\n", ".dockerignore": "secret.key\n", "data.tar": data})
    images = both(base, ctx, tmp_path, "fid-bind:1")
    r = sbx("run", "--rm", "fid-bind:1", "cat", "/out1", "/out2", "/out3", "/out4", "/own", "/listed")
    lines = r.stdout.splitlines()
    assert lines[:4] == ["context-f", "g", "from-stage", "context-f"], r.stdout + r.stderr
    assert lines[4] == "%d:%d" % owner(1000, 1001) and "secret.key" not in lines[5:] and "f" in lines[5:]
    outs = {"/out1", "/out2", "/out3", "/out4", "/own", "/listed"}
    # buildah agrees on what the mounts show, except /listed: it mounts the context without
    # applying .dockerignore, where BuildKit mounts the context it was sent (.dockerignore applied).
    for _, t, mapped in images[1:]:
        same = sorted(outs - {"/listed"} - ({"/own"} if not MAPPED else set()))
        assert [t[o][6] for o in same] == [images[0][1][o][6] for o in same]
    # Neither the mount points nor what rw wrote are in the image: BuildKit removes the stubs it
    # made to mount on; buildah leaves them as empty directories, so only sbx's tree is held to it.
    assert set(images[0][1]) - outs == set(sbx_image("base:1", tmp_path)[1])
    again = build(ctx, "fid-bind:1")
    assert again.stdout.count("CACHED") == 5
    (ctx / "secret.key").write_text("changed, but .dockerignore'd\n")
    assert build(ctx, "fid-bind:1").stdout.count("CACHED") == 5
    (ctx / "sub" / "g").write_text("changed\n")
    again = build(ctx, "fid-bind:2")
    assert again.stdout.count("CACHED") == 1  # the ADD; every RUN from the one mounting the context on
    assert sbx("run", "--rm", "fid-bind:2", "cat", "/out2").stdout == "changed\n"


def test_bind_mount_of_a_symlink_keys_the_cache_on_its_target(base, tmp_path):
    """A bind source that is a symbolic link mounts its target (followed inside the context:
    an absolute link names the context's own path, never the host's), and the step's cache key
    is that target's content, not the link: changing what the link points at re-runs the step
    (BuildKit hashes what the mount shows)."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN --mount=type=bind,source=cur,target=/m cat /m/f > /dir-out
RUN --mount=type=bind,source=abs,target=/f.txt cat /f.txt > /file-out
""", {"real/f": "one\n", "etc/passwd": "the context's own\n"})
    os.symlink("real", ctx / "cur")
    os.symlink("/etc/passwd", ctx / "abs")
    build(ctx, "fid-bindlink:1")
    r = sbx("run", "--rm", "fid-bindlink:1", "cat", "/dir-out", "/file-out")
    assert r.stdout == "one\nthe context's own\n", r.stdout + r.stderr
    assert build(ctx, "fid-bindlink:1").stdout.count("CACHED") == 2
    (ctx / "real" / "f").write_text("two\n")
    (ctx / "etc" / "passwd").write_text("changed\n")
    again = build(ctx, "fid-bindlink:2")
    assert again.stdout.count("CACHED") == 0, again.stdout
    r = sbx("run", "--rm", "fid-bindlink:2", "cat", "/dir-out", "/file-out")
    assert r.stdout == "two\nchanged\n", r.stdout + r.stderr


def test_cache_mounts_persist_between_builds_and_stay_out_of_the_image(base, tmp_path):
    """type=cache keeps its content between builds (never in the image, nor in the key: a rebuild
    is cached); uid/gid/mode apply when it is made; the same id is one directory (shared), private
    gives a step's second user its own; from= seeds a new cache."""
    seed = tar_bytes([("seed", "d", 0o755, 0, 0, b""), ("seed/s", "f", 0o644, 0, 0, b"seeded\n")])
    ctx = ctx_of(tmp_path, """\
FROM base:1 AS stage
ADD seed.tar /
FROM base:1
RUN --mount=type=cache,target=/var/cache/app,id=fid-c1,uid=1000,gid=1001,mode=0750 \\
    stat -c '%u:%g %a' /var/cache/app > /meta && echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count
RUN --mount=type=cache,id=fid-s,target=/a --mount=type=cache,id=fid-s,target=/b \\
    --mount=type=cache,id=fid-p,target=/p1,sharing=private --mount=type=cache,id=fid-p,target=/p2,sharing=private \\
    --mount=type=cache,id=fid-l,target=/l1,sharing=locked --mount=type=cache,id=fid-l,target=/l2,sharing=locked \\
    sh -c 'touch /a/x /p1/x /l1/x; test -e /b/x && test ! -e /p2/x && test -e /l2/x'
RUN --mount=type=cache,target=/seeded,from=stage,source=/seed,id=fid-seed cat /seeded/s > /seed-out
""", {"seed.tar": seed})
    build(ctx, "fid-cache:1")
    r = sbx("run", "--rm", "fid-cache:1", "cat", "/meta", "/count", "/seed-out")
    assert r.stdout.split("\n")[:3] == ["%d:%d 750" % owner(1000, 1001), "1", "seeded"], r.stdout + r.stderr
    _, tree = sbx_image("fid-cache:1", tmp_path)
    assert not {"/var/cache/app", "/var/cache", "/a", "/b", "/p1", "/p2", "/l1", "/l2", "/seeded"} & set(tree)
    assert build(ctx, "fid-cache:1").stdout.count("CACHED") == 4      # the cache is not in the key
    build(ctx, "fid-cache:2", "--no-cache")
    assert sbx("run", "--rm", "fid-cache:2", "cat", "/count").stdout == "2\n"   # kept between builds
    if base is not None:  # buildah (1.28 knows no sharing=private): the cache is not in its image either
        one = ctx_of(tmp_path, "".join((ctx / "Dockerfile").read_text().partition("RUN --mount=type=cache,id=fid-s")[:1]),
                     {"seed.tar": seed}, name="one")
        images = both(base, one, tmp_path, "fid-cache:3")
        for _, t, mapped in images:
            assert "/var/cache/app/log" not in t
        if os.geteuid() != 0:  # rootful buildah (1.28) shows the cache's owner shifted by its own id map
            assert images[1][1]["/meta"][6] == hashlib.sha256(b"1000:1001 750\n").hexdigest()[:16]


def test_tmpfs_secret_and_ssh_mounts(base, tmp_path):
    """tmpfs with its size; a secret as a file (default /run/secrets/ID, mode 0400) or an env
    variable, never in the image, its history or the build cache, and not in the cache key (a new
    value rebuilds nothing, as BuildKit); a missing secret is skipped unless required; an ssh
    mount forwards the agent socket given with --ssh, and is refused without one."""
    import socket
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cret-value-1")
    digest = hashlib.sha256(b"s3cret-value-1").hexdigest()[:16]
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN --mount=type=tmpfs,target=/scratch,size=1m df -k /scratch | tail -1 | awk '{print $2}' > /size && touch /scratch/x
RUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -c1-16)" = {digest} && stat -c %a /run/secrets/tok > /mode
RUN --mount=type=secret,id=tok,target=/etc/tok,uid=1000,mode=0440 --mount=type=secret,id=var,env=TOKEN \\
    test "$TOKEN" = from-env && stat -c '%u %a' /etc/tok > /mode2
RUN --mount=type=secret,id=absent cat /run/secrets/absent 2>/dev/null || echo skipped > /absent
""".replace("{digest}", digest))
    env = dict(os.environ, FID_VAR="from-env")
    r = sbx("build", "-t", "fid-sec:1", "--secret", f"id=tok,src={secret_file}", "--secret", "id=var,env=FID_VAR",
            str(ctx), env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "secret 'absent' was not given" in r.stdout
    r = sbx("run", "--rm", "fid-sec:1", "cat", "/size", "/mode", "/mode2", "/absent")
    assert r.stdout.split("\n")[:4] == ["1024", "400", "%d 440" % owner(1000, 0)[0], "skipped"], r.stdout + r.stderr
    config, tree = sbx_image("fid-sec:1", tmp_path)
    assert not {"/scratch", "/run/secrets", "/run/secrets/tok", "/etc/tok"} & set(tree) and "/run" in tree
    assert "s3cret" not in json.dumps(config)
    out = tmp_path / "sbx-oci-fid-sec-1"
    for blob in (out / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        assert b"s3cret" not in (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    grep = subprocess.run(["grep", "-r", "-l", "s3cret", os.environ["SBX_ROOT"]], capture_output=True, text=True)
    assert grep.stdout == "", grep.stdout
    secret_file.write_text("s3cret-value-2")   # another value: the steps stay cached, as BuildKit's
    r = sbx("build", "-t", "fid-sec:1", "--secret", f"id=tok,src={secret_file}", "--secret", "id=var,env=FID_VAR",
            str(ctx), env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.count("CACHED") == 4, r.stdout + r.stderr
    # required and missing: refused, naming the line
    req = ctx_of(tmp_path, "FROM base:1\nRUN --mount=type=secret,id=need,required true\n", name="req")
    r = sbx("build", str(req), timeout=60)
    assert r.returncode == 125 and "Dockerfile:2" in r.stderr and "'need' is required" in r.stderr
    # ssh: refused before any step without --ssh; forwarded with one
    sshctx = ctx_of(tmp_path, "FROM base:1\nRUN echo ran-a-step\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" "
                    "&& echo $SSH_AUTH_SOCK > /sock\n", name="ssh")
    r = sbx("build", str(sshctx), env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}, timeout=60)
    assert r.returncode == 125 and "Dockerfile:3" in r.stderr and "--ssh" in r.stderr and "ran-a-step" not in r.stdout
    sock_path = tmp_path / "agent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock_path))
    srv.listen(1)
    try:
        r = sbx("build", "-t", "fid-ssh:1", "--ssh", f"default={sock_path}", str(sshctx), timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sbx("run", "--rm", "fid-ssh:1", "cat", "/sock").stdout == "/run/buildkit/ssh_agent.0\n"
        assert "/run/buildkit" not in sbx_image("fid-ssh:1", tmp_path)[1]
    finally:
        srv.close()


def test_run_network_flag(base, tmp_path):
    """RUN --network=none gives the step no interface but loopback, whatever the build's default."""
    ctx = ctx_of(tmp_path, "FROM base:1\nRUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /ifs\n")
    build(ctx, "fid-net:1", "--network", "host")
    assert sbx("run", "--rm", "fid-net:1", "cat", "/ifs").stdout == "lo\n"


# --- 8. RUN's network ------------------------------------------------------------------------------------

def test_run_has_a_network_by_default_and_network_failures_name_it(base, tmp_path):
    """Docker's RUN has a network by default: sbx gives build steps the default private network
    of `sbx run` (slirp4netns or pasta: an interface beside lo, a resolver).  A step that fails
    with output that looks like a network failure says which network it had, and how to change it."""
    ctx = ctx_of(tmp_path, "FROM base:1\nRUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /ifs "
                 "&& grep -c nameserver /etc/resolv.conf > /dns\n")
    build(ctx, "fid-defnet:1")
    r = sbx("run", "--rm", "fid-defnet:1", "cat", "/ifs", "/dns")
    words = r.stdout.split()
    assert "lo" in words and len(words) >= 3 and words[-1] != "0", r.stdout + r.stderr
    fail = ctx_of(tmp_path, "FROM base:1\nRUN echo ran\nRUN nc -w 2 192.0.2.1 80 </dev/null\n", name="fail")
    for args in (("--network", "none"), ()):
        r = sbx("build", *args, str(fail), timeout=120)
        err = [x for x in r.stderr.splitlines() if x.startswith("sbx: Dockerfile:3")]
        if args:
            assert r.returncode == 125 and len(err) == 1, r.stdout + r.stderr
            assert "looks like a network failure, and the step had no network (none)" in err[0]
            assert "--network default" in r.stderr
        else:  # with the private network the connection is answered (refused): not blamed on the network
            assert r.returncode == 125 and len(err) == 1, r.stdout + r.stderr
            assert "non-zero code" in err[0] and "network failure" not in err[0]
    r = sbx("build", "--network", "container:x", str(fail), timeout=60)
    assert r.returncode == 125 and "not supported for builds" in r.stderr


@pytest.mark.parametrize("step,words", [
    ("RUN --mount=type=cache,target=/c,bogus=1 true", ["unexpected key 'bogus'"]),
    ("RUN --mount=type=bind,target=/c,size=1m true", ["unexpected key 'size' for mount type 'bind'"]),
    ("RUN --mount=type=tmpfs true", ["mount type 'tmpfs' needs a target"]),
    ("RUN --mount=type=tmpfs,target=/t,size=lots true", ["invalid size 'lots'"]),
    ("RUN --mount=type=nfs,target=/t true", ['unsupported mount type "nfs"']),
    ("RUN --mount=type=cache,target=/c,sharing=everyone true", ['unsupported sharing value "everyone"']),
    ("RUN --mount=type=ssh true", ["--mount=type=ssh needs the SSH agent socket 'default'"]),
    ("RUN --frobnicate true", ["unknown flag: --frobnicate"]),
    ("RUN --network=bridge true", ['network mode "bridge" not supported']),
    ("RUN --security=insecure true", ["RUN --security=insecure is not supported"]),
])
def test_bad_run_flags_and_mount_options_are_refused_naming_the_line(base, tmp_path, step, words):
    ctx = ctx_of(tmp_path, f"FROM base:1\nRUN echo ran-a-step\n{step}\n")
    r = sbx("build", str(ctx), timeout=60)
    err = [x for x in r.stderr.splitlines() if x.startswith("sbx: ") and not x.startswith("sbx: hint: ")]
    assert r.returncode == 125 and len(err) == 1 and "Dockerfile:3" in err[0], r.stdout + r.stderr
    assert all(w in err[0] for w in words), r.stderr
    assert "ran-a-step" not in r.stdout and "Traceback" not in r.stderr


# --- 9. root emulation for single-id builds ------------------------------------------------------------

def test_forced_root_emulation_fakes_owner_changes_and_device_nodes(base, tmp_path):
    """--force=seccomp (the default without a subuid range): chown, setuid/setgid/setgroups and
    mknod of a device succeed without effect; other mknod types (a FIFO) are made; --force with
    another value is refused."""
    ctx = ctx_of(tmp_path, """\
FROM base:1
RUN touch /f && chown 5:6 /f && mknod /dev-node c 1 3 && mkfifo /fifo && chown -h 7:7 /fifo \\
    && su -s /bin/sh root -c 'echo switched' > /su.out
""")
    r = build(ctx, "fid-force:1", "--force=seccomp")
    assert "RUN steps emulate root" in r.stdout
    _, tree = sbx_image("fid-force:1", tmp_path)
    assert tree["/f"][2:4] == (0, 0) and tree["/fifo"][0] == "o" and tree["/fifo"][2:4] == (0, 0)
    assert "/dev-node" not in tree
    assert tree["/su.out"][6] == hashlib.sha256(b"switched\n").hexdigest()[:16]
    r = sbx("build", "--force=fakeroot", str(ctx), timeout=60)
    assert r.returncode == 125 and "invalid --force value 'fakeroot'" in r.stderr
