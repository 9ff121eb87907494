"""cgroup v2 for unprivileged users: find the caller's cgroup, check that it is delegated, make
one leaf per container (`sbx-<id>`), write its limits, freeze/thaw/kill it, read its stats and
remove it.

Kernel rules this follows (Documentation/admin-guide/cgroup-v2.rst):
- a user may manage a subtree whose directory and `cgroup.procs`/`cgroup.subtree_control` it can
  write ("Model of Delegation"); moving a process needs write access to the `cgroup.procs` of the
  common ancestor of its old and new cgroup, so leaves are made under a cgroup the caller owns;
- no internal processes: a cgroup that enables controllers for its children holds no process,
  so when the caller sits in the delegated cgroup itself it first moves to a leaf `init` (as
  systemd's user manager does);
- `cgroup.freeze` freezes the subtree, `cgroup.events` says `frozen 1` once it is; `cgroup.kill`
  kills every process in it, forks included.

Nothing here is a silent no-op: every limit is written or refused with a `CgroupError` (exit
125) naming the cgroup version or the missing controller, with a hint (systemd `Delegate=`,
`loginctl enable-linger`, the kernel command line).
"""
import errno
import os
import select
import time

from ..errors import SandboxError
from ..runtime.hooks import Hook

HINT_DELEGATE = ("as root, give the user's systemd manager the controllers: a drop-in "
                 "/etc/systemd/system/user@.service.d/delegate.conf with [Service] "
                 "Delegate=cpu cpuset io memory pids, then 'systemctl daemon-reload' and log in again "
                 "(or 'loginctl enable-linger USER'); 'sbx info' shows what is delegated")
HINT_UNIFIED = ("boot with cgroup v2 only: add systemd.unified_cgroup_hierarchy=1 to the kernel command "
                "line (cgroup v1 cannot be delegated safely to unprivileged users); 'sbx info' explains this machine")
HINT_SESSION = ("run sbx from a login session whose systemd user manager runs ('loginctl enable-linger USER' "
                "keeps one for users without a login), or under one in a scope of its own: 'systemd-run --user "
                "--scope -p Delegate=yes sbx ...'; or as root make the user a delegated cgroup: mkdir it, chown it "
                "and its cgroup.procs, cgroup.subtree_control and cgroup.threads to the user")

#: which controller each limit (docker-py's name) needs
CONTROLLER = {
    "mem_limit": "memory", "memswap_limit": "memory", "mem_reservation": "memory",
    "nano_cpus": "cpu", "cpu_shares": "cpu", "cpu_period": "cpu", "cpu_quota": "cpu",
    "cpuset_cpus": "cpuset", "cpuset_mems": "cpuset", "pids_limit": "pids", "blkio_weight": "io",
    "device_read_bps": "io", "device_write_bps": "io", "device_read_iops": "io", "device_write_iops": "io",
}


#: the flag that sets each limit, for messages
FLAG = {
    "mem_limit": "-m/--memory", "memswap_limit": "--memory-swap", "mem_reservation": "--memory-reservation",
    "nano_cpus": "--cpus", "cpu_shares": "--cpu-shares", "cpu_period": "--cpu-period", "cpu_quota": "--cpu-quota",
    "cpuset_cpus": "--cpuset-cpus", "cpuset_mems": "--cpuset-mems", "pids_limit": "--pids-limit",
    "blkio_weight": "--blkio-weight", "device_read_bps": "--device-read-bps", "device_write_bps": "--device-write-bps",
    "device_read_iops": "--device-read-iops", "device_write_iops": "--device-write-iops",
}

#: io.max's key for each throttle
IO_MAX_KEY = {"device_read_bps": "rbps", "device_write_bps": "wbps", "device_read_iops": "riops",
              "device_write_iops": "wiops"}


#: errnos of a leaf removed under us (its files: ENOENT once gone, ENODEV while it dies)
GONE = (errno.ENOENT, errno.ENODEV)


class CgroupError(SandboxError):
    """cgroups cannot do what was asked here (exit 125, as Docker's daemon refusals of `run`)."""


# --- where things are ------------------------------------------------------------------------

