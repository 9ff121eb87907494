"""slirp4netns for a held sandbox, podman's way: `slirp4netns --configure --ready-fd --exit-fd
[--api-socket S] [--disable-host-loopback] PID tap0`, ready when it writes to the ready fd;
published ports added through its API socket (`add_hostfwd`, one JSON request per connection,
the write side shut down after it).  It ends when the exit fd's other end closes: at teardown,
and also when the supervising process dies, whatever kills it.  Once ready, its tap0 is made
the namespace's (helper.Process.tap_with_namespace): its end then costs well under 1 ms
instead of ~17 ms, which every run's exit waited for."""
import os

from ..runtime.hooks import Hook
from . import helper, ports as _ports

READY_TIMEOUT = 10.0


class Slirp4netns(Hook):
    name = "network (slirp4netns)"

    def __init__(self, spec):
        self.spec = spec
        self.net = spec["sbx"]["network"]
        self.ports = spec["sbx"]["network"].get("ports") or []
        self.proc = None
        self.exit_w = -1
        self.settings = None

    def argv(self, pid, sock):
        n = self.net
        a = [n["helper"], "--configure", f"--mtu={n.get('mtu') or 65520}", "--ready-fd=3", "--exit-fd=4"]
        if sock:
            a.append(f"--api-socket={sock}")
        if not n.get("allow_host_loopback"):
            a.append("--disable-host-loopback")
        if n.get("cidr"):
            a.append(f"--cidr={n['cidr']}")
        if n.get("enable_ipv6"):
            a.append("--enable-ipv6")
        for k in ("outbound_addr", "outbound_addr6"):
            if n.get(k):
                a.append(f"--{k.replace('_', '-')}={n[k]}")
        return a + [str(pid), "tap0"]

    def attach(self, pid):
        for p in self.ports:
            if p["proto"] == "udp" and p["host_ip"].startswith("127.") and not self.net.get("allow_host_loopback"):
                # slirp4netns sees such clients as 10.0.2.2, the host loopback it was told to
                # refuse, and drops the answers: the port would take datagrams and never reply.
                raise helper.HelperError(
                    f"cannot publish {p['host_ip']}:{p['host_port'] or ''}:{p['container_port']}/udp through "
                    "slirp4netns without host loopback: it drops the answers to loopback clients",
                    hint="publish on every address (-p HOSTPORT:CTRPORT/udp), or allow it with "
                         "--network slirp4netns:allow_host_loopback=true")
        d = helper.rundir(self.spec, "slirp4netns")
        sock = os.path.join(d, "api.sock") if self.ports else None
        ready_r, ready_w = helper.pipe()
        exit_r, self.exit_w = helper.pipe()
        try:
            self.proc = helper.Process(self.argv(pid, sock), d, fds=((ready_w, 3), (exit_r, 4)))
        finally:
            os.close(ready_w)
            os.close(exit_r)
        try:
            self.proc.wait_readable(ready_r, READY_TIMEOUT, "connect the container's network")
        finally:
            os.close(ready_r)
        self.proc.tap_with_namespace()
        published = _ports.assign(self.ports)
        for p in published:
            self._add_hostfwd(sock, p)
        self.settings = helper.settings(self.net, pid, published)

    def _add_hostfwd(self, sock, p):
        import json  # only with published ports (the socket module brings enum, functools...)
        from .holder import call
        req = {"execute": "add_hostfwd", "arguments": {"proto": p["proto"], "host_addr": p["host_ip"] or "0.0.0.0",
                                                        "host_port": p["host_port"], "guest_port": p["container_port"]}}
        data = call(os.path.dirname(sock), os.path.basename(sock), json.dumps(req).encode())
        try:
            reply = json.loads(data or b"{}")
        except ValueError:
            reply = {}
        if "return" in reply:
            return reply["return"].get("id")
        why = _ports.busy(p) or (reply.get("error") or {}).get("desc") or "no reply from slirp4netns"
        raise _ports.busy_error(p, why)

    def teardown(self):
        if self.exit_w >= 0:
            os.close(self.exit_w)  # slirp4netns's --exit-fd: it ends on this EOF
            self.exit_w = -1
        if self.proc is not None:
            self.proc.stop(grace=0)  # its exit on the exit fd takes tens of ms; nothing to save
            helper.remove_tree(self.proc.dir)
            self.proc = None
