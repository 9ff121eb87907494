"""The kept user namespace (sandbox/runtime/keeper.py): with a subuid range, sandboxes with the
default mapping join one user namespace kept by a long-lived process instead of mapping one each
with newuidmap/newgidmap; everything else about them stays their own."""

import os
import signal
import subprocess
import sys
import time

import pytest

import sandbox
from sbxtest import inspect_container, ok, parse_idmap, sbx, subid_range, wait_for

pytestmark = pytest.mark.subuid

NS = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")
SHOW_NS = "for n in " + " ".join(NS) + "; do readlink /proc/self/ns/$n; done"


def keeper_dir():
    from sandbox.runtime import keeper
    return keeper.keeper_dir()


def keeper_pid():
    with open(os.path.join(keeper_dir(), "keeper.pid")) as f:
        return int(f.read().split()[0])


def ns_of(pid, kind="user"):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def run_out(argv, rootfs, **kw):
    r = sandbox.run(argv, rootfs=rootfs, capture_output=True, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def range_maps():
    (us, _), (gs, _) = subid_range("/etc/subuid"), subid_range("/etc/subgid")
    return [(0, os.getuid(), 1), (1, us, 65536)], [(0, os.getgid(), 1), (1, gs, 65536)]


def test_concurrent_sandboxes_share_only_the_user_namespace(busybox_rootfs):
    """Two sandboxes at once: the same (kept) user namespace, mapped with the full range, and
    every other namespace distinct, and distinct from the caller's."""
    script = SHOW_NS + "; echo ==; cat /proc/self/uid_map; echo ==; cat /proc/self/gid_map; read x"
    ps = [sandbox.Popen(["sh", "-c", script], rootfs=busybox_rootfs, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE) for _ in range(2)]
    try:
        outs = []
        for p in ps:
            lines = []
            while len(lines) < len(NS) + 6:  # wait until both run at the same time
                line = p.stdout.readline().decode()
                assert line, "the sandbox ended early"
                lines.append(line)
            outs.append(lines)
    finally:
        for p in ps:
            p.communicate(b"\n", timeout=30)
    a, b = ([line.strip() for line in o[:len(NS)]] for o in outs)
    assert a[0] == b[0] == ns_of(keeper_pid()), "both are in the keeper's user namespace"
    assert a[0] != ns_of("self")
    for kind, x, y, mine in zip(NS[1:], a[1:], b[1:], (ns_of("self", k) for k in NS[1:])):
        assert x != y, f"two sandboxes share a {kind} namespace"
        assert mine not in (x, y), f"a sandbox shares the caller's {kind} namespace"
    for o in outs:
        text = "".join(o[len(NS):])
        _, umap, gmap = text.split("==\n")
        assert (parse_idmap(umap), parse_idmap(gmap)) == range_maps()
    for p in ps:
        assert p.returncode == 0


def test_sandboxes_cannot_see_or_signal_each_other_or_the_keeper(busybox_rootfs):
    """A sleeping sandbox's processes and the keeper are not in another sandbox's /proc, and a
    kill of every pid it can name leaves the first one running."""
    other = sandbox.Popen(["sleep", "60"], rootfs=busybox_rootfs)
    try:
        kpid = keeper_pid()
        out = run_out(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ls -d /proc/[0-9]*; "
                       "kill -9 -1; echo killed $?"], busybox_rootfs)
        assert "sleep" not in out and "sbx-userns-keeper" not in out, out
        pids = sorted(int(p[6:]) for p in out.split() if p.startswith("/proc/") and p[6:].isdigit())
        assert pids and pids[0] == 1 and len(pids) <= 4, out  # sh, and what it runs: its own
        assert other.poll() is None, "a sandbox killed another one's process"
        assert os.path.exists(f"/proc/{kpid}") and ns_of(kpid) == ns_of(other.pid)
    finally:
        other.kill()
        other.wait()


def test_the_keeper_is_nobodys_child_and_has_its_own_session(busybox_rootfs):
    run_out(["true"], busybox_rootfs)
    pid = keeper_pid()
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    ppid, sid = int(fields[1]), int(fields[3])
    assert ppid != os.getpid() and sid == pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sbx-userns-keeper"