def _read(path):
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _unescape(field):
    """mountinfo's octal escapes (\\040 for a space)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts(mountinfo="/proc/self/mountinfo"):
    """(cgroup2 mounts as [(mount point, root)], v1 controllers mounted as a set)."""
    v2, v1 = [], set()
    for line in _read(mountinfo).splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 3:
            continue
        if r[0] == "cgroup2":
            v2.append((_unescape(f[4]), _unescape(f[3])))
        elif r[0] == "cgroup":
            for opt in r[2].split(","):
                if opt not in ("rw", "ro") and "=" not in opt and not opt.startswith("no"):
                    v1.add(opt)
    return v2, v1


def own_cgroup(proc_cgroup="/proc/self/cgroup"):
    """The caller's cgroup v2 path ('0::/...'), or None without a v2 hierarchy."""
    for line in _read(proc_cgroup).splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


class Machine:
    """What this machine's cgroups allow the caller:
    version     "v2" (unified), "hybrid" (v1 controllers plus a v2 tree), "v1" or "none"
    mount       the cgroup2 mount point (or None)
    path        the caller's own cgroup directory (or None)
    base        the directory under which leaves are made (or None: `reason` says why)
    controllers the controllers a leaf can have (base's cgroup.controllers; those not yet in its
                cgroup.subtree_control are enabled when a leaf needs them)
    v1          controllers mounted as cgroup v1
    reason, hint  why `base` is None
    self_move   the caller has to move itself to `base`/init first (no-internal-process rule)
    freeze, kill  cgroup.freeze / cgroup.kill exist (kernel 5.2 / 5.14)"""

    def __init__(self, **kw):
        self.version, self.mount, self.path, self.base = "none", None, None, None
        self.controllers, self.v1, self.reason, self.hint = (), (), "", ""
        self.self_move = self.freeze = self.kill = False
        self.__dict__.update(kw)

    @property
    def usable(self):
        return self.base is not None

    def asdict(self):
        return {k: (sorted(v) if isinstance(v, (set, tuple, frozenset)) else v) for k, v in vars(self).items()}


def _writable(d):
    return (os.access(d, os.W_OK | os.X_OK) and os.access(os.path.join(d, "cgroup.procs"), os.W_OK)
            and os.access(os.path.join(d, "cgroup.subtree_control"), os.W_OK))


def _controllers(d, name="cgroup.controllers"):
    try:
        return tuple(_read(os.path.join(d, name)).split())
    except OSError:
        return ()


def _procs(d):
    try:
        return [int(p) for p in _read(os.path.join(d, "cgroup.procs")).split()]
    except OSError:
        return []


def probe(mountinfo="/proc/self/mountinfo", proc_cgroup="/proc/self/cgroup"):
    """Classify this machine and find where the caller may make leaves (reads only)."""
    v2, v1 = mounts(mountinfo)
    m = Machine(v1=tuple(sorted(v1)))
    if not v2:
        m.version = "v1" if v1 else "none"
        m.reason = ("cgroup v1 only: no cgroup v2 hierarchy is mounted" if v1
                    else "no cgroup filesystem is mounted")
        m.hint = HINT_UNIFIED if v1 else "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)"
        return m
    m.version = "hybrid" if v1 else "v2"
    mount, root = v2[0]
    own = own_cgroup(proc_cgroup)
    m.mount = mount
    if own is None:
        m.reason, m.hint = "the caller's cgroup v2 is unknown (/proc/self/cgroup has no 0:: line)", HINT_SESSION
        return m
    rel = own
    if root != "/" and (own == root or own.startswith(root + "/")):
        rel = own[len(root):]
    if rel.startswith("/.."):  # outside this cgroup namespace's view
        m.reason, m.hint = f"the caller's cgroup {own} is outside the mounted cgroup2 tree", HINT_SESSION
        return m
    m.path = os.path.normpath(mount + "/" + rel.lstrip("/"))
    m.freeze, m.kill = _has(m.path, mount, "cgroup.freeze", (5, 2)), _has(m.path, mount, "cgroup.kill", (5, 14))
    if v1:
        m.reason = ("cgroup v2 is not the unified hierarchy here (hybrid: "
                    f"{', '.join(c for c in ('memory', 'cpu', 'pids', 'cpuset', 'blkio', 'freezer') if c in v1)} "
                    "are on cgroup v1)")
        m.hint = HINT_UNIFIED
        m.controllers = _controllers(m.path)
        return m
    parent = os.path.dirname(m.path)
    if m.path != mount and parent.startswith(mount) and _writable(parent) and _is_leafish(parent, m.path):
        # The caller is a leaf of a delegated cgroup (systemd's scopes, the VM's user-N/init):
        # containers become its siblings.
        m.base = parent
    elif _writable(m.path):
        # The caller sits in the delegated cgroup itself: it moves to base/init first.
        m.base, m.self_move = m.path, True
    else:
        m.reason = f"the caller's cgroup {own} is not delegated to it (its cgroup.procs is not writable)"
        m.hint = HINT_SESSION
        return m
    m.controllers = _controllers(m.base)
    return m


