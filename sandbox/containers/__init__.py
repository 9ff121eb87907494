"""The container engine: one record per container (state.py), the store of records (store.py),
the lifecycle verbs (lifecycle.py), the detached supervisor (monitor.py), logs and attach.
docs/engine.md is the contract.  Importing the package imports nothing."""

# The docker-py-shaped API (client.py), loaded on first use: `from sandbox import containers;
# containers.run(...)`.
_CLIENT = frozenset(("run", "create", "get", "list", "prune", "Container", "ExecResult", "NotFound",
                     "ContainerError"))


def __getattr__(name):
    if name in _CLIENT:
        from . import client
        return getattr(client, name)
    raise AttributeError(f"module 'sandbox.containers' has no attribute {name!r}")