def test_a_killed_keeper_is_replaced(busybox_rootfs):
    """kill -9 of the keeper: this process's next sandbox still starts, and a new process finds
    the keeper gone and starts another, which its sandboxes join."""
    run_out(["true"], busybox_rootfs)
    old = keeper_pid()
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: _is_zombie(old), 10)
    assert run_out(["echo", "hi"], busybox_rootfs) == "hi\n"
    code = ("import sandbox, os\n"
            "p = sandbox.Popen(['sh', '-c', 'readlink /proc/self/ns/user'], rootfs=%r, stdout=-1)\n"
            "print(p.communicate()[0].decode().strip()); print(p.returncode)\n" % str(busybox_rootfs))
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    userns, rc = cp.stdout.split()
    assert rc == "0"
    new = keeper_pid()
    assert new != old and userns == ns_of(new)


def _forge_pid_file(pid, start):
    with open(os.path.join(keeper_dir(), "keeper.pid"), "w") as f:
        f.write(f"{pid} {start}\n")


def _start_time(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


@pytest.mark.parametrize("case", ["recycled", "other-maps"])
def test_a_stale_pid_file_never_leads_into_another_namespace(busybox_rootfs, case):
    """keeper.pid naming another process of ours (a sandbox mapped like the keeper, whose start
    time differs; or one with other maps, start time right) is not joined: a new keeper is."""
    run_out(["true"], busybox_rootfs)
    old = keeper_pid()
    if case == "recycled":
        # Mapped exactly like the keeper (its own namespace: unconfined sandboxes do not join).
        victim = sandbox.Popen(["sleep", "60"], rootfs=busybox_rootfs, seccomp="unconfined")
        start = _start_time(old)
    else:
        victim = sandbox.Popen(["sleep", "60"], rootfs=busybox_rootfs, userns="single")
        start = None
    try:
        assert wait_for(lambda: ns_of(victim.pid) != ns_of("self"), 10)
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: _is_zombie(old), 10)
        _forge_pid_file(victim.pid, start if start is not None else _start_time(victim.pid))
        code = ("import sandbox\n"
                "print(sandbox.run(['readlink', '/proc/self/ns/user'], rootfs=%r, capture_output=True,"
                " check=True).stdout.decode().strip())\n" % str(busybox_rootfs))
        cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.strip() != ns_of(victim.pid)
        new = keeper_pid()
        assert new not in (old, victim.pid) and cp.stdout.strip() == ns_of(new)
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("opts", [{"userns": "single"}, {"seccomp": "unconfined"}],
                         ids=["single", "unconfined"])
def test_other_launches_keep_a_namespace_of_their_own(busybox_rootfs, opts):
    """Single-id sandboxes, and sandboxes without the default seccomp profile (which keeps the
    kept namespace's shared user keyring out of reach), get a user namespace of their own."""
    kept = run_out(["readlink", "/proc/self/ns/user"], busybox_rootfs)
    own = [run_out(["readlink", "/proc/self/ns/user"], busybox_rootfs, **opts) for _ in range(2)]
    assert kept not in own and own[0] != own[1]


ADD_KEY = ("import ctypes, os\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "r = libc.syscall(248, b'user', b'sbx-test', b'secret', 6, -4)\n"  # add_key(..., @u)
           "print(os.readlink('/proc/self/ns/user'), r, ctypes.get_errno())\n")


def test_the_shared_user_keyring_is_out_of_reach():
    """The sandboxes of the kept namespace share its user keyring; the default seccomp profile
    (the only one that joins) denies add_key, so nothing can be left there for another."""
    out = run_out(["/usr/bin/python3", "-S", "-c", ADD_KEY], "/").split()
    assert out[0] == ns_of(keeper_pid())
    assert out[1:] == ["-1", "1"], "add_key to the user keyring was not refused with EPERM"


def test_a_sandbox_dies_with_its_launcher_in_the_kept_namespace(busybox_rootfs, tmp_path):
    """The parent-death guarantee holds on the kept path: kill -9 of the launching process ends
    the sandbox (and nothing of it lingers in the kept namespace)."""
    code = ("import sandbox, sys\n"
            "p = sandbox.Popen(['sh', '-c', 'echo $$; exec sleep 60'], rootfs=%r, stdout=-1)\n"
            "sys.stdout.write(str(p.pid) + '\\n'); sys.stdout.flush()\n"
            "p.wait()\n" % str(busybox_rootfs))
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(launcher.stdout.readline())
        assert ns_of(pid) == ns_of(keeper_pid())
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), 10), \
            "the sandbox outlived its launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def test_stores_with_runtime_roots_of_their_own_share_the_keeper(busybox_rootfs, tmp_path):
    """`sbx --runroot` and another XDG_RUNTIME_DIR join the user's one kept namespace: the
    namespace is the user's, and no keeper is left behind per runtime root."""
    kept = run_out(["readlink", "/proc/self/ns/user"], busybox_rootfs).strip()
    run = tmp_path / "run"
    out = ok(sbx("--runroot", str(run), "run", "--rm", "--rootfs", busybox_rootfs, "readlink", "/proc/self/ns/user"))
    assert out.strip() == kept == ns_of(keeper_pid())
    assert not (run / "userns").exists()
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    out = ok(sbx("run", "--rm", "--rootfs", busybox_rootfs, "readlink", "/proc/self/ns/user",
                 env={**os.environ, "XDG_RUNTIME_DIR": str(xdg)}))
    assert out.strip() == kept and not (xdg / "sbx" / "userns").exists()


