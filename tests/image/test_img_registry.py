"""Pull and push against real docker-registry instances; skopeo checks the results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sbx_image_testlib import (
    SANDBOX_PATH, Entry, build_image, busybox_entries, free_port, make_tar, skopeo, write_layout,
)

from sandbox.image import platform as plat
from sandbox.image.errors import (
    AuthError, DigestMismatch, ImageError, ManifestUnknown, ReferenceError_, RegistryError, SandboxError,
)
from sandbox.image.store import Store
from sandbox.registry.auth import Credentials, find_credentials, save_login
from sandbox.registry.pull import PullOptions, pull
from sandbox.registry.push import PushOptions, push
from sandbox.registry.transport import RegistryOptions

FAST = RegistryOptions(retries=1, backoff=0.05)


def opts(**kw) -> PullOptions:  # type: ignore[no-untyped-def]
    reg = kw.pop("registry", FAST)
    return PullOptions(registry=reg, **kw)


# --- pull -------------------------------------------------------------------------------------------

def test_pull_busybox(store: Store, plain_registry, busybox_image) -> None:  # type: ignore[no-untyped-def]
    events: list[tuple[str, str]] = []
    img = pull(store, f"{plain_registry.host}/test/busybox", opts(), progress=lambda e, d, *a: events.append((e, d)))
    assert img.id == busybox_image.id
    assert img.manifest_digest == busybox_image.digest
    assert img.repo_tags == [f"{plain_registry.host}/test/busybox:latest"]
    assert img.repo_digests == [f"{plain_registry.host}/test/busybox@{busybox_image.digest}"]
    (layer,) = store.unpack(img)
    assert os.path.isfile(os.path.join(layer, "bin/busybox")) and os.path.islink(os.path.join(layer, "bin/sh"))
    assert ("downloaded", img.layers[0]["digest"]) in events
    assert img.size == store.layer_meta(img.diff_ids[0])["size"]
    assert store.check() == []

    # A second pull downloads nothing.
    events.clear()
    again = pull(store, f"{plain_registry.host}/test/busybox:latest", opts(), progress=lambda e, d, *a: events.append((e, d)))
    assert again.id == img.id
    assert [e for e, _ in events if e in ("download", "downloaded")] == []
    assert ("exists", img.layers[0]["digest"]) in events


def test_pull_by_digest_and_multi_layer(store: Store, plain_registry, multi_image) -> None:  # type: ignore[no-untyped-def]
    img = pull(store, f"{plain_registry.host}/test/multi@{multi_image.digest}", opts())
    assert img.id == multi_image.id and img.repo_tags == []
    dirs = store.unpack(img)
    assert len(dirs) == 3
    assert os.path.isfile(os.path.join(dirs[1], "etc/hello"))
    assert store.resolve(f"{plain_registry.host}/test/multi@{multi_image.digest}").id == img.id
    assert store.resolve(img.id[7:19]).id == img.id


def test_pull_index_selects_platform(store: Store, plain_registry, busybox_image) -> None:  # type: ignore[no-untyped-def]
    img = pull(store, f"{plain_registry.host}/test/index", opts())
    assert img.id == busybox_image.id  # the host-platform manifest
    idx_digest = plain_registry.inspect_digest("test/index:latest", raw=True)
    assert f"{plain_registry.host}/test/index@{idx_digest}" in img.repo_digests
    other_arch = "arm64" if plat.host().architecture != "arm64" else "amd64"
    if other_arch == "arm64":
        arm = pull(store, f"{plain_registry.host}/test/index", opts(platform=plat.parse("linux/arm64")))
        assert arm.config["architecture"] == "arm64" and arm.id != img.id
    with pytest.raises(ImageError, match="no image for platform linux/s390x") as ei:
        pull(store, f"{plain_registry.host}/test/index", opts(platform=plat.parse("linux/s390x")))
    assert "linux/arm64" in (ei.value.hint or "")


def test_pull_errors(store: Store, plain_registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ManifestUnknown, match="test/nothere:latest: not found"):
        pull(store, f"{plain_registry.host}/test/nothere", opts())
    with pytest.raises(ManifestUnknown):
        pull(store, f"{plain_registry.host}/test/busybox:nosuchtag", opts())
    with pytest.raises(ReferenceError_, match="invalid reference format"):
        pull(store, f"{plain_registry.host}/Test/UPPER", opts())
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match=f"cannot connect to registry 127.0.0.1:{port}") as ei:
        pull(store, f"127.0.0.1:{port}/x/y", opts())
    assert ei.value.hint and time.monotonic() - t0 < 10
    assert store.images() == [] and list(store.blobs) == []


def test_pull_corrupt_blob_in_registry(tmp_path: Path, store: Store) -> None:
    from sbx_image_testlib import start_registry

    reg, _ = start_registry(tmp_path / "reg")
    try:
        img = build_image([make_tar([Entry("f", "file", b"payload" * 1000)])])
        lay = write_layout(tmp_path / "layout", [(img, "x")])
        reg.push_layout(lay, "x", "test/corrupt:latest")
        layer = json.loads(img.manifest)["layers"][0]["digest"]
        p = reg.blob_path(layer)
        data = bytearray(p.read_bytes())
        data[100] ^= 0xFF
        os.chmod(p, 0o644)
        p.write_bytes(bytes(data))
        with pytest.raises(DigestMismatch, match="does not match its digest"):
            pull(store, f"{reg.host}/test/corrupt", opts())
        assert store.images() == [] and not store.blobs.has(layer)
        assert os.listdir(store.tmp_dir) == [] and store.check() == []
    finally:
        reg.stop()


# --- push -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 64 * 1024], ids=["monolithic", "chunked"])
def test_push_roundtrip_with_skopeo(store: Store, plain_registry, multi_image, chunk, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img = pull(store, f"{plain_registry.host}/test/multi", opts())
    repo = f"pushed/{'mono' if chunk is None else 'chunk'}"
    events: list[str] = []
    target, digest = push(store, img.id, f"{plain_registry.host}/{repo}:v1",
                          PushOptions(chunk_size=chunk, mount=False, registry=FAST),
                          progress=lambda e, d, *a: events.append(e))
    assert digest == img.manifest_digest == multi_image.digest
    assert plain_registry.inspect_digest(f"{repo}:v1") == digest
    assert "uploaded" in events
    # skopeo copies it back out with identical digests
    out = tmp_path / "copy"
    skopeo("copy", *plain_registry.skopeo_src(), f"docker://{plain_registry.host}/{repo}:v1", f"oci:{out}:v1")
    idx = json.loads((out / "index.json").read_text())
    assert idx["manifests"][0]["digest"] == digest
    # pushing again uploads nothing
    events.clear()
    push(store, img.id, f"{plain_registry.host}/{repo}:v2", PushOptions(registry=FAST),
         progress=lambda e, d, *a: events.append(e))
    assert "uploaded" not in events and events.count("exists") == 4


def test_push_cross_repo_mount(store: Store, plain_registry) -> None:  # type: ignore[no-untyped-def]
    img = pull(store, f"{plain_registry.host}/test/busybox", opts())
    events: list[str] = []
    _, digest = push(store, f"{plain_registry.host}/test/busybox", f"{plain_registry.host}/mounted/bb:latest",
                     PushOptions(registry=FAST), progress=lambda e, d, *a: events.append(e))
    assert events.count("mounted") == 2 and "uploaded" not in events
    assert plain_registry.inspect_digest("mounted/bb:latest") == digest == img.manifest_digest


def test_push_errors(store: Store, plain_registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageError, match="no such image"):
        push(store, "nothere:latest", f"{plain_registry.host}/x:y", PushOptions(registry=FAST))
    img = pull(store, f"{plain_registry.host}/test/busybox", opts())
    with pytest.raises(ImageError, match="image id"):
        push(store, img.id[7:19], None, PushOptions(registry=FAST))


# --- auth -------------------------------------------------------------------------------------------

def test_basic_auth(store: Store, auth_registry, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    ref = f"{auth_registry.host}/test/busybox"
    with pytest.raises(AuthError, match="requires authentication") as ei:
        pull(store, ref, opts())
    assert f"sbx login {auth_registry.host}" in (ei.value.hint or "")
    bad = RegistryOptions(credentials=Credentials("bob", "wrong"), retries=1, backoff=0.05)
    with pytest.raises(AuthError, match="rejected the username or password") as ei:
        pull(store, ref, opts(registry=bad))
    assert "wrong" not in str(ei.value) + str(ei.value.hint)
    # credentials from ~/.docker/config.json
    save_login(auth_registry.host, Credentials("bob", "hunter2"))
    cfg = isolated_env / ".docker" / "config.json"
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    img = pull(store, ref, opts())
    target, digest = push(store, ref, f"{auth_registry.host}/test/pushed:1", PushOptions(registry=FAST))
    assert auth_registry.inspect_digest("test/pushed:1") == digest == img.manifest_digest


def test_credentials_lookup_order(isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_login("reg.example:5000", Credentials("docker", "pw1"))
    assert find_credentials("reg.example:5000").username == "docker"  # type: ignore[union-attr]
    auth = tmp_path / "run" / "containers" / "auth.json"
    auth.parent.mkdir(parents=True)
    import base64

    auth.write_text(json.dumps({"auths": {"reg.example:5000/team": {"auth": base64.b64encode(b"team:pw2").decode()}}}))
    assert find_credentials("reg.example:5000", "team/app").username == "team"  # type: ignore[union-attr]
    assert find_credentials("reg.example:5000", "other/app").username == "docker"  # type: ignore[union-attr]
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"auths": {"reg.example:5000": {"username": "env", "password": "pw3"}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(explicit))
    creds = find_credentials("reg.example:5000", "team/app")
    assert creds is not None and creds.username == "env"
    assert "pw3" not in repr(creds) and "env" not in repr(creds)
    save_login("docker.io", Credentials("hub", "pw4"))
    doc = json.loads((isolated_env / ".docker/config.json").read_text())
    assert "https://index.docker.io/v1/" in doc["auths"]


def test_token_auth(store: Store, token_registry) -> None:  # type: ignore[no-untyped-def]
    reg, issuer = token_registry
    img = pull(store, f"{reg.host}/public/busybox", opts())  # anonymous bearer token
    assert any(r["user"] is None and r["scopes"] == ["repository:public/busybox:pull"] for r in issuer.requests)
    with pytest.raises(AuthError, match="denied") as ei:
        pull(store, f"{reg.host}/private/busybox", opts())
    assert "sbx login" in (ei.value.hint or "")
    alice = RegistryOptions(credentials=Credentials("alice", "secret"), retries=1, backoff=0.05)
    pull(store, f"{reg.host}/private/busybox", opts(registry=alice))
    _, digest = push(store, img.id, f"{reg.host}/private/copy:1", PushOptions(registry=alice))
    assert digest == img.manifest_digest
    assert any(r["user"] == "alice" and "repository:private/copy:pull,push" in r["scopes"] for r in issuer.requests)
    assert reg.inspect_digest("private/copy:1") == digest
    wrong = RegistryOptions(credentials=Credentials("alice", "nope"), retries=1, backoff=0.05)
    with pytest.raises(AuthError, match="rejected the username or password"):
        pull(store, f"{reg.host}/private/busybox", opts(registry=wrong))


# --- TLS --------------------------------------------------------------------------------------------

def test_tls(store: Store, tls_registry, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    ref = f"{tls_registry.host}/test/busybox"
    with pytest.raises(RegistryError, match="not trusted") as ei:
        pull(store, ref, opts())
    assert "certs.d" in (ei.value.hint or "")
    # --tls-verify=false
    pull(store, ref, opts(registry=RegistryOptions(tls_verify=False, retries=1)))
    # CA in ~/.config/containers/certs.d/HOST:PORT/
    d = isolated_env / ".config" / "containers" / "certs.d" / tls_registry.host
    d.mkdir(parents=True)
    shutil.copy(tls_registry.ca, d / "ca.crt")
    img = pull(store, ref, opts())
    _, digest = push(store, img.id, f"{tls_registry.host}/test/tlspush:1", PushOptions(registry=FAST))
    assert digest == img.manifest_digest


def test_tls_hostname_mismatch_refused(tmp_path: Path, store: Store) -> None:
    from sbx_image_testlib import start_registry

    reg, _ = start_registry(tmp_path / "reg", tls=True, san="DNS:other.example")
    try:
        certs = tmp_path / "certs.d" / reg.host
        certs.mkdir(parents=True)
        shutil.copy(reg.ca, certs / "ca.crt")
        trusted = RegistryOptions(certs_dirs=(str(tmp_path / "certs.d"),), retries=1)
        with pytest.raises(RegistryError, match="not trusted"):
            pull(store, f"{reg.host}/test/x", opts(registry=trusted))
    finally:
        reg.stop()


def test_plain_http_only_for_loopback() -> None:
    from sandbox.registry.transport import is_loopback

    assert is_loopback("localhost:5000") and is_loopback("127.0.0.5:80") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example:5000") and not is_loopback("10.0.0.1:5000")


# --- concurrency and crashes ------------------------------------------------------------------------

def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = SANDBOX_PATH
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "sandbox.cli.images", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, cwd=os.path.dirname(os.environ["SBX_ROOT"]))


def test_concurrent_pulls_of_overlapping_images(store: Store, plain_registry) -> None:  # type: ignore[no-untyped-def]
    refs = ["test/busybox", "test/multi", "test/index", "test/multi", "test/busybox"]
    procs = [_cli("pull", "-q", f"{plain_registry.host}/{r}") for r in refs]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert store.check() == []
    tags = sorted(t for i in store.images() for t in i.repo_tags)
    assert tags == sorted(f"{plain_registry.host}/{r}:latest" for r in set(refs))
    assert os.listdir(store.tmp_dir) == []


def test_pull_during_rmi(store: Store, plain_registry) -> None:  # type: ignore[no-untyped-def]
    ref = f"{plain_registry.host}/test/multi"
    pull(store, ref, opts())
    procs = []
    for i in range(3):
        procs.append(_cli("rmi", "-f", ref))
        procs.append(_cli("pull", "-q", ref))
    for p in procs:
        p.communicate(timeout=120)
    final = _cli("pull", "-q", ref)
    final.communicate(timeout=120)
    assert final.returncode == 0
    assert store.check() == []
    img = store.resolve(ref)
    for d in store.unpack(img):
        assert os.path.isdir(d)


def test_kill_9_mid_pull_leaves_store_clean(tmp_path: Path, store: Store) -> None:
    from sbx_image_testlib import start_registry

    reg, _ = start_registry(tmp_path / "reg")
    try:
        big = os.urandom(24 << 20)
        img = build_image([make_tar(busybox_entries()), make_tar([Entry("big", "file", big)])], comp="none")
        reg.push_layout(write_layout(tmp_path / "layout", [(img, "big")]), "big", "test/big:latest")
        ref = f"{reg.host}/test/big"
        killed = False
        for _attempt in range(3):
            p = _cli("pull", ref)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and p.poll() is None:
                if os.path.isdir(store.tmp_dir) and os.listdir(store.tmp_dir):
                    p.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.002)
            p.communicate(timeout=60)
            if killed:
                break
            Store(store.root).remove(ref, force=True)
            Store(store.root).gc()
        if not killed:
            pytest.skip("the pull finished before it could be killed")
        # The crash may leave temp files, and nothing else: no half-written blob, layer or record ...
        problems = Store(store.root).check()
        assert [pr.kind for pr in problems] in ([], ["leftover"]), problems
        Store(store.root).cleanup()  # ... and the next command removes them
        assert os.listdir(store.tmp_dir) == []
        assert store.check() == []
        got = pull(store, ref, opts())
        assert got.id == img.id and store.check() == []
    finally:
        reg.stop()


def test_errors_are_sandbox_errors() -> None:
    assert issubclass(RegistryError, SandboxError) and RegistryError("x").exit_code == 125


def test_transient_failures_are_retried(store: Store, plain_registry, multi_image) -> None:  # type: ignore[no-untyped-def]
    from sbx_image_testlib import FlakyProxy

    proxy = FlakyProxy(plain_registry.host, fail_503=2, cut=2)
    try:
        retrying = RegistryOptions(retries=3, backoff=0.02)
        img = pull(store, f"{proxy.host}/test/multi", opts(registry=retrying))
        assert img.id == multi_image.id and store.check() == []
        assert sorted(proxy.injected) == ["503", "503", "cut", "cut"]
    finally:
        proxy.stop()
    proxy = FlakyProxy(plain_registry.host, fail_503=1000)
    try:
        store.prune(all_images=True)
        store.gc()
        with pytest.raises(RegistryError, match="HTTP 503"):
            pull(store, f"{proxy.host}/test/busybox", opts(registry=RegistryOptions(retries=2, backoff=0.02)))
        assert len(proxy.injected) >= 3
    finally:
        proxy.stop()
