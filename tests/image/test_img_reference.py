"""Reference parsing and normalisation, checked against Docker's rules (distribution/reference)."""

from __future__ import annotations

import pytest

from sandbox.image import platform as plat
from sandbox.image.errors import ImageError, ReferenceError_
from sandbox.image.reference import looks_like_image_id, parse

D = "sha256:" + "a" * 64

GOOD = [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/x/y:tag", "localhost:5000/x/y:tag", "localhost:5000/x/y:tag"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("quay.io/a/b/c@" + D, "quay.io/a/b/c@" + D, "quay.io/a/b/c@" + D),
    ("busybox@" + D, "docker.io/library/busybox@" + D, "busybox@" + D),
    ("busybox:1@" + D, "docker.io/library/busybox:1@" + D, "busybox:1@" + D),
    ("ab-c_d__e/f---g.h", "docker.io/ab-c_d__e/f---g.h:latest", "ab-c_d__e/f---g.h:latest"),
    ("Example.COM/x", "Example.COM/x:latest", "Example.COM/x:latest"),
    ("x:Tag_1.2-3", "docker.io/library/x:Tag_1.2-3", "x:Tag_1.2-3"),
]


@pytest.mark.parametrize("s,full,familiar", GOOD)
def test_normalise(s: str, full: str, familiar: str) -> None:
    r = parse(s)
    assert str(r) == full
    assert r.familiar() == familiar
    assert parse(str(r)) == r


def test_parts() -> None:
    r = parse("localhost:5000/x/y:tag")
    assert (r.domain, r.path, r.tag, r.digest) == ("localhost:5000", "x/y", "tag", None)
    assert r.registry_host == "localhost:5000"
    assert parse("busybox").registry_host == "registry-1.docker.io"
    assert parse("busybox").name == "docker.io/library/busybox"
    assert parse("busybox", default_tag=False).tag is None


BAD = [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("user/App", "lowercase"),
    ("busybox:", "invalid tag"),
    ("busybox:-x", "invalid tag"),
    ("busybox:" + "t" * 129, "invalid tag"),
    ("busybox@sha256:abc", "invalid digest"),
    ("busybox@md5:" + "a" * 32, "only sha256"),
    ("busybox@sha256:" + "A" * 64, "sha256"),
    ("a@b@" + D, "more than one"),
    ("bus box", "whitespace"),
    ("/busybox", "invalid reference"),
    ("busybox/", "invalid reference"),
    ("a//b", "invalid reference"),
    ("-a/b", "invalid reference"),
    ("a/b_", "invalid reference"),
    ("a/b..c", "invalid reference"),
    (":tag", "no repository"),
    ("loc@lhost:5000/x", "invalid"),
    ("x" * 300, "longer than 255"),
    ("a.b_c/x", "invalid registry host"),  # a first component with a dot is a host; '_' is not allowed there
]


@pytest.mark.parametrize("s,why", BAD)
def test_bad_references(s: str, why: str) -> None:
    with pytest.raises(ReferenceError_) as ei:
        parse(s)
    assert why in str(ei.value) or why in (ei.value.hint or "")


def test_image_id_detection() -> None:
    assert looks_like_image_id("abcd") and looks_like_image_id("sha256:" + "0" * 64)
    assert not looks_like_image_id("abc") and not looks_like_image_id("busybox")


def test_platforms() -> None:
    p = plat.parse("linux/arm64/v8")
    assert (p.os, p.architecture, p.variant) == ("linux", "arm64", "v8")
    assert str(plat.parse("amd64")) == "linux/amd64"
    assert plat.parse("linux/aarch64").architecture == "arm64"
    assert plat.parse("linux") == plat.Platform("linux", plat.host().architecture, plat.host().variant)
    with pytest.raises(ImageError, match="invalid platform"):
        plat.parse("linux/")
    entries = [
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"digest": "e", "platform": {"os": "linux", "architecture": "arm64"}},
    ]
    assert plat.choose(entries, plat.parse("linux/arm/v7"))["digest"] == "b"  # type: ignore[index]
    assert plat.choose(entries, plat.parse("linux/amd64"))["digest"] == "c"  # type: ignore[index]
    assert plat.choose(entries, plat.parse("linux/arm64/v8"))["digest"] == "e"  # type: ignore[index]
    assert plat.choose(entries, plat.parse("linux/s390x")) is None
    assert plat.describe(entries) == "linux/arm/v6, linux/arm/v7, linux/amd64, linux/arm64"
