"""Seccomp profiles: Docker's default, Docker/OCI JSON files, and their compilation to BPF.

    default_profile()      Docker's default profile (moby profiles/seccomp/default.json) as a dict
    load(value)            "unconfined" -> None; a path -> the profile dict, checked (UsageError)
    program(profile, caps) the BPF program (struct sock_filter array, 8 bytes per instruction) for
                           this machine and a container whose bounding set is `caps`
    describe(value)        one line for inspect

A profile is resolved for one container as Docker does before handing it to runc: `includes` and
`excludes` are matched against the capability names in `caps`, the architecture (Go names: amd64,
arm64, ...) and the running kernel (`minKernel`).  The architectures come from `archMap` (the entry
of the native one and its sub-architectures) or from `architectures`.  Then, as runc does, names
libseccomp does not know are skipped, rules with the default action are dropped, and a rule with
several conditions on one argument becomes one rule per condition (libseccomp can only AND them).
libseccomp (csrc/sb_seccomp.c) builds and exports the program; nothing is loaded here.

Compiled programs are cached in this process and in $XDG_CACHE_HOME/sbx/seccomp/<sha256>.bpf
(~/.cache/sbx/seccomp), keyed by the canonical JSON of the profile, the capabilities, the machine,
the kernel release and libseccomp's version; each file ends with a sha256 of key and program, so a
torn or altered file is recompiled, never installed.  This module imports neither json nor hashlib
on that path (they cost ~10 ms and ~5 ms at start-up).
"""
import os
import stat

from ..errors import UsageError

# Bump when the compiler's output for the same input changes (the disk cache is keyed on it).
_FORMAT = 2  # 2: libseccomp's program re-packed by bpfpack
_TRAILER = 32  # bytes of sha256 after the program in a cache file

_ARCH_NAMES = frozenset((
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
))
# uname machine -> (Go architecture as Docker's `arches` name it, libseccomp's native SCMP_ARCH_*)
_MACHINES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"), "i386": ("386", "SCMP_ARCH_X86"), "i686": ("386", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"), "armv7l": ("arm", "SCMP_ARCH_ARM"), "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"), "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"), "mips": ("mips", "SCMP_ARCH_MIPS"),
}
_UNSUPPORTED_ACTIONS = {
    "SCMP_ACT_NOTIFY": "needs a seccomp agent listening on a socket (listenerPath), which sbx does not run",
    "SCMP_ACT_TRACE": "needs a ptrace tracer attached to the container, which sbx does not run",
}
_ACTION_HINT = ("use one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, "
                "SCMP_ACT_KILL, SCMP_ACT_TRAP, SCMP_ACT_LOG")
_OP_HINT = ("use one of SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GE, SCMP_CMP_GT, "
            "SCMP_CMP_MASKED_EQ")

_recent = []  # (caps, a copy of the profile, program), most recent first
_MAX_PROFILE = 16 << 20


# --- profiles -------------------------------------------------------------------------------------

def default_profile():
    """Docker's default profile, in Docker's JSON shape (a new dict on every call)."""
    from . import seccomp_default as d
    syscalls = [{"names": d.ALLOWED.split(), "action": "SCMP_ACT_ALLOW"}]
    for names, action, errno_ret, args, includes, excludes in d.RULES:
        entry = {"names": names.split(), "action": action}
        if args:
            entry["args"] = [{"index": i, "value": v, "valueTwo": v2, "op": "SCMP_CMP_" + op}
                             for i, op, v, v2 in args]
        if errno_ret is not None:
            entry["errnoRet"] = errno_ret
        if includes:
            entry["includes"] = {k: list(v) if isinstance(v, list) else v for k, v in includes.items()}
        if excludes:
            entry["excludes"] = {k: list(v) if isinstance(v, list) else v for k, v in excludes.items()}
        syscalls.append(entry)
    return {
        "defaultAction": d.DEFAULT_ACTION,
        "defaultErrnoRet": d.DEFAULT_ERRNO,
        "archMap": [{"architecture": a, "subArchitectures": list(subs)} for a, subs in d.ARCH_MAP],
        "syscalls": syscalls,
    }


