"""The docker-py-shaped Python API (`sandbox.containers`) and the readiness helpers, on real
containers: every Container method, run's options reaching the process, detach=False output and
ContainerError, restart policies, the context manager, get/list/prune with filters, archives."""
import datetime
import io
import re
import socket
import tarfile
import time

import pytest

import sandbox
from sandbox import containers
from sandbox.containers.ready import WaitTimeout, wait_for_exec, wait_for_log, wait_for_port
from sbxtest import DOCKER_DEFAULT_CAP_MASK, MARKER_CONTENT, ok, sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    """A store of the test's own: list() and `sbx ps -a` see only what the test made.  Whatever
    a failed test left running there is removed afterwards."""
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    yield
    for c in containers.list(all=True):
        try:
            c.remove(force=True)
        except containers.NotFound:
            pass


@pytest.fixture()
def R(busybox_rootfs):
    return str(busybox_rootfs)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _until(pred, timeout=30):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.05)


def test_run_detached_logs_exec_stop_remove(R):
    c = containers.run(rootfs=R, command=["sh", "-c", "echo out; echo err >&2; exec sleep 300"], name="api-web",
                       labels={"app": "web"})
    assert isinstance(c, containers.Container) and repr(c) == f"<Container: {c.id[:12]}>"
    assert (c.name, c.status, c.short_id, len(c.id)) == ("api-web", "running", c.id[:12], 64)
    assert c.labels == {"app": "web"} and c.image == R
    assert c.attrs["Config"]["Labels"] == {"app": "web"} and c.attrs["HostConfig"]["NetworkMode"] == "none"
    wait_for_log(c, "^err$")
    assert c.logs() == b"out\nerr\n"                     # interleaved in the order written
    assert (c.logs(stderr=False), c.logs(stdout=False), c.logs(tail=1)) == (b"out\n", b"err\n", b"err\n")
    assert re.match(rb"^\d{4}-\d\d-\d\dT[\d:.]+Z out\n", c.logs(timestamps=True))

    r = c.exec_run(["sh", "-c", 'echo "$K in $(pwd)"; echo e >&2; exit 3'], environment={"K": "v"}, workdir="/tmp")
    assert isinstance(r, containers.ExecResult) and r == (3, b"v in /tmp\ne\n") and r.exit_code == 3
    assert c.exec_run("sh -c 'echo a; echo b >&2'", demux=True).output == (b"a\n", b"b\n")
    assert c.exec_run(["sh", "-c", "echo a; echo b >&2"], stderr=False).output == b"a\n"
    assert b"".join(c.exec_run(["echo", "streamed"], stream=True).output) == b"streamed\n"
    assert c.exec_run(["sh", "-c", "echo $HOSTNAME"]).output == c.id[:12].encode() + b"\n"
    assert c.exec_run(["sh", "-c", "test -t 1 && echo on-a-tty"], tty=True) == (0, b"on-a-tty\r\n")
    assert c.exec_run(["sh", "-c", "test -t 1 || echo no-tty"]).output == b"no-tty\n"
    assert c.exec_run(["sleep", "300"], detach=True) == (None, b"")
    _until(lambda: b"sleep 300" in c.exec_run(["ps", "-o", "args"]).output)
    assert c.logs(since=time.time() + 3600) == b"" and c.logs(until=datetime.datetime(2000, 1, 1)) == b""

    pid = c.attrs["State"]["Pid"]
    assert _alive(pid)
    c.stop(timeout=1)                                      # sleep as PID 1 ignores SIGTERM: SIGKILL
    assert c.status == "exited" and not _alive(pid)
    assert c.wait() == {"StatusCode": 137, "Error": None}
    assert c.logs() == b"out\nerr\n"                      # kept after the exit
    c.remove()
    with pytest.raises(containers.NotFound):
        containers.get("api-web")
    with pytest.raises(containers.NotFound):
        c.reload()
    assert ok(sbx("ps", "-a", "-q")).split() == []


