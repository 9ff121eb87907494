"""`/events` sees what the CLI and the Python API do to networks, volumes and images, and every
exec, in Docker's shape (Type, Action, Actor.ID, Actor.Attributes): each is journalled by the
one layer every entry point passes through, and the service only follows the journal."""
from __future__ import annotations

import tarfile
import time

import pytest

from sbxtest import ok, sbx

docker = pytest.importorskip("docker")

LABELS = {"sbx-test": "server"}


def _events(client, since, **filters):
    """The journal's events from `since` to now, filtered by the service: (Type, Action, ID, attrs)."""
    return [(e["Type"], e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"])
            for e in client.events(since=since, until=time.time() + 0.5, decode=True, filters=filters)]


def test_network_and_volume_events_reach_a_listener(client, listen_events):
    since = time.time()
    got = listen_events(type=["network", "volume"])
    nid = ok(sbx("network", "create", "ev-cli-net")).strip()
    ok(sbx("network", "rm", "ev-cli-net"))
    ok(sbx("volume", "create", "ev-cli-vol"))
    ok(sbx("run", "--rm", "-v", "ev-cli-vol2:/data", "busybox", "true"))  # made on first use, as Docker's
    ok(sbx("volume", "rm", "ev-cli-vol", "ev-cli-vol2"))
    want = [("network", "create", nid, "ev-cli-net"), ("network", "destroy", nid, "ev-cli-net"),
            ("volume", "create", "ev-cli-vol", None), ("volume", "create", "ev-cli-vol2", None),
            ("volume", "mount", "ev-cli-vol2", None), ("volume", "unmount", "ev-cli-vol2", None),
            ("volume", "destroy", "ev-cli-vol", None), ("volume", "destroy", "ev-cli-vol2", None)]
    seen = []
    while len(seen) < len(want):
        ev = got.get(timeout=20)
        a = ev["Actor"]["Attributes"]
        seen.append((ev["Type"], ev["Action"], ev["Actor"]["ID"], a.get("name")))
        assert a.get("type" if ev["Type"] == "network" else "driver") == ("bridge" if ev["Type"] == "network"
                                                                           else "local"), ev
    assert seen == want
    # filters: by type, by network name, by volume name; each once, none twice
    assert [(t, a) for t, a, _i, _x in _events(client, since, type="volume")] == \
        [("volume", "create")] * 2 + [("volume", "mount"), ("volume", "unmount")] + [("volume", "destroy")] * 2
    assert [a for _t, a, _i, _x in _events(client, since, network="ev-cli-net")] == ["create", "destroy"]
    assert [(a, i) for _t, a, i, _x in _events(client, since, volume="ev-cli-vol2", event="destroy")] == \
        [("destroy", "ev-cli-vol2")]
    # a container's named volume: mounted at its start, unmounted at its end (Docker's order)
    since2 = time.time()
    ok(sbx("volume", "create", "ev-mnt"))
    cid = ok(sbx("run", "-d", "--label", "sbx-test=server", "-v", "ev-mnt:/data:ro", "busybox", "true")).strip()
    assert ok(sbx("wait", cid)).strip() == "0"
    ok(sbx("run", "--rm", "-v", "ev-mnt:/data", "busybox", "true"))
    evs = [(t, a, i, x) for t, a, i, x in _events(client, since2) if t == "volume" or i == cid]
    assert [(t, a) for t, a, _i, _x in evs] == [("volume", "create"), ("container", "create"), ("volume", "mount"),
                                               ("container", "start"), ("container", "die"), ("volume", "unmount"),
                                               ("volume", "mount"), ("volume", "unmount")], evs
    mounts = [x for t, a, i, x in evs if t == "volume" and a in ("mount", "unmount")]
    assert [(m["container"] == cid, m["destination"], m["read/write"]) for m in mounts] == [
        (True, "/data", "false"), (True, "/data", "false"), (False, "/data", "true"), (False, "/data", "true")]
    ok(sbx("rm", cid))
    ok(sbx("volume", "rm", "ev-mnt"))
    # a container on a user-defined network: connected at its start, disconnected at its end
    since3 = time.time()
    nid = ok(sbx("network", "create", "ev-run-net")).strip()
    cid = ok(sbx("run", "-d", "--label", "sbx-test=server", "--network", "ev-run-net", "busybox", "true")).strip()
    assert ok(sbx("wait", cid)).strip() == "0"
    ok(sbx("rm", cid))
    ok(sbx("network", "rm", "ev-run-net"))
    evs = [(t, a, x.get("container")) for t, a, i, x in _events(client, since3) if i in (nid, cid)]
    assert evs == [("network", "create", None), ("container", "create", None), ("network", "connect", cid),
                   ("container", "start", None), ("container", "die", None), ("network", "disconnect", cid),
                   ("container", "destroy", None), ("network", "destroy", None)], evs
    # made through the socket: journalled once, by the same layer
    client.volumes.create("ev-api-vol").remove()
    assert [a for _t, a, _i, _x in _events(client, since, volume="ev-api-vol")] == ["create", "destroy"]


def test_cli_image_events(client, tmp_path, busybox_rootfs):
    since = time.time()
    img = client.images.get("busybox:latest").id
    ok(sbx("tag", "busybox", "ev-img:one"))
    ok(sbx("save", "-o", str(tmp_path / "one.tar"), "ev-img:one"))
    ok(sbx("rmi", "ev-img:one"))
    ok(sbx("load", "-i", str(tmp_path / "one.tar")))
    ok(sbx("rmi", "ev-img:one"))
    (tmp_path / "marker").write_text("not the busybox image\n")
    with tarfile.open(tmp_path / "root.tar", "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
        tf.add(tmp_path / "marker", arcname="marker")
    ok(sbx("import", str(tmp_path / "root.tar"), "ev-imp:1"))
    imported = client.images.get("ev-imp:1").id
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nLABEL sbx-test=events\n")
    ok(sbx("build", "-t", "ev-built:1", str(tmp_path / "ctx"), timeout=120))
    built = client.images.get("ev-built:1").id
    ok(sbx("rmi", "ev-imp:1", "ev-built:1"))
    evs = _events(client, since, type="image")
    assert [(a, i, x["name"]) for _t, a, i, x in evs] == [
        ("tag", img, "ev-img:one"), ("save", img, "ev-img:one"), ("untag", img, "ev-img:one"),
        ("load", img, "ev-img:one"), ("untag", img, "ev-img:one"),
        ("import", imported, "ev-imp:1"), ("tag", built, "ev-built:1"),
        ("untag", imported, "ev-imp:1"), ("delete", imported, imported),
        ("untag", built, "ev-built:1"), ("delete", built, built)]
    # pull and push, by the reference
    from test_server_api import _image_testlib
    reg, _ = _image_testlib().start_registry(tmp_path / "registry")
    try:
        where = f"127.0.0.1:{reg.port}/ev/busybox:v1"
        since2 = time.time()
        ok(sbx("push", "--tls-verify=false", "busybox", where, timeout=120))
        ok(sbx("pull", "--tls-verify=false", where, timeout=120))
    finally:
        reg.stop()
    assert [(a, i, x["name"]) for _t, a, i, x in _events(client, since2, type="image")] == [
        ("push", where, where), ("pull", where, where)]
    # the image filter takes the id or the name, with or without its tag
    assert [a for _t, a, _i, _x in _events(client, since, image="ev-imp")] == ["import", "untag"]  # delete: by id
    assert [a for _t, a, _i, _x in _events(client, since, image=built)] == ["tag", "untag", "delete"]
    assert _events(client, since, type="container", image="ev-imp") == []


def test_exec_events_from_cli_python_api_and_socket(client, session_store):
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS, name="ev-exec")
    since = time.time()
    assert sbx("exec", "ev-exec", "sh", "-c", "exit 4").returncode == 4
    import sandbox.containers
    assert sandbox.containers.get("ev-exec").exec_run(["true"]).exit_code == 0
    eid = client.api.exec_create(c.id, ["sh", "-c", "exit 2"])["Id"]
    client.api.exec_start(eid)
    deadline = time.monotonic() + 20
    while client.api.exec_inspect(eid)["Running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    evs = [(a, x) for t, a, i, x in _events(client, since, container="ev-exec") if a.startswith("exec_")]
    assert [a for a, _x in evs] == ["exec_create: sh -c exit 4", "exec_start: sh -c exit 4", "exec_die",
                                    "exec_create: true", "exec_start: true", "exec_die",
                                    "exec_create: sh -c exit 2", "exec_start: sh -c exit 2", "exec_die"]
    assert [x["exitCode"] for a, x in evs if a == "exec_die"] == ["4", "0", "2"]
    for _a, x in evs:
        assert x["name"] == "ev-exec" and x["image"] == "busybox" and x["sbx-test"] == "server", x
    ids = [x["execID"] for _a, x in evs]
    assert ids[0] == ids[1] == ids[2] != ids[3] and ids[6:] == [eid] * 3
    # Docker's filter: exec_start matches the action that names the command; exec_die exactly
    assert [x["execID"] for _a, x in (
        (a, x) for _t, a, _i, x in _events(client, since, container="ev-exec", event="exec_start"))] == \
        [ids[0], ids[3], eid]
    assert len(_events(client, since, container="ev-exec", event=["exec_die"])) == 3
    c.remove(force=True)
