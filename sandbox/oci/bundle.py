"""An OCI bundle's config.json -> the engine's runtime spec (the dict runtime/plan.py compiles).

Every field the runtime-spec defines is either applied or refused with a Refused error naming
it (`linux.resources.memory`, `mounts[3].options`, ...); unknown fields are ignored, as the spec
asks of runtimes.  What is applied where:
    plan (the launcher)      root, mounts, namespaces, id maps, process (args, env, cwd, user,
                             capabilities' bounding set, rlimits, noNewPrivileges), hostname,
                             maskedPaths, readonlyPaths, seccomp, linux.devices (bind mounts of
                             the host's nodes)
    launch hooks (held)      oomScoreAdj, sysctl, domainname, createRuntime/createContainer
                             hooks, linux.resources (a cgroup v2 leaf where one is delegated)
    the create process       process.user.umask (inherited by the child)
"""
import os
import stat

from ..runtime import idmap
from ..runtime.plan import MOUNT_ATTR, MS_FLAGS, RLIMIT_NUM
from ..runtime.spec import CAPS, DEVICES
from . import jsonc
from .errors import OCIError, Refused

SUPPORTED_NS = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")
# Mount options: propagation (everything is private already), the flags' negations (defaults).
PRIVATE = {"private", "rprivate"}
PROPAGATION = {"shared", "rshared", "slave", "rslave", "unbindable", "runbindable"}
DEFAULTS = {"rw", "suid", "dev", "exec", "atime", "diratime", "async", "norelatime", "nostrictatime"}
BIND_ATTRS = {"ro", "nosuid", "nodev", "noexec"}
ATIME = {"relatime", "noatime", "nodiratime", "strictatime"}
# Sysctls that belong to a namespace (runc's validation): name prefix -> namespace.
NS_SYSCTL = (("net.", "network"), ("kernel.msg", "ipc"), ("kernel.sem", "ipc"), ("kernel.shm", "ipc"),
             ("fs.mqueue.", "ipc"), ("kernel.hostname", "uts"), ("kernel.domainname", "uts"))
