"""Where sbx keeps things, for the context in force (`sandbox.config.current()`): the rules, the
checks and their hints live in sandbox/config.py; these are the runtime layer's short names.

Runtime state (mount points, sockets) lives under $XDG_RUNTIME_DIR/sbx, or /tmp/sbx-UID when
that is unset (su, sudo, ssh, batch jobs); persistent data under $SBX_ROOT, else
$XDG_DATA_HOME/sbx, else ~/.local/share/sbx.  `sbx --root/--runroot` override both for the
command they run (`config.use`)."""
from .. import config


def runtime_dir():
    """The runtime root, created and checked."""
    return config.current().runtime_dir()


def mount_base():
    """An empty directory every sandbox mounts its private tmpfs on, inside its own mount
    namespace: one host directory serves all of them and nothing is left behind."""
    return config.current().mount_base()


def data_root():
    """Where persistent data goes.  Only the rule: nothing is created (the image store and the
    run cache use it as it is)."""
    return config.current().data_root


def data_dir():
    """data_root(), created and checked."""
    return config.current().data_dir()
