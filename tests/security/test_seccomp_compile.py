"""The seccomp compiler (sandbox.runtime.seccomp): profile loading, compilation with libseccomp,
the program cache, and real enforcement.

Enforcement is checked without sbx's launcher: a forked child of the test process sets
no_new_privs and installs the compiled program itself with seccomp(SECCOMP_SET_MODE_FILTER)
(what the launcher's child does before execve), makes raw syscalls and reports their results
through a pipe.  A control child without the filter shows that the same calls behave otherwise.
Runs as any user: no_new_privs makes installing a filter unprivileged."""
import ctypes
import json
import os
import platform
import stat
import threading

import pytest

from sandbox.errors import UsageError
from sandbox.runtime import seccomp

DOCKER_ROOT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]

# x86_64 syscall numbers
NR = {"open": 2, "getpid": 39, "uname": 63, "mkdir": 83, "getpriority": 140, "personality": 135,
      "prctl": 157, "prlimit64": 302, "add_key": 248, "request_key": 249, "keyctl": 250, "mkdirat": 258, "unshare": 272,
      "perf_event_open": 298, "kcmp": 312, "seccomp": 317, "userfaultfd": 323, "io_uring_setup": 425,
      "clone3": 435, "close_range": 436, "faccessat2": 439, "socket": 41, "setsid": 112, "dup3": 292,
      "move_pages": 279, "setns": 308, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438,
      "process_vm_readv": 310}
EPERM, EACCES, ENOSYS = 1, 13, 38
AF_UNIX, AF_VSOCK, SOCK_STREAM = 1, 40, 1
CLONE_NEWUSER = 0x10000000

x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64",
                                 reason="the enforcement probes use x86_64 syscall numbers")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test compiles into its own cache directory and starts with an empty in-process cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(seccomp, "_recent", [])
    return tmp_path / "cache" / "sbx" / "seccomp"


def _write(tmp_path, profile, name="profile.json"):
    p = tmp_path / name
    p.write_text(profile if isinstance(profile, str) else json.dumps(profile))
    return str(p)


# --- load -----------------------------------------------------------------------------------------

def test_load_unconfined_is_none():
    assert seccomp.load("unconfined") is None


def test_load_reads_a_docker_profile(tmp_path):
    prof = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    assert seccomp.load(_write(tmp_path, prof)) == prof


def test_load_reads_podmans_profile():
    """A real-world Docker-format profile from another engine loads and compiles."""
    path = "/usr/share/containers/seccomp.json"
    if not os.path.exists(path):
        pytest.skip("containers-common's seccomp.json is not installed")
    prog = seccomp.program(seccomp.load(path), DOCKER_ROOT_CAPS)
    assert len(prog) > 8 and len(prog) % 8 == 0


@pytest.mark.parametrize("content, words", [
    (None, ["no such file"]),
    ("{not json", ["invalid JSON"]),
    ("[1, 2]", ["not a JSON object"]),
    ({"defaultAction": "SCMP_ACT_MAYBE"}, ["unknown action", "SCMP_ACT_MAYBE", "defaultAction"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_DENY"}]},
     ["unknown action", "SCMP_ACT_DENY", "mkdir"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                                                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
     ["unknown operator", "SCMP_CMP_ABOUT", "socket"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                                                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     ["bad argument index", "6", "socket"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                                                      "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
     ["value", "-1"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     ["SCMP_ACT_NOTIFY", "agent"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_TRACE"}]},
     ["SCMP_ACT_TRACE", "tracer"]),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, ["SCMP_ACT_NOTIFY"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, ["listenerPath"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}, ["names"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, ["unknown architecture"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                                      "errnoRet": 70000}]}, ["errno", "70000"]),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW",
                                                      "includes": {"minKernel": "new"}}]}, ["minKernel"]),
])
def test_load_refuses_bad_profiles(tmp_path, content, words):
    path = str(tmp_path / "missing.json") if content is None else _write(tmp_path, content)
    with pytest.raises(UsageError) as ei:
        seccomp.load(path)
    msg = str(ei.value)
    assert path in msg
    for w in words:
        assert w in msg
    assert ei.value.hint


# --- the default profile --------------------------------------------------------------------------

def test_default_profile_has_dockers_shape():
    p = seccomp.default_profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]} in p["archMap"]
    allowed = set(p["syscalls"][0]["names"])
    for name in ("add_key", "keyctl", "request_key", "userfaultfd", "kcmp", "perf_event_open", "move_pages",
                 "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "unshare", "setns", "mount",
                 "umount2", "kexec_load", "init_module", "reboot", "swapon", "acct", "open_by_handle_at",
                 "personality", "clone", "clone3", "socket"):
        assert name not in allowed, name
    for name in ("setresuid", "setresgid", "setgroups", "capset", "prctl", "dup2", "dup3", "setsid", "ioctl",
                 "close_range", "rt_sigprocmask", "execve", "execveat", "access", "faccessat2", "write",
                 "exit_group"):
        assert name in allowed, name
    # load() accepts what default_profile() returns: it is valid Docker JSON.
    seccomp.validate(json.loads(json.dumps(p)), "default")


