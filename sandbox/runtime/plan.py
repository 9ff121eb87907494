"""Compile a runtime spec (spec.py) into a launch plan: the flat list of steps csrc/sb_child.c
executes.  Pure Python, no syscalls that change anything: the plan is data, and the tests
read it.

Layout inside the sandbox's own mount namespace (nothing is written on the host):
    M = paths.mount_base()       one empty host directory shared by all sandboxes
    tmpfs on M                   private to this sandbox, gone with its mount namespace
    M/root                       the new root: overlay(lower=rootfs, upper, work) or a bind
    M/upper, M/work              the writable layer, unless the spec names a host directory
    M/hostname, M/hosts, ...     generated files, bind-mounted into M/root/etc
"""
import os
import stat
import sys

from . import paths

# csrc/sb_launch.h enum sb_op_kind and SB_OPF_*
OP_MOUNT, OP_BIND, OP_MKDIR, OP_MKFILE, OP_WRITE, OP_SYMLINK, OP_SETATTR, OP_CHMOD, OP_RUN = range(1, 10)
OPF_OPTIONAL, OPF_NONREC, OPF_INROOT, OPF_SRC_INROOT = 0x1, 0x4, 0x8, 0x10
USERNS_NONE, USERNS_SELF, USERNS_HELPER = 0, 1, 2

CLONE_FLAGS = {"user": 0x10000000, "mount": 0x00020000, "pid": 0x20000000, "uts": 0x04000000,
               "ipc": 0x08000000, "network": 0x40000000, "cgroup": 0x02000000}
MS_FLAGS = {"ro": 0x1, "nosuid": 0x2, "nodev": 0x4, "noexec": 0x8, "noatime": 0x400,
            "nodiratime": 0x800, "relatime": 0x200000, "strictatime": 0x1000000}
MOUNT_ATTR = {"ro": 0x1, "nosuid": 0x2, "nodev": 0x4, "noexec": 0x8}
RLIM_INFINITY = 2**64 - 1
RLIMIT_NUM = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
              "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
              "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
              "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _enc(s):
    """os.fsencode, without its Python-level checks for the common str (~60 calls a launch)."""
    if s.__class__ is str:
        return s.encode(_FS_ENCODING, _FS_ERRORS)
    return os.fsencode(s)


class Plan:
    """The launch plan, field for field the C struct sb_config (csrc/sb_launch.h)."""
    __slots__ = ("clone_flags", "late_unshare", "userns_mode", "uid_map", "gid_map", "newuidmap", "newgidmap",
                 "setns", "ops", "op_names", "newroot", "hostname", "loopback", "argv", "envp",
                 "path", "cwd", "mkdir_cwd", "ids", "caps", "cap_last", "no_new_privs",
                 "die_with_parent", "rlimits", "stdio", "setsid", "ctty", "console_socket", "console_size",
                 "keep_fds", "init_fd", "new_keyring", "seccomp", "start_fd", "hold_fd", "clone_mode", "userns_kept",
                 "netns_pooled")

    def __init__(self):
        self.clone_flags = 0
        self.late_unshare = 0    # CLONE_NEW* the child makes once released (launch.create)
        self.userns_mode = USERNS_NONE
        self.uid_map = self.gid_map = self.newuidmap = self.newgidmap = None
        self.setns = []
        self.ops = []
        self.op_names = []
        self.newroot = self.hostname = None
        self.loopback = False
        self.argv, self.envp = [], []
        self.path = self.cwd = None
        self.mkdir_cwd = False
        self.ids = self.caps = None
        self.cap_last = 40
        self.no_new_privs = False
        self.die_with_parent = True
        self.rlimits = []
        self.stdio = (-1, -1, -1)
        self.setsid = self.ctty = False
        self.console_socket = -1
        self.console_size = (0, 0)
        self.keep_fds = []
        self.init_fd = -1
        self.new_keyring = True
        self.seccomp = None
        self.start_fd = -1       # >= 0: wait for a byte on it just before execve (launch.create)
        self.hold_fd = -1        # with start_fd: the sealed sbx-init the child waits in (sealed.py)
        self.clone_mode = None   # set by the launcher: "vfork" (the fast path) or "fork"
        self.userns_kept = False  # joins the kept user namespace (runtime/keeper.py)
        self.netns_pooled = False  # and a fresh network namespace its keeper made ahead

    def op(self, kind, dst, src=None, fstype=None, data=None, mflags=0, mode=0, flags=0, what=None):
        self.ops.append((kind, flags, None if src is None else _enc(src), _enc(dst),
                         None if fstype is None else fstype.encode(),
                         None if data is None else (data if isinstance(data, bytes) else data.encode()),
                         mflags, mode))
        self.op_names.append(what or dst)


