"""Limits, freezing and killing through cgroup v2 (issue 10).

On this machine class (cgroup v1 hybrid, no systemd) every limit flag must be refused, before
anything is pulled or started, with one line naming the cgroup version or the controller.  The
cgroup v2 behaviour runs in a QEMU (TCG) VM with a delegated subtree (tests/vm/harness.py): the
tests marked `cgroup2vm` run there, all in one boot per session, as this same user; outside the
VM each of them reports the VM's verdict for itself (a VM failure fails it here, with the VM's
text).  A missing qemu fails them under CI and skips them elsewhere.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import cgvm
import pytest
from sbxtest import assert_sbx_error, sbx

from sandbox.cgroups import v2
from sandbox.errors import UsageError
from sandbox.runtime import options

IN_VM = cgvm.IN_VM
HERE = Path(__file__).resolve()


def in_vm(request):
    """True inside the VM (run the test); on the host, the VM's verdict for it (conftest's
    session fixture `cgroup_vm`, one boot for every file's cgroup2vm tests)."""
    return cgvm.inside(request, "cgroup_vm")


# --- Docker's values ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("64m", 64 << 20), ("64M", 64 << 20), ("64mb", 64 << 20), ("512MiB", 512 << 20), ("1.5g", 3 << 29),
    ("100 k", 100 << 10), ("1048576", 1 << 20), ("1b", 1)])
def test_memory_units_as_docker(text, value):
    assert options.ram_in_bytes(text) == value


def test_resources_convert_to_cgroup_v2_files():
    r = options.resources(memory="64m", memory_swap="96m", memory_reservation="32m", cpus="0.5",
                          cpu_shares="1024", cpuset_cpus="0", cpuset_mems="0", pids_limit="20",
                          blkio_weight="500")
    files = dict(v2.limit_files(r))
    assert files == {"memory.max": str(64 << 20), "memory.swap.max": str(32 << 20), "memory.low": str(32 << 20),
                     "cpu.max": "50000 100000", "cpu.weight": "39", "cpuset.cpus": "0", "cpuset.mems": "0",
                     "pids.max": "20", "io.bfq.weight": "500"}
    # Docker's defaults: swap as large as memory; --memory-swap -1 unlimited; quota/period as given
    assert dict(v2.limit_files(options.resources(memory="64m")))["memory.swap.max"] == str(64 << 20)
    assert dict(v2.limit_files(options.resources(memory="64m", memory_swap="-1")))["memory.swap.max"] == "max"
    assert dict(v2.limit_files(options.resources(cpu_period="50000", cpu_quota="25000")))["cpu.max"] == "25000 50000"
    assert dict(v2.limit_files(options.resources(pids_limit="-1")))["pids.max"] == "max"
    assert v2.cpu_weight(2) == 1 and v2.cpu_weight(262144) == 10000
    assert v2.needed(r) == ["memory", "cpu", "cpuset", "pids", "io"]


