"""Test images for build tests and benchmarks: tars made in memory, a Debian-style root
filesystem made offline from this Debian host's own packages' files, and a small .deb."""
import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import sbxtest


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


def debian_rootfs(dest: Path) -> Path:
    """A Debian-style root filesystem made offline from this Debian host: busybox plus the host's
    own dpkg, apt-get (and its methods), useradd, groupadd, GNU tar and ldconfig with the libraries
    they load, apt's and dpkg's state directories, and the _apt user of a real Debian image."""
    sbxtest.build_busybox_rootfs(dest)
    progs = ["/usr/bin/dpkg", "/usr/bin/dpkg-deb", "/usr/bin/dpkg-query", "/usr/bin/dpkg-split", "/usr/bin/tar",
             "/usr/sbin/useradd", "/usr/sbin/groupadd", "/usr/sbin/ldconfig", "/usr/bin/apt-get",
             "/usr/bin/apt-config", *map(str, Path("/usr/lib/apt/methods").iterdir())]
    libs = set()
    for p in progs:
        out = subprocess.run(["ldd", p], capture_output=True, text=True).stdout
        libs.update(w for line in out.splitlines() for w in line.split() if w.startswith("/"))
    for src in [*progs, *libs]:
        if not os.path.exists(src):
            continue
        t = dest / src.lstrip("/")
        t.parent.mkdir(parents=True, exist_ok=True)
        if t.is_symlink() or t.exists():
            t.unlink()
        shutil.copy2(os.path.realpath(src), t)
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc/dpkg/dpkg.cfg.d",
              "etc/apt/apt.conf.d", "etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/log/apt", "usr/local/bin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (dest / f).write_text("")
    shutil.copy2("/etc/login.defs", dest / "etc/login.defs")
    shutil.copytree("/usr/share/dpkg", dest / "usr/share/dpkg", dirs_exist_ok=True)
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n")
    (dest / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (dest / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n_apt:*:19000:0:99999:7:::\n")
    (dest / "etc/gshadow").write_text("root:*::\nnogroup:*::\n")
    return dest


def make_deb(path: Path) -> None:
    """hello_1.0_all.deb, as dpkg-deb builds it (ar of debian-binary, control.tar.gz, data.tar.gz):
    a file owned by 1000:1000, a 0750 state directory, and a postinst that adds a system user and
    gives it that directory."""
    def tgz(entries):
        raw = tar_bytes(entries)
        return gzip.compress(raw, mtime=0)
    control = b"Package: hello\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    postinst = b"#!/bin/sh\nset -e\nuseradd -r -u 900 -d /var/lib/hello -s /bin/sh hellod\nchown hellod: /var/lib/hello\n"
    d = [(n, "d", 0o755, 0, 0, b"") for n in ("./", "./usr/", "./usr/bin/", "./usr/share/", "./usr/share/hello/",
                                              "./var/", "./var/lib/")]
    data = tgz(d + [("./var/lib/hello/", "d", 0o750, 0, 0, b""),
                    ("./usr/bin/hello", "f", 0o755, 0, 0, b"#!/bin/sh\necho hello from a deb\n"),
                    ("./usr/share/hello/owned", "f", 0o644, 1000, 1000, b"owned by 1000\n")])
    ctl = tgz([("./", "d", 0o755, 0, 0, b""), ("./control", "f", 0o644, 0, 0, control),
               ("./postinst", "f", 0o755, 0, 0, postinst)])
    out = b"!<arch>\n"
    for name, blob in (("debian-binary", b"2.0\n"), ("control.tar.gz", ctl), ("data.tar.gz", data)):
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode() + blob + b"\n" * (len(blob) % 2)
    path.write_bytes(out)