# Root emulation for builds that map a single id (Charliecloud's --force=seccomp): the calls that
# give files or processes other owners report success and do nothing, so package managers and
# useradd, which chown and switch users as a matter of course, run as they do under real root.
FAKED_CALLS = ("chown chown32 fchown fchown32 fchownat lchown lchown32 setuid setuid32 setgid setgid32 "
               "setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid setresgid32 "
               "setgroups setgroups32 setfsuid setfsuid32 setfsgid setfsgid32")
_S_IFMT, _S_IFCHR, _S_IFBLK = 0o170000, 0o020000, 0o060000
# mknod/mknodat: a device node is faked (nothing made), every other type is made as usual.
_MKNOD_MODE_ARG = {"mknod": 1, "mknodat": 2}
_NODE_TYPES = (0, 0o100000, 0o010000, 0o140000)  # S_IFREG by default (0), S_IFREG, S_IFIFO, S_IFSOCK


def root_emulation_profile():
    """Docker's default profile with FAKED_CALLS, and mknod/mknodat of devices, answered by
    SCMP_ACT_ERRNO with errno 0: the call returns 0 and has no effect."""
    prof = default_profile()
    faked = set(FAKED_CALLS.split()) | set(_MKNOD_MODE_ARG)
    for entry in prof["syscalls"]:
        if entry["action"] == "SCMP_ACT_ALLOW" and not entry.get("args"):
            entry["names"] = [n for n in entry["names"] if n not in faked]
    prof["syscalls"].append({"names": FAKED_CALLS.split(), "action": "SCMP_ACT_ERRNO", "errnoRet": 0})
    for name, arg in _MKNOD_MODE_ARG.items():
        for kind in (_S_IFCHR, _S_IFBLK):
            prof["syscalls"].append({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 0,
                                     "args": [{"index": arg, "value": _S_IFMT, "valueTwo": kind,
                                               "op": "SCMP_CMP_MASKED_EQ"}]})
        for kind in _NODE_TYPES:
            prof["syscalls"].append({"names": [name], "action": "SCMP_ACT_ALLOW",
                                     "args": [{"index": arg, "value": _S_IFMT, "valueTwo": kind,
                                               "op": "SCMP_CMP_MASKED_EQ"}]})
    return prof


def load(value):
    """`--security-opt seccomp=VALUE`: "unconfined" -> None, else the path of a Docker/OCI JSON
    profile -> the profile dict, checked.  Bad input raises UsageError naming the file."""
    if value == "unconfined":
        return None
    path = os.fspath(value)
    hint = "give the path of a Docker/OCI seccomp profile in JSON, or seccomp=unconfined"
    if not path:
        raise UsageError("seccomp: no profile given", hint=hint)
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # /dev/zero, a fifo: never ends
                raise UsageError(f"seccomp profile {path}: not a regular file", hint=hint)
            data = f.read(_MAX_PROFILE + 1)
        if len(data) > _MAX_PROFILE:
            raise UsageError(f"seccomp profile {path}: larger than {_MAX_PROFILE >> 20} MiB", hint=hint)
    except FileNotFoundError:
        raise UsageError(f"seccomp profile {path}: no such file", hint=hint) from None
    except OSError as e:
        raise UsageError(f"seccomp profile {path}: cannot read it: {e.strerror}", hint=hint) from None
    import json
    try:
        profile = json.loads(data)
    except UnicodeDecodeError:
        raise UsageError(f"seccomp profile {path}: not UTF-8 text", hint=hint) from None
    except ValueError as e:
        raise UsageError(f"seccomp profile {path}: invalid JSON: {e}", hint=hint) from None
    validate(profile, path)
    check_startable(profile, path)
    return profile


