"""The re-packed seccomp program (sandbox/runtime/bpfpack.py) means exactly what libseccomp's does.

Each test compiles a profile, keeps libseccomp's own program (captured on its way into pack()),
and compares the two with the classic-BPF interpreter over every syscall number below 1,100 of
both number bases, every architecture the program names and one it does not, and argument
vectors; the real kernel then installs the packed program (tests/security/test_seccomp_compile.py
and test_seccomp_enforced.py check what it enforces, now through the packed program)."""
import os
import platform

import pytest

from sandbox.runtime import bpfpack, seccomp

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 architecture numbers")

AUDIT_X86_64, AUDIT_I386 = 0xC000003E, 0x40000003
DOCKER_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
               "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(seccomp, "_recent", [])


def compile_both(monkeypatch, profile, caps):
    """(libseccomp's program, the program sbx installs) for `profile`."""
    seen = []
    real = bpfpack.pack

    def spy(prog):
        seen.append(prog)
        return real(prog)
    monkeypatch.setattr(bpfpack, "pack", spy)
    packed = seccomp.program(profile, caps)
    assert len(seen) == 1
    return seen[0], packed


def assert_same(raw, packed, arg_values=()):
    old, new = bpfpack.decode(raw), bpfpack.decode(packed)
    args = [(0,) * 6, (0xFFFFFFFF,) * 6, (1 << 40,) * 6] + [(v,) * 6 for v in arg_values]
    nrs = list(range(1100)) + list(range(0x40000000, 0x40000000 + 1100)) + [0x3FFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF]
    for arch in (AUDIT_X86_64, AUDIT_I386, 0xC00000B7, 0):
        for nr in nrs:
            assert bpfpack.run(old, arch, nr) == bpfpack.run(new, arch, nr), (hex(arch), nr)
        for nr in (41, 56, 120, 135, 136, 359, 435, 0x40000029, 0x40000038):
            for a in args:
                assert bpfpack.run(old, arch, nr, a) == bpfpack.run(new, arch, nr, a), (hex(arch), nr, a)


@pytest.mark.parametrize("caps", [DOCKER_CAPS, [], DOCKER_CAPS + ["SYS_ADMIN", "SYS_PTRACE"]])
def test_default_profile_packs_to_a_quarter_with_the_same_meaning(monkeypatch, caps):
    raw, packed = compile_both(monkeypatch, seccomp.default_profile(), caps)
    assert len(packed) * 3 < len(raw), (len(raw) // 8, len(packed) // 8)
    assert_same(raw, packed, arg_values=(8, 40, 0x20000, 0x20008, 0x7E020000, 0xFFFFFFFF))


def test_a_deny_list_profile_with_argument_rules(monkeypatch):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": ["mkdir", "rmdir", "chmod", "fchmod", "ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
        ],
    }
    raw, packed = compile_both(monkeypatch, profile, DOCKER_CAPS)
    assert_same(raw, packed, arg_values=(9, 10, 11))


def test_the_check_catches_a_wrong_program():
    """The safety net: a packed program that differs anywhere on the domain is refused."""
    raw = seccomp.program(seccomp.default_profile(), DOCKER_CAPS)  # packed
    old = bpfpack.decode(raw)
    mutated = [list(i) for i in old]
    i = next(n for n, ins in enumerate(mutated) if ins[0] == bpfpack.LD_IMM)
    mutated[i][3] ^= 1 << 7
    mutated = [tuple(x) for x in mutated]
    domain = ([AUDIT_X86_64, AUDIT_I386], set(), set())
    assert bpfpack._same(old, old, *domain)
    assert not bpfpack._same(old, mutated, *domain)


def test_a_program_of_unknown_shape_is_kept_as_it_is():
    ret_allow = bpfpack.encode([(bpfpack.RET_K, 0, 0, 0x7FFF0000)])
    assert bpfpack.pack(ret_allow) == ret_allow
    odd = bpfpack.encode([(bpfpack.LD_ABS, 0, 0, 0), (bpfpack.JSET, 0, 1, 1),
                          (bpfpack.RET_K, 0, 0, 0x50001), (bpfpack.RET_K, 0, 0, 0x7FFF0000)])
    assert bpfpack.pack(odd) == odd
    assert bpfpack.pack(b"\x01\x02\x03") == b"\x01\x02\x03"


def test_the_kernel_installs_the_packed_program(tmp_path):
    """A child with no_new_privs installs it (the kernel's checker accepts every instruction),
    then is refused a denied call and allowed an allowed one."""
    import ctypes
    packed = seccomp.program(seccomp.default_profile(), DOCKER_CAPS)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            buf = ctypes.create_string_buffer(packed, len(packed))

            class Prog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
            prog = Prog(len(packed) // 8, ctypes.addressof(buf))
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            rc = libc.syscall(317, 1, 0, ctypes.byref(prog))  # seccomp(SET_MODE_FILTER)
            e1 = ctypes.get_errno() if rc else 0
            libc.syscall(298, 0, 0, 0, -1, 0)  # perf_event_open: denied
            e2 = ctypes.get_errno()
            pid_now = libc.syscall(39)  # getpid: allowed
            os.write(w, f"{rc} {e1} {e2} {int(pid_now == os.getpid())}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert out == "0 0 1 1", out
