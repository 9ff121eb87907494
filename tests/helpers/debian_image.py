"""Test images for build tests and benchmarks: tars made in memory, and the real Debian base and
loopback apt repository that scripts/debian-base.sh makes once per machine (issue 9)."""
import contextlib
import functools
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import sbxtest

#: Where scripts/debian-base.sh leaves its work; scripts/test.sh passes it as SBX_TEST_DEBIAN.
DEFAULT_CACHE = "/var/cache/sbx-test/debian"
#: The base's name once loaded into a store (its OCI layout's ref.name is the suite).
DEBIAN_IMAGE = "localhost/debian:bookworm"


def tar_bytes(entries):
    """A tar of (name, type, mode, uid, gid, content) entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, mode, uid, gid, content in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, 1700000000
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, content
                tf.addfile(ti)
            else:
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def apt_install(*packages: str) -> str:
    """A RUN command installing ``packages`` from the repository whose sources.list line is the build
    argument APT_SOURCE, leaving no trace of the sources or the package lists in the image (as
    Dockerfiles that use a mirror do)."""
    return ('echo "$APT_SOURCE" > /etc/apt/sources.list.d/local.list && rm /etc/apt/sources.list \\\n'
            f'    && apt-get update -q && apt-get install -y -q --no-install-recommends {" ".join(packages)} \\\n'
            '    && rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/local.list')


def debian_cache():
    """(the cache directory of scripts/debian-base.sh, None) when it holds the base and the repository,
    else (None, why)."""
    d = Path(os.environ.get("SBX_TEST_DEBIAN") or DEFAULT_CACHE)
    missing = [p for p in ("oci/index.json", "repo/Packages", "base.tar") if not (d / p).is_file()]
    if missing:
        return None, (f"the Debian base is not installed in {d} (missing {', '.join(missing)}): run "
                      "scripts/debian-base.sh as root (scripts/test.sh does) and pass its directory as SBX_TEST_DEBIAN")
    return d, None


def load_args(cache: Path):
    """`sbx load` arguments that put the cached base into a store as DEBIAN_IMAGE."""
    return ["load", "-q", "-i", str(cache / "oci"), "--repository", DEBIAN_IMAGE.rsplit(":", 1)[0]]


@contextlib.contextmanager
def serve_repo(repo: Path):
    """Serve the flat apt repository ``repo`` over HTTP on the host's own non-loopback address (what a
    build step on sbx's default network, slirp4netns without host-loopback access, reaches, and
    buildah's chroot steps on the host's network too); yields its sources.list line."""
    addr = sbxtest.host_address()
    assert addr and not addr.startswith("127."), "the host needs a non-loopback IPv4 address to serve the repository"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer((addr, 0), functools.partial(Quiet, directory=str(repo)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"deb [trusted=yes] http://{addr}:{srv.server_address[1]}/ ./"
    finally:
        srv.shutdown()
        srv.server_close()