def _has(path, mount, name, since):
    """cgroup.freeze/cgroup.kill exist in non-root cgroups only: the root's tells nothing, so
    there the kernel's version decides."""
    if path != mount:
        return os.path.exists(os.path.join(path, name))
    release = os.uname().release.split("-")[0].split(".")
    try:
        return tuple(int(x) for x in release[:2]) >= since
    except ValueError:
        return False


def _is_leafish(parent, own):
    """Containers may be made beside the caller when the parent holds no process (the
    no-internal-process rule holds there), or already enables controllers."""
    return not _procs(parent) or bool(_controllers(parent, "cgroup.subtree_control"))


def refusal(machine, wanted):
    """The CgroupError for controllers `wanted` (names from CONTROLLER, or "freezer"/"kill"),
    or None when the machine can provide them."""
    if not machine.usable:
        return CgroupError(machine.reason, hint=machine.hint)
    for c in wanted:
        if c == "freezer":
            if not machine.freeze:
                return CgroupError("the cgroup v2 freezer (cgroup.freeze) is missing: the kernel is older than 5.2",
                                   hint="pause needs Linux 5.2 or newer")
        elif c == "kill":
            if not machine.kill:
                return CgroupError("cgroup.kill is missing: the kernel is older than 5.14",
                                   hint="killing a whole container at once needs Linux 5.14 or newer")
        elif c not in machine.controllers:
            return CgroupError(f"the cgroup v2 controller '{c}' is not delegated to this user "
                               f"(delegated: {' '.join(machine.controllers) or 'none'})", hint=HINT_DELEGATE)
    return None


def pause_refusal(machine):
    """The CgroupError of `sbx pause` where this machine gives containers no freezer, or None."""
    if machine.usable:
        return refusal(machine, ["freezer"])
    hint = machine.hint
    if machine.version in ("hybrid", "v1"):
        hint += ("; then a delegated subtree: systemd's user@.service has Delegate=yes ('loginctl enable-linger "
                 "USER' keeps the user's manager running)")
    return CgroupError(f"the cgroup v2 freezer is not available: {machine.reason}", hint=hint)


def needed(resources):
    """The controllers a Resources (runtime/options.py) needs, in a stable order."""
    out = []
    for field, ctl in CONTROLLER.items():
        v = getattr(resources, field, None)
        if v is not None and ctl not in out:
            out.append(ctl)
    return out


def require(resources, machine=None):
    """Raise CgroupError unless every limit in `resources` can be enforced here.  Called before
    anything is pulled or started."""
    if getattr(resources, "oom_kill_disable", False):
        raise CgroupError("--oom-kill-disable cannot be honoured: cgroup v2 has no way to disable the OOM "
                          "killer (v1's memory.oom_control has no v2 counterpart)",
                          hint="drop --oom-kill-disable; give the container more memory with -m instead")
    wanted = needed(resources)
    if not wanted:
        return None
    machine = machine or probe()
    err = refusal(machine, wanted)
    if err is not None:
        flags = [f for k, f in FLAG.items() if getattr(resources, k, None) is not None
                 and (not machine.usable or CONTROLLER[k] not in machine.controllers)]
        err.msg = f"{', '.join(flags)}: cannot be enforced: {err.msg}"
        err.args = (err.msg,)
        raise err
    for field in IO_MAX_KEY:
        for path, _rate in getattr(resources, field, None) or ():
            block_device(path, FLAG[field])
    return machine


