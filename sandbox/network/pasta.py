"""pasta for a held sandbox, podman's options: `pasta -f --config-net -q --dns-forward 169.254.1.1
--no-map-gw -t SPEC|none -u SPEC|none -T none -U none -P FIFO PID`.  Published ports are given at
start (pasta has no API to add them later).  pasta attached by PID does not exit when the sandbox
does (it holds the namespace), so it runs in the foreground as our child under `setpriv
--pdeathsig KILL` (it dies with its supervisor) and teardown kills it.  Readiness: pasta writes
its pid to the -P file once the namespace is configured; the file is a FIFO we read."""
import os

from ..runtime.hooks import Hook
from . import helper, ports as _ports

READY_TIMEOUT = 10.0
_OURS = ("--map-gw",)  # podman's pasta option that we take (pasta itself maps the gateway by default)


class Pasta(Hook):
    name = "network (pasta)"

    def __init__(self, spec):
        self.spec = spec
        self.net = spec["sbx"]["network"]
        self.ports = self.net.get("ports") or []
        self.proc = None
        self.settings = None

    def argv(self, pid, pidfifo, published):
        n = self.net
        user = [a for a in n.get("args") or () if a not in _OURS]
        a = []
        setpriv = n.get("setpriv") or "/usr/bin/setpriv"
        if os.access(setpriv, os.X_OK):
            a += [setpriv, "--pdeathsig", "KILL", "--"]
        a += [n["helper"], "-f", "--config-net", "-q", "--dns-forward", n.get("dns") or "169.254.1.1"]
        if not n.get("map_gw"):
            a.append("--no-map-gw")
        for flag, proto in (("-t", "tcp"), ("-u", "udp")):
            mine = [p for p in published if p["proto"] == proto]
            for p in mine:
                ip = f"{p['host_ip']}/" if p["host_ip"] else ""
                a += [flag, f"{ip}{p['host_port']}:{p['container_port']}"]
            if not mine and flag not in user:
                a += [flag, "none"]
        for flag in ("-T", "-U"):
            if flag not in user:
                a += [flag, "none"]
        if os.geteuid() == 0:
            a += ["--runas", "0:0"]  # else pasta drops to nobody, who cannot enter our namespaces
        return a + user + ["-P", pidfifo, str(pid)]

    def attach(self, pid):
        d = helper.rundir(self.spec, "pasta")
        fifo = os.path.join(d, "pid")
        os.mkfifo(fifo, 0o600)
        r = helper._high(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        published = _ports.assign(self.ports)
        try:
            self.proc = helper.Process(self.argv(pid, fifo, published), d, name="pasta")
            try:
                self.proc.wait_readable(r, READY_TIMEOUT, "connect the container's network")
            except helper.HelperError as e:
                for p in published:
                    why = _ports.busy(p)
                    if why:
                        raise _ports.busy_error(p, why) from None
                raise e
            if not os.read(r, 64).strip():
                self.proc.stop()
                raise helper.HelperError(f"pasta failed to connect the container's network: {self.proc.tail()}",
                                         hint=self.proc.hint())
        finally:
            os.close(r)
        self.settings = helper.settings(self.net, pid, published)

    def teardown(self):
        if self.proc is not None:
            self.proc.stop(grace=0)  # nothing of pasta's to save: SIGKILL at once
            helper.remove_tree(self.proc.dir)
            self.proc = None