_host_info = {}


def _cap_last():
    v = _host_info.get("cap_last")
    if v is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                v = int(f.read())
        except (OSError, ValueError):
            v = 40
        _host_info["cap_last"] = v
    return v


def _host_kind(path):
    """'dir', 'file' or None for a host /proc or /sys path (the same kernel serves the sandbox)."""
    kinds = _host_info.setdefault("kinds", {})
    k = kinds.get(path, 0)
    if k == 0:
        try:
            k = "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "file"
        except OSError:
            k = None
        kinds[path] = k
    return k


def _overlay_escape(p):
    return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _split_options(opts):
    mflags, attrs, data, sbx = 0, 0, [], set()
    for o in opts:
        if o in MS_FLAGS:
            mflags |= MS_FLAGS[o]
            attrs |= MOUNT_ATTR.get(o, 0)
        elif o.startswith("sbx-") or o in ("bind", "rbind", "rw"):
            sbx.add(o)
        else:
            data.append(o)
    return mflags, attrs, ",".join(data) or None, sbx


_INIT_DIRS = (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("etc", 0o755))
_INIT_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


def _init_layer(p, base, lowers):
    """Steps that build the init layer at M/init; returns its path, or None when the image
    has every mount point already."""
    def present(rel):
        # No host lookup follows the image's links: a parent that is not a plain directory (an
        # image's `etc -> private/etc`) counts as present, and the child makes the mount point
        # inside the root (OPF_INROOT), through the link as the image means it.
        parent = rel.rpartition("/")[0]
        for d in lowers:
            if parent:
                try:
                    if not stat.S_ISDIR(os.lstat(f"{d}/{parent}").st_mode):
                        return True
                except OSError:
                    continue
            if os.path.lexists(f"{d}/{rel}"):
                return True
        return False
    missing_dirs = [(d, m) for d, m in _INIT_DIRS if not present(d)]
    missing_files = [f for f in _INIT_FILES if not present(f)]
    if not missing_dirs and not missing_files:
        return None
    init = f"{base}/init"
    p.op(OP_MKDIR, init, mode=0o755)
    for d, mode in missing_dirs:
        p.op(OP_MKDIR, f"{init}/{d}", mode=mode)
    if missing_files and ("etc", 0o755) not in missing_dirs:
        mode = 0o755
        for d in lowers:
            try:
                mode = stat.S_IMODE(os.stat(f"{d}/etc").st_mode)
                break
            except OSError:
                continue
        p.op(OP_MKDIR, f"{init}/etc", mode=mode)
    for f in missing_files:
        p.op(OP_MKFILE, f"{init}/{f}", mode=0o644)
    return init


def _host_root_lacks_mount_points(mounts):
    """Whether a mount goes on a top-level directory the host's / does not have (`-v X:/src`
    with --rootfs /): the read-only bind of / could not get it."""
    for m in mounts:
        top = m["destination"].lstrip("/").split("/", 1)[0]
        if top and not os.path.lexists("/" + top):
            return True
    return False


def _host_skeleton(p, root):
    """The host's / as a tmpfs holding a read-only bind of each top-level directory and file and
    a copy of each top-level symlink (bubblewrap's way of building a root): missing mount points
    can then be made in the tmpfs, which is made read-only at the end."""
    p.op(OP_MOUNT, root, src="sbx-root", fstype="tmpfs", data="mode=0755", mflags=MS_FLAGS["nosuid"],
         what="root filesystem / (skeleton)")
    for name in sorted(os.listdir("/")):
        host, dst = "/" + name, f"{root}/{name}"
        try:
            st = os.lstat(host)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            p.op(OP_SYMLINK, dst, src=os.readlink(host))
        elif stat.S_ISDIR(st.st_mode):
            p.op(OP_MKDIR, dst, mode=stat.S_IMODE(st.st_mode))
            if name not in ("proc", "sys", "dev"):  # the sandbox gets its own
                p.op(OP_BIND, dst, src=host, mode=MOUNT_ATTR["ro"], what=f"root filesystem {host}")
        elif stat.S_ISREG(st.st_mode):
            p.op(OP_MKFILE, dst, mode=0o644)
            p.op(OP_BIND, dst, src=host, mode=MOUNT_ATTR["ro"], flags=OPF_NONREC, what=f"root filesystem {host}")


_tables = {}  # mount-table steps by (base, mounts, masked, read-only paths): see _mount_table


