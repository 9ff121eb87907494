"""sbx: rootless containers and sandboxes for Linux.

    import sandbox
    r = sandbox.run(["echo", "hi"], rootfs="/", capture_output=True, text=True)

`import sandbox` stays light: the API (which needs subprocess) loads on first use, and the
CLI's run path never imports typer."""
from .errors import SandboxError, UsageError, LaunchError, CommandNotFound, CommandNotExecutable

__all__ = ["run", "Popen", "CompletedProcess", "CalledProcessError", "SandboxError", "UsageError",
           "LaunchError", "CommandNotFound", "CommandNotExecutable"]
__version__ = "0.1.0"

_API = {"run", "Popen", "CompletedProcess", "CalledProcessError"}


def __getattr__(name):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
