"""Helpers for sbx's black-box tests (imported by tests/conftest.py and the tests as `sbxtest`)."""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PROBE_SRC = Path(__file__).resolve().parent / "probe.c"

# The working directory for sbx subprocesses, set by a session fixture in conftest.py.
NEUTRAL_CWD: Path | None = None

# Docker's default capability set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
CAP_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
}
DOCKER_DEFAULT_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)
DOCKER_DEFAULT_CAP_MASK = sum(1 << CAP_BITS[c] for c in DOCKER_DEFAULT_CAPS)  # 0xa80425fb

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MARKER_CONTENT = "sbx test rootfs marker\n"


# --------------------------------------------------------------------------------------------
# Who is running the tests
# --------------------------------------------------------------------------------------------

def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def subid_range(path: str, user: str | None = None, uid: int | None = None) -> tuple[int, int] | None:
    """The first range of >= 65536 ids for the user in /etc/subuid or /etc/subgid, else None."""
    user = user_name() if user is None else user
    uid = os.getuid() if uid is None else uid
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count >= 65536:
            return start, count
    return None


def has_subid_range() -> bool:
    return (
        subid_range("/etc/subuid") is not None
        and subid_range("/etc/subgid") is not None
        and shutil.which("newuidmap", path="/usr/bin:/bin:/usr/sbin:/sbin") is not None
        and shutil.which("newgidmap", path="/usr/bin:/bin:/usr/sbin:/sbin") is not None
    )


# --------------------------------------------------------------------------------------------
# Running sbx
# --------------------------------------------------------------------------------------------

def sbx_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sandbox", *map(str, args)]


