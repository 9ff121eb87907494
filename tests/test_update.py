"""sbx update and Container.update(): a container's limits and restart policy changed, running
or not.  On this host (cgroup v1 hybrid) every limit is refused as `run` refuses it, and the
record is left as it was; --restart works everywhere.  In the cgroup v2 VM (tests/vm/, one boot
for this file) a running container's leaf gets the new limits, its record keeps them for its
next start, and stats read them from the leaf."""
import json
import os

import pytest

import cgvm
import sbxtest
from sbxtest import assert_sbx_error, ok, sbx

from sandbox.cgroups import v2

pytestmark = pytest.mark.usefixtures("own_container_store")


def _host_cannot_limit():
    m = v2.probe()
    if m.usable:
        pytest.skip(f"this machine can enforce limits ({m.version}, base {m.base}): the VM tests cover it")
    return m


def _first_line(stderr):
    return stderr.splitlines()[0]


# --- this host: refused, the record untouched ---------------------------------------------------

def test_limits_are_refused_as_run_refuses_them(busybox_rootfs):
    _host_cannot_limit()
    ok(sbx("run", "-d", "--name", "u1", "--rootfs", busybox_rootfs, "sleep", "1000"))
    ok(sbx("create", "--name", "u2", "--rootfs", busybox_rootfs, "true"))
    before = sbxtest.inspect_container("u1")
    run = sbx("run", "-m", "64m", "--pids-limit", "20", "--rootfs", busybox_rootfs, "true")
    assert_sbx_error(run, 125, "cannot be enforced")
    for name in ("u1", "u2"):                      # running or not: the machine cannot enforce them
        cp = sbx("update", "-m", "64m", "--pids-limit", "20", name)
        assert_sbx_error(cp, 125, "-m/--memory", "--pids-limit", "cannot be enforced")
        assert _first_line(cp.stderr) == _first_line(run.stderr)
        assert "hint:" in cp.stderr
    after = sbxtest.inspect_container("u1")
    assert after["HostConfig"] == before["HostConfig"] and after["State"]["Status"] == "running"
    # Docker's checks of the values come first, with Docker's messages
    assert_sbx_error(sbx("update", "--memory", "4m", "u1"), 125, "Minimum memory limit allowed is 6MB")
    assert_sbx_error(sbx("update", "--cpus", "x", "u1"), 125, "failed to parse x as a rational number")
    assert_sbx_error(sbx("update", "u1"), 125, "you must provide one or more flags")
    assert_sbx_error(sbx("update", "--restart", "sometimes", "u1"), 125, "invalid restart policy")
    assert_sbx_error(sbx("update", "--restart", "always", "nosuch"), 1, "No such container: nosuch")


def test_python_limits_are_refused_with_the_clis_message(busybox_rootfs):
    _host_cannot_limit()
    from sandbox import containers
    from sandbox.errors import UsageError
    run = sbx("run", "-m", "64m", "--rootfs", busybox_rootfs, "true")
    with pytest.raises(v2.CgroupError) as e:
        containers.run(rootfs=busybox_rootfs, command=["true"], mem_limit="64m")
    assert "sbx: " + e.value.msg == _first_line(run.stderr) and e.value.exit_code == 125
    run = sbx("run", "--cpus", "1", "--pids-limit", "20", "--rootfs", busybox_rootfs, "true")
    with pytest.raises(v2.CgroupError) as e:
        containers.create(rootfs=busybox_rootfs, command=["true"], nano_cpus=10 ** 9, pids_limit=20)
    assert "sbx: " + e.value.msg == _first_line(run.stderr)
    with pytest.raises(v2.CgroupError, match="oom-kill-disable"):
        containers.run(rootfs=busybox_rootfs, command=["true"], oom_kill_disable=True)
    with pytest.raises(UsageError, match="nano_cpus must be int"):
        containers.run(rootfs=busybox_rootfs, command=["true"], nano_cpus=1.5)     # docker-py's type
    with pytest.raises(UsageError, match="Minimum memory limit allowed is 6MB"):
        containers.run(rootfs=busybox_rootfs, command=["true"], mem_limit=1 << 20)
    run = sbx("run", "--device-read-bps", "/dev/sda:1mb", "--rootfs", busybox_rootfs, "true")
    with pytest.raises(v2.CgroupError) as e:                   # docker-py's Path/Rate dicts
        containers.run(rootfs=busybox_rootfs, command=["true"], device_read_bps=[{"Path": "/dev/sda", "Rate": 1 << 20}])
    assert "sbx: " + e.value.msg == _first_line(run.stderr)
    with pytest.raises(UsageError, match="blkio_weight_device= is not supported"):
        containers.run(rootfs=busybox_rootfs, command=["true"], blkio_weight_device=[{"Path": "/dev/sda", "Weight": 5}])
    assert containers.list(all=True) == []         # nothing was made
    c = containers.run(rootfs=busybox_rootfs, command=["sleep", "1000"], name="pyu")
    with c:
        update = sbx("update", "-m", "96m", "pyu")
        with pytest.raises(v2.CgroupError) as e:
            c.update(mem_limit=96 << 20)
        assert "sbx: " + e.value.msg == _first_line(update.stderr)
        assert c.update(restart_policy={"Name": "on-failure", "MaximumRetryCount": 2}) == {"Warnings": []}
        assert c.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}