def block_device(path, flag="--device-read-bps"):
    """'MAJ:MIN' of the block device at `path` (io.max's key); CgroupError when it is none."""
    import stat
    try:
        st = os.stat(path)
    except OSError as e:
        raise CgroupError(f"{flag} {path}: {e.strerror}", hint="give a block device that exists, e.g. /dev/sda") from None
    if not stat.S_ISBLK(st.st_mode):
        raise CgroupError(f"{flag} {path}: not a block device", hint="give a disk such as /dev/sda or /dev/nvme0n1")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


# --- limits: Docker's values -> cgroup v2 files --------------------------------------------------

def cpu_weight(shares):
    """Docker/runc's conversion of cpu shares [2, 262144] to cpu.weight [1, 10000]."""
    shares = min(max(int(shares), 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(blkio_weight):
    """runc's conversion of a blkio weight [10, 1000] to io.weight [1, 10000]."""
    return 1 + ((int(blkio_weight) - 10) * 9999) // 990


def limit_files(r):
    """Resources -> [(file, value)] in the order they are written."""
    out = []
    mem, swap = getattr(r, "mem_limit", None), getattr(r, "memswap_limit", None)
    if getattr(r, "mem_reservation", None) is not None:
        out.append(("memory.low", str(r.mem_reservation)))
    if mem is not None:
        out.append(("memory.max", str(mem)))
        if swap is not None and swap != 0:
            # Docker's memswap is memory + swap; -1: unlimited swap
            out.append(("memory.swap.max", "max" if swap < 0 else str(swap - mem)))
        else:  # Docker's default: as much swap as memory
            out.append(("memory.swap.max", str(mem)))
    period = getattr(r, "cpu_period", None)
    if getattr(r, "nano_cpus", None) is not None:
        period = 100000
        out.append(("cpu.max", f"{r.nano_cpus * period // 10 ** 9} {period}"))
    elif getattr(r, "cpu_quota", None) is not None or period is not None:
        q = getattr(r, "cpu_quota", None)
        out.append(("cpu.max", f"{'max' if q is None or q <= 0 else q} {period or 100000}"))
    if getattr(r, "cpu_shares", None):
        out.append(("cpu.weight", str(cpu_weight(r.cpu_shares))))
    if getattr(r, "cpuset_cpus", None) is not None:
        out.append(("cpuset.cpus", r.cpuset_cpus))
    if getattr(r, "cpuset_mems", None) is not None:
        out.append(("cpuset.mems", r.cpuset_mems))
    if getattr(r, "pids_limit", None) is not None:
        out.append(("pids.max", "max" if r.pids_limit <= 0 else str(r.pids_limit)))
    if getattr(r, "blkio_weight", None):
        # runc's order: BFQ's weight (the same 10-1000 scale) where that scheduler is in use,
        # else io.weight (`set` falls back to it)
        out.append(("io.bfq.weight", str(r.blkio_weight)))
    devices = {}
    for field, key in IO_MAX_KEY.items():
        for path, rate in getattr(r, field, None) or ():
            devices.setdefault(block_device(path, FLAG[field]), {})[key] = rate
    for dev, limits in devices.items():
        # one line per device: what is not given stays unlimited; a rate of 0 is Docker's "no limit"
        out.append(("io.max", f"{dev} " + " ".join(f"{k}={limits.get(k) or 'max'}"
                                                   for k in ("rbps", "wbps", "riops", "wiops"))))
    return out


# --- one leaf ---------------------------------------------------------------------------------

def _write(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode() if isinstance(value, str) else value)
    finally:
        os.close(fd)


def _keyed(text):
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k:
            out[k] = int(v) if v.strip().lstrip("-").isdigit() else v.strip()
    return out


def prepare(machine, controllers, optional=()):
    """Make `machine.base` able to hold leaves with `controllers`: move the caller to
    base/init when it sits in base (no-internal-process rule), then enable the controllers in
    base's cgroup.subtree_control (`optional` ones too, where the kernel lets us)."""
    base = machine.base
    enabled = set(_controllers(base, "cgroup.subtree_control"))
    missing = [c for c in controllers if c not in enabled]
    extra = [c for c in optional if c not in enabled and c not in missing]
    if machine.self_move and _procs(base):
        init = os.path.join(base, "init")
        try:
            os.mkdir(init)
        except FileExistsError:
            pass
        for pid in _procs(base):  # our own process, and the rest of the caller's session
            try:
                _write(os.path.join(init, "cgroup.procs"), str(pid))
            except ProcessLookupError:
                pass
            except OSError as e:
                raise CgroupError(f"cannot move process {pid} out of {base} to {init}: {e.strerror}",
                                  hint=HINT_SESSION) from None
        machine.path = init
    if missing:
        try:
            _write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in missing))
        except OSError as e:
            why = ("processes still sit in it (no-internal-process rule)" if e.errno == errno.EBUSY
                   else e.strerror)
            raise CgroupError(f"cannot enable {' '.join(missing)} in {base}/cgroup.subtree_control: {why}",
                              hint=HINT_DELEGATE) from None
    if extra:
        try:
            _write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in extra))
        except OSError:
            pass  # accounting only: its stats are then read from what the kernel has


