"""Options -> one runtime description, shaped like an OCI runtime-spec config.json.

This module holds the policy (Docker's defaults: capabilities, /dev, masked /proc paths,
environment, users); plan.py holds the mechanism.  Every way of starting a process (CLI run,
Python API, later build RUN steps and exec) comes through build()."""
import os
import stat

from ..errors import UsageError
from . import idmap

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# linux/capability.h numbering.
CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
# Docker's default set (moby oci/caps/defaults.go).
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")

# Docker's masked and read-only /proc and /sys paths (moby oci/defaults.go).
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

RLIMITS = {
    "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8, "msgqueue": 12,
    "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14, "rttime": 15, "sigpending": 11,
    "stack": 3, "as": 9,
}

def parse_volume(v):
    """HOST:CTR[:ro|rw] (string) or (host, ctr[, mode]) -> (host, ctr, readonly)."""
    if isinstance(v, (tuple, list)):
        parts = [str(p) for p in v]
    else:
        parts = str(v).split(":")
    if len(parts) == 2:
        host, ctr, mode = parts[0], parts[1], "rw"
    elif len(parts) == 3:
        host, ctr, mode = parts
    else:
        raise UsageError(f"invalid volume specification {v!r}", hint="use HOST:CONTAINER[:ro]")
    opts = set(mode.split(",")) if mode else set()
    if not opts <= {"ro", "rw", "z", "Z", "rbind", "bind"} or {"ro", "rw"} <= opts:
        raise UsageError(f"invalid volume mode {mode!r} in {v!r}", hint="use ro or rw")
    if not host or not host.startswith("/"):
        raise UsageError(f"invalid volume {v!r}: host path {host!r} is not absolute",
                         hint="named volumes are not supported yet; give an absolute host path")
    if not ctr.startswith("/"):
        raise UsageError(f"invalid volume {v!r}: container path {ctr!r} is not absolute")
    if os.path.normpath(ctr) == "/":
        raise UsageError(f"invalid volume {v!r}: destination can't be '/'",
                         hint="mount the directory below /, or give it as the root with --rootfs")
    if not os.path.exists(host):
        raise UsageError(f"bind source {host!r} does not exist", hint="create it first")
    return os.path.realpath(host), os.path.normpath(ctr), "ro" in opts


