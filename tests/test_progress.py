"""Layer commits (`sbx build` RUN/COPY steps, `sbx commit`) show progress on a terminal, and
nothing extra when stderr is not one.

SBX_PROGRESS_DELAY=0 shows progress at once, however small the layer: the tests check what is
shown, not how long anything takes."""
import os
import sys

import pytest

import ptyrun
import sbxtest
from baseimage import import_busybox
from sbxtest import ok, sbx


@pytest.fixture(scope="module")
def base_image(tmp_path_factory, busybox_rootfs):
    return import_busybox(tmp_path_factory, busybox_rootfs, "progress-base:1")


def _on_pty(*args, stderr_pipe=False):
    env = dict(os.environ, SBX_PROGRESS_DELAY="0")
    return ptyrun.run([sys.executable, "-m", "sandbox", *args], env=env, cwd=sbxtest.NEUTRAL_CWD,
                      stderr_pipe=stderr_pipe)


def _context(tmp_path, base, tag):
    ctx = tmp_path / f"ctx-{tag}"
    ctx.mkdir()
    # A file per build, so that no step is cached.
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN head -c 2000000 /dev/urandom > /big-{tag}\n")
    return ctx


def test_build_commit_shows_progress_on_a_terminal(base_image, tmp_path):
    ctx = _context(tmp_path, base_image, "a")
    rc, term, _ = _on_pty("build", "-t", "progress-a:1", str(ctx))
    assert rc == 0, term
    assert "Committing layer: " in term, term
    assert "Successfully tagged progress-a:1" in term
    ok(sbx("rmi", "progress-a:1"))


def test_build_commit_is_quiet_when_stderr_is_not_a_terminal(base_image, tmp_path):
    ctx = _context(tmp_path, base_image, "b")
    rc, term, err = _on_pty("build", "-t", "progress-b:1", str(ctx), stderr_pipe=True)
    assert rc == 0, term + err
    assert "Committing" not in term + err and "\x1b" not in err, err
    assert "Successfully tagged progress-b:1" in term
    ok(sbx("rmi", "progress-b:1"))


def test_commit_shows_progress_on_a_terminal(base_image):
    ok(sbx("run", "--name", "progress-c", base_image, "sh", "-c", "head -c 2000000 /dev/urandom > /big"))
    try:
        rc, term, _ = _on_pty("commit", "progress-c", "progress-c:1")
        assert rc == 0, term
        assert "Committing layer: " in term, term
        r = sbx("commit", "progress-c", "progress-c:2")
        assert r.returncode == 0 and "Committing" not in r.stdout + r.stderr, r.stderr
    finally:
        sbx("rm", "progress-c")
        sbx("rmi", "progress-c:1", "progress-c:2")
