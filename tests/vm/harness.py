"""A QEMU (TCG) virtual machine with cgroup v2 and a delegated subtree, for the tests this host
cannot run (it has cgroup v1 hybrid and no systemd; docs: /work/shared/reference
next-capabilities.md §2).

    vm = Machine(cache_dir)         # downloads a Debian kernel (apt-get download), builds an
    vm.build()                      # initramfs of busybox and the virtio/9p modules
    result = vm.run_pytest(uid, gid, python, [test args], out_dir)

The guest boots Debian's kernel with a busybox initramfs that insmods virtio and 9p, mounts the
host's / read-only over 9p, mounts cgroup2 (nsdelegate) on /sys/fs/cgroup with memory, pids,
cpu, cpuset and io enabled (and a small read-only virtio disk, /dev/vda, for io limits), makes `user-UID` owned by the test user as systemd's Delegate=yes does
(the directory and its cgroup.procs, cgroup.subtree_control, cgroup.threads), puts the test
process in the leaf `user-UID/init` (no-internal-process rule), switch_roots (a chroot would
make user-namespace creation fail with EPERM) and runs pytest as the user with SBX_IN_VM=1.
Results come back on a second, writable 9p share: pytest's JUnit XML, its output and its exit
status.  Nothing here needs root or KVM; only qemu-system-x86_64, apt-get and dpkg-deb.
"""
from __future__ import annotations

import gzip
import os
import shlex
import shutil
import stat
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
           "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "virtio_blk")

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot /bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /mod/$m.ko || echo "vm-init: insmod $m failed"; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot /newroot || {
    echo "vm-init: cannot mount the host root"; poweroff -f; }
umount /proc
exec switch_root /newroot /bin/sh "$(cat /stage2.path)"
"""

STAGE2 = r"""# vm stage 2: runs as the guest's root in the host's (read-only) tree
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts 2>/dev/null; mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /tmp/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /tmp/out || { echo "vm: no out share"; poweroff -f; }
say() { echo "vm: $*"; echo "$*" >>/tmp/out/vm.log; }
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || say "cannot mount cgroup2"
for c in memory pids cpu cpuset io; do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || say "cannot enable $c"
done
u=/sys/fs/cgroup/user-@UID@
mkdir -p $u/init
chown @UID@:@GID@ $u $u/cgroup.procs $u/cgroup.subtree_control $u/cgroup.threads
echo $$ >$u/init/cgroup.procs
say "up $(cut -d' ' -f1 /proc/uptime) s; cgroup $(cat /proc/self/cgroup); controllers $(cat $u/cgroup.controllers)"
mkdir -p /tmp/home /tmp/xdg && chown @UID@:@GID@ /tmp/home /tmp/xdg && chmod 700 /tmp/xdg
cd /tmp/home
setpriv --reuid=@UID@ --regid=@GID@ --clear-groups \
    env -i HOME=/tmp/home USER=vmuser PATH=@PATH@ LANG=C.UTF-8 XDG_RUNTIME_DIR=/tmp/xdg SBX_IN_VM=1 PYTHONPATH=@PYTHONPATH@ \
    @PYTEST@ >/tmp/out/pytest.log 2>&1