def _table_ops(p, base, mounts, masked_paths, readonly_paths):
    """The steps of the mount table: each mount, masked paths, read-only paths."""
    # The mount table.  Every target is a path inside the new root, resolved there by the child
    # (OPF_INROOT: openat2 RESOLVE_IN_ROOT), so the image's symlinks (`/data -> /home/you`)
    # lead to the image's own files, never to the host's; missing parents are created there.
    for mnt in mounts:
        dest = mnt["destination"]
        target = dest.lstrip("/")
        mflags, attrs, data, sbx = _split_options(mnt["options"])
        optional = OPF_OPTIONAL if "sbx-optional" in sbx else 0
        typ = mnt["type"]
        if "sbx-create-file" in sbx:
            p.op(OP_MKFILE, target, mode=0o644, flags=optional | OPF_INROOT, what=f"mount point {dest}")
        else:
            p.op(OP_MKDIR, target, mode=0o755, flags=OPF_OPTIONAL | OPF_INROOT, what=f"mount point {dest}")
        if typ == "bind":
            src = mnt["source"]
            if src.startswith("sbx-file:"):
                src = f"{base}/{src[9:]}"
            p.op(OP_BIND, target, src=src, mode=attrs,
                 flags=optional | OPF_INROOT | (0 if "rbind" in sbx else OPF_NONREC),
                 what=f"bind mount {mnt['source']} on {dest}")
        else:
            p.op(OP_MOUNT, target, src=mnt["source"], fstype=typ, data=data, mflags=mflags,
                 flags=optional | OPF_INROOT, what=f"{typ} on {dest}")
        if dest == "/dev":
            for name, to in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                             ("core", "/proc/kcore")):
                p.op(OP_SYMLINK, f"{target}/{name}", src=to, flags=OPF_INROOT)

    empty = None
    for path in masked_paths:
        kind = _host_kind(path)
        rel = path.lstrip("/")
        if kind == "dir":
            # runc mounts a read-only tmpfs on each; a read-only bind of one empty directory of
            # the private tmpfs hides as much and makes no superblock to set up and tear down.
            if empty is None:
                empty = f"{base}/empty"
                p.op(OP_MKDIR, empty, mode=0o1777)
            p.op(OP_BIND, rel, src=empty, mode=MOUNT_ATTR["ro"] | MOUNT_ATTR["nosuid"] | MOUNT_ATTR["nodev"]
                 | MOUNT_ATTR["noexec"], flags=OPF_OPTIONAL | OPF_NONREC | OPF_INROOT, what=f"mask {path}")
        elif kind == "file":
            p.op(OP_BIND, rel, src="/dev/null", flags=OPF_OPTIONAL | OPF_NONREC | OPF_INROOT, what=f"mask {path}")
    for path in readonly_paths:
        if _host_kind(path):
            rel = path.lstrip("/")
            p.op(OP_BIND, rel, src=rel, mode=MOUNT_ATTR["ro"], flags=OPF_OPTIONAL | OPF_INROOT | OPF_SRC_INROOT,
                 what=f"read-only {path}")


