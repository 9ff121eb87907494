"""The network's launch hooks: `hooks_for(spec)` reads the mode the spec records ("sbx"
annotations, key "network": `modes.Mode.annotation()` plus "ports" and "exposed") and gives the
hooks that connect the held sandbox (runtime/hooks.py: attach(pid) between clone and execve,
teardown after exit).  Every supervisor gets them through `containers.lifecycle.launch_hooks`.

A hook that connects a container also has `settings` once attached: its NetworkSettings
(IPAddress, Gateway, Ports in Docker's shape, SandboxKey), which the supervisor records."""

def hooks_for(spec, find_container=None):
    """A tuple of Hook for the spec's network mode: () for none and host, slirp4netns's or
    pasta's hook, or the user-defined network's (`sandbox.network.bridge.hook_for(spec, name)`).
    container:ID: no hook; the spec is pointed at that container's user and network namespaces
    (the launcher joins them and makes the others inside), `find_container(id) -> (pid, spec)`
    being the engine's lookup of a running container."""
    net = spec.get("sbx", {}).get("network") or {}
    mode = net.get("mode", "none")
    if mode == "container":
        join_container(spec, net["container"], find_container)
        return ()
    if mode == "slirp4netns":
        from .slirp import Slirp4netns
        return (Slirp4netns(spec),)
    if mode == "pasta":
        from .pasta import Pasta
        return (Pasta(spec),)
    if mode == "network":
        from .modes import bridge_module
        name = net.get("network")
        return (bridge_module(name).hook_for(spec, name),)
    return ()



def join_container(spec, ref, find_container):
    """Point `spec` at the user and network namespaces of the running container `ref`, with its
    /etc/hosts and /etc/resolv.conf (Docker's container:NAME shares them).  A network namespace
    can only be joined from its own user namespace, so the ids are that container's: both must
    map them the same way."""
    from ..errors import UsageError
    if find_container is None:
        raise UsageError("--network container:NAME needs the container engine (sbx run, sandbox.containers)")
    pid, other = find_container(ref)
    x, ox = spec["sbx"], other["sbx"]
    if x.get("userns") != ox.get("userns") or spec["linux"]["uidMappings"] != other["linux"]["uidMappings"]:
        raise UsageError(f"cannot join the network of container {ref[:12]}: it maps user ids differently "
                         f"({ox.get('userns')} against {x.get('userns')})",
                         hint="run both with the same --userns")
    paths = {"user": f"/proc/{pid}/ns/user", "network": f"/proc/{pid}/ns/net"}
    for n in spec["linux"]["namespaces"]:
        if n["type"] in paths:
            n["path"] = paths.pop(n["type"])
    if paths:
        raise UsageError("--network container:NAME needs a user and a network namespace of the sandbox's own to "
                         "replace", hint="keep the default namespaces")
    files = x.setdefault("files", {})
    for name in ("hosts", "resolv.conf"):
        if name in (ox.get("files") or {}):
            files[name] = ox["files"][name]
