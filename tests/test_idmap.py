"""User namespace id mapping in both modes (single id, subuid range through newuidmap), -u, groups."""

import os

import pytest

from sbxtest import ok, parse_idmap, sbx, subid_range

MAPS = "cat /proc/self/uid_map; echo ==; cat /proc/self/gid_map; echo ==; id -u; id -g"


def maps(rootfs, *opts):
    uid_map, gid_map, ids = ok(sbx("run", *opts, "--rootfs", rootfs, "sh", "-c", MAPS)).split("==\n")
    return parse_idmap(uid_map), parse_idmap(gid_map), [int(x) for x in ids.split()]


def range_maps():
    (us, _), (gs, _) = subid_range("/etc/subuid"), subid_range("/etc/subgid")
    return ([(0, os.getuid(), 1), (1, us, 65536)], [(0, os.getgid(), 1), (1, gs, 65536)])


# --- single id ---------------------------------------------------------------------------------

def test_single_maps_the_caller_to_root(busybox_rootfs):
    uid_map, gid_map, ids = maps(busybox_rootfs, "--userns", "single")
    assert uid_map == [(0, os.getuid(), 1)]
    assert gid_map == [(0, os.getgid(), 1)]
    assert ids == [0, 0]


def test_single_with_user_maps_the_caller_to_that_user(busybox_rootfs):
    uid_map, gid_map, ids = maps(busybox_rootfs, "--userns", "single", "-u", "1000:1000")
    assert uid_map == [(1000, os.getuid(), 1)]
    assert gid_map == [(1000, os.getgid(), 1)]
    assert ids == [1000, 1000]


@pytest.mark.nosubuid
def test_auto_without_a_range_is_single(busybox_rootfs):
    for opts in ((), ("--userns", "auto")):
        uid_map, gid_map, ids = maps(busybox_rootfs, *opts)
        assert uid_map == [(0, os.getuid(), 1)], opts
        assert gid_map == [(0, os.getgid(), 1)], opts
        assert ids == [0, 0]


# --- subuid range --------------------------------------------------------------------------------

@pytest.mark.subuid
def test_auto_with_a_range_maps_root_and_the_range(busybox_rootfs):
    want_uid, want_gid = range_maps()
    for opts in ((), ("--userns", "auto")):
        uid_map, gid_map, ids = maps(busybox_rootfs, *opts)
        assert uid_map == want_uid, opts
        assert gid_map == want_gid, opts
        assert ids == [0, 0]


@pytest.mark.subuid
def test_range_user_by_name_gets_supplementary_groups(busybox_rootfs):
    out = ok(sbx("run", "-u", "app", "--rootfs", busybox_rootfs, "sh", "-c", "id -u; id -g; id -G; echo $HOME"))
    uid, gid, groups, home = out.splitlines()
    assert (uid, gid) == ("1000", "1000")
    assert set(groups.split()) == {"1000", "29"}, groups
    assert home == "/home/app"


@pytest.mark.subuid
def test_range_user_and_group_by_name(busybox_rootfs):
    out = ok(sbx("run", "-u", "app:audio", "--rootfs", busybox_rootfs, "sh", "-c", "id -u; id -g"))
    assert out.split() == ["1000", "29"]


@pytest.mark.subuid
def test_range_chown_inside(busybox_rootfs):
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c",
                 "touch /tmp/f && chown 1000:29 /tmp/f && stat -c '%u %g' /tmp/f"))
    assert out == "1000 29\n"


@pytest.mark.subuid
def test_range_ids_land_on_subordinate_ids_on_the_host(busybox_rootfs, tmp_path):
    (us, _), (gs, _) = subid_range("/etc/subuid"), subid_range("/etc/subgid")
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chmod(vol, 0o777)
    ok(sbx("run", "-u", "1000:1000", "-v", f"{vol}:/v", "--rootfs", busybox_rootfs, "touch", "/v/f"))
    st = os.stat(vol / "f")
    assert (st.st_uid, st.st_gid) == (us + 999, gs + 999)


# --- both modes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, want", [("1000:1000", "1000 1000"), ("1000", "1000 1000"), ("app", "1000 1000"),
                                        ("0:0", "0 0"), ("root", "0 0"), ("4242", "4242")])
def test_user_option(busybox_rootfs, spec, want):
    out = ok(sbx("run", "-u", spec, "--rootfs", busybox_rootfs, "sh", "-c", "id -u; id -g"))
    assert out.split()[:len(want.split())] == want.split()


def test_user_long_option_and_id_output(busybox_rootfs):
    out = ok(sbx("run", "--user", "1000:1000", "--rootfs", busybox_rootfs, "id"))
    assert out.startswith("uid=1000(app) gid=1000(app)"), out


def test_rootfs_owner_is_root_inside(busybox_rootfs):
    # The tree belongs to the calling user on the host, who is root inside.
    out = ok(sbx("run", "--rootfs", busybox_rootfs, "stat", "-c", "%u %g", "/etc/marker"))
    assert out == "0 0\n"


def test_home_of_root(busybox_rootfs):
    assert ok(sbx("run", "--rootfs", busybox_rootfs, "sh", "-c", "echo $HOME")) == "/root\n"