def test_detach_false_returns_output_and_raises_container_error(R):
    assert containers.run(rootfs=R, command=["sh", "-c", "echo out; echo err >&2"], detach=False) == b"out\n"
    assert containers.run(rootfs=R, command="sh -c 'echo out; echo err >&2'", detach=False,
                          stderr=True) == b"out\nerr\n"
    assert len(containers.list(all=True)) == 2             # kept without remove=True, as docker-py
    assert containers.run(rootfs=R, command=["sh", "-c", "echo $A $B"], environment=["A=1", "B=2"],
                          detach=False, remove=True) == b"1 2\n"
    with pytest.raises(containers.ContainerError) as e:
        containers.run(rootfs=R, command=["sh", "-c", "echo partial; echo bad >&2; exit 3"], name="failing",
                       detach=False, remove=True)
    err = e.value
    assert isinstance(err, sandbox.SandboxError)
    assert (err.exit_status, err.stderr, err.image) == (3, b"bad\n", R)
    assert "returned non-zero exit status 3" in str(err) and "bad" in str(err)
    with pytest.raises(containers.NotFound):
        containers.get("failing")                          # removed although it failed
    chunks = containers.run(rootfs=R, command=["sh", "-c", "echo one; echo two"], detach=False, stream=True,
                            remove=True)
    assert b"".join(chunks) == b"one\ntwo\n"
    assert len(containers.list(all=True)) == 2


def test_run_options_reach_the_process(R, tmp_path):
    vol, ro = tmp_path / "vol", tmp_path / "ro"
    vol.mkdir()
    ro.mkdir()
    (vol / "in.txt").write_text("host\n")
    script = ("cat /v/in.txt; echo w > /v/out.txt; touch /r/x 2>/dev/null || echo ro-refused; "
              'echo "$E $(hostname) $(pwd)"; touch /rootfile 2>/dev/null || echo root-ro; ulimit -n; '
              "grep -q ' /scratch tmpfs ' /proc/mounts && echo scratch-tmpfs; "
              "grep NoNewPrivs /proc/self/status; grep CapEff /proc/self/status")
    out = containers.run(rootfs=R, command=["sh", "-c", script], detach=False, remove=True,
                         environment={"E": "e1"}, hostname="box", working_dir="/tmp", read_only=True,
                         volumes={str(vol): {"bind": "/v", "mode": "rw"}, str(ro): {"bind": "/r", "mode": "ro"}},
                         tmpfs={"/scratch": "size=1m"}, ulimits=[{"Name": "nofile", "Soft": 123, "Hard": 456}],
                         security_opt=["no-new-privileges"], cap_drop=["ALL"])
    assert out.decode().split("\n") == ["host", "ro-refused", "e1 box /tmp", "root-ro", "123", "scratch-tmpfs",
                                        "NoNewPrivs:\t1", "CapEff:\t0000000000000000", ""]
    assert (vol / "out.txt").read_text() == "w\n"
    run = lambda **kw: containers.run(rootfs=R, detach=False, remove=True, **kw)  # noqa: E731
    assert run(command=["cat", "/v/in.txt"], volumes=[f"{vol}:/v:ro"]) == b"host\n"
    assert run(entrypoint=["sh", "-c"], command=["echo from-entrypoint"]) == b"from-entrypoint\n"
    assert run(entrypoint="echo", command=["a", "b"]) == b"a b\n"
    assert run(command=["id", "-u"], user=1000) == b"1000\n"
    assert run(command=["cat", "/proc/1/cmdline"], init=True).split(b"\0")[0] != b"cat"
    assert run(command=["cat", "/proc/1/cmdline"]).split(b"\0")[0] == b"cat"
    caps = run(command=["grep", "CapEff", "/proc/self/status"], cap_drop=["CHOWN"]).split()[1]
    assert int(caps, 16) == DOCKER_DEFAULT_CAP_MASK & ~1      # Docker's set without CHOWN (bit 0)


def test_tty_stdin_open_cap_add_stop_signal(R):
    c = containers.run(rootfs=R, command=["sh", "-c", "test -t 1 && echo on-a-tty"], tty=True, stdin_open=True)
    assert c.wait(timeout=30)["StatusCode"] == 0
    assert c.logs() == b"on-a-tty\r\n" and c.attrs["Config"]["Tty"] and c.attrs["Config"]["OpenStdin"]
    c.remove()
    out = containers.run(rootfs=R, command=["grep", "CapEff", "/proc/self/status"], cap_drop=["ALL"],
                         cap_add=["CHOWN"], detach=False, remove=True)
    assert out == b"CapEff:\t0000000000000001\n"          # CHOWN alone
    c = containers.run(rootfs=R, command=["sh", "-c", "trap 'echo got-usr1; exit 0' USR1; echo up; "
                                                      "while :; do sleep 0.1; done"], stop_signal="SIGUSR1")
    wait_for_log(c, "up")
    c.stop(timeout=30)
    assert c.wait()["StatusCode"] == 0 and c.logs() == b"up\ngot-usr1\n"
    assert c.attrs["Config"]["StopSignal"] == "SIGUSR1"
    c.remove(v=True)


