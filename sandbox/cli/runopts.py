"""`sbx run` options: one table drives the parser and the help text.

Parsing follows the Docker CLI (pflag): long options as `--opt value` or `--opt=value`, short
ones bundled (`-it`) with a value taking the rest of the bundle or the next word (`-eK=V`,
`-e K=V`); the first word that is not an option starts the command; `--` ends options.
Hand-written rather than typer so that `sbx run` starts without importing click."""

import os

from ..errors import UsageError
from ..runtime import options as _options

# (names, key, kind, metavar, help); kind: flag | value | list
OPTIONS = (
    (("--rootfs",), "rootfs", "value", "DIR", "root filesystem directory instead of an IMAGE ('/' = the host's files)"),
    (("--pull",), "pull", "value", "POLICY", "pull the image: missing (default), always or never"),
    (("--platform",), "platform", "value", "OS/ARCH", "platform to pull from a multi-platform image"),
    (("--entrypoint",), "entrypoint", "value", "CMD", "override the image's entrypoint ('' for none)"),
    (("--rm",), "rm", "flag", None, "remove the container when it exits"),
    (("--name",), "name", "value", "NAME", "a name for the container (unique among running ones)"),
    (("-d", "--detach"), "detach", "flag", None, "run in the background and print the container id"),
    (("-e", "--env"), "env", "list", "K=V", "set an environment variable (K alone: take it from the host)"),
    (("--env-file",), "env_file", "list", "FILE", "read environment variables from a file"),
    (("-w", "--workdir"), "workdir", "value", "DIR", "working directory inside the container (created if missing)"),
    (("-u", "--user"), "user", "value", "USER[:GROUP]", "user name or UID (and group) to run as"),
    (("-v", "--volume"), "volume", "list", "HOST:CTR[:ro]", "bind-mount a host path"),
    (("--tmpfs",), "tmpfs", "list", "PATH[:OPTS]", "mount a tmpfs"),
    (("--mount",), "mount", "list", "type=T,src=S,dst=D", "bind, volume or tmpfs mount (Docker's --mount keys)"),
    (("--read-only",), "read_only", "flag", None, "mount the root filesystem read-only"),
    (("-h", "--hostname"), "hostname", "value", "NAME", "container host name (default: the short id)"),
    (("--network", "--net"), "network", "list", "MODE",
     "none, host, slirp4netns[:OPTS], pasta[:OPTS], bridge (default for an IMAGE), container:NAME or a network "
     "(repeat, or NET1,NET2, for several; name=NET,alias=A,ip=IP,mac-address=MAC per network)"),
    (("--network-alias", "--net-alias"), "network_alias", "list", "NAME", "another name of the container on its network"),
    (("--ip",), "ip", "value", "IPV4", "the container's address on its user-defined network"),
    (("--mac-address",), "mac_address", "value", "MAC", "the container's MAC address on its user-defined network"),
    (("--link",), "link", "list", "CTR[:ALIAS]", "another name (ALIAS) for container CTR, seen by this one "
     "(user-defined networks)"),
    (("-p", "--publish"), "publish", "list", "[IP:][HOST:]CTR[/PROTO]", "publish a container port on the host"),
    (("-P", "--publish-all"), "publish_all", "flag", None, "publish every exposed port on a free host port"),
    (("--expose",), "expose", "list", "PORT[/PROTO]", "expose a port (or a range) without publishing it"),
    (("--dns",), "dns", "list", "IP", "a name server for /etc/resolv.conf"),
    (("--dns-search",), "dns_search", "list", "DOMAIN", "a search domain for /etc/resolv.conf"),
    (("--dns-option",), "dns_option", "list", "OPT", "an option for /etc/resolv.conf (ndots:2)"),
    (("--add-host",), "add_host", "list", "NAME:IP", "add a line to /etc/hosts (IP may be host-gateway)"),
    (("--init",), "init", "flag", None, "run an init as PID 1 that forwards signals and reaps zombies"),
    (("-i", "--interactive"), "interactive", "flag", None, "keep stdin open"),
    (("-t", "--tty"), "tty", "flag", None, "allocate a pseudo-terminal"),
    (("--userns",), "userns", "value", "MODE", "auto (default: subuid range if configured, else single id) or single"),
    (("--cap-add",), "cap_add", "list", "CAP", "add a capability"),
    (("--cap-drop",), "cap_drop", "list", "CAP", "drop a capability (ALL for all)"),
    (("--security-opt",), "security_opt", "list", "OPT",
     "no-new-privileges[=true|false], seccomp=default|unconfined|PROFILE.json"),
    (("--ulimit",), "ulimit", "list", "NAME=SOFT[:HARD]", "set a resource limit"),
    (("--group-add",), "group_add", "list", "GROUP", "add a supplementary group (needs a subuid range)"),
    (("--restart",), "restart", "value", "POLICY", "restart policy: no (default), on-failure[:N], always, unless-stopped"),
    (("-l", "--label"), "label", "list", "K=V", "set a label on the container"),
    (("--label-file",), "label_file", "list", "FILE", "read labels from a file of K=V lines"),
    (("--stop-signal",), "stop_signal", "value", "SIGNAL", "signal that stops the container (default SIGTERM)"),
    (("--stop-timeout",), "stop_timeout", "value", "SECONDS", "seconds to wait for it to stop before killing it"),
    (("-m", "--memory"), "memory", "value", "BYTES", "memory limit (64m, 1.5g; needs cgroup v2 'memory')"),
    (("--memory-swap",), "memory_swap", "value", "BYTES", "memory plus swap limit (-1: unlimited swap)"),
    (("--memory-reservation",), "memory_reservation", "value", "BYTES", "memory soft limit (memory.low)"),
    (("--oom-kill-disable",), "oom_kill_disable", "flag", None, "refused: cgroup v2 cannot disable the OOM killer"),
    (("--cpus",), "cpus", "value", "N", "number of CPUs (1.5; needs cgroup v2 'cpu')"),
    (("-c", "--cpu-shares"), "cpu_shares", "value", "N", "CPU shares, relative weight (cpu.weight)"),
    (("--cpu-period",), "cpu_period", "value", "US", "CPU CFS period in microseconds"),
    (("--cpu-quota",), "cpu_quota", "value", "US", "CPU CFS quota in microseconds"),
    (("--cpuset-cpus",), "cpuset_cpus", "value", "LIST", "CPUs the container may use (0-3, 0,1)"),
    (("--cpuset-mems",), "cpuset_mems", "value", "LIST", "memory nodes the container may use (0-3, 0,1)"),
    (("--pids-limit",), "pids_limit", "value", "N", "maximum number of processes (-1: unlimited)"),
    (("--blkio-weight",), "blkio_weight", "value", "N", "block IO weight, 10 to 1000 (io.weight)"),
    (("--device-read-bps",), "device_read_bps", "list", "DEV:RATE", "read rate limit of a device (/dev/sda:1mb; io.max)"),
    (("--device-write-bps",), "device_write_bps", "list", "DEV:RATE", "write rate limit of a device (io.max)"),
    (("--device-read-iops",), "device_read_iops", "list", "DEV:N", "read operations per second of a device (io.max)"),
    (("--device-write-iops",), "device_write_iops", "list", "DEV:N", "write operations per second of a device"),
    (("--help",), "help", "flag", None, "show this help"),
)
_BY_NAME = {n: o for o in OPTIONS for n in o[0]}

