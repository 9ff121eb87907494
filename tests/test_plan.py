"""Unit tests of the spec -> plan compiler: pure data, no namespaces needed."""
import os

import pytest

from sandbox import _native
from sandbox.runtime import launch, plan as P, spec as S


def _spec(rootfs, **kw):
    return S.build(["/bin/true"], rootfs=str(rootfs), container_id="ab" * 32, userns="single", **kw)


def test_stage_names_match_the_c_enum():
    assert len(launch.STAGES) == _native.STAGE_COUNT


def test_overlay_lowerdir_is_escaped(tmp_path):
    odd = tmp_path / "a,b:c"
    odd.mkdir()
    p = P.compile(_spec(odd))
    (data,) = [op[5] for op in p.ops if op[4] == b"overlay"]
    escaped = os.fsencode(str(odd)).replace(b",", b"\\,").replace(b":", b"\\:")
    lowerdir = data.split(b"lowerdir=", 1)[1].split(b",upperdir=", 1)[0]
    assert lowerdir.endswith(b":" + escaped)       # after the init layer (the image lacks /etc/...)
    assert data.endswith(b",userxattr")


def test_init_layer_only_for_missing_mount_points(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    full = tmp_path / "full"
    for d in ("proc", "sys", "dev", "etc"):
        (full / d).mkdir(parents=True)
    for f in ("hostname", "hosts", "resolv.conf"):
        (full / "etc" / f).write_text("")
    made = [op[3] for op in P.compile(_spec(bare)).ops if b"/init" in op[3]]
    assert any(m.endswith(b"/init/etc/hostname") for m in made) and any(m.endswith(b"/init/proc") for m in made)
    assert not [op for op in P.compile(_spec(full)).ops if b"/init" in op[3]]


def test_read_only_root_is_made_read_only_last(tmp_path):
    p = P.compile(_spec(tmp_path, read_only=True, tmpfs=["/scratch"]))
    kinds = [op[0] for op in p.ops]
    assert kinds[-1] == P.OP_SETATTR and p.ops[-1][7] == P.MOUNT_ATTR["ro"]
    assert p.ops[-1][1] & P.OPF_NONREC               # the root only: /tmp, volumes keep theirs
    assert any(op[0] == P.OP_MKDIR and op[3] == b"scratch" and op[1] & P.OPF_INROOT for op in p.ops)


def test_host_root_is_a_recursive_read_only_bind(tmp_path):
    p = S.build(["true"], rootfs="/", container_id="cd" * 32, userns="single")
    pl = P.compile(p)
    (bind,) = [op for op in pl.ops if op[0] == P.OP_BIND and op[2] == b"/"]
    assert bind[7] == P.MOUNT_ATTR["ro"] and not bind[1] & P.OPF_NONREC
    assert not [op for op in pl.ops if op[4] == b"overlay"]


def test_volume_modes_and_parents(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pl = P.compile(_spec(tmp_path, volumes=[f"{src}:/deep/er/dir:ro"]))
    (bind,) = [op for op in pl.ops if op[0] == P.OP_BIND and op[2] == os.fsencode(str(src))]
    # The target is a path inside the root, resolved there by the child (never a host path),
    # and created with its parents there (mkdir -p inside the root).
    assert bind[7] == P.MOUNT_ATTR["ro"] and bind[3] == b"deep/er/dir" and bind[1] & P.OPF_INROOT
    (made,) = [op for op in pl.ops if op[0] == P.OP_MKDIR and op[3] == b"deep/er/dir"]
    assert made[1] & P.OPF_INROOT


def test_network_host_keeps_the_host_netns(tmp_path):
    pl = P.compile(_spec(tmp_path, network="host"))
    assert not pl.clone_flags & P.CLONE_FLAGS["network"] and not pl.loopback
    pl = P.compile(_spec(tmp_path))
    assert pl.clone_flags & P.CLONE_FLAGS["network"] and pl.loopback


def test_exec_plan_joins_user_namespace_first_and_makes_none(tmp_path):
    spec = _spec(tmp_path)
    ex = S.build_exec(spec, os.getpid(), ["ls"])
    assert [n["type"] for n in ex["linux"]["namespaces"]][0] == "user"
    pl = P.compile(ex)
    try:
        assert pl.clone_flags == 0 and pl.ops == [] and pl.newroot is None
        assert [t for _, t in pl.setns][0] == P.CLONE_FLAGS["user"]
    finally:
        for fd, _ in pl.setns:
            os.close(fd)


@pytest.mark.parametrize("bad", ["nocolon", "rel:/x", "/nonexistent-src:/x", "/tmp:rel", "/tmp:/x:rw,ro", "/tmp:/", "/tmp:/.//"])
def test_bad_volumes(tmp_path, bad):
    with pytest.raises(S.UsageError):
        _spec(tmp_path, volumes=[bad])
