"""Concurrent sbx commands on one store: every command's start-up clean-up of crash leftovers
must leave the temp directories of work still under way alone."""

import os
import tarfile
import time

import sbxtest
from sbxtest import ok, sbx


def test_other_commands_during_a_build_leave_its_steps_alone(tmp_path, busybox_rootfs):
    env = {**os.environ, "SBX_ROOT": str(tmp_path / "data")}
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    ok(sbx("import", str(tar), "conc-base:1", env=env))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM conc-base:1\nRUN touch /started && sleep 3 && echo done > /d\n")
    build = sbxtest.sbx_popen("build", "-t", "conc:1", str(ctx), env=env)
    try:
        # While the RUN step runs, other commands start (each cleans up leftovers first).
        deadline = time.time() + 3
        while time.time() < deadline and build.poll() is None:
            ok(sbx("images", env=env))
            time.sleep(0.2)
        out, err = build.communicate(timeout=120)
    finally:
        build.kill()
        build.wait()
    assert build.returncode == 0, err
    assert ok(sbx("run", "--rm", "conc:1", "cat", "/d", env=env)) == "done\n"
    ok(sbx("system", "reset", "-f", env=env))