def _mount_table(p, spec, overlay_driver):
    """The root and every mount, as steps on `p`; returns the new root's host path."""
    x = spec["sbx"]
    linux = spec["linux"]
    # The root.
    base = paths.mount_base()
    rootfs = spec["root"]["path"]
    # The host's own tree is bound read-only (an overlay of / would hide its submounts); any
    # other root is an overlay, made read-only at the end with --read-only, so mount points
    # missing in the image can still be created in its private upper layer (as Docker does).
    # An OCI bundle's root (x["bind_root"], issue 13) is bound as it is, writable: the caller
    # (podman, containerd) made it for this container and expects writes to land there.
    oci_root = bool(x.get("bind_root"))
    bind_root = rootfs == "/" or oci_root
    fuse = overlay_driver == "fuse" and not bind_root
    # fuse-overlayfs runs chrooted in a bind of / at M/host and mounts where it sees M/root.
    root = f"{base}/host{base}/root" if fuse else f"{base}/root"
    p.op(OP_MOUNT, base, src="sbx", fstype="tmpfs", data="mode=0755", mflags=MS_FLAGS["nosuid"],
         what="private tmpfs")
    p.op(OP_MKDIR, f"{base}/root", mode=0o755)
    skeleton = rootfs == "/" and not oci_root and _host_root_lacks_mount_points(spec["mounts"])
    if skeleton:
        _host_skeleton(p, root)
    elif oci_root:
        p.op(OP_BIND, root, src=rootfs, mode=x.get("root_attrs", 0), what=f"root filesystem {rootfs}")
    elif bind_root:
        p.op(OP_BIND, root, src=rootfs, mode=MOUNT_ATTR["ro"], what=f"root filesystem {rootfs}")
    else:
        upper = x["upper"]
        if upper is None:
            upper, work = f"{base}/upper", f"{base}/work"
            try:
                rmode = stat.S_IMODE(os.stat(x["lowers"][0]).st_mode)
            except OSError:
                rmode = 0o755
            p.op(OP_MKDIR, upper, mode=rmode)
            p.op(OP_MKDIR, work, mode=0o700)
        else:
            work = os.path.join(os.path.dirname(upper), "work")
        # Docker's "init layer": mount points the image lacks are made in a lower layer of
        # the private tmpfs, not in the upper, so they are not part of the container's diff.
        init = _init_layer(p, base, x["lowers"])
        lowerdir = ":".join(_overlay_escape(d) for d in ([init] if init else []) + x["lowers"])
        data = (f"lowerdir={lowerdir},upperdir={_overlay_escape(upper)},"
                f"workdir={_overlay_escape(work)}")
        if fuse:
            from .overlay import fuse_overlayfs
            prog = fuse_overlayfs() or "/usr/bin/fuse-overlayfs"
            p.op(OP_MKDIR, f"{base}/host", mode=0o755)
            p.op(OP_BIND, f"{base}/host", src="/", what="host view for fuse-overlayfs")
            argv = b"\0".join(_enc(a) for a in ("fuse-overlayfs", "-o", data, f"{base}/root")) + b"\0"
            p.op(OP_RUN, f"{base}/host", src=prog, data=argv, what=f"fuse-overlayfs of {rootfs}")
        else:
            # volatile (Linux 5.10, before userxattr's 5.11): fsync is a no-op, for a build step's
            # upper, whose layer blob is what is made durable (sandbox/build/builder.py)
            p.op(OP_MOUNT, root, src="overlay", fstype="overlay",
                 data=data + ",userxattr" + (",volatile" if x.get("volatile") else ""), what=f"overlay of {rootfs}")

    for name, content in x["files"].items():
        p.op(OP_WRITE, f"{base}/{name}", data=content.encode(), mode=0o644, what=f"/etc/{name}")

    # The mount table, the same for every sandbox of one shape: compiled once per process.
    key = (base, tuple((m["destination"], m["type"], m["source"], tuple(m["options"])) for m in spec["mounts"]),
           tuple(linux["maskedPaths"]), tuple(linux["readonlyPaths"]))
    table = _tables.get(key)
    if table is None:
        if len(_tables) >= 32:
            _tables.clear()
        t = Plan()
        _table_ops(t, base, spec["mounts"], linux["maskedPaths"], linux["readonlyPaths"])
        table = _tables[key] = (tuple(t.ops), tuple(t.op_names))
    p.ops.extend(table[0])
    p.op_names.extend(table[1])

    if spec["root"]["readonly"] and (skeleton or oci_root or not bind_root):
        p.op(OP_SETATTR, root, mode=MOUNT_ATTR["ro"], flags=OPF_NONREC, what="read-only root")
    return root


def compile(spec, *, stdio=(-1, -1, -1), keep_fds=(), console_socket=-1, console_size=(0, 0),
            overlay_driver="kernel", start_fd=-1, kept_userns=None):
    """spec (an OCI-shaped dict from spec.build) -> Plan.  `kept_userns`: an fd of the kept user
    namespace (keeper.userns_fd(spec)) to join instead of mapping a new one; the plan owns it."""
    x = spec["sbx"]
    linux = spec["linux"]
    p = Plan()
    p.start_fd = start_fd
    if start_fd >= 0:
        # Held until started in sbx-init, not in a fork of this process (csrc/sb_init.c).
        from .sealed import init_fd
        p.hold_fd = init_fd()
    joins = [n for n in linux["namespaces"] if n.get("path")]
    ns = {n["type"] for n in linux["namespaces"] if not n.get("path")}
    if joins and not ns:
        return _compile_exec(p, spec, joins, stdio, keep_fds, console_socket, console_size)
    if joins:
        # Join these (a user-defined network's holder user namespace) and make the rest inside
        # them: the child setns()es, then unshares the others (csrc/sb_child.c).
        p.setns = _open_joins(joins)
    elif kept_userns is not None and "user" in ns:
        # The kept user namespace (runtime/keeper.py), already mapped like this spec: joined
        # the same way, nothing to map.
        p.setns = [(kept_userns, CLONE_FLAGS["user"])]
        p.userns_kept = True
        ns = ns - {"user"}
        if "network" in ns:
            # a network namespace the keeper made ahead in that user namespace, used once
            from .keeper import take_netns
            netns = take_netns()
            if netns is not None:
                p.setns.append((netns, CLONE_FLAGS["network"]))
                p.netns_pooled = True
                ns = ns - {"network"}
    elif kept_userns is not None:
        os.close(kept_userns)
    for n in ns:
        p.clone_flags |= CLONE_FLAGS[n]

    if "user" in ns:
        from .idmap import helper_argv, map_text
        if x["userns"] == "helper":
            p.userns_mode = USERNS_HELPER
            p.newuidmap = [_enc(a) for a in helper_argv(x["newuidmap"], linux["uidMappings"])]
            p.newgidmap = [_enc(a) for a in helper_argv(x["newgidmap"], linux["gidMappings"])]
        else:
            p.userns_mode = USERNS_SELF
            p.uid_map = map_text(linux["uidMappings"]).encode()
            p.gid_map = map_text(linux["gidMappings"]).encode()

    if "mount" in ns:
        p.newroot = _enc(_mount_table(p, spec, overlay_driver))
    if "uts" in ns and spec["hostname"] is not None:  # None: keep the inherited name (OCI)
        p.hostname = spec["hostname"].encode()
    p.loopback = "network" in ns  # a pooled namespace comes with lo up (runtime/keeper.py)

    _process(p, spec, stdio, keep_fds, console_socket, console_size)
    return p


