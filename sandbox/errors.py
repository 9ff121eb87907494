"""The project's error type.  Every error a user can cause is a SandboxError with a message that
names the object and, where we know one, a hint that says how to fix it (Charliecloud's
FATAL(msg, hint)).  The CLI catches SandboxError once, at the top, and exits with `exit_code`
(Docker's convention: 125 for our own errors, 126 not executable, 127 not found)."""


class SandboxError(Exception):
    exit_code = 125

    def __init__(self, msg, hint=None):
        super().__init__(msg)
        self.msg = msg
        self.hint = hint

    def __str__(self):
        return self.msg


class UsageError(SandboxError, ValueError):
    """Bad input: an option, a volume spec, a user, a path."""


class StateError(SandboxError):
    """sbx's own directories cannot be created or used."""


class LaunchError(SandboxError):
    """A step of starting the sandbox failed; `stage` names it and `errno` says why."""

    def __init__(self, msg, hint=None, stage=None, errno=None):
        SandboxError.__init__(self, msg, hint)
        self.stage = stage
        self.errno = errno


class CommandNotFound(LaunchError, FileNotFoundError):
    exit_code = 127

    def __init__(self, msg, hint=None, stage=None, errno=None):
        LaunchError.__init__(self, msg, hint, stage, errno)
        self.strerror = msg


class CommandNotExecutable(LaunchError, PermissionError):
    exit_code = 126

    def __init__(self, msg, hint=None, stage=None, errno=None):
        LaunchError.__init__(self, msg, hint, stage, errno)
        self.strerror = msg