def test_a_user_network_container_shares_the_kept_namespace(busybox_rootfs, tmp_path, monkeypatch):
    """The network holder enters the kept user namespace: a container on a user-defined network
    and a plain one share it (podman's rootless-netns and pause process do the same), each with
    a network namespace of its own."""
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("SBX_RUNROOT", str(run))
    ok(sbx("network", "create", "kept"))
    try:
        cid = ok(sbx("run", "-d", "--network", "kept", "--rootfs", busybox_rootfs, "sleep", "60", timeout=60)).strip()
        pid = inspect_container(cid)["State"]["Pid"]
        plain = run_out(["sh", "-c", "readlink /proc/self/ns/user; readlink /proc/self/ns/net"], busybox_rootfs).split()
        holder = int((run / "net" / "holder" / "holder.pid").read_text().split()[0])
        assert ns_of(pid) == plain[0] == ns_of(keeper_pid()) == ns_of(holder)
        assert ns_of(pid, "net") not in (plain[1], ns_of(holder, "net"))
    finally:
        for c in sbx("ps", "-a", "-q").stdout.split():
            sbx("rm", "-f", c)
        sbx("network", "rm", "kept")


def test_a_sandbox_of_another_user_leaves_the_caller_as_it_was(busybox_rootfs):
    """Switching to a user inside (-u 1000) must not mark the caller non-dumpable (its /proc/self
    would turn root's and its next single-id sandbox could not map itself): the kept launch
    shares the caller's memory only for sandboxes that stay root."""
    for user in ("1000:1000", "app", None):
        out = run_out(["sh", "-c", "id -u; readlink /proc/self/ns/user"], busybox_rootfs, user=user).split()
        assert out == ["1000" if user else "0", ns_of(keeper_pid())]
        assert os.stat("/proc/self/fd").st_uid == os.getuid(), f"the caller turned non-dumpable after -u {user}"
    assert run_out(["cat", "/proc/self/uid_map"], busybox_rootfs, userns="single", init=True).split() == \
        ["0", str(os.getuid()), "1"]


def test_system_reset_ends_the_keeper(busybox_rootfs, tmp_path):
    """`sbx system reset` ends the keeper (podman's system migrate ends its pause process); the
    next sandbox starts another and joins it."""
    run_out(["true"], busybox_rootfs)
    old = keeper_pid()
    ok(sbx("--root", str(tmp_path / "data"), "system", "reset", "-f"))
    assert wait_for(lambda: _is_zombie(old), 10), "the keeper outlived system reset"
    userns = run_out(["readlink", "/proc/self/ns/user"], busybox_rootfs).strip()
    assert keeper_pid() != old and userns == ns_of(keeper_pid())


# --- network namespaces made ahead by the keeper --------------------------------------------------

NET_PROBE = "readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate; ls /proc/self/fd | tr '\\n' ' '"


def test_every_sandbox_gets_a_fresh_network_namespace_of_its_own(busybox_rootfs):
    """Sandboxes take their network namespace from the keeper's pool: no two running sandboxes
    share one (nor see each other's sockets), each has its loopback up, no fd of it (or of the
    keeper's socket) reaches the sandbox, and the keeper keeps none it handed out.  (A namespace
    number is reused by the kernel once its namespace is gone, so only live ones are compared.)"""
    for _ in range(3):
        out = run_out(["sh", "-c", NET_PROBE], busybox_rootfs).split("\n")
        assert out[1] == "unknown", out  # lo is up (a down lo says "down")
        assert out[2].split() in (["0", "1", "2"], ["0", "1", "2", "3"]), out
    # each listens on a port of its own, then counts the listeners it can see: one, its own
    procs = [sandbox.Popen(["sh", "-c", "nc -l -p 70%d0 & sleep 1; netstat -ltn | grep -c ':70[0-9]0 '; " % i
                            + NET_PROBE + "; read x"], rootfs=busybox_rootfs, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE) for i in range(3)]
    try:
        time.sleep(0.5)
        kpid = keeper_pid()
        held = [os.readlink(f"/proc/{kpid}/fd/{fd}") for fd in os.listdir(f"/proc/{kpid}/fd")]
        nets = [ns_of(p.pid, "net") for p in procs]
        assert len(set(nets)) == 3, nets
        assert not set(nets) & set(held), "a namespace handed out stays with the keeper"
        assert not any(h.startswith("pipe:") for h in held), held
    finally:
        outs = [p.communicate(b"\n", timeout=30)[0].decode().split("\n") for p in procs]
    assert [o[0] for o in outs] == ["1", "1", "1"], outs


