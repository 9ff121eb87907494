"""What a Docker user tries first, run black-box through the CLI: each test is a defect found by
using sbx as a newcomer would (its reproducer), kept so that it stays fixed."""

import json
import os
import socket

import pytest

from baseimage import import_busybox
from sbxtest import assert_sbx_error, inspect_container, ok, sbx


@pytest.fixture()
def store(own_container_store):
    """Images and containers of the test's own (SBX_ROOT), removed afterwards."""
    yield


@pytest.fixture()
def base(store, tmp_path_factory, busybox_rootfs):
    return import_busybox(tmp_path_factory, busybox_rootfs, "trial-base:1")


def _build(tmp_path, tag, dockerfile):
    ctx = tmp_path / f"ctx-{tag.replace(':', '-')}-{len(list(tmp_path.iterdir()))}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    ok(sbx("build", "-q", "-t", tag, str(ctx), timeout=120))
    return tag


def test_every_run_of_an_image_keeps_its_expose_stop_signal_and_labels(base, tmp_path):
    """The run cache (made by an image's first run) kept only Entrypoint/Cmd/Env/WorkingDir/User:
    from the second run on, -P published nothing of the image's EXPOSE, and the image's
    STOPSIGNAL and labels were gone from the container."""
    img = _build(tmp_path, "trial-meta:1", f"FROM {base}\nEXPOSE 8080\nSTOPSIGNAL SIGINT\n"
                                          "LABEL org.example.team=trial\nCMD [\"sleep\", \"30\"]\n")
    ok(sbx("run", "--rm", "--network", "none", img, "true"))  # the first run fills the cache
    for name in ("again1", "again2"):
        ok(sbx("run", "-d", "--name", name, "-P", img))
        assert ok(sbx("port", name)).startswith("8080/tcp -> 0.0.0.0:"), name
        doc = inspect_container(name)
        assert doc["Config"]["StopSignal"] == "SIGINT" and doc["Config"]["Labels"]["org.example.team"] == "trial"
        ok(sbx("rm", "-f", name))


def test_volume_verbs_create_ls_inspect_rm_prune(store, busybox_rootfs):
    """`docker volume ...` habits: the verbs were missing (only the Docker API served volumes)."""
    assert ok(sbx("volume", "create", "--label", "team=trial", "data1")).strip() == "data1"
    ok(sbx("run", "--rm", "-v", "data1:/d", "--rootfs", str(busybox_rootfs), "sh", "-c", "echo kept > /d/f"))
    ok(sbx("volume", "create", "spare"))
    assert ok(sbx("volume", "ls", "-q")).split() == ["data1", "spare"]
    assert "local     data1" in ok(sbx("volume", "ls"))
    assert ok(sbx("volume", "ls", "--filter", "label=team=trial", "--format", "{{.Name}}")).split() == ["data1"]
    doc = json.loads(ok(sbx("volume", "inspect", "data1")))[0]
    assert doc["Name"] == "data1" and doc["Labels"] == {"team": "trial"}
    with open(os.path.join(doc["Mountpoint"], "f")) as f:
        assert f.read() == "kept\n"
    assert ok(sbx("volume", "inspect", "-f", "{{.Driver}}", "data1")).strip() == "local"
    assert_sbx_error(sbx("volume", "inspect", "nosuch"), 1, "no such volume", "nosuch")
    assert_sbx_error(sbx("volume", "rm", "nosuch"), 1, "nosuch")
    assert_sbx_error(sbx("volume", "create", "-"), 125, "invalid")
    cid = ok(sbx("run", "-d", "-v", "data1:/d", "--rootfs", str(busybox_rootfs), "sleep", "60")).strip()
    assert_sbx_error(sbx("volume", "rm", "data1"), 1, "in use", cid[:12])
    assert "data1" in ok(sbx("volume", "ls", "-q"))  # nothing stored lost
    ok(sbx("rm", "-f", cid))
    out = ok(sbx("volume", "prune", "-a", "-f"))
    assert "data1" in out and "spare" in out
    assert ok(sbx("volume", "ls", "-q")).split() == []


