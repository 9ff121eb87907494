"""sandbox.image.mergedview: the overlay view of layer directories, resolved with fds only, so
symlinks of the layers never lead out of them (build sources and destinations use it)."""
import os
import stat

import pytest

from sandbox.image import whiteout as wh
from sandbox.image.mergedview import View


@pytest.fixture()
def layers(tmp_path):
    """top, mid, base (top first) and a host directory beside them."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host\n")
    top, mid, base = (tmp_path / n for n in ("top", "mid", "base"))
    for d in (top, mid, base):
        d.mkdir()
    (base / "etc").mkdir()
    (base / "etc" / "passwd").write_text("base\n")
    (base / "gone").mkdir()
    (base / "gone" / "f").write_text("f\n")
    (base / "aufsgone").write_text("g\n")
    (base / "opq").mkdir()
    (base / "opq" / "hidden").write_text("h\n")
    (base / "app").symlink_to("/opt/app")
    (base / "opt" / "app").mkdir(parents=True)
    (base / "opt" / "app" / "in-app").write_text("a\n")
    (mid / "etc").symlink_to(host)          # hides base's etc; top's etc directory hides it in turn
    (mid / ".wh.aufsgone").write_text("")
    (mid / "opq").mkdir()
    (mid / "opq" / wh.WH_OPAQUE).write_text("")
    (mid / "opq" / "new").write_text("n\n")
    (top / "etc").mkdir()                   # a directory above mid's symlink: base's etc is cut off
    (top / "etc" / "hosts").write_text("top\n")
    (top / "link").symlink_to("../../../../" + str(host).lstrip("/"))
    return [str(top), str(mid), str(base)], host


def _names(view, path):
    r = view.resolve(path)
    try:
        from sandbox.image.mergedview import listdir
        return listdir(r.entry.dirs)
    finally:
        r.close()


@pytest.mark.parametrize("fmt", [wh.FORMAT_OVERLAY, wh.FORMAT_AUFS])
def test_merged_view_rules_and_in_view_symlinks(layers, fmt):
    roots, host = layers
    if fmt == wh.FORMAT_OVERLAY:
        if wh.probe_format(roots[1]) != wh.FORMAT_OVERLAY:
            pytest.skip("this filesystem refuses 0/0 whiteouts or user xattrs")
        os.mknod(os.path.join(roots[1], "gone"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
        os.unlink(os.path.join(roots[1], "opq", wh.WH_OPAQUE))
        os.setxattr(os.path.join(roots[1], "opq"), wh.OPAQUE_XATTR, b"y")
    else:
        open(os.path.join(roots[1], ".wh.gone"), "w").close()
    with View(roots) as v:
        assert _names(v, "/etc") == ["hosts"]         # mid's etc symlink hides base's etc; top's dir hides it
        assert v.entry(["gone"]) is None and v.entry(["aufsgone"]) is None
        assert _names(v, "opq") == ["new"]           # opaque: base's content hidden
        r = v.resolve("/app/in-app")                 # /app -> /opt/app inside the view
        assert r.parts == ["opt", "app", "in-app"] and r.entry is not None
        r.close()
        r = v.resolve("link/secret")                 # ../../ stays at the root: not the host's file
        assert r.entry is None and r.parts == [*str(host).strip("/").split("/"), "secret"]
        r.close()
        e = v.entry(["link"])
        assert e.is_link
        e.close()
    assert (host / "secret").read_text() == "host\n"