def test_a_namespace_fetched_ahead_is_never_used_by_a_forked_child(busybox_rootfs):
    """A launch fetches the next launch's namespace while its sandbox starts; a fork of that
    process must not use the same one as its parent."""
    code = ("import os, sandbox\n"
            "R = %r\n"
            "def net():\n"
            "    return sandbox.run(['readlink', '/proc/self/ns/net'], rootfs=R, capture_output=True).stdout.decode().strip()\n"
            "first = net()\n"
            "r, w = os.pipe()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.write(w, net().encode()); os._exit(0)\n"
            "os.close(w); child = os.read(r, 100).decode(); os.waitpid(pid, 0)\n"
            "print(first, net(), child)\n" % str(busybox_rootfs))
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    nets = cp.stdout.split()
    # (the first one's number may come back: it is gone; the parent's fetched-ahead namespace
    # lived all along, so the child's differs from it unless it is the same one)
    assert len(nets) == 3 and nets[1] != nets[2], cp.stdout


def test_a_network_namespace_is_taken_only_from_the_keeper(busybox_rootfs, tmp_path):
    """Another process of ours answering on a keeper's socket path is not believed: its pid is
    not the keeper's."""
    import _socket
    import threading
    from sandbox.runtime import keeper
    fresh_keeper(busybox_rootfs)
    k = keeper._current()
    fake = keeper.Kept(k.nsfd, k.pidfd, k.pid, str(tmp_path))  # the real keeper's pid, our socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    s.bind(keeper.netns_address(str(tmp_path), os.fstat(k.nsfd).st_ino))
    s.listen(1)
    mine = os.open("/proc/self/ns/net", os.O_RDONLY)

    def answer():
        fd, _ = s._accept()
        c = _socket.socket(fileno=fd)
        try:
            c.sendmsg([b"n"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, mine.to_bytes(4, sys.byteorder))])
        except BrokenPipeError:
            pass  # the client hung up on us: as it should
        c.close()
    t = threading.Thread(target=answer)
    t.start()
    try:
        assert keeper.pooled_netns(fake) is None
    finally:
        t.join(10)
        s.close()
        os.close(mine)
    got = keeper.pooled_netns(k)  # the real one answers with a namespace of the kept user namespace
    assert got is not None
    os.close(got)


def fresh_keeper(rootfs):
    """The pid of a keeper started by this code (one that ran before may be of an older sbx)."""
    run_out(["true"], rootfs)
    old = keeper_pid()
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: _is_zombie(old), 10)
    run_out(["true"], rootfs)
    new = keeper_pid()
    # serving once it has left for a network namespace of its own (it listens before that)
    assert wait_for(lambda: ns_of(new, "net") != ns_of("self", "net"), 10)
    return new


HOSTILE_KEEPER = r'''
import os, sys, _socket
d = sys.argv[1]
with open("/proc/self/stat", "rb") as f:
    start = int(f.read().rsplit(b")", 1)[1].split()[19])
s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
s.bind(d + "/x.sock")
s.listen(8)
os.rename(d + "/x.sock", d + "/netns.sock")
with open(d + "/x.pid", "w") as f:
    f.write(f"{os.getpid()} {start}\n")
os.rename(d + "/x.pid", d + "/keeper.pid")
net = os.open("/proc/self/ns/net", os.O_RDONLY)
print(os.readlink("/proc/self/ns/net"), flush=True)
while True:
    fd, _ = s._accept()
    c = _socket.socket(fileno=fd)
    try:
        c.sendmsg([b"n"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, net.to_bytes(4, sys.byteorder))])
    except OSError:
        pass
    c.close()
'''