# What the launcher's child still calls after it installs the filter: the exec itself, and
# writing a failure report and exiting.  A profile that blocks these can start nothing, and
# would only show as a process killed by SIGSEGV with no word of why.
_LAUNCH_NEEDS = ("execve", "write", "exit_group")


def check_startable(profile, source="profile"):
    """UsageError when `profile` (checked by validate) blocks a call no process can start
    without.  Rules with argument conditions or capability/arch conditions are taken as
    allowing, so this refuses only what is certain to fail."""
    default_allows = profile.get("defaultAction") in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
    for name in _LAUNCH_NEEDS:
        allowed = default_allows
        for rule in profile.get("syscalls") or ():
            if name not in (_names(rule) or ()):
                continue
            conditional = rule.get("args") or rule.get("includes") or rule.get("excludes")
            if rule.get("action") in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG"):
                allowed = True
            elif not conditional:
                allowed = False
                break
        if not allowed:
            raise UsageError(f"seccomp profile {source}: it blocks {name}, so no process could start under it",
                             hint=f"allow {name} in the profile (Docker's default profile allows it)")


def validate(profile, source="profile"):
    """Check a profile dict as Docker and runc would before use; UsageError names `source`, the
    entry and the field.  Actions that need a supervisor (NOTIFY, TRACE) are refused."""
    from .._native import SECCOMP_ACTIONS, SECCOMP_OPS

    def bad(what, hint):
        raise UsageError(f"seccomp profile {source}: {what}", hint=hint)

    def check_action(action, where):
        if not isinstance(action, str):
            bad(f"{where}: the action is missing or not a string", _ACTION_HINT)
        if action in _UNSUPPORTED_ACTIONS:
            bad(f"{where}: {action} {_UNSUPPORTED_ACTIONS[action]}",
                "use SCMP_ACT_ERRNO or SCMP_ACT_KILL_PROCESS for these syscalls, or run with seccomp=unconfined")
        if action not in SECCOMP_ACTIONS:
            bad(f"{where}: unknown action {action!r}", _ACTION_HINT)

    def check_errno(v, where):
        if v is not None and (not _is_int(v) or not 0 <= v <= 4095):
            bad(f"{where}: errno {v!r} is not a number from 0 to 4095", "use an errno value such as 1 (EPERM)")

    def check_list(v, where, what):
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            bad(f"{where}: {what} must be a list of strings", "see Docker's seccomp profile format")

    def check_kernel(v, where):
        if v is not None and (not isinstance(v, str) or _kernel_tuple(v) is None):
            bad(f"{where}: minKernel {v!r} is not a kernel version like \"4.8\"", "write it as MAJOR.MINOR")

    if not isinstance(profile, dict):
        bad("the top level is not a JSON object", "a profile is an object with defaultAction and syscalls")
    check_action(profile.get("defaultAction"), "defaultAction")
    check_errno(profile.get("defaultErrnoRet"), "defaultErrnoRet")
    if profile.get("listenerPath"):
        bad("listenerPath: seccomp agents are not supported by sbx", "remove listenerPath and SCMP_ACT_NOTIFY rules")
    if profile.get("flags"):
        bad(f"flags {profile['flags']!r}: seccomp filter flags are not supported by sbx", "remove \"flags\"")
    archs = profile.get("architectures")
    amap = profile.get("archMap")
    if archs and amap:
        bad("both architectures and archMap are given", "keep one of them")
    check_list(archs, "architectures", "architectures")
    for a in archs or ():
        if a not in _ARCH_NAMES:
            bad(f"architectures: unknown architecture {a!r}", "use SCMP_ARCH_* names such as SCMP_ARCH_X86_64")
    if amap is not None:
        if not isinstance(amap, list):
            bad("archMap must be a list", "see Docker's seccomp profile format")
        for i, m in enumerate(amap):
            where = f"archMap[{i}]"
            if not isinstance(m, dict):
                bad(f"{where} must be an object", "see Docker's seccomp profile format")
            check_list(m.get("subArchitectures"), where, "subArchitectures")
            for a in [m.get("architecture"), *(m.get("subArchitectures") or ())]:
                if not isinstance(a, str) or a not in _ARCH_NAMES:
                    bad(f"{where}: unknown architecture {a!r}", "use SCMP_ARCH_* names such as SCMP_ARCH_X86_64")
    syscalls = profile.get("syscalls")
    if syscalls is None:
        syscalls = []
    if not isinstance(syscalls, list):
        bad("syscalls must be a list", "see Docker's seccomp profile format")
    for i, s in enumerate(syscalls):
        if not isinstance(s, dict):
            bad(f"syscalls[{i}] must be an object", "see Docker's seccomp profile format")
        names = _names(s)
        where = f"syscalls[{i}] ({', '.join(names[:3]) if isinstance(names, list) else '?'})"
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            bad(f"syscalls[{i}]: names must be a non-empty list of syscall names",
                "write \"names\": [\"mkdir\", ...]")
        check_action(s.get("action"), where)
        check_errno(s.get("errnoRet"), where)
        if s.get("args") is not None and not isinstance(s["args"], list):
            bad(f"{where}: args must be a list", "see Docker's seccomp profile format")
        for j, a in enumerate(s.get("args") or ()):
            if not isinstance(a, dict):
                bad(f"{where}: args[{j}] must be an object", "see Docker's seccomp profile format")
            index = a.get("index")
            if not _is_int(index) or not 0 <= index <= 5:
                bad(f"{where}: args[{j}]: bad argument index {index!r}", "a syscall argument index is 0 to 5")
            if not isinstance(a.get("op"), str) or a["op"] not in SECCOMP_OPS:
                bad(f"{where}: args[{j}]: unknown operator {a.get('op')!r}", _OP_HINT)
            for k in ("value", "valueTwo"):
                v = a.get(k, 0)
                if not _is_int(v) or not 0 <= v < 1 << 64:
                    bad(f"{where}: args[{j}]: {k} {v!r} is not a number from 0 to 2^64-1",
                        "write argument values as non-negative integers")
        for part in ("includes", "excludes"):
            cond = s.get(part)
            if cond is None:
                continue
            if not isinstance(cond, dict):
                bad(f"{where}: {part} must be an object", "see Docker's seccomp profile format")
            check_list(cond.get("caps"), f"{where}: {part}", "caps")
            check_list(cond.get("arches"), f"{where}: {part}", "arches")
            check_kernel(cond.get("minKernel"), f"{where}: {part}")


