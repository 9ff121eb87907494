"""Regression tests for image-store defects (issues 14 and 7): repeated layers, malformed store
input, rmi semantics, export of split hardlinks, stable image sizes, removal of files owned by
mapped ids.  Black-box: images are imported from the busybox test root and built with `sbx build`,
then run, pushed, pulled, saved and removed through the CLI as the unprivileged test users."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import sbxtest
from sbx_image_testlib import Entry, build_image, busybox_entries, make_tar, write_layout
from sbxtest import assert_sbx_error, ok


def sbx(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    e = None
    if env:
        e = dict(os.environ)
        e.update(env)
    return sbxtest.sbx(*args, env=e, timeout=timeout, input=input)


@pytest.fixture(scope="module")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Path:
    """The busybox test root as a tar owned by root (as an image's files are)."""
    tar = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"

    def as_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".", filter=as_root)
    return tar


@pytest.fixture
def base(rootfs_tar: Path) -> str:
    """base:1 in this test's own store (SBX_ROOT is per test, see conftest.isolated_env)."""
    ok(sbx("import", str(rootfs_tar), "base:1"))
    return "base:1"


def build(tmp_path: Path, tag: str, dockerfile: str) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / f"ctx-{tag.replace(':', '-').replace('/', '-')}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return sbx("build", "-t", tag, str(ctx), timeout=300)


def inspect(image: str) -> dict:
    docs = json.loads(ok(sbx("inspect", image)))
    return docs[0]


def has_subuid() -> bool:
    from sandbox.runtime import idmap
    idmap._cache.clear()
    return idmap.detect()[0] == "helper"


# --- 14.1: a layer listed several times ------------------------------------------------------------

def test_an_image_may_list_the_same_layer_several_times(tmp_path: Path, base: str, plain_registry) -> None:  # type: ignore[no-untyped-def]
    # RUN steps that change nothing give the same empty layer, in several places.
    ok(build(tmp_path, "dup:1", f"FROM {base}\nRUN true\nRUN true\nRUN echo one > /one\nRUN true\n"))
    layers = inspect("dup:1")["RootFS"]["Layers"]
    assert len(layers) == 5 and len(set(layers)) == 3, layers
    assert ok(sbx("run", "--rm", "dup:1", "cat", "/one")) == "one\n"
    # FROM it, adding more repeats on top.
    ok(build(tmp_path, "dup:2", "FROM dup:1\nRUN true\nRUN cat /one /one > /two\nRUN true\n"))
    assert ok(sbx("run", "--rm", "dup:2", "cat", "/two")) == "one\none\n"
    # Pushed, then pulled into a fresh store (run pulls it).
    dest = f"{plain_registry.host}/test/dup:2"
    ok(sbx("push", "dup:2", dest))
    fresh = {"SBX_ROOT": str(tmp_path / "fresh")}
    r = sbx("run", "--rm", dest, "sh", "-c", "cat /two; ls /", env=fresh)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("one\none\n") and "one" in r.stdout.split()
    ok(build(tmp_path, "dup:3", f"FROM {dest}\nRUN true\nRUN rm /one\n"))
    r = sbx("run", "--rm", "dup:3", "sh", "-c", "cat /two; test -e /one || echo gone")
    assert r.stdout == "one\none\ngone\n", r.stderr


def test_repeated_non_empty_layers_merge_as_listed(tmp_path: Path) -> None:
    # As a registry image may have them: layers [busybox, A, B, A, B, A] where A adds /x and B
    # whites it out: the topmost repeat decides.
    a = make_tar([Entry("x", "file", b"x\n")])
    b = make_tar([Entry(".wh.x", "file")])
    bb = make_tar(busybox_entries())
    for layers, name, want in (([bb, a, b, a, b, a], "abab:1", "x\n"), ([bb, a, b, a, b], "abab:2", "gone\n"),
                               ([bb, b, a, a, bb, b, a], "abab:3", "x\n")):
        img = build_image(layers)
        lay = write_layout(tmp_path / name.replace(":", "-"), [(img, name)])
        ok(sbx("load", "-i", str(lay)))
        assert ok(sbx("run", "--rm", name, "sh", "-c", "cat /x 2>/dev/null || echo gone")) == want, name