def test_a_sandbox_posing_as_the_keeper_hands_out_no_network_namespace(busybox_rootfs):
    """A sandbox of ours in the kept user namespace that can write the keeper's directory (it
    is mounted in) and knows its host pid (it shares the host's pid namespace) names itself in
    keeper.pid and answers on netns.sock with its own network namespace.  It passes the checks
    of a pid file (start time, owner, maps: it is in the kept namespace) and of a pooled
    namespace (peer pid, owner), but a later sandbox must still not land in its network."""
    old, d = fresh_keeper(busybox_rootfs), keeper_dir()
    hostile = sandbox.Popen(["/usr/bin/python3", "-S", "-c", HOSTILE_KEEPER, d], rootfs="/", volumes=[(d, d)],
                            namespaces=("user", "mount", "ipc", "uts", "network", "cgroup"),
                            stdout=subprocess.PIPE)
    try:
        its_net = hostile.stdout.readline().decode().strip()
        assert its_net.startswith("net:") and keeper_pid() == hostile.pid
        assert ns_of(hostile.pid) == ns_of(old), "the hostile sandbox is in the kept namespace"
        code = ("import sandbox\n"
                "print(sandbox.run(['sh', '-c', 'readlink /proc/self/ns/net; readlink /proc/self/ns/user'],"
                " rootfs=%r, capture_output=True, check=True).stdout.decode())\n" % str(busybox_rootfs))
        cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        net, user = cp.stdout.split()
        assert net != its_net, "a sandbox was handed the hostile sandbox's network namespace"
        new = keeper_pid()
        assert new not in (old, hostile.pid) and user == ns_of(new)
    finally:
        hostile.kill()
        hostile.wait()
    assert wait_for(lambda: _is_zombie(old), 10), "the keeper the forged pid file hid stayed behind"


def test_system_reset_ends_only_a_keeper(busybox_rootfs, tmp_path):
    """keeper.pid names another process of ours, with its right start time (anyone who can
    write /tmp/sbx-UID can: a sandbox with /tmp mounted).  `sbx system reset` must not kill it;
    and the keeper keeper.pid no longer names (which nothing can find, stop or reuse) ends by
    itself instead of staying behind."""
    real = fresh_keeper(busybox_rootfs)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        _forge_pid_file(bystander.pid, _start_time(bystander.pid))
        assert wait_for(lambda: _is_zombie(real), 10), "a keeper no longer named in keeper.pid stayed behind"
        ok(sbx("--root", str(tmp_path / "data"), "system", "reset", "-f"))
        time.sleep(0.2)
        assert bystander.poll() is None, "system reset killed a process that is not the keeper"
    finally:
        bystander.kill()
        bystander.wait()
        if not _is_zombie(real):
            os.kill(real, signal.SIGKILL)
    userns = run_out(["readlink", "/proc/self/ns/user"], busybox_rootfs).strip()
    assert keeper_pid() != real and userns == ns_of(keeper_pid())


def test_a_keeper_whose_pid_file_is_removed_ends(busybox_rootfs):
    """(`sbx system reset` kills the keeper it finds, then removes keeper.pid: a keeper another
    process started in between would be left running, unfindable.)"""
    real = fresh_keeper(busybox_rootfs)
    os.unlink(os.path.join(keeper_dir(), "keeper.pid"))
    try:
        assert wait_for(lambda: _is_zombie(real), 10), "a keeper without its pid file stayed behind"
    finally:
        if not _is_zombie(real):
            os.kill(real, signal.SIGKILL)
    assert run_out(["readlink", "/proc/self/ns/user"], busybox_rootfs).strip() == ns_of(keeper_pid())


TAKER = r'''
import sys, _socket
got = 0
for addr in sys.argv[1:]:
    for _ in range(5):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        s.settimeout(1)
        try:
            s.connect(addr.replace("@", "\0", 1))
            got += len(s.recvmsg(1, _socket.CMSG_SPACE(4))[1])
        except OSError:
            pass
        s.close()
print(got)
'''


def test_a_sandbox_is_handed_no_network_namespace(busybox_rootfs):
    """A sandbox (root in it is the caller's uid) with the keeper's directory mounted, knowing
    every name the keeper listens on, gets no network namespace from it: else it could take them
    by the thousand, made and charged outside its own limits (memory, CPU, pids), and exhaust
    the namespaces the kept user namespace may hold for every other sandbox."""
    from sandbox.runtime import keeper
    fresh_keeper(busybox_rootfs)
    k, d = keeper._current(), keeper_dir()
    names = [os.path.join(d, "netns.sock"), "@" + keeper.netns_address(d, os.fstat(k.nsfd).st_ino)[1:]]
    got = keeper.pooled_netns(k)
    assert got is not None, "the launching process is handed one"
    os.close(got)
    out = run_out(["/usr/bin/python3", "-S", "-c", TAKER, *names], "/", volumes=[(d, d)])
    assert out.strip() == "0", f"a sandbox was handed {out.strip()} network namespaces"