@pytest.mark.subuid
def test_exec_as_another_user(R):
    with containers.run(rootfs=R, command=["sleep", "300"]) as c:
        assert c.exec_run(["id", "-u"], user="1000").output == b"1000\n"
        assert c.exec_run(["id", "-u"]).output == b"0\n"


def test_create_start_kill_restart_rename_wait(R):
    c = containers.create(rootfs=R, command=["sh", "-c", "trap 'echo usr1' USR1; echo up; while :; do sleep 0.1; done"],
                          name="verbs")
    assert c.status == "created" and containers.get("verbs") == c
    c.start()
    assert c.status == "running"
    wait_for_log(c, "up")
    c.kill(signal="SIGUSR1")
    wait_for_log(c, "usr1")
    assert c.status == "running"
    with pytest.raises(WaitTimeout):
        c.wait(timeout=0.3)                                # still running
    first = c.attrs["State"]["StartedAt"]
    c.restart(timeout=0)
    assert c.status == "running" and c.attrs["State"]["StartedAt"] != first
    c.rename("verbs2")
    assert c.name == "verbs2" and containers.get("verbs2") == c
    with pytest.raises(containers.NotFound):
        containers.get("verbs")
    with pytest.raises(sandbox.SandboxError):
        c.remove()                                          # running: only with force
    c.kill()
    assert c.wait(timeout=30) == {"StatusCode": 137, "Error": None}
    with pytest.raises(sandbox.SandboxError):
        c.kill()                                            # not running: says so
    c.remove()
    assert containers.list(all=True) == []


