"""Image benchmarks (issue 3, section 7), each beside its peers in the same run; ratios printed at the end.

* Pull of a several-layer image (busybox plus 4 layers of incompressible data, gzip) from a loopback
  docker-registry: `sbx pull` (CLI, fresh store each round; also the Python API, to separate CLI start-up)
  vs `skopeo copy docker://... oci:DIR` and `podman pull` (rootless, throw-away storage), each into a fresh
  destination every round.  Target: sbx CLI <= 1.0x skopeo.
* Unpack: sbx's store unpack of one large plain-tar layer (many files; digests checked, as on every pull)
  vs `tar -xf` of the same tar into a fresh directory.
* Run: `sbx run --rm IMAGE /bin/true` vs `podman run --rm --network none IMAGE /bin/true` (target <= 0.1x),
  vs `crun run` of a bundle of the same root filesystem (target <= 2x), and vs `sbx run --rm --rootfs` of
  that root filesystem (issue 3 section 5: <= 1.2x).  The image is the `rootfs` fixture's tree as one layer.

Sizes shrink under --benchmark-disable (CI), where every body runs once.  Run as an unprivileged user:
  pytest benches/test_images.py --benchmark-columns=median,iqr,rounds
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from images_support import (  # noqa: E402
    FreshDirs, Podman, RatioReport, check_run, image_testlib, random_layer, tar_of_dir, try_run,
)

PAIRS = [
    ("test_pull_sbx_cli", "test_pull_skopeo", 1.0),
    ("test_pull_sbx_cli", "test_pull_podman", None),
    ("test_pull_sbx_api", "test_pull_skopeo", None),
    ("test_unpack_sbx", "test_unpack_tar", None),
    ("test_run_sbx_image", "test_run_podman", 0.1),
    ("test_run_sbx_image", "test_run_crun", 2.0),
    ("test_run_sbx_image_single", "test_run_crun", 2.0),
    ("test_run_sbx_image", "test_run_sbx_rootfs", 1.2),
    ("test_run_api_image", "test_run_crun", None),
]
REPORT = RatioReport(PAIRS)


@pytest.fixture(scope="module", autouse=True)
def _report(pytestconfig):
    pm = pytestconfig.pluginmanager
    if not pm.is_registered(REPORT):
        pm.register(REPORT, "sbx-images-bench-report")
    return REPORT


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images-bench")


@pytest.fixture(scope="module")
def env(work) -> dict[str, str]:
    """Environment for the CLIs: HOME and XDG dirs of their own (no user config or credentials)."""
    home = work / "home"
    run = work / "xdg-run"
    home.mkdir()
    run.mkdir(mode=0o700)
    e = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
             XDG_DATA_HOME=str(home / ".local/share"), XDG_RUNTIME_DIR=str(run))
    for v in ("SBX_ROOT", "SBX_RUNROOT", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "SBX_PLATFORM"):
        e.pop(v, None)
    return e


@pytest.fixture(scope="module")
def registry(work, rootfs, full):
    """A plain-HTTP docker-registry on 127.0.0.1 with bench/layers (pull) and bench/run (run) pushed by skopeo."""
    lib = image_testlib()
    lib.need("skopeo")
    layers = [lib.make_tar(lib.busybox_entries())]
    for i in range(4):  # 4 x 4 MB (16 files of 256 kB), or 4 x 64 kB for CI
        layers.append(random_layer(f"data{i}", 16, 256 * 1024 if full else 4096))
    pull_img = lib.build_image(layers, cmd=["/bin/sh"])
    run_img = lib.build_image([tar_of_dir(rootfs)], cmd=["/bin/sh"])
    reg, _ = lib.start_registry(work / "registry")
    try:
        lay = lib.write_layout(work / "layout", [(pull_img, "layers"), (run_img, "run")])
        reg.push_layout(lay, "layers", "bench/layers:latest")
        reg.push_layout(lay, "run", "bench/run:latest")
        reg.pull_ref = f"{reg.host}/bench/layers:latest"
        reg.run_ref = f"{reg.host}/bench/run:latest"
        reg.pull_bytes = sum(len(b) for d, b in pull_img.blobs.items() if d != pull_img.digest)
        REPORT.info.append(f"pull image: {len(layers)} gzip layers, {reg.pull_bytes / 1e6:.1f} MB of blobs "
                           f"({sum(map(len, layers)) / 1e6:.1f} MB unpacked)")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def podman(work):
    if not shutil.which("podman"):
        yield None
        return
    p = Podman(work / "podman")
    try:
        desc = p.choose_driver()
        if desc:
            REPORT.info.append(f"podman: storage driver, runtime, version: {desc}")
        yield p
    finally:
        p.close()


def _podman_or_skip(podman, name: str):
    if podman is None:
        REPORT.not_measured(name, "podman is not installed (Debian package podman)")
    if os.geteuid() == 0:
        REPORT.not_measured(name, "running as root: podman would not be rootless (run the benchmarks as an unprivileged user)")
    return podman


# --- 1. pull --------------------------------------------------------------------------------------------

def test_pull_sbx_cli(benchmark, registry, sbx_cmd, env, work, full):
    fresh = FreshDirs(work / "pull-sbx-cli")
    benchmark.pedantic(lambda d: check_run(sbx_cmd + ["--root", str(d), "pull", "-q", registry.pull_ref], env),
                       setup=fresh, rounds=6 if full else 1, warmup_rounds=1 if full else 0)
    fresh.flush()


def test_pull_sbx_api(benchmark, registry, work, full, monkeypatch, env):
    from sandbox.image.store import Store
    from sandbox.registry.pull import pull

    for k in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(k, env[k])
    fresh = FreshDirs(work / "pull-sbx-api")
    img = benchmark.pedantic(lambda d: pull(Store(str(d)), registry.pull_ref), setup=fresh,
                             rounds=6 if full else 1, warmup_rounds=1 if full else 0)
    assert img.id
    fresh.flush()


def test_pull_skopeo(benchmark, registry, env, work, full):
    skopeo = image_testlib().need("skopeo")
    fresh = FreshDirs(work / "pull-skopeo")
    benchmark.pedantic(
        lambda d: check_run([skopeo, "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                             f"docker://{registry.pull_ref}", f"oci:{d}:latest"], env),
        setup=fresh, rounds=6 if full else 1, warmup_rounds=1 if full else 0)
    fresh.flush()


def test_pull_podman(benchmark, registry, podman, full):
    pm = _podman_or_skip(podman, "test_pull_podman")
    why = try_run(pm.cmd("probe", "pull", "-q", "--tls-verify=false", registry.pull_ref), env=pm.env)
    if why:
        REPORT.not_measured("test_pull_podman", f"rootless podman cannot pull here: {why}")
    pm.remove([pm.workdir / "probe"])
    fresh = FreshDirs(pm.workdir, remove=pm.remove)

    def once(d: Path) -> None:
        check_run(pm.cmd(d.name, "pull", "-q", "--tls-verify=false", registry.pull_ref), pm.env)

    benchmark.pedantic(once, setup=fresh, rounds=6 if full else 1, warmup_rounds=1 if full else 0)
    fresh.flush()


# --- 2. unpack ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_layer(work, full):
    """One plain-tar layer: 2000 files of 25 kB in 50 directories (~51 MB), or 80 files for CI."""
    from sandbox.image.store import Store

    files = 2000 if full else 80
    tar = random_layer("big", files, 25 * 1024, dirs=max(1, files // 40))
    path = work / "big.tar"
    path.write_bytes(tar)
    store = Store(str(work / "unpack-store"))
    store.init()
    digest = store.blobs.put_bytes(tar)
    desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(tar)}
    REPORT.sizes["test_unpack_sbx"] = REPORT.sizes["test_unpack_tar"] = len(tar)
    REPORT.info.append(f"unpack layer: {files} files, {len(tar) / 1e6:.1f} MB plain tar (page cache warm)")
    return store, desc, path


def test_unpack_sbx(benchmark, big_layer, full):
    store, desc, _ = big_layer
    diff_id = desc["digest"]  # plain tar: the diff_id is the blob digest

    def setup():
        shutil.rmtree(store.layer_path(diff_id), ignore_errors=True)
        os.sync()
        return (), {}

    root = benchmark.pedantic(lambda: store.unpack_layer(desc, diff_id, []), setup=setup,
                              rounds=7 if full else 1, warmup_rounds=1 if full else 0)
    assert os.path.isdir(root)
    setup()


def test_unpack_tar(benchmark, big_layer, full):
    _, _, path = big_layer
    fresh = FreshDirs(path.parent / "unpack-tar")

    def once(d: Path) -> None:
        d.mkdir()
        check_run(["tar", "-xf", str(path), "-C", str(d)])

    benchmark.pedantic(once, setup=fresh, rounds=7 if full else 1, warmup_rounds=1 if full else 0)
    fresh.flush()


# --- 3. run ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sbx_run_env(registry, sbx_cmd, env, work):
    """The run image pulled into a store of its own (SBX_ROOT), and whether `sbx run IMAGE` works: tried
    once (which also prepares the layers for later runs)."""
    e = dict(env, SBX_ROOT=str(work / "run-store"))
    why = try_run(sbx_cmd + ["pull", "-q", registry.run_ref], env=e)
    if why is None:
        why = try_run(sbx_cmd + ["run", "--rm", registry.run_ref, "/bin/true"], env=e)
    return e, (f"`sbx run IMAGE` does not work yet: {why}" if why else None)


def test_run_sbx_image(benchmark, registry, sbx_cmd, sbx_run_env, full):
    e, why = sbx_run_env
    if why:
        REPORT.not_measured("test_run_sbx_image", why)
    benchmark.pedantic(check_run, args=(sbx_cmd + ["run", "--rm", registry.run_ref, "/bin/true"], e),
                       rounds=20 if full else 1, warmup_rounds=2 if full else 0)


def test_run_sbx_image_single(benchmark, registry, sbx_cmd, sbx_run_env, full):
    """Single-id mapping, as the crun bundle from `crun spec --rootless` has."""
    e, why = sbx_run_env
    if why:
        REPORT.not_measured("test_run_sbx_image_single", why)
    cmd = sbx_cmd + ["run", "--rm", "--userns", "single", registry.run_ref, "/bin/true"]
    why = try_run(cmd, env=e)
    if why:
        REPORT.not_measured("test_run_sbx_image_single", f"`sbx run --userns single IMAGE` fails: {why}")
    benchmark.pedantic(check_run, args=(cmd, e), rounds=20 if full else 1, warmup_rounds=2 if full else 0)


def test_run_api_image(benchmark, registry, sbx_run_env, full, monkeypatch):
    import sandbox

    e, why = sbx_run_env
    if why:
        REPORT.not_measured("test_run_api_image", why)
    for k in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "SBX_ROOT"):
        monkeypatch.setenv(k, e[k])
    try:
        sandbox.run(["/bin/true"], image=registry.run_ref, check=True)
    except Exception as ex:  # noqa: BLE001 - the API may not take image= yet
        REPORT.not_measured("test_run_api_image", f"sandbox.run(argv, image=...) fails: {type(ex).__name__}: {ex}")
    r = benchmark.pedantic(sandbox.run, args=(["/bin/true"],), kwargs={"image": registry.run_ref},
                           rounds=20 if full else 1, warmup_rounds=2 if full else 0)
    assert r.returncode == 0


def test_run_sbx_rootfs(benchmark, rootfs, sbx_cmd, env, full):
    """The same tree as the image, given as --rootfs (issue 3 section 5: IMAGE within 1.2x of this)."""
    benchmark.pedantic(check_run, args=(sbx_cmd + ["run", "--rm", "--rootfs", rootfs, "/bin/true"], env),
                       rounds=20 if full else 1, warmup_rounds=2 if full else 0)


def test_run_podman(benchmark, registry, podman, full):
    pm = _podman_or_skip(podman, "test_run_podman")
    why = try_run(pm.cmd("runimg", "pull", "-q", "--tls-verify=false", registry.run_ref), env=pm.env)
    if why:
        REPORT.not_measured("test_run_podman", f"rootless podman cannot pull here: {why}")
    cmd = pm.cmd("runimg", "run", "--rm", "--network", "none", registry.run_ref, "/bin/true")
    first = try_run(cmd, env=pm.env)
    if first and "hybrid" in first:
        why = pm.cgroup_workaround()
        if why:
            REPORT.not_measured("test_run_podman", f"crun refuses hybrid cgroups and the workaround failed: {why}")
        REPORT.info.append("podman run: with an empty cgroup.controllers bound in podman's own mount namespace "
                           "(crun refuses hybrid cgroups)")
        first = try_run(cmd, env=pm.env)
    if first:
        REPORT.not_measured("test_run_podman", f"rootless `podman run` fails here: {first}")
    benchmark.pedantic(check_run, args=(cmd, pm.env), rounds=8 if full else 1, warmup_rounds=1 if full else 0)


def test_run_crun(benchmark, crun, full):
    """`crun run` of a rootless bundle of the same rootfs (conftest's driver: cgroup workaround, netns)."""
    benchmark.pedantic(crun.run, rounds=20 if full else 1, warmup_rounds=2 if full else 0)
