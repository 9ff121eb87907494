"""Container names stay unique whatever happens to the runtime directory.

XDG_RUNTIME_DIR is removed at logout and cleaned by tmpfiles; sbx's fallback /tmp/sbx-UID can
be cleaned too.  A name held by a running sandbox must stay held: a second sandbox never gets
it, `exec NAME` still finds the running one, and the name is free again once it ends."""
import re
import shutil
import subprocess
import time

import pytest

import sbxtest
from sbxtest import host_env, ok, sbx


def _env(run_dir):
    env = host_env(XDG_RUNTIME_DIR=str(run_dir))
    env.pop("SBX_RUNROOT", None)
    return env


def _start(rootfs, env, *flags):
    p = subprocess.Popen(sbxtest.sbx_argv("run", *flags, "--rootfs", str(rootfs), "sh", "-c", "echo up; sleep 60"),
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                         cwd=sbxtest.NEUTRAL_CWD)
    assert p.stdout.readline() == "up\n"
    return p


def _stop(p):
    p.kill()
    p.wait(timeout=30)
    p.stdout.close()


@pytest.mark.parametrize("flags", [("--rm",), ()], ids=["rm", "kept"])
def test_name_stays_taken_after_runtime_dir_is_removed(busybox_rootfs, tmp_path, flags):
    run_dir = tmp_path / "xdg"
    run_dir.mkdir(mode=0o700)
    env = _env(run_dir)
    p = _start(busybox_rootfs, env, *flags, "--name", "unique1")
    try:
        shutil.rmtree(run_dir)
        run_dir.mkdir(mode=0o700)
        for second in (("--rm",), ()):
            r = sbx("run", *second, "--name", "unique1", "--rootfs", busybox_rootfs, "true", env=env)
            sbxtest.assert_sbx_error(r, 125, "already in use")
        # The running one is still found by name.
        assert ok(sbx("exec", "unique1", "echo", "inside", env=env)) == "inside\n"
        # With the runtime directory gone entirely (not even recreated), the same holds.
        shutil.rmtree(run_dir)
        r = sbx("run", "--rm", "--name", "unique1", "--rootfs", busybox_rootfs, "true", env=env)
        sbxtest.assert_sbx_error(r, 125, "already in use")
    finally:
        _stop(p)
    if flags == ("--rm",):  # the name is free again once its sandbox has ended
        assert ok(sbx("run", "--rm", "--name", "unique1", "--rootfs", busybox_rootfs, "true", env=env)) == ""
    else:
        ok(sbx("rm", "unique1", env=env))


def test_rm_sandbox_cannot_take_a_kept_containers_name(busybox_rootfs, tmp_path):
    """Docker's rule: a name belongs to a container until it is removed, running or not."""
    env = _env(tmp_path / "xdg")
    ok(sbx("run", "--name", "kept1", "--rootfs", busybox_rootfs, "true", env=env))
    try:
        r = sbx("run", "--rm", "--name", "kept1", "--rootfs", busybox_rootfs, "true", env=env)
        sbxtest.assert_sbx_error(r, 125, "already in use", "kept1")
    finally:
        ok(sbx("rm", "kept1", env=env))
    assert ok(sbx("run", "--rm", "--name", "kept1", "--rootfs", busybox_rootfs, "true", env=env)) == ""


def test_generated_names_avoid_running_rm_sandboxes(busybox_rootfs, tmp_path):
    """A kept container's generated name is never one a running --rm sandbox holds: with every
    name of the first choice ("brave_*") held by running sandboxes, sbx picks another."""
    import json

    import sandbox
    nouns = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "dijkstra",
             "liskov", "hamilton", "shannon", "babbage", "curie", "noether", "euler", "gauss",
             "kepler", "darwin", "tesla", "pike")
    env = _env(tmp_path / "xdg")

    def names(since=0.0):
        docs = [json.loads(x) for x in ok(sbx("ps", "-a", "--format", "json", env=env)).splitlines()]
        return {d["Names"] for d in docs  # CreatedAt: Docker's "2006-01-02 15:04:05 -0700 MST", local time
                if time.mktime(time.strptime(d["CreatedAt"][:19], "%Y-%m-%d %H:%M:%S")) >= int(since)}
    held = []
    try:
        before = names()
        t0 = time.time()
        for n in nouns:
            if f"brave_{n}" not in before:  # a kept container of another test holds it already
                held.append(sandbox.Popen(["sleep", "60"], rootfs=str(busybox_rootfs), name=f"brave_{n}"))
        ok(sbx("run", "--rootfs", busybox_rootfs, "true", env=env))
        # only what this run made (the named sandboxes are containers too), whatever else the store holds
        new = names(since=t0) - before - {f"brave_{n}" for n in nouns}
        assert len(new) == 1, new
        ok(sbx("rm", *new, env=env))
    finally:
        for p in held:
            p.kill()
            p.wait()


