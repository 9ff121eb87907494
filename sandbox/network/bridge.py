"""User-defined networks (Docker's bridge driver, podman's rootless design): the launch hook of a
container on a network, and connect/disconnect/members/drop for the CLI.

`hook_for(spec, name)` runs before the launch: it makes sure the user's holder runs (holder.py)
and points the spec's user namespace at the holder's (the launcher joins it and makes the
container's other namespaces inside it: only then may the holder move a veth into the container's
network namespace), and writes the container's resolv.conf to use the network's DNS responder on
the gateway.  Its `attach(pid)` asks the holder to wire the held child; `teardown()` unwires it.

The container's name and aliases come from the spec's "sbx" annotations ("name", and the
"network" dict's "aliases", "ip", "mac"); a name missing there is found in the container store's
name index (`<data>/containers/names/NAME`, a symlink to the id).  The "network" dict's
"connected" lists the other networks it joins, in order (eth1, eth2, ...; each {network,
aliases, ip, mac}), and "links" its `--link`s ({container: id, name, alias}): the holder's name
server answers ALIAS with that container's address on a network both share, for this container
only (Docker's links on user-defined networks)."""
import os

from ..errors import UsageError
from ..runtime.hooks import Hook
from . import holder, ipam, netstore


def check(name):
    """`--network NAME` names an existing network; else UsageError (exit 125, as `docker run`)."""
    try:
        return netstore.get(name)
    except netstore.NetworkError as e:
        raise UsageError(str(e), hint=e.hint) from None


def annotation(name):
    """What the spec keeps about the network: enough for /etc files before the launch."""
    rec = netstore.get(name)
    c = rec["IPAM"]["Config"][0]
    return {"network": rec["Name"], "network_id": rec["Id"], "gateway": c["Gateway"], "dns": c["Gateway"],
            "subnet": c["Subnet"], "internal": rec["Internal"]}


def _net_req(rec):
    c = rec["IPAM"]["Config"][0]
    return {"id": rec["Id"], "name": rec["Name"], "subnet": c["Subnet"], "gateway": c["Gateway"],
            "internal": rec["Internal"]}


def container_name(spec):
    x = spec.get("sbx", {})
    name = x.get("name") or (x.get("network") or {}).get("name")
    if name:
        return name
    from ..runtime import paths
    d = os.path.join(paths.data_root(), "containers", "names")
    try:
        entries = os.listdir(d)
    except OSError:
        return ""
    for n in entries:
        try:
            if os.readlink(os.path.join(d, n)) == x.get("id"):
                return n
        except OSError:
            continue
    return ""


def check_options(net):
    """--ip and --mac-address, checked before anything runs."""
    if net.get("ip") is not None:
        ipam.to_int(net["ip"], "IP address (--ip)")
    if net.get("mac") is not None:
        ipam.check_mac(net["mac"])


def endpoint(rec, rep, cid, aliases):
    """Docker's NetworkSettings.Networks entry for an attach reply."""
    return {"NetworkID": rec["Id"], "EndpointID": "", "Gateway": rep["gateway"], "IPAddress": rep["ip"],
            "IPPrefixLen": rep["prefix"], "MacAddress": rep["mac"], "Aliases": [cid[:12], *aliases]}


class BridgeHook(Hook):
    name = "network (user-defined)"

    def __init__(self, spec, rec, ref):
        x = spec["sbx"]
        net = x.get("network") or {}
        self.rec, self.ref = rec, ref
        self.cid = x["id"]
        self.cname = container_name(spec)
        self.aliases = list(net.get("aliases") or ())
        self.ip, self.mac = net.get("ip"), net.get("mac")
        self.ports, self.exposed = list(net.get("ports") or ()), list(net.get("exposed") or ())
        self.connected = list(net.get("connected") or ())  # more networks: --network a --network b, connect
        self.links = [{"cid": k["container"], "alias": k["alias"]} for k in net.get("links") or ()]
        self.joined = []
        self.pid = None
        self.settings = None

    def attach(self, pid):
        from . import ports as _ports
        published = _ports.assign(self.ports)
        for p in published:
            why = _ports.busy(p)
            if why:
                raise _ports.busy_error(p, why)
        rep = self.ref.request(op="attach", net=_net_req(self.rec), pid=pid, cid=self.cid, name=self.cname,
                               aliases=self.aliases, ip=self.ip, mac=self.mac, ports=published, links=self.links)
        self.pid = pid
        self.joined = [self.rec]
        ep = endpoint(self.rec, rep, self.cid, self.aliases)
        nets = {self.rec["Name"]: ep}
        for c in self.connected:  # kept across restarts, as Docker does
            try:
                rec = netstore.get(c["network"])
            except netstore.NetworkError as e:
                raise UsageError(f"network {c['network']} (connected with sbx network connect) is gone: {e}",
                                 hint=f"disconnect it: sbx network disconnect -f {c['network']} CONTAINER") from None
            r = self.ref.request(op="attach", net=_net_req(rec), pid=pid, cid=self.cid, name=self.cname,
                                 aliases=c.get("aliases") or [], ip=c.get("ip"), mac=c.get("mac"), links=self.links)
            self.joined.append(rec)
            nets[rec["Name"]] = endpoint(rec, r, self.cid, c.get("aliases") or [])
        self.settings = {"IPAddress": rep["ip"], "IPPrefixLen": rep["prefix"], "Gateway": rep["gateway"],
                         "MacAddress": rep["mac"], "SandboxKey": f"/proc/{pid}/ns/net",
                         "Ports": _ports.docker_ports(published, self.exposed), "Networks": nets}

    def teardown(self):
        if self.pid is not None:
            pid, self.pid = self.pid, None
            for rec in self.joined:
                try:
                    self.ref.request(op="detach", net_id=rec["Id"], cid=self.cid, pid=pid)
                except (OSError, holder.HolderError):
                    pass  # the holder is gone, and the links with it
        self.ref.close()