# linux.resources -> options.Resources (docker-py's names).
RESOURCE_FIELDS = {("memory", "limit"): "mem_limit", ("memory", "swap"): "memswap_limit",
                   ("memory", "reservation"): "mem_reservation", ("cpu", "shares"): "cpu_shares",
                   ("cpu", "quota"): "cpu_quota", ("cpu", "period"): "cpu_period",
                   ("cpu", "cpus"): "cpuset_cpus", ("cpu", "mems"): "cpuset_mems",
                   ("pids", "limit"): "pids_limit", ("blockIO", "weight"): "blkio_weight"}
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def load(bundle):
    """Read BUNDLE/config.json; returns (config dict, absolute bundle path)."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = jsonc.loads(f.read())
    except FileNotFoundError:
        raise OCIError(f"{path}: no such file", hint="give --bundle the directory that holds config.json "
                       "(make one with 'sbx-runc spec')") from None
    except ValueError as e:
        raise OCIError(f"{path}: not valid JSON: {e}") from None
    except OSError as e:
        raise OCIError(f"{path}: {e.strerror}") from None
    if not isinstance(config, dict):
        raise OCIError(f"{path}: the top level is not a JSON object")
    return config, bundle


def _obj(v, field, kind=dict):
    if v is None:
        return kind()
    if not isinstance(v, kind):
        raise Refused(field, f"must be a JSON {'object' if kind is dict else 'array'}")
    return v


def _refuse_set(d, field, keys, why="is not supported by sbx-runc", hint=None):
    for k in keys:
        v = d.get(k)
        if v not in (None, "", [], {}, 0, False):
            raise Refused(f"{field}.{k}", why, hint)


def _int(v, field, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Refused(field, f"{v!r} is not a valid number")
    return v


class Translation:
    """What create needs besides the engine spec."""

    def __init__(self):
        self.spec = None
        self.hooks = {}
        self.annotations = {}
        self.terminal = False
        self.console_size = None
        self.umask = None
        self.oom_score_adj = None
        self.sysctl = {}
        self.domainname = None
        self.resources = None       # options.Resources or None
        self.cgroups_path = None


def translate(config, bundle, cid, rootless):
    """config.json (dict) -> Translation; Refused names the first field that cannot be honoured."""
    t = Translation()
    version = config.get("ociVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise Refused("ociVersion", f"{version!r} is not a version 1.x of the runtime-spec")
    for other in ("solaris", "windows", "vm", "zos"):
        if config.get(other):
            raise Refused(other, "is for another platform; sbx-runc runs Linux containers")
    t.annotations = _obj(config.get("annotations"), "annotations")
    t.hooks = _hooks(_obj(config.get("hooks"), "hooks"))
    linux = _obj(config.get("linux"), "linux")
    root = _obj(config.get("root"), "root")
    rpath = root.get("path")
    if not isinstance(rpath, str) or not rpath:
        raise Refused("root.path", "is missing")
    rootfs = os.path.realpath(os.path.join(bundle, rpath))
    if not os.path.isdir(rootfs):
        raise Refused("root.path", f"{rootfs} is not a directory")

    namespaces = _namespaces(_obj(linux.get("namespaces"), "linux.namespaces", list), rootless)
    userns = "user" in namespaces
    if userns and rootless and not linux.get("uidMappings") and not linux.get("gidMappings"):
        # crun's rule (`crun spec --rootless` writes none): our own ids become root inside
        linux = dict(linux, uidMappings=[{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
                     gidMappings=[{"containerID": 0, "hostID": os.getegid(), "size": 1}])
    uid_maps = _mappings(linux.get("uidMappings"), "linux.uidMappings", userns)
    gid_maps = _mappings(linux.get("gidMappings"), "linux.gidMappings", userns)
    mode, newuidmap, newgidmap = _userns_mode(userns, uid_maps, gid_maps)

    proc = _obj(config.get("process"), "process")
    process, ids = _process(proc, mode, userns)
    t.terminal = bool(proc.get("terminal"))
    cs = proc.get("consoleSize")
    if cs:
        cs = _obj(cs, "process.consoleSize")
        t.console_size = (_int(cs.get("height", 0), "process.consoleSize.height", 0, 65535),
                          _int(cs.get("width", 0), "process.consoleSize.width", 0, 65535))
    umask = (proc.get("user") or {}).get("umask")
    if umask is not None:
        t.umask = _int(umask, "process.user.umask", 0, 0o777)
    if proc.get("oomScoreAdj") is not None:
        t.oom_score_adj = _int(proc["oomScoreAdj"], "process.oomScoreAdj", -1000, 1000)

    hostname = config.get("hostname") or None
    if hostname is not None and "uts" not in namespaces:
        raise Refused("hostname", "setting a hostname needs a new uts namespace (linux.namespaces)")
    domainname = config.get("domainname") or None
    if domainname is not None:
        if "uts" not in namespaces:
            raise Refused("domainname", "setting a domainname needs a new uts namespace (linux.namespaces)")
        t.domainname = domainname

    _refuse_set(linux, "linux", ("timeOffsets",), "time namespaces are not supported by sbx-runc")
    _refuse_set(linux, "linux", ("intelRdt", "memoryPolicy", "netDevices", "mountLabel"))
    pers = linux.get("personality")
    if pers:
        pers = _obj(pers, "linux.personality")
        if pers.get("domain", "LINUX") != "LINUX" or pers.get("flags"):
            raise Refused("linux.personality", f"{pers} is not supported: only the LINUX domain without flags")
    prop = linux.get("rootfsPropagation") or "private"
    if prop not in ("private", "rprivate"):
        raise Refused("linux.rootfsPropagation", f"{prop!r} is not supported: sbx-runc makes every mount "
                      "of the container private", hint="use \"rprivate\" or leave it out")
    for k, v in _obj(linux.get("sysctl"), "linux.sysctl").items():
        owner = next((ns for pre, ns in NS_SYSCTL if k.startswith(pre)), None)
        if owner is None:
            raise Refused(f"linux.sysctl.{k}", "is not namespaced: it would change the host")
        if owner not in namespaces:
            raise Refused(f"linux.sysctl.{k}", f"needs a new {owner} namespace (linux.namespaces)")
        if not isinstance(v, str):
            raise Refused(f"linux.sysctl.{k}", "the value must be a string")
        t.sysctl[k] = v

    mounts = _mounts(_obj(config.get("mounts"), "mounts", list), bundle, "cgroup" in namespaces, rootless)
    dev_binds = _devices(_obj(linux.get("devices"), "linux.devices", list), userns)
    t.cgroups_path = linux.get("cgroupsPath") or None
    resources = _obj(linux.get("resources"), "linux.resources")
    t.resources = _resources(resources)
    root_attrs = 0
    if resources.get("devices") and not userns:
        _enforce_device_rules(_obj(resources["devices"], "linux.resources.devices", list), mounts, dev_binds)
        root_attrs = MOUNT_ATTR["nodev"]
    mounts += dev_binds

    seccomp = linux.get("seccomp")
    if seccomp:
        from ..runtime import seccomp as _seccomp
        try:
            _seccomp.validate(seccomp, "linux.seccomp")
            _seccomp.check_startable(seccomp, "linux.seccomp")
        except Exception as e:
            raise Refused("linux.seccomp", str(e).removeprefix("seccomp profile linux.seccomp: "),
                          getattr(e, "hint", None)) from None
    else:
        seccomp = None

    masked = _paths(linux.get("maskedPaths"), "linux.maskedPaths")
    readonly = _paths(linux.get("readonlyPaths"), "linux.readonlyPaths")
    x = {"id": cid, "lowers": [rootfs], "image": None, "userns": mode, "newuidmap": newuidmap,
         "newgidmap": newgidmap, "upper": None, "init": False, "seccomp": "oci" if seccomp else "unconfined",
         "mkdir_cwd": True, "die_with_parent": False, "files": {}, "bind_root": True, "root_attrs": root_attrs, "ids": ids,
         "labels": {}, "stop_signal": None, "stop_timeout": None}
    t.spec = {"ociVersion": version, "process": process, "root": {"path": rootfs, "readonly": bool(root.get("readonly"))},
              "hostname": hostname, "mounts": mounts,
              "linux": {"namespaces": [{"type": n} for n in namespaces], "uidMappings": uid_maps,
                        "gidMappings": gid_maps, "maskedPaths": masked, "readonlyPaths": readonly,
                        "seccomp": seccomp},
              "sbx": x}
    return t


def _hooks(hooks):
    out = {}
    for kind, entries in hooks.items():
        if kind not in HOOK_KINDS:
            continue  # unknown keys are ignored (the spec's rule for extensions)
        lst = []
        for i, h in enumerate(_obj(entries, f"hooks.{kind}", list)):
            field = f"hooks.{kind}[{i}]"
            h = _obj(h, field)
            path = h.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise Refused(f"{field}.path", "must be an absolute path")
            args = h.get("args") or [path]
            env = h.get("env") or []
            if not all(isinstance(a, str) for a in args) or not all(isinstance(e, str) for e in env):
                raise Refused(field, "args and env must be arrays of strings")
            timeout = h.get("timeout")
            if timeout is not None:
                _int(timeout, f"{field}.timeout", 1)
            lst.append({"path": path, "args": args, "env": env, "timeout": timeout})
        out[kind] = lst
    return out


def _namespaces(entries, rootless):
    seen = []
    for i, n in enumerate(entries):
        n = _obj(n, f"linux.namespaces[{i}]")
        typ = n.get("type")
        if typ == "time":
            raise Refused(f"linux.namespaces[{i}]", "time namespaces are not supported by sbx-runc")
        if typ not in SUPPORTED_NS:
            raise Refused(f"linux.namespaces[{i}].type", f"unknown namespace type {typ!r}")
        if n.get("path"):
            raise Refused(f"linux.namespaces[{i}].path", f"joining an existing {typ} namespace at create is "
                          "not supported by sbx-runc", hint="leave the path out: the container gets a new one")
        if typ in seen:
            raise Refused(f"linux.namespaces[{i}]", f"the {typ} namespace is listed twice")
        seen.append(typ)
    if "mount" not in seen:
        raise Refused("linux.namespaces", "sbx-runc needs a new mount namespace (type \"mount\")")
    if rootless and os.geteuid() != 0 and "user" not in seen:
        # (root of a user namespace, e.g. under rootless podman, mounts in its own namespace)
        raise Refused("linux.namespaces", "a rootless container needs a user namespace (type \"user\") "
                      "with uidMappings and gidMappings", hint="make the bundle's config with 'sbx-runc spec --rootless'")
    return seen


def _mappings(v, field, userns):
    maps = _obj(v, field, list)
    if maps and not userns:
        raise Refused(field, "id mappings need a user namespace (linux.namespaces)")
    if userns and not maps:
        raise Refused(field, "a user namespace needs id mappings")
    out = []
    for i, m in enumerate(maps):
        m = _obj(m, f"{field}[{i}]")
        out.append({k: _int(m.get(k), f"{field}[{i}].{k}", 0 if k != "size" else 1, 2**32 - 1)
                    for k in ("containerID", "hostID", "size")})
    return out


def _userns_mode(userns, uid_maps, gid_maps):
    """("none"|"single"|"helper", newuidmap, newgidmap): a single mapping of our own ids is
    written by the child itself; anything else goes through newuidmap/newgidmap."""
    if not userns:
        return "none", None, None
    euid, egid = os.geteuid(), os.getegid()
    if (len(uid_maps) == 1 and len(gid_maps) == 1 and uid_maps[0]["hostID"] == euid and uid_maps[0]["size"] == 1
            and gid_maps[0]["hostID"] == egid and gid_maps[0]["size"] == 1):
        return "single", None, None
    _, _, _, newuidmap, newgidmap = idmap.detect()
    if not newuidmap or not newgidmap:
        raise Refused("linux.uidMappings", "mapping more than your own id needs newuidmap and newgidmap",
                      hint="install the uidmap package, or map only your own uid and gid")
    return "helper", newuidmap, newgidmap


def _caps(names, field):
    out = []
    for c in _obj(names, field, list):
        name = c.upper().removeprefix("CAP_") if isinstance(c, str) else None
        if name not in CAPS:
            raise Refused(field, f"unknown capability {c!r}")
        if name not in out:
            out.append(name)
    return out


def _process(proc, mode, userns):
    args = proc.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise Refused("process.args", "must be a non-empty array of strings")
    if proc.get("commandLine"):
        raise Refused("process.commandLine", "is for Windows; give process.args")
    _refuse_set(proc, "process", ("apparmorProfile",), "AppArmor is not available to sbx-runc here")
    _refuse_set(proc, "process", ("selinuxLabel",), "SELinux is not available to sbx-runc here")
    _refuse_set(proc, "process", ("ioPriority", "scheduler", "execCPUAffinity"))
    env = _obj(proc.get("env"), "process.env", list)
    if not all(isinstance(e, str) for e in env):
        raise Refused("process.env", "must be an array of strings")
    cwd = proc.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise Refused("process.cwd", f"{cwd!r} is not an absolute path")
    user = _obj(proc.get("user"), "process.user")
    if user.get("username"):
        raise Refused("process.user.username", "is for Windows; give uid and gid")
    uid = _int(user.get("uid", 0), "process.user.uid", 0, 2**32 - 2)
    gid = _int(user.get("gid", 0), "process.user.gid", 0, 2**32 - 2)
    extra = [_int(g, "process.user.additionalGids", 0, 2**32 - 2)
             for g in _obj(user.get("additionalGids"), "process.user.additionalGids", list)]
    if mode == "single":
        if extra:
            raise Refused("process.user.additionalGids", "a user namespace that maps a single id cannot "
                          "set supplementary groups (setgroups is denied there)",
                          hint="map a range with newgidmap (/etc/subgid), or drop additionalGids")
        ids = (uid, gid, None)
    else:
        ids = (uid, gid, [gid, *extra])
    caps = _obj(proc.get("capabilities"), "process.capabilities")
    bounding = _caps(caps.get("bounding"), "process.capabilities.bounding")
    for kind in ("effective", "permitted", "inheritable", "ambient"):
        field = f"process.capabilities.{kind}"
        got = _caps(caps.get(kind), field)
        outside = [c for c in got if c not in bounding]
        if outside:
            raise Refused(field, f"CAP_{outside[0]} is not in the bounding set")
        # uid 0: after execve a root process's permitted and effective sets are its bounding
        # set whatever was asked (capabilities(7)), as with runc; other uids keep only ambient
        # (and inheritable, with file capabilities) ones, which the launcher does not set.
        if kind in ("inheritable", "ambient") and got and uid != 0:
            raise Refused(field, f"is not supported for a process of uid {uid} (sbx-runc sets no "
                          f"{kind} capabilities)", hint="run the process as uid 0, or leave the set empty")
    rlimits = []
    for i, r in enumerate(_obj(proc.get("rlimits"), "process.rlimits", list)):
        r = _obj(r, f"process.rlimits[{i}]")
        if r.get("type") not in RLIMIT_NUM:
            raise Refused(f"process.rlimits[{i}].type", f"unknown limit {r.get('type')!r}")
        rlimits.append({"type": r["type"], "soft": _int(r.get("soft"), f"process.rlimits[{i}].soft", 0, 2**64 - 1),
                        "hard": _int(r.get("hard"), f"process.rlimits[{i}].hard", 0, 2**64 - 1)})
    return ({"terminal": bool(proc.get("terminal")), "user": {"uid": uid, "gid": gid, "additionalGids": extra},
             "args": args, "env": env, "cwd": cwd,
             "capabilities": {"bounding": bounding, "effective": bounding, "permitted": bounding},
             "rlimits": rlimits, "noNewPrivileges": bool(proc.get("noNewPrivileges"))}, ids)


def _mounts(entries, bundle, cgroupns, rootless):
    out = []
    for i, m in enumerate(entries):
        field = f"mounts[{i}]"
        m = _obj(m, field)
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise Refused(f"{field}.destination", f"{dest!r} is not an absolute path")
        if os.path.normpath(dest) == "/":
            raise Refused(f"{field}.destination", "cannot mount over the root")
        if m.get("uidMappings") or m.get("gidMappings"):
            raise Refused(f"{field}.uidMappings", "id-mapped mounts are not supported by sbx-runc")
        opts = _obj(m.get("options"), f"{field}.options", list)
        typ = m.get("type") or ""
        src = m.get("source") or ""
        is_bind = typ == "bind" or "bind" in opts or "rbind" in opts
        keep = []
        for o in opts:
            if not isinstance(o, str):
                raise Refused(f"{field}.options", f"{o!r} is not a string")
            if o in PRIVATE or o in DEFAULTS:
                continue
            if o in PROPAGATION:
                raise Refused(f"{field}.options", f"{o}: sbx-runc makes every mount private",
                              hint="leave propagation options out, or use rprivate")
            if o in ("idmap", "ridmap"):
                raise Refused(f"{field}.options", f"{o}: id-mapped mounts are not supported by sbx-runc")
            if o in ("bind", "rbind"):
                keep.append(o)
                continue
            base = o[1:] if o.startswith("r") and o[1:] in BIND_ATTRS else o
            if is_bind:
                if base in BIND_ATTRS:
                    keep.append(base)
                elif base in ATIME or base in ("sync", "dirsync", "mand", "nomand", "silent", "loud"):
                    continue  # superblock flags: a bind mount shares its source's superblock
                else:
                    raise Refused(f"{field}.options", f"{o!r} means nothing to a bind mount")
            else:
                keep.append(base)
        if is_bind:
            if not src:
                raise Refused(f"{field}.source", "a bind mount needs a source")
            src = os.path.join(bundle, src)
            try:
                st = os.stat(src)
            except OSError as e:
                raise Refused(f"{field}.source", f"{src}: {e.strerror}") from None
            if "rbind" not in keep and "bind" not in keep:
                keep.append("bind")
            if not stat.S_ISDIR(st.st_mode):
                keep.append("sbx-create-file")
            out.append({"destination": os.path.normpath(dest), "type": "bind", "source": os.path.realpath(src),
                        "options": keep})
            continue
        if typ == "cgroup":
            # cgroup v1 hierarchies cannot be mounted in a user namespace.  The v2 tree can be,
            # in a cgroup namespace of the container's own or by root; otherwise (rootless,
            # the host's cgroup namespace) the caller's own v2 directory is bound read-only,
            # as runc does when the kernel refuses the mount.
            flags = [o for o in keep if o in MS_FLAGS]
            if cgroupns or not rootless:
                typ, keep = "cgroup2", flags
            else:
                from ..cgroups import v2
                m = v2.probe()
                if m.path is None:
                    raise Refused(f"{field}.type", f"cgroup: no cgroup v2 tree to show the container ({m.reason})",
                                  hint="add a cgroup namespace (linux.namespaces), or drop the mount")
                out.append({"destination": os.path.normpath(dest), "type": "bind", "source": m.path,
                            "options": ["rbind", "ro", *(f for f in flags if f in BIND_ATTRS)]})
                continue
        if not typ or typ == "none":
            raise Refused(f"{field}.type", "is missing (and the options say no bind)")
        out.append({"destination": os.path.normpath(dest), "type": typ, "source": src or typ, "options": keep})
    return out


def _host_device(typ, major, minor, path):
    """A host node with that type and number: the same path, else /dev/char|block/MAJ:MIN."""
    want = stat.S_IFCHR if typ in ("c", "u") else stat.S_IFBLK
    for cand in (path, f"/dev/{'char' if want == stat.S_IFCHR else 'block'}/{major}:{minor}"):
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_IFMT(st.st_mode) == want and os.major(st.st_rdev) == major and os.minor(st.st_rdev) == minor:
            return cand, st
    return None, None


def _devices(entries, userns):
    """The default devices (runc's: null zero full random urandom tty) and linux.devices, as bind
    mounts of the host's nodes (no mknod: rootless containers cannot, and a bind keeps the
    host's node and permissions)."""
    out = []
    for name in DEVICES:
        out.append({"destination": f"/dev/{name}", "type": "bind", "source": f"/dev/{name}",
                    "options": ["bind", "nosuid", "noexec", "sbx-create-file", "sbx-default-device"]})
    for i, d in enumerate(entries):
        field = f"linux.devices[{i}]"
        d = _obj(d, field)
        path, typ = d.get("path"), d.get("type")
        if not isinstance(path, str) or not path.startswith("/"):
            raise Refused(f"{field}.path", f"{path!r} is not an absolute path")
        if typ == "p":
            raise Refused(f"{field}.type", "FIFOs are not supported as devices by sbx-runc")
        if typ not in ("c", "b", "u"):
            raise Refused(f"{field}.type", f"unknown device type {typ!r}")
        major = _int(d.get("major"), f"{field}.major", 0)
        minor = _int(d.get("minor"), f"{field}.minor", 0)
        host, st = _host_device(typ, major, minor, path)
        if host is None:
            raise Refused(field, f"the host has no {typ} {major}:{minor} device to give the container "
                          "(sbx-runc binds the host's node; it makes none)")
        mode = d.get("fileMode")
        if mode is not None and (_int(mode, f"{field}.fileMode", 0, 0o7777) != stat.S_IMODE(st.st_mode)):
            raise Refused(f"{field}.fileMode", f"{mode:o} differs from the host node {host} ({stat.S_IMODE(st.st_mode):o}); "
                          "sbx-runc binds the host's node and does not change it", hint="leave fileMode out")
        if not userns:
            for k, have in (("uid", st.st_uid), ("gid", st.st_gid)):
                if d.get(k) is not None and _int(d[k], f"{field}.{k}", 0) != have:
                    raise Refused(f"{field}.{k}", f"{d[k]} differs from the host node {host} (owned by {have}); "
                                  "sbx-runc binds the host's node and does not change it")
        out = [o for o in out if o["destination"] != os.path.normpath(path)]
        out.append({"destination": os.path.normpath(path), "type": "bind", "source": host,
                    "options": ["bind", "nosuid", "sbx-create-file", "sbx-device"]})
    return out


def _rule_allows(rules, typ, major, minor):
    """runc's device cgroup rule evaluation for read+write access: the last matching rule wins."""
    allowed = False
    for i, r in enumerate(rules):
        r = _obj(r, f"linux.resources.devices[{i}]")
        rt = r.get("type") or "a"
        if rt not in ("a", typ):
            continue
        if r.get("major") not in (None, -1, major) or r.get("minor") not in (None, -1, minor):
            continue
        access = r.get("access") or "rwm"
        if "r" in access or "w" in access:
            allowed = bool(r.get("allow"))
    return allowed


def _enforce_device_rules(rules, mounts, dev_binds):
    """linux.resources.devices without a devices cgroup: without a user namespace a process could
    make (or find in the rootfs) any device node, so every mount but the device binds gets nodev,
    and the container's devices are exactly the bound ones: runc's defaults (null, zero, full,
    random, urandom, tty: always allowed, as runc does) and linux.devices, which the rules must
    allow."""
    for d in dev_binds:
        if "sbx-default-device" in d["options"]:
            continue  # always allowed, as runc's AllowedDevices come after the rules
        st = os.stat(d["source"])
        typ = "c" if stat.S_ISCHR(st.st_mode) else "b"
        if not _rule_allows(rules, typ, os.major(st.st_rdev), os.minor(st.st_rdev)):
            raise Refused("linux.resources.devices", f"the rules deny {d['destination']} ({typ} "
                          f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}), which linux.devices gives the "
                          "container; without a devices cgroup sbx-runc cannot give it and deny its use",
                          hint="allow it in linux.resources.devices, or drop it from linux.devices")
    for m in mounts:
        # A devpts instance holds only ptys, which runc's AllowedDevices always allow too.
        if m["type"] != "devpts" and "nodev" not in m["options"]:
            m["options"].append("nodev")


