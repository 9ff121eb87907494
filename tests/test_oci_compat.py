"""sbx-runc beside runc and crun: the same bundle through each, `state`/`list` JSON with runc's
keys, `spec` output each accepts, runc's `spec` output we accept; what config.json asks that
cannot be honoured here is refused naming the field; the global flags and `features`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ocitest import rt  # noqa: F401 - the fixture
from ocitest import Runtime, edit_config, make_bundle, runc_argv

RUNC = shutil.which("runc")


def _runc(tmp_path, *args):
    return Runtime(tmp_path / "runc-state", argv=[RUNC])(*args)


needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed (scripts/test.sh installs it)")


@needs_runc
def test_state_and_list_have_runcs_keys(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sleep", "100"])
    cp = _runc(tmp_path, "create", "--bundle", b, "r1")
    assert cp.returncode == 0, cp.stderr
    try:
        theirs = json.loads(_runc(tmp_path, "state", "r1").stdout)
        their_list = json.loads(_runc(tmp_path, "list", "--format", "json").stdout)
    finally:
        _runc(tmp_path, "delete", "--force", "r1")
    rt("create", "--bundle", b, "s1", check=True)
    ours = rt.state("s1")
    our_list = json.loads(rt("list", "--format", "json", check=True).stdout)
    assert set(ours) == set(theirs), (ours, theirs)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    assert ours["status"] == theirs["status"] == "created"
    assert ours["bundle"] == theirs["bundle"] and ours["rootfs"] == theirs["rootfs"]
    assert [set(x) for x in our_list] == [set(x) for x in their_list]
    table = rt("list", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert table[1].split()[:3] == ["s1", str(ours["pid"]), "created"]


@needs_runc
def test_our_spec_runs_under_runc_and_runcs_spec_under_us(rt, tmp_path):
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo hi from $(hostname)"])
    for name in ("ours", "theirs"):
        if name == "theirs":
            (b / "config.json").unlink()
            cp = subprocess.run([RUNC, "spec", *rootless], cwd=b, capture_output=True, text=True)
            assert cp.returncode == 0, cp.stderr
            edit_config(b, lambda c: c["process"].update(terminal=False, args=["sh", "-c", "echo hi from $(hostname)"]))
        cp = _runc(tmp_path, "run", "--bundle", b, f"x-{name}")
        assert cp.returncode == 0 and cp.stdout == f"hi from {'sbx' if name == 'ours' else 'runc'}\n", (name, cp.stderr)
        cp = rt("run", "--bundle", b, f"y-{name}")
        assert cp.returncode == 0 and cp.stdout == f"hi from {'sbx' if name == 'ours' else 'runc'}\n", (name, cp.stderr)
    # runc's spec mounts a cgroup filesystem; the container sees a cgroup v2 tree there (on top)
    edit_config(b, lambda c: c["process"].update(args=["sh", "-c", "cat /sys/fs/cgroup/cgroup.procs >/dev/null && "
                                                                    "grep ' /sys/fs/cgroup ' /proc/self/mountinfo | tail -1 | grep -c cgroup2"]))
    cp = rt("run", "--bundle", b, "z")
    assert cp.returncode == 0 and cp.stdout == "1\n", cp.stderr


@pytest.mark.root
def test_our_spec_runs_under_crun(tmp_path):
    """crun 1.8 refuses hybrid cgroups; shared/README.md's workaround: an empty
    cgroup.controllers bound over the v2 one in a private mount namespace."""
    crun = shutil.which("crun")
    assert crun, "crun is not installed (scripts/test.sh installs it)"
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo hi from $(hostname)"])
    empty = tmp_path / "empty"
    empty.write_text("")
    script = ("c=/sys/fs/cgroup/unified/cgroup.controllers; [ -e $c ] && mount --bind \"$0\" $c; "
              "exec \"$@\"")
    cp = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(empty), crun,
                         "--root", str(tmp_path / "crun-state"), "run", "--bundle", str(b), "c1"],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and cp.stdout == "hi from sbx\n", cp.stderr


def test_refused_fields_are_named_and_leave_nothing(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["true"])
    cases = [
        (lambda c: c["linux"].setdefault("resources", {}).update(memory={"limit": 64 << 20}),
         "linux.resources.memory.limit: cannot be enforced"),
        (lambda c: c["linux"]["namespaces"].append({"type": "time"}), "linux.namespaces[")
        ,
        (lambda c: c["mounts"].append({"destination": "/mnt", "type": "bind", "source": "/tmp",
                                       "options": ["rbind", "rshared"]}), "options: rshared"),
        (lambda c: c["linux"].update(rootfsPropagation="shared"), "linux.rootfsPropagation"),
        (lambda c: c["process"].update(apparmorProfile="docker-default"), "process.apparmorProfile"),
        (lambda c: c["linux"].update(sysctl={"kernel.panic": "1"}), "linux.sysctl.kernel.panic: is not namespaced"),
        (lambda c: c["process"]["capabilities"].update(bounding=["CAP_NOPE"]), "process.capabilities.bounding"),
        (lambda c: c["linux"]["namespaces"].append({"type": "network", "path": "/proc/1/ns/net"}),
         "linux.namespaces["),
        (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt"),
        (lambda c: c.update(ociVersion="2.0.0"), "ociVersion"),
    ]
    original = (b / "config.json").read_text()
    for change, words in cases:
        (b / "config.json").write_text(original)
        edit_config(b, change)
        cp = rt("create", "--bundle", b, "bad")
        assert cp.returncode == 1, (words, cp.stderr)
        assert words in cp.stderr and cp.stderr.startswith("sbx-runc: ") and "Traceback" not in cp.stderr, cp.stderr
        assert rt("list", "-q").stdout == "" and not (rt.root / "bad").exists()


def test_defaults_of_podman_and_containerd_are_no_request(rt, tmp_path):
    """Callers send a cgroupsPath and resources without limits (device rules, empty sections,
    pids limit 0): runc with no cgroup manager ignores them when rootless, and so do we; only
    limits asked for are refused (the test above)."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo ok > /dev/null && cat /etc/marker"])
    edit_config(b, lambda c: c["linux"].update(
        cgroupsPath="/machine.slice/libpod-x", resources={
            "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                             "access": "rwm"}],
            "memory": {}, "cpu": {"shares": 0}, "pids": {"limit": 0}, "blockIO": {}}))
    cp = rt("run", "--bundle", b, "d1")
    assert cp.returncode == 0 and cp.stdout == "sbx test rootfs marker\n", cp.stderr


