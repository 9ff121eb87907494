"""The image commands as a user runs them (``python -m sandbox.cli.images``, the same functions the main
``sbx`` app registers): output formats, exit codes, one-line errors with hints, credentials never shown."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sbx_image_testlib import SANDBOX_PATH, free_port, skopeo


@pytest.fixture
def pulled(sbx, plain_registry):  # type: ignore[no-untyped-def]
    p = sbx("pull", f"{plain_registry.host}/test/multi")
    assert p.returncode == 0, p.stderr
    return f"{plain_registry.host}/test/multi"


def test_pull_output_and_images(sbx, plain_registry, multi_image, pulled) -> None:  # type: ignore[no-untyped-def]
    q = sbx("pull", "-q", f"{plain_registry.host}/test/busybox")
    assert q.returncode == 0 and q.stdout.strip().startswith("sha256:")
    table = sbx("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    row = next(line for line in table if "test/multi" in line)
    assert row.split()[:3] == [pulled, "latest", multi_image.id[7:19]]
    assert "ago" in row and row.rstrip().endswith("MB")
    rows = [json.loads(line) for line in sbx("images", "--format", "json").stdout.splitlines()]
    assert {r["Repository"] for r in rows} == {pulled, f"{plain_registry.host}/test/busybox"}
    assert all(r["Digest"].startswith("sha256:") for r in rows)
    ids = sbx("images", "-q").stdout.split()
    assert len(ids) == 2 and multi_image.id[7:19] in ids
    assert sbx("images", "-q", "--no-trunc", pulled).stdout.split() == [multi_image.id]


def test_tag_rmi_inspect(sbx, pulled, multi_image) -> None:  # type: ignore[no-untyped-def]
    assert sbx("tag", pulled, "mine/multi:v1").returncode == 0
    doc = json.loads(sbx("inspect", "mine/multi:v1").stdout)[0]
    assert doc["Id"] == multi_image.id
    assert sorted(doc["RepoTags"]) == sorted([f"{pulled}:latest", "mine/multi:v1"])
    assert doc["Config"]["Cmd"] == ["/bin/cat", "/etc/hello"]
    assert len(doc["RootFS"]["Layers"]) == 3 and doc["Os"] == "linux"
    assert sbx("inspect", "-f", "{{.Id}} {{json .Config.Cmd}}", "mine/multi:v1").stdout.strip() == \
        f'{multi_image.id} ["/bin/cat", "/etc/hello"]'
    p = sbx("rmi", multi_image.id[7:19])
    assert p.returncode == 125 and "referenced in multiple repositories" in p.stderr and "sbx: hint:" in p.stderr
    p = sbx("rmi", "mine/multi:v1")
    assert p.stdout.strip() == "Untagged: mine/multi:v1"
    p = sbx("rmi", pulled)
    assert f"Deleted: {multi_image.id}" in p.stdout
    assert sbx("images", "-q").stdout.strip() == ""
    p = sbx("inspect", "mine/multi:v1")  # Docker's: neither a container nor an image
    assert p.returncode == 1 and p.stderr.splitlines()[0] == "sbx: No such object: mine/multi:v1"


def test_system_df_check_prune(sbx, pulled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    info = json.loads(sbx("system", "df", "--format", "json").stdout)
    # pull unpacks the layers for the default id mapping (as Docker does); a run with another
    # mapping unpacks its own copy on first use
    assert info["images"] == 1 and info["layers"]["count"] == 3 and info["blobs"]["reclaimable"] == 0
    from sandbox.runtime import idmap
    idmap._cache.clear()
    single_by_default = idmap.detect()[0] == "single"
    r = subprocess.run([sys.executable, "-m", "sandbox", "run", "--rm", "--userns", "single", pulled, "true"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env=dict(os.environ, PYTHONPATH=SANDBOX_PATH))
    assert r.returncode == 0, r.stderr
    info = json.loads(sbx("system", "df", "--format", "json").stdout)
    assert info["images"] == 1 and info["layers"]["count"] == (3 if single_by_default else 6)
    assert info["blobs"]["reclaimable"] == 0
    assert "Layers" in sbx("system", "df").stdout
    p = sbx("system", "check")
    assert p.returncode == 0 and p.stdout.strip().endswith(": ok")
    root = Path(os.environ["SBX_ROOT"])
    victim = next((root / "blobs/sha256").iterdir())
    os.chmod(victim, 0o644)
    victim.write_bytes(b"broken")
    p = sbx("system", "check")
    assert p.returncode == 1 and "corrupt-blob" in p.stdout and "--repair" in p.stdout
    p = sbx("system", "check", "--repair")
    assert p.returncode == 0 and "repaired" in p.stdout
    assert sbx("system", "check").returncode == 0
    p = sbx("image", "prune", "-f")
    assert p.returncode == 0 and "Total reclaimed space" in p.stdout


def test_save_load_cli(sbx, pulled, multi_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.tar"
    assert sbx("save", "-o", str(out), pulled).returncode == 0
    assert json.loads(skopeo("inspect", f"docker-archive:{out}").stdout)["Layers"]
    assert sbx("rmi", pulled).returncode == 0
    p = sbx("load", "-i", str(out))
    assert p.returncode == 0 and p.stdout.strip() == f"Loaded image: {pulled}:latest"
    oci = tmp_path / "m-oci.tar"
    assert sbx("save", "--format", "oci-archive", "-o", str(oci), pulled).returncode == 0
    p = sbx("save", "--format", "zip", "-o", str(tmp_path / "x"), pulled)
    assert p.returncode == 125 and "unknown archive format" in p.stderr
    p = sbx("load", "-i", str(tmp_path / "none.tar"))
    assert p.returncode == 125 and "no such file" in p.stderr


def test_push_cli(sbx, pulled, plain_registry, multi_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    digest_file = tmp_path / "digest"
    p = sbx("push", "--chunk-size", "256K", "--digestfile", str(digest_file), pulled,
            f"{plain_registry.host}/cli/pushed:1")
    assert p.returncode == 0, p.stderr
    assert digest_file.read_text() == multi_image.digest
    assert plain_registry.inspect_digest("cli/pushed:1") == multi_image.digest


def test_bad_input_errors(sbx, plain_registry) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (("pull", "Bad/Name"), "invalid reference format"),
        (("pull", f"{plain_registry.host}/test/nothere"), "not found"),
        (("pull", f"127.0.0.1:{free_port()}/x/y"), "cannot connect to registry"),
        (("pull", "--platform", "linux/s390x", f"{plain_registry.host}/test/index"), "no image for platform"),
        (("pull", "--platform", "linux/s390x", f"{plain_registry.host}/test/busybox"), "not the requested linux/s390x"),
        (("pull", "--platform", "a/b/c/d", f"{plain_registry.host}/test/busybox"), "invalid platform"),
        (("rmi", "nothere"), "no such image"),
        (("tag", "nothere", "x:y"), "no such image"),
        (("push", "nothere", "x:y"), "no such image"),
    ]
    for args, want in cases:
        p = sbx(*args)
        assert p.returncode == 125, (args, p.stdout, p.stderr)
        first = p.stderr.splitlines()[0]
        assert first.startswith("sbx: ") and want in first, (args, p.stderr)
        assert "Traceback" not in p.stderr
    assert sbx("system", "check").returncode == 0


def test_login_logout(sbx, auth_registry, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    host = auth_registry.host
    p = sbx("login", host, "-u", "bob", "--password-stdin", input="wrong-password\n")
    assert p.returncode == 125 and "rejected the username or password" in p.stderr
    assert "wrong-password" not in p.stdout + p.stderr
    cfg = isolated_env / ".docker" / "config.json"
    assert not cfg.exists()
    p = sbx("login", host, "-u", "bob", "--password-stdin", input="hunter2\n")
    assert p.returncode == 0 and "Login Succeeded" in p.stdout, p.stderr
    assert "hunter2" not in p.stdout + p.stderr
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    assert host in json.loads(cfg.read_text())["auths"]
    p = sbx("pull", f"{host}/test/busybox")
    assert p.returncode == 0, p.stderr
    assert sbx("logout", host).returncode == 0
    assert host not in json.loads(cfg.read_text())["auths"]
    p = sbx("pull", f"{host}/test/busybox")
    assert p.returncode == 125 and "requires authentication" in p.stderr and f"sbx login {host}" in p.stderr
    p = sbx("logout", host)
    assert p.returncode == 125 and "not logged in" in p.stderr
    p = sbx("pull", "--creds", "bob:hunter2", f"{auth_registry.host}/test/busybox")
    assert p.returncode == 0


def test_tls_cli(sbx, tls_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ref = f"{tls_registry.host}/test/busybox"
    p = sbx("pull", ref)
    assert p.returncode == 125 and "not trusted" in p.stderr and "certs.d" in p.stderr
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(Path(tls_registry.ca).read_bytes())
    (tmp_path / "certs.d" / tls_registry.host).mkdir(parents=True)
    (tmp_path / "certs.d" / tls_registry.host / "ca.crt").write_bytes(Path(tls_registry.ca).read_bytes())
    assert sbx("pull", "--cert-dir", str(tmp_path / "certs.d"), ref).returncode == 0
    assert sbx("pull", "--tls-verify=false", ref).returncode == 0