def test_top(R):
    with containers.run(rootfs=R, command=["sh", "-c", "sleep 300 & exec sleep 301"]) as c:
        deadline = time.monotonic() + 20
        while True:  # until the shell has forked its sleep and exec'd the other
            top = c.top()
            assert "PID" in top["Titles"] and "CMD" in top["Titles"]
            cmds = sorted(p[top["Titles"].index("CMD")] for p in top["Processes"])
            if cmds == ["sleep 300", "sleep 301"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert cmds == ["sleep 300", "sleep 301"], top


def test_pause_is_refused_until_the_freezer_lands(R):
    with containers.run(rootfs=R, command=["sleep", "300"]) as c:
        with pytest.raises(sandbox.SandboxError):
            c.pause()
        with pytest.raises(sandbox.SandboxError):
            c.unpause()                                     # it is not paused
        c.reload()
        assert c.status == "running"


def test_restart_policy_on_failure(R, tmp_path):
    count = tmp_path / "count"
    count.mkdir()
    c = containers.run(rootfs=R, command=["sh", "-c", "echo run >> /c/runs; exit 3"],
                       volumes={str(count): {"bind": "/c", "mode": "rw"}},
                       restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
    assert c.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}

    def settled():
        c.reload()
        return c.status == "exited" and c.attrs["RestartCount"] == 2
    _until(settled)
    assert (count / "runs").read_text() == "run\n" * 3     # the first run and two retries
    assert c.wait()["StatusCode"] == 3
    c.remove()


def test_context_manager_removes_after_an_exception(R):
    with pytest.raises(RuntimeError, match="boom"):
        with containers.run(rootfs=R, command=["sleep", "300"], name="ctx") as c:
            cid, pid = c.id, c.attrs["State"]["Pid"]
            assert _alive(pid)
            raise RuntimeError("boom")
    with pytest.raises(containers.NotFound):
        containers.get(cid)
    assert not _alive(pid)
    assert ok(sbx("ps", "-a", "-q")).split() == []
    with containers.run(rootfs=R, command=["true"], auto_remove=True) as c:  # already gone at exit: fine
        c.wait(condition="removed")


def test_get_list_prune_with_filters(R):
    a = containers.run(rootfs=R, command=["sleep", "300"], name="lst-a", labels={"team": "x", "tier": "db"})
    b = containers.run(rootfs=R, command=["true"], name="lst-b", labels={"team": "x"})
    b.wait()
    try:
        assert containers.get("lst-a") == a and containers.get(a.id) == a and containers.get(a.id[:10]) == a
        names = lambda **kw: [c.name for c in containers.list(**kw)]  # noqa: E731
        assert names() == ["lst-a"]                         # running ones only
        assert names(all=True) == ["lst-b", "lst-a"]        # newest first
        assert names(all=True, filters={"label": "tier=db"}) == ["lst-a"]
        assert names(all=True, filters={"label": ["team=x", "tier"]}) == ["lst-a"]
        assert names(all=True, filters={"label": "team"}) == ["lst-b", "lst-a"]
        assert names(filters={"status": "exited"}) == ["lst-b"]
        assert names(all=True, filters={"exited": 0}) == ["lst-b"] and names(filters={"exited": 0}) == []
        assert names(all=True, filters={"name": "lst-a"}) == ["lst-a"]
        assert names(all=True, filters={"id": a.id[:10]}) == ["lst-a"]
        assert names(limit=1) == ["lst-b"]
        with pytest.raises(sandbox.UsageError):
            containers.list(filters={"colour": "red"})
        with pytest.raises(containers.NotFound) as e:
            containers.get("no-such")
        assert isinstance(e.value, sandbox.SandboxError) and "no-such" in str(e.value)
        assert containers.prune(filters={"label": "team=y"}) == {"ContainersDeleted": None, "SpaceReclaimed": 0}
        assert containers.prune(filters={"label!": "team=x"})["ContainersDeleted"] is None
        assert containers.prune()["ContainersDeleted"] == [b.id]
        assert names(all=True) == ["lst-a"]
    finally:
        a.remove(force=True)


def test_unsupported_arguments_are_refused_by_name(R):
    with pytest.raises(sandbox.UsageError, match="--network none"):  # a rootfs has no network by default
        containers.run(rootfs=R, command=["true"], ports={"80/tcp": 18080})
    with pytest.raises(sandbox.UsageError, match="user-defined networks"):
        containers.run(rootfs=R, command=["true"], network="mynet")
    with pytest.raises(sandbox.UsageError, match="cgroup_parent= is not supported"):   # limits: test_update.py
        containers.run(rootfs=R, command=["true"], cgroup_parent="/mine")
    with pytest.raises(TypeError, match="colour"):
        containers.run(rootfs=R, command=["true"], colour="red")
    with pytest.raises(sandbox.UsageError, match="rootfs"):
        containers.run(command=["true"])
    with pytest.raises(sandbox.UsageError):
        containers.run(rootfs=R, command=["true"], restart_policy={"Name": "sometimes"})
    assert containers.list(all=True) == []                  # nothing was made
    with containers.run(rootfs=R, command=["sleep", "300"]) as c:
        for bad in ({"privileged": True}, {"stdin": True}, {"socket": True}):
            with pytest.raises(sandbox.UsageError, match=next(iter(bad))):
                c.exec_run(["true"], **bad)


def test_archives_round_trip(R):
    with containers.run(rootfs=R, command=["sleep", "300"]) as c:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("hello.txt")
            info.size, info.mode = 3, 0o640
            t.addfile(info, io.BytesIO(b"hi\n"))
        assert c.put_archive("/tmp", buf.getvalue()) is True
        assert c.exec_run(["sh", "-c", "cat /tmp/hello.txt; stat -c %a /tmp/hello.txt"]).output == b"hi\n640\n"
        chunks, stat = c.get_archive("/tmp/hello.txt", chunk_size=512)
        chunks = list(chunks)
        assert len(chunks) > 1 and all(len(x) == 512 for x in chunks[:-1])
        data = b"".join(chunks)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            assert t.extractfile("hello.txt").read() == b"hi\n"
        assert stat["name"] == "hello.txt" and stat["size"] == 3


def test_diff_export_commit(R):
    """docker-py's diff/export/commit: the changes, the whole tree as a tar, a new image that runs."""
    c = containers.run(rootfs=R, command=["sh", "-c", "echo new > /added; echo x >> /etc/marker; rm /bin/true"],
                       detach=True)
    try:
        assert c.wait(timeout=60)["StatusCode"] == 0
        changed = {d["Path"]: d["Kind"] for d in c.diff()}
        assert changed["/added"] == 1 and changed["/etc/marker"] == 0 and changed["/bin/true"] == 2
        data = b"".join(c.export(chunk_size=4096))
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            names = {n.lstrip("./") for n in t.getnames()}
            assert t.extractfile(next(m for m in t.getmembers() if m.name.lstrip("./") == "added")).read() == b"new\n"
        assert "added" in names and "bin/sh" in names and "bin/true" not in names
        it = c.export(chunk_size=1024)
        assert len(next(it)) == 1024
        it.close()                                       # stopping early ends the writer
        image = c.commit("apicommit", "v1", changes=["CMD cat /added"], message="from the API")
        assert image.startswith("sha256:") or len(image) == 64
        assert containers.run("apicommit:v1", detach=False, remove=True) == b"new\n"
        with pytest.raises(sandbox.UsageError, match="needs a repository"):
            c.commit(tag="v2")
    finally:
        c.remove(force=True)
    with containers.run(rootfs=R, command=["sleep", "300"]) as live:
        with pytest.raises(sandbox.UsageError, match="is running"):
            live.commit("nope")
    with pytest.raises(containers.NotFound):
        c.export()


def test_run_an_image(R, tmp_path):
    tar = tmp_path / "root.tar"
    with tarfile.open(tar, "w") as t:
        t.add(R, arcname=".")
    ok(sbx("import", str(tar), "apitest:1", timeout=120))
    assert containers.run("apitest:1", ["cat", "/etc/marker"], detach=False, remove=True) == MARKER_CONTENT.encode()
    with containers.run("apitest:1", ["sleep", "300"]) as c:
        assert c.image == "apitest:1"
        assert [x.name for x in containers.list(filters={"ancestor": "apitest:1"})] == [c.name]


def test_readiness_helpers(R):
    c = containers.run(rootfs=R, command=["sh", "-c", "sleep 0.3; echo ready; touch /tmp/up; exec sleep 300"])
    try:
        assert wait_for_log(c, r"^read(y)$", timeout=30).group(1) == "y"
        assert wait_for_log(c, re.compile(rb"ready"), stream="stdout").group(0) == b"ready"
        assert wait_for_exec(c, ["test", "-e", "/tmp/up"], timeout=30).exit_code == 0
        with pytest.raises(WaitTimeout) as e:
            wait_for_log(c, "never-printed", timeout=0.5)
        assert isinstance(e.value, TimeoutError) and isinstance(e.value, sandbox.SandboxError)
        assert "never-printed" in str(e.value) and "ready" in str(e.value)   # what it awaited, what it saw
        with pytest.raises(WaitTimeout) as e:
            wait_for_log(c, "ready", stream="stderr", timeout=0.3)
        with pytest.raises(WaitTimeout) as e:
            wait_for_exec(c, ["sh", "-c", "echo not-yet; exit 1"], timeout=3)
        assert "not-yet" in str(e.value) and "exit code was 1" in str(e.value)
        with pytest.raises(WaitTimeout):
            wait_for_exec(c, ["sleep", "300"], timeout=0.5)  # a hanging probe is killed at the deadline
        with pytest.raises(sandbox.UsageError, match="not published"):
            wait_for_port(c, 8080, timeout=1)
    finally:
        c.remove(force=True)
    d = containers.run(rootfs=R, command=["sh", "-c", "echo bye"])
    with pytest.raises(WaitTimeout) as e:
        wait_for_log(d, "never", timeout=60)                # ends when the container does, not at 60 s
    assert "exited (code 0)" in str(e.value) and "bye" in str(e.value)
    d.remove()
    gone = containers.run(rootfs=R, command=["true"], auto_remove=True)
    with pytest.raises(WaitTimeout, match="was removed"):
        wait_for_exec(gone, ["true"], timeout=60)


def test_wait_for_port_with_the_host_network(R):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with containers.run(rootfs=R, command=["sh", "-c", f"sleep 0.3; exec nc -l -p {port}"],
                        network_mode="host") as c:
        wait_for_port(c, port, timeout=30)


def test_containers_follow_the_configured_store(R, tmp_path):
    from sandbox import config
    other = config.Context.from_env(root=str(tmp_path / "other"))
    with config.use(other):
        c = containers.run(rootfs=R, command=["sleep", "300"], name="elsewhere")
    assert containers.list(all=True) == []                  # not in the environment's store
    c.exec_run(["true"])                                   # its methods use its own store
    with config.use(other):
        assert [x.name for x in containers.list()] == ["elsewhere"]
    c.remove(force=True)
    with config.use(other):
        assert containers.list(all=True) == []


def test_sandbox_run_stays_records_free(R):
    assert sandbox.run(["true"], rootfs=R).returncode == 0
    assert containers.list(all=True) == []                  # unnamed sandbox.run makes no record
