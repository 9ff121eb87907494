"""The network holder: one process per user that owns a user + network + mount namespace in which
every user-defined network lives (podman's rootless-netns).  In its network namespace: a bridge
per network (`sbx-<id8>`, the gateway address on it), a veth per container and network, a DNS
responder per network on the gateway's port 53, slirp4netns on `tap0` for the way out (the
bridges' traffic is masqueraded behind 10.0.2.100 with iptables-nft, the kernel's NAT).

Containers on a user-defined network join the holder's user namespace (the launcher setns()es it
and makes the container's other namespaces inside it, csrc/sb_child.c): the kernel lets a link
move only into a network namespace whose user namespace the mover has CAP_NET_ADMIN over, and the
holder has none over a user namespace that is not its own or a descendant.

Files in `<runtime root>/net/holder/`:
    holder.lock   flock held by the holder while it lives (its liveness, never a stale pid)
    holder.pid    its pid, written before it reports ready
    holder.sock   its requests: one JSON line in, one JSON line out, per connection
    users.lock    every user of the holder (a container's launch hook, from before its launch to
                  its teardown) holds a shared flock: the reference count.  The holder exits once
                  it has had no member for IDLE seconds and can take this lock exclusively.
    start.lock    serializes starting a holder; holder.log: its own failures.

Lifetime: started on demand by the first container on any user-defined network (`ensure`), it
ends after the last one; a holder that died (kill -9) is replaced by the next `ensure`, and the
containers attached to the dead one lose their links (their veths went with its namespace).

Run as `python -m sandbox.network.holder DIR REPORT_FD [KEPT_FD]`: the first process forks the
holder; with a subordinate range the holder enters the kept user namespace (runtime/keeper.py, an
fd its starter passes as KEPT_FD: mapped with the range once, joined by every container with the
default mapping, so containers on user-defined networks and the others share one, as in podman),
else it makes its own (newuidmap/newgidmap run by the first process when the keeper could not
start; a single id otherwise).  The first process starts slirp4netns for its namespace and leaves;
the holder reports `ok` or `E\\0message\\0hint` on REPORT_FD.  pyroute2 is imported by the
holder only."""
import json
import os
import socket
import sys

from ..errors import SandboxError
from ..runtime import diaglog, flocks, paths

IDLE = 1.0
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
SLIRP_GATEWAY, SLIRP_DNS, SLIRP_GUEST = "10.0.2.2", "10.0.2.3", "10.0.2.100"
#: queries passed on and not yet answered: a container sending more must not take every fd
#: (and so the holder, with every container's network) down
MAX_PENDING = 256


class HolderError(SandboxError):
    """The holder cannot be started or refused a request (exit 125 on run, as Docker's daemon)."""


def holder_dir():
    d = os.path.join(paths.runtime_dir(), "net", "holder")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


# --- the client's side ------------------------------------------------------------------------------

class Ref:
    """A use of the holder: keeps it alive (a shared flock on users.lock) until `close()`."""

    def __init__(self, d, fd, pid):
        self.dir, self.fd, self.pid = d, fd, pid

    @property
    def userns(self):
        return f"/proc/{self.pid}/ns/user"

    def request(self, **req):
        return request(self.dir, req)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()


def running(d=None):
    """The live holder's pid, or None."""
    d = d or holder_dir()
    if not flocks.held(os.path.join(d, "holder.lock")):
        return None
    try:
        with open(os.path.join(d, "holder.pid")) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if os.path.exists(f"/proc/{pid}/ns/user") else None


def ensure():
    """A Ref on the running holder, started if there is none (or it died)."""
    d = holder_dir()
    users = flocks.hold(os.path.join(d, "users.lock"), shared=True, wait=True)
    try:
        start = flocks.hold(os.path.join(d, "start.lock"), wait=True)
        try:
            pid = running(d)
            if pid is None:
                _start(d)
                pid = running(d)
                if pid is None:
                    raise HolderError("the network holder reported ready but is not running",
                                      hint=f"see {os.path.join(d, 'holder.log')}")
        finally:
            os.close(start)
    except BaseException:
        os.close(users)
        raise
    return Ref(d, users, pid)


