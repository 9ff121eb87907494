"""An image made from the session's busybox test root filesystem (`sbx import`), for tests
that build or commit on top of a base image."""
import tarfile

from sbxtest import ok, sbx


def import_busybox(tmp_path_factory, busybox_rootfs, tag):
    """Import busybox_rootfs into the session's store as `tag`; return the tag."""
    tar = tmp_path_factory.mktemp("baseimage") / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    ok(sbx("import", str(tar), tag, timeout=120))
    return tag
