"""The re-packed seccomp program against libseccomp's, beyond the domain pack() checks itself.

pack() keeps its program only if the interpreter in bpfpack says both agree on syscall numbers
below 1,100 of each base; here, for several real and odd profiles, the two are compared on every
number below 2,048 of both bases (0 and x32's 0x40000000), random 32-bit numbers, every
architecture the program names and foreign ones; and the kernel itself runs both: each program
with every return value turned into a distinct errno is installed in a child, which makes the
calls (from a code page of its own, the only place the filter applies to: nothing is executed,
every path returns an errno) natively and, if the kernel runs 32-bit code, through int 0x80 (the
i386 section, socketcall and ipc included).  So a program the interpreter misreads, or a packing
error outside pack()'s own domain, fails here."""
import ctypes
import json
import mmap
import os
import platform
import random

import pytest

from sandbox.runtime import bpfpack, seccomp

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 code and numbers")

X86_64, I386, AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
X32 = 0x40000000
DOCKER_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
               "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]
ARCHMAP = [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}]


def _podman():
    with open("/usr/share/containers/seccomp.json") as f:  # podman's containers-common
        return json.load(f)


def _actions():
    """Docker's, with every action sbx accepts on some of its syscalls, plain and with argument
    rules (big enough to be packed)."""
    prof = seccomp.default_profile()
    moved = {"openat", "fstat", "newfstatat", "kill", "tgkill", "mkdir", "ioctl", "prctl", "mprotect",
             "personality", "socket", "ptrace", "reboot"}
    prof["syscalls"][0]["names"] = [n for n in prof["syscalls"][0]["names"] if n not in moved]
    prof["syscalls"] += [
        {"names": ["openat", "fstat", "newfstatat"], "action": "SCMP_ACT_LOG"},
        {"names": ["kill", "tgkill"], "action": "SCMP_ACT_KILL_THREAD"},
        {"names": ["reboot"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["ptrace"], "action": "SCMP_ACT_TRAP"},
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
         "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]},
        {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 1, "value": 0xFF00, "valueTwo": 0x5400, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["prctl"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_GT"}]},
        {"names": ["mprotect"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 4, "op": "SCMP_CMP_LT"}]},
    ]
    return prof


def _deny_list():
    return {"defaultAction": "SCMP_ACT_ALLOW", "archMap": ARCHMAP, "syscalls": [
        {"names": ["mkdir", "rmdir", "chmod", "fchmod", "ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
         "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["uname"], "action": "SCMP_ACT_LOG"},
    ]}


def _many_errnos():
    """More syscalls with an outcome of their own than pack() tests one by one (it keeps
    libseccomp's program), and a deny-list with a range of denied numbers."""
    names = seccomp.default_profile()["syscalls"][0]["names"][:60]
    return {"defaultAction": "SCMP_ACT_ALLOW", "archMap": ARCHMAP,
            "syscalls": [{"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 + i} for i, n in enumerate(names)]}


def _native_only():
    prof = seccomp.default_profile()
    return dict(prof, archMap=[{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}])


def _x32_allowed():
    prof = _actions()
    prof["archMap"] = [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X32"]}]
    return prof


def _ioctl_rule():
    """Docker's, with ioctl allowed but for TIOCSTI: an argument constant (0x5412) above every
    syscall number."""
    prof = seccomp.default_profile()
    prof["syscalls"][0]["names"].remove("ioctl")
    prof["syscalls"] += [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                          "args": [{"index": 1, "value": 0x5412, "op": "SCMP_CMP_EQ"}]},
                         {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 1, "value": 0x5412, "op": "SCMP_CMP_NE"}]}]
    return prof


PROFILES = {
    "ioctl-rule": (_ioctl_rule, DOCKER_CAPS),
    "docker": (seccomp.default_profile, DOCKER_CAPS),
    "docker-nocaps": (seccomp.default_profile, []),
    "docker-admin": (seccomp.default_profile, DOCKER_CAPS + ["SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE",
                                                              "SYS_TIME", "SYS_BOOT", "BPF", "PERFMON"]),
    "root-emulation": (seccomp.root_emulation_profile, DOCKER_CAPS),
    "podman": (_podman, DOCKER_CAPS),
    "actions": (_actions, DOCKER_CAPS),
    "deny-list": (_deny_list, DOCKER_CAPS),
    "many-errnos": (_many_errnos, DOCKER_CAPS),
    "native-only": (_native_only, DOCKER_CAPS),
    "x32": (_x32_allowed, DOCKER_CAPS),
}


# the ones pack() re-packs (the others keep libseccomp's program: their kernel check still shows
# the interpreter pack() relies on reading programs as the kernel does)
PACKED = {"ioctl-rule", "docker", "docker-nocaps", "docker-admin", "actions", "x32"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(seccomp, "_recent", [])


def compile_both(monkeypatch, name):
    make, caps = PROFILES[name]
    seen = []
    real = bpfpack.pack
    monkeypatch.setattr(bpfpack, "pack", lambda prog: seen.append(prog) or real(prog))
    packed = seccomp.program(make(), caps)
    assert len(seen) == 1
    return bpfpack.decode(seen[0]), bpfpack.decode(packed)


def numbers(seed):
    rnd = random.Random(seed)
    return (list(range(2048)) + list(range(X32, X32 + 2048))
            + [rnd.getrandbits(32) for _ in range(1500)] + [X32 - 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])


def arg_vectors(ins):
    """Argument vectors made of the constants the program compares with, either side of them,
    in either 32-bit half, and a few random ones."""
    consts = sorted({k for code, _, _, k in ins if code in (bpfpack.JEQ, bpfpack.JGT, bpfpack.JGE, bpfpack.JSET)})
    rnd = random.Random(7)
    vals = {0, 1, 0xFFFFFFFF, 1 << 32, (1 << 64) - 1}
    for c in consts:
        vals |= {c, (c - 1) & 0xFFFFFFFF, (c + 1) & 0xFFFFFFFF, c << 32}
    vals = sorted(vals)
    vecs = [(v,) * 6 for v in vals]
    vecs += [tuple(rnd.choice(vals) for _ in range(6)) for _ in range(200)]
    return vecs


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_interpreter_finds_no_difference_for_other_architectures(monkeypatch, name):
    """Architectures the kernel here cannot make calls of: every number of the domain, and the
    argument vectors on the numbers whose outcome depends on them."""
    old, new = compile_both(monkeypatch, name)
    for arch in (AARCH64, 0, 0xFFFFFFFF, X86_64 ^ 1, I386 ^ 1):
        for nr in numbers(arch):
            assert bpfpack.run(old, arch, nr) == bpfpack.run(new, arch, nr), (name, hex(arch), hex(nr))


# --- the kernel runs both --------------------------------------------------------------------------

# syscall(nr, a0..a5) -> rax, x86_64 SysV: rdi=nr, rsi, rdx, rcx, r8, r9, [rsp+8]
STUB64 = bytes.fromhex("4889f8 4889f7 4889d6 4889ca 4d89c2 4d89c8 4c8b4c2408 0f05 c3".replace(" ", ""))
# the same through int 0x80 (i386 numbers and arguments: ebx, ecx, edx, esi, edi, ebp)
STUB32 = bytes.fromhex("53 55 89f8 89f3 4989cb 89d1 4489da 4489c6 4489cf 8b6c2418 cd80 5d 5b c3".replace(" ", ""))
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000


def as_errnos(ins, rets, page):
    """`ins` with each return value turned into ERRNO(its index in `rets` + 1), applied only to
    calls made from `page` (the rest of the process runs unfiltered)."""
    guard = [(bpfpack.LD_ABS, 0, 0, 12), (bpfpack.JEQ, 0, 3, page >> 32),
             (bpfpack.LD_ABS, 0, 0, 8), (bpfpack.ALU_AND_K, 0, 0, 0xFFFFF000),
             (bpfpack.JEQ, 1, 0, page & 0xFFFFF000), (bpfpack.RET_K, 0, 0, RET_ALLOW)]
    body = [(c, jt, jf, RET_ERRNO | (rets.index(k) + 1)) if c == bpfpack.RET_K else (c, jt, jf, k)
            for c, jt, jf, k in ins]
    return bpfpack.encode(guard + body)


def kernel_errnos(prog, calls):
    """In a child: install `prog` (see as_errnos), make `calls` [(stub, nr, args)], report the errnos."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(prog, len(prog))

            class Prog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
            fprog = Prog(len(prog) // 8, ctypes.addressof(buf))
            fns = [STUB_FNS[0], STUB_FNS[1]]
            if libc.prctl(38, 1, 0, 0, 0) or libc.syscall(317, 1, 0, ctypes.byref(fprog)):
                os.write(w, b"install failed %d" % ctypes.get_errno())
                os._exit(0)
            out = []
            for stub, nr, args in calls:
                out.append(-fns[stub](nr, *args))
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        data += b
    os.close(r)
    os.waitpid(pid, 0)
    assert data.startswith(b"["), data
    return json.loads(data)


def _stubs():
    m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(STUB64)
    m.seek(256)
    m.write(STUB32)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    args = [ctypes.c_uint64] * 7
    f64 = ctypes.CFUNCTYPE(ctypes.c_int64, *args)(base)
    f32 = ctypes.CFUNCTYPE(ctypes.c_int32, *args)(base + 256)
    return m, base, (f64, f32)


_MAP, PAGE, STUB_FNS = _stubs()


def _ia32():
    """Whether this kernel runs int 0x80 from a 64-bit process (ia32 emulation)."""
    pid = os.fork()
    if pid == 0:
        STUB_FNS[1](20, 0, 0, 0, 0, 0, 0)  # i386 getpid
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    return st == 0


# Numbers the kernel runs without asking the filter (seccomp's passthrough): uretprobe, uprobe
PASSTHROUGH = {335, 336}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_kernel_finds_no_difference_and_agrees_with_the_interpreter(monkeypatch, name):
    old, new = compile_both(monkeypatch, name)
    assert (len(new) < len(old)) == (name in PACKED), (len(old), len(new))
    rets = sorted({k for code, _, _, k in old + new if code == bpfpack.RET_K})
    assert len(rets) < 4000
    vecs = arg_vectors(old)
    rnd = random.Random(3)
    calls = [(0, nr, (0,) * 6) for nr in numbers(5) if nr not in PASSTHROUGH]
    calls += [(0, nr, v) for nr in range(1100) if nr not in PASSTHROUGH for v in vecs[::len(vecs) // 3 + 1]]
    calls += [(0, nr | X32, v) for nr in (41, 54, 56, 101, 157, 435) for v in vecs]
    arches = [X86_64]
    if _ia32():
        arches.append(I386)
        calls += [(1, nr, (0,) * 6) for nr in numbers(6)]
        calls += [(1, nr, tuple(x & 0xFFFFFFFF for x in v)) for nr in range(500) for v in vecs[::len(vecs) // 3 + 1]]
        calls += [(1, nr, tuple(x & 0xFFFFFFFF for x in v)) for nr in (54, 102, 117, 120, 172, 359, 435) for v in vecs]
    elif os.environ.get("CI") == "true":
        pytest.fail("this kernel does not run i386 code: the i386 section is not checked by the kernel")
    got_old = kernel_errnos(as_errnos(old, rets, PAGE), calls)
    got_new = kernel_errnos(as_errnos(new, rets, PAGE), calls)
    diff = [(hex(arches[s]), hex(nr), args, hex(rets[a - 1]), hex(rets[b - 1]))
            for (s, nr, args), a, b in zip(calls, got_old, got_new) if a != b]
    assert not diff, (name, len(diff), diff[:5])
    # the interpreter pack() relies on reads programs as the kernel does (a sample: it is slow)
    for i in range(0, len(calls), 23):
        s, nr, args = calls[i]
        assert rets[got_old[i] - 1] == bpfpack.run(old, arches[s], nr, args), (name, hex(arches[s]), nr, args)
        assert rets[got_new[i] - 1] == bpfpack.run(new, arches[s], nr, args), (name, hex(arches[s]), nr, args)


def test_the_kernel_check_sees_a_wrong_bitmap(monkeypatch):
    """The comparison above can fail: a syscall flipped in each of the packed program's bitmap
    words is seen by the kernel."""
    old, new = compile_both(monkeypatch, "docker")
    wrong = [ins[:3] + (ins[3] ^ 1 << 7,) if ins[0] == bpfpack.LD_IMM else ins for ins in new]
    rets = sorted({k for code, _, _, k in old + new if code == bpfpack.RET_K})
    calls = [(0, nr, (0,) * 6) for nr in range(1100) if nr not in PASSTHROUGH]
    right = kernel_errnos(as_errnos(old, rets, PAGE), calls)
    assert kernel_errnos(as_errnos(new, rets, PAGE), calls) == right
    assert kernel_errnos(as_errnos(wrong, rets, PAGE), calls) != right