def test_relative_host_paths_bind_from_the_working_directory(store, busybox_rootfs, tmp_path):
    """`-v ./dir:/x` (Docker 23+ and podman resolve it against the working directory) was refused
    with a stale hint saying named volumes are not supported."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a").write_text("hostfile\n")
    rootfs = str(busybox_rootfs)
    assert ok(sbx("run", "--rm", "-v", "./dir:/x:ro", "--rootfs", rootfs, "cat", "/x/a", cwd=tmp_path)) == "hostfile\n"
    assert ok(sbx("run", "--rm", "-v", ".:/x", "--rootfs", rootfs, "cat", "/x/dir/a", cwd=tmp_path / "dir" / "..")) \
        == "hostfile\n"
    assert ok(sbx("run", "--rm", "-v", "../dir:/x", "--rootfs", rootfs, "cat", "/x/a", cwd=tmp_path / "dir")) \
        == "hostfile\n"
    assert_sbx_error(sbx("run", "--rm", "-v", "./nosuch:/x", "--rootfs", rootfs, "true", cwd=tmp_path), 125,
                     str(tmp_path / "nosuch"))
    assert_sbx_error(sbx("run", "--rm", "-v", "rel/dir:/x", "--rootfs", rootfs, "true", cwd=tmp_path), 125,
                     "rel/dir")


def test_mount_flag_binds_volumes_and_tmpfs(store, busybox_rootfs, tmp_path):
    """`--mount type=bind|volume|tmpfs,...` was an unknown flag."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a").write_text("hostfile\n")
    rootfs = str(busybox_rootfs)
    run = ("run", "--rm", "--rootfs", rootfs)
    cp = sbx("run", "--rm", "--mount", f"type=bind,source={tmp_path}/dir,target=/x,readonly", "--rootfs", rootfs,
             "sh", "-c", "cat /x/a; echo no > /x/b")
    assert cp.stdout == "hostfile\n" and cp.returncode != 0 and not (tmp_path / "dir" / "b").exists()
    ok(sbx("run", "--rm", "--mount", "type=bind,src=./dir,dst=/x", "--rootfs", rootfs, "sh", "-c", "echo yes > /x/b",
           cwd=tmp_path))
    assert (tmp_path / "dir" / "b").read_text() == "yes\n"
    ok(sbx("run", "--rm", "--mount", "type=volume,src=mvol,dst=/v", "--rootfs", rootfs, "sh", "-c", "echo v > /v/f"))
    assert ok(sbx("run", "--rm", "--mount", "source=mvol,destination=/v,ro", "--rootfs", rootfs, "cat", "/v/f")) == "v\n"
    mounts = ok(sbx("run", "--rm", "--mount", "type=tmpfs,dst=/t,tmpfs-size=1048576,tmpfs-mode=1770", "--rootfs", rootfs,
                    "sh", "-c", "grep ' /t ' /proc/mounts; stat -c %a /t"))
    assert "tmpfs /t tmpfs" in mounts and "size=1024k" in mounts and mounts.endswith("1770\n"), mounts
    for bad, words in (("type=nfs,dst=/x", ("type", "nfs")), ("type=bind,src=/tmp", ("target",)),
                       ("type=bind,dst=/x", ("source",)), ("type=bind,src=/tmp,dst=/x,colour=red", ("colour",)),
                       ("type=tmpfs,src=/tmp,dst=/x", ("source",)), ("type=tmpfs,dst=/x,tmpfs-size=lots", ("tmpfs-size",)),
                       ("type=volume,src=mvol,dst=/v,readonly=maybe", ("readonly",))):
        assert_sbx_error(sbx(*run[:2], "--mount", bad, *run[2:], "true"), 125, "--mount", *words)


def test_inspect_of_a_missing_object_names_it_and_shows_the_others(store, busybox_rootfs):
    """`sbx inspect typo` said 'no such image: typo:latest' with a hint to pull it (exit 125),
    and one missing name hid the documents of the others; Docker says 'No such object' (exit 1)
    and still shows the rest."""
    ok(sbx("create", "--name", "there", "--rootfs", str(busybox_rootfs), "true"))
    cp = sbx("inspect", "-f", "{{.Name}}", "typo", "there")
    assert cp.stdout == "/there\n"
    cp = sbx("inspect", "-f", "{{.Name}}", "typo")
    assert_sbx_error(cp, 1, "no such object: typo")
    assert "pull" not in cp.stderr


def test_logs_follow_ends_at_until_and_leaves_the_container_running(store, busybox_rootfs):
    """`sbx logs -f --until T` went on following past T until the container ended (a 'sleep
    300' container kept the command for five minutes); Docker's ends the stream at T."""
    import time
    ok(sbx("run", "-d", "--name", "chatty", "--rootfs", str(busybox_rootfs),
           "sh", "-c", "echo first; while true; do echo more; sleep 0.2; done"))
    deadline = time.time() + 20
    while "first" not in sbx("logs", "chatty").stdout and time.time() < deadline:
        time.sleep(0.1)
    out = ok(sbx("logs", "-f", "--until", "0s", "chatty", timeout=20))
    assert out.startswith("first\n")
    out = ok(sbx("logs", "-f", "--until", str(int(time.time()) + 2), "chatty", timeout=20))
    assert out.startswith("first\nmore\n")
    assert inspect_container("chatty")["State"]["Status"] == "running"


