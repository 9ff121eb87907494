"""Platforms (``os/arch[/variant]``): the host's, parsing ``--platform``, and choosing from an index."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sandbox.image.errors import ImageError

_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "i386": "386", "i686": "386",
    "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm", "armv5tel": "arm",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64le", "loongarch64": "loong64",
}
_OSES = frozenset({"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "illumos", "solaris"})
_VARIANT = {"armv7l": "v7", "armv6l": "v6", "armv5tel": "v5", "aarch64": "v8", "arm64": "v8"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s

    def matches(self, p: dict) -> bool:
        """True if an index entry's ``platform`` object is usable on this platform."""
        if p.get("os") != self.os or normalize_arch(p.get("architecture", "")) != self.architecture:
            return False
        want, have = self.variant, p.get("variant")
        if want is None or have is None:
            return True
        if self.architecture == "arm64":  # v8 is the default arm64 variant
            return want == have or {want, have} <= {"v8", ""}
        return want == have


def normalize_arch(arch: str) -> str:
    return _ARCH.get(arch, arch)


def host() -> Platform:
    """The platform of the running kernel (``SBX_PLATFORM`` overrides it, for tests and cross pulls)."""
    override = os.environ.get("SBX_PLATFORM")
    if override:
        return parse(override)
    machine = os.uname().machine  # what platform.machine() reads, without importing it
    arch = normalize_arch(machine)
    return Platform("linux", arch, _VARIANT.get(machine) if arch == "arm" else None)


def parse(s: str) -> Platform:
    """Parse ``os/arch[/variant]`` (``linux/arm64/v8``); an arch alone means linux, an OS alone the host's arch."""
    parts = s.strip().split("/")
    if len(parts) == 1 and parts[0]:
        # Like containerd's platforms.Parse: an OS alone means the host architecture, else an arch on linux.
        if parts[0].lower() in _OSES:
            h = host()
            return Platform(parts[0].lower(), h.architecture, h.variant)
        parts = ["linux", parts[0]]
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ImageError(f"invalid platform {s!r}", hint="use os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")
    return Platform(parts[0].lower(), normalize_arch(parts[1].lower()), parts[2].lower() if len(parts) == 3 else None)


def choose(manifests: list[dict], want: Platform) -> dict | None:
    """Pick the index entry for ``want``: an exact variant match first, then any compatible one.
    Attestation manifests (``vnd.docker.reference.type``) and unknown platforms are ignored."""
    candidates = []
    for m in manifests:
        if (m.get("annotations") or {}).get("vnd.docker.reference.type"):
            continue
        p = m.get("platform")
        if isinstance(p, dict) and want.matches(p):
            candidates.append(m)
    if not candidates:
        return None
    for m in candidates:
        if want.variant and m["platform"].get("variant") == want.variant:
            return m
    return candidates[0]


def describe(manifests: list[dict]) -> str:
    seen = []
    for m in manifests:
        p = m.get("platform") or {}
        if p.get("os") and p.get("architecture") and p.get("os") != "unknown":
            s = f"{p['os']}/{p['architecture']}" + (f"/{p['variant']}" if p.get("variant") else "")
            if s not in seen:
                seen.append(s)
    return ", ".join(seen) or "none"
