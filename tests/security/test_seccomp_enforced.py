"""The seccomp filter as a process inside sees it (issue 7, class 6): the default profile, custom
profiles, unconfined, capability-conditional rules, exec and build RUN steps; and the same probe
under crun with the same profile, side by side."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import sandbox
from sandbox.runtime import seccomp
from sbxtest import build_busybox_rootfs, compile_probe, ok, sbx

ATTACK_SRC = Path(__file__).resolve().parent / "attack.c"

# Docker's default profile blocks these (EPERM); clone3 answers ENOSYS so libc falls back to clone.
BLOCKED = ("add_key", "keyctl", "kcmp", "perf_event_open", "userfaultfd", "move_pages",
           "personality_0x1234", "io_uring_setup", "unshare_user", "unshare_ns")
ALLOWED = ("getpid", "uname", "personality_query")


@pytest.fixture(scope="module")
def attack_rootfs(tmp_path_factory) -> Path:
    root = build_busybox_rootfs(tmp_path_factory.mktemp("sc") / "rootfs")
    compile_probe(root / "bin/probe")
    cp = subprocess.run([shutil.which("gcc") or "cc", "-static", "-O1", "-o", str(root / "bin/attack"),
                         str(ATTACK_SRC)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    return root


def verdicts(out: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


def test_default_profile_blocks_what_docker_blocks(attack_rootfs):
    out = ok(sbx("run", "--rm", "--rootfs", attack_rootfs, "sh", "-c",
                 "grep '^Seccomp:' /proc/self/status; attack syscalls"))
    lines = out.splitlines()
    assert lines[0].split() == ["Seccomp:", "2"]
    v = verdicts("\n".join(lines[1:]))
    for name in BLOCKED:
        assert v[name] == "1", f"{name}: {v[name]} (expected EPERM)"
    assert v["clone3"] == "38"  # ENOSYS
    for name in ALLOWED:
        assert v[name] == "ok", f"{name}: {v[name]}"


def test_unconfined_turns_the_filter_off(attack_rootfs):
    out = ok(sbx("run", "--rm", "--security-opt", "seccomp=unconfined", "--rootfs", attack_rootfs, "sh", "-c",
                 "grep '^Seccomp:' /proc/self/status; attack syscalls"))
    lines = out.splitlines()
    assert lines[0].split() == ["Seccomp:", "0"]
    v = verdicts("\n".join(lines[1:]))
    assert v["keyctl"] == "ok" and v["personality_0x1234"] == "ok"
    # Without the filter root inside could make a user namespace of its own (where it holds
    # every capability and can mount): the default profile is what stops it.
    assert v["unshare_user"] == "ok"


def test_custom_profile_from_a_file(attack_rootfs, tmp_path):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    cp = sbx("run", "--rm", "--security-opt", f"seccomp={prof}", "--rootfs", attack_rootfs,
             "sh", "-c", "mkdir /tmp/x 2>&1; attack syscalls | grep keyctl")
    assert "Permission denied" in cp.stdout and "keyctl ok" in cp.stdout, cp.stdout + cp.stderr


def test_bad_profile_is_a_clear_error(attack_rootfs, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    deny_all = tmp_path / "deny.json"
    deny_all.write_text('{"defaultAction": "SCMP_ACT_ERRNO"}')
    for opt in (f"seccomp={bad}", f"seccomp={tmp_path}/missing.json", f"seccomp={deny_all}", "seccomp=/dev/zero"):
        cp = sbx("run", "--rm", "--security-opt", opt, "--rootfs", attack_rootfs, "true")
        assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
        assert cp.stderr.startswith("sbx: ") and "seccomp" in cp.stderr


def test_cap_sys_admin_opens_the_namespace_calls(attack_rootfs):
    v = verdicts(ok(sbx("run", "--rm", "--cap-add", "SYS_ADMIN", "--rootfs", attack_rootfs, "attack", "syscalls")))
    assert v["unshare_ns"] == "ok"
    assert v["keyctl"] == "1"  # still blocked: no capability opens the keyring calls


def test_exec_gets_the_containers_profile(attack_rootfs):
    p = sandbox.Popen(["sleep", "30"], rootfs=attack_rootfs)
    try:
        e = p.exec(["sh", "-c", "grep '^Seccomp:' /proc/self/status; attack syscalls"], stdout=subprocess.PIPE, text=True)
        out = e.communicate(timeout=20)[0]
    finally:
        p.kill()
        p.wait()
    assert out.splitlines()[0].split() == ["Seccomp:", "2"]
    assert verdicts("\n".join(out.splitlines()[1:]))["unshare_user"] == "1"


def test_build_run_steps_are_filtered(tmp_path, attack_rootfs):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    tag = f"sbx-seccomp-test-{os.getpid()}:1"
    ok(sbx("import", str(_tar(attack_rootfs, tmp_path)), tag, timeout=120))
    (ctx / "Dockerfile").write_text(f"FROM {tag}\nRUN grep '^Seccomp:' /proc/self/status > /seccomp.txt\n")
    ok(sbx("build", "-t", tag + "b", str(ctx), timeout=300))
    out = ok(sbx("run", "--rm", tag + "b", "cat", "/seccomp.txt"))
    assert out.split() == ["Seccomp:", "2"]
    sbx("rmi", tag + "b", tag)


def _tar(root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "root.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(out), "."], check=True)
    return out


# --- side by side with crun ------------------------------------------------------------------

def _oci_profile(profile: dict, caps: list[str]) -> dict:
    """Docker's profile resolved for one capability set into OCI's linux.seccomp (what Docker
    hands runc): includes/excludes applied, archMap flattened for this machine."""
    arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    caps = {"CAP_" + c for c in caps}
    rules = []
    for r in profile["syscalls"]:
        inc, exc = r.get("includes") or {}, r.get("excludes") or {}
        if inc.get("caps") and not set(inc["caps"]) <= caps:
            continue
        if inc.get("arches") and not set(inc["arches"]) & {"amd64", "x86", "x32"}:
            continue
        if exc.get("caps") and set(exc["caps"]) & caps:
            continue
        if exc.get("arches") and set(exc["arches"]) & {"amd64"}:
            continue
        rule = {k: v for k, v in r.items() if k in ("names", "action", "args", "errnoRet")}
        rules.append(rule)
    return {"defaultAction": profile["defaultAction"], "defaultErrnoRet": profile.get("defaultErrnoRet", 1),
            "architectures": arches, "syscalls": rules}


def test_same_verdicts_as_crun_with_the_same_profile(attack_rootfs, tmp_path):
    """crun (libseccomp, as podman uses it) given Docker's profile resolved for the default
    capabilities, and sbx with its default: the same syscalls pass and fail the same way."""
    if not shutil.which("crun"):
        pytest.fail("crun is not installed (scripts/test.sh installs it)")
    from sandbox.runtime.spec import capabilities
    caps = capabilities()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.symlink(attack_rootfs, bundle / "rootfs")
    subprocess.run(["crun", "spec", "--rootless"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["args"] = ["/bin/attack", "syscalls"]
    cfg["process"]["terminal"] = False
    cfg["linux"]["seccomp"] = _oci_profile(seccomp.default_profile(), caps)
    cfg["linux"].pop("resources", None)
    (bundle / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "empty").write_text("")
    # crun 1.8 refuses hybrid cgroup hosts unless unified/cgroup.controllers reads empty.
    script = ("mount --bind {e} /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; "
              "exec crun --root {s} run -b {b} peer").format(e=tmp_path / "empty", s=tmp_path / "state", b=bundle)
    if os.geteuid() == 0:
        cmd = ["unshare", "-m", "sh", "-c", script]
    else:
        cmd = ["unshare", "-Urm", "sh", "-c", script]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, f"crun failed: {cp.stderr}"
    theirs = verdicts(cp.stdout)
    ours = verdicts(ok(sbx("run", "--rm", "--rootfs", attack_rootfs, "attack", "syscalls")))
    print("syscall            sbx      crun")
    for name in ours:
        print(f"{name:<18} {ours[name]:<8} {theirs.get(name)}")
    assert ours == theirs


def test_inspect_shows_the_active_profile(attack_rootfs, tmp_path):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    names = {f"sc-default-{os.getpid()}": [], f"sc-unconf-{os.getpid()}": ["--security-opt", "seccomp=unconfined"],
             f"sc-file-{os.getpid()}": ["--security-opt", f"seccomp={prof}"]}
    try:
        for name, opts in names.items():
            ok(sbx("run", "--name", name, *opts, "--rootfs", attack_rootfs, "true"))
        docs = json.loads(ok(sbx("inspect", *names)))
        got = [d["HostConfig"]["SecurityOpt"] for d in docs]
        assert got == [["seccomp=default"], ["seccomp=unconfined"], [f"seccomp={prof}"]]
        assert [d["Name"] for d in docs] == ["/" + n for n in names]
        fmt = ok(sbx("inspect", "--format", "{{json .HostConfig.SecurityOpt}}", *names))
        assert fmt.splitlines()[1] == '["seccomp=unconfined"]'
    finally:
        sbx("rm", "-f", *names)