# --- every run is a container (docs/engine.md, "Which processes are containers") --------------

def _ps_names(env, *flags):
    import json
    return {json.loads(x)["Names"]: json.loads(x) for x in ok(sbx("ps", *flags, "--format", "json", env=env)).splitlines()}


def test_foreground_rm_run_is_a_container_while_it_runs(busybox_rootfs, tmp_path):
    """`sbx run --rm --name` shows in ps while it runs; exec, inspect and stop find it; it is
    gone afterwards, and its name free again."""
    import json
    env = _env(tmp_path / "xdg")
    p = _start(busybox_rootfs, env, "--rm", "--name", "fg1")
    try:
        assert _ps_names(env)["fg1"]["Status"].startswith("Up")
        assert ok(sbx("exec", "fg1", "echo", "inside", env=env)) == "inside\n"
        (doc,) = json.loads(ok(sbx("inspect", "fg1", env=env)))
        assert doc["Name"] == "/fg1" and doc["State"]["Status"] == "running" and doc["HostConfig"]["AutoRemove"]
        assert ok(sbx("stop", "-t", "1", "fg1", env=env)) == "fg1\n"
        assert p.wait(timeout=30) == 137  # sh as PID 1 ignores SIGTERM: killed after the timeout
    finally:
        _stop(p)
    assert "fg1" not in _ps_names(env, "-a")
    assert ok(sbx("run", "--rm", "--name", "fg1", "--rootfs", busybox_rootfs, "true", env=env)) == ""


def test_named_popen_is_a_container_while_it_runs(busybox_rootfs, tmp_path):
    import json

    import sandbox
    env = _env(tmp_path / "xdg")
    p = sandbox.Popen(["sh", "-c", "echo up; sleep 60"], rootfs=str(busybox_rootfs), name="py1",
                      stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        assert _ps_names(env)["py1"]["Status"].startswith("Up")
        assert ok(sbx("exec", "py1", "echo", "inside", env=env)) == "inside\n"
        (doc,) = json.loads(ok(sbx("inspect", "py1", env=env)))
        assert doc["State"]["Pid"] == p.pid
        r = sbx("run", "--rm", "--name", "py1", "--rootfs", busybox_rootfs, "true", env=env)
        sbxtest.assert_sbx_error(r, 125, "already in use")
        assert ok(sbx("kill", "py1", env=env)) == "py1\n"
        assert p.wait(timeout=30) == -9
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert "py1" not in _ps_names(env, "-a")


@pytest.mark.parametrize("flags", [("--rm",), ()], ids=["rm", "kept"])
def test_killed_supervisor_leaves_a_removable_exited_container(busybox_rootfs, tmp_path, flags):
    """kill -9 of the foreground sbx: its container dies with it (parent-death signal); the
    record reads exited with an Error and no longer blocks its name (--rm: it is gone at the
    next listing; kept: `rm` removes it)."""
    import json
    import os
    env = _env(tmp_path / "xdg")
    p = _start(busybox_rootfs, env, *flags, "--name", "victim")
    deadline = time.monotonic() + 20
    while not _ps_names(env).get("victim") and time.monotonic() < deadline:  # its start is recorded
        time.sleep(0.05)
    init = sbxtest.container_init_pid(p.pid)
    _stop(p)  # SIGKILL to sbx
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{init}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{init}"), "the container outlived its supervisor"
    listed = _ps_names(env, "-a")
    if flags:
        assert "victim" not in listed
    else:
        assert listed["victim"]["Status"].startswith("Exited (137)")
        (doc,) = json.loads(ok(sbx("inspect", "victim", env=env)))
        assert doc["State"]["Status"] == "exited" and "monitor ended unexpectedly" in doc["State"]["Error"]
        assert ok(sbx("rm", "victim", env=env)) == "victim\n"
    assert ok(sbx("run", "--rm", "--name", "victim", "--rootfs", busybox_rootfs, "true", env=env)) == ""


def test_generated_names_cost_nothing_like_the_number_of_containers():
    """A user with thousands of kept containers gets a new name after a few tries, not after a walk
    over every taken name (which ran on every `sbx run`): here all 400 plain pairs and most
    numbered ones are taken."""
    from sandbox.containers.store import generate_name
    asked = []

    def taken(name):
        asked.append(name)
        number = re.search(r"[0-9]+$", name)
        return number is None or int(number.group()) < 50

    for _ in range(50):
        asked.clear()
        name = generate_name(taken)
        assert not taken(name)
        assert len(asked) < 60, f"{len(asked)} names tried"


def test_generated_names_are_random_adjective_noun_pairs():
    from sandbox.containers.store import generate_name
    names = {generate_name(lambda n: False) for _ in range(40)}
    assert len(names) > 1
    assert all(re.fullmatch(r"[a-z]+_[a-z]+", n) for n in names)