USAGE = "Usage: sbx run [OPTIONS] (IMAGE | --rootfs DIR) [--] [COMMAND] [ARG...]"


def help_text():
    lines = [USAGE, "", "Run a command in a new rootless sandbox.", "", "Options:"]
    for names, _, kind, metavar, text in OPTIONS:
        left = ", ".join(names) + (f" {metavar}" if metavar else "")
        lines.append(f"  {left:<32} {text}")
    return "\n".join(lines) + "\n"


def parse(argv):
    """argv after `run` -> (options dict, command list)."""
    opts = {o[1]: ([] if o[2] == "list" else None) for o in OPTIONS}
    i, n = 0, len(argv)

    def take(opt, key, kind, value):
        if kind == "flag":
            if value is not None and value not in ("true", "false"):
                raise UsageError(f"option {opt} takes no value")
            opts[key] = value != "false"
        elif kind == "list":
            opts[key].append(value)
        else:
            opts[key] = value

    while i < n:
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            o = _BY_NAME.get(name)
            if o is None:
                raise UsageError(f"unknown flag: {name}", hint="see 'sbx run --help'")
            if o[2] != "flag" and not eq:
                i += 1
                if i >= n:
                    raise UsageError(f"flag needs an argument: {name}")
                value = argv[i]
            take(name, o[1], o[2], value if eq or o[2] != "flag" else None)
            i += 1
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                name = "-" + a[j]
                o = _BY_NAME.get(name)
                if o is None:
                    raise UsageError(f"unknown shorthand flag: {a[j]!r} in {a}", hint="see 'sbx run --help'")
                if o[2] == "flag":
                    take(name, o[1], "flag", None)
                    j += 1
                    continue
                value = a[j + 1:]
                if not value:
                    i += 1
                    if i >= n:
                        raise UsageError(f"flag needs an argument: {name}")
                    value = argv[i]
                take(name, o[1], o[2], value)
                break
            i += 1
            continue
        break
    return opts, argv[i:]


