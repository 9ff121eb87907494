"""Engines driving sbx-runc through runc's contract: podman with --runtime (as root, and rootless
with a subuid range, where podman with crun cannot start any container on this hybrid-cgroup
host; each with its own storage in the test's directory: vfs, cgroupfs, file events, since no
systemd runs), and containerd's runc shim (`ctr run --runc-binary`) against a private containerd."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

from ocitest import make_bundle, wrapper
from sbxtest import subid_range

# This host's bounding set lacks CAP_SYS_RESOURCE, so no runtime may raise a hard rlimit above
# the caller's: podman's default RLIMIT_NOFILE/NPROC (1048576/32768) fail under crun as under
# sbx-runc ("setrlimit: Operation not permitted").  Its default pids limit (2048) is a limit
# we cannot enforce without a cgroup v2 leaf: refused (test_podman_default_pids_limit_is_refused).
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--pids-limit=-1"]


def _podman(d, rootless):
    exe = shutil.which("podman")
    assert exe, "podman is not installed (scripts/test.sh installs it)"
    rootfs = make_bundle(d / "bundle", ["true"], rootless=False) / "rootfs"
    with tarfile.open(d / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    runtime = wrapper(d / "sbx-runc")
    runroot = tempfile.mkdtemp(prefix="sbx-pm-")  # podman: at most 50 characters
    os.symlink(runroot, d / "run")
    base = [exe, "--root", str(d / "storage"), "--runroot", runroot, "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--storage-driver", "vfs"]
    env = dict(os.environ)
    if rootless:  # podman's rootless state (its pause process's pid) in the test's directory
        (d / "xdg").mkdir(mode=0o700)
        env.update(XDG_RUNTIME_DIR=str(d / "xdg"), HOME=str(d))

    def run(*args, runtime=runtime, timeout=60):
        return subprocess.run([*base, "--runtime", str(runtime), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, env=env)
    cp = run("import", str(d / "rootfs.tar"), "localhost/sbx-busybox:test")
    assert cp.returncode == 0, cp.stderr
    return run


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("podman as root: see test_rootless_podman for the users")
    d = tmp_path_factory.mktemp("podman")
    run = _podman(d, rootless=False)
    yield run
    run("rm", "--all", "--force")
    subprocess.run(["umount", "-R", str(d / "storage")], capture_output=True)
    shutil.rmtree(os.path.realpath(d / "run"), ignore_errors=True)


@pytest.mark.subuid
def test_rootless_podman(tmp_path):
    """podman's own user namespace (a subuid range), its runtime run as root there: sbx-runc
    starts the container where crun refuses the hybrid cgroups."""
    if os.geteuid() == 0:
        pytest.skip("rootless podman: the test users run it")
    run = _podman(tmp_path, rootless=True)
    try:
        cp = run("run", "--rm", "--network", "none", "localhost/sbx-busybox:test",
                 "sh", "-c", "cat /etc/marker; id -u; cat /proc/self/uid_map")
        assert cp.returncode == 0, cp.stderr
        lines = cp.stdout.splitlines()
        assert lines[:2] == ["sbx test rootfs marker", "0"]
        assert [line.split() for line in lines[2:]] == [["0", str(os.getuid()), "1"],
                                                        ["1", *map(str, subid_range("/etc/subuid"))]]
        crun = run("run", "--rm", "--network", "none", "localhost/sbx-busybox:test", "true",
                   runtime=shutil.which("crun"))
        assert crun.returncode != 0 and "hybrid mode not supported" in crun.stderr  # the peer, same host
    finally:
        run("rm", "--all", "--force")
        run("unshare", "rm", "-rf", str(tmp_path / "storage"), os.path.realpath(tmp_path / "run"))
        pid = tmp_path / "xdg/libpod/tmp/pause.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(os.path.realpath(tmp_path / "run"), ignore_errors=True)  # podman unshare made it again


@pytest.mark.root
def test_podman_run_rm(podman):
    cp = podman("run", "--rm", "--network", "none", *LIMITS, "localhost/sbx-busybox:test",
                "sh", "-c", "cat /etc/marker; id -u; cat /proc/self/uid_map")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["sbx", "test", "rootfs", "marker", "0", "0", "0", "4294967295"]


@pytest.mark.root
def test_podman_detached_exec_stop_logs(podman):
    cp = podman("run", "-d", "--name", "sbx-d1", "--network", "none", *LIMITS, "localhost/sbx-busybox:test",
                "sh", "-c", "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done")
    assert cp.returncode == 0, cp.stderr
    cp = podman("exec", "sbx-d1", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline")
    assert cp.returncode == 0 and cp.stdout.startswith("sh -c echo started"), cp.stderr
    assert podman("inspect", "--format", "{{.State.Status}}", "sbx-d1").stdout.strip() == "running"
    cp = podman("stop", "-t", "10", "sbx-d1")
    assert cp.returncode == 0, cp.stderr
    assert podman("inspect", "--format", "{{.State.ExitCode}}", "sbx-d1").stdout.strip() == "0"
    assert podman("logs", "sbx-d1").stdout.split() == ["started", "bye"]
    assert podman("rm", "sbx-d1").returncode == 0


@pytest.mark.root
def test_podman_default_pids_limit_is_refused(podman):
    cp = podman("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                "localhost/sbx-busybox:test", "true")
    assert cp.returncode != 0
    assert "linux.resources.pids.limit: cannot be enforced" in cp.stderr, cp.stderr


CONTAINERD_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
"""