def test_canonical_form_is_json():
    p = seccomp.default_profile()
    p["x"] = ["a\\b", 'q"', "é\x7f\U0001f600", 1.5, True, None, {"b": 1, "a": []}]
    assert seccomp._canon(p) == json.dumps(p, sort_keys=True, separators=(",", ":"))


# --- compilation and cache ------------------------------------------------------------------------

def test_program_is_whole_bpf_instructions():
    prog = seccomp.program(seccomp.default_profile(), DOCKER_ROOT_CAPS)
    assert len(prog) > 8 and len(prog) % 8 == 0


def test_caps_change_the_program():
    p = seccomp.default_profile()
    plain = seccomp.program(p, DOCKER_ROOT_CAPS)
    admin = seccomp.program(p, DOCKER_ROOT_CAPS + ["SYS_ADMIN"])
    assert admin != plain
    assert seccomp.program(p, ["CAP_" + c for c in reversed(DOCKER_ROOT_CAPS)]) == plain


def test_cache_hit_reads_the_file_without_compiling(private_cache, monkeypatch):
    p = seccomp.default_profile()
    prog = seccomp.program(p, DOCKER_ROOT_CAPS)
    files = os.listdir(private_cache)
    assert len(files) == 1 and files[0].endswith(".bpf") and len(files[0]) == 64 + 4
    st = os.stat(private_cache / files[0])
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(private_cache).st_mode) == 0o700

    def no_compile(*a):
        raise AssertionError("compiled again")
    monkeypatch.setattr(seccomp, "_compile", no_compile)
    monkeypatch.setattr(seccomp, "_recent", [])   # a new process: only the file is left
    assert seccomp.program(seccomp.default_profile(), DOCKER_ROOT_CAPS) == prog


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupt_cache_file_is_recompiled_and_rewritten(private_cache, monkeypatch, damage):
    p = seccomp.default_profile()
    prog = seccomp.program(p, DOCKER_ROOT_CAPS)
    (f,) = private_cache.iterdir()
    good = f.read_bytes()
    data = {"truncate": good[:len(good) // 2], "flip": good[:40] + bytes([good[40] ^ 1]) + good[41:],
            "empty": b"", "garbage": b"\0" * len(good)}[damage]
    f.write_bytes(data)
    compiled = []
    real = seccomp._compile
    monkeypatch.setattr(seccomp, "_compile", lambda *a: compiled.append(1) or real(*a))
    monkeypatch.setattr(seccomp, "_recent", [])
    assert seccomp.program(p, DOCKER_ROOT_CAPS) == prog
    assert compiled == [1]
    assert f.read_bytes() == good


def test_unwritable_cache_still_compiles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    prog = seccomp.program(seccomp.default_profile(), DOCKER_ROOT_CAPS)
    assert len(prog) % 8 == 0 and prog


def test_unknown_syscall_names_are_skipped():
    base = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    extra = json.loads(json.dumps(base))
    extra["syscalls"][0]["names"].append("no_such_syscall_sbx")
    assert seccomp.program(extra, []) == seccomp.program(base, [])


def test_rule_refused_by_libseccomp_names_entry_and_syscall():
    cond = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]
    prof = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                         {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": cond},
                         {"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS", "args": cond}]}
    with pytest.raises(UsageError, match=r"syscalls\[2\]: mkdir: libseccomp refused") as ei:
        seccomp.program(prof, [])
    assert ei.value.hint


def test_describe():
    assert seccomp.describe(None) == "unconfined"
    assert seccomp.describe(seccomp.default_profile()) == "default (docker-compatible)"
    assert seccomp.describe("/etc/p.json") == "/etc/p.json"
    assert "custom" in seccomp.describe({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})


# --- enforcement in a forked child ----------------------------------------------------------------

def _sys(name, *args):
    conv = [ctypes.c_ulong(a) if isinstance(a, int) and a >= 0 else ctypes.c_long(a) if isinstance(a, int) else a
            for a in args]
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(NR[name]), *conv)
    return [r, ctypes.get_errno() if r == -1 else 0]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install(prog):
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    r = _sys("seccomp", 1, 0, ctypes.byref(fprog))  # SECCOMP_SET_MODE_FILTER
    if r[0] != 0:
        raise OSError(r[1], "seccomp(SECCOMP_SET_MODE_FILTER)")


