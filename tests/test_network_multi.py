"""Containers on several user-defined networks (issue 11): repeated `--network` and `--network
a,b`, Docker's per-network `name=NET,alias=A`, connect/disconnect of stopped containers kept
across starts, `--link` on a user network, and the refusals (mixing modes, connect of a
slirp4netns container, --link off a user network).  Black-box, as each test user and root."""
import json

import pytest

from sbxtest import assert_sbx_error, ok, sbx
from test_network_bridge import GET, client, members, netenv, run_in, server  # noqa: F401 (netenv: a fixture)

NOT_REACHED = "nc -w 2 {0} 8080 </dev/null; echo rc=$?"


def networks_of(name):
    return json.loads(ok(sbx("inspect", name)))[0]["NetworkSettings"]["Networks"]


def gateway(net):
    return json.loads(ok(sbx("network", "inspect", net)))[0]["IPAM"]["Config"][0]["Gateway"]


@pytest.mark.slow  # five containers on three networks
def test_two_networks_reach_a_peer_on_each(netenv):
    for n in ("mna", "mnb"):
        ok(sbx("network", "create", n))
    ok(sbx("network", "create", "--internal", "mni"))
    server(netenv, "mna", "pa")
    server(netenv, "mnb", "pb")
    # Repeated --network (Docker >= 25), the per-network alias form, and the first network's route.
    ok(run_in(netenv, "mna", "sleep", "300", name="both", detach=True, extra=("--network", "name=mnb,alias=bee")))
    out = ok(sbx("exec", "both", "sh", "-c", GET + "get pa; get pb; ip -o -4 addr; ip route"))
    assert "hello-from-pa" in out and "hello-from-pb" in out, out
    ip_a = members("mna")["both"]["IPv4Address"]
    ip_b = members("mnb")["both"]["IPv4Address"]
    assert f"eth0    inet {ip_a}" in out and f"eth1    inet {ip_b}" in out, out
    assert f"default via {gateway('mna')} dev eth0" in out and gateway("mnb") not in out.split("default")[1].split("\n")[0]
    nets = networks_of("both")
    assert sorted(nets) == ["mna", "mnb"] and nets["mnb"]["IPAddress"] == ip_b.split("/")[0], nets
    assert "bee" in nets["mnb"]["Aliases"]
    # The alias is a name on mnb only; a container on mnb alone reaches `both` by it.
    assert ip_b.split("/")[0] in ok(client(netenv, "mnb", "nslookup bee"))
    out = ok(client(netenv, "mna", "nslookup bee; true"))
    assert "can't find bee" in out and ip_b.split("/")[0] not in out, out
    # podman's NET1,NET2; a container only on mna cannot reach pb (neither by name nor by address).
    assert "hello-from-pb" in ok(client(netenv, "mnb,mna", "get pb"))
    pb = members("mnb")["pb"]["IPv4Address"].split("/")[0]
    out = client(netenv, "mna", NOT_REACHED.format("pb") + "; " + NOT_REACHED.format(pb)).stdout
    assert "hello-from-pb" not in out and out.count("rc=1") == 2, out
    # An --internal first network gives no default route: the next network's gateway does.
    out = ok(run_in(netenv, "mni", "ip", "route", extra=("--network", "mna")))
    assert f"default via {gateway('mna')} dev eth1" in out and f"via {gateway('mni')}" not in out, out


def test_several_networks_refusals(netenv):
    ok(sbx("network", "create", "rfa"))
    for extra, words in ((("--network", "none", "--network", "rfa"), ("cannot be combined", "user-defined")),
                         (("--network", "rfa", "--network", "rfa"), ("specified multiple times",)),
                         (("--network", "rfa,nosuchnet"), ("nosuchnet", "not found")),
                         (("--network", "name=rfa,alias=x", "--network-alias", "y"), ("conflicting options",)),
                         (("--network", "name=rfa,speed=9"), ("speed", "not supported")),
                         (("--link", "nobody", "--network", "rfa"), ("no such container", "nobody")),
                         (("--link", "x", "--network", "none"), ("--link needs a user-defined network",))):
        assert_sbx_error(sbx("run", "--rm", *extra, "--rootfs", netenv["rootfs"], "true"), 125, *words)


@pytest.mark.slow  # four starts of one container, each on a changed set of networks
def test_connect_stopped_container_kept_across_starts(netenv):
    ok(sbx("network", "create", "csa"))
    ok(sbx("network", "create", "csb"))
    server(netenv, "csb", "db")
    ok(sbx("create", "--name", "app", "--network", "csa", "--rootfs", netenv["rootfs"], "sleep", "300"))
    ok(sbx("network", "connect", "--alias", "appb", "csb", "app"))  # created: joins at its start
    assert sorted(networks_of("app")) == ["csa", "csb"]
    ok(sbx("start", "app"))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get db"))
    assert "app" in members("csb") and "appb" in networks_of("app")["csb"]["Aliases"]
    ok(sbx("restart", "-t", "0", "app"))
    assert "hello-from-db" in ok(sbx("exec", "app", "sh", "-c", GET + "get db"))
    assert sorted(networks_of("app")) == ["csa", "csb"]
    # Disconnected while stopped: gone at the next start.
    ok(sbx("stop", "-t", "0", "app"))
    ok(sbx("network", "disconnect", "csb", "app"))
    assert sorted(networks_of("app")) == ["csa"]
    ok(sbx("start", "app"))
    out = ok(sbx("exec", "app", "sh", "-c", NOT_REACHED.format("db")))
    assert "hello-from-db" not in out and "rc=1" in out, out
    assert "app" not in members("csb") and "app" in members("csa")
    # Connected while running, then its first network taken away while stopped: the next start
    # is on csb alone (now eth0, with the default route).
    ok(sbx("network", "connect", "csb", "app"))
    ok(sbx("stop", "-t", "0", "app"))
    ok(sbx("network", "disconnect", "csa", "app"))
    assert_sbx_error(sbx("network", "disconnect", "csb", "app"), 1, "only network")
    ok(sbx("start", "app"))
    out = ok(sbx("exec", "app", "sh", "-c", GET + "get db; ip route"))
    assert "hello-from-db" in out and f"default via {gateway('csb')} dev eth0" in out, out
    assert sorted(networks_of("app")) == ["csb"] and "app" not in members("csa")
    # A container on slirp4netns has no link into the holder: refused with podman's reason.
    ok(sbx("create", "--name", "slirpy", "--network", "slirp4netns", "--rootfs", netenv["rootfs"], "true"))
    assert_sbx_error(sbx("network", "connect", "csa", "slirpy"), 1, "runs on slirp4netns", "--network csa")


def test_link_alias_resolves_for_the_linking_container_only(netenv):
    ok(sbx("network", "create", "lnk"))
    server(netenv, "lnk", "db")
    out = ok(run_in(netenv, "lnk", "sh", "-c", GET + "get database", extra=("--link", "db:database")))
    assert "hello-from-db" in out
    ok(sbx("restart", "-t", "0", "db"))  # the alias follows the container, not an address
    out = ok(run_in(netenv, "lnk", "sh", "-c", GET + "get database; get db", extra=("--link", "db:database")))
    assert out.count("hello-from-db") == 2, out
    out = client(netenv, "lnk", NOT_REACHED.format("database")).stdout
    assert "hello-from-db" not in out and "rc=1" in out, out
