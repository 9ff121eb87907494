"""Helpers for tests and benchmarks that need a root filesystem without any download:
a busybox tree built from the host's static busybox (Debian: busybox-static)."""
import os
import shutil
import subprocess

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "app:x:1000:1000:app:/home/app:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\naudio:x:29:app\napp:x:1000:\nnogroup:x:65534:\n"


def find_busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(p, os.X_OK):
            return p
    return shutil.which("busybox")


def make_busybox_rootfs(dest, busybox=None):
    """Build a minimal root filesystem in `dest` (created): /bin/busybox and one symlink per
    applet, the usual mount points, /etc/passwd with root, app (1000) and nobody."""
    busybox = busybox or find_busybox()
    if not busybox:
        raise FileNotFoundError("busybox not found: install busybox-static")
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "root", "home/app", "run", "var/tmp"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = os.path.join(dest, "bin", a)
        if a != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write(GROUP)
    return dest


if __name__ == "__main__":
    # python -m sandbox.testing DIR: a busybox root filesystem in DIR, offline.
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sandbox.testing DIR")
    try:
        make_busybox_rootfs(sys.argv[1])
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot build a busybox root filesystem in {sys.argv[1]}: {e}")
