"""Image references: parse and normalise them the way Docker does.

``busybox``                      -> ``docker.io/library/busybox:latest``
``user/app:1.0``                 -> ``docker.io/user/app:1.0``
``localhost:5000/x/y:tag``       -> ``localhost:5000/x/y:tag``
``quay.io/a/b@sha256:<64 hex>``  -> pinned by digest, no tag

The grammar is the one of github.com/distribution/reference (``reference.go``/``normalize.go``): the first
path component is a registry host only if it contains ``.`` or ``:`` or is ``localhost`` (or is a bracketed
IPv6 address); repository components are lower case; a tag is ``[\\w][\\w.-]{0,127}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.image.errors import ReferenceError_

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
#: Where ``docker.io`` is really served from (the v2 API endpoint).
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
_DOMAIN_RE = re.compile(rf"{_DOMAIN}\Z")
_TAG_RE = re.compile(rf"{_TAG}\Z")
_DIGEST_RE = re.compile(rf"{_DIGEST}\Z")
_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}\Z")

NAME_TOTAL_MAX = 255


def is_digest(s: str) -> bool:
    """True for a canonical ``sha256:<64 lower-case hex>`` digest (the only algorithm the store keeps)."""
    return bool(_SHA256_RE.match(s))


def check_digest(s: str, what: str = "digest") -> str:
    """Return ``s`` if it is a canonical sha256 digest, else raise :class:`ReferenceError_`."""
    if not is_digest(s):
        if _DIGEST_RE.match(s):
            raise ReferenceError_(f"unsupported {what} {s!r}: only sha256 digests are supported")
        raise ReferenceError_(f"invalid {what} {s!r}", hint="a digest looks like sha256:<64 hex digits>")
    return s


def looks_like_image_id(s: str) -> bool:
    """True if ``s`` could be (a prefix of) an image id: ``sha256:<hex>`` or at least 4 hex digits."""
    if s.startswith("sha256:"):
        s = s[7:]
    return 4 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s)


@dataclass(frozen=True)
class Reference:
    """A normalised image reference.

    ``domain`` is the registry host (with port), ``path`` the repository inside it, ``tag`` and ``digest``
    are optional but at least one is set after :func:`parse` (``latest`` is filled in when neither is
    given). ``str(ref)`` is the canonical, fully qualified form.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``domain/path``: the repository, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as Docker prints it: ``busybox`` for ``docker.io/library/busybox``."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_REPO_PREFIX) and self.path.count("/") == 1:
                return self.path[len(OFFICIAL_REPO_PREFIX):]
            return self.path
        return self.name

    @property
    def registry_host(self) -> str:
        """The host:port to talk the v2 API to (``registry-1.docker.io`` for ``docker.io``)."""
        return DOCKER_HUB_ENDPOINT if self.domain == DEFAULT_DOMAIN else self.domain

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"invalid tag {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, check_digest(digest))

    @property
    def tagged(self) -> str | None:
        """``name:tag`` if there is a tag."""
        return f"{self.name}:{self.tag}" if self.tag else None

    @property
    def digested(self) -> str | None:
        """``name@digest`` if there is a digest."""
        return f"{self.name}@{self.digest}" if self.digest else None

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def familiar(self) -> str:
        s = self.familiar_name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    if i == -1:
        return DEFAULT_DOMAIN, name
    first = name[:i]
    if "." in first or ":" in first or first == "localhost" or first.startswith("[") or first.lower() != first:
        return first, name[i + 1:]
    return DEFAULT_DOMAIN, name


def parse(s: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise an image reference like Docker's ``ParseNormalizedNamed``.

    ``default_tag`` fills in ``latest`` when the reference has neither a tag nor a digest. Raises
    :class:`ReferenceError_` with a message naming the reference and what is wrong with it.
    """
    if not isinstance(s, str) or not s:
        raise ReferenceError_("invalid reference format: empty reference")
    orig = s
    if s != s.strip() or any(c.isspace() for c in s):
        raise ReferenceError_(f"invalid reference format: {orig!r} contains whitespace")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
        if "@" in digest:
            raise ReferenceError_(f"invalid reference format: {orig!r} has more than one '@'")
        if not _DIGEST_RE.match(digest):
            raise ReferenceError_(
                f"invalid reference format: {orig!r} has an invalid digest",
                hint="a digest looks like sha256:<64 hex digits>",
            )
        check_digest(digest, "digest in reference " + repr(orig))
    tag = None
    # A ':' after the last '/' separates the tag (a ':' before it belongs to a host:port).
    colon = s.rfind(":")
    if colon > s.rfind("/"):
        s, tag = s[:colon], s[colon + 1:]
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"invalid reference format: {orig!r} has an invalid tag {tag!r}")
    if not s:
        raise ReferenceError_(f"invalid reference format: {orig!r} has no repository name")
    domain, path = _split_domain(s)
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if not _DOMAIN_RE.match(domain):
        raise ReferenceError_(f"invalid reference format: {orig!r} has an invalid registry host {domain!r}")
    if path != path.lower():
        raise ReferenceError_(f"invalid reference format: repository name {path!r} must be lowercase")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    if not _PATH_RE.match(path):
        raise ReferenceError_(
            f"invalid reference format: {orig!r}",
            hint="repository names are lower-case letters, digits and separators (. _ __ -), "
            "split by '/', optionally after a registry host[:port]",
        )
    if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
        raise ReferenceError_(f"invalid reference format: repository name {orig!r} is longer than 255 characters")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_repository(s: str) -> Reference:
    """Parse a bare repository name (no tag, no digest), e.g. for ``sbx push --from``."""
    ref = parse(s, default_tag=False)
    if ref.tag or ref.digest:
        raise ReferenceError_(f"invalid repository name {s!r}: it has a tag or digest")
    return ref
