"""The kept user namespace: one per user, mapped with the subordinate range once, joined by every
sandbox that uses the default full-range mapping (podman's rootless "pause process").

Mapping a range takes the setuid helpers newuidmap and newgidmap, two process starts (~4 ms)
per sandbox.  Instead a small long-lived process, the keeper, holds a user namespace whose maps
are exactly the ones sbx writes for a range (idmap.mappings("helper"): 0 -> the caller, 1..65536
-> the subordinate range), written once.  A launch with those maps opens the namespace (an fd
kept per process), and the child setns()es it and makes its own mount, pid, ipc, uts, network
and cgroup namespaces inside (csrc/sb_child.c): they belong to the kept namespace, so every
sandbox still has namespaces of its own; only the user namespace (the id mapping) is shared,
as all of a rootless podman user's containers share its pause process's.

Files in `/tmp/sbx-UID/userns/` (one place per user, see keeper_dir):
    keeper.pid   "PID STARTTIME" of the keeper (written atomically once its maps are in place)
    start.lock   serializes starting one
    keeper.log   why a start failed
The keeper lives in its own session, re-parented away from whoever started it (no zombie in a
long-lived caller), until `sbx system reset` (`stop()`) or reboot.  A keeper that died (kill -9)
is replaced by the next launch that looks.

A pid file is only a hint.  Before a namespace is joined it is checked: the process still has the
start time written beside its pid (and is alive after the check, through a pidfd, so the pid was
not recycled meanwhile), the namespace's owner is the caller (NS_GET_OWNER_UID), and its
uid_map and gid_map are exactly the expected ones.  So a stale pid never leads into someone
else's namespace, nor into a sandbox's.

The keeper also keeps two network namespaces ready, made inside the kept user namespace (so they
are what the child's unshare(CLONE_NEWNET) would make), and hands each out once on an abstract
socket of the launchers' network namespace (netns_address; SOCK_SEQPACKET, SCM_RIGHTS) to a launch, which checks the sender is the keeper it verified
(SO_PEERCRED) and that the fd is a network namespace; the child setns()es it instead of making
one: a new network namespace costs ~0.4 ms (the kernel registers loopback, sysctl tables, ...),
made here ahead of time, while nobody waits.  Without an answer the child makes its own.

Only launches with the default seccomp profile join: the sandboxes of one kept namespace share
its per-namespace user keyrings, and that profile denies add_key, keyctl and request_key (as
podman's containers share their pause namespace's, behind the same filter).

    python -m sandbox.runtime.keeper DIR REPORT_FD UID_MAP GID_MAP NEWUIDMAP NEWGIDMAP
"""
import os
import sys

from .. import config
from ..errors import SandboxError
from . import diaglog, flocks

CLONE_NEWUSER = 0x10000000
NS_GET_OWNER_UID = 0xB704
PID_FILE = "keeper.pid"

# (euid, uid_map text, gid_map text) -> Kept: the namespace fd this process joins, and a pidfd of
# its keeper (readable once the keeper is gone: then the next launch looks again).
_kept = {}
_failed = set()