ENV_FILE_MAX = 16 << 20


def parse_env(opts, environ):
    """-e and --env-file -> ordered list of (key, value); later wins, like Docker."""
    out = []
    for path in opts["env_file"]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(ENV_FILE_MAX + 1)  # bounded: --env-file /dev/zero must not eat memory
        except OSError as e:
            raise UsageError(f"cannot read env file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"env file {path} is not UTF-8 text") from None
        if len(text) > ENV_FILE_MAX:
            raise UsageError(f"env file {path} is larger than {ENV_FILE_MAX >> 20} MiB", hint="give a file of KEY=VALUE lines")
        lines = text.splitlines()
        for n, line in enumerate(lines, 1):
            line = line.lstrip()
            if line and not line.startswith("#"):
                out.append(_env_item(line, environ, where=f"env file {path} line {n}"))
    for item in opts["env"]:
        out.append(_env_item(item, environ))
    return [kv for kv in out if kv is not None]


def _env_item(item, environ, where=None):
    k, eq, v = item.partition("=")
    at = f"{where}: " if where else ""
    if not k:
        raise UsageError(f"{at}invalid environment variable {item!r}: no variable name")
    if where and (k != k.strip() or any(c.isspace() for c in k)):
        # Docker's rule: `export C=3` (a shell script) is not an env file.
        raise UsageError(f"{at}invalid environment variable {k!r}: the name contains whitespace",
                         hint="an env file holds KEY=VALUE lines, without 'export' or quotes")
    if "\0" in item:
        raise UsageError(f"{at}invalid environment variable {k!r}: it contains a NUL byte")
    if not eq:
        if k not in environ:
            return None
        v = environ[k]
    return k, v


# Kernel ids are 32 bits and (uid_t)-1 means "unchanged": 0 .. 2**32 - 2.
MAX_ID = 2 ** 32 - 2


def check_id(word, what):
    """A numeric user or group id from the command line, within what the kernel can hold."""
    if word.isdigit() and int(word) > MAX_ID:
        raise UsageError(f"{what} {word} is out of range", hint=f"ids are 0 to {MAX_ID}")
    return word


def user(opts):
    """-u USER[:GROUP], with numeric parts checked for range."""
    u = opts["user"]
    if u is not None:
        name, _, group = u.partition(":")
        check_id(name, "user id")
        check_id(group, "group id")
    return u


def group_add(opts):
    out = []
    for g in opts["group_add"]:
        if not g:
            raise UsageError("--group-add needs a group name or id")
        out.append(check_id(g, "group id"))
    return out


# RFC 1123 host names, as Docker and the kernel's 64-byte limit (HOST_NAME_MAX) allow.  Checked
# without `re`: importing it costs ~10 ms, and this module is on every `sbx run`'s path.
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _label_ok(label):
    return (0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
            and all(c in _LABEL_CHARS for c in label))


def hostname(opts):
    h = opts["hostname"]
    if h is None:
        return None
    if not h or len(h) > 64 or not all(map(_label_ok, h.split("."))):
        raise UsageError(f"invalid hostname format: {h!r}",
                         hint="use at most 64 characters: letters, digits and '-' in dot-separated labels "
                              "that neither start nor end with '-'")
    return h


def security_opts(opts):
    """--security-opt -> {"no_new_privileges": bool, "seccomp": None | "default" | "unconfined" | PATH}.
    Anything else is refused by name: sbx has no AppArmor or SELinux confinement to set."""
    out = {"no_new_privileges": False, "seccomp": None}
    for s in opts["security_opt"]:
        # Docker accepts KEY=VALUE and the older KEY:VALUE.
        k, sep, v = s.partition("=")
        if not sep and ":" in s:
            k, sep, v = s.partition(":")
        if k == "no-new-privileges":
            if v not in ("", "true", "false") or (sep and not v):
                raise UsageError(f"invalid --security-opt {s!r}", hint="use no-new-privileges or no-new-privileges=false")
            out["no_new_privileges"] = v != "false"
        elif k == "seccomp":
            if not v:
                raise UsageError(f"invalid --security-opt {s!r}",
                                 hint="use seccomp=default, seccomp=unconfined or seccomp=PROFILE.json")
            out["seccomp"] = v
        elif k == "apparmor":
            raise UsageError(f"unsupported --security-opt {s!r}: AppArmor profiles are not supported",
                             hint="sbx confines with namespaces, capabilities and seccomp; drop this option")
        elif k == "label":
            raise UsageError(f"unsupported --security-opt {s!r}: SELinux labels are not supported",
                             hint="sbx confines with namespaces, capabilities and seccomp; drop this option")
        else:
            raise UsageError(f"unsupported --security-opt {s!r}",
                             hint="supported: no-new-privileges[=true|false], seccomp=default|unconfined|PROFILE.json")
    return out


LIMITS = ("memory", "memory_swap", "memory_reservation", "cpus", "cpu_shares", "cpu_period", "cpu_quota",
          "cpuset_cpus", "cpuset_mems", "pids_limit", "blkio_weight", "oom_kill_disable", "device_read_bps",
          "device_write_bps", "device_read_iops", "device_write_iops")


def resources(opts):
    """The limit flags -> options.Resources, checked as Docker checks them, and refused unless
    this machine's cgroups can enforce every one (sandbox.cgroups.v2.require)."""
    given = {k: opts[k] for k in LIMITS if opts[k] not in (None, [])}
    if not given:
        return _options.Resources()
    r = _options.resources(**given)
    if r:
        from ..cgroups import v2  # only runs with limits import it
        v2.require(r)
    return r



def network(opts, image_run, warn=None):
    """--network: "none" or "host" as text, else a Mode resolved now (sandbox.network.modes):
    the helper found, the tap device checked.  Without --network an IMAGE gets the default
    private network (or, where it cannot work, `none` and one line through `warn`); a --rootfs
    sandbox keeps none.  Nothing of sandbox.network is imported for none or host.  Several
    user-defined networks (repeated --network, `a,b`): the first is the Mode's, the others its
    "connected" (joined in order at every start)."""
    texts = opts["network"]
    own = {"aliases": list(opts["network_alias"]), "ip": opts["ip"], "mac": opts["mac_address"]}
    text = texts[-1] if len(texts) == 1 and not _multi(texts[0]) else None
    if not texts or text is not None:
        if text is None and not image_run or text in ("none", "host"):
            _network_own(own, text or "none")
            _no_links(opts, text or "none")
            return text or "none"
    else:
        return _networks(opts, own)
    from ..network import modes
    m = modes.resolve(text, default=text in (None, "default"), warn=warn)
    if m.kind == "container":  # the container named must exist; it is recorded by id
        from ..containers import lifecycle, state
        try:
            m = modes.Mode("container", target=lifecycle.store().get(m.target).id)
        except state.NoSuchContainer:
            raise UsageError(f"--network {text}: no such container: {m.target}",
                             hint="'sbx ps' lists containers; give the one whose network to share") from None
    if m.kind != "network":
        _network_own(own, m.text)
        _no_links(opts, m.text)
        return m.kind if m.kind in ("none", "host") else m
    from ..network import bridge
    bridge.check_options(own)
    return modes.Mode("network", {**own, "name": opts["name"], **_links(opts)}, target=m.target)  # bridge.py reads them


def _multi(text):
    """Several networks in one --network value: `a,b` (podman) or `name=a,alias=x` (Docker's
    per-network form); `slirp4netns:a=b,c=d` and `pasta:-T,80` are one mode with options."""
    return text.startswith("name=") or ("," in text and ":" not in text and "=" not in text)


def _per_network(text):
    """One Docker per-network value `name=NET,alias=A,ip=IP,mac-address=MAC` -> (NET, own)."""
    own, name = {"aliases": [], "ip": None, "mac": None}, None
    for item in text.split(","):
        k, eq, v = item.partition("=")
        if not eq or not v:
            raise UsageError(f"invalid --network value {text!r}: {item!r} is not KEY=VALUE",
                             hint="use --network name=NET,alias=NAME,ip=IPV4,mac-address=MAC")
        if k == "name":
            name = v
        elif k == "alias":
            own["aliases"].append(v)
        elif k in ("ip", "mac-address"):
            own["ip" if k == "ip" else "mac"] = v
        else:
            raise UsageError(f"network option {k!r} in {text!r} is not supported",
                             hint="per-network options: name, alias, ip, mac-address")
    if not name:
        raise UsageError(f"invalid --network value {text!r}: no name=NET", hint="use --network name=NET,alias=NAME")
    return name, own


def _networks(opts, own):
    """Several --network values (or one with several networks): all user-defined networks, each
    named once; --network-alias, --ip, --mac-address and --link belong to the first (Docker's rule)."""
    entries = []
    for text in opts["network"]:
        if text.startswith("name="):
            entries.append(_per_network(text))
        elif _multi(text):
            entries += [(t, None) for t in text.split(",")]
        else:
            entries.append((text, None))
    from ..network import bridge, modes
    nets, seen = [], set()
    for i, (text, each) in enumerate(entries):
        m = modes.parse(text)
        if m.kind != "network":
            raise UsageError(f"--network {m.text} cannot be combined with other networks: a container on several "
                             "networks is on user-defined ones only",
                             hint="give only user-defined networks (sbx network create NAME), or a single --network")
        rec = bridge.check(m.target)
        if rec["Name"] in seen:
            raise UsageError(f"network {rec['Name']} is specified multiple times", hint="name each network once")
        seen.add(rec["Name"])
        if i == 0 and each is not None:
            if own["aliases"] and each["aliases"]:
                raise UsageError("conflicting options: cannot specify both --network-alias and per-network alias",
                                 hint="give the aliases in one place")
            for k in ("ip", "mac"):
                if own[k] and each[k]:
                    raise UsageError(f"conflicting options: cannot specify both --{'ip' if k == 'ip' else 'mac-address'}"
                                     " and a per-network one", hint="give it in one place")
            each = {"aliases": own["aliases"] + each["aliases"], "ip": own["ip"] or each["ip"],
                    "mac": own["mac"] or each["mac"]}
        elif i == 0:
            each = own
        each = each or {"aliases": [], "ip": None, "mac": None}
        bridge.check_options(each)
        nets.append((rec["Name"], each))
    (first, first_own), rest = nets[0], nets[1:]
    connected = [{"network": n, **o} for n, o in rest]
    return modes.Mode("network", {**first_own, "name": opts["name"], **_links(opts),
                                  **({"connected": connected} if connected else {})}, target=first)


def _no_links(opts, mode):
    if opts["link"]:
        raise UsageError(f"--link needs a user-defined network, not --network {mode}: the link's alias is answered "
                         "by the network's name server",
                         hint="create a network (sbx network create NAME) and run both containers with --network NAME")


def _links(opts):
    """--link CTR[:ALIAS] -> {"links": [{"container": id, "name": CTR's name, "alias": ALIAS}]}:
    the container must exist (it need not run); its address is looked up at each query."""
    if not opts["link"]:
        return {}
    from ..containers import lifecycle, state
    out = []
    for value in opts["link"]:
        target, _, alias = value.partition(":")
        target = target.lstrip("/")
        alias = (alias or target).lstrip("/").rpartition("/")[2]
        if not target or not alias:
            raise UsageError(f"invalid --link {value!r}", hint="use --link CONTAINER[:ALIAS]")
        try:
            c = lifecycle.store().get(target)
        except state.NoSuchContainer:
            raise UsageError(f"--link {value}: no such container: {target}",
                             hint="'sbx ps -a' lists containers; create the one to link to first") from None
        out.append({"container": c.id, "name": c.name, "alias": alias})
    return {"links": out}


def _network_own(own, mode):
    """--network-alias, --ip and --mac-address belong to a user-defined network (Docker's rule)."""
    given = [f for f, k in (("--network-alias", "aliases"), ("--ip", "ip"), ("--mac-address", "mac")) if own[k]]
    if given:
        raise UsageError(f"{given[0]} needs a user-defined network, not --network {mode}",
                         hint="create one (sbx network create NAME) and run with --network NAME")


def publish(opts):
    """-p values -> sandbox.network.ports dicts, checked (ranges, privileged host ports)."""
    if not opts["publish"]:
        return ()
    from ..network import ports
    return tuple(ports.check([p for s in opts["publish"] for p in ports.parse(s)]))


def expose(opts):
    if not opts["expose"]:
        return ()
    from ..network import ports
    return tuple(e for s in opts["expose"] for e in ports.parse_expose(s))


def host_path(path):
    """A host path as Docker's CLI takes it (-v ./dir:/x, --mount src=./dir): one starting with
    '.' is relative to the working directory (Docker 23+, podman); others are kept as they are."""
    return os.path.abspath(path) if path.startswith(".") else path


def to_options(opts, cmd, environ, warn=None):
    """The parsed options and command words -> RunOptions, every value checked (nothing is
    pulled or started before this returns).  Without --rootfs the first word is the image.
    `warn(line)`: says why a default network falls back to none."""
    if opts["rootfs"] is None and cmd:
        image, argv = cmd[0], list(cmd[1:])
    else:
        image, argv = None, list(cmd)
    security = security_opts(opts)
    restart = _options.RestartPolicy.parse(opts["restart"])
    labels = {}
    if opts["label"] or opts["label_file"]:
        from . import labels as _labels  # one module fewer on a plain run's path
        labels = _labels.parse(opts["label"], opts["label_file"])
    volumes, tmpfs = list(opts["volume"]), list(opts["tmpfs"])
    if opts["mount"]:
        from . import mounts
        more = mounts.split(opts["mount"])
        volumes += more[0]
        tmpfs += more[1]
    volumes = [host_path(v.partition(":")[0]) + "".join(v.partition(":")[1:]) for v in volumes]
    if volumes and any(v[:1] != "/" for v in volumes):  # -v NAME:/path: a named volume
        from ..containers import volumes as _volumes
        volumes = _volumes.resolve(volumes)
    return _options.RunOptions(
        argv=tuple(argv), rootfs=opts["rootfs"], entrypoint=opts["entrypoint"], env=tuple(parse_env(opts, environ)),
        cwd=opts["workdir"], user=user(opts), volumes=tuple(volumes), tmpfs=tuple(tmpfs),
        network=network(opts, image is not None, warn), hostname=hostname(opts), read_only=bool(opts["read_only"]),
        ports=publish(opts), publish_all=bool(opts["publish_all"]), expose=expose(opts), dns=tuple(opts["dns"]),
        dns_search=tuple(opts["dns_search"]), dns_options=tuple(opts["dns_option"]),
        extra_hosts=tuple(opts["add_host"]),
        init=bool(opts["init"]), userns=opts["userns"], cap_add=tuple(opts["cap_add"]),
        cap_drop=tuple(opts["cap_drop"]), no_new_privileges=security["no_new_privileges"],
        ulimits=tuple(opts["ulimit"]), group_add=tuple(group_add(opts)), terminal=bool(opts["tty"]),
        seccomp=security["seccomp"], image=image, pull=opts["pull"] or "missing", platform=opts["platform"],
        name=opts["name"], labels=labels, detach=bool(opts["detach"]),
        auto_remove=bool(opts["rm"]), interactive=bool(opts["interactive"]), restart=restart,
        stop_signal=_options.stop_signal(opts["stop_signal"]),
        stop_timeout=_options.stop_timeout(opts["stop_timeout"]), resources=resources(opts))