def describe(value):
    """One line for inspect: "unconfined", "default (docker-compatible)", a path, or a summary."""
    if value is None or value == "unconfined":
        return "unconfined"
    if isinstance(value, (str, os.PathLike)):
        return "default (docker-compatible)" if value == "default" else os.fspath(value)
    if value == default_profile():
        return "default (docker-compatible)"
    return f"custom ({value.get('defaultAction')}, {len(value.get('syscalls') or ())} rules)"


# --- compilation ----------------------------------------------------------------------------------

def program(profile, caps):
    """The BPF program of `profile` for a container whose bounding set is `caps` (names such as
    "SYS_ADMIN" or "CAP_SYS_ADMIN"), for this machine and kernel: raw `struct sock_filter` bytes
    for seccomp(SECCOMP_SET_MODE_FILTER).  Cached in memory and on disk (see the module doc)."""
    caps = tuple(sorted({_cap_name(c) for c in caps}))
    for c, p, prog in _recent:  # a deep comparison costs ~10 us, hashing the profile ~300 us
        if c == caps and p == profile:
            return prog
    from .._native import seccomp_version
    u = os.uname()
    key_text = "\n".join((str(_FORMAT), _canon(profile), ",".join(caps), u.machine, u.release,
                          "%d.%d.%d" % seccomp_version()))
    key = _sha256(key_text.encode()).hexdigest()
    path = _cache_file(key)
    prog = _read_cached(path, key) if path else None
    if prog is None:
        prog = _compile(profile, caps, u.machine, u.release)
        if path:
            _write_cached(path, key, prog)
    _recent.insert(0, (caps, _copy(profile), prog))
    del _recent[8:]
    return prog


