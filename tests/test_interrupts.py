"""Ctrl-C stops sbx build at once, wherever it is: nothing keeps running, and the store is
clean (`sbx system check` finds nothing to repair).

The bound on the exit is generous (the machine is shared and loaded): the point is that sbx
does not wait for the work it interrupts to finish (a 200 MB layer commit took 20 s)."""
import os
import uuid

import pytest

import sbxtest
from baseimage import import_busybox
from interrupts import Interrupted
from sbxtest import ok, sbx

BOUND = 5.0


@pytest.fixture(scope="module")
def base_image(tmp_path_factory, busybox_rootfs):
    return import_busybox(tmp_path_factory, busybox_rootfs, "intr-base:1")


def _build(tmp_path, base, run, *, tty=False):
    marker = f"sbxintr-{uuid.uuid4().hex[:12]}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN : {marker}; {run}\n")
    env = dict(os.environ, SBX_PROGRESS_DELAY="0")
    return Interrupted(sbxtest.sbx_argv("build", "--no-cache", "-t", "intr-out:1", str(ctx)), env=env,
                       cwd=sbxtest.NEUTRAL_CWD, tty=tty, markers=(marker,))


def _assert_stopped_clean(job):
    rc, took = job.interrupt(BOUND)
    out = job.out.decode(errors="replace")
    assert rc == 130, out
    assert "Traceback" not in out, out
    assert job.leftovers() == {}, out
    r = sbx("system", "check")
    assert r.returncode == 0 and r.stdout.strip().endswith(": ok"), r.stdout + r.stderr
    assert sbx("inspect", "intr-out:1").returncode == 1   # nothing was tagged (Docker: No such object, 1)
    return took


def test_ctrl_c_during_a_run_step(base_image, tmp_path):
    """The step's sandbox (in a session of its own, with a background child) is killed and
    reaped before sbx exits."""
    job = _build(tmp_path, base_image, "echo step-under-way; sleep 60 & sleep 60; wait")
    try:
        job.wait_for(b"step-under-way\n")
        _assert_stopped_clean(job)
    finally:
        job.close()


def test_ctrl_c_during_a_layer_commit(base_image, tmp_path):
    """On a terminal the commit shows progress: Ctrl-C once it is drawn, so the commit of the
    big layer is under way (with a subuid range it runs in a worker process)."""
    job = _build(tmp_path, base_image, "head -c 200000000 /dev/urandom > /big", tty=True)
    try:
        job.wait_for(b"Committing layer: ", timeout=240)
        _assert_stopped_clean(job)
    finally:
        job.close()
