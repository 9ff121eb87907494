"""The network's launch hooks: `hooks_for(spec)` reads the mode the spec records ("sbx"
annotations, key "network": `modes.Mode.annotation()` plus "ports" and "exposed") and gives the
hooks that connect the held sandbox (runtime/hooks.py: attach(pid) between clone and execve,
teardown after exit).  Every supervisor gets them through `containers.lifecycle.launch_hooks`.

A hook that connects a container also has `settings` once attached: its NetworkSettings
(IPAddress, Gateway, Ports in Docker's shape, SandboxKey), which the supervisor records."""

def hooks_for(spec):
    """A tuple of Hook for the spec's network mode: () for none, host and container:NAME (the
    join is the launcher's, through the spec's namespace path), slirp4netns's or pasta's hook,
    or the user-defined network's (`sandbox.network.bridge.hook_for(spec, name)`)."""
    net = spec.get("sbx", {}).get("network") or {}
    mode = net.get("mode", "none")
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