def test_restart_policy_of_a_running_container_is_followed_at_its_exit(busybox_rootfs, tmp_path):
    """--restart is the record's: the running container's monitor reads it when it exits."""
    (tmp_path / "v").mkdir()
    os.chmod(tmp_path / "v", 0o777)
    ok(sbx("run", "-d", "--name", "r1", "-v", f"{tmp_path / 'v'}:/v", "--rootfs", busybox_rootfs, "sh", "-c",
           "while [ ! -e /v/go ]; do sleep 0.05; done; exit 3"))
    assert ok(sbx("update", "--restart", "on-failure:1", "r1")) == "r1\n"
    assert sbxtest.inspect_container("r1")["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                                           "MaximumRetryCount": 1}
    (tmp_path / "v" / "go").write_text("")          # it exits 3, is started again once, exits 3 again
    doc = sbxtest.wait_for(lambda: (lambda d: d if d["State"]["Status"] == "exited" and d["RestartCount"] == 1
                                    else None)(sbxtest.inspect_container("r1")))
    assert doc and doc["State"]["ExitCode"] == 3, doc
    # a stopped one too, and `sbx container update` is the same verb
    assert ok(sbx("container", "update", "--restart", "no", "r1")) == "r1\n"
    assert sbxtest.inspect_container("r1")["HostConfig"]["RestartPolicy"]["Name"] == "no"
    # Docker's rule: an --rm container cannot get a restart policy
    ok(sbx("run", "-d", "--rm", "--name", "r2", "--rootfs", busybox_rootfs, "sleep", "1000"))
    assert_sbx_error(sbx("update", "--restart", "always", "r2"), 1, "AutoRemove is enabled")


def test_given_values_merge_into_the_containers_as_dockers_update():
    """A flag not given keeps the container's value; 0 means "not given" (but --pids-limit 0 is
    unlimited); the merged set is checked as a whole, as run checks it."""
    from sandbox.containers.update import Change
    from sandbox.errors import UsageError
    from sandbox.runtime.options import Resources
    cur = Resources(mem_limit=64 << 20, pids_limit=20, nano_cpus=10 ** 9)
    assert Change.parse({"memory": "128m"}).merged(cur) == cur.replace(mem_limit=128 << 20)
    assert Change.parse({"memory_swap": "256m"}).merged(cur) == cur.replace(memswap_limit=256 << 20)
    assert Change.parse({"pids_limit": "0"}).merged(cur) == cur.replace(pids_limit=-1)
    assert Change.parse({"memory": "0", "cpus": "0"}).given == {}
    with pytest.raises(UsageError, match="Minimum memoryswap limit should be larger than memory limit"):
        Change.parse({"memory": "512m"}).merged(cur.replace(memswap_limit=256 << 20))
    with pytest.raises(UsageError, match="Conflicting options: Nano CPUs and CPU Period"):
        Change.parse({"cpu_period": "50000"}).merged(cur)
    with pytest.raises(UsageError, match="You should always set the Memory limit"):
        Change.parse({"memory_swap": "256m"}).merged(Resources())


# --- cgroup v2: in the VM ------------------------------------------------------------------------

def _leaf(name):
    """The cgroup directory of the container's first process (read in-process: an `sbx` command
    costs seconds under emulation)."""
    from sandbox import containers
    pid = containers.get(name).attrs["State"]["Pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        rel = next(ln for ln in f.read().splitlines() if ln.startswith("0::"))[3:]
    return f"/sys/fs/cgroup{rel}"


def _cat(path):
    with open(path) as f:
        return f.read().strip()


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_stats_and_update_of_a_container_running_and_stopped(request):
    """One container (every `sbx` or monitor start costs seconds under emulation): stats read
    its leaf; sbx update and Container.update change the leaf's files at once and the record;
    a stopped container's update is enforced from its next start."""
    if not cgvm.inside(request, "cgroup_vm"):
        return
    from sandbox import containers
    c = containers.run(rootfs="/", command=["/bin/busybox", "sh", "-c", "sleep 1001 & sleep 1002 & wait"],
                       name="lim", mem_limit="64m", pids_limit=50)
    with c:
        leaf = _leaf("lim")
        assert os.path.basename(leaf).startswith("sbx-") and _cat(f"{leaf}/memory.max") == str(64 << 20)
        assert sbxtest.wait_for(lambda: _cat(f"{leaf}/pids.current") == "3")
        row = json.loads(ok(sbx("stats", "--no-stream", "--format", "json", "lim", timeout=120)))
        assert row["Source"] == "cgroup" and row["MemUsage"].endswith(" / 64MiB") and row["PIDs"] == "3", row
        assert ok(sbx("update", "-m", "96m", "--pids-limit", "40", "lim", timeout=120)) == "lim\n"
        assert _cat(f"{leaf}/memory.max") == str(96 << 20) and _cat(f"{leaf}/pids.max") == "40"
        c.reload()
        assert c.attrs["HostConfig"]["Memory"] == 96 << 20 and c.attrs["HostConfig"]["PidsLimit"] == 40
        c.update(mem_limit="128m")                              # pids_limit kept: a merge, as Docker's
        assert _cat(f"{leaf}/memory.max") == str(128 << 20) and _cat(f"{leaf}/pids.max") == "40"
        d = c.stats(stream=False)
        assert d["sbx"]["source"] == "cgroup" and d["memory_stats"]["limit"] == 128 << 20
        assert d["pids_stats"] == {"current": 3, "limit": 40} and d["memory_stats"]["usage"] > 0
        assert "inactive_file" in d["memory_stats"]["stats"]
        c.stop(timeout=0)
        c.update(mem_limit="160m")                              # the record only: it does not run
        c.start()
        c.reload()
        assert c.status == "running"
        leaf = _leaf("lim")
        assert _cat(f"{leaf}/memory.max") == str(160 << 20) and _cat(f"{leaf}/pids.max") == "40"