def test_a_platform_the_local_image_is_not_of_is_never_run_silently(base):
    """`sbx run --platform linux/arm64 IMG` ran the local amd64 image as if no platform had been
    asked for; Docker refuses an image that does not match (after trying to pull the one asked)."""
    own = ok(sbx("inspect", "-f", "{{.Os}}/{{.Architecture}}", base)).strip()
    other = "linux/s390x" if own != "linux/s390x" else "linux/arm64"
    assert ok(sbx("run", "--rm", "--network", "none", "--platform", own, base, "echo", "same")) == "same\n"
    for pull in ("never", "missing"):
        cp = sbx("run", "--rm", "--network", "none", "--pull", pull, "--platform", other, base, "true", timeout=60)
        assert_sbx_error(cp, 125, "does not match the specified platform", f"wanted {other}", f"actual: {own}")
    # and once it has run (the run cache), still not
    cp = sbx("run", "--rm", "--network", "none", "--pull", "never", "--platform", other, base, "true")
    assert_sbx_error(cp, 125, "does not match the specified platform")


def test_load_reads_an_archive_from_stdin_as_docker_does(base, tmp_path):
    """`sbx save IMG | sbx load` failed: load required -i (Docker's reads stdin without it)."""
    import subprocess
    from sbxtest import sbx_argv, NEUTRAL_CWD
    ok(sbx("tag", base, "trial-piped:1"))
    save = subprocess.Popen(sbx_argv("save", "trial-piped:1"), stdout=subprocess.PIPE, cwd=NEUTRAL_CWD)
    try:
        out = ok(sbx("load", stdin=save.stdout, timeout=60))
    finally:
        save.stdout.close()
        assert save.wait(timeout=60) == 0
    assert out == "Loaded image: trial-piped:1\n"
    ok(sbx("image", "inspect", "trial-piped:1"))
    assert_sbx_error(sbx("load", input=""), 125, "stdin")  # an empty stream


def test_version_flags_as_docker_and_podman_have_them():
    """`sbx --version` and `sbx -v` were unknown options."""
    want = ok(sbx("version"))
    assert want.startswith("sbx ") and ok(sbx("--version")) == want and ok(sbx("-v")) == want


def test_images_filters_dangling_reference_and_label(base, tmp_path):
    """`docker images -f dangling=true -q | xargs docker rmi` habits: --filter was no option."""
    _build(tmp_path, "trial-lab:1", f"FROM {base}\nLABEL tier=web\n")
    _build(tmp_path, "trial-dang:1", f"FROM {base}\nLABEL tier=old\n")
    _build(tmp_path, "trial-dang:1", f"FROM {base}\nLABEL tier=new\n")  # the first loses its tag
    dangling = ok(sbx("images", "-q", "--filter", "dangling=true")).split()
    assert len(dangling) == 1 and dangling[0] not in ok(sbx("images", "-q", "-f", "dangling=false")).split()
    names = ok(sbx("images", "--filter", "reference=trial-*:1", "--format", "{{.Repository}}:{{.Tag}}")).split()
    assert sorted(names) == ["trial-base:1", "trial-dang:1", "trial-lab:1"]
    assert ok(sbx("images", "-f", "label=tier=web", "--format", "{{.Repository}}")).split() == ["trial-lab"]
    assert_sbx_error(sbx("images", "-f", "before=x"), 125, "before")
    assert_sbx_error(sbx("images", "-f", "dangling=maybe"), 125, "dangling")


def test_history_lists_the_steps_newest_first(base, tmp_path):
    """`docker history IMG` was no command."""
    img = _build(tmp_path, "trial-hist:1", f"FROM {base}\nRUN echo built > /built\nENV A=1\n")
    lines = ok(sbx("history", img)).splitlines()
    assert lines[0].split()[:2] == ["IMAGE", "CREATED"]
    assert "ENV A=1" in lines[1] and "echo built" in lines[2], lines
    assert lines[1].split()[0] == ok(sbx("images", "-q", img)).strip() and lines[2].startswith("<missing>")
    sizes = ok(sbx("image", "history", "--format", "{{.Size}}", img)).split()
    assert sizes[0] == "0B" and sizes[1] != "0B"  # ENV makes no layer, RUN one
    assert_sbx_error(sbx("history", "no-such-image:1"), 125, "no-such-image")


def test_a_refused_volume_spec_makes_no_volume(store, busybox_rootfs):
    """`-v newvol:/x:zz` was refused only after the volume 'newvol' had been made: a typo left a
    volume behind."""
    for spec in ("newvol:/x:zz", "newvol:relative", "newvol:/"):
        assert_sbx_error(sbx("run", "--rm", "-v", spec, "--rootfs", str(busybox_rootfs), "true"), 125, spec)
    assert ok(sbx("volume", "ls", "-q")) == ""