class Cgroup:
    """One leaf `base/sbx-<id>`."""

    def __init__(self, path):
        self.path = path

    def __repr__(self):
        return f"Cgroup({self.path!r})"

    @classmethod
    def create(cls, name, resources=None, machine=None, accounting=()):
        """Make the leaf `sbx-<name>` with `resources`' limits (refused when they cannot be
        enforced).  An existing leaf of that name (a container restarted) is reused.
        `accounting`: controllers also enabled for it where delegated (for stats)."""
        machine = machine or probe()
        wanted = needed(resources) if resources is not None else []
        err = refusal(machine, wanted)
        if err is not None:
            raise err
        prepare(machine, wanted, optional=[c for c in accounting if c in machine.controllers])
        path = os.path.join(machine.base, f"sbx-{name}")
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create the cgroup {path}: {e.strerror}", hint=HINT_DELEGATE) from None
        cg = cls(path)
        if resources is not None:
            try:
                cg.set(limit_files(resources), swap_asked=getattr(resources, "memswap_limit", None) is not None)
            except BaseException:
                cg.remove()
                raise
        return cg

    @classmethod
    def existing(cls, path):
        """The leaf at `path` if it is still there, else None."""
        return cls(path) if os.path.isfile(os.path.join(path, "cgroup.procs")) else None

    def file(self, name):
        return os.path.join(self.path, name)

    def set_resources(self, resources, machine=None):
        """Write `resources`' limits into this existing leaf (`sbx update`): refused, as at
        create, when this machine cannot enforce one; controllers the leaf lacks are enabled
        in its parent first."""
        machine = machine or probe()
        wanted = needed(resources)
        err = refusal(machine, wanted)
        if err is not None:
            raise err
        missing = [c for c in wanted if c not in _controllers(self.path)]
        if missing:
            parent = os.path.dirname(self.path)
            try:
                _write(os.path.join(parent, "cgroup.subtree_control"), " ".join("+" + c for c in missing))
            except OSError as e:
                raise CgroupError(f"cannot enable {' '.join(missing)} in {parent}/cgroup.subtree_control: "
                                  f"{e.strerror}", hint=HINT_DELEGATE) from None
        self.set(limit_files(resources), swap_asked=getattr(resources, "memswap_limit", None) is not None)

    def read(self, name):
        return _read(self.file(name))

    def set(self, files, swap_asked=False):
        """Write (file, value) pairs.  Without swap accounting (no memory.swap.max) Docker's
        default swap limit is left out, but an explicit --memory-swap is refused."""
        for name, value in files:
            try:
                _write(self.file(name), value)
            except FileNotFoundError:
                if name == "io.bfq.weight" and not os.path.exists(self.file(name)):
                    if not os.path.exists(self.file("io.weight")):
                        raise CgroupError("--blkio-weight cannot be enforced: the kernel has neither io.bfq.weight "
                                          "(the BFQ scheduler) nor io.weight (blk-iocost)",
                                          hint="drop --blkio-weight, or use BFQ ('echo bfq > "
                                               "/sys/block/DEV/queue/scheduler' as root)") from None
                    self.set([("io.weight", f"default {io_weight(value)}")])
                    continue
                if name == "memory.swap.max":
                    if not swap_asked:
                        continue
                    raise CgroupError("--memory-swap cannot be enforced: the kernel has no swap accounting "
                                      "(no memory.swap.max)", hint="drop --memory-swap, or boot a kernel with "
                                      "swap accounting (CONFIG_MEMCG_SWAP, swapaccount=1)") from None
                raise CgroupError(f"cannot set {name}: the kernel has no such file in {self.path}",
                                  hint=HINT_DELEGATE) from None
            except OSError as e:
                raise CgroupError(f"cannot set {name} to {value!r} in {self.path}: {e.strerror}",
                                  hint="check the value against 'sbx info' (cpus, memory nodes)") from None

    def attach(self, pid):
        """Move `pid` (and its threads) into the leaf."""
        try:
            _write(self.file("cgroup.procs"), str(pid))
        except OSError as e:
            raise CgroupError(f"cannot move process {pid} into {self.path}: {e.strerror}",
                              hint=HINT_SESSION) from None

    def pids(self):
        return _procs(self.path)

    def events(self):
        return _keyed(self.read("cgroup.events"))

    def _wait_event(self, key, value, timeout):
        """Wait until cgroup.events says `key value` (the file is pollable: POLLPRI on change).
        True once it does, False after `timeout`, None when the leaf is gone (removed by its
        container's supervisor meanwhile)."""
        deadline = time.monotonic() + timeout
        try:
            fd = os.open(self.file("cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in GONE:
                return None
            raise
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            while True:
                os.lseek(fd, 0, os.SEEK_SET)
                try:
                    text = os.read(fd, 4096).decode()
                except OSError as e:
                    if e.errno in GONE:
                        return None
                    raise
                if _keyed(text).get(key) == value:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                poller.poll(min(left, 0.1) * 1000)  # also re-read: a missed wakeup costs 100 ms
        finally:
            os.close(fd)

    def freeze(self, timeout=10.0):
        """Freeze every process of the leaf; returns once the kernel says `frozen 1`."""
        self._freezer("1", timeout)

    def thaw(self, timeout=10.0):
        self._freezer("0", timeout)

    def _freezer(self, v, timeout):
        what = "frozen" if v == "1" else "thawed"
        try:
            _write(self.file("cgroup.freeze"), v)
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise CgroupError(f"{self.path} cannot be {what}: it is gone (its container ended)") from None
            raise CgroupError("the cgroup v2 freezer (cgroup.freeze) is missing: the kernel is older than 5.2",
                              hint="pause needs Linux 5.2 or newer") from None
        except OSError as e:
            if e.errno in GONE:
                raise CgroupError(f"{self.path} cannot be {what}: it is gone (its container ended)") from None
            raise
        done = self._wait_event("frozen", int(v), timeout)
        if done is None:
            raise CgroupError(f"{self.path} cannot be {what}: it is gone (its container ended)")
        if not done:
            raise CgroupError(f"{self.path} did not become {what} within {timeout:g} s", hint="see its cgroup.events")

    @property
    def frozen(self):
        return self.events().get("frozen") == 1

    def kill(self, timeout=10.0):
        """SIGKILL every process of the leaf, forks included (cgroup.kill); returns once it is
        empty (or gone: its supervisor removed it meanwhile).  Without cgroup.kill (before
        5.14): SIGKILL each pid until none is left (a frozen leaf cannot fork, so it is frozen
        first)."""
        if not self.pids():
            return
        try:
            _write(self.file("cgroup.kill"), "1")
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                return
            self._kill_each()
        except OSError as e:
            if e.errno in GONE:
                return
            raise
        if self._wait_event("populated", 0, timeout) is False:
            raise CgroupError(f"processes of {self.path} are still alive {timeout:g} s after SIGKILL",
                              hint=f"see {self.path}/cgroup.procs")

    def _kill_each(self):
        try:
            self.freeze()
        except CgroupError:
            pass
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        try:
            self.thaw()
        except CgroupError:
            pass

    def stats(self):
        """Usage and limits (absent files are left out): memory current/max/events, cpu.stat,
        pids current/max, io.stat per device."""
        out = {}
        for name, key in (("memory.current", "memory_current"), ("memory.max", "memory_max"),
                          ("memory.swap.current", "swap_current"), ("pids.current", "pids_current"),
                          ("pids.max", "pids_max")):
            try:
                v = self.read(name).strip()
            except OSError:
                continue
            out[key] = int(v) if v.isdigit() else v
        for name, key in (("cpu.stat", "cpu"), ("memory.events", "memory_events"), ("pids.events", "pids_events"),
                          ("memory.stat", "memory_stat")):
            try:
                out[key] = _keyed(self.read(name))
            except OSError:
                pass
        try:
            io = {}
            for line in self.read("io.stat").splitlines():
                dev, *pairs = line.split()
                io[dev] = {k: int(v) for k, _, v in (p.partition("=") for p in pairs) if v.isdigit()}
            out["io"] = io
        except OSError:
            pass
        return out

    def remove(self, timeout=10.0):
        """Kill what is left in the leaf and remove it (idempotent)."""
        if not os.path.isdir(self.path):
            return
        try:
            self.kill(timeout)
        except FileNotFoundError:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(f"cannot remove the cgroup {self.path}: {e.strerror}",
                                      hint="remove it with rmdir once its processes are gone") from None
                time.sleep(0.01)  # populated 0 is reported before the last task is released


#: what a leaf without limits accounts for (stats), when delegated: Docker's containers have them all
ACCOUNTING = ("memory", "pids", "cpu", "io")


class CgroupHook(Hook):
    """The launch hook (runtime/hooks.py) of a container: attach(pid) makes the leaf
    `sbx-<name>`, writes the limits and moves the held child in, before it runs anything;
    teardown() reads memory.events (`oom_kills`: the OOM killer's kills in this run), kills
    what is left and removes the leaf.  Without limits (`resources` None) the leaf is for
    pause, cgroup.kill and stats only: one that cannot be made leaves the container without
    a cgroup (`cgroup` None; pause then says so) instead of failing the launch."""
    name = "cgroup"

    def __init__(self, name, resources=None, machine=None):
        self.leaf_name, self.resources, self.machine = name, resources, machine
        self.cgroup = None
        self.oom_kills = 0

    def attach(self, pid):
        self.oom_kills = 0
        if self.resources is None:
            try:
                cg = Cgroup.create(self.leaf_name, None, self.machine, accounting=ACCOUNTING)
                cg.attach(pid)
            except CgroupError:
                self.cgroup = None
                return
            self.cgroup = cg
            return
        cg = Cgroup.create(self.leaf_name, self.resources, self.machine)
        self.cgroup = cg
        cg.attach(pid)

    def teardown(self):
        cg, self.cgroup = self.cgroup, None
        if cg is not None:
            try:
                self.oom_kills = int(_keyed(cg.read("memory.events")).get("oom_kill", 0))
            except (OSError, ValueError):
                pass
            cg.remove()


def hooks_for(spec, machine=None, leaf=False):
    """The launch hooks a runtime spec (runtime/spec.py) needs: a CgroupHook when it carries
    limits ("sbx" annotations, docker-py's names); with `leaf`, also without limits where this
    machine has a delegated cgroup v2 subtree with a freezer (so every container can be
    paused and killed whole, as Docker's).  What the engine passes to
    SandboxProcess.launch(hooks=...)."""
    r = spec.get("sbx", {}).get("resources")
    name = spec["sbx"]["id"][:12]
    if not r:
        if not leaf:
            return ()
        machine = machine or probe()
        if not machine.usable or not machine.freeze:
            return ()
        return (CgroupHook(name, None, machine),)
    from ..runtime.options import Resources
    return (CgroupHook(name, Resources(**r), machine),)


def leaf_of(pid, machine=None):
    """The Cgroup a running sandbox's process `pid` is in, when it is one of sbx's leaves
    (`sbx-...` under the caller's delegated base), else None."""
    machine = machine or probe()
    if not machine.usable:
        return None
    try:
        own = own_cgroup(f"/proc/{pid}/cgroup")
    except OSError:
        return None
    if own is None:
        return None
    path = os.path.normpath(machine.mount + "/" + own.lstrip("/"))
    if os.path.dirname(path) != machine.base or not os.path.basename(path).startswith("sbx-"):
        return None
    return Cgroup(path)


class JoinHook(Hook):
    """The launch hook of `exec` in a container with a cgroup: the new process joins the
    container's leaf (and its limits) before it runs anything.  Nothing to undo."""
    name = "cgroup"

    def __init__(self, cgroup):
        self.cgroup = cgroup

    def attach(self, pid):
        self.cgroup.attach(pid)

    def teardown(self):
        pass