@pytest.mark.root
def test_device_rules_without_a_devices_cgroup_are_enforced_with_nodev(rt, tmp_path):
    """As root without a user namespace a container could mknod any device: with device rules,
    every mount but the bound device nodes is nodev, so a node it makes cannot be opened."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "mknod /tmp/mem c 1 1 && head -c1 /tmp/mem; echo rc=$?; "
                                                 "head -c1 /dev/zero | od -An -tx1"])
    edit_config(b, lambda c: c["process"]["capabilities"].update(
        bounding=c["process"]["capabilities"]["bounding"] + ["CAP_MKNOD"]))
    cp = rt("run", "--bundle", b, "n1")
    assert cp.returncode == 0, cp.stderr
    assert "rc=1" in cp.stdout and "Permission denied" in cp.stderr and cp.stdout.split()[-1] == "00"


def test_global_flags_version_features(rt, tmp_path):
    cp = subprocess.run(runc_argv("--version"), capture_output=True, text=True)
    lines = cp.stdout.splitlines()
    assert cp.returncode == 0 and len(lines) == 3
    assert lines[0].startswith("sbx-runc version ") and lines[1].startswith("commit: ") and lines[2] == "spec: 1.2.0"
    cp = subprocess.run(runc_argv("features"), capture_output=True, text=True)
    f = json.loads(cp.stdout)
    assert f["ociVersionMin"] == "1.0.0" and "createContainer" in f["hooks"]
    assert "user" in f["linux"]["namespaces"] and "CAP_SYS_ADMIN" in f["linux"]["capabilities"]
    assert f["linux"]["cgroup"]["systemd"] is False
    cp = subprocess.run(runc_argv("--systemd-cgroup", "list"), capture_output=True, text=True)
    assert cp.returncode == 1 and "--systemd-cgroup cannot be honoured" in cp.stderr
    cp = subprocess.run(runc_argv("checkpoint", "x"), capture_output=True, text=True)
    assert cp.returncode == 1 and "not supported" in cp.stderr
    cp = subprocess.run(runc_argv("frobnicate"), capture_output=True, text=True)
    assert cp.returncode == 1 and "frobnicate" in cp.stderr
    cp = subprocess.run(runc_argv("create", "--bogus", "x"), capture_output=True, text=True)
    assert cp.returncode == 1 and "flag provided but not defined: -bogus" in cp.stderr
    log = tmp_path / "log"
    cp = subprocess.run(runc_argv("--root", tmp_path / "s", "--log", log, "--log-format", "text", "start", "gone"),
                        capture_output=True, text=True)
    assert cp.returncode == 1 and 'level=error msg="container does not exist: gone"' in log.read_text()
    # `sbx oci` is the same command line
    cp = subprocess.run([runc_argv()[0], "-m", "sandbox", "oci", "--root", tmp_path / "s", "list", "-q"],
                        capture_output=True, text=True)
    assert cp.returncode == 0 and cp.stdout == "", cp.stderr


def test_pause_and_update_without_a_cgroup_say_why(rt, tmp_path):
    from sandbox.cgroups import v2
    if v2.probe().usable:
        pytest.skip("this machine delegates cgroup v2 (the VM tests cover pause there)")
    b = make_bundle(tmp_path / "b", ["sleep", "100"])
    rt("run", "-d", "--bundle", b, "p1", check=True)
    for args in (("pause", "p1"), ("update", "--resources", "-", "p1")):
        cp = rt(*args, input='{"pids": {"limit": 10}}') if "update" in args else rt(*args)
        assert cp.returncode == 1 and "has no cgroup v2 leaf" in cp.stderr, cp.stderr
    assert rt.status("p1") == "running"


def test_config_fields_are_applied(rt, tmp_path):
    """What config.json asks of the process and the namespaces, seen from inside."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("from the host\n")
    script = ("umask; cat /proc/self/oom_score_adj; cat /proc/sys/net/ipv4/ip_forward; "
              "cat /proc/sys/kernel/domainname; hostname; ulimit -n; grep NoNewPrivs /proc/self/status | tr -d '\\t'; "
              "pwd; echo $MYVAR; cat /data/f; echo x > /data/g || echo ro-bind; echo x > /etc/new || echo ro-root; "
              "ls -l /proc/keys | cut -c1; "
              "echo 1 > /proc/sys/kernel/hostname 2>/dev/null || echo ro-proc-sys")

    def change(c):
        c["process"].update(cwd="/home/app", env=c["process"]["env"] + ["MYVAR=my-value"], oomScoreAdj=500,
                            rlimits=[{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 77}], noNewPrivileges=True)
        c["process"]["user"]["umask"] = 0o027
        c["root"]["readonly"] = True
        c["hostname"], c["domainname"] = "oci-host", "oci-domain"
        c["linux"]["namespaces"].append({"type": "network"}) if not any(
            n["type"] == "network" for n in c["linux"]["namespaces"]) else None
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["mounts"].append({"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro"]})
    b = make_bundle(tmp_path / "b", ["sh", "-c", script])
    edit_config(b, change)
    cp = rt("run", "--bundle", b, "f1")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split("\n")[:-1] == [
        "0027", "500", "1", "oci-domain", "oci-host", "77", "NoNewPrivs:1", "/home/app", "my-value",
        "from the host", "ro-bind", "ro-root", "c", "ro-proc-sys"], cp.stdout
    assert not (data / "g").exists()


