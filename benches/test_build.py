"""Build benchmarks (issue 4, section 6): `sbx build` beside `buildah bud` in the same run; the summary at the
end prints the ratios.

The build is one multi-step Dockerfile (build_support.dockerfile): ENV and WORKDIR, COPY of a source tree
(400 text files of 1-8 kB), a RUN that concatenates them (one `cat`), COPY of a 2 MB binary-like asset, a RUN writing 400
files and checksums, a RUN copying and pruning the tree, COPY of a config file, a RUN adding a user (and,
with a subordinate id range, a chown), LABEL, USER, CMD: 7 layer steps.  The base is busybox with every
applet, made offline as an OCI layout, loaded with `sbx load` and given to buildah as `sbx save`'s
docker-archive.

* test_build_sbx_nocache: `sbx build --no-cache` (every step runs; a layer per step, gzip-compressed into
  the store as it is made).  Target: <= 0.5x buildah.
* test_build_buildah_layers: `buildah bud --isolation chroot --layers --no-cache`: the same work as sbx
  (a layer per step, every step run).
* test_build_buildah_single: `buildah bud --isolation chroot --layers=false` (buildah's default): nothing
  cached, one layer committed at the end.
  Both buildah variants keep one storage (the base pulled once, native overlay when rootless overlay works,
  else vfs); the images of earlier rounds are pruned before each round, outside the timing.
* test_build_sbx_cached: the fully cached `sbx build` rebuild (every step CACHED).  Target: < 0.3 s.
* test_build_buildah_cached: `buildah bud --layers` fully cached, for comparison.
* test_build_sbx_multistage_nocache / test_build_buildah_multistage_layers (issue 9): the busybox
  multi-stage set (build_support.multistage_dockerfile): two build stages (one generating files, one
  archiving the source tree) and a final stage copying from both with COPY --from and adding a user:
  every step run.  Target: <= 0.5x buildah.
* test_build_sbx_debian_nocache / test_build_buildah_debian_layers (issue 9): a Debian image on the real
  bookworm base (`mmdebstrap --variant=minbase`, made once per machine by scripts/debian-base.sh): an
  `apt-get install` of hello, netbase, iputils-ping and uuid-runtime from the script's loopback apt
  repository (maintainer scripts: adduser, setcap), groupadd and useradd, COPY --chown: 3 layer steps,
  every step run.  Target: <= 0.5x buildah.

Under --benchmark-disable (CI) the context shrinks to a tenth and every body runs once.  Run as an
unprivileged user with a subordinate id range (rootless buildah needs one):
  pytest benches/test_build.py --benchmark-columns=median,iqr,rounds
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
HELPERS = os.path.join(os.path.dirname(HERE), "tests", "helpers")
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)

from build_support import MULTISTAGE, BuildReport, Buildah, base_layout, make_context  # noqa: E402
from debian_image import DEBIAN_IMAGE, apt_install, debian_cache, load_args, serve_repo  # noqa: E402
from images_support import check_run, try_run  # noqa: E402

BASE = "localhost/sbx-bench-base:1"
PAIRS = [
    ("test_build_sbx_nocache", "test_build_buildah_layers", 0.5),
    ("test_build_sbx_nocache", "test_build_buildah_single", 0.5),
    ("test_build_sbx_cached", "test_build_buildah_cached", None),
    ("test_build_sbx_multistage_nocache", "test_build_buildah_multistage_layers", 0.5),
    ("test_build_sbx_debian_nocache", "test_build_buildah_debian_layers", 0.5),
]
REPORT = BuildReport(PAIRS, {"test_build_sbx_cached": 0.3})


@pytest.fixture(scope="module", autouse=True)
def _report(pytestconfig):
    pm = pytestconfig.pluginmanager
    if not pm.is_registered(REPORT):
        pm.register(REPORT, "sbx-build-bench-report")
    return REPORT


def _rounds(full: bool, n: int) -> dict[str, int]:
    return {"rounds": n if full else 1, "warmup_rounds": 1 if full else 0}


@dataclass
class Setup:
    work: Path
    ctx: Path
    env: dict[str, str]          # for sbx: HOME and XDG dirs of its own, SBX_ROOT
    archive: Path                # the base as `sbx save` wrote it (docker-archive)
    owners: bool
    info: dict[str, Any]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sbx_cmd, full) -> Setup:
    from sandbox.runtime import idmap

    work = tmp_path_factory.mktemp("build-bench")
    home = work / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"), SBX_ROOT=str(work / "sbx-store"))
    for v in ("SBX_RUNROOT", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "SBX_PLATFORM"):
        env.pop(v, None)
    owners = idmap.detect()[0] == "helper"
    ctx = work / "ctx"
    ctx.mkdir()
    info = make_context(ctx, BASE, full, owners)
    layout = base_layout(work / "base-layout", "1")
    check_run(sbx_cmd + ["load", "-q", "-i", str(layout), "--repository", BASE.rsplit(":", 1)[0]], env)
    archive = work / "base.tar"
    check_run(sbx_cmd + ["save", "-o", str(archive), BASE], env)
    REPORT.info.append(f"context: {info['files']} source files, {info['bytes'] / 1e6:.1f} MB; "
                       f"{info['steps']} layer steps; {info['generated']} files generated by RUN; "
                       f"sbx {'with a subordinate id range (chown step included)' if owners else 'single id'}")
    yield Setup(work, ctx, env, archive, owners, info)
    import sandbox

    # Layers built with a subuid range hold files of subordinate ids: remove them from inside.
    sandbox.run(["rm", "-rf", str(work / "sbx-store")], rootfs="/", network="host", namespaces=("user",),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def buildah(setup: Setup):
    if not shutil.which("buildah"):
        yield None
        return
    b = Buildah(setup.work / "buildah", setup.env)
    try:
        why = None
        if os.geteuid() != 0 and not setup.owners:
            why = "rootless buildah needs a subordinate uid/gid range (/etc/subuid, /etc/subgid)"
        else:
            try:
                REPORT.info.append(f"buildah: {b.choose_driver(setup.archive)}")
            except RuntimeError as e:
                why = str(e)
        b.unusable = why  # type: ignore[attr-defined]
        yield b
    finally:
        b.remove()


def _buildah_or_skip(buildah: Buildah | None, name: str) -> Buildah:
    if buildah is None:
        REPORT.not_measured(name, "buildah is not installed (Debian package buildah)")
    assert buildah is not None
    if buildah.unusable:  # type: ignore[attr-defined]
        REPORT.not_measured(name, buildah.unusable)  # type: ignore[attr-defined]
    return buildah


def _synced(args: tuple[Any, ...], before=None):  # type: ignore[no-untyped-def]
    """``setup`` for benchmark.pedantic: optional cleanup, then sync (no writeback backlog), same args."""
    def setup():  # type: ignore[no-untyped-def]
        if before is not None:
            before()
        os.sync()
        return args, {}
    return setup


# --- no cache -------------------------------------------------------------------------------------------

def test_build_sbx_nocache(benchmark, setup: Setup, sbx_cmd, full):
    cmd = sbx_cmd + ["build", "--no-cache", "-q", "-t", "bench/app:sbx", str(setup.ctx)]
    benchmark.pedantic(check_run, setup=_synced((cmd, setup.env)), **_rounds(full, 5))


def test_build_buildah_layers(benchmark, setup: Setup, buildah, full):
    b = _buildah_or_skip(buildah, "test_build_buildah_layers")
    cmd = b.args("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers", "--no-cache",
                 "-t", "bench/app:buildah", str(setup.ctx))
    benchmark.pedantic(check_run, setup=_synced((cmd, b.env), b.prune), **_rounds(full, 5))


def test_build_buildah_single(benchmark, setup: Setup, buildah, full):
    b = _buildah_or_skip(buildah, "test_build_buildah_single")
    cmd = b.args("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers=false",
                 "-t", "bench/app:buildah", str(setup.ctx))
    benchmark.pedantic(check_run, setup=_synced((cmd, b.env), b.prune), **_rounds(full, 5))


# --- fully cached ---------------------------------------------------------------------------------------

def test_build_sbx_cached(benchmark, setup: Setup, sbx_cmd, full):
    cmd = sbx_cmd + ["build", "-q", "-t", "bench/app:sbx", str(setup.ctx)]
    check_run(cmd, setup.env)  # fills the cache (it may be filled already)
    p = subprocess.run(sbx_cmd + ["build", "-t", "bench/app:sbx", str(setup.ctx)], env=setup.env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("CACHED") == setup.info["steps"], p.stdout
    r = subprocess.run(sbx_cmd + ["run", "--rm", "bench/app:sbx"], env=setup.env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0 and r.stdout.split()[1:] == ["build/all.txt"], r.stdout + r.stderr
    benchmark.pedantic(check_run, args=(cmd, setup.env), **_rounds(full, 10))


def test_build_buildah_cached(benchmark, setup: Setup, buildah, full):
    b = _buildah_or_skip(buildah, "test_build_buildah_cached")
    cmd = b.args("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers",
                 "-t", "bench/app:buildah-cached", str(setup.ctx))
    why = try_run(cmd, env=b.env)  # fills the cache
    if why:
        REPORT.not_measured("test_build_buildah_cached", f"buildah bud --layers fails: {why}")
    benchmark.pedantic(check_run, args=(cmd, b.env), **_rounds(full, 10))


# --- the busybox multi-stage set ----------------------------------------------------------------------

def test_build_sbx_multistage_nocache(benchmark, setup: Setup, sbx_cmd, full):
    cmd = sbx_cmd + ["build", "--no-cache", "-q", "-f", str(setup.ctx / MULTISTAGE), "-t", "bench/multi:sbx",
                     str(setup.ctx)]
    benchmark.pedantic(check_run, setup=_synced((cmd, setup.env)), **_rounds(full, 5))


def test_build_buildah_multistage_layers(benchmark, setup: Setup, buildah, full):
    b = _buildah_or_skip(buildah, "test_build_buildah_multistage_layers")
    cmd = b.args("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers", "--no-cache",
                 "-f", str(setup.ctx / MULTISTAGE), "-t", "bench/multi:buildah", str(setup.ctx))
    benchmark.pedantic(check_run, setup=_synced((cmd, b.env), b.prune), **_rounds(full, 5))


# --- a Debian image on a real bookworm base: apt-get install, useradd -------------------------------

DEBIAN_DOCKERFILE = f"""\
FROM {DEBIAN_IMAGE}
ARG APT_SOURCE
RUN {apt_install("hello", "netbase", "iputils-ping", "uuid-runtime")}
RUN groupadd -g 1500 app && useradd -m -u 1500 -g app -s /bin/bash app
COPY --chown=app:app app/ /home/app/app/
USER app
CMD ["hello"]
"""


@pytest.fixture(scope="module")
def debian(setup: Setup, sbx_cmd, buildah):
    """The real base (scripts/debian-base.sh's cache) in sbx's store (and buildah's, when it is usable),
    its package repository served on the host; (the context, the --build-arg giving the repository)."""
    cache, why = debian_cache()
    if cache is None:
        pytest.fail(why)
    check_run(sbx_cmd + load_args(cache), setup.env)
    if buildah is not None and not buildah.unusable:  # type: ignore[attr-defined]
        p = subprocess.run(buildah.args("pull", "--quiet", f"oci:{cache / 'oci'}:bookworm"), env=buildah.env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        why = None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]
        if not why:
            why = try_run(buildah.args("tag", p.stdout.split()[-1], DEBIAN_IMAGE), env=buildah.env)
        if why:
            buildah.unusable = f"buildah cannot take the Debian base: {why}"  # type: ignore[attr-defined]
    ctx = setup.work / "debctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DEBIAN_DOCKERFILE)
    (ctx / "app").mkdir()
    (ctx / "app" / "run.sh").write_text("#!/bin/sh\nexec hello\n")
    with serve_repo(cache / "repo") as source:
        yield ctx, f"APT_SOURCE={source}"


def test_build_sbx_debian_nocache(benchmark, setup: Setup, debian, sbx_cmd, full):
    ctx, arg = debian
    cmd = sbx_cmd + ["build", "--no-cache", "-q", "--build-arg", arg, "-t", "bench/deb:sbx", str(ctx)]
    benchmark.pedantic(check_run, setup=_synced((cmd, setup.env)), **_rounds(full, 5))
    r = subprocess.run(sbx_cmd + ["run", "--rm", "--network", "none", "bench/deb:sbx", "sh", "-c", "id -un; hello"],
                       env=setup.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.stdout.split("\n")[:2] == ["app", "Hello, world!"], r.stdout + r.stderr


def test_build_buildah_debian_layers(benchmark, setup: Setup, debian, buildah, full):
    b = _buildah_or_skip(buildah, "test_build_buildah_debian_layers")
    ctx, arg = debian
    cmd = b.args("bud", "--quiet", "--isolation", "chroot", "--pull=false", "--layers", "--no-cache",
                 "--build-arg", arg, "-t", "bench/deb:buildah", str(ctx))
    benchmark.pedantic(check_run, setup=_synced((cmd, b.env), b.prune), **_rounds(full, 5))