@pytest.mark.parametrize("flags,words", [
    (["-m", "64x"], ['invalid argument "64x" for "-m, --memory" flag', "invalid size"]),
    (["-m", "4m"], ["Minimum memory limit allowed is 6MB"]),
    (["--memory-swap", "1g"], ["You should always set the Memory limit when using Memoryswap limit"]),
    (["-m", "64m", "--memory-swap", "32m"], ["Minimum memoryswap limit should be larger than memory limit"]),
    (["--memory-reservation", "1m"], ["Minimum memory reservation allowed is 6MB"]),
    (["-m", "64m", "--memory-reservation", "128m"], ["can not be less than memory reservation"]),
    (["--cpus", "x"], ["failed to parse x as a rational number"]),
    (["--cpus", "0.001"], ["Range of CPUs is from 0.01 to"]),
    (["--cpus", "1", "--cpu-quota", "50000"], ["Conflicting options: Nano CPUs and CPU Quota"]),
    (["--cpu-period", "500"], ["CPU cfs period can not be less than 1ms"]),
    (["--cpu-quota", "10"], ["CPU cfs quota can not be less than 1ms"]),
    (["--cpuset-cpus", "0-x"], ["Invalid value 0-x for cpuset cpus"]),
    (["--cpuset-mems", "2-1"], ["Invalid value 2-1 for cpuset mems"]),
    (["--pids-limit", "many"], ['"--pids-limit" flag']),
    (["--blkio-weight", "5"], ["Range of blkio weight is from 10 to 1000"]),
    (["--device-read-bps", "/dev/sda"], ["bad format: /dev/sda"]),
    (["--device-write-bps", "sda:1mb"], ["bad format for device path: sda:1mb"]),
    (["--device-read-bps", "/dev/sda:fast"], ["invalid rate for device: /dev/sda:fast", "can be kb, mb, or gb"]),
    (["--device-write-iops", "/dev/sda:1k"], ["invalid rate for device: /dev/sda:1k", "<device-path>:<number>."]),
])
def test_bad_limit_values_are_refused_as_docker_refuses_them(flags, words, tmp_path):
    cp = sbx("run", *flags, "--rootfs", tmp_path, "true")
    assert_sbx_error(cp, 125, *words)


# --- this machine: refused before anything happens ---------------------------------------------

def _host_cannot_limit():
    m = v2.probe()
    if m.usable:
        pytest.skip(f"this machine can enforce limits ({m.version}, base {m.base})")
    return m


@pytest.mark.parametrize("flags,controller", [
    (["-m", "64m"], "-m/--memory"), (["--memory-reservation", "64m"], "--memory-reservation"),
    (["--cpus", "0.5"], "--cpus"), (["--cpu-shares", "512"], "--cpu-shares"),
    (["--cpu-period", "100000", "--cpu-quota", "50000"], "--cpu-quota"), (["--cpuset-cpus", "0"], "--cpuset-cpus"),
    (["--cpuset-mems", "0"], "--cpuset-mems"), (["--pids-limit", "20"], "--pids-limit"),
    (["--blkio-weight", "500"], "--blkio-weight"), (["--device-read-bps", "/dev/sda:1mb"], "--device-read-bps"),
    (["--device-write-iops", "/dev/sda:100"], "--device-write-iops")])
def test_every_limit_is_refused_before_anything_is_pulled_or_started(flags, controller, tmp_path):
    """An image that does not exist: a refusal after a pull attempt would name the image.
    And no container record is left behind."""
    m = _host_cannot_limit()
    before = sbx("ps", "-a", "-q", "--no-trunc").stdout
    for verb in ("run", "create"):
        cp = sbx(verb, *flags, "registry.invalid/no/such:image", "true")
        assert_sbx_error(cp, 125, controller, "cannot be enforced", m.reason)
        assert "registry.invalid" not in cp.stderr
        assert ("systemd.unified_cgroup_hierarchy=1" in cp.stderr if m.version in ("hybrid", "v1")
                else "sbx info" in cp.stderr)
    assert sbx("ps", "-a", "-q", "--no-trunc").stdout == before


def _block_device():
    for name in sorted(os.listdir("/dev")):
        if __import__("stat").S_ISBLK(os.stat(f"/dev/{name}").st_mode):
            return f"/dev/{name}"
    pytest.skip("no block device in /dev")


