"""User-defined networks (issue 11): `sbx network create/ls/inspect/rm/prune/connect/disconnect`
and `sbx run --network NAME`, black-box, as each test user and root.  Containers run a busybox
root filesystem; traffic goes only to servers the test starts (in containers, or on the host's
own non-loopback address for outbound access through the holder's slirp4netns)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx, wait_for

SERVE = "while true; do echo hello-from-$0 | nc -l -p 8080; done"
# get HOST: the server's line, retried while the server (re)starts listening
GET = ("get() { for i in $(seq 100); do out=$(nc -w 3 $1 8080 </dev/null) && [ -n \"$out\" ] && "
       "{ echo \"$out\"; return 0; }; sleep 0.1; done; return 1; }; ")


@pytest.fixture()
def netenv(tmp_path, monkeypatch, busybox_rootfs):
    """A store and a runtime root of the test's own (so its own network holder), cleaned up."""
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("SBX_RUNROOT", str(run))
    yield {"rootfs": str(busybox_rootfs), "holder": run / "net" / "holder"}
    ids = sbx("ps", "-a", "-q").stdout.split()
    if ids:
        sbx("rm", "-f", *ids)
    pid = holder_pid(run / "net" / "holder")
    if pid:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)


def holder_pid(d):
    try:
        pid = int((d / "holder.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def run_in(env, net, *cmd, name=None, detach=False, extra=()):
    args = ["run", "--network", net, *extra]
    if name:
        args += ["--name", name]
    args += ["-d"] if detach else ["--rm"]
    return sbx(*args, "--rootfs", env["rootfs"], *cmd, timeout=60)


def server(env, net, name, extra=()):
    ok(run_in(env, net, "sh", "-c", SERVE, name, name=name, detach=True, extra=extra))


def client(env, net, script):
    return run_in(env, net, "sh", "-c", GET + script)


def members(net):
    doc = json.loads(ok(sbx("network", "inspect", net)))[0]
    return {m["Name"]: m for m in doc["Containers"].values()}


def test_two_containers_by_name_and_alias(netenv):
    ok(sbx("network", "create", "app"))
    server(netenv, "app", "web", extra=("--network-alias", "www"))
    out = ok(client(netenv, "app", "get web; get www; ping -c 1 -W 3 web >/dev/null "
                                   "&& echo ping-ok; cat /etc/resolv.conf"))
    assert out.count("hello-from-web") == 2, out
    assert "ping-ok" in out
    gw = json.loads(ok(sbx("network", "inspect", "app")))[0]["IPAM"]["Config"][0]["Gateway"]
    assert f"nameserver {gw}" in out
    web = members("app")["web"]
    assert web["IPv4Address"].startswith(gw.rsplit(".", 1)[0] + ".") and web["MacAddress"].startswith("02:42:")


def test_container_started_later_is_resolvable(netenv):
    ok(sbx("network", "create", "later"))
    ok(run_in(netenv, "later", "sleep", "60", name="early", detach=True))
    assert sbx("exec", "early", "nslookup", "late").returncode != 0  # not there yet
    server(netenv, "later", "late")
    out = ok(sbx("exec", "early", "sh", "-c", GET + "get late"))
    assert "hello-from-late" in out


def test_networks_are_isolated(netenv):
    ok(sbx("network", "create", "one"))
    ok(sbx("network", "create", "two"))
    server(netenv, "one", "srv")
    ip = members("one")["srv"]["IPv4Address"].split("/")[0]
    assert "hello-from-srv" in ok(client(netenv, "one", f"get {ip}"))
    out = client(netenv, "two", f"nslookup srv >/dev/null 2>&1 && echo resolved; "
                                f"nc -w 3 {ip} 8080 </dev/null; echo rc=$?").stdout
    assert "resolved" not in out and "hello-from-srv" not in out and "rc=1" in out, out



@pytest.fixture()
def host_server():
    """A TCP server on the host's own non-loopback address (reached through slirp4netns)."""
    addr = sbxtest.host_address()
    assert addr and not addr.startswith("127."), "the host needs a non-loopback IPv4 address for this test"
    srv = socket.socket()
    srv.bind((addr, 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.sendall(b"hello-from-host\n")
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield addr, srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


def test_outbound_and_internal(netenv, host_server):
    addr, port = host_server
    ok(sbx("network", "create", "open"))
    ok(sbx("network", "create", "--internal", "closed"))
    assert "hello-from-host" in ok(client(netenv, "open", f"nc -w 5 {addr} {port} </dev/null"))
    server(netenv, "closed", "inner")
    out = client(netenv, "closed", f"get inner; ip route; nc -w 3 {addr} {port} </dev/null; "
                                   f"echo rc=$?").stdout
    assert "hello-from-inner" in out and "hello-from-host" not in out and "default" not in out, out
    # Even a route added by the container's own root leads nowhere.
    gw = json.loads(ok(sbx("network", "inspect", "closed")))[0]["IPAM"]["Config"][0]["Gateway"]
    out = client(netenv, "closed", f"ip route add default via {gw}; nc -w 3 {addr} {port} </dev/null; echo rc=$?").stdout
    assert "hello-from-host" not in out and "rc=1" in out, out


def test_connect_and_disconnect_running_container(netenv):
    ok(sbx("network", "create", "front"))
    ok(sbx("network", "create", "back"))
    ok(run_in(netenv, "front", "sleep", "60", name="app", detach=True))
    server(netenv, "back", "db")
    probe = "nc -w 3 db 8080 </dev/null; echo rc=$?"
    assert "hello-from-db" in ok(client(netenv, "back", "get db"))  # it listens
    assert "hello-from-db" not in ok(sbx("exec", "app", "sh", "-c", probe))
    ok(sbx("network", "connect", "--alias", "appalias", "back", "app"))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get db"))
    assert "app" in members("back")
    nets = json.loads(ok(sbx("inspect", "app")))[0]["NetworkSettings"]["Networks"]
    assert sorted(nets) == ["back", "front"] and nets["back"]["IPAddress"] == \
        members("back")["app"]["IPv4Address"].split("/")[0] and "appalias" in nets["back"]["Aliases"]
    out = ok(client(netenv, "back", "nslookup appalias"))
    assert members("back")["app"]["IPv4Address"].split("/")[0] in out
    # A connection outlives a restart of the container, as in Docker.
    ok(sbx("restart", "-t", "1", "app"))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get db"))
    assert sorted(json.loads(ok(sbx("inspect", "app")))[0]["NetworkSettings"]["Networks"]) == ["back", "front"]
    assert_sbx_error(sbx("network", "connect", "back", "app"), 1, "already exists")
    ok(sbx("network", "disconnect", "back", "app"))
    assert "app" not in members("back")
    assert list(json.loads(ok(sbx("inspect", "app")))[0]["NetworkSettings"]["Networks"]) == ["front"]
    assert "hello-from-db" not in ok(sbx("exec", "app", "sh", "-c", probe))
    assert_sbx_error(sbx("network", "disconnect", "back", "app"), 1, "not connected")
    ok(sbx("network", "disconnect", "-f", "back", "app"))
    # A container that does not share the holder's user namespace cannot be wired.
    ok(sbx("run", "-d", "--name", "loner", "--network", "none", "--rootfs", netenv["rootfs"], "sleep", "60"))
    assert_sbx_error(sbx("network", "connect", "back", "loner"), 1, "network mode is none", "--network back")


def test_ls_inspect_rm_prune(netenv):
    nid = ok(sbx("network", "create", "--subnet", "10.89.200.0/24", "--gateway", "10.89.200.254",
                 "--label", "team=a", "--internal", "shaped")).strip()
    assert len(nid) == 64
    doc = json.loads(ok(sbx("network", "inspect", "shaped")))[0]
    assert doc["Id"] == nid and doc["Name"] == "shaped" and doc["Driver"] == "bridge" and doc["Internal"] is True
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.89.200.0/24", "Gateway": "10.89.200.254"}]
    assert doc["Labels"] == {"team": "a"} and doc["Containers"] == {} and doc["Created"].endswith("Z")
    ok(sbx("network", "create", "plain"))
    assert ok(sbx("network", "ls", "-q")).split() == [nid[:12], json.loads(
        ok(sbx("network", "inspect", "plain")))[0]["Id"][:12]]
    assert ok(sbx("network", "ls", "--filter", "label=team=a", "--format", "{{.Name}} {{.Driver}}")).split("\n")[0] \
        == "shaped bridge"
    assert ok(sbx("network", "ls", "-f", "name=pla", "-q")).split() == [ok(sbx("network", "inspect", "-f", "{{.Id}}",
                                                                                "plain")).strip()[:12]]
    head = ok(sbx("network", "ls")).splitlines()[0].split()
    assert head == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert ok(sbx("network", "inspect", "-f", "{{.Name}}", nid[:10])).strip() == "shaped"

    assert_sbx_error(sbx("network", "create", "plain"), 1, "already exists")
    assert_sbx_error(sbx("network", "create", "--subnet", "10.89.200.128/25", "x"), 1, "overlaps")
    assert_sbx_error(sbx("network", "create", "--subnet", "10.89.7.0/33", "x"), 125, "10.89.7.0/33")
    assert_sbx_error(sbx("network", "create", "--subnet", "nonsense", "x"), 125, "invalid CIDR")
    assert_sbx_error(sbx("network", "create", "--subnet", "10.89.7.0/24", "--gateway", "10.89.8.1", "x"), 125,
                     "gateway")
    assert_sbx_error(sbx("network", "create", "host"), 1, "predefined")
    assert_sbx_error(sbx("network", "inspect", "nope"), 1, "nope")
    assert_sbx_error(sbx("network", "rm", "nope"), 1, "nope")
    ok(sbx("network", "rm", "-f", "nope"))
    assert_sbx_error(sbx("run", "--rm", "--network", "nope", "--rootfs", netenv["rootfs"], "true"), 125, "nope")
    assert_sbx_error(sbx("run", "--rm", "--ip", "10.89.0.9", "--rootfs", netenv["rootfs"], "true"), 125,
                     "user-defined network")
    assert_sbx_error(sbx("run", "--rm", "--network", "plain", "--ip", "10.1.2", "--rootfs", netenv["rootfs"], "true"),
                     125, "10.1.2")
    # --ip and --mac-address are given to the container.
    out = ok(run_in(netenv, "shaped", "sh", "-c", "ip -o -4 addr show eth0; cat /sys/class/net/eth0/address",
                    extra=("--ip", "10.89.200.7", "--mac-address", "02:00:00:00:00:07")))
    assert "10.89.200.7/24" in out and "02:00:00:00:00:07" in out

    ok(run_in(netenv, "plain", "sleep", "60", name="busy", detach=True))
    assert_sbx_error(sbx("network", "rm", "plain"), 1, "active endpoints", "busy")
    out = ok(sbx("network", "prune", "-f"))
    assert out.split() == ["Deleted", "Networks:", "shaped"]
    assert ok(sbx("network", "ls", "--format", "{{.Name}}")).split() == ["plain"]
    ok(sbx("rm", "-f", "busy"))
    wait_for(lambda: not members("plain").get("busy"), timeout=10)
    assert ok(sbx("network", "rm", "plain")).strip() == "plain"
    assert ok(sbx("network", "ls", "-q")) == ""


def test_holder_restarted_after_kill_and_gone_after_last_user(netenv):
    ok(sbx("network", "create", "life"))
    server(netenv, "life", "first")
    pid = holder_pid(netenv["holder"])
    assert pid
    slirps = [p for p in _pids_named("slirp4netns") if str(pid) in _cmdline(p)]
    assert len(slirps) == 1, slirps
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
    # slirp4netns ends with it (its exit fd); the running container lost its link.
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in slirps), timeout=10)
    ok(sbx("rm", "-f", "first"))
    server(netenv, "life", "second")
    new = holder_pid(netenv["holder"])
    assert new and new != pid
    assert "hello-from-second" in ok(client(netenv, "life", "get second"))
    ok(sbx("rm", "-f", "second"))
    # The last user gone, the holder and its slirp4netns end.
    assert wait_for(lambda: not os.path.exists(f"/proc/{new}"), timeout=15)
    assert wait_for(lambda: not [p for p in _pids_named("slirp4netns") if str(new) in _cmdline(p)], timeout=10)
    assert not (netenv["holder"] / "holder.sock").exists()


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids_named(word):
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and word in _cmdline(p).split(" ")[0]]


def test_concurrent_create_of_one_name(netenv):
    procs = [subprocess.Popen([sys.executable, "-m", "sandbox", "network", "create", "race"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    wins = [r for r in results if r[0] == 0]
    assert len(wins) == 1, results
    assert all(r[0] == 1 and "already exists" in r[2] for r in results if r[0] != 0), results
    assert ok(sbx("network", "ls", "-q")).split() == [wins[0][1].strip()[:12]]


def _read_line(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        return s.recv(100).decode()


def test_published_port_reaches_the_container(netenv):
    ok(sbx("network", "create", "pubnet"))
    ok(sbx("network", "create", "--internal", "hidden"))
    server(netenv, "pubnet", "pubweb", extra=("-p", "127.0.0.1::8080"))
    ports = json.loads(ok(sbx("inspect", "pubweb")))[0]["NetworkSettings"]["Ports"]
    assert list(ports) == ["8080/tcp"] and ports["8080/tcp"][0]["HostIp"] == "127.0.0.1", ports
    host_port = int(ports["8080/tcp"][0]["HostPort"])
    assert wait_for(lambda: _try_read(host_port), timeout=10) == "hello-from-pubweb\n"
    assert not _free(host_port)
    ok(sbx("rm", "-f", "pubweb"))
    # The forward goes with the container: the port is free again.
    assert wait_for(lambda: _free(host_port), timeout=10)
    assert_sbx_error(run_in(netenv, "hidden", "true", extra=("-p", "8080")), 125, "internal")


def _try_read(port):
    try:
        return _read_line(port)
    except OSError:
        return None


def _free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # our connection's TIME_WAIT is no user
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_names_hold_across_restarts_of_either(netenv):
    ok(sbx("network", "create", "again"))
    server(netenv, "again", "db", extra=("--network-alias", "store"))
    ok(run_in(netenv, "again", "sleep", "300", name="app", detach=True))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get store"))
    ok(sbx("restart", "-t", "1", "db"))
    # At once, on the first ask: the gateway (the DNS responder) keeps its MAC as ports change.
    assert members("again")["db"]["IPv4Address"].split("/")[0] in ok(sbx("exec", "app", "nslookup", "store"))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get store"))
    ok(sbx("restart", "-t", "1", "app"))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get db"))
    assert sorted(members("again")) == ["app", "db"]


UDP_ECHO = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\n"
            "while True:\n d,a=s.recvfrom(100)\n s.sendto(b'echo:'+d,a)\n")


def _udp_ask(ip, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(1)
        try:
            u.sendto(b"ping", (ip, port))
            return u.recv(100)
        except OSError:
            return None


def test_published_udp_port_answers_host_clients(netenv):
    ok(sbx("network", "create", "udpnet"))
    ok(sbx("run", "-d", "--name", "echo", "--network", "udpnet", "-p", "5353/udp", "--rootfs", "/",
           "/usr/bin/python3", "-c", UDP_ECHO))  # Debian's: the venv may sit under a tmpfs here
    ports = json.loads(ok(sbx("inspect", "echo")))[0]["NetworkSettings"]["Ports"]
    port = int(ports["5353/udp"][0]["HostPort"])
    addr = sbxtest.host_address()
    assert wait_for(lambda: _udp_ask(addr, port), timeout=15) == b"echo:ping"
    # A loopback-only UDP port could never answer (slirp4netns without host loopback): refused.
    assert_sbx_error(run_in(netenv, "udpnet", "true", extra=("-p", "127.0.0.1::5353/udp")), 125, "loopback")