def _in_child(prog, probe, exec_after=False):
    """Run `probe()` in a forked child under `prog` (None: no filter); returns its results and, with
    `exec_after`, whether /bin/true then ran under the filter and exited 0."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            if prog is not None:
                _install(prog)
            out = json.dumps(probe()).encode()
            while out:
                out = out[os.write(w, out):]
            os.close(w)
            if exec_after:
                os.execv("/bin/true", ["true"])
            code = 0
        except BaseException as e:  # report, never return into pytest
            try:
                os.write(w, json.dumps({"child error": repr(e)}).encode())
            except BaseException:
                pass
            code = 2
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    res = json.loads(b"".join(chunks))
    assert "child error" not in res, res
    return res, os.waitstatus_to_exitcode(status)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _process_vm_readv_self():
    src = ctypes.create_string_buffer(b"sbx-probe", 9)
    dst = ctypes.create_string_buffer(9)
    local = _Iovec(ctypes.cast(dst, ctypes.c_void_p), 9)
    remote = _Iovec(ctypes.cast(src, ctypes.c_void_p), 9)
    r = _sys("process_vm_readv", os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if r[0] == 9 and dst.raw != b"sbx-probe":
        r = [-1, 0]
    return r


def _probe_default():
    uts = ctypes.create_string_buffer(6 * 65)
    pid = os.getpid()
    res = {
        "keyctl": _sys("keyctl", 0, (1 << 64) - 3, 0),         # KEYCTL_GET_KEYRING_ID, session keyring
        "add_key": _sys("add_key", 0, 0, 0, 0, 0),
        "request_key": _sys("request_key", 0, 0, 0, 0),
        "userfaultfd": _sys("userfaultfd", 1),                 # UFFD_USER_MODE_ONLY
        "personality_0x1234": _sys("personality", 0x1234),
        "unshare_newuser": _sys("unshare", CLONE_NEWUSER),
        "unshare_0": _sys("unshare", 0),
        "io_uring_setup": _sys("io_uring_setup", 1, 0),
        "kcmp": _sys("kcmp", pid, pid, 0, 0, 0),
        "perf_event_open": _sys("perf_event_open", 0, 0, (1 << 64) - 1, (1 << 64) - 1, 0),
        "socket_vsock": _sys("socket", AF_VSOCK, SOCK_STREAM, 0),
        "clone3": _sys("clone3", 0, 0),
        "move_pages": _sys("move_pages", 0, 0, 0, 0, 0, 0),
        "setns": _sys("setns", (1 << 64) - 1, 0),
        "io_uring_enter": _sys("io_uring_enter", (1 << 64) - 1, 0, 0, 0, 0, 0),
        "io_uring_register": _sys("io_uring_register", (1 << 64) - 1, 0, 0, 0),
        "pidfd_getfd": _sys("pidfd_getfd", (1 << 64) - 1, 0, 0),
        "process_vm_readv": _process_vm_readv_self(),
        "getpid": _sys("getpid"),
        "uname": _sys("uname", uts),
        "open": _sys("open", ctypes.c_char_p(b"/dev/null"), 0),
        "personality_query": _sys("personality", 0xFFFFFFFF),
        "socket_unix": _sys("socket", AF_UNIX, SOCK_STREAM, 0),
        "faccessat2": _sys("faccessat2", (1 << 64) - 100, ctypes.c_char_p(b"/"), 0, 0),  # AT_FDCWD
        "close_range": _sys("close_range", 1000, 1010, 0),
        "dup3": _sys("dup3", 1, 1000, 0x80000),
        "setsid": _sys("setsid"),
    }
    # Threads (glibc tries clone3, gets ENOSYS, falls back to clone) and fork still work.
    t_out = []
    t = threading.Thread(target=lambda: t_out.append(1))
    t.start()
    t.join()
    res["thread"] = [len(t_out), 0]
    child = os.fork()
    if child == 0:
        os._exit(7)
    res["fork"] = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), 0]
    return res


BLOCKED_EPERM = ("keyctl", "add_key", "request_key", "userfaultfd", "personality_0x1234", "unshare_newuser",
                 "unshare_0", "io_uring_setup", "io_uring_enter", "io_uring_register", "kcmp", "perf_event_open",
                 "socket_vsock", "move_pages", "setns", "pidfd_getfd")
# process_vm_readv: Docker allows it (with ptrace) on kernels >= 4.8, and so does sbx.
WORKING = ("getpid", "uname", "open", "personality_query", "socket_unix", "faccessat2", "close_range", "dup3",
           "setsid", "process_vm_readv")


@x86_64_only
def test_default_profile_enforced():
    prog = seccomp.program(seccomp.default_profile(), DOCKER_ROOT_CAPS)
    res, code = _in_child(prog, _probe_default, exec_after=True)
    for name in BLOCKED_EPERM:
        assert res[name] == [-1, EPERM], (name, res[name])
    assert res["clone3"] == [-1, ENOSYS]
    for name in WORKING:
        assert res[name][0] >= 0, (name, res[name])
    assert res["thread"] == [1, 0] and res["fork"] == [7, 0]
    assert code == 0, "execve of /bin/true under the default profile failed"


@x86_64_only
def test_without_filter_the_probes_differ():
    """Control: the same calls in a child without the filter are not refused with EPERM/ENOSYS."""
    res, _ = _in_child(None, _probe_default)
    for name in ("keyctl", "personality_0x1234", "kcmp", "unshare_0", "process_vm_readv"):
        assert res[name][0] >= 0, (name, res[name])
    for name in ("setns", "io_uring_enter", "io_uring_register", "pidfd_getfd"):
        assert res[name][1] != EPERM, (name, res[name])   # EBADF: the kernel looked at the fd
    assert res["add_key"][1] != EPERM and res["clone3"][1] != ENOSYS


@x86_64_only
def test_sys_admin_allows_unshare():
    prog = seccomp.program(seccomp.default_profile(), DOCKER_ROOT_CAPS + ["SYS_ADMIN"])
    res, _ = _in_child(prog, lambda: {"unshare_0": _sys("unshare", 0), "clone3": _sys("clone3", 0, 0),
                                      "keyctl": _sys("keyctl", 0, (1 << 64) - 3, 0)})
    assert res["unshare_0"] == [0, 0]
    assert res["clone3"][1] != ENOSYS          # the kernel's own answer (EINVAL/EFAULT), not the filter's
    assert res["keyctl"] == [-1, EPERM]        # keyrings stay blocked whatever the capabilities


@x86_64_only
def test_custom_profile_errno(tmp_path):
    prof = seccomp.load(_write(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    target = str(tmp_path / "d")

    def probe():
        r = {"mkdir": _sys("mkdir", ctypes.c_char_p((target + "1").encode()), 0o755),
             "mkdirat": _sys("mkdirat", (1 << 64) - 100, ctypes.c_char_p((target + "2").encode()), 0o755)}
        try:
            os.mkdir(target + "3")
            r["os.mkdir"] = [0, 0]
        except OSError as e:
            r["os.mkdir"] = [-1, e.errno]
        return r
    res, _ = _in_child(seccomp.program(prof, []), probe)
    assert res["mkdir"] == [-1, EACCES] and res["os.mkdir"] == [-1, EACCES]
    assert res["mkdirat"] == [0, 0]            # only the syscall the profile names
    assert not os.path.exists(target + "1") and os.path.isdir(target + "2")


@x86_64_only
def test_conditions_on_one_argument_are_ored_and_on_several_anded():
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        # two conditions on argument 0: split into two rules (either matches), as runc does
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        # conditions on two arguments: both must match
        {"names": ["prlimit64"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}]},
        # MASKED_EQ: (arg & value) == valueTwo
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
         "args": [{"index": 0, "value": 0xFFFF0000, "valueTwo": 0x10000, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]}
    me = os.getpid()
    res, _ = _in_child(seccomp.program(prof, []), lambda: {
        "prio_process": _sys("getpriority", 0, 0), "prio_pgrp": _sys("getpriority", 1, 0),
        "prio_user": _sys("getpriority", 2, 0),
        "rlimit_both": _sys("prlimit64", 0, 7, 0, 0), "rlimit_other_resource": _sys("prlimit64", 0, 3, 0, 0),
        "rlimit_other_pid": _sys("prlimit64", me, 7, 0, 0),
        "pers_masked": _sys("personality", 0x10000 | 0xFFFF), "pers_query": _sys("personality", 0xFFFFFFFF)})
    assert res["prio_process"] == [-1, EACCES] and res["prio_pgrp"] == [-1, EACCES]
    assert res["prio_user"][0] >= 0
    assert res["rlimit_both"] == [-1, 22]
    assert res["rlimit_other_resource"] == [0, 0] and res["rlimit_other_pid"] == [0, 0]
    assert res["pers_masked"] == [-1, 22] and res["pers_query"][0] >= 0


@x86_64_only
def test_docker_arch_map_adds_x86_and_x32():
    """On amd64 the default profile also filters 32-bit (int 0x80) and x32 syscalls instead of
    killing them as a foreign architecture: the program checks AUDIT_ARCH_I386 too."""
    audit_arch_i386 = (0x40000003).to_bytes(4, "little")
    with_map = seccomp.program(seccomp.default_profile(), DOCKER_ROOT_CAPS)
    native_only = seccomp.default_profile()
    del native_only["archMap"]
    assert audit_arch_i386 in with_map
    assert audit_arch_i386 not in seccomp.program(native_only, DOCKER_ROOT_CAPS)
