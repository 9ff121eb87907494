"""Container engine benchmarks (issue 8, "Tests and benchmarks"), each beside its peers in the same
run; ratios printed at the end.

* `sbx run --rm --rootfs R /bin/true`: a whole CLI process that makes a container record, runs it in
  the foreground and removes it.
* A detached container's life: `sbx run -d` + `sbx stop -t 0` + `sbx rm` (three CLI processes), and
  `sandbox.containers.run(detach=True)` + `.stop(timeout=0)` + `.remove()` from a warm process.  The
  container runs `sleep 300`, which as PID 1 ignores SIGTERM: the stop is the SIGKILL, in all runners.
* Peers: crun's `create` + `start` + `delete -f` of a rootless bundle of the same root (in a private
  user+mount namespace with an empty cgroup.controllers bound over the host's: crun 1.8 refuses hybrid
  cgroups), crun's `run` of `/bin/true` beside `sbx run --rm`, and podman's `run -d` + `stop` + `rm` where
  rootless podman can run.

Single-id mapping (`--userns single`) everywhere, as crun's rootless bundle maps one id.  Run as an
unprivileged user:  pytest benches/test_engine.py --benchmark-columns=median,iqr,rounds
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from images_support import Podman, RatioReport, check_run, tar_of_dir, try_run  # noqa: E402


class EngineReport(RatioReport):
    TITLE = "sbx container engine / peers (medians, this run)"


PAIRS = [
    ("test_engine_cli_run_rm", "test_engine_crun_run", 2.0),
    ("test_engine_cli_lifecycle", "test_engine_crun_lifecycle", None),
    ("test_engine_api_lifecycle", "test_engine_crun_lifecycle", None),
    ("test_engine_cli_lifecycle", "test_engine_podman_lifecycle", None),
    ("test_engine_api_lifecycle", "test_engine_cli_lifecycle", None),
]
REPORT = EngineReport(PAIRS)
SLEEP = ["/bin/sleep", "300"]


@pytest.fixture(scope="module", autouse=True)
def _report(pytestconfig):
    pm = pytestconfig.pluginmanager
    if not pm.is_registered(REPORT):
        pm.register(REPORT, "sbx-engine-bench-report")
    return REPORT


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A data directory of this module's own, for the CLI (SBX_ROOT) and the API (config.use)."""
    d = tmp_path_factory.mktemp("engine-store")
    yield str(d)
    import sandbox
    # With a subuid range, containers' files belong to subordinate ids: remove in a user namespace.
    sandbox.run(["rm", "-rf", str(d)], rootfs="/", network="host", namespaces=("user",))


@pytest.fixture(scope="module")
def env(store):
    return dict(os.environ, SBX_ROOT=store)


def _rounds(full, n):
    return {"rounds": n if full else 1, "warmup_rounds": 2 if full else 0}


def test_engine_cli_run_rm(benchmark, rootfs, sbx_cmd, env, full):
    benchmark.pedantic(check_run, args=(sbx_cmd + ["run", "--rm", "--userns", "single", "--rootfs", rootfs,
                                                   "/bin/true"], env), **_rounds(full, 30))


def test_engine_cli_lifecycle(benchmark, rootfs, sbx_cmd, env, full):
    def life():
        cid = subprocess.run(sbx_cmd + ["run", "-d", "--userns", "single", "--rootfs", rootfs, *SLEEP],
                             env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True).stdout.strip()
        check_run(sbx_cmd + ["stop", "-t", "0", cid], env)
        check_run(sbx_cmd + ["rm", cid], env)
    benchmark.pedantic(life, **_rounds(full, 15))
    left = subprocess.run(sbx_cmd + ["ps", "-a", "-q"], env=env, capture_output=True, text=True, check=True).stdout
    assert not left.split(), f"containers left behind: {left}"


def test_engine_api_lifecycle(benchmark, rootfs, store, full):
    from sandbox import config, containers

    def life():
        c = containers.run(rootfs=rootfs, command=SLEEP, userns="single")
        c.stop(timeout=0)
        c.remove()
    with config.use(config.Context.from_env(root=store)):  # the store the CLI rows use (SBX_ROOT)
        benchmark.pedantic(life, **_rounds(full, 15))
        assert containers.list(all=True) == []