def test_devices_seccomp_and_groups_are_applied(rt, tmp_path):
    from sbxtest import has_subid_range
    groups = os.geteuid() == 0 or has_subid_range()  # setgroups needs more than a single-id map
    script = "ls -l /dev/net/tun | cut -c1; mkdir /tmp/d 2>&1 || true; id -G"

    def change(c):
        c["linux"]["devices"] = [{"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200}]
        if "resources" in c["linux"]:  # root's spec denies every device: allow this one, as podman does
            c["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 10, "minor": 200,
                                                       "access": "rwm"})
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                               "errnoRet": 13}]}
        if groups:
            c["process"]["user"]["additionalGids"] = [5, 7]
            if os.geteuid() != 0:  # the user's range, as `sbx-runc spec --rootless` maps only us
                from sbxtest import subid_range
                for key, path, own in (("uidMappings", "/etc/subuid", os.getuid()),
                                       ("gidMappings", "/etc/subgid", os.getgid())):
                    start, _ = subid_range(path)
                    c["linux"][key] = [{"containerID": 0, "hostID": own, "size": 1},
                                       {"containerID": 1, "hostID": start, "size": 65536}]
    b = make_bundle(tmp_path / "b", ["sh", "-c", script])
    edit_config(b, change)
    cp = rt("run", "--bundle", b, "g1")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "c" and "Permission denied" in lines[1]
    assert lines[2].split() == (["0", "5", "7"] if groups else ["0"])
    if not groups:  # a single-id map cannot set groups: refused, not dropped
        edit_config(b, lambda c: c["process"]["user"].update(additionalGids=[5]))
        cp = rt("run", "--bundle", b, "g2")
        assert cp.returncode == 1 and "process.user.additionalGids" in cp.stderr
    if os.geteuid() == 0:  # the rules must allow what linux.devices gives
        edit_config(b, lambda c: c["linux"]["resources"]["devices"].pop())
        cp = rt("run", "--bundle", b, "g3")
        assert cp.returncode == 1 and "linux.resources.devices: the rules deny /dev/net/tun" in cp.stderr


def test_create_start_delete_path_imports_nothing_heavy(rt, tmp_path):
    """Every call a shim makes is a new interpreter: run (create, start, wait, delete) imports
    none of json/re (20 ms here), subprocess/threading, signal's enums, shutil, typer."""
    b = make_bundle(tmp_path / "b", ["true"])
    code = ("import sys\nfrom sandbox.cli import oci\n"
            f"rc = oci.run(['--root', {str(rt.root)!r}, 'run', '--bundle', {str(b)!r}, 'm1'])\n"
            "heavy = ('re', 'json', 'subprocess', 'threading', 'signal', 'enum', 'shutil', 'typer', 'click', 'argparse')\n"
            "print(rc, [m for m in heavy if m in sys.modules])\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        stdin=subprocess.DEVNULL)
    assert cp.stdout == "0 []\n", cp.stderr