def test_device_throttles_become_io_max_and_a_weight_falls_back_to_io_weight(tmp_path):
    """Docker's --device-*-bps/-iops values -> one io.max line per device (MAJ:MIN, what is not
    given stays 'max'); --blkio-weight goes to io.bfq.weight, else io.weight (runc's order);
    a path that is not a block device is refused."""
    dev = _block_device()
    st = os.stat(dev)
    r = options.resources(device_read_bps=[f"{dev}:1mb"], device_write_iops=[f"{dev}:100"], blkio_weight="500")
    assert r.device_read_bps == ((dev, 1 << 20),) and r.device_write_iops == ((dev, 100),)
    assert options.resources(device_read_bps=[{"Path": dev, "Rate": 4096}]).device_read_bps == ((dev, 4096),)
    files = dict(v2.limit_files(r))
    assert files["io.max"] == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rbps={1 << 20} wbps=max riops=max wiops=100"
    assert v2.needed(r) == ["io"]
    for f in ("io.max", "io.weight"):
        (tmp_path / f).write_text("")
    v2.Cgroup(str(tmp_path)).set(v2.limit_files(r))
    assert (tmp_path / "io.weight").read_text() == "default 4950" and not (tmp_path / "io.bfq.weight").exists()
    (tmp_path / "io.weight").unlink()
    with pytest.raises(v2.CgroupError) as e:
        v2.Cgroup(str(tmp_path)).set(v2.limit_files(r))
    assert "neither io.bfq.weight" in e.value.msg
    with pytest.raises(v2.CgroupError) as e:
        v2.limit_files(options.resources(device_read_bps=["/dev/null:1mb"]))
    assert e.value.msg == "--device-read-bps /dev/null: not a block device"


def test_oom_kill_disable_is_refused_everywhere(tmp_path):
    """cgroup v2 has no OOM-killer switch (v1's memory.oom_control): never a silent no-op."""
    cp = sbx("run", "--oom-kill-disable", "-m", "64m", "--rootfs", tmp_path, "true")
    assert_sbx_error(cp, 125, "--oom-kill-disable", "cgroup v2 has no way to disable the OOM killer")
    # --oom-kill-disable=false asks for nothing
    assert options.resources(oom_kill_disable=False) == options.Resources()


def test_a_run_without_limits_needs_no_cgroup(tmp_path):
    (tmp_path / "bin").mkdir()
    cp = sbx("run", "--pids-limit", "0", "--rootfs", "/", "true")
    assert cp.returncode == 0, cp.stderr


# --- the machine classification, on fake cgroup trees ----------------------------------------

def _fake(tmp_path, lines, own):
    mi = tmp_path / "mountinfo"
    mi.write_text("".join(f"{i} 1 0:{i} {root} {mp} rw - {fs} {fs} {opts}\n"
                          for i, (root, mp, fs, opts) in enumerate(lines, 30)))
    pc = tmp_path / "cgroup"
    pc.write_text(own)
    return dict(mountinfo=str(mi), proc_cgroup=str(pc))


def _cgdir(d, controllers="", subtree="", procs=""):
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.controllers").write_text(controllers + "\n")
    (d / "cgroup.subtree_control").write_text(subtree + "\n")
    (d / "cgroup.procs").write_text(procs)
    (d / "cgroup.freeze").write_text("0\n")
    (d / "cgroup.kill").write_text("")
    return d


def test_probe_classifies_v1_hybrid_and_none(tmp_path):
    v1 = [("/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory"), ("/", "/sys/fs/cgroup/pids", "cgroup", "rw,pids")]
    m = v2.probe(**_fake(tmp_path, v1, "5:memory:/\n4:pids:/\n"))
    assert (m.version, m.usable) == ("v1", False) and "cgroup v1" in m.reason
    assert "systemd.unified_cgroup_hierarchy=1" in m.hint
    m = v2.probe(**_fake(tmp_path, v1 + [("/", str(tmp_path), "cgroup2", "rw")], "0::/\n"))
    assert (m.version, m.usable) == ("hybrid", False) and "memory, pids are on cgroup v1" in m.reason
    m = v2.probe(**_fake(tmp_path, [], ""))
    assert (m.version, m.usable) == ("none", False)