def _paths(v, field):
    out = []
    for p in _obj(v, field, list):
        if not isinstance(p, str) or not p.startswith("/"):
            raise Refused(field, f"{p!r} is not an absolute path")
        out.append(p)
    return out


def _resources(r):
    """linux.resources -> options.Resources, or None when no limit is asked for.  Device rules
    are handled by the caller; an empty section (what podman and containerd send by default) is
    no request."""
    kw = {}
    for section, value in r.items():
        if section == "devices" or value in (None, {}, []):
            continue
        if not isinstance(value, dict):
            raise Refused(f"linux.resources.{section}", "must be an object")
        for key, v in value.items():
            if v in (None, 0, "", [], False) and key != "limit":
                continue
            name = RESOURCE_FIELDS.get((section, key))
            if name is None:
                raise Refused(f"linux.resources.{section}.{key}", "is not supported by sbx-runc",
                              hint="sbx-runc applies memory.limit/swap/reservation, cpu.shares/quota/period/"
                                   "cpus/mems, pids.limit and blockIO.weight")
            if section == "pids" and isinstance(v, int) and v <= 0:
                continue  # 0 or -1: no limit (runc's and podman's meaning)
            if (section, key) == ("cpu", "shares") and v == 1024:
                continue  # the kernel's default weight (containerd's default spec asks for it)
            kw[name] = v
    if not kw:
        return None
    from ..runtime.options import Resources
    return Resources(**kw)