def call(d, name, data, timeout=30.0):
    """Send `data` to the unix socket `d/name` (reached through /proc/self/fd, so a long runtime
    path still fits a sockaddr), shut the write side (slirp4netns wants that) and read the reply
    to EOF.  ConnectionError/FileNotFoundError when nobody listens."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        fd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            s.connect(f"/proc/self/fd/{fd}/{name}")
        finally:
            os.close(fd)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def request(d, req, timeout=30.0):
    """Send one request to the holder; its reply (a dict).  HolderError when it answers with an
    error; ConnectionError when no holder listens."""
    data = call(d, "holder.sock", json.dumps(req).encode() + b"\n", timeout)
    if not data:
        raise HolderError("the network holder closed the connection without a reply",
                          hint=f"see {os.path.join(d, 'holder.log')}")
    rep = json.loads(data)
    if "error" in rep:
        raise HolderError(rep["error"], hint=rep.get("hint"))
    return rep


def try_request(req):
    """A request to the holder if one runs, else None (nothing is started)."""
    d = holder_dir()
    if running(d) is None:
        return None
    try:
        return request(d, req)
    except (ConnectionError, FileNotFoundError):
        return None


def _start(d):
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
    env["PYTHONPATH"] = pkg_parent
    env["PATH"] = env.get("PATH", "/usr/local/bin:/usr/bin:/bin") + ":/usr/sbin:/sbin"
    from ..runtime import keeper
    kept = keeper.default_fd()  # with a range: the holder enters the kept user namespace
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2), (os.POSIX_SPAWN_DUP2, w, 3)]
        argv = [sys.executable, "-m", "sandbox.network.holder", d, "3"]
        if kept is not None:
            actions.append((os.POSIX_SPAWN_DUP2, kept, 4))
            argv.append("4")
        pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    finally:
        os.close(w)
        if kept is not None:
            os.close(kept)
    try:
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        os.waitpid(pid, 0)  # the first process leaves once the holder is ready (or failed)
    reply = b"".join(chunks).decode(errors="replace")
    if reply.startswith("ok"):
        return
    _, _, rest = reply.partition("\0")
    msg, _, hint = rest.partition("\0")
    raise HolderError(msg or "the network holder failed to start", hint=hint or f"see {os.path.join(d, 'holder.log')}")


# --- the holder -------------------------------------------------------------------------------------

def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _check(rc, what):
    if rc != 0:
        import ctypes
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _read_byte(fd):
    b = os.read(fd, 1)
    if not b:
        raise EOFError
    return b


def _write_file(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _which(name):
    for d in (os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin").split(":"):
        p = os.path.join(d or ".", name)
        if d and os.access(p, os.X_OK) and not os.path.isdir(p):
            return p
    return None


def main(argv):
    """The first process: fork the holder, give it its id maps and slirp4netns, leave."""
    d, report_fd = argv[1], int(argv[2])
    kept = int(argv[3]) if len(argv) > 3 else -1  # the kept user namespace (runtime/keeper.py)
    from ..runtime import idmap
    mode, urange, grange, newuidmap, newgidmap = idmap.detect()
    if kept >= 0:
        mode = "kept"
    to_x_r, to_x_w = os.pipe()
    from_x_r, from_x_w = os.pipe()
    exit_r, exit_w = os.pipe()  # slirp4netns's --exit-fd: ends when the holder ends
    pid = os.fork()
    if pid == 0:
        os.close(to_x_w)
        os.close(from_x_r)
        os.close(exit_r)
        code = 1
        try:
            Holder(d, report_fd).run(to_x_r, from_x_w, exit_w, mode, kept)
            code = 0
        except BaseException as e:  # noqa: BLE001 - the reason goes to whoever waits for us
            _report(report_fd, e)
            import traceback
            _log(d, f"holder: {e!r}\n{traceback.format_exc()}")
        os._exit(code)
    os.close(to_x_r)
    os.close(from_x_w)
    os.close(exit_w)
    if kept >= 0:
        os.close(kept)
    try:
        _read_byte(from_x_r)  # the holder has its user namespace
        if mode == "helper":
            import subprocess
            uid, gid = os.geteuid(), os.getegid()
            for helper, own, rng in ((newuidmap, uid, urange), (newgidmap, gid, grange)):
                cp = subprocess.run([helper, str(pid), "0", str(own), "1", "1", str(rng[0]), str(idmap.SUBID_SIZE)],
                                    capture_output=True, text=True)
                if cp.returncode != 0:
                    raise HolderError(f"{os.path.basename(helper)} failed for the network holder: {cp.stderr.strip()}")
        os.write(to_x_w, b"m")
        _read_byte(from_x_r)  # its network namespace exists
        _start_slirp(pid, exit_r, os.path.join(d, "slirp.sock"))
        os.write(to_x_w, b"s")
    except EOFError:
        pass  # the holder failed and reports why itself
    except BaseException as e:  # noqa: BLE001
        _report(report_fd, e)
        _log(d, f"holder start: {e!r}")
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os._exit(1)
    os._exit(0)


def _start_slirp(pid, exit_r, api):
    """slirp4netns for the holder's namespace; its messages go to slirp4netns.log beside the
    socket (a pipe nobody reads after start-up would kill it with SIGPIPE on its next one)."""
    import select
    import subprocess
    slirp = _which("slirp4netns")
    if slirp is None:
        raise HolderError("slirp4netns is not installed: user-defined networks reach the outside through it",
                          hint="install the package slirp4netns")
    ready_r, ready_w = os.pipe()
    try:
        os.unlink(api)
    except FileNotFoundError:
        pass
    log = os.path.join(os.path.dirname(api), "slirp4netns.log")
    try:
        with open(log, "wb") as err:
            p = subprocess.Popen([slirp, "--configure", "--mtu=65520", "--disable-host-loopback",
                                  f"--api-socket={api}", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", str(pid),
                                  "tap0"], pass_fds=(ready_w, exit_r), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        os.close(ready_w)
        ready_w = -1
        rl, _, _ = select.select([ready_r], [], [], 10.0)
        if not rl or not os.read(ready_r, 1):
            p.kill()
            with open(log, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            tun = "" if os.access("/dev/net/tun", os.R_OK | os.W_OK) else \
                " (/dev/net/tun is not usable by this user: sudo chmod 0666 /dev/net/tun, as udev does)"
            raise HolderError(f"slirp4netns failed for the network holder: {lines[-1] if lines else 'not ready'}{tun}",
                              hint="check that /dev/net/tun opens for this user and slirp4netns works")
    finally:
        if ready_w >= 0:
            os.close(ready_w)
        os.close(ready_r)


def _report(fd, e):
    try:
        os.write(fd, f"E\0{e}\0{getattr(e, 'hint', None) or ''}".encode())
    except OSError:
        pass


def _log(d, msg):
    diaglog.append(os.path.join(d, "holder.log"), msg)


class Net:
    __slots__ = ("id", "name", "bridge", "subnet", "gateway", "internal", "dns", "members", "ifindex")


class Member:
    __slots__ = ("net", "cid", "name", "aliases", "ip", "mac", "pid", "pidfd", "host_if", "ifname", "fwds", "links")


class Holder:
    def __init__(self, d, report_fd):
        self.d, self.report_fd = d, report_fd
        self.nets = {}     # net id -> Net
        self.watch = {}    # fd -> ("listen"|"dns"|"pid"|"up", object)
        self.iptables = None

    # set-up
    def run(self, rfd, wfd, exit_w, mode, kept=-1):
        libc = _libc()
        uid, gid = os.geteuid(), os.getegid()  # unmapped (65534) once unshared
        if kept >= 0:
            # The kept user namespace, mapped with the range already: plain containers and
            # the containers of user-defined networks share it, as podman's share its pause
            # process's.
            _check(libc.setns(kept, CLONE_NEWUSER), "setns into the kept user namespace")
            os.close(kept)
        else:
            _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        os.write(wfd, b"u")
        _read_byte(rfd)  # id maps written (with a range)
        if mode == "single":
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"0 {uid} 1\n")
            _write_file("/proc/self/gid_map", f"0 {gid} 1\n")
        _check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS), "unshare(CLONE_NEWNET|CLONE_NEWNS)")
        _check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "make / private")  # MS_REC|MS_PRIVATE
        from pyroute2 import IPRoute
        self.IPRoute = IPRoute
        self.libc = libc
        self.own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        _write_file("/proc/sys/net/ipv4/ip_forward", "1")
        # Frames switched inside one bridge are not routed: keep them out of iptables where
        # br_netfilter is loaded (the rules below are about routing between networks).
        for f in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"):
            try:
                _write_file(f"/proc/sys/net/bridge/{f}", "0")
            except OSError:
                pass
        os.write(wfd, b"n")
        _read_byte(rfd)  # slirp4netns has configured tap0
        os.close(rfd)
        os.close(wfd)
        self.exit_w = exit_w  # kept open: slirp4netns lives as long as we do
        self.iptables = _which("iptables-nft") or _which("iptables")
        if self.iptables is None:
            raise HolderError("iptables is not installed: user-defined networks reach the outside through "
                              "slirp4netns with the kernel's NAT, which iptables-nft sets up",
                              hint="install the package iptables")
        self._ipt("-t", "nat", "-A", "POSTROUTING", "-o", "tap0", "-j", "MASQUERADE")
        self.lock = flocks.hold(os.path.join(self.d, "holder.lock"))
        sock_path = os.path.join(self.d, "holder.sock")
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        dfd = os.open(self.d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.listener.bind(f"/proc/self/fd/{dfd}/holder.sock")
        finally:
            os.close(dfd)
        self.listener.listen(64)
        self.watch[self.listener.fileno()] = ("listen", None)
        tmp = os.path.join(self.d, f"holder.pid.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(tmp, os.path.join(self.d, "holder.pid"))
        os.write(self.report_fd, b"ok")
        os.close(self.report_fd)
        self.report_fd = -1
        self.serve()

    def _ipt(self, *args):
        import subprocess
        cp = subprocess.run([self.iptables, "-w", *args], capture_output=True, text=True)
        if cp.returncode != 0:
            raise HolderError(f"iptables {' '.join(args)} failed in the network holder: {cp.stderr.strip()}")

    # the loop
    def serve(self):
        import select
        import time
        idle_since = time.monotonic()
        pending = {}  # upstream dns socket fd -> (socket, net dns socket, client address, deadline)
        while True:
            fds = list(self.watch) + list(pending)
            rl, _, _ = select.select(fds, [], [], IDLE / 2)
            now = time.monotonic()
            for fd in rl:
                if fd in pending:
                    up, dsock, addr, _ = pending.pop(fd)
                    try:
                        data = up.recv(4096)
                        dsock.sendto(data, addr)
                    except OSError:
                        pass
                    up.close()
                    continue
                kind, obj = self.watch.get(fd, (None, None))
                if kind == "listen":
                    self.accept()
                elif kind == "dns":
                    self.dns_query(obj, pending, now)
                elif kind == "pid":
                    self.member_gone(obj)
            for fd, (up, _, _, deadline) in list(pending.items()):
                if now > deadline:
                    up.close()
                    del pending[fd]
            if any(n.members for n in self.nets.values()):
                idle_since = now
            elif now - idle_since >= IDLE and self.try_exit():
                return

    def try_exit(self):
        """No member for IDLE seconds: leave if nobody holds users.lock (no launch in progress)."""
        import fcntl
        fd = os.open(os.path.join(self.d, "users.lock"), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        for name in ("holder.sock", "holder.pid", "slirp.sock"):
            try:
                os.unlink(os.path.join(self.d, name))
            except FileNotFoundError:
                pass
        return True  # the locks go with the process

    def accept(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10.0)
            data = b""
            try:
                while not data.endswith(b"\n"):
                    b = conn.recv(65536)
                    if not b:
                        break
                    data += b
                req = json.loads(data)
                op = getattr(self, "op_" + str(req.get("op")), None)
                if op is None:
                    raise HolderError(f"unknown request {req.get('op')!r}")
                rep = op(req)
            except SandboxError as e:
                rep = {"error": str(e), "hint": e.hint}
            except ValueError as e:
                rep = {"error": str(e)}
            except Exception as e:  # noqa: BLE001 - one failed request must not end the holder
                _log(self.d, f"request failed: {e!r}")
                rep = {"error": f"the network holder failed: {e}"}
            try:
                conn.sendall(json.dumps(rep).encode() + b"\n")
            except OSError:
                pass

    # networks
    def net(self, spec):
        from . import ipam
        n = self.nets.get(spec["id"])
        if n is not None:
            return n
        n = Net()
        n.id, n.name, n.internal = spec["id"], spec["name"], bool(spec["internal"])
        n.subnet = ipam.parse_cidr(spec["subnet"])
        for other in list(self.nets.values()):  # a network of another sbx root (or one removed meanwhile)
            if ipam.overlaps(other.subnet, n.subnet):
                if other.members:
                    raise HolderError(f"subnet {spec['subnet']} of network {n.name} overlaps network {other.name}'s, "
                                      "which has running containers in this user's network holder",
                                      hint="give one of them another --subnet")
                self.drop_net(other)
        n.gateway = ipam.to_int(spec["gateway"])
        n.bridge = "sbx-" + n.id[:8]
        n.members = {}
        with self.IPRoute() as ipr:
            if not ipr.link_lookup(ifname=n.bridge):
                ipr.link("add", ifname=n.bridge, kind="bridge")
            idx = ipr.link_lookup(ifname=n.bridge)[0]
            # A MAC of its own: a bridge otherwise takes its lowest port's, which changes as
            # containers come and go, and members' ARP entries for the gateway go stale.
            ipr.link("set", index=idx, address=ipam.mac_for(n.gateway))
            ipr.flush_addr(index=idx)
            ipr.addr("add", index=idx, address=spec["gateway"], prefixlen=n.subnet[1])
            ipr.link("set", index=idx, state="up")
            n.ifindex = idx
        if n.internal:
            # No way out: not forwarded at all (the kernel's per-device switch), and nothing
            # that enters the bridge is routed anywhere (iptables, should a member add a route).
            _write_file(f"/proc/sys/net/ipv4/conf/{n.bridge}/forwarding", "0")
            self._ipt("-A", "FORWARD", "-i", n.bridge, "!", "-o", n.bridge, "-j", "DROP")
            self._ipt("-A", "FORWARD", "-o", n.bridge, "!", "-i", n.bridge, "-j", "DROP")
        else:
            # Out through tap0 only: never into another network's bridge.
            self._ipt("-A", "FORWARD", "-i", n.bridge, "!", "-o", "tap0", "-j", "DROP")
            self._ipt("-A", "FORWARD", "-o", n.bridge, "!", "-i", "tap0", "-j", "DROP")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        s.bind((spec["gateway"], 53))
        n.dns = s
        self.watch[s.fileno()] = ("dns", n)
        self.nets[n.id] = n
        return n

    def drop_net(self, n):
        for m in list(n.members.values()):
            self.remove_member(m)
        self.watch.pop(n.dns.fileno(), None)
        n.dns.close()
        with self.IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=n.bridge):
                ipr.link("del", index=idx)
        other = n.bridge if n.internal else "tap0"
        for r in (("-D", "FORWARD", "-i", n.bridge, "!", "-o", other, "-j", "DROP"),
                  ("-D", "FORWARD", "-o", n.bridge, "!", "-i", other, "-j", "DROP")):
            try:
                self._ipt(*r)
            except HolderError:
                pass
        del self.nets[n.id]

    # requests
    def op_attach(self, req):
        from . import ipam
        n = self.net(req["net"])
        pid, cid = int(req["pid"]), req["cid"]
        old = n.members.get(cid)
        if old is not None:
            if old.pid == pid:
                raise HolderError(f"container {req.get('name') or cid[:12]} is already connected to network {n.name}")
            self.remove_member(old)
        pidfd = os.pidfd_open(pid)
        try:
            try:
                ours = os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino
            except PermissionError:  # another user namespace's process: not ours to look into
                ours = False
            if not ours:
                raise HolderError(f"container {req.get('name') or cid[:12]} does not share the network holder's user "
                                  "namespace, so no link can be moved into its network namespace",
                                  hint="only containers started on a user-defined network (sbx run --network NAME) "
                                       "can be connected to another one")
            if req.get("connect") and not any(x.pid == pid for net in self.nets.values() for x in net.members.values()):
                # With a range every container shares the kept user namespace with the holder,
                # which could wire any of them; Docker connects only containers on networks.
                raise HolderError(f"container {req.get('name') or cid[:12]} was not started on a user-defined "
                                  "network, so the network holder does not wire it",
                                  hint="only containers started on a user-defined network (sbx run --network NAME) "
                                       "can be connected to another one")
            used = {m.ip for m in n.members.values()}
            try:
                ip = ipam.pick(n.subnet, used, n.gateway, req.get("ip"))
            except ValueError as e:
                raise HolderError(str(e), hint="choose another --ip, or leave it out") from None
            mac = req.get("mac") or ipam.mac_for(ip)
            if req.get("mac") and any(m.mac == mac for m in n.members.values()):
                raise HolderError(f"MAC address {mac} is already in use on network {n.name}")
            m = Member()
            m.net, m.cid, m.pid, m.pidfd, m.ip, m.mac = n, cid, pid, pidfd, ip, mac
            m.name = req.get("name") or ""
            m.aliases = [a.lower() for a in req.get("aliases") or ()]
            m.links = {k["alias"].lower(): k["cid"] for k in req.get("links") or ()}  # --link: its names only
            m.host_if = f"v{cid[:6]}{n.id[:6]}"
            m.fwds = []
            self.wire(n, m)
            try:
                for p in req.get("ports") or ():
                    self.publish(m, p)
            except BaseException:
                self.unpublish(m)
                self.unwire(m)
                raise
        except BaseException:
            os.close(pidfd)
            raise
        n.members[cid] = m
        self.watch[pidfd] = ("pid", m)
        return {"ip": ipam.to_text(ip), "prefix": n.subnet[1], "gateway": ipam.to_text(n.gateway), "mac": mac,
                "ifname": m.ifname, "network_id": n.id}

    def wire(self, n, m):
        """A veth pair: one end on the network's bridge here, the other moved into the
        container's network namespace, named ethN, addressed, with the default route through
        the gateway (the first network's, unless internal)."""
        from . import ipam
        peer = f"c{m.cid[:6]}{n.id[:6]}"
        with self.IPRoute() as ipr:
            for name in (m.host_if, peer):
                for idx in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=idx)
            ipr.link("add", ifname=m.host_if, kind="veth", peer=peer)
            hidx = ipr.link_lookup(ifname=m.host_if)[0]
            pidx = ipr.link_lookup(ifname=peer)[0]
            try:
                ipr.link("set", index=hidx, master=n.ifindex, state="up")
                ipr.link("set", index=pidx, net_ns_pid=m.pid)
            except BaseException:
                ipr.link("del", index=hidx)
                raise
        try:
            with self.netlink_in(m.pid) as c:
                names = {link.get_attr("IFLA_IFNAME") for link in c.get_links()}
                i = 0
                while f"eth{i}" in names:
                    i += 1
                m.ifname = f"eth{i}"
                idx = c.link_lookup(ifname=peer)[0]
                c.link("set", index=idx, ifname=m.ifname, address=m.mac)
                c.addr("add", index=idx, address=ipam.to_text(m.ip), prefixlen=n.subnet[1])
                c.link("set", index=idx, state="up")
                lo = c.link_lookup(ifname="lo")
                if lo:
                    c.link("set", index=lo[0], state="up")
                if not n.internal and not c.get_default_routes(family=socket.AF_INET):
                    c.route("add", dst="0.0.0.0/0", gateway=ipam.to_text(n.gateway))
        except BaseException:
            self.unwire(m)
            raise

    def netlink_in(self, pid):
        """An IPRoute whose socket lives in `pid`'s network namespace: made while this thread
        is in it (setns, and back), not through pyroute2's forked helper (~10x slower)."""
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(self.libc.setns(fd, CLONE_NEWNET), "setns into the container's network namespace")
            try:
                return self.IPRoute()
            finally:
                _check(self.libc.setns(self.own_netns, CLONE_NEWNET), "setns back into the holder's")
        finally:
            os.close(fd)

    def unwire(self, m):
        with self.IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=m.host_if):
                try:
                    ipr.link("del", index=idx)
                except Exception:  # noqa: BLE001 - gone with the container's namespace
                    pass

    def publish(self, m, p):
        """Host HOST_IP:HOST_PORT -> container port: slirp4netns forwards the host's port to a
        port of ours on tap0 (its API, add_hostfwd), and the kernel's DNAT sends that on to the
        container's address (iptables-nft, PREROUTING on tap0)."""
        from . import ipam
        kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((SLIRP_GUEST, 0))
            guest_port = probe.getsockname()[1]  # the kernel's free pick, on our side of tap0
        rule = ("PREROUTING", "-i", "tap0", "-p", p["proto"], "--dport", str(guest_port), "-j", "DNAT",
                "--to-destination", f"{ipam.to_text(m.ip)}:{p['container_port']}")
        self._ipt("-t", "nat", "-A", *rule)
        m.fwds.append(("ipt", rule))
        rep = self._slirp({"execute": "add_hostfwd", "arguments": {
            "proto": p["proto"], "host_addr": p["host_ip"] or "0.0.0.0", "host_port": int(p["host_port"]),
            "guest_addr": SLIRP_GUEST, "guest_port": guest_port}})
        if "return" not in rep:
            why = (rep.get("error") or {}).get("desc") or "no reply from slirp4netns"
            raise HolderError(f"cannot publish {p['host_ip'] or '0.0.0.0'}:{p['host_port']}/{p['proto']} -> "
                              f"{p['container_port']}: {why}",
                              hint="another program may hold that host port: pick another one, or let sbx choose "
                                   f"(-p {p['container_port']})")
        m.fwds.append(("slirp", rep["return"].get("id")))

    def unpublish(self, m):
        for kind, what in reversed(m.fwds):
            try:
                if kind == "ipt":
                    self._ipt("-t", "nat", "-D", *what)
                else:
                    self._slirp({"execute": "remove_hostfwd", "arguments": {"id": what}})
            except (OSError, HolderError, ValueError) as e:
                _log(self.d, f"unpublish {what}: {e!r}")
        m.fwds = []

    def _slirp(self, req):
        """One request to slirp4netns's API socket."""
        return json.loads(call(self.d, "slirp.sock", json.dumps(req).encode(), 10.0) or b"{}")

    def remove_member(self, m):
        self.unpublish(m)
        if m.net.members.get(m.cid) is m:
            del m.net.members[m.cid]
        if self.watch.pop(m.pidfd, None) is not None:
            os.close(m.pidfd)
        self.unwire(m)

    def member_gone(self, m):
        self.remove_member(m)

    def op_detach(self, req):
        n = self.nets.get(req["net_id"])
        m = n.members.get(req["cid"]) if n else None
        if m is None or (req.get("pid") and m.pid != int(req["pid"])):
            if req.get("strict"):
                raise HolderError(f"container {req.get('name') or req['cid'][:12]} is not connected to network "
                                  f"{req.get('net_name') or req['net_id'][:12]}")
            return {"detached": False}
        self.remove_member(m)
        return {"detached": True}

    def op_members(self, req):
        from . import ipam
        out = {}
        for n in self.nets.values():
            out[n.id] = {m.cid: {"Name": m.name, "IPv4Address": f"{ipam.to_text(m.ip)}/{n.subnet[1]}",
                                 "MacAddress": m.mac, "IPv6Address": "", "Aliases": list(m.aliases),
                                 "Pid": m.pid} for m in n.members.values()}
        return {"networks": out}

    def op_drop(self, req):
        n = self.nets.get(req["net_id"])
        if n is None:
            return {"dropped": False}
        if n.members:
            raise HolderError(f"network {n.name} has active endpoints", hint="disconnect or stop its containers first")
        self.drop_net(n)
        return {"dropped": True}

    def op_ping(self, req):
        return {"pid": os.getpid()}

    # names
    def dns_query(self, n, pending, now):
        from . import dns
        try:
            data, addr = n.dns.recvfrom(4096)
        except OSError:
            return
        q = dns.question(data)
        if q is None:
            return
        name = q[1]
        # The asker's networks, this one first: a container connected to several resolves the
        # members of each (Docker's embedded DNS does the same).
        from . import ipam
        src = ipam.to_int(addr[0])
        me = next((m for m in n.members.values() if m.ip == src), None)
        asker = me.cid if me else None
        nets = [n] + [o for o in self.nets.values() if o is not n and asker in o.members]
        linked = me.links.get(name) if me else None  # this asker's --link alias: that container first
        hits = []
        for net in nets if linked else ():
            hits = [m.ip for m in net.members.values() if m.cid == linked]
            if hits:
                break
        for net in nets if not hits else ():
            hits = [m.ip for m in net.members.values()
                    if name and (name == m.name.lower() or name in m.aliases or name == m.cid[:12] or name == m.cid)]
            if hits:
                break
        if hits:
            n.dns.sendto(dns.reply(data, q, hits if q[2] == dns.A else ()), addr)
            return
        if n.internal or "." not in name and name:
            n.dns.sendto(dns.reply(data, q, rcode=dns.NXDOMAIN), addr)
            return
        try:
            if len(pending) >= MAX_PENDING:
                raise OSError("too many queries waiting")
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError:
            n.dns.sendto(dns.reply(data, q, rcode=dns.SERVFAIL), addr)
            return
        try:
            up.sendto(data, (SLIRP_DNS, 53))
        except OSError:
            up.close()
            n.dns.sendto(dns.reply(data, q, rcode=dns.SERVFAIL), addr)
            return
        pending[up.fileno()] = (up, n.dns, addr, now + 5.0)


if __name__ == "__main__":
    main(sys.argv)
