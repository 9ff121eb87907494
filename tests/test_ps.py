"""sbx ps: Docker's columns, status strings, -a -q -n -l -s --no-trunc, every --filter, --format,
and the `sbx container ls|list|ps` aliases."""
import json
import re
import tarfile

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))


def _names(*args):
    return ok(sbx("ps", *args, "--format", "{{.Names}}")).split()


@pytest.fixture()
def live(busybox_rootfs):
    """A running container `live` (label tier=web), stopped at the end."""
    p = sbxtest.sbx_popen("run", "--name", "live", "--label", "tier=web", "--rootfs", busybox_rootfs,
                          "sh", "-c", "echo up; exec sleep 60")
    assert p.stdout.readline() == "up\n"
    yield p
    p.kill()
    p.wait()


def test_columns_statuses_and_selection(busybox_rootfs, live):
    assert sbx("run", "--name", "three", "--label", "tier=db", "--label", "x", "--rootfs", busybox_rootfs,
               "sh", "-c", "exit 3").returncode == 3
    ok(sbx("run", "--name", "zero", "--rootfs", busybox_rootfs, "true"))
    lines = ok(sbx("ps")).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                                            "NAMES"]
    assert len(lines) == 2 and lines[1].endswith("live")                 # running ones only
    row = re.split(r"\s{2,}", lines[1])
    assert re.fullmatch(r"[0-9a-f]{12}", row[0]) and row[2] == '"sh -c echo up; exec…"'
    assert row[3].endswith(" ago") and re.fullmatch(r"Up (Less than a second|\d+ seconds?)", row[4])
    everything = ok(sbx("ps", "-a")).splitlines()
    status = {line.split()[-1]: line for line in everything[1:]}
    assert set(status) == {"live", "three", "zero"}
    assert re.search(r"Exited \(3\) (Less than a second|\d+ seconds?) ago", status["three"])
    assert "Exited (0)" in status["zero"]
    assert _names("-a") == ["zero", "three", "live"]                      # newest first
    assert _names("-n", "2") == ["zero", "three"] and _names("-l") == ["zero"]   # any status
    ids = ok(sbx("ps", "-aq")).split()
    assert len(ids) == 3 and all(len(i) == 12 for i in ids)
    full = ok(sbx("ps", "-aq", "--no-trunc")).split()
    assert [f[:12] for f in full] == ids and all(len(f) == 64 for f in full)
    wide = ok(sbx("ps", "--no-trunc")).splitlines()[1]
    assert '"sh -c echo up; exec sleep 60"' in wide
    for alias in ("ls", "list", "ps"):
        assert ok(sbx("container", alias, "-a", "--format", "{{.Names}}")).split() == ["zero", "three", "live"]


def test_filters(busybox_rootfs, live, tmp_path):
    tar = tmp_path / "r.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    ok(sbx("import", tar, "base:1", timeout=120))
    ok(sbx("run", "--name", "from-image", "base:1", "true", timeout=60))
    assert sbx("run", "--name", "three", "--label", "tier=db", "--label", "x", "--rootfs", busybox_rootfs,
               "sh", "-c", "exit 3").returncode == 3
    ok(sbx("run", "--name", "zero", "--rootfs", busybox_rootfs, "true"))
    cid = ok(sbx("ps", "-aq", "--no-trunc", "--filter", "name=^three$")).split()
    assert len(cid) == 1
    assert _names("--filter", "status=exited") == ["zero", "three", "from-image"]   # status implies -a
    assert _names("--filter", "status=running") == ["live"]
    assert _names("-a", "--filter", "exited=3") == ["three"]
    assert _names("-a", "--filter", "exited=3", "--filter", "exited=0") == ["zero", "three", "from-image"]
    assert _names("-a", "--filter", "name=ze") == ["zero"]                # a part of the name
    assert _names("-a", "--filter", "name=zero", "--filter", "name=live") == ["zero", "live"]   # same key: OR
    assert _names("-a", "--filter", "name=e", "--filter", "status=exited") == ["zero", "three", "from-image"]
    assert _names("-a", "--filter", "name=e", "--filter", "exited=3") == ["three"]            # keys: AND
    assert _names("-a", "--filter", f"id={cid[0][:6]}") == ["three"]
    assert _names("-a", "--filter", "label=tier") == ["three", "live"]
    assert _names("-a", "--filter", "label=tier=web") == ["live"]
    assert _names("-a", "--filter", "label=tier", "--filter", "label=x") == ["three"]  # labels: all of them
    assert _names("-a", "--filter", "ancestor=base:1") == ["from-image"]
    assert _names("-a", "--filter", "ancestor=nosuchimage") == []
    assert _names("--filter", "before=three") == ["from-image", "live"]   # before/since: any status
    assert _names("--filter", "since=from-image") == ["zero", "three"]
    labels = json.loads(ok(sbx("ps", "-a", "--filter", "name=three", "--format", "json")))["Labels"]
    assert labels == "tier=db,x="


@pytest.mark.parametrize("flt, words", [
    ("foo=bar", ["invalid filter 'foo'"]),
    ("status=sleeping", ["invalid filter 'status=sleeping'"]),
    ("exited=x", ["invalid filter 'exited=x'"]),
    ("nokey", ["bad format of filter"]),
    ("before=nosuch", ["No such container: nosuch"]),
])
def test_bad_filters_are_refused(flt, words):
    r = sbx("ps", "--filter", flt)
    assert_sbx_error(r, 1 if "nosuch" in flt else 125, *words)


def test_size_and_format(busybox_rootfs):
    ok(sbx("run", "--name", "big", "--rootfs", busybox_rootfs, "sh", "-c", "head -c 5000 /dev/zero > /blob"))
    lines = ok(sbx("ps", "-a", "-s")).splitlines()
    assert re.split(r"\s{2,}", lines[0])[-1] == "SIZE"
    assert lines[1].endswith("5kB") or lines[1].endswith("5.01kB")
    assert ok(sbx("ps", "-a", "--format", "{{.Names}} {{.Size}}")).strip() in ("big 5kB", "big 5.01kB")
    doc = json.loads(ok(sbx("ps", "-a", "--format", "json")))
    assert {"ID", "Image", "Command", "CreatedAt", "RunningFor", "Ports", "State", "Status", "Names", "Labels",
            "Mounts", "Networks", "Size"} <= set(doc)
    assert doc["State"] == "exited" and doc["Names"] == "big" and len(doc["ID"]) == 12
    again = json.loads(ok(sbx("ps", "-a", "--format", "{{json .}}")))
    for k in ("Status", "RunningFor"):  # they move with the clock
        del again[k], doc[k]
    assert again == doc
    table = ok(sbx("ps", "-a", "--format", r"table {{.Names}}\t{{.State}}")).splitlines()
    assert [line.split() for line in table] == [["NAMES", "STATE"], ["big", "exited"]]
    assert_sbx_error(sbx("ps", "--format", "{{.Nope}}"), 125, "Nope")


def test_durations_are_dockers():
    """CREATED and STATUS read as Docker's (go-units HumanDuration)."""
    from sandbox.containers.state import ago
    got = [ago(s) for s in (0.5, 1, 59, 60, 119, 3599, 3600, 5400, 172800, 1209600, 5184000, 63072000)]
    assert got == ["Less than a second", "1 second", "59 seconds", "About a minute", "About a minute", "59 minutes",
                   "About an hour", "2 hours", "2 days", "2 weeks", "2 months", "2 years"]
