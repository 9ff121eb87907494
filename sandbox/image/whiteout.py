"""Whiteout names and xattrs, in one place.

OCI layer tars mark deletions with AUFS-style names: ``dir/.wh.NAME`` deletes ``NAME`` from the layers
below, ``dir/.wh..wh..opq`` hides everything the layers below have in ``dir``. The kernel's overlayfs
wants a character device 0/0 for the former and the ``trusted.overlay.opaque`` (or, mounted with
``userxattr`` as an unprivileged user, ``user.overlay.opaque``) xattr set to ``y`` for the latter.
"""

from __future__ import annotations

import os
import stat

WH_PREFIX = ".wh."
WH_META_PREFIX = ".wh..wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")

#: Layer directories in overlay form: whiteouts are char 0/0 devices, opaque dirs carry the xattr.
FORMAT_OVERLAY = "overlay"
#: Fallback when the filesystem refuses mknod 0/0 or user xattrs (NFS, some FUSE): the ``.wh.`` files
#: are kept as empty regular files, as in the tar. Such layers need a flattening or fuse-overlayfs step.
FORMAT_AUFS = "aufs"


def is_whiteout_stat(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def probe_format(directory: str) -> str:
    """Return FORMAT_OVERLAY if ``directory``'s filesystem lets us create 0/0 whiteouts and set
    ``user.overlay.opaque`` (unprivileged whiteout creation: kernel commit a3c751a50fe6), else FORMAT_AUFS."""
    import secrets

    probe = os.path.join(directory, f".tmp-probe-{secrets.token_hex(6)}")
    os.mkdir(probe, 0o700)
    try:
        try:
            os.mknod(os.path.join(probe, "wh"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
            os.setxattr(probe, OPAQUE_XATTR, b"y")
        except OSError:
            return FORMAT_AUFS
        return FORMAT_OVERLAY
    finally:
        try:
            os.unlink(os.path.join(probe, "wh"))
        except OSError:
            pass
        os.rmdir(probe)
