"""The OCI runtime's errors: runc's exit code (1) for every failure a caller can cause."""
from ..errors import SandboxError


class OCIError(SandboxError):
    exit_code = 1


class Refused(OCIError):
    """A config.json field sbx-runc cannot honour here: the message names the field."""

    def __init__(self, field, why, hint=None):
        OCIError.__init__(self, f"{field}: {why}", hint=hint)
        self.field = field


class NoSuchContainer(OCIError):
    def __init__(self, cid):
        OCIError.__init__(self, f"container does not exist: {cid}",
                          hint="'sbx-runc list' shows the containers under this --root")


class WrongState(OCIError):
    """An operation the container's status does not allow (the spec's "MUST fail without effect")."""