echo $? >/tmp/out/rc
say "pytest done at $(cut -d' ' -f1 /proc/uptime) s"
sync
busybox poweroff -f
"""


class VMError(Exception):
    pass


def _newc(entries):
    """A cpio 'newc' archive of (name, mode, data) entries (what the kernel unpacks)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(list(entries) + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _depends(ko):
    """A module's depends= (modinfo) read from the .ko itself: kmod is not needed."""
    data = ko.read_bytes()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    end = data.index(b"\0", i + 1)
    return [d for d in data[i + 9:end].decode().split(",") if d]


class Machine:
    def __init__(self, cache: Path):
        self.cache = Path(cache)
        self.kernel = self.initrd = None
        self.timings = {}

    def _run(self, argv, **kw):
        r = subprocess.run(argv, capture_output=True, text=True, **kw)
        if r.returncode:
            raise VMError(f"{' '.join(map(str, argv))} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return r.stdout

    def build(self):
        """Kernel and initramfs in the cache (kept between sessions)."""
        t = time.monotonic()
        self.cache.mkdir(parents=True, exist_ok=True)
        root = self.cache / "kernel"
        if not (self.cache / "kernel.done").exists():
            deps = self._run(["apt-cache", "depends", "linux-image-amd64"])
            pkg = next((w.split()[-1] for w in deps.splitlines() if "Depends: linux-image-" in w), None)
            if pkg is None:
                raise VMError("apt-cache knows no linux-image-amd64: run apt-get update (as root)")
            self._run(["apt-get", "download", pkg], cwd=self.cache)
            deb = next(self.cache.glob(f"{pkg}_*.deb"))
            shutil.rmtree(root, ignore_errors=True)
            self._run(["dpkg-deb", "-x", str(deb), str(root)])
            deb.unlink()
            (self.cache / "kernel.done").write_text(pkg + "\n")
        self.kernel = next((root / "boot").glob("vmlinuz-*"))
        mods = {}
        for ko in (root / "lib" / "modules").rglob("*.ko"):
            mods[ko.stem.replace("-", "_")] = ko
        order = []

        def add(name):
            name = name.replace("-", "_")
            if name in order or name not in mods:
                return
            for d in _depends(mods[name]):
                add(d)
            order.append(name)

        for m in MODULES:
            add(m)
        busybox = Path(shutil.which("busybox") or "/bin/busybox")
        if not busybox.exists():
            raise VMError("busybox is missing: install busybox-static")
        entries = [("bin", stat.S_IFDIR | 0o755, b""), ("mod", stat.S_IFDIR | 0o755, b""),
                   ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
                   ("init", stat.S_IFREG | 0o755, INIT.encode()),
                   ("modules.order", stat.S_IFREG | 0o644, " ".join(order).encode()),
                   ("stage2.path", stat.S_IFREG | 0o644, str(self.cache / "stage2.sh").encode())]
        entries += [(f"mod/{m}.ko", stat.S_IFREG | 0o644, mods[m].read_bytes()) for m in order]
        self.initrd = self.cache / "initrd.gz"
        self.initrd.write_bytes(gzip.compress(_newc(entries), 1))
        self.timings["build"] = time.monotonic() - t
        return self

    def run_pytest(self, uid, gid, pytest_argv, out: Path, path_env, timeout=600):
        """Boot, run `pytest_argv` as uid:gid in the delegated cgroup, power off.  Returns
        (exit status, {test id: (outcome, text)}, console)."""
        out = Path(out)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        os.chmod(out, 0o777)
        script = (STAGE2.replace("@UID@", str(uid)).replace("@GID@", str(gid))
                  .replace("@PATH@", shlex.quote(path_env))
                  .replace("@PYTHONPATH@", shlex.quote(os.environ.get("PYTHONPATH", "")))
                  .replace("@PYTEST@", " ".join(map(shlex.quote, pytest_argv))))
        (self.cache / "stage2.sh").write_text(script)
        os.chmod(self.cache / "stage2.sh", 0o644)
        disk = self.cache / "disk.img"  # /dev/vda in the guest: a block device for io.max
        if not disk.exists():
            with open(disk, "wb") as f:
                f.truncate(8 << 20)
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise VMError("qemu-system-x86_64 is missing: install qemu-system-x86")
        argv = [qemu, "-accel", "tcg", "-nic", "none", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
                "-kernel", str(self.kernel), "-initrd", str(self.initrd),
                "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
                "-virtfs", f"local,path={out},mount_tag=out,security_model=none,multidevs=remap",
                "-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        t = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
            console = r.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            console = (e.stdout or b"").decode(errors="replace")
            log = (out / "pytest.log").read_text(errors="replace") if (out / "pytest.log").exists() else ""
            raise VMError(f"the VM did not power off within {timeout} s; console:\n{console[-3000:]}\n"
                          f"pytest so far:\n{log[-3000:]}") from None
        self.timings["vm"] = time.monotonic() - t
        rc_file = out / "rc"
        log = (out / "pytest.log").read_text(errors="replace") if (out / "pytest.log").exists() else ""
        if not rc_file.exists():
            raise VMError(f"the VM's pytest left no result; console:\n{console[-3000:]}\npytest:\n{log[-3000:]}")
        results = {}
        junit = out / "junit.xml"
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                name = case.get("name")
                outcome, text = "passed", ""
                for tag in ("failure", "error", "skipped"):
                    el = case.find(tag)
                    if el is not None:
                        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                        text = (el.get("message") or "") + "\n" + (el.text or "")
                        break
                results[name] = (outcome, text)
        return int(rc_file.read_text().strip() or 1), results, console + "\n" + log