@pytest.fixture(scope="module")
def ctr(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("containerd runs as root")
    containerd, ctr_exe = shutil.which("containerd"), shutil.which("ctr")
    assert containerd and ctr_exe, "containerd is not installed (scripts/test.sh installs it)"
    d = tmp_path_factory.mktemp("ctrd")
    (d / "config.toml").write_text(CONTAINERD_CONFIG.format(d=d))
    log = open(d / "containerd.log", "w")
    daemon = subprocess.Popen([containerd, "--config", str(d / "config.toml")], stdout=log, stderr=log,
                              start_new_session=True)
    sock = d / "containerd.sock"
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.exists(), (d / "containerd.log").read_text()[-2000:]
    runtime = wrapper(d / "sbx-runc")

    def run(*args, timeout=60):
        return subprocess.run([ctr_exe, "--address", str(sock), "--namespace", "sbxtest", *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    run.runtime = runtime
    run.dir = d
    # An image made offline: the busybox rootfs as an OCI archive (one layer).
    image = _oci_archive(d)
    cp = run("image", "import", "--all-platforms", str(image))
    assert cp.returncode == 0, cp.stderr
    yield run
    os.killpg(daemon.pid, signal.SIGTERM)
    daemon.wait(timeout=30)
    log.close()
    subprocess.run(["umount", "-R", str(d / "root")], capture_output=True)
    try:  # the shim's runtime root for this namespace (its parent is containerd's default place)
        os.rmdir("/run/containerd/runc/sbxtest")
    except OSError:
        pass


def _oci_archive(d):
    import hashlib
    import io
    import json
    rootfs = make_bundle(d / "bundle", ["true"], rootless=False) / "rootfs"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    blobs = {}

    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}
    lay = blob(layer.getvalue())
    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                              "rootfs": {"type": "layers", "diff_ids": [lay["digest"]]}}).encode())
    manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **lay}]}).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
                                               "annotations": {"io.containerd.image.name": "localhost/sbx-busybox:test",
                                                               "org.opencontainers.image.ref.name": "test"}}]}
    path = d / "image.tar"
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest}", data)
    return path


@pytest.mark.root
def test_ctr_run_to_exit(ctr):
    cp = ctr("run", "--rm", "--runc-binary", str(ctr.runtime), "localhost/sbx-busybox:test", "c1",
             "sh", "-c", "cat /etc/marker; exit 3")
    assert cp.stdout == "sbx test rootfs marker\n", cp.stderr
    assert cp.returncode == 3, cp.stderr


@pytest.mark.root
def test_ctr_detached_exec_kill_delete(ctr):
    cp = ctr("run", "-d", "--runc-binary", str(ctr.runtime), "localhost/sbx-busybox:test", "c2",
             "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done")
    assert cp.returncode == 0, cp.stderr
    cp = ctr("task", "exec", "--exec-id", "e1", "c2", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline")
    assert cp.returncode == 0 and cp.stdout.startswith("sh -c trap"), cp.stderr
    assert "RUNNING" in ctr("task", "ls").stdout
    assert ctr("task", "kill", "c2").returncode == 0
    deadline = time.monotonic() + 20
    while "STOPPED" not in ctr("task", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "STOPPED" in ctr("task", "ls").stdout
    assert ctr("task", "delete", "c2").returncode == 0
    assert ctr("container", "delete", "c2").returncode == 0
