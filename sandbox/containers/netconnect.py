"""`network connect` / `disconnect` of a container, running or not: the CLI's and the Docker API's.

A container started on user-defined networks records them in its spec's network annotation
(`sandbox.network.bridge` reads it at every start): "network" (the first; its "aliases", "ip",
"mac") and "connected" (the others, in order, each {network, aliases, ip, mac}).  Connecting or
disconnecting changes that record, so the next start (a restart, `stop` + `start`, the restart
policy) joins the same networks with the same aliases, as Docker does; a running container is
also wired (or unwired) at once through the holder.  Docker allows connecting a stopped
container: it joins at its next start.

Only containers whose network namespace the holder made links in can be connected: those
created on a user-defined network.  A container on slirp4netns or pasta (the default private
network) is refused, as podman refuses it: its namespace is reached through its own user-mode
helper, not the holder's bridges (the README's network section says why)."""
from .state import ContainerError


class Conflict(ContainerError):
    """Docker's 409 for the API (`server.http.status_of` maps the name), exit 1 for the CLI."""


def joined(net):
    """The networks a container's spec joins at its start: the first, then the connected ones."""
    if net.get("mode") != "network":
        return []
    return [net.get("network")] + [k["network"] for k in net.get("connected") or ()]


def _user_network(c, rec):
    net = (c.spec or {}).get("sbx", {}).get("network") or {}
    mode = net.get("mode") or "none"
    if mode == "network":
        return net
    if mode in ("slirp4netns", "pasta"):
        why = (f"it runs on {mode}, whose user-mode helper is its only link out: the network holder has no link "
               f"into its namespace (podman refuses connect for {mode} containers too)")
    elif mode == "container":
        why = "it shares another container's network namespace"
    else:
        why = f"its network mode is {net.get('text') or mode}"
    raise Conflict(f"cannot connect container {c.name} to network {rec['Name']}: {why}",
                   hint=f"create the container on the network instead (sbx run --network {rec['Name']}; repeat "
                        "--network for several networks)")


def connect(c, rec, aliases=(), ip=None, mac=None):
    """Connect container record `c` to network record `rec`: a running one now and at its later
    starts, a created or stopped one at its next start.  Returns the live endpoint (Docker's
    NetworkSettings.Networks entry) or None when the container is not running."""
    from ..network import bridge
    net = _user_network(c, rec)
    if rec["Name"] in joined(net):
        raise Conflict(f"endpoint with name {c.name} already exists in network {rec['Name']}",
                       hint=f"disconnect it first: sbx network disconnect {rec['Name']} {c.name}")
    kept = {"network": rec["Name"], "aliases": list(aliases), "ip": ip, "mac": mac}
    endpoint = None
    if c.status in ("paused", "restarting"):
        raise Conflict(f"container {c.name} is {c.status}: connect it once it runs, or while it is stopped")
    if c.status == "running" and c.state.get("Pid"):
        rep = bridge.connect(rec, c.state["Pid"], c.id, c.name, aliases=kept["aliases"], ip=ip, mac=mac)
        endpoint = bridge.endpoint(rec, rep, c.id, kept["aliases"])
    else:
        bridge.check_options(kept)
    _record(c, rec["Name"], kept, endpoint)
    return endpoint


def disconnect(c, rec, force=False):
    """Take container `c` off network `rec`, now (if it runs) and at its later starts.  The
    first network may go too while another remains (the next one becomes the first); the last
    one cannot while the container is stopped (it would have no network to start on)."""
    from ..network import bridge, holder
    net = (c.spec or {}).get("sbx", {}).get("network") or {}
    names = joined(net)
    if rec["Name"] not in names:
        if c.status in ("running", "paused", "restarting"):
            try:
                bridge.disconnect(rec, c.id, c.name)
                return
            except holder.HolderError as e:
                if force:
                    return
                raise Conflict(str(e), hint=e.hint) from None
        if force:
            return
        raise Conflict(f"container {c.name} is not connected to network {rec['Name']}")
    if names == [rec["Name"]] and c.status not in ("running", "paused", "restarting"):
        raise Conflict(f"cannot disconnect container {c.name} from network {rec['Name']}: it is its only network, "
                       "and a stopped container keeps at least one to start on",
                       hint=f"connect it to another network first, or remove it (sbx rm {c.name})")
    if c.status in ("running", "paused", "restarting"):
        try:
            bridge.disconnect(rec, c.id, c.name)
        except holder.HolderError as e:
            if not force:
                raise Conflict(str(e), hint=e.hint) from None
    if names != [rec["Name"]]:  # a running container's last network goes live only (Docker keeps none)
        _record(c, rec["Name"])


def _record(c, name, kept=None, endpoint=None):
    """Add (kept) or drop (None) network `name` in the container's spec and live endpoints.
    Dropping the first network makes the next connected one the first."""
    from .store import ContainerStore

    def fn(doc):
        net = doc["Spec"]["sbx"]["network"]
        others = [k for k in net.get("connected") or () if k["network"] != name]
        if kept is None and net.get("network") == name and others:
            first = others.pop(0)
            net.update(network=first["network"], text=first["network"], aliases=list(first.get("aliases") or ()),
                       ip=first.get("ip"), mac=first.get("mac"))
            host = doc.get("HostConfig")
            if isinstance(host, dict) and "NetworkMode" in host:
                host["NetworkMode"] = first["network"]
        net["connected"] = others + ([kept] if kept is not None else [])
        live = (doc.get("NetworkSettings") or {}).get("Networks")
        if live is not None:
            live.pop(name, None)
            if endpoint is not None:
                live[name] = endpoint
    ContainerStore().update(c, fn)
