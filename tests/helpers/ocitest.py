"""Helpers for the OCI runtime tests (tests/test_oci_*.py) and benches/test_oci.py: bundles made
with `sbx-runc spec`, the runtime run as a subprocess, a wrapper executable for podman/ctr."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sbxtest import build_busybox_rootfs

REPO = Path(__file__).resolve().parents[2]
SBX_RUNC = REPO / "bin" / "sbx-runc"


def runc_argv(*args) -> list[str]:
    return [sys.executable, str(SBX_RUNC), *map(str, args)]


def wrapper(dest: Path) -> Path:
    """An executable that runs this checkout's sbx-runc with this interpreter (what podman's
    --runtime and ctr's --runc-binary are given)."""
    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    dest.write_text(f"#!/bin/sh\n{env}exec {sys.executable} {SBX_RUNC} \"$@\"\n")
    dest.chmod(0o755)
    return dest


class Runtime:
    """sbx-runc with its own --root."""

    def __init__(self, root: Path, argv=None, log: Path | None = None):
        self.root = root
        self.argv = argv or runc_argv()
        self.log = log

    def __call__(self, *args, check=False, timeout=30, **kw) -> subprocess.CompletedProcess:
        glob = ["--root", str(self.root)]
        if self.log is not None:
            glob += ["--log", str(self.log), "--log-format", "json"]
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        elif isinstance(kw["input"], str) and "stdout" not in kw:
            kw["input"] = kw["input"].encode()
        argv = [*self.argv, *glob, *map(str, args)]
        if "stdout" in kw or "capture_output" in kw:
            cp = subprocess.run(argv, text=True, timeout=timeout, **kw)
        else:
            # Files, not pipes: a created container keeps the runtime's stdio (runc's contract),
            # so a pipe would not reach EOF when the runtime exits.
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                rc = subprocess.run(argv, stdout=out, stderr=err, timeout=timeout, **kw).returncode
                out.seek(0)
                err.seek(0)
                cp = subprocess.CompletedProcess(argv, rc, out.read(), err.read())
        if check:
            assert cp.returncode == 0, f"{args}: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
        return cp

    def state(self, cid) -> dict:
        return json.loads(self("state", cid, check=True).stdout)

    def status(self, cid) -> str:
        return self.state(cid)["status"]

    def wait_status(self, cid, want, timeout=10.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st["status"] == want or time.monotonic() > end:
                assert st["status"] == want, st
                return st
            time.sleep(0.02)


def make_bundle(dest: Path, args, rootless=None, terminal=False, **changes) -> Path:
    """A busybox bundle at dest with `sbx-runc spec [--rootless]`'s config, running `args`."""
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "rootfs").exists():
        build_busybox_rootfs(dest / "rootfs")
    if rootless is None:
        rootless = os.geteuid() != 0
    cfg = dest / "config.json"
    if cfg.exists():
        cfg.unlink()
    cp = subprocess.run(runc_argv("spec", "--bundle", dest, *(["--rootless"] if rootless else [])),
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    config = json.loads(cfg.read_text())
    config["process"]["args"] = list(args)
    config["process"]["terminal"] = terminal
    config["root"]["readonly"] = False
    for key, value in changes.items():
        config[key] = value
    cfg.write_text(json.dumps(config, indent=1))
    return dest


def edit_config(bundle: Path, fn) -> dict:
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    fn(config)
    path.write_text(json.dumps(config, indent=1))
    return config


def wait_file(path: Path, timeout=10.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            text = path.read_text()
            if text:
                return text
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def proc_exe(pid: int) -> str:
    """/proc/PID/exe, or /proc/PID/comm where the link cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return Path(f"/proc/{pid}/comm").read_text().strip()


@pytest.fixture()
def rt(tmp_path):
    """sbx-runc with a --root of the test's own; whatever the test left is deleted after."""
    r = Runtime(tmp_path / "state")
    yield r
    for c in json.loads(r("list", "--format", "json").stdout or "[]") or ():
        r("delete", "--force", c["id"])
