"""Fixtures for the image tests: real peers, no mocks.

* Registries are Debian's ``docker-registry`` on 127.0.0.1 with a free port, configured by a YAML file
  written by ``start_registry`` (sbx_image_testlib.py): plain HTTP, htpasswd basic auth, TLS with a CA
  made by ``openssl``, or token auth with a small token issuer (an HTTP server in the test process
  signing RS256 JWTs with ``openssl``).
* Test images are built offline from busybox-static into OCI layouts by the helpers (independent of
  sbx), and pushed with ``skopeo copy``.
* Every test gets its own ``SBX_ROOT``, ``HOME`` and config dirs, so nothing touches the user's files.

Peers that are missing make the tests that need them skip with the package to install.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Load the helpers under a unique module name, whatever pytest's import mode: tests do
# `from sbx_image_testlib import ...`.
if "sbx_image_testlib" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("sbx_image_testlib", Path(__file__).with_name("sbx_image_testlib.py"))
    assert _spec is not None and _spec.loader is not None
    _lib = importlib.util.module_from_spec(_spec)
    sys.modules["sbx_image_testlib"] = _lib
    _spec.loader.exec_module(_lib)

from sbx_image_testlib import (  # noqa: E402
    SANDBOX_PATH, BuiltImage, Entry, build_image, busybox_entries, make_tar, multi_arch_index, multi_layers, need,
    start_registry, write_layout,
)

# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "sbxroot"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for v in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "SBX_PLATFORM"):
        monkeypatch.delenv(v, raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from sandbox.image.store import Store

    s = Store(str(tmp_path / "sbxroot"))
    s.init()
    return s


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def busybox_image() -> BuiltImage:
    return build_image([make_tar(busybox_entries())], cmd=["/bin/sh"])


@pytest.fixture(scope="session")
def multi_image() -> BuiltImage:
    return build_image(multi_layers(), cmd=["/bin/cat", "/etc/hello"])


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory, busybox_image: BuiltImage, multi_image: BuiltImage):  # type: ignore[no-untyped-def]
    """A plain-HTTP registry with test/busybox, test/multi and test/index (two platforms) pushed by skopeo."""
    need("skopeo")
    work = tmp_path_factory.mktemp("registry-plain")
    reg, _ = start_registry(work)
    try:
        lay = write_layout(work / "layout", [(busybox_image, "busybox"), (multi_image, "multi")])
        reg.push_layout(lay, "busybox", "test/busybox:latest")
        reg.push_layout(lay, "multi", "test/multi:latest")
        other = build_image([make_tar([Entry("ARM", "file", b"arm64\n")])], arch="arm64", created="2024-05-05T00:00:00Z")
        idx = multi_arch_index(work / "index-layout", busybox_image, other, "arm64", "multi-arch")
        reg.push_layout(idx, "multi-arch", "test/index:latest", all_=True)
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def sbx(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run the image CLI in a subprocess: sbx("pull", ref) -> CompletedProcess (never raises)."""
    def _run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        e = dict(os.environ)
        e["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        e.update(env or {})
        # cwd: `python -m` puts it first on sys.path; keep a source checkout out of there.
        return subprocess.run([sys.executable, "-m", "sandbox.cli.images", *args], capture_output=True, text=True,
                              input=input, env=e, timeout=timeout, cwd=tmp_path)
    return _run


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory, busybox_image: BuiltImage):  # type: ignore[no-untyped-def]
    """htpasswd basic auth (bob/hunter2), with test/busybox pushed."""
    need("skopeo")
    work = tmp_path_factory.mktemp("registry-htpasswd")
    reg, _ = start_registry(work, auth="htpasswd")
    try:
        lay = write_layout(work / "layout", [(busybox_image, "busybox")])
        reg.push_layout(lay, "busybox", "test/busybox:latest")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, busybox_image: BuiltImage):  # type: ignore[no-untyped-def]
    """HTTPS with a certificate from a throwaway CA (reg.ca), with test/busybox pushed."""
    need("skopeo")
    work = tmp_path_factory.mktemp("registry-tls")
    reg, _ = start_registry(work, tls=True)
    try:
        lay = write_layout(work / "layout", [(busybox_image, "busybox")])
        reg.push_layout(lay, "busybox", "test/busybox:latest")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, busybox_image: BuiltImage):  # type: ignore[no-untyped-def]
    """Token auth: anonymous pull of public/*, alice/secret may do anything. Yields (registry, issuer)."""
    need("skopeo")
    work = tmp_path_factory.mktemp("registry-token")
    reg, issuer = start_registry(work, auth="token")
    try:
        lay = write_layout(work / "layout", [(busybox_image, "busybox")])
        reg.push_layout(lay, "busybox", "public/busybox:latest")
        reg.push_layout(lay, "busybox", "private/busybox:latest")
        yield reg, issuer
    finally:
        reg.stop()
        issuer.stop()