def hook_for(spec, name):
    """The launch hook of a container on network `name` (see the module's docstring).  The spec
    is changed in place: its user namespace joins the holder's, its resolv.conf names the
    network's DNS responder."""
    rec = netstore.get(name)
    x = spec["sbx"]
    net = x.get("network") or {}
    check_options(net)
    user = spec["process"]["user"]
    if x.get("userns") == "single" and (user["uid"] != 0 or user["gid"] != 0):
        raise UsageError(f"a container on network {rec['Name']} runs as root of the network holder's user namespace, "
                         f"which maps one id without a subordinate range: user {user['uid']}:{user['gid']} is not "
                         "mapped there",
                         hint="add the user to /etc/subuid and /etc/subgid (usermod --add-subuids/--add-subgids), "
                              "or run as root (--user 0)")
    for p in net.get("ports") or ():
        if p["proto"] == "udp" and p["host_ip"].startswith("127."):
            raise UsageError(f"cannot publish {p['host_ip']}:{p['host_port'] or ''}:{p['container_port']}/udp on network "
                             f"{rec['Name']}: the holder's slirp4netns runs without host loopback and drops answers "
                             "to loopback clients",
                             hint=f"publish on every address (-p HOSTPORT:{p['container_port']}/udp) and reach it on "
                                  "the host's own address")
    if net.get("ports") and rec["Internal"]:
        raise UsageError(f"cannot publish ports of a container on network {rec['Name']}: it is --internal "
                         "(nothing outside reaches it)",
                         hint="publish from a container on a network that is not --internal, or leave -p out")
    ref = holder.ensure()
    try:
        for n in spec["linux"]["namespaces"]:
            if n["type"] == "user":
                n["path"] = ref.userns
                break
        else:
            raise UsageError(f"a container on network {rec['Name']} needs a user namespace of its own",
                             hint="leave the user namespace in (it joins the network holder's)")
        gw = rec["IPAM"]["Config"][0]["Gateway"]
        files = x.setdefault("files", {})
        resolv = files.get("resolv.conf") or ""
        keep = "".join(line + "\n" for line in resolv.splitlines()
                       if line.split()[:1] in (["search"], ["options"]))
        files["resolv.conf"] = f"nameserver {gw}\n" + keep
        return BridgeHook(spec, rec, ref)
    except BaseException:
        ref.close()
        raise


# --- the CLI's operations ------------------------------------------------------------------------------

def members():
    """{network id: {container id: {Name, IPv4Address, MacAddress, IPv6Address, Aliases, Pid}}}
    from the running holder ({} when none runs: no container is connected)."""
    rep = holder.try_request({"op": "members"})
    return (rep or {}).get("networks", {})


def connect(rec, pid, cid, name, aliases=(), ip=None, mac=None):
    """Connect a running container (its pid) to network `rec`.  The container must share the
    holder's user namespace (it was started on a user-defined network)."""
    check_options({"ip": ip, "mac": mac})
    ref = holder.ensure()
    try:
        rep = ref.request(op="attach", net=_net_req(rec), pid=pid, cid=cid, name=name, aliases=list(aliases),
                          ip=ip, mac=mac, connect=True)
    finally:
        ref.close()
    netstore.event("connect", rec, container=cid)
    return rep


def disconnect(rec, cid, name):
    rep = holder.try_request({"op": "detach", "net_id": rec["Id"], "cid": cid, "strict": True, "name": name,
                              "net_name": rec["Name"]})
    if rep is None:
        raise holder.HolderError(f"container {name} is not connected to network {rec['Name']}")
    netstore.event("disconnect", rec, container=cid)
    return rep


def drop(rec):
    """Remove the network's bridge from the holder (when one runs)."""
    holder.try_request({"op": "drop", "net_id": rec["Id"]})