class CrunLifecycle:
    """A driver process in a private user+mount namespace (an empty file bound over the host's
    cgroup.controllers: crun 1.8 refuses hybrid cgroups) that runs `crun create`, `crun start` and
    `crun delete -f` of a container running `sleep 300` on each request."""

    SCRIPT = (
        "import subprocess, sys, tempfile\n"
        "root, bundle = sys.argv[1], sys.argv[2]\n"
        # stderr to a file, not a pipe: the container inherits crun create's stdio and keeps it open.
        "log = tempfile.TemporaryFile()\n"
        "q = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)\n"
        "n = 0\n"
        "for line in sys.stdin:\n"
        "    n += 1\n"
        "    err = b''\n"
        "    for verb in (['create', '-b', bundle], ['start'], ['delete', '-f']):\n"
        "        log.seek(0); log.truncate()\n"
        "        if subprocess.run(['crun', '--root', root, *verb, f'c{n}'], **q).returncode:\n"
        "            log.seek(0); err = log.read().strip().replace(b'\\n', b' ') or b'failed'\n"
        "            break\n"
        "    sys.stdout.write((err.decode(errors='replace') or 'ok') + '\\n'); sys.stdout.flush()\n")

    def __init__(self, d, rootfs):
        bundle = os.path.join(d, "bundle")
        os.mkdir(bundle)
        os.symlink(rootfs, os.path.join(bundle, "rootfs"))
        subprocess.run(["crun", "spec", "--rootless"], cwd=bundle, check=True)
        with open(os.path.join(bundle, "config.json")) as f:
            cfg = json.load(f)
        cfg["process"].update(args=SLEEP, terminal=False)
        cfg["root"]["readonly"] = True
        if not any(n["type"] == "network" for n in cfg["linux"]["namespaces"]):
            cfg["linux"]["namespaces"].append({"type": "network"})  # as sbx's and bwrap's
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f)
        empty = os.path.join(d, "empty")
        open(empty, "w").close()
        self.p = subprocess.Popen(
            ["unshare", "-Urm", "sh", "-c",
             f"mount --bind {empty} /sys/fs/cgroup/unified/cgroup.controllers && exec /usr/bin/python3 -c \"$0\" \"$@\"",
             self.SCRIPT, os.path.join(d, "state"), bundle],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def life(self):
        self.p.stdin.write("go\n")
        reply = self.p.stdout.readline().strip()
        if reply != "ok":
            raise RuntimeError(f"crun create/start/delete failed: {reply!r}")

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


@pytest.fixture(scope="module")
def crun_lifecycle(rootfs, tmp_path_factory):
    if not shutil.which("crun") or not shutil.which("unshare"):
        REPORT.not_measured("test_engine_crun_lifecycle", "crun is not installed (Debian package crun)")
    drv = CrunLifecycle(str(tmp_path_factory.mktemp("crun-life")), rootfs)
    try:
        drv.life()
    except Exception as e:
        drv.close()
        REPORT.not_measured("test_engine_crun_lifecycle", f"crun does not run here: {e}")
    yield drv
    drv.close()


def test_engine_crun_lifecycle(benchmark, crun_lifecycle, full):
    benchmark.pedantic(crun_lifecycle.life, **_rounds(full, 15))


def test_engine_crun_run(benchmark, crun, full):
    """`crun run` of /bin/true (conftest's driver), beside `sbx run --rm`."""
    benchmark.pedantic(crun.run, **_rounds(full, 30))


def test_engine_podman_lifecycle(benchmark, rootfs, tmp_path_factory, full):
    name = "test_engine_podman_lifecycle"
    if not shutil.which("podman"):
        REPORT.not_measured(name, "podman is not installed (Debian package podman)")
    if os.geteuid() == 0:
        REPORT.not_measured(name, "running as root: podman would not be rootless (run the benchmarks as an "
                                  "unprivileged user)")
    work = tmp_path_factory.mktemp("podman-life")
    pm = Podman(work / "podman")
    try:
        pm.choose_driver()
        tar = work / "rootfs.tar"
        tar.write_bytes(tar_of_dir(rootfs))
        why = try_run(pm.cmd("life", "import", "-q", str(tar), "sbx-bench-busybox"), env=pm.env)
        if why:
            REPORT.not_measured(name, f"rootless podman cannot import an image here: {why}")
        run = pm.cmd("life", "run", "-d", "--network", "none", "--name", "b", "sbx-bench-busybox", *SLEEP)
        rm = pm.cmd("life", "rm", "-f", "b")
        why = try_run(run, env=pm.env)
        if why and "hybrid" in why:  # podman made the container before crun refused to start it
            REPORT.info.append("podman: with an empty cgroup.controllers bound in podman's own mount namespace "
                               "(crun refuses hybrid cgroups)")
            why = try_run(rm, env=pm.env) or pm.cgroup_workaround() or try_run(run, env=pm.env)
        if why:
            REPORT.not_measured(name, f"rootless `podman run -d` fails here: {why}")
        check_run(rm, pm.env)

        def life():
            check_run(run, pm.env)
            check_run(pm.cmd("life", "stop", "-t", "0", "b"), pm.env)
            check_run(pm.cmd("life", "rm", "b"), pm.env)
        benchmark.pedantic(life, **_rounds(full, 8))
    finally:
        pm.close()