def test_probe_makes_containers_siblings_of_a_delegated_leaf(tmp_path):
    """systemd's layout (and the VM's): the caller in user-N/init, user-N owned by the user."""
    root = tmp_path / "cg"
    _cgdir(root, "cpu memory pids io cpuset", "cpu memory pids io cpuset")
    _cgdir(root / "user-1", "memory pids cpu")
    _cgdir(root / "user-1" / "init", procs=f"{os.getpid()}\n")
    m = v2.probe(**_fake(tmp_path, [("/", str(root), "cgroup2", "rw,nsdelegate")], "0::/user-1/init\n"))
    assert (m.version, m.base, m.self_move) == ("v2", str(root / "user-1"), False)
    assert m.controllers == ("memory", "pids", "cpu") and m.freeze and m.kill
    assert v2.refusal(m, ["memory", "pids"]) is None
    err = v2.refusal(m, ["cpuset"])
    assert "controller 'cpuset' is not delegated" in err.msg and "Delegate=" in err.hint
    assert "delegated: memory pids cpu" in err.msg


def test_probe_moves_the_caller_out_of_a_delegated_cgroup_it_sits_in(tmp_path):
    """The no-internal-process rule: processes only in leaves, so the caller goes to init."""
    root = tmp_path / "cg"
    _cgdir(root, "memory pids")
    _cgdir(root / "user-1", "memory pids", procs=f"{os.getpid()}\n")
    (root / "user-1").parent.chmod(0o555)  # the parent is not the user's
    try:
        m = v2.probe(**_fake(tmp_path, [("/", str(root), "cgroup2", "rw")], "0::/user-1\n"))
    finally:
        (root / "user-1").parent.chmod(0o755)
    if os.geteuid() == 0:
        pytest.skip("root can write every directory: the parent counts as delegated")
    assert (m.base, m.self_move) == (str(root / "user-1"), True)