def default_program(caps):
    """program(default_profile(), caps), with a disk-cache key made from the default profile's
    source file instead of its canonical JSON: a fresh process (every `sbx run`) then neither
    builds the profile nor serialises it, and reads one small file."""
    caps = tuple(sorted({_cap_name(c) for c in caps}))
    from .._native import seccomp_version
    u = os.uname()
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.py")
    try:
        with open(src, "rb") as f:
            digest = _sha256(f.read()).hexdigest()
    except OSError:
        return program(default_profile(), caps)
    key_text = "\n".join((str(_FORMAT), "default", digest, ",".join(caps), u.machine, u.release,
                          "%d.%d.%d" % seccomp_version()))
    key = _sha256(key_text.encode()).hexdigest()
    path = _cache_file(key)
    prog = _read_cached(path, key) if path else None
    if prog is None:
        prog = program(default_profile(), caps)
        if path:
            _write_cached(path, key, prog)
    return prog


def _compile(profile, caps, machine, release):
    from .._native import SECCOMP_ACTIONS, SECCOMP_OPS, SeccompError, seccomp_compile
    validate(profile)  # a dict may come from elsewhere than load() (an OCI bundle, the API)
    goarch, native = _MACHINES.get(machine, (machine, None))
    kernel = _kernel_tuple(release) or (0, 0, 0)
    capset = set(caps)

    def matches(cond, excluding):
        """Docker's includes (all must hold) / excludes (any one excludes)."""
        arches = cond.get("arches") or ()
        ccaps = [_cap_name(c) for c in cond.get("caps") or ()]
        mk = cond.get("minKernel")
        tests = []
        if arches:
            tests.append(goarch in arches)
        if ccaps:
            tests.append(any(c in capset for c in ccaps) if excluding else all(c in capset for c in ccaps))
        if mk:
            tests.append(kernel >= _kernel_tuple(mk))
        return any(tests) if excluding else all(tests)

    def action(name, errno_ret):
        return SECCOMP_ACTIONS[name], 1 if errno_ret is None else errno_ret

    arches = list(profile.get("architectures") or ())
    for m in profile.get("archMap") or ():
        if m.get("architecture") == native:
            arches += [m["architecture"], *(m.get("subArchitectures") or ())]
    arches = [a[len("SCMP_ARCH_"):].lower() for a in arches if a != native]
    default_action, default_errno = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    rules = []
    origins = []  # index in profile["syscalls"] of each rule, for error messages
    for n, s in enumerate(profile.get("syscalls") or ()):
        if not matches(s.get("includes") or {}, False) or matches(s.get("excludes") or {}, True):
            continue
        act, errno_ret = action(s["action"], s.get("errnoRet"))
        conds = [(a["index"], SECCOMP_OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                 for a in s.get("args") or ()]
        # libseccomp ANDs conditions and refuses two on one argument: runc then adds each condition
        # as a rule of its own (an OR), and so do we.
        split = len({c[0] for c in conds}) < len(conds)
        groups = [(c,) for c in conds] if split else [tuple(conds)]
        for name in _names(s):
            for g in groups:
                rules.append((name, act, errno_ret, g))
                origins.append(n)
    try:
        prog, _skipped = seccomp_compile(default_action, default_errno, arches, rules)
    except SeccompError as e:
        where = "" if e.rule is None else f" syscalls[{origins[e.rule]}]"
        raise UsageError(f"seccomp profile{where}: {e.detail}",
                         hint="fix the rule in the profile, or run with seccomp=unconfined") from None
    from .bpfpack import pack
    return pack(prog)  # the same filter, a quarter of the size: installed 3x faster


# --- cache ----------------------------------------------------------------------------------------

def _cache_file(key):
    """$XDG_CACHE_HOME/sbx/seccomp/KEY.bpf, or None when there is no private directory for it
    (another user's or a group-writable directory would let someone else choose our filter)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no HOME and no passwd entry: no cache rather than one in the cwd
        return None
    d = os.path.join(base, "sbx", "seccomp")
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            st = os.lstat(d)
        except OSError:
            return None
    except OSError:
        return None
    if not (st.st_mode & 0o170000 == 0o040000 and st.st_uid == os.geteuid() and not st.st_mode & 0o022):
        return None
    return os.path.join(d, key + ".bpf")


def _read_cached(path, key):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_size > 1 << 20:
            return None
        data = os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    prog, mac = data[:-_TRAILER], data[-_TRAILER:]
    if not prog or len(prog) % 8 or _sha256(key.encode() + prog).digest() != mac:
        return None  # torn, truncated or altered: recompile and rewrite
    return prog


def _write_cached(path, key, prog):
    from ..image.fsutil import atomic_write  # only after a compile: it imports secrets and hashlib
    try:
        atomic_write(path, prog + _sha256(key.encode() + prog).digest(), 0o600, durable=False)
    except OSError:
        pass  # a cache that cannot be written costs a compile next time, nothing else


# --- helpers --------------------------------------------------------------------------------------

def _names(entry):
    names = entry.get("names")
    if names is None and entry.get("name"):  # Docker's deprecated single "name"
        names = [entry["name"]]
    return names


def _copy(o):
    """A deep copy of JSON data (the caller may change its profile after compiling it)."""
    if type(o) is dict:
        return {k: v if type(v) is str or type(v) is int else _copy(v) for k, v in o.items()}
    if type(o) is list:
        return [x if type(x) is str else _copy(x) for x in o]
    if type(o) is tuple:
        return tuple(_copy(x) for x in o)
    return o


def _cap_name(c):
    c = c.upper()
    return c if c.startswith("CAP_") else "CAP_" + c


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _kernel_tuple(release):
    """"6.1.0-13-amd64" -> (6, 1, 0); None when it does not start with MAJOR.MINOR."""
    parts = []
    for p in release.split(".", 2)[:3]:
        digits = ""
        for ch in p:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(p):
            break
    if len(parts) < 2:
        return None
    return tuple(parts + [0] * (3 - len(parts)))


def _sha256(data):
    try:
        from _sha256 import sha256  # the built-in module: hashlib costs ~5 ms to import
    except ImportError:
        from hashlib import sha256
    return sha256(data)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _jstr(s):
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) > 0xFFFF:
            n = ord(ch) - 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | n >> 10, 0xDC00 | n & 0x3FF))
        else:
            out.append("\\u%04x" % ord(ch))
    return '"' + "".join(out) + '"'


def _canon(o):
    """json.dumps(o, sort_keys=True, separators=(",", ":")) without importing json."""
    out = []
    _canon_into(o, out.append)
    return "".join(out)


def _canon_into(o, put):
    t = type(o)
    if t is str:
        put(_jstr(o))
    elif t is dict:
        put("{")
        first = True
        for k in sorted(o):
            if not first:
                put(",")
            first = False
            put(_jstr(str(k)))
            put(":")
            _canon_into(o[k], put)
        put("}")
    elif t is list or t is tuple:
        if o and all(type(x) is str for x in o):  # syscall names: one check for the whole list
            j = "".join(o)
            if j.isascii() and j.isprintable() and '"' not in j and "\\" not in j:
                put('["' + '","'.join(o) + '"]')
                return
        put("[")
        for i, x in enumerate(o):
            if i:
                put(",")
            _canon_into(x, put)
        put("]")
    elif o is None:
        put("null")
    elif o is True:
        put("true")
    elif o is False:
        put("false")
    elif isinstance(o, int):
        put(int.__repr__(o))
    elif isinstance(o, float):
        put(float.__repr__(o))
    elif isinstance(o, str):
        put(_jstr(str(o)))
    else:
        raise TypeError(f"seccomp profile: {type(o).__name__} is not JSON")