def _compile_exec(p, spec, joins, stdio, keep_fds, console_socket, console_size):
    """Join a running sandbox's namespaces (paths from spec.build_exec) instead of making new
    ones: the files are opened here, the child setns()es them, user namespace first."""
    p.setns = _open_joins(joins)
    _process(p, spec, stdio, keep_fds, console_socket, console_size)
    return p


def _open_joins(joins):
    fds = []
    try:
        for n in joins:
            fds.append((os.open(n["path"], os.O_RDONLY | os.O_CLOEXEC), CLONE_FLAGS[n["type"]]))
    except OSError as e:
        for fd, _ in fds:
            os.close(fd)
        from ..errors import UsageError
        raise UsageError(f"cannot join the sandbox's namespaces ({e.filename}): {e.strerror}",
                         hint="is it still running?") from None
    return fds


def _process(p, spec, stdio, keep_fds, console_socket, console_size):
    """The process half of the plan: argv, env, cwd, ids, capabilities, limits, stdio."""
    x = spec["sbx"]
    proc = spec["process"]
    p.argv = [_enc(a) for a in proc["args"]]
    p.envp = [_enc(e) for e in proc["env"]]
    for e in proc["env"]:
        if e.startswith("PATH="):
            p.path = _enc(e[5:])
    p.cwd = _enc(proc["cwd"])
    p.mkdir_cwd = x["mkdir_cwd"]
    user = proc["user"]
    if "ids" in x:  # (uid, gid, groups or None): set as given (OCI bundles, issue 13)
        p.ids = tuple(x["ids"])
    elif x["userns"] == "helper":
        p.ids = (user["uid"], user["gid"], [user["gid"], *user["additionalGids"]])
    caps = 0
    from .spec import CAPS
    for c in proc["capabilities"]["bounding"]:
        caps |= 1 << CAPS[c]
    p.caps = caps
    p.cap_last = _cap_last()
    p.no_new_privs = proc["noNewPrivileges"]
    p.die_with_parent = x["die_with_parent"]
    p.rlimits = [(RLIMIT_NUM[r["type"]], RLIM_INFINITY if r["soft"] == -1 else r["soft"],
                  RLIM_INFINITY if r["hard"] == -1 else r["hard"]) for r in proc["rlimits"]]
    p.stdio = tuple(stdio)
    p.keep_fds = sorted(keep_fds)
    # Always a new session: with a console it is the sandbox's controlling terminal; without,
    # the sandbox cannot reach a terminal it inherited (bwrap's --new-session).
    p.setsid = True
    p.ctty = console_socket >= 0
    p.console_socket = console_socket
    p.console_size = tuple(console_size)
    if x["init"]:
        from .sealed import init_fd
        p.init_fd = init_fd()
    profile = spec["linux"].get("seccomp")
    if profile is not None:
        p.seccomp = _seccomp_program(profile, proc["capabilities"]["bounding"])


_programs = {}


def _seccomp_program(profile, caps):
    """The compiled filter; the default profile's programs are remembered per capability set
    (a pure function of both), so a process pays for them once."""
    from . import seccomp
    if profile != "default":
        return seccomp.program(profile, caps)
    key = tuple(caps)
    prog = _programs.get(key)
    if prog is None:
        prog = _programs[key] = seccomp.default_program(caps)
    return prog