def test_probe_refuses_a_cgroup_that_is_not_delegated(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write every cgroup file")
    root = tmp_path / "cg"
    _cgdir(root, "memory pids")
    _cgdir(root / "other", "memory pids", procs=f"{os.getpid()}\n")
    for d in (root, root / "other"):
        for f in ("cgroup.procs", "cgroup.subtree_control"):
            (d / f).chmod(0o444)
    m = v2.probe(**_fake(tmp_path, [("/", str(root), "cgroup2", "rw")], "0::/other\n"))
    assert not m.usable and "is not delegated" in m.reason and "enable-linger" in m.hint
    with pytest.raises(v2.CgroupError) as e:
        v2.require(options.resources(memory="64m"), m)
    assert e.value.exit_code == 125 and "-m/--memory: cannot be enforced" in e.value.msg


def test_resources_reject_bad_python_values():
    with pytest.raises(UsageError):
        options.resources(memory="lots")
    assert options.resources(memory=64 << 20, cpus=None).mem_limit == 64 << 20


# --- cgroup v2 for real: in the VM -------------------------------------------------------------

def _launch(argv, resources, stdout=-1, name=None):
    """A sandbox (the host's files, read-only) with `resources` through the launch hook."""
    from sandbox.runtime import spec as _spec
    from sandbox.runtime.process import SandboxProcess
    sp = _spec.build(list(argv), rootfs="/", container_id=name or os.urandom(32).hex(), resources=resources)
    hooks = v2.hooks_for(sp)
    assert len(hooks) == 1
    p = SandboxProcess.launch(sp, stdio=(-1, stdout, -1), hooks=hooks)
    return p, hooks[0]


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_memory_limit_oom_kills(request):
    if not in_vm(request):
        return
    r = options.resources(memory="32m", memory_swap="32m")
    base = v2.probe().base
    before = v2._keyed(open(f"{base}/memory.events").read())["oom_kill"]  # hierarchical
    p, hook = _launch(["python3", "-c", "x = b'x' * (200 << 20)"], r)
    path = hook.cgroup.path
    try:
        assert hook.cgroup.read("memory.max").strip() == str(32 << 20)
        assert p.wait() == 137
    finally:
        p.close()
    assert v2._keyed(open(f"{base}/memory.events").read())["oom_kill"] > before
    assert not os.path.exists(path), "the leaf outlived its container"


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_pids_limit_stops_a_fork_loop_and_kill_leaves_nothing(request):
    if not in_vm(request):
        return
    r, w = os.pipe()
    script = ("import os, time\nn = 0\nfor i in range(40):\n    try:\n        pid = os.fork()\n"
              "    except OSError:\n        continue\n    if pid == 0:\n        time.sleep(1000)\n        os._exit(0)\n"
              "    n += 1\nprint(n, flush=True)\ntime.sleep(1000)\n")
    p, hook = _launch(["python3", "-c", script], options.resources(pids_limit="20"), stdout=w)
    os.close(w)
    cg = hook.cgroup
    try:
        forked = int(os.read(r, 100))
        assert 15 <= forked <= 19, f"{forked} forks succeeded under --pids-limit 20"
        st = cg.stats()
        assert st["pids_max"] == 20 and st["pids_current"] <= 20
        assert st["pids_events"]["max"] >= 1  # forks were refused
        assert len(cg.pids()) >= 19
        cg.kill()
        assert cg.pids() == [] and cg.events()["populated"] == 0
        assert p.wait() == 137
    finally:
        os.close(r)
        p.close()
    assert not os.path.exists(cg.path)


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_cpus_writes_cpu_max_and_throttles(request):
    if not in_vm(request):
        return
    p, hook = _launch(["sh", "-c", "while :; do :; done"], options.resources(cpus="0.5"))
    cg = hook.cgroup
    try:
        assert cg.read("cpu.max").split() == ["50000", "100000"]
        deadline = time.monotonic() + 60
        while cg.stats()["cpu"].get("nr_throttled", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cg.stats()["cpu"]["nr_throttled"] > 0, cg.read("cpu.stat")
    finally:
        p.kill()
        p.wait()
        p.close()


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_freeze_stops_a_counter_and_thaw_resumes_it(request):
    if not in_vm(request):
        return
    r, w = os.pipe()
    p, hook = _launch(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"],
                      options.resources(pids_limit="100"), stdout=w)
    os.close(w)
    cg = hook.cgroup
    os.set_blocking(r, False)

    def drain(wait):
        got, end = b"", time.monotonic() + wait
        while time.monotonic() < end:
            if select.select([r], [], [], max(0, end - time.monotonic()))[0]:
                try:
                    got += os.read(r, 65536)
                except BlockingIOError:
                    pass
        return got

    try:
        assert drain(2.0), "the counter never wrote"
        cg.freeze()
        assert cg.frozen and cg.events()["frozen"] == 1
        drain(0.5)  # what was in flight before the freeze
        assert drain(2.0) == b"", "a frozen container kept counting"
        cg.thaw()
        assert not cg.frozen
        assert drain(5.0), "the counter did not resume after thaw"
    finally:
        os.close(r)
        p.kill()
        p.wait()
        p.close()
    assert not os.path.exists(cg.path)


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_io_limits_are_written_for_a_block_device(request):
    """--device-read-bps and --device-write-iops of the VM's virtio disk become its io.max
    line, --blkio-weight its io weight, in the container's leaf."""
    if not in_vm(request):
        return
    st = os.stat("/dev/vda")
    r = options.resources(device_read_bps=["/dev/vda:1mb"], device_write_iops=["/dev/vda:100"], blkio_weight="500")
    v2.require(r)
    p, hook = _launch(["sleep", "100"], r)
    cg = hook.cgroup
    try:
        line = next(ln for ln in cg.read("io.max").splitlines() if ln.startswith(f"{os.major(st.st_rdev)}:"))
        assert line == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rbps={1 << 20} wbps=max riops=max wiops=100"
        weights = [cg.read(f).split() for f in ("io.bfq.weight", "io.weight") if os.path.exists(cg.file(f))]
        assert ["default", "500"] in weights or ["default", "4950"] in weights, weights
    finally:
        p.kill()
        p.wait()
        p.close()


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_the_delegated_subtree_is_found(request):
    if not in_vm(request):
        return
    m = v2.probe()
    assert m.version == "v2" and m.usable and not m.self_move, m.asdict()
    assert {"memory", "pids", "cpu"} <= set(m.controllers)
    assert m.base.endswith(f"/user-{os.getuid()}")


# --- sbx info --------------------------------------------------------------------------------

def test_info_explains_this_machine():
    import json
    m = v2.probe()
    d = json.loads(sbx("info", "--format", "json").stdout)
    cg = d["Cgroups"]
    assert cg["Version"] == m.version and cg["Controllers"] == list(m.controllers)
    if not m.usable:
        assert cg["Limits"].startswith("refused (exit 125)") and m.reason in cg["Limits"]
        assert cg["Pause"].startswith("refused (exit 125)")
    assert d["IdMapping"]["Mode"] == ("helper" if __import__("sbxtest").has_subid_range() else "single")
    from sandbox import config
    assert d["Storage"]["DataRoot"] == config.Context.from_env().data_root  # SBX_ROOT, else the XDG default
    assert set(d["Network"]) >= {"slirp4netns", "pasta"} and d["Version"]
    text = sbx("info").stdout
    assert f"Version: {m.version}" in text and "IdMapping:" in text
    assert_sbx_error(sbx("info", "--format", "{{.Nope}}"), 125, "--format json")


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_info_says_limits_are_enforced(request):
    if not in_vm(request):
        return
    import json
    d = json.loads(sbx("info", "--format", "json").stdout)
    assert d["Cgroups"]["Version"] == "v2" and d["Cgroups"]["Limits"].startswith("enforced in ")
    assert d["Cgroups"]["Pause"] == "cgroup.freeze in the container's leaf"


def test_an_explicit_swap_limit_without_swap_accounting_is_refused(tmp_path):
    """Docker's default swap limit is left out where the kernel has no memory.swap.max; an
    explicit --memory-swap is refused there, never dropped."""
    (tmp_path / "memory.max").write_text("")
    cg = v2.Cgroup(str(tmp_path))
    cg.set(v2.limit_files(options.resources(memory="64m")))
    assert (tmp_path / "memory.max").read_text() == str(64 << 20)
    with pytest.raises(v2.CgroupError) as e:
        cg.set(v2.limit_files(options.resources(memory="64m", memory_swap="128m")), swap_asked=True)
    assert "--memory-swap cannot be enforced" in e.value.msg and e.value.exit_code == 125


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_sbx_run_memory_limit_is_enforced_oom_killed_recorded_and_the_leaf_removed(request, tmp_path,
                                                                                        monkeypatch):
    """The CLI end to end: the engine's launch places the container in its leaf; an OOM kill
    under -m exits 137 with State.OOMKilled true (read from memory.events before the leaf
    went).  Inside, the cgroup namespace is rooted at the container's leaf: /proc/self/cgroup
    says 0::/ (the namespace is made once the launch hook moved the child there)."""
    if not in_vm(request):
        return
    from sandbox.containers import lifecycle
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    base = v2.probe().base
    cp = sbx("run", "--name", "oom", "-m", "32m", "--memory-swap", "32m", "--rootfs", "/",
             "sh", "-c", "cat /proc/self/cgroup; python3 -c \"x = b'x' * (200 << 20)\"", timeout=240)
    assert cp.returncode == 137, cp.stderr
    assert cp.stdout == "0::/\n"
    assert not [d for d in os.listdir(base) if d.startswith("sbx-")]
    st = lifecycle.inspect(str(tmp_path / "data"), "oom")["State"]
    assert (st["ExitCode"], st["OOMKilled"], st["Status"]) == (137, True, "exited")


# --- the engine on cgroup v2: pause, cgroup.kill, OOMKilled (issue 10) ---------------------------

@pytest.fixture
def vm_store(tmp_path, monkeypatch):
    """(a ContainerStore of the test's own, also the CLI's (SBX_ROOT), a directory for volumes)."""
    from sandbox.containers.store import ContainerStore
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    out = tmp_path / "out"
    out.mkdir()
    return ContainerStore(str(tmp_path / "data")), out


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _started(store, argv, **kw):
    """A detached container of the host's (read-only) root, started by its monitor."""
    from sandbox.containers import lifecycle
    rec = lifecycle.create(store, options.RunOptions(argv=tuple(argv), rootfs="/", **kw))
    lifecycle.start(store, rec.id)
    return store.get(rec.id)


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_pause_unpause_ps_exec_and_stop_of_a_paused_container(request):
    """sbx pause freezes a counter-writing container that has no limits (status paused, ps
    '(Paused)', exec refused with Docker's words, its restart policy does not count it dead),
    unpause resumes it, and stop of a paused container works (thawed, then stopped); its leaf
    is gone after."""
    if not in_vm(request):
        return
    from sandbox.containers import lifecycle
    from sbxtest import ok, wait_for
    store, out = request.getfixturevalue("vm_store")
    n = out / "n"
    rec = _started(store, ["sh", "-c", "while :; do echo x >>/out/n; sleep 0.05; done"], name="pz",
                   volumes=(f"{out}:/out",), restart=options.RestartPolicy(name="always", max_retries=0))
    try:
        leaf = rec.state["CgroupPath"]
        assert leaf == f"{v2.probe().base}/sbx-{rec.id[:12]}" and os.path.isdir(leaf), \
            "a container without limits got no cgroup leaf on a delegated machine"
        assert wait_for(lambda: _size(n) > 0, 60), "the counter never wrote"
        assert ok(sbx("pause", "pz", timeout=120)).strip() == "pz"
        assert v2.Cgroup(leaf).events()["frozen"] == 1
        before = _size(n)
        time.sleep(1.5)
        assert _size(n) == before, "a paused container kept writing"
        st = lifecycle.inspect(store, "pz")["State"]
        assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
        line = next(ln for ln in ok(sbx("ps", timeout=120)).splitlines() if ln.endswith("pz"))
        assert "(Paused)" in line and "Up " in line
        assert_sbx_error(sbx("exec", "pz", "true", timeout=120), 1,
                         f"Container {rec.id} is paused, unpause the container before exec")
        with pytest.raises(lifecycle._state.StateError):
            lifecycle.pause(store, "pz")
        lifecycle.unpause(store, "pz")
        assert wait_for(lambda: _size(n) > before, 30), "unpause did not resume the counter"
        assert v2.Cgroup(leaf).events()["frozen"] == 0
        lifecycle.pause(store, "pz")
        ok(sbx("stop", "-t", "1", "pz", timeout=120))
        doc = lifecycle.inspect(store, "pz")
        assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0, doc["State"]
        assert doc["State"]["OOMKilled"] is False
        assert wait_for(lambda: not os.path.exists(leaf), 30), "the leaf outlived its container"
    finally:
        lifecycle.remove(store, "pz", force=True)


@pytest.mark.cgroup2vm
@pytest.mark.timeout(cgvm.DEADLINE + 60)
def test_vm_kill_and_rm_f_leave_no_process_even_outside_the_pid_namespace(request):
    """A container whose shell double-forks a sleep (no pid namespace: killing its main process
    alone would leave the sleep running): `sbx kill` and `sbx rm -f` leave no process (the
    leaf's cgroup.kill), and the monitor removes the leaf."""
    if not in_vm(request):
        return
    from sandbox.containers import lifecycle
    from sandbox.containers.state import pid_alive
    from sbxtest import wait_for
    store, out = request.getfixturevalue("vm_store")
    ns = tuple(n for n in options.DEFAULT_NAMESPACES if n != "pid")
    for verb in (("kill",), ("rm", "-f")):
        f = out / verb[0]
        rec = _started(store, ["sh", "-c", f"sh -c 'sleep 1000 & echo $! >/out/{verb[0]}' & sleep 1000"],
                       namespaces=ns, volumes=(f"{out}:/out",), name=verb[0])
        leaf = rec.state["CgroupPath"]
        assert leaf.endswith(f"/sbx-{rec.id[:12]}") and os.path.isdir(leaf)
        assert wait_for(lambda: f.exists() and f.read_text().strip(), 60)
        grandchild = int(f.read_text())
        assert grandchild in v2.Cgroup(leaf).pids()
        cp = sbx(*verb, rec.name, timeout=120)
        assert cp.returncode == 0, cp.stderr
        assert not pid_alive(grandchild, None), f"the double-forked sleep survived sbx {' '.join(verb)}"
        assert wait_for(lambda: not os.path.exists(leaf), 30), "the leaf outlived its container"
        if verb == ("kill",):
            assert lifecycle.wait(store, rec.id) == 137
            lifecycle.remove(store, rec.id)


# --- the engine on this machine: refusals, and nothing added to the plain run ---------------------

def test_pause_is_refused_here_with_why_and_how(tmp_path, busybox_rootfs):
    """Without a delegated cgroup v2 subtree pause exits 125 naming why (v1/hybrid/not
    delegated) and how (systemd Delegate=, enable-linger, sbx info); the container runs on."""
    m = _host_cannot_limit()
    env = {**os.environ, "SBX_ROOT": str(tmp_path / "data")}
    cp = sbx("run", "-d", "--name", "p", "--rootfs", busybox_rootfs, "sleep", "300", env=env)
    assert cp.returncode == 0, cp.stderr
    try:
        cp = sbx("pause", "p", env=env)
        assert_sbx_error(cp, 125, "cannot pause container p: the cgroup v2 freezer is not available", m.reason)
        assert "sbx info" in cp.stderr
        assert ("enable-linger" in cp.stderr and "Delegate=yes" in cp.stderr) if m.version in ("hybrid", "v1") \
            else "enable-linger" in cp.stderr
        assert [ln[:5] for ln in cp.stderr.splitlines()] == ["sbx: ", "sbx: "]  # the error, its hint
        import json
        doc = json.loads(sbx("inspect", "p", env=env).stdout)[0]
        assert doc["State"]["Status"] == "running" and doc["State"]["Paused"] is False
    finally:
        sbx("rm", "-f", "p", env=env)


def _record(status):
    from sandbox.containers.state import Record
    return Record("/nonexistent", {"Id": "ab" * 32, "Name": "c", "State": {"Status": status}})


def test_the_state_table_of_a_paused_container_is_dockers():
    """exec and attach refused with Docker's words; kill, stop, restart, top, wait allowed;
    start and a plain rm refused with a hint."""
    from sandbox.containers.state import StateError, transition
    rec = _record("paused")
    with pytest.raises(StateError) as e:
        transition(rec, "exec")
    assert str(e.value) == f"Container {'ab' * 32} is paused, unpause the container before exec"
    assert e.value.exit_code == 1
    with pytest.raises(StateError) as e:
        transition(rec, "attach")
    assert str(e.value) == "You cannot attach to a paused container, unpause it first"
    for verb in ("kill", "stop", "top", "wait", "unpause", "restart"):
        transition(rec, verb)
    assert transition(rec, "unpause") == "running" and transition(_record("running"), "pause") == "paused"
    for verb, hint in (("start", "unpause"), ("remove", "rm -f"), ("pause", None)):
        with pytest.raises(StateError) as e:
            transition(rec, verb)
        assert f"cannot {verb} container c: it is paused" == str(e.value)
        assert hint is None or hint in e.value.hint


def test_a_plain_run_here_gets_no_cgroup_and_imports_nothing_for_it():
    """On a machine without cgroup v2 at /sys/fs/cgroup (v1, hybrid), a container without
    limits gets no leaf and the run path does not import sandbox.cgroups (one stat decides)."""
    from sandbox.containers import lifecycle
    if os.path.exists(lifecycle.UNIFIED):
        pytest.skip("this machine mounts cgroup v2 at /sys/fs/cgroup")
    code = ("import sys\nfrom sandbox.containers import lifecycle\n"
            "print(lifecycle.cgroup_hooks({'sbx': {'id': 'ab' * 32}}), 'sandbox.cgroups' in sys.modules)")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        env={**os.environ, "PYTHONPATH": str(HERE.parent.parent)})
    assert cp.stdout.split() == ["()", "False"], cp.stderr
