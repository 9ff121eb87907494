"""Error types for the image store, layer unpacking, archives and the registry client.

Every error raised here is a :class:`SandboxError`: a one-line, lower-case message that names the object
it is about, an optional ``hint`` telling the user what to do, and ``exit_code`` 125 (Docker's exit code
for errors of the runner itself). The CLI catches :class:`SandboxError` once at the top.

``sandbox.errors`` is the project-wide home of :class:`SandboxError`; until it exists this module defines
a minimal stand-in with the same constructor, so that the two can be reconciled without touching callers.
"""

from __future__ import annotations

try:  # the project-wide base class, once the launcher work has created it
    from sandbox.errors import SandboxError  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised only while sandbox/errors.py does not exist

    class SandboxError(Exception):  # type: ignore[no-redef]
        """A user-facing error: ``str(err)`` is the message, ``err.hint`` says what to do about it."""

        exit_code = 125

        def __init__(self, msg: str, hint: str | None = None) -> None:
            super().__init__(msg)
            self.hint = hint


class ImageError(SandboxError):
    """Base class of everything in this package."""


class ReferenceError_(ImageError):
    """An image reference (``name[:tag][@digest]``) that does not parse."""


class ImageNotFound(ImageError):
    """No local image matches a reference or id."""


class StoreError(ImageError):
    """The local store is unusable (permissions, disk full, corrupt metadata)."""


class DigestMismatch(StoreError):
    """Content did not hash to the digest it was announced with."""


class LayerError(ImageError):
    """A layer tar that cannot be unpacked, or that tries to write outside its directory."""


class ArchiveError(ImageError):
    """A docker-archive / oci-archive / OCI layout that cannot be read or written."""


class RegistryError(ImageError):
    """A registry that cannot be reached or that answered with an error."""


class AuthError(RegistryError):
    """The registry refused our (lack of) credentials."""


class ManifestUnknown(RegistryError):
    """The registry does not have the requested repository, tag or digest."""