def read_root_file(dirs, rel):
    """A file of the root as the sandbox will see it: the first of `dirs` (a rootfs, or an
    image's layers top first) that has it; an overlay whiteout (0/0 device) hides it.  The path
    is resolved inside each directory (an image's `etc -> /home/you` is not followed out)."""
    from .._native import open_in_root
    for d in dirs:
        try:
            rootfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fd = open_in_root(rootfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            continue
        except OSError:
            return None  # a whiteout, a symlink, a fifo: not a file the sandbox can read as such
        finally:
            os.close(rootfd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            # sized by the file (a read of 16 MiB would map and unmap that much every launch)
            return f.read(min(st.st_size + 1, 1 << 24))
    return None


def _read_db(dirs, name):
    data = read_root_file(dirs, f"etc/{name}")
    if data is None:
        return []
    text = data.decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(dirs, user):
    """Docker's -u: UID[:GID] or NAME[:GROUP] -> (uid, gid, home, name) from the root's
    /etc/passwd and /etc/group (`dirs`: see read_root_file)."""
    if user is None or user == "":
        user = "0"
    user = str(user)
    uname, _, gname = user.partition(":")
    passwd = None
    uid = gid = None
    home, name = "/", None
    if uname.isdigit():
        uid = int(uname)
    for ent in _read_db(dirs, "passwd"):
        if len(ent) < 7:
            continue
        if (uid is not None and ent[2] == str(uid)) or (uid is None and ent[0] == uname):
            passwd = ent
            break
    if passwd is not None:
        uid, name, home = int(passwd[2]), passwd[0], passwd[5] or "/"
        gid = int(passwd[3]) if passwd[3].isdigit() else 0
    elif uid is None:
        raise UsageError(f"unable to find user {uname}: no matching entries in passwd file",
                         hint="use a numeric UID, or add the user to the image's /etc/passwd")
    elif uid == 0:
        home = "/root"
    if gid is None:
        gid = uid if uid != 0 else 0
    if gname:
        if gname.isdigit():
            gid = int(gname)
        else:
            for ent in _read_db(dirs, "group"):
                if len(ent) >= 3 and ent[0] == gname:
                    gid = int(ent[2])
                    break
            else:
                raise UsageError(f"unable to find group {gname}: no matching entries in group file")
    return uid, gid, home, name


def supplementary_groups(dirs, name, gid, extra):
    groups = [gid]
    if name:
        for ent in _read_db(dirs, "group"):
            if len(ent) >= 4 and name in ent[3].split(",") and ent[2].isdigit():
                g = int(ent[2])
                if g not in groups:
                    groups.append(g)
    for g in extra:
        g = str(g)
        if not g.isdigit():
            for ent in _read_db(dirs, "group"):
                if len(ent) >= 3 and ent[0] == g:
                    g = ent[2]
                    break
            else:
                raise UsageError(f"unable to find group {g}")
        if int(g) not in groups:
            groups.append(int(g))
    return groups


def capabilities(cap_add=(), cap_drop=()):
    caps = set(DEFAULT_CAPS)
    for c in cap_drop:
        c = c.upper().removeprefix("CAP_")
        if c == "ALL":
            caps.clear()
        elif c in CAPS:
            caps.discard(c)
        else:
            raise UsageError(f"unknown capability {c!r}")
    for c in cap_add:
        c = c.upper().removeprefix("CAP_")
        if c == "ALL":
            caps.update(CAPS)
        elif c in CAPS:
            caps.add(c)
        else:
            raise UsageError(f"unknown capability {c!r}")
    return sorted(caps, key=CAPS.get)


def parse_ulimit(u):
    name, sep, val = str(u).partition("=")
    if not sep or name not in RLIMITS:
        raise UsageError(f"invalid ulimit {u!r}", hint="use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    soft, _, hard = val.partition(":")
    try:
        s = -1 if soft == "-1" else int(soft)
        h = s if not hard else (-1 if hard == "-1" else int(hard))
    except ValueError:
        raise UsageError(f"invalid ulimit value {u!r}") from None
    for v in (s, h):  # rlim_t is 64 bits; -1 is unlimited
        if v != -1 and not 0 <= v < 2 ** 64 - 1:
            raise UsageError(f"ulimit {name}: value {v} is out of range", hint="use 0 to 2^64-2, or -1 for unlimited")
    if s != -1 and h != -1 and s > h:
        raise UsageError(f"ulimit {name}: soft limit {s} is above the hard limit {h}")
    return {"type": "RLIMIT_" + name.upper(), "soft": s, "hard": h}


_host_resolv = None


def _host_resolv_conf():
    global _host_resolv
    if _host_resolv is None:
        try:
            with open("/etc/resolv.conf") as f:
                _host_resolv = f.read()
        except OSError:
            _host_resolv = ""
    return _host_resolv


def network_annotation(network):
    """`network` as spec.build takes it -> the "sbx" annotation's "network" dict: "none" or
    "host" (text), or a resolved mode from sandbox.network.modes (an object with `annotation()`,
    or that dict itself).  Other text is refused: the network layer resolves modes, the runtime
    only records them."""
    if isinstance(network, dict):
        return dict(network)
    if isinstance(network, str) or network is None:
        if network in (None, "none", "host"):
            return {"mode": network or "none"}
        raise UsageError(f"network mode {network!r} is not supported here",
                         hint="resolve it with sandbox.network.modes.resolve(), or use none or host")
    return network.annotation()


def _is_ip(text):
    t = str(text)
    if ":" in t:  # IPv6: hex groups, at most one '::'
        return t.count("::") <= 1 and all(len(g) <= 4 and all(c in "0123456789abcdefABCDEF" for c in g)
                                          for g in t.split(":")) and t.count(":") <= 7
    parts = t.split(".")
    return len(parts) == 4 and all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts)


def extra_host(item, net):
    """--add-host NAME:IP (Docker's; also NAME=IP) -> (name, ip); host-gateway is the address
    that reaches the host from this network."""
    s = str(item)
    sep = "=" if "=" in s else ":"
    name, _, ip = s.partition(sep)
    if not name or not ip:
        raise UsageError(f"invalid --add-host {s!r}", hint="use NAME:IP, e.g. --add-host db:10.0.2.2 or NAME:host-gateway")
    if ip == "host-gateway":
        mode = net.get("mode")
        if mode == "host":
            ip = "127.0.0.1"
        elif net.get("gateway"):
            ip = net["gateway"]
        else:
            raise UsageError(f"--add-host {s}: the {mode} network has no gateway to the host",
                             hint="give an address instead of host-gateway, or use a network with outbound access")
    if not _is_ip(ip):
        raise UsageError(f"invalid IP address {ip!r} in --add-host {s!r}", hint="use NAME:IP")
    return name, ip


def _hosts_file(net, hostname, extra_hosts=()):
    """/etc/hosts: the host's with --network host; else localhost, the container's own name on
    its address, and --add-host entries."""
    extra = "".join(f"{ip}\t{name}\n" for name, ip in (extra_host(e, net) for e in extra_hosts or ()))
    if net.get("mode") == "host":
        try:
            with open("/etc/hosts") as f:
                return f.read() + extra
        except OSError:
            pass
    addr = net.get("address")
    if addr:
        return (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"{addr}\t{hostname}\n" + extra)
    return f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n" + extra


def _resolv_conf(net, dns=(), dns_search=(), dns_options=()):
    """/etc/resolv.conf for the mode: none has no resolver; slirp4netns's DNS (10.0.2.3) or
    pasta's forwarded address replaces the host's nameservers; --dns, --dns-search and
    --dns-option replace the nameservers, search domains and options."""
    for d in dns or ():
        if not _is_ip(d):
            raise UsageError(f"invalid --dns {d!r}: not an IP address", hint="give the name server's address, e.g. 10.0.2.3")
    mode = net.get("mode", "none")
    if mode == "none" and not (dns or dns_search or dns_options):
        return "# no network (--network none)\n"
    host = _host_resolv_conf()
    if mode == "host" and not (dns or dns_search or dns_options):
        return host
    servers, search, options = [], [], []
    for line in host.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] == "nameserver":
            servers.append(f[1])
        elif f and f[0] in ("search", "domain"):
            search = f[1:]
        elif f and f[0] == "options":
            options += f[1:]
    if net.get("dns"):
        servers = [net["dns"]]
    servers = list(dns) if dns else servers
    search = list(dns_search) if dns_search else search
    options = list(dns_options) if dns_options else options
    out = "".join(f"nameserver {s}\n" for s in servers)
    if search and search != ["."]:
        out += "search " + " ".join(search) + "\n"
    if options:
        out += "options " + " ".join(options) + "\n"
    return out


def published_ports(net, ports, publish_all, exposed):
    """The ports to publish: `ports` (sandbox.network.ports dicts) and, with -P, every exposed
    port not published already (on a random host port).  Refused without a network of the
    container's own: nothing could reach them."""
    ports = [dict(p) for p in ports or ()]
    if publish_all:
        have = {(p["container_port"], p["proto"]) for p in ports}
        for e in exposed:
            port, _, proto = e.partition("/")
            if (int(port), proto or "tcp") not in have:
                ports.append({"proto": proto or "tcp", "host_ip": "", "host_port": 0, "container_port": int(port)})
    if ports and net.get("mode") not in ("slirp4netns", "pasta", "network"):
        raise UsageError(f"cannot publish ports with --network {net.get('mode')}: the container has no network "
                         f"of its own to forward them to" if net.get("mode") != "host" else
                         "cannot publish ports with --network host: the container uses the host's ports directly",
                         hint="drop -p/-P, or use the default network (or --network slirp4netns or pasta)")
    return ports


def seccomp_option(value):
    """--security-opt seccomp=VALUE -> (source, profile): ("default", "default"),
    ("unconfined", None), (path, dict) or ("inline", dict)."""
    if value is None or value == "default":
        return "default", "default"
    if value == "unconfined":
        return "unconfined", None
    from . import seccomp
    if isinstance(value, dict):
        seccomp.validate(value, "the seccomp profile")
        seccomp.check_startable(value, "the seccomp profile")
        return "inline", value
    path = os.path.abspath(os.fsdecode(value))
    return path, seccomp.load(path)


def image_argv(config, cmd, entrypoint=None):
    """Docker's rules: --entrypoint replaces the image's Entrypoint and drops its Cmd; command
    words replace Cmd; the process is Entrypoint + Cmd."""
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
        default_cmd = []
    else:
        ep = list(config.get("Entrypoint") or [])
        default_cmd = list(config.get("Cmd") or [])
    return ep + (list(cmd) if cmd else default_cmd)


def build(argv, *, rootfs=None, image=None, entrypoint=None, env=None, cwd=None, user=None, volumes=(), tmpfs=(), network="none",
          hostname=None, read_only=False, init=False, userns=None, cap_add=(), cap_drop=(),
          no_new_privileges=False, ulimits=(), group_add=(), terminal=False, container_id, seccomp=None,
          upper=None, namespaces=("user", "mount", "pid", "uts", "ipc", "network", "cgroup"),
          die_with_parent=True, labels=None, stop_signal=None, stop_timeout=None, resources=None,
          ports=(), publish_all=False, expose=(), dns=(), dns_search=(), dns_options=(), extra_hosts=()):
    """The runtime description for one sandbox, from a root filesystem directory (`rootfs`) or
    an image (`image`: a runtime.image_root.ImageRoot).  `upper` is a host directory for the
    overlay's writable layer (kept after exit); None puts it in the sandbox's private tmpfs.
    `seccomp`: None or "default" (Docker's default profile), "unconfined", a path to a
    Docker/OCI JSON profile, or a profile dict.  `labels` are added to the image's, and
    `stop_signal` (validated by options.stop_signal) overrides the image's StopSignal; they and
    `stop_timeout` are kept in the "sbx" annotations.  `resources`: an options.Resources whose
    limits go to OCI's linux.resources and, docker-py's names, to the "sbx" annotations (the
    cgroup hook reads them there).  `network`: "none", "host" or a mode resolved by
    sandbox.network.modes (see network_annotation); `ports` (sandbox.network.ports dicts),
    `publish_all` (-P: the image's EXPOSE and `expose`), `dns`, `dns_search`, `dns_options` and
    `extra_hosts` (NAME:IP) go to the "sbx" annotations' "network" and the /etc files."""
    iconf = {}
    if image is not None:
        iconf = image.config
        argv = image_argv(iconf, argv, entrypoint)
        lowers = image.lowers
        rootfs = lowers[0]
        if user is None:
            user = iconf.get("User") or None
        if cwd is None and iconf.get("WorkingDir"):
            cwd = iconf["WorkingDir"]
    if not argv:
        raise UsageError("no command given" if image is None else f"no command specified for image {image.ref}",
                         hint="sbx run [OPTIONS] (--rootfs DIR | IMAGE) CMD [ARG...]")
    argv = [os.fsdecode(a) for a in argv]
    if image is None:
        if rootfs is None:
            raise UsageError("no image or root filesystem given",
                             hint="give an IMAGE, or --rootfs DIR (--rootfs / for the host's files)")
        rootfs = os.fsdecode(rootfs)
        if not os.path.isdir(rootfs):
            raise UsageError(f"root filesystem {rootfs!r} is not a directory",
                             hint="give --rootfs a directory holding a root filesystem")
        rootfs = os.path.realpath(rootfs)
        lowers = [rootfs]
    net = network_annotation(network)
    exposed = list(dict.fromkeys([*(iconf.get("ExposedPorts") or {}), *expose]))
    exposed = [e if "/" in e else e + "/tcp" for e in exposed]
    net["ports"] = published_ports(net, ports, publish_all, exposed)
    # Docker's rule: a published port is exposed too (inspect shows it once the port goes)
    net["exposed"] = list(dict.fromkeys(exposed + [f"{p['container_port']}/{p['proto']}" for p in net["ports"]]))
    network = net["mode"]
    host_root = rootfs == "/"
    read_only = bool(read_only) or host_root
    ns = [n for n in namespaces if not (n == "network" and network == "host")]
    if network not in ("none", "host") and "network" not in ns:
        raise UsageError(f"--network {network} needs a network namespace of the sandbox's own",
                         hint="keep the network namespace, or use --network host")

    uid, gid, home, uname = resolve_user(lowers, user)
    mode, urange, grange, newuidmap, newgidmap = idmap.choose(userns)
    if mode == "helper" and (uid >= idmap.SUBID_SIZE + 1 or gid >= idmap.SUBID_SIZE + 1):
        raise UsageError(f"user {uid}:{gid} is outside the mapped range 0-{idmap.SUBID_SIZE}")
    if mode == "single" and group_add:
        raise UsageError("--group-add needs a subordinate id range",
                         hint="add the user to /etc/subuid and /etc/subgid (usermod --add-subuids/--add-subgids) "
                              "and install newuidmap/newgidmap (package uidmap)")
    uid_maps, gid_maps = idmap.mappings(mode, urange, grange, uid, gid)
    groups = supplementary_groups(lowers, uname, gid, group_add) if mode == "helper" else [gid]
    for what, n in (("user id", uid), ("group id", gid), *(("group id", g) for g in groups)):
        if not 0 <= n <= 0xFFFFFFFE:  # uid_t; (uid_t)-1 means "unchanged" to the kernel
            raise UsageError(f"{what} {n} is out of range", hint="ids are 0 to 4294967294")

    cid = container_id
    if hostname is None:
        # Docker: the short id, or the host's name when sharing the host's network.
        hostname = os.uname().nodename if network == "host" else cid[:12]
    envd = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": home}
    if terminal:
        envd["TERM"] = "xterm"
    for item in iconf.get("Env") or ():
        k, eq, v = item.partition("=")
        if k and eq:
            envd[k] = v
    if env:
        for k, v in (env.items() if isinstance(env, dict) else env):
            if not k or "=" in k or "\0" in k:
                raise UsageError(f"invalid environment variable name {k!r}")
            envd[k] = str(v)

    caps = capabilities(cap_add, cap_drop)
    seccomp_source, seccomp_profile = seccomp_option(seccomp)
    mounts = []

    def m(dest, typ, src, *opts):
        mounts.append({"destination": dest, "type": typ, "source": src, "options": list(opts)})

    if "pid" in ns:
        m("/proc", "proc", "proc", "nosuid", "noexec", "nodev")
    else:
        m("/proc", "bind", "/proc", "rbind")
    m("/dev", "tmpfs", "tmpfs", "nosuid", "noexec", "strictatime", "mode=755", "size=65536k")
    for d in DEVICES:
        m(f"/dev/{d}", "bind", f"/dev/{d}", "bind", "nosuid", "noexec", "sbx-create-file")
    pts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if mode == "helper":
        pts.append("gid=5")
    m("/dev/pts", "devpts", "devpts", *pts)
    m("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k")
    if "ipc" in ns:
        m("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev")
    if "network" in ns:
        m("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro")
    else:
        m("/sys", "bind", "/sys", "rbind", "ro", "nosuid", "noexec", "nodev")
    if read_only and host_root:
        # The host's own tree: private scratch space where programs expect it, and the host's
        # /run (sockets of system services) out of sight.
        m("/tmp", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=1777")
        m("/var/tmp", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=1777", "sbx-optional")
        m("/run", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=755", "sbx-optional")
    for name in ("hostname", "hosts", "resolv.conf"):
        m(f"/etc/{name}", "bind", f"sbx-file:{name}", "bind", "sbx-create-file", "sbx-optional")
    for v in volumes or ():
        host, ctr, ro = parse_volume(v)
        opts = ["rbind"] + (["ro"] if ro else [])
        if not os.path.isdir(host):
            opts.append("sbx-create-file")
        m(ctr, "bind", host, *opts)
    for t in tmpfs or ():
        path, _, topts = str(t).partition(":")
        if not path.startswith("/"):
            raise UsageError(f"invalid --tmpfs {t!r}: path must be absolute")
        extra = [o for o in topts.split(",") if o] if topts else ["mode=1777"]
        m(os.path.normpath(path), "tmpfs", "tmpfs", "nosuid", "nodev", *extra)

    hosts = _hosts_file(net, hostname, extra_hosts)
    rlimits = [parse_ulimit(u) for u in ulimits or ()]
    if cwd is not None and not str(cwd).startswith("/"):
        raise UsageError(f"working directory {cwd!r} is not absolute")

    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": bool(terminal),
            "user": {"uid": uid, "gid": gid, "additionalGids": groups[1:]},
            "args": argv,
            "env": [f"{k}={v}" for k, v in envd.items()],
            "cwd": str(cwd) if cwd else "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": rlimits,
            "noNewPrivileges": bool(no_new_privileges),
        },
        "root": {"path": rootfs, "readonly": read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in ns],
            "uidMappings": uid_maps,
            "gidMappings": gid_maps,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            # OCI's linux.seccomp; the default profile is named, not copied, so every record
            # and launch stays small (seccomp_profile() gives the object).
            "seccomp": seccomp_profile,
            **({"resources": oci_resources(resources)} if resources else {}),
        },
        # What the OCI spec has no words for; runtimes keep such things in annotations.
        "sbx": {
            "id": cid,
            "lowers": lowers,
            "image": None if image is None else {"ref": image.ref, "id": image.image_id},
            "stop_signal": stop_signal or iconf.get("StopSignal"),
            "stop_timeout": stop_timeout,
            "labels": {**(iconf.get("Labels") or {}), **(labels or {})},
            "userns": mode,
            "newuidmap": newuidmap,
            "newgidmap": newgidmap,
            "upper": upper,
            "init": bool(init),
            "seccomp": seccomp_source,
            "mkdir_cwd": cwd is not None,
            "die_with_parent": die_with_parent,
            **({"resources": {k: v for k, v in resources.asdict().items() if v not in (None, False)}}
               if resources else {}),
            "network": net,
            "files": {"hostname": hostname + "\n", "hosts": hosts,
                      "resolv.conf": _resolv_conf(net, dns, dns_search, dns_options)},
        },
    }


def from_options(opts, image=None, **extra):
    """The runtime description from a RunOptions (`image`: the prepared ImageRoot for
    `opts.image`).  `extra`: what is not an option, passed on to build (container_id, upper,
    die_with_parent).  With a root directory, --entrypoint comes before the command (Docker's
    rule for images, kept without one)."""
    kw = {name: getattr(opts, name) for name in opts.SPEC_FIELDS}
    argv = list(opts.argv)
    if image is None and opts.entrypoint is not None:
        argv = ([opts.entrypoint] if opts.entrypoint else []) + argv
    if image is None:
        kw["entrypoint"] = None
    kw["env"] = list(opts.env)
    kw["namespaces"] = tuple(opts.namespaces)
    return build(argv, image=image, labels=dict(opts.labels), stop_signal=opts.stop_signal,
                 stop_timeout=opts.stop_timeout, resources=opts.resources or None, **kw, **extra)


def oci_resources(r):
    """options.Resources -> OCI's linux.resources (the runtime-spec's names)."""
    out = {}
    memory = {k: v for k, v in (("limit", r.mem_limit), ("swap", r.memswap_limit),
                                ("reservation", r.mem_reservation)) if v is not None}
    if memory:
        out["memory"] = memory
    cpu = {k: v for k, v in (("shares", r.cpu_shares), ("quota", r.cpu_quota), ("period", r.cpu_period),
                             ("cpus", r.cpuset_cpus), ("mems", r.cpuset_mems)) if v is not None}
    if r.nano_cpus is not None:
        cpu["period"] = 100000
        cpu["quota"] = r.nano_cpus * 100000 // 10 ** 9
    if cpu:
        out["cpu"] = cpu
    if r.pids_limit is not None:
        out["pids"] = {"limit": r.pids_limit}
    if r.blkio_weight is not None:
        out["blockIO"] = {"weight": r.blkio_weight}
    return out


JOIN_ORDER = ("user", "mount", "uts", "ipc", "network", "cgroup", "pid")
_NS_FILE = {"user": "user", "mount": "mnt", "uts": "uts", "ipc": "ipc", "network": "net",
            "cgroup": "cgroup", "pid": "pid"}


def build_exec(container, pid, argv, *, env=None, cwd=None, user=None, terminal=False):
    """A spec that joins the namespaces of a running sandbox (`container`: its spec; `pid`: its
    PID 1 as seen from here) to run one more process there, as `docker exec` does: the
    container's environment, working directory and user unless overridden.  The namespaces
    carry OCI's `path` to join instead of being created."""
    if not argv:
        raise UsageError("no command given", hint="sbx exec [OPTIONS] CONTAINER CMD [ARG...]")
    proc = container["process"]
    x = container["sbx"]
    if user is None:
        uid, gid = proc["user"]["uid"], proc["user"]["gid"]
        extra = proc["user"].get("additionalGids", [])
    else:
        uid, gid, _home, uname = resolve_user(x["lowers"], user)
        extra = supplementary_groups(x["lowers"], uname, gid, ())[1:] if x["userns"] == "helper" else []
        if x["userns"] == "single" and (uid, gid) != (proc["user"]["uid"], proc["user"]["gid"]):
            raise UsageError(f"cannot exec as {user}: the sandbox maps a single id",
                             hint="run the sandbox with a subuid range (--userns auto) to switch users")
    envd = dict(e.split("=", 1) for e in proc["env"])
    if terminal:
        envd.setdefault("TERM", "xterm")
    for k, v in (env.items() if isinstance(env, dict) else env or ()):
        envd[k] = str(v)
    have = {n["type"] for n in container["linux"]["namespaces"]}
    return {
        "ociVersion": "1.2.0",
        "process": dict(proc, args=[os.fsdecode(a) for a in argv], terminal=bool(terminal),
                        env=[f"{k}={v}" for k, v in envd.items()], cwd=str(cwd) if cwd else proc["cwd"],
                        user={"uid": uid, "gid": gid, "additionalGids": extra}),
        "root": container["root"],
        "hostname": container["hostname"],
        "mounts": [],
        "linux": dict(container["linux"], namespaces=[
            {"type": t, "path": f"/proc/{pid}/ns/{_NS_FILE[t]}"} for t in JOIN_ORDER if t in have]),
        "sbx": dict(x, init=False, mkdir_cwd=False, files={}),
    }
