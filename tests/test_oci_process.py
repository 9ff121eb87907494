"""sbx-runc: what a caller hands the container's process: exec into a running container, the
console socket (pty master over SCM_RIGHTS), --preserve-fds and LISTEN_FDS, the OCI hooks in
order with the state on stdin, and --log's JSON lines."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time


from ocitest import rt  # noqa: F401 - the fixture
from ocitest import Runtime, edit_config, make_bundle, runc_argv, wait_file


def _running(rt, tmp_path, cid="e1"):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo up > /up; exec sleep 1000"])
    rt("run", "-d", "--bundle", b, cid, check=True)
    wait_file(b / "rootfs/up")
    return b


def test_exec_into_running_container(rt, tmp_path):
    b = _running(rt, tmp_path)
    cp = rt("exec", "e1", "sh", "-c", "cat /etc/marker; tr '\\0' ' ' < /proc/1/cmdline; echo; echo err >&2; exit 4")
    assert cp.returncode == 4, cp.stderr
    marker, init = cp.stdout.splitlines()
    assert marker == "sbx test rootfs marker"
    assert init == "sleep 1000 "                              # its pid namespace: the container's PID 1
    assert cp.stderr == "err\n"
    # --env, --cwd, and a --process file
    cp = rt("exec", "--env", "FOO=bar", "--cwd", "/etc", "e1", "sh", "-c", "echo $FOO $(pwd)", check=True)
    assert cp.stdout == "bar /etc\n"
    proc = {"args": ["sh", "-c", "echo $X; pwd; id -u"], "env": ["X=from-file", "PATH=/bin"], "cwd": "/tmp",
            "user": {"uid": 0, "gid": 0}, "terminal": False}
    (tmp_path / "proc.json").write_text(json.dumps(proc))
    cp = rt("exec", "--process", tmp_path / "proc.json", "e1", check=True)
    assert cp.stdout.split() == ["from-file", "/tmp", "0"]
    # --detach with --pid-file: the process runs on after exec returns
    rt("exec", "-d", "--pid-file", tmp_path / "epid", "e1", "sh", "-c", "sleep 0.3; echo late > /late", check=True)
    assert int((tmp_path / "epid").read_text()) > 0
    assert wait_file(b / "rootfs/late") == "late\n"
    # exec into a container that is not running fails
    rt("kill", "e1", "KILL", check=True)
    rt.wait_status("e1", "stopped")
    cp = rt("exec", "e1", "true")
    assert cp.returncode == 1 and "cannot exec in a container that is stopped" in cp.stderr


def _console_listener(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    return srv


def _read_until(fd, want, timeout=10.0):
    buf = b""
    end = time.monotonic() + timeout
    while want not in buf and time.monotonic() < end:
        import select
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_console_socket_pty_round_trip(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "tty; read line; echo got:$line"], terminal=True)
    sock_path = tmp_path / "console.sock"
    srv = _console_listener(sock_path)
    cp = rt("create", "--bundle", b, "--console-socket", sock_path, "t1")
    assert cp.returncode == 0, cp.stderr
    conn, _ = srv.accept()
    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    conn.close()
    srv.close()
    assert len(fds) == 1
    master = fds[0]
    rt("start", "t1", check=True)
    out = _read_until(master, b"/dev/pts/")
    assert b"/dev/pts/0" in out
    os.write(master, b"hello\n")
    out = _read_until(master, b"got:hello")
    assert b"got:hello" in out
    os.close(master)
    rt.wait_status("t1", "stopped")
    rt("delete", "t1", check=True)
    # terminal without a console socket, and a socket without a terminal: refused, nothing left
    cp = rt("create", "--bundle", b, "t2")
    assert cp.returncode == 1 and "--console-socket" in cp.stderr
    edit_config(b, lambda c: c["process"].update(terminal=False))
    cp = rt("create", "--bundle", b, "--console-socket", sock_path, "t2")
    assert cp.returncode == 1 and "process.terminal is false" in cp.stderr
    assert rt("list", "-q").stdout == ""


def _run_with_fds(argv, fds, env=None):
    """Run argv with fds[i] as fd 3+i (and nothing else above 2)."""
    def place():
        for i, fd in enumerate(fds):
            os.dup2(fd, 3 + i)
    return subprocess.run(argv, preexec_fn=place, pass_fds=tuple(range(3, 3 + len(fds))), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


def test_preserve_fds_and_listen_fds(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo via-fd3 >&3; echo via-fd4 >&4; echo fds=$LISTEN_FDS >&3"])
    (r3, w3), (r4, w4) = os.pipe(), os.pipe()
    cp = _run_with_fds(runc_argv("--root", rt.root, "run", "--preserve-fds", "2", "--bundle", b, "p1"), [w3, w4])
    os.close(w3)
    os.close(w4)
    assert cp.returncode == 0, cp.stderr
    assert os.read(r3, 100) == b"via-fd3\nfds=\n"
    assert os.read(r4, 100) == b"via-fd4\n"
    # without --preserve-fds the container gets none of them
    cp = _run_with_fds(runc_argv("--root", rt.root, "run", "--bundle", b, "p2"), [r3])
    assert cp.returncode != 0 and "Bad file descriptor" in cp.stderr
    os.close(r3)
    os.close(r4)
    # LISTEN_FDS (systemd socket activation, LISTEN_PID = the runtime's pid): the fds go on, and
    # the count is in the container's environment
    b2 = make_bundle(tmp_path / "b2", ["sh", "-c", "echo listen=$LISTEN_FDS >&3"])
    r, w = os.pipe()
    argv = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *runc_argv("--root", rt.root, "run", "--bundle", b2, "p3")]
    cp = _run_with_fds(argv, [w], env={**os.environ, "LISTEN_FDS": "1"})
    os.close(w)
    assert cp.returncode == 0, cp.stderr
    assert os.read(r, 100) == b"listen=1\n"
    os.close(r)


def test_preserve_fds_that_are_not_open_is_refused(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["true"])
    cp = rt("create", "--preserve-fds", "40", "--bundle", b, "p3")
    assert cp.returncode == 1 and "--preserve-fds 40: fd" in cp.stderr and "is not open" in cp.stderr
    assert rt("list", "-q").stdout == ""


HOOK = "cat > \"$D/$N.json\"; echo $N >> \"$D/order\""


def test_hooks_run_in_order_with_the_state(rt, tmp_path):
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()
    os.chmod(hooks_dir, 0o777)
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo payload >> /hooks/order"])

    def hook(name, where):
        return {"path": "/bin/sh", "args": ["sh", "-c", HOOK], "env": [f"D={where}", f"N={name}", "PATH=/bin:/usr/bin"]}

    def add(c):
        c["mounts"].append({"destination": "/hooks", "type": "bind", "source": str(hooks_dir), "options": ["rbind"]})
        c["annotations"] = {"org.example/key": "v"}
        c["hooks"] = {
            "prestart": [hook("prestart", hooks_dir)],
            "createRuntime": [hook("createRuntime", hooks_dir)],
            "createContainer": [hook("createContainer", hooks_dir)],
            # in the container's mount namespace after pivot_root: its /bin/sh, its /hooks
            "startContainer": [hook("startContainer", "/hooks")],
            "poststart": [hook("poststart", hooks_dir)],
            "poststop": [hook("poststop", hooks_dir)],
        }
    edit_config(b, add)
    rt("create", "--bundle", b, "h1", check=True)
    pid = rt.state("h1")["pid"]
    assert (hooks_dir / "order").read_text().split() == ["prestart", "createRuntime", "createContainer"]
    rt("start", "h1", check=True)
    rt.wait_status("h1", "stopped")
    rt("delete", "h1", check=True)
    order = (hooks_dir / "order").read_text().split()
    assert order[:4] == ["prestart", "createRuntime", "createContainer", "startContainer"]
    assert order[-1] == "poststop" and set(order[4:6]) == {"poststart", "payload"}
    want_status = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
                   "startContainer": "created", "poststop": "stopped"}
    for name, status in want_status.items():
        st = json.loads((hooks_dir / f"{name}.json").read_text())
        assert st["id"] == "h1" and st["status"] == status, (name, st)
        assert st["bundle"] == str(b) and st["annotations"] == {"org.example/key": "v"}
        if status != "stopped":
            assert st["pid"] == pid


def test_failing_and_timed_out_hooks_abort_create(rt, tmp_path):
    log = tmp_path / "log.json"
    rtl = Runtime(rt.root, log=log)
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo ran > /ran"])
    edit_config(b, lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "20"],
                                                                  "timeout": 1}]}))
    t0 = time.monotonic()
    cp = rtl("create", "--bundle", b, "h2")
    assert cp.returncode == 1 and "createRuntime hook /bin/sleep: timed out after 1 s" in cp.stderr
    assert time.monotonic() - t0 < 15
    assert rt("list", "-q").stdout == "" and not (b / "rootfs/ran").exists()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[-1]["level"] == "error" and "timed out" in lines[-1]["msg"] and lines[-1]["time"].endswith("Z")
    edit_config(b, lambda c: c.update(hooks={"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}))
    cp = rt("create", "--bundle", b, "h3")
    assert cp.returncode == 1 and "createContainer hook /bin/sh failed: exit status 3" in cp.stderr
    assert rt("list", "-q").stdout == ""


def test_terminal_without_console_socket_in_the_foreground(rt, tmp_path):
    """run and exec with a terminal and no --console-socket: the runtime relays the pty itself
    (runc's foreground mode); --cap adds a capability to the exec'd process's sets."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "tty; echo in-run"], terminal=True)
    cp = rt("run", "--bundle", b, "f1")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.replace("\r\n", "\n") == "/dev/pts/0\nin-run\n"
    b2 = _running(rt, tmp_path / "x", cid="f2")
    cp = rt("exec", "-t", "f2", "sh", "-c", "tty; exit 5")
    assert cp.returncode == 5 and cp.stdout.strip().startswith("/dev/pts/"), cp.stderr
    cp = rt("exec", "--cap", "CAP_SYS_ADMIN", "f2", "sh", "-c", "grep CapBnd /proc/self/status")
    bnd = int(cp.stdout.split()[1], 16)
    assert bnd & (1 << 21) and cp.returncode == 0               # CAP_SYS_ADMIN is bit 21
    cp = rt("exec", "f2", "sh", "-c", "grep CapBnd /proc/self/status")
    assert not int(cp.stdout.split()[1], 16) & (1 << 21)        # only for that process
    assert b2.exists()


def test_create_container_hook_mounts_show_inside(rt, tmp_path):
    """A createContainer hook (as nvidia's) mounts into the bundle's rootfs in the container's
    mount namespace, before the container's own mounts bind that root: the container sees it."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "grep ' /mnt ' /proc/self/mountinfo | cut -d' ' -f5,9"])
    (b / "rootfs/mnt").mkdir(exist_ok=True)
    edit_config(b, lambda c: c.update(hooks={"createContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"mount -t tmpfs hooktmp {b / 'rootfs/mnt'}"]}]}))
    cp = rt("run", "--bundle", b, "m1")
    assert cp.returncode == 0 and cp.stdout == "/mnt hooktmp\n", cp.stderr
    assert os.path.ismount(b / "rootfs/mnt") is False            # the host's tree is untouched