class Kept:
    __slots__ = ("nsfd", "pidfd", "pid", "dir")

    def __init__(self, nsfd, pidfd, pid, d=None):
        self.nsfd, self.pidfd, self.pid, self.dir = nsfd, pidfd, pid, d

    def alive(self):
        import select
        return not select.select([self.pidfd], [], [], 0)[0]

    def close(self):
        for fd in (self.nsfd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass


def keeper_dir():
    """`/tmp/sbx-UID/userns` (0700, ours): one place per user, whatever XDG_RUNTIME_DIR or
    --runroot/SBX_RUNROOT say.  The namespace is the user's, like the subordinate range it maps,
    so every store and session of the user shares one keeper instead of leaving one behind per
    runtime root (tests make one each).  A /tmp/sbx-UID that is not our own private directory
    is refused (StateError), and the launches then map a namespace each, as before."""
    base = config.ensure_private_dir(_user_base(), "runtime directory", config.RUNTIME_HINT)
    return os.path.join(base, "userns")


def _user_base():
    return f"/tmp/sbx-{os.geteuid()}"


def _norm(text):
    return " ".join(text.split())


def map_texts(uid_maps, gid_maps):
    from .idmap import map_text
    return map_text(uid_maps), map_text(gid_maps)


_default = []


def _default_mapping():
    """(uid maps, gid maps, key, newuidmap, newgidmap) of the default range mapping, or None
    without a range or as root.  Computed once per process, as idmap.detect() is."""
    if not _default:
        from .idmap import choose, mappings
        mode, ur, gr, newuidmap, newgidmap = choose(None)
        d = None
        if mode == "helper" and os.geteuid() != 0:
            um, gm = mappings(mode, ur, gr, 0, 0)
            d = (um, gm, (os.geteuid(),) + map_texts(um, gm), newuidmap, newgidmap)
        _default.append(d)
    return _default[0]


def eligible(spec):
    """Whether a launch of `spec` joins the kept namespace: it makes a user namespace of its own
    (none joined) with the default full-range mapping, has the default seccomp profile, and the
    caller is not root (root keeps a namespace per sandbox, mapped by itself)."""
    x = spec["sbx"]
    linux = spec["linux"]
    if x.get("userns") != "helper" or linux.get("seccomp") != "default" or "ids" in x:
        return False
    if not any(n["type"] == "user" and not n.get("path") for n in linux["namespaces"]):
        return False
    d = _default_mapping()
    return d is not None and linux["uidMappings"] == d[0] and linux["gidMappings"] == d[1]


def userns_fd(spec):
    """An fd (the caller's to close) of the kept user namespace for `spec`'s mapping, starting a
    keeper when none runs; None when the spec is not eligible or no keeper can run (the launch
    then maps a namespace of its own, as before)."""
    return _fd(*_default_mapping()[2:]) if eligible(spec) else None


def default_fd():
    """An fd of the kept user namespace mapped the default way (the caller and the subordinate
    range), or None without a range, as root, or when no keeper can run.  The network holder
    enters it, so containers on user-defined networks and the others share one namespace."""
    d = _default_mapping()
    return None if d is None else _fd(*d[2:])


def _fd(key, newuidmap, newgidmap):
    where = key
    k = _kept.get(where)
    if k is not None and not k.alive():
        del _kept[where]
        k.close()
        k = None
    if k is None:
        if where in _failed:
            return None
        try:
            k = _find_or_start(key, newuidmap, newgidmap)
        except (OSError, SandboxError):
            k = None
        if k is None:
            _failed.add(where)  # once per process: a launch does not pay for a keeper that cannot run
            return None
        _kept[where] = k
    return os.dup(k.nsfd)  # non-inheritable, as every fd Python makes


NETNS_SOCK = "netns.sock"  # where keepers of an older sbx listened (stop() removes it)
NS_GET_NSTYPE = 0xB703
NS_GET_USERNS = 0xB701
CLONE_NEWNET = 0x40000000


_reserve = []  # [(our pid, keeper pid, fd)]: one namespace fetched ahead (see prefetch_netns)


def _current():
    """The keeper this process joins (the one mapping it has joined), or None."""
    return next(iter(_kept.values())) if len(_kept) == 1 else None


def take_netns():
    """A fresh network namespace (an fd, the caller's) of the kept user namespace this process
    joins, or None (the launch then makes its own).  From this process's reserve when it holds
    one of that keeper's (fetched while its last sandbox started, off the launch's path); one
    inherited through fork, or left from a keeper since replaced, is closed, never used."""
    k = _current()
    while True:
        try:
            pid, kpid, fd = _reserve.pop()  # (not 'while _reserve': another thread may take it between)
        except IndexError:
            break
        if k is not None and pid == os.getpid() and kpid == k.pid:
            return fd
        try:
            os.close(fd)
        except OSError:
            pass
    return pooled_netns(k)


_launched = []  # pids that launched from the pool already: they fetch ahead from their second on


def prefetch_netns():
    """Fetch the next launch's network namespace now: a launch has just left the caller idle.
    Only in a process that launches again and again (a test harness, a benchmark): a one-shot
    `sbx run` would fetch one it never uses."""
    if os.getpid() not in _launched:
        _launched.append(os.getpid())
        return
    k = _current()
    if not _reserve and k is not None:
        fd = pooled_netns(k)
        if fd is not None:
            _reserve.append((os.getpid(), k.pid, fd))


def netns_address(d, userns_ino):
    """Where keeper `d` of the user namespace `userns_ino` hands out network namespaces: an
    abstract socket of the network namespace the keeper was started in (the launchers'), which
    no sandbox in a network namespace of its own can reach, whatever it has mounted; a path
    in the keeper's directory could be reached by a sandbox with /tmp mounted, which would be
    handed namespaces made and charged outside its limits."""
    return f"\0{d}/netns.{userns_ino}"


def pooled_netns(k):
    """A fresh network namespace from keeper `k`'s socket, or None (no answer, none ready,
    anything odd).  Taken only from the process we verified as the keeper (SO_PEERCRED, pid seen
    from our pid namespace), and only a network namespace owned by its user namespace."""
    if k is None or k.dir is None:
        return None
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    fds = []
    try:
        s.settimeout(0.2)
        s.connect(netns_address(k.dir, os.fstat(k.nsfd).st_ino))
        pid = int.from_bytes(s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)[:4], sys.byteorder)
        if pid != k.pid:
            return None
        _, anc, _, _ = s.recvmsg(1, _socket.CMSG_SPACE(4), _socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
        if len(fds) != 1:
            return None
        import fcntl
        if fcntl.ioctl(fds[0], NS_GET_NSTYPE) != CLONE_NEWNET:
            return None
        owner = fcntl.ioctl(fds[0], NS_GET_USERNS)
        try:
            if os.fstat(owner).st_ino != os.fstat(k.nsfd).st_ino:
                return None
        finally:
            os.close(owner)
        return fds.pop()
    except OSError:
        return None
    finally:
        s.close()
        for fd in fds:
            os.close(fd)


def _start_time(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


def verify(pid, start, key, d=None):
    """A Kept for the keeper `pid` (of directory `d`) if it is the process started at `start`
    and its namespace is owned by us and mapped as `key` says; else None.  Nothing is joined on
    a mismatch."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    nsfd = -1
    try:
        if _start_time(pid) != start:
            return None
        nsfd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        import fcntl
        owner = int.from_bytes(fcntl.ioctl(nsfd, NS_GET_OWNER_UID, bytes(4)), sys.byteorder)
        if owner != key[0]:
            return None
        for name, want in (("uid_map", key[1]), ("gid_map", key[2])):
            with open(f"/proc/{pid}/{name}") as f:
                if _norm(f.read()) != _norm(want):
                    return None
        if os.stat(f"/proc/{pid}/ns/user").st_ino != os.fstat(nsfd).st_ino:
            return None
        if not _outside_mounts(pid, nsfd):
            return None
        k = Kept(nsfd, pidfd, pid, d)
        if not k.alive():  # its pidfd says whether the pid we read about was reused meanwhile
            return None
        nsfd = pidfd = -1
        return k
    except (OSError, ValueError, IndexError):
        return None
    finally:
        for fd in (nsfd, pidfd):
            if fd >= 0:
                os.close(fd)


def _outside_mounts(pid, nsfd):
    """Whether `pid`'s mount namespace belongs to a user namespace other than `nsfd`'s.  The
    keeper never leaves the mount namespace it was started in (its starter's); a sandbox joins
    the kept user namespace and makes its mount namespace inside it, and cannot setns() back
    into one owned outside it.  So a sandbox of ours that names one of its own processes in
    keeper.pid (it can write there if it has /tmp mounted and knows its host pid, e.g. with
    --pid host) is not taken for the keeper: its socket would hand a launch its own network
    namespace, which passes every other check (its peer pid, its owner: the kept namespace)."""
    import fcntl
    mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(mnt, NS_GET_USERNS)
    finally:
        os.close(mnt)
    try:
        return os.fstat(owner).st_ino != os.fstat(nsfd).st_ino
    finally:
        os.close(owner)


def find(key, d=None):
    """The running keeper for `key` (see verify), or None."""
    d = d or keeper_dir()
    got = _pid_file(d)
    return None if got is None else verify(*got, key, d)


def _pid_file(d):
    """(pid, start time) from keeper.pid, or None."""
    try:
        with open(os.path.join(d, PID_FILE)) as f:
            pid, start = (int(v) for v in f.read().split()[:2])
    except (OSError, ValueError):
        return None
    return pid, start


def _find_or_start(key, newuidmap, newgidmap):
    d = keeper_dir()
    k = find(key, d)
    if k is not None:
        return k
    lock = flocks.hold(os.path.join(d, "start.lock"), wait=True)
    try:
        k = find(key, d)  # another process started one meanwhile
        if k is None:
            _start(d, key, newuidmap, newgidmap)
            k = find(key, d)
    finally:
        os.close(lock)
    return k


def _start(d, key, newuidmap, newgidmap):
    """Start a keeper (posix_spawn, its own session; its first process leaves once the keeper is
    mapped and has written keeper.pid, and is reaped here).  Failures go to keeper.log."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PYTHONPATH": pkg_parent, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2), (os.POSIX_SPAWN_DUP2, w, 3)]
        argv = [sys.executable, "-S", "-m", "sandbox.runtime.keeper", d, "3", key[1], key[2], newuidmap, newgidmap]
        pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    finally:
        os.close(w)
    try:
        out = b""
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            out += b
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not out.startswith(b"ok"):
        _log(d, f"the keeper did not start: {out.decode(errors='replace') or 'no report'}")


def stop(d=None):
    """End the user's keeper (sbx system reset).  Running sandboxes keep their
    namespace (it lives as long as a process is in it); the next launch starts a new keeper.
    Returns whether one was running."""
    import signal
    d = d or os.path.join(_user_base(), "userns")  # nothing made to find nothing
    got = _pid_file(d)
    if got is None:
        return False
    pid, start = got
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if _start_time(pid) != start or not _is_keeper(pid):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        return False
    finally:
        os.close(pidfd)
    for name in (PID_FILE, NETNS_SOCK):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    for key in [k for k, v in _kept.items() if v.pid == pid]:
        _kept.pop(key).close()
    while _reserve:
        os.close(_reserve.pop()[2])
    return True


def _is_keeper(pid):
    """Whether `pid` is a keeper of ours (of this sbx or an older one, whose argv[0] was the same):
    named so, in a user namespace we own, and in a mount namespace owned outside it (see
    _outside_mounts).  keeper.pid can be written by whoever can write /tmp/sbx-UID (a sandbox
    with /tmp mounted): `sbx system reset` must not kill whatever process of ours it names."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if not f.read().startswith(b"sbx-userns-keeper\0"):
            return False
    import fcntl
    nsfd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = int.from_bytes(fcntl.ioctl(nsfd, NS_GET_OWNER_UID, bytes(4)), sys.byteorder)
        return owner == os.geteuid() and _outside_mounts(pid, nsfd)
    finally:
        os.close(nsfd)


def _log(d, msg):
    diaglog.append(os.path.join(d, "keeper.log"), msg)


# --- the keeper -----------------------------------------------------------------------------------

def main(argv):
    """The first process: fork the keeper, map it with newuidmap/newgidmap, leave."""
    d, report = argv[1], int(argv[2])
    umap, gmap, newuidmap, newgidmap = argv[3:7]
    to_k_r, to_k_w = os.pipe()
    from_k_r, from_k_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_k_w)
        os.close(from_k_r)
        _keeper(d, report, to_k_r, from_k_w)
        os._exit(1)
    os.close(to_k_r)
    os.close(from_k_w)
    if os.read(from_k_r, 1) != b"u":
        os._exit(1)  # it failed and reported why
    for helper, text in ((newuidmap, umap), (newgidmap, gmap)):
        r, w = os.pipe()
        args = [helper, str(pid)] + text.split()
        hp = os.posix_spawn(helper, args, {}, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)])
        os.close(w)
        out = os.read(r, 4096)
        os.close(r)
        _, st = os.waitpid(hp, 0)
        if st != 0:
            os.write(report, b"E\0" + os.path.basename(helper).encode() + b" failed: " + out.strip())
            os.kill(pid, 9)
            os._exit(1)
    os.write(to_k_w, b"m")
    os._exit(0)


def _keeper(d, report, rfd, wfd):
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
        os.write(wfd, b"u")
        if os.read(rfd, 1) != b"m":
            os._exit(1)  # the helpers failed: the first process reported why
        os.close(rfd)
        os.close(wfd)
        os.setsid()
        os.chdir("/")  # pin no directory of whoever started it
        me = os.getpid()
        tmp = os.path.join(d, f"{PID_FILE}.{me}")
        with open(tmp, "w") as f:
            f.write(f"{me} {_start_time(me)}\n")
        os.rename(tmp, os.path.join(d, PID_FILE))
        os.write(report, b"ok")
        os.close(report)
    except BaseException as e:  # noqa: BLE001 - the reason goes to whoever waits for us
        try:
            os.write(report, f"E\0{e}".encode())
        except OSError:
            pass
        os._exit(1)
    # Nothing of whoever started us stays open here (a pipe they wait on for EOF, above all).
    os.closerange(3, 1 << 20)
    # Named for `ps`: the same interpreter, with argv[0] the keeper's name.
    os.execve(sys.executable, ["sbx-userns-keeper", "-S", "-m", "sandbox.runtime.keeper", "--serve", d],
              {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "PATH", "LANG")})


POOL = 2


def serve(d):
    """Hand out fresh network namespaces on netns_address(), one to each connection of ours, keeping
    POOL made ahead.  Each is made by unshare(CLONE_NEWNET) here, in the kept user namespace, and
    we step back into our own at once: none is ever entered or handed out twice."""
    import ctypes
    import signal
    import _socket
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    s = None
    try:
        s = _listen(netns_address(d, os.stat("/proc/self/ns/user").st_ino))  # in the launchers' network
        # A network namespace of our own to step back into: the host's belongs to the initial
        # user namespace, where we hold no capability to setns() back.
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if s is not None:
            s.close()
        # No pool (launches make their own namespaces); the user namespace is still kept.
        _log(d, f"no network namespaces made ahead: {e}")
        s = None
    named = _watch_named(d, libc)

    if s is None:
        while True:
            named(None)

    def make():
        if libc.unshare(CLONE_NEWNET) != 0:
            return -1
        try:
            _loopback_up()  # as the child would (runtime/plan.py: not asked of it for these)
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                os._exit(1)  # never serve from inside a namespace we hand out

    me = os.getuid()
    pool = []
    while True:
        while len(pool) < POOL:
            fd = make()
            if fd < 0:
                break
            pool.append(fd)
        if not named(s):
            continue
        try:
            cfd, _ = s._accept()
        except (InterruptedError, BlockingIOError):
            continue
        c = _socket.socket(fileno=cfd)
        try:
            uid = int.from_bytes(c.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)[4:8], sys.byteorder)
            if uid == me and pool:
                fd = pool.pop(0)
                try:
                    c.sendmsg([b"n"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))],
                              _socket.MSG_NOSIGNAL)  # a client gone is no reason to die
                finally:
                    os.close(fd)
        except OSError:
            pass
        finally:
            c.close()


def _watch_named(d, libc):
    """A wait(sock) -> whether sock is readable, that ends this keeper as soon as keeper.pid no
    longer names it (removed by `sbx system reset` after it killed the keeper it found, while
    another launch started this one; or replaced: by a keeper for other maps, or by anyone who
    can write /tmp/sbx-UID).  Nothing can find, stop or reuse a keeper it does not name, so it
    would stay behind until reboot.  inotify on the directory: no polling."""
    import select
    import signal
    me = (os.getpid(), _start_time(os.getpid()))
    ino = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    # IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
    if ino < 0 or libc.inotify_add_watch(ino, os.fsencode(d), 0x8 | 0x40 | 0x80 | 0x200 | 0x400 | 0x800) < 0:
        _log(d, "no inotify: a keeper whose pid file is replaced stays behind")
        ino = -1
    if _pid_file(d) != me:
        os._exit(0)

    def wait(sock):
        fds = [f for f in (sock, ino) if f is not None and f != -1]
        if not fds:
            signal.pause()
            return False
        ready = select.select(fds, [], [])[0]
        if ino in ready:
            try:
                while os.read(ino, 65536):
                    pass
            except BlockingIOError:
                pass
            if _pid_file(d) != me:
                os._exit(0)
        return sock is not None and sock in ready
    return wait


def _loopback_up():
    """`ip link set lo up` in our network namespace (SIOCGIFFLAGS, SIOCSIFFLAGS | IFF_UP)."""
    import _socket
    import fcntl
    import struct
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        ifr = fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack_from("16sH", ifr)[1]
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1))
    finally:
        s.close()


def _listen(address):
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        s.bind(address)
        s.listen(64)
    except OSError:
        s.close()
        raise
    return s


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main(sys.argv)
