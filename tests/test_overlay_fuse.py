"""The fuse-overlayfs root, used when the kernel refuses overlayfs in a user namespace.

This kernel accepts the kernel overlay, so SBX_OVERLAY=fuse forces the fallback.  /dev/fuse
is mode 0600 on this machine class, so only root can open it: these tests run in the root
pass of scripts/test.sh."""
import os
import shutil
import subprocess
import sys

import pytest

import sbxtest

pytestmark = pytest.mark.skipif(not shutil.which("fuse-overlayfs"), reason="fuse-overlayfs not installed")


def _sbx_fuse(*args, env_extra=None):
    env = dict(os.environ, SBX_OVERLAY="fuse", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "sandbox", *args], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL, cwd=sbxtest.NEUTRAL_CWD)


@pytest.mark.root
def test_fuse_overlay_root_is_writable_and_source_untouched(fresh_rootfs):
    before = sbxtest.tree_snapshot(fresh_rootfs)
    r = _sbx_fuse("run", "--rm", "--rootfs", str(fresh_rootfs), "sh", "-c",
                  "grep ' / ' /proc/self/mounts; echo new > /created; rm /etc/marker; "
                  "chmod 700 /bin; cat /created; test ! -e /etc/marker && echo gone")
    assert r.returncode == 0, r.stderr
    assert "fuse-overlayfs" in r.stdout.splitlines()[0]
    assert "new" in r.stdout and "gone" in r.stdout
    assert sbxtest.tree_snapshot(fresh_rootfs) == before


@pytest.mark.root
def test_fuse_overlay_helper_exits_with_the_sandbox(busybox_rootfs):
    """The daemon lives in the sandbox's pid namespace and dies with it: nothing is left."""
    r = _sbx_fuse("run", "--rm", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 0, r.stderr
    left = subprocess.run(["pgrep", "-f", f"lowerdir={busybox_rootfs}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


@pytest.mark.skipif(os.access("/dev/fuse", os.R_OK | os.W_OK), reason="/dev/fuse is usable by this user")
def test_fuse_overlay_unusable_fails_with_the_fix(busybox_rootfs):
    """Where /dev/fuse is not usable, the fallback fails cleanly with a hint, never hangs."""
    r = _sbx_fuse("run", "--rm", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 125, r
    assert "Traceback" not in r.stderr
    assert "fuse-overlayfs" in r.stderr and "/dev/fuse" in r.stderr