def host_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def sbx(*args, input=None, timeout=30, env=None, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m sandbox ARGS`` and return the CompletedProcess (text stdout/stderr)."""
    kw.setdefault("cwd", NEUTRAL_CWD)
    if input is None and "stdin" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(sbx_argv(*args), input=input, capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def sbx_popen(*args, **kw) -> subprocess.Popen:
    kw.setdefault("cwd", NEUTRAL_CWD)
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    return subprocess.Popen(sbx_argv(*args), **kw)


def ok(cp: subprocess.CompletedProcess) -> str:
    """Assert exit 0 and return stdout."""
    assert cp.returncode == 0, f"exit {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    return cp.stdout


def assert_sbx_error(cp: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """sbx's own error: the exit code, an `sbx: ` line on stderr naming the words, no traceback."""
    detail = f"exit {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    assert cp.returncode == code, detail
    assert "Traceback" not in cp.stderr and "sbx: internal error" not in cp.stderr, detail
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("sbx: "), detail
    # One line, plus at most one `sbx: hint: ...` line.
    assert len(lines) <= 2 and all(ln.startswith("sbx: hint: ") for ln in lines[1:]), detail
    for w in words:
        assert w.lower() in cp.stderr.lower(), f"{w!r} not in the message\n{detail}"


class Lines:
    """Collect a pipe's lines in a thread, so a test can wait for one while the process runs."""

    def __init__(self, stream):
        self.lines: list = []
        self._q: queue.Queue = queue.Queue()
        self._eof = stream.read(0)            # "" or b"", whichever the stream returns
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._t.start()

    def _pump(self, stream):
        for line in iter(stream.readline, self._eof):
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, needle, timeout: float = 20.0):
        """Block until a line containing needle arrives; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{needle!r} not seen within {timeout}s; got {self.lines!r}") from None
            if line is None:
                raise AssertionError(f"{needle!r} not seen before EOF; got {self.lines!r}")
            self.lines.append(line)
            if needle in line:
                return line


def parse_idmap(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in line.split()) for line in text.splitlines() if line.strip()]


def proc_status_field(status_text: str, field: str) -> str:
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in /proc/self/status:\n{status_text}")


def host_pids_with(needle: str) -> list[int]:
    """Host pids whose command line contains needle."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def descendants(pid: int) -> list[int]:
    """All live descendants of a host pid (via /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                out.append(k)
                todo.append(k)
    return out


def container_init_pid(sbx_pid: int) -> int:
    """The host pid of the container's PID 1 among sbx_pid's descendants."""
    for p in descendants(sbx_pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        nspid = proc_status_field(status, "NSpid").split()
        if len(nspid) >= 2 and nspid[-1] == "1":
            return p
    raise AssertionError(f"no container PID 1 below pid {sbx_pid}")


# --------------------------------------------------------------------------------------------
# Root filesystems
# --------------------------------------------------------------------------------------------

def _is_static_elf(path: Path) -> bool:
    """True for an ELF file without a PT_INTERP program header (no dynamic loader needed)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        phoff, = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
    for i in range(phnum):
        p_type, = struct.unpack_from(end + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_static_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.exists() and _is_static_elf(p):
            return p
    pytest.fail("a static busybox is needed at /bin/busybox: apt-get install busybox-static "
                "(scripts/test.sh installs it)")


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
audio:x:29:app
app:x:1000:
nogroup:x:65534:
"""


def build_busybox_rootfs(dest: Path) -> Path:
    busybox = find_static_busybox()
    (dest / "bin").mkdir(parents=True)
    for d in ("proc", "dev", "sys", "tmp", "etc", "root", "home/app", "run", "var", "usr/bin", "sbin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "home/app", 0o777)
    shutil.copy2(busybox, dest / "bin/busybox")
    os.chmod(dest / "bin/busybox", 0o755)
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    assert "sh" in applets, applets
    for a in applets:
        if a != "busybox" and "/" not in a:
            os.symlink("busybox", dest / "bin" / a)
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/marker").write_text(MARKER_CONTENT)
    for p in (dest / "etc/passwd", dest / "etc/group", dest / "etc/marker"):
        os.chmod(p, 0o644)
    os.chmod(dest, 0o755)
    return dest


def compile_probe(dest_bin: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("gcc is needed to build the static test probe: apt-get install gcc libc6-dev")
    cp = subprocess.run([gcc, "-static", "-O1", "-Wall", "-o", str(dest_bin), str(PROBE_SRC)],
                        capture_output=True, text=True)
    assert cp.returncode == 0, f"building the test probe failed:\n{cp.stderr}"


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Everything about a tree that a write through an overlay could change."""
    import hashlib
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name if name != "." else Path(dirpath)
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
            try:
                xattrs = sorted(os.listxattr(p, follow_symlinks=False))
            except OSError:
                xattrs = None
            snap[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                         st.st_nlink, extra, xattrs)
    return snap


def inspect_container(ref: str) -> dict:
    """`sbx inspect REF`'s document (Docker's shape)."""
    import json
    return json.loads(ok(sbx("inspect", ref)))[0]


def wait_for(pred, timeout: float = 30):
    """pred()'s first true value, polling until `timeout` seconds; then its last value."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def remove_all_containers() -> None:
    """What a failed test left in its store (running ones included) goes."""
    ids = sbx("ps", "-a", "-q").stdout.split()
    if ids:
        sbx("rm", "-f", *ids)


def host_address():
    """The host's own non-loopback IPv4 address (what a container reaches through slirp4netns
    without host-loopback access), or None."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet: the kernel picks the source address
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()


@contextlib.contextmanager
def docker_service(d):
    """A running `sbx system service` on `d`/sbx.sock: yields (socket path, process); ends it
    with SIGTERM and waits for it on the way out (its exit code is the process's returncode)."""
    path = d / "sbx.sock"
    p = sbx_popen("system", "service", "--socket", f"unix://{path}")
    line = p.stdout.readline()
    assert line.strip() == f"export DOCKER_HOST=unix://{path}", (line, p.stderr.read() if p.poll() else "")
    try:
        yield path, p
    finally:
        p.terminate()
        p.wait(30)
