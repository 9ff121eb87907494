"""docker-py's containers API on the engine, in this process, without a daemon:

    from sandbox import containers
    c = containers.run(rootfs=R, command=["sh", "-c", "echo up; exec sleep 300"], name="web")
    c.exec_run(["cat", "/etc/hostname"])        # ExecResult(exit_code=0, output=b'...')
    c.logs()                                    # b'up\\n'
    c.stop(); c.remove()
    out = containers.run(rootfs=R, command="echo hi", detach=False, remove=True)   # b'hi\\n'

The names and shapes are docker-py's (`docker.from_env().containers`), so harnesses written
for it move over by changing the import; where sbx differs it says so below and refuses what
it cannot do by name (user-defined networks by name).  Resource limits (mem_limit, nano_cpus,
pids_limit, ...) are enforced through cgroup v2 or refused, with the message `sbx run` gives.

Differences from docker-py:
- `run` takes `rootfs=DIR` as an alternative to `image`, and `detach` defaults to True;
- a container of an image gets the default private network (slirp4netns or pasta, as `sbx run`);
  one of `rootfs=` has only `lo` unless `network_mode` names a mode ("slirp4netns", "pasta",
  "bridge", "host"); `ports=` publish on the host as docker-py's, `Container.ports` shows them;
- `Container.image` is the image reference as given (or the `rootfs=` directory), not an Image;
- `exec_run` takes `timeout=` (seconds; the exec is killed and `WaitTimeout` raised);
- a detached `exec_run` lives as long as this Python process;
- a `stats()` document has an `sbx` key saying where its figures come from ("cgroup", "proc"
  when the container has no cgroup of its own, "none" when it does not run); `update()` also
  takes the Engine API's `nano_cpus` and `pids_limit`;
- `commit()` returns the new image's id and refuses a running container (as `sbx commit`);
  `exec_run(stdin=True)` and `exec_run(socket=True)` are refused (no daemon socket to hand out).

Each `Container` keeps the configuration context (`sandbox.config`) it was made in, so its
methods act on the same store wherever they are called from."""
import builtins
import collections
import errno
import os
import threading
import time

from .. import config
from ..errors import SandboxError, UsageError
from ..runtime import options as _options
from . import lifecycle, state as _state
from .inspect import container_doc
from .ready import WaitTimeout

NotFound = _state.NoSuchContainer  # docker.errors.NotFound's place: a SandboxError and a LookupError

ExecResult = collections.namedtuple("ExecResult", "exit_code,output")


class ContainerError(SandboxError):
    """docker.errors.ContainerError: a container run with `detach=False` exited non-zero."""

    def __init__(self, container, exit_status, command, image, stderr):
        self.container, self.exit_status, self.command, self.image, self.stderr = (
            container, exit_status, command, image, stderr)
        err = f": {stderr.decode('utf-8', 'replace') if isinstance(stderr, bytes) else stderr}" if stderr else ""
        SandboxError.__init__(self, f"Command '{command}' in image '{image}' returned non-zero exit status "
                                    f"{exit_status}{err}")


# --- docker-py's arguments -> RunOptions -------------------------------------------------------------

_ISSUE_11 = "networking comes with issue 11"
_NO_V2 = "cgroup v2 has no such control"
_REFUSED = {  # docker-py run()/create() arguments sbx cannot honour yet, and why
    **dict.fromkeys(("network", "networking_config", "links", "mac_address", "domainname"),
                    "user-defined networks are not offered here yet: use network_mode (none, host, slirp4netns, "
                    "pasta, bridge)"),
    **dict.fromkeys(("mem_swappiness", "kernel_memory", "cpu_rt_period", "cpu_rt_runtime"),
                    f"{_NO_V2} (Docker ignores or refuses it there too)"),
    **dict.fromkeys(("cpu_count", "cpu_percent"), "Windows containers only; use nano_cpus"),
    "blkio_weight_device": "per-device weights are not implemented: use blkio_weight, or device_read_bps, "
                           "device_write_bps, device_read_iops, device_write_iops for per-device limits",
    "oom_score_adj": "not supported by sbx",
    "cgroup_parent": "sbx makes each container's cgroup under the caller's delegated one ('sbx info')",
    "shm_size": "use tmpfs={'/dev/shm': 'size=64m'}",
    "privileged": "sbx has no privileged mode: use cap_add for the capabilities the command needs",
    **dict.fromkeys(("devices", "device_requests", "device_cgroup_rules"), "sbx passes no host devices in"),
    **dict.fromkeys(("pid_mode", "ipc_mode", "uts_mode", "userns_mode", "cgroupns"),
                    "sbx always gives a container namespaces of its own"),
    **dict.fromkeys(("volumes_from", "volume_driver", "mounts", "storage_opt"),
                    "only bind mounts of host directories (volumes=) and tmpfs= are supported"),
    **dict.fromkeys(("runtime", "isolation", "sysctls", "log_config", "healthcheck", "lxc_conf", "init_path",
                     "use_config_proxy", "auto_remove_delay"), "not supported by sbx"),
}


def _words(value, what):
    """A command or entrypoint: a list of strings, or a str split as a shell would (docker-py)."""
    if value is None:
        return None
    if isinstance(value, str):
        import shlex
        return shlex.split(value)
    if isinstance(value, (builtins.list, tuple)) and all(isinstance(w, str) for w in value):
        return builtins.list(value)
    raise UsageError(f"{what} must be a str or a list of str, not {value!r}")


def _env(environment, what="environment"):
    """A dict, or a list of "KEY=VALUE" strings -> [(key, value)]."""
    if not environment:
        return []
    items = environment.items() if isinstance(environment, dict) else (
        (k, v) for k, _eq, v in (str(e).partition("=") if "=" in str(e) else (e, "", None) for e in environment))
    out = []
    for k, v in items:
        if v is None:
            raise UsageError(f"{what}: {k!r} has no value", hint="give KEY=VALUE, or a dict")
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise UsageError(f"{what}: invalid variable name {k!r}")
        out.append((k, v.decode() if isinstance(v, bytes) else str(v)))
    return out


def _volumes(volumes):
    """docker-py's {host: {"bind": ctr, "mode": "ro"}} (or {host: ctr}) and ["host:ctr[:mode]"] forms."""
    if not volumes:
        return ()
    if isinstance(volumes, dict):
        out = []
        for host, v in volumes.items():
            if isinstance(v, dict):
                if "bind" not in v:
                    raise UsageError(f"volume {host!r}: no 'bind' (the path inside the container)",
                                     hint="use {host: {'bind': '/path', 'mode': 'ro'}}")
                mode = "ro" if v.get("ro") else v.get("mode", "rw")
                out.append((str(host), str(v["bind"]), str(mode)))
            else:
                out.append((str(host), str(v), "rw"))
        return tuple(out)
    if isinstance(volumes, str):
        return (volumes,)
    return tuple(str(v) for v in volumes)


def _labels(labels):
    if not labels:
        return {}
    if isinstance(labels, dict):
        pairs = labels.items()
    else:  # docker-py: a list of keys, each with the empty value
        pairs = ((k, "") for k in labels)
    out = {}
    for k, v in pairs:
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise UsageError(f"invalid label {k!r}: {v!r}", hint="labels are a dict of str to str")
        out[k] = v
    return out


def _restart(policy):
    if not policy:
        return _options.RestartPolicy()
    if not isinstance(policy, dict):
        raise UsageError(f"restart_policy must be a dict, not {policy!r}",
                         hint='e.g. {"Name": "on-failure", "MaximumRetryCount": 3}')
    name = policy.get("Name") or "no"
    count = policy.get("MaximumRetryCount") or 0
    return _options.RestartPolicy.parse(f"{name}:{count}" if count else name)


def _tmpfs(tmpfs):
    if not tmpfs:
        return ()
    if isinstance(tmpfs, dict):  # {"/run": "size=64m"}
        return tuple(f"{path}:{opts}" if opts else str(path) for path, opts in tmpfs.items())
    return tuple(str(t) for t in tmpfs)


def _ulimits(ulimits):
    """docker.types.Ulimit / {"Name", "Soft", "Hard"} dicts (or "name=soft:hard") -> sbx's form."""
    out = []
    for u in ulimits or ():
        if isinstance(u, str):
            out.append(u)
            continue
        get = u.get if isinstance(u, dict) else (lambda k, _u=u: getattr(_u, k.lower(), None))
        name, soft, hard = get("Name"), get("Soft"), get("Hard")
        if not name or soft is None:
            raise UsageError(f"invalid ulimit {u!r}", hint='give {"Name": "nofile", "Soft": 1024, "Hard": 2048}')
        out.append(f"{name}={soft}" + (f":{hard}" if hard is not None else ""))
    return tuple(out)


def _security(security_opt):
    """no-new-privileges[=true|false] and seccomp=default|unconfined|PROFILE.json, as `sbx run`."""
    nnp, seccomp = False, None
    for s in security_opt or ():
        key, sep, value = str(s).partition("=")
        if not sep and ":" in key:
            key, _, value = key.partition(":")
        if key == "no-new-privileges" and value in ("", "true", "false"):
            nnp = value != "false"
        elif key == "seccomp" and value:
            seccomp = value
        else:
            raise UsageError(f"unsupported security_opt {s!r}",
                             hint="supported: no-new-privileges[=true|false], seccomp=default|unconfined|PROFILE.json")
    return nnp, seccomp


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


def _hostname(h):
    if h is None:
        return None
    if (not isinstance(h, str) or not 0 < len(h) <= 64 or not set(h) <= _HOST_CHARS
            or any(not p or p[0] == "-" or p[-1] == "-" for p in h.split("."))):
        raise UsageError(f"invalid hostname {h!r}", hint="letters, digits and '-' in dot-separated labels")
    return h


def _network(mode, image_run):
    """network_mode as `sbx run --network` takes it; an image's default is the private network."""
    if mode in ("none", "host") or (mode is None and not image_run):
        return mode or "none"
    from ..network import modes
    m = modes.resolve(mode, default=mode is None, warn=_warn)
    return m.kind if m.kind in ("none", "host") else m


def _warn(line):
    import warnings
    warnings.warn(line, RuntimeWarning, stacklevel=4)


def _extra_hosts(value):
    """docker-py's extra_hosts: {"name": "ip"} or ["name:ip"]."""
    if isinstance(value, dict):
        return tuple(f"{k}:{v}" for k, v in value.items())
    return tuple(str(v) for v in value or ())


def _ports(ports):
    if not ports:
        return ()
    from ..network import ports as _p
    return tuple(_p.from_docker_py(ports))


#: docker-py's limit arguments and the types it documents for them
LIMITS = {"mem_limit": (int, str), "memswap_limit": (int, str), "mem_reservation": (int, str), "nano_cpus": (int,),
          "cpu_shares": (int,), "cpu_period": (int,), "cpu_quota": (int,), "cpuset_cpus": (str,),
          "cpuset_mems": (str,), "pids_limit": (int,), "blkio_weight": (int,), "oom_kill_disable": (bool,),
          # [{"Path": "/dev/sda", "Rate": 1048576}] (docker-py's), or ["/dev/sda:1mb"] as the flags take them
          **dict.fromkeys(("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops"),
                          (list, tuple))}


def limit_args(limits):
    """docker-py's limit arguments -> options.resources() keywords (Docker's flags), types checked
    (bytes as an int or "64m"; nano_cpus an int: CPUs x 10^9)."""
    from .update import ARG_OF
    out = {}
    for key, value in limits.items():
        if value is None:
            continue
        types = LIMITS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise UsageError(f"{key} must be {' or '.join(t.__name__ for t in types)}, not {value!r}",
                             hint="nano_cpus=1_500_000_000 is 1.5 CPUs" if key == "nano_cpus"
                             else "sizes are bytes (an int) or text such as '64m'" if str in types
                             else '[{"Path": "/dev/sda", "Rate": 1048576}]' if list in types else None)
        out[ARG_OF.get(key, key)] = value
    return out


def resources(**limits):
    """docker-py's limit arguments -> options.Resources, checked as `sbx run` checks the flags,
    and refused (CgroupError, exit 125, `sbx run`'s message) unless this machine enforces them."""
    r = _options.resources(**limit_args(limits))
    if r:
        from ..cgroups import v2
        v2.require(r)
    return r


def run_options(image=None, command=None, *, rootfs=None, detach=True, name=None, environment=None,
                volumes=None, labels=None, init=False, restart_policy=None, user=None, working_dir=None,
                entrypoint=None, tty=False, stdin_open=False, auto_remove=False, read_only=False, cap_add=None,
                cap_drop=None, security_opt=None, tmpfs=None, ulimits=None, hostname=None, network_mode=None,
                stop_signal=None, stop_timeout=None, group_add=None, userns=None, platform=None, pull="missing",
                ports=None, publish_all_ports=False, dns=None, dns_search=None, dns_opt=None, extra_hosts=None,
                **unsupported):
    """docker-py's run()/create() arguments -> RunOptions, every value checked."""
    limits = {k: unsupported.pop(k) for k in builtins.list(unsupported) if k in LIMITS}
    for key, value in unsupported.items():
        if key not in _REFUSED:
            raise TypeError(f"run() got an unexpected keyword argument {key!r}")
        if value not in (None, False, {}, [], (), ""):
            raise UsageError(f"{key}= is not supported: {_REFUSED[key]}")
    if (image is None) == (rootfs is None):
        raise UsageError("give an image or rootfs= (a root filesystem directory), not both" if image is not None
                         else "give an image or rootfs= (a root filesystem directory)")
    if not isinstance(auto_remove, bool) or not isinstance(detach, bool):
        raise UsageError("detach and auto_remove are True or False")
    argv = _words(command, "command") or []
    ep = _words(entrypoint, "entrypoint")
    if ep is not None:  # RunOptions takes one word; the rest of a list entrypoint leads the command
        argv = ep[1:] + argv
        ep = ep[0] if ep else ""
    nnp, seccomp = _security(security_opt)
    return _options.RunOptions(
        argv=tuple(argv), rootfs=None if rootfs is None else os.fspath(rootfs), entrypoint=ep,
        env=tuple(_env(environment)), cwd=working_dir, user=None if user in (None, "") else str(user),
        volumes=_volumes(volumes), tmpfs=_tmpfs(tmpfs), network=_network(network_mode, image is not None), hostname=_hostname(hostname),
        ports=_ports(ports), publish_all=bool(publish_all_ports), dns=tuple(dns or ()),
        dns_search=tuple(dns_search or ()), dns_options=tuple(dns_opt or ()), extra_hosts=_extra_hosts(extra_hosts),
        read_only=bool(read_only), init=bool(init), userns=userns, cap_add=tuple(cap_add or ()),
        cap_drop=tuple(cap_drop or ()), no_new_privileges=nnp, ulimits=_ulimits(ulimits),
        group_add=tuple(str(g) for g in group_add or ()), terminal=bool(tty), seccomp=seccomp, image=image,
        pull=pull, platform=platform, name=name, labels=_labels(labels), detach=detach, auto_remove=auto_remove,
        interactive=bool(stdin_open), restart=_restart(restart_policy),
        stop_signal=_options.stop_signal(stop_signal), stop_timeout=_options.stop_timeout(stop_timeout),
        resources=resources(**limits))


# --- Container ---------------------------------------------------------------------------------------

class Container:
    """A container (docker-py's `Container`): `attrs` is its `inspect` document as of the last
    `reload()` (the verbs below reload it after they act)."""

    def __init__(self, attrs, ctx):
        self.attrs = attrs
        self._ctx = ctx

    def __repr__(self):
        return f"<Container: {self.short_id}>"

    def __eq__(self, other):
        return isinstance(other, Container) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Always removes the container (killed first if it runs)."""
        try:
            self.remove(force=True)
        except NotFound:
            pass
        return False

    id = property(lambda self: self.attrs["Id"])
    short_id = property(lambda self: self.attrs["Id"][:12])
    name = property(lambda self: (self.attrs.get("Name") or "").lstrip("/"))
    status = property(lambda self: self.attrs["State"]["Status"])
    labels = property(lambda self: dict((self.attrs.get("Config") or {}).get("Labels") or {}))
    image = property(lambda self: (self.attrs.get("Config") or {}).get("Image"))  # reference, or rootfs
    ports = property(lambda self: dict((self.attrs.get("NetworkSettings") or {}).get("Ports") or {}))

    def _where(self):
        return lifecycle.store(self._ctx.data_root)

    def _do(self, verb, *args, reload=True, **kw):
        with config.use(self._ctx):
            out = getattr(lifecycle, verb)(self._where(), self.id, *args, **kw)
            if reload:
                self.reload()
        return out

    def reload(self):
        with config.use(self._ctx):
            self.attrs = lifecycle.inspect(self._where(), self.id)

    def start(self):
        self._do("start", runtime_root=self._ctx.runtime_root)

    def stop(self, timeout=None):
        self._do("stop", timeout=timeout)

    def kill(self, signal=None):
        self._do("kill", "KILL" if signal is None else signal)

    def restart(self, timeout=None):
        self._do("restart", timeout=timeout, runtime_root=self._ctx.runtime_root)

    def pause(self):
        """Freeze every process of the container (the cgroup v2 freezer; refused without one)."""
        self._do("pause")

    def unpause(self):
        self._do("unpause")

    def stats(self, decode=None, stream=True, one_shot=None):
        """docker-py's: Docker's stats document (cpu_stats, precpu_stats, memory_stats, pids_stats,
        blkio_stats, networks...).  `stream=True` (docker-py's default): a generator of one a
        second, JSON bytes unless `decode=True`, ending when the container stops; else one dict,
        from two samples a second apart unless `one_shot`.  `doc["sbx"]["source"]` says where
        the figures come from: "cgroup" (the container's own), "proc" (its processes in /proc:
        it has no cgroup) or "none" (it does not run)."""
        from . import stats as _stats
        if decode and not stream:
            raise UsageError("decode is only available in conjunction with stream=True")
        if one_shot and stream:
            raise UsageError("one_shot is only available in conjunction with stream=False")
        with config.use(self._ctx):
            out = _stats.stats(self._where(), self.id, stream=bool(stream), one_shot=bool(one_shot))
        if not stream:
            return out
        if decode:
            return out
        import json
        return (json.dumps(doc).encode() + b"\n" for doc in out)

    def update(self, blkio_weight=None, cpu_period=None, cpu_quota=None, cpu_shares=None, cpuset_cpus=None,
               cpuset_mems=None, mem_limit=None, mem_reservation=None, memswap_limit=None, kernel_memory=None,
               restart_policy=None, nano_cpus=None, pids_limit=None):
        """docker-py's `update`: new limits (merged into the container's) and restart policy,
        running or not; a running container's cgroup gets them at once.  Refused as `sbx update`
        refuses (CgroupError, exit 125) where this machine cannot enforce them.  nano_cpus and
        pids_limit are the Engine API's (docker-py's update lacks them)."""
        from . import update as _update
        if kernel_memory is not None:
            raise UsageError(f"kernel_memory= is not supported: {_REFUSED['kernel_memory']}")
        args = limit_args(dict(blkio_weight=blkio_weight, cpu_period=cpu_period, cpu_quota=cpu_quota,
                               cpu_shares=cpu_shares, cpuset_cpus=cpuset_cpus, cpuset_mems=cpuset_mems,
                               mem_limit=mem_limit, mem_reservation=mem_reservation, memswap_limit=memswap_limit,
                               nano_cpus=nano_cpus, pids_limit=pids_limit))
        if not args and restart_policy is None:
            raise UsageError("update() needs a limit or restart_policy", hint="e.g. c.update(mem_limit='256m')")
        change = _update.Change.parse(args, None if restart_policy is None else _restart(restart_policy))
        with config.use(self._ctx):
            _update.update(self._where(), self.id, change)
            self.reload()
        return {"Warnings": []}

    def rename(self, name):
        self._do("rename", name)

    def remove(self, v=False, link=False, force=False):
        """`v`: there are no anonymous volumes to remove; `link`: no links (issue 11)."""
        if link:
            raise UsageError(f"link=True: there are no links to remove ({_ISSUE_11})")
        self._do("remove", force=force, reload=False)

    def wait(self, timeout=None, condition="not-running"):
        """Block until the container stops (`not-running`), exits next (`next-exit`) or is removed
        (`removed`): {"StatusCode": code, "Error": None}.  WaitTimeout after `timeout` seconds."""
        if timeout is None:
            return {"StatusCode": self._do("wait", condition=condition, reload=False), "Error": None}
        if condition not in ("not-running", "next-exit", "removed"):
            raise UsageError(f"invalid condition: {condition!r}", hint="not-running, next-exit or removed")
        where = self._where()
        first = where.get(self.id)
        began = (first.state.get("StartedAt"), first.state.get("FinishedAt"))
        deadline = time.monotonic() + timeout
        interval = 0.02
        while True:
            rec = where.load(self.id)
            if rec is None:
                return {"StatusCode": first.state.get("ExitCode", 0), "Error": None}
            first = rec
            if condition != "removed" and rec.status not in _state.ACTIVE and (
                    condition == "not-running" or (rec.state.get("StartedAt"), rec.state.get("FinishedAt")) != began):
                return {"StatusCode": rec.state.get("ExitCode", 0), "Error": None}
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for container {self.name} ({condition}); "
                                  f"it is {rec.status}")
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 0.2)

    def top(self, ps_args=None):
        """{"Titles": [...], "Processes": [[...], ...]}, as `docker top`."""
        from . import top
        if isinstance(ps_args, str):
            ps_args = ps_args.split()
        with config.use(self._ctx):
            return top.top(self._where(), self.id, ps_args or None)

    def put_archive(self, path, data):
        """Extract the tar archive `data` (bytes or a binary file) into directory `path`."""
        from . import files
        with config.use(self._ctx):
            files.put_archive(self._where(), self.id, path, data)
        return True

    def get_archive(self, path, chunk_size=2 * 1024 * 1024):
        """(an iterator of the tar of `path` in `chunk_size` pieces, the stat of `path` as Docker's
        X-Docker-Container-Path-Stat header gives it)."""
        from . import files
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise UsageError(f"chunk_size must be a number of bytes > 0, not {chunk_size!r}")
        with config.use(self._ctx):
            stream, stat = files.get_archive(self._where(), self.id, path)
        return _rechunk(stream, chunk_size), stat

    def diff(self):
        """The changes the container made to its image, as docker-py's: [{"Path": ..., "Kind": 0
        changed, 1 added, 2 deleted}]."""
        from . import files
        with config.use(self._ctx):
            return [{"Path": p, "Kind": files.CHANGE_KINDS[k]} for k, p in files.changes(self._where(), self.id)]

    def export(self, chunk_size=2 * 1024 * 1024):
        """The container's whole filesystem as a tar (docker-py's `export`): an iterator of
        `chunk_size`-byte pieces.  It is written by a thread into a pipe; closing the iterator
        early ends the writer."""
        from . import files
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise UsageError(f"chunk_size must be a number of bytes > 0, not {chunk_size!r}")
        self.reload()  # a container that is gone fails here, not at the first chunk
        r, w = os.pipe()
        failed = []

        def write():
            try:
                with config.use(self._ctx):
                    files.export(self._where(), self.id, w)
            except BrokenPipeError:
                pass  # the reader stopped early
            except BaseException as e:
                failed.append(e)
            finally:
                os.close(w)
        writer = threading.Thread(target=write, daemon=True, name=f"sbx export of {self.name}")
        writer.start()

        def chunks():
            with os.fdopen(r, "rb") as f:
                while True:
                    data = f.read(chunk_size)
                    if not data:
                        break
                    yield data
            writer.join()
            if failed:
                raise failed[0]
        return chunks()

    def commit(self, repository=None, tag=None, message=None, author=None, changes=None, conf=None, pause=True):
        """A new image from the container's changes (docker-py's `commit`; `changes`: Dockerfile
        instructions as `sbx commit -c` takes them).  Returns the image's id.  A running
        container is refused, as `sbx commit` refuses it (there is no pause-and-copy)."""
        from .commit import commit_container
        if conf is not None:
            raise UsageError("commit(conf=...) is not supported", hint="give the settings as changes=['CMD [...]', ...]")
        if tag and not repository:
            raise UsageError("commit(tag=...) needs a repository")
        name = f"{repository}:{tag}" if tag else repository
        changes = [changes] if isinstance(changes, str) else builtins.list(changes or ())
        with config.use(self._ctx):
            rec = self._where().get(self.id)
            if rec.running:
                raise UsageError(f"container {rec.name} is running", hint="commit it after it exits")
            return commit_container(rec, name, message=message, author=author, changes=changes).id

    # -- logs --

    def logs(self, stdout=True, stderr=True, stream=False, timestamps=False, tail="all", since=None,
             follow=None, until=None):
        """The container's output, stdout and stderr interleaved in the order written: bytes, or
        with `stream=True` an iterator of chunks (following new output unless `follow=False`).
        `tail`: "all" or a number of lines; `since`/`until`: datetime, or seconds since the epoch."""
        from . import logs as _logs
        if follow is None:
            follow = stream
        if tail != "all" and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
            raise UsageError(f"tail must be 'all' or a number of lines >= 0, not {tail!r}")
        wanted = {"stdout"} if stdout else set()
        if stderr:
            wanted.add("stderr")

        since, until = _epoch(since, "since"), _epoch(until, "until")
        with config.use(self._ctx):
            where = self._where()
            path = where.get(self.id).path(_logs.LOG)

        def running():
            rec = where.load(self.id)
            return rec is not None and rec.status in _state.ACTIVE

        def gen():
            for s, ts, data in _logs.read(path, tail=None if tail == "all" else tail, since=since, until=until,
                                          follow=follow, running=running):
                if s in wanted:
                    yield (ts.encode() + b" " + data) if timestamps else data
        return gen() if stream else b"".join(gen())

    # -- exec --

    def exec_run(self, cmd, stdout=True, stderr=True, stdin=False, tty=False, privileged=False, user="",
                 detach=False, stream=False, socket=False, environment=None, workdir=None, demux=False,
                 timeout=None):
        """Run `cmd` in the running container: ExecResult(exit_code, output).  `demux=True` gives
        output as (stdout, stderr); `stream=True` an iterator of chunks (exit_code None);
        `detach=True` returns at once (ExecResult(None, b''))."""
        if socket:
            raise UsageError("exec_run(socket=True) is not supported: sbx has no daemon socket to hand out",
                             hint="use stream=True for the output")
        if stdin:
            raise UsageError("exec_run(stdin=True) is not supported: there is no socket to write to",
                             hint="put input in a file (put_archive) or in the command itself")
        if privileged:
            raise UsageError(f"exec_run(privileged=True) is not supported: {_REFUSED['privileged']}")
        argv = _words(cmd, "cmd")
        if not argv:
            raise UsageError("exec_run needs a command")
        opts = _options.ExecOptions(argv=tuple(argv), env=tuple(_env(environment)), cwd=workdir or None,
                                    user=None if user in (None, "") else str(user), terminal=bool(tty),
                                    detach=bool(detach), privileged=bool(privileged))
        return _Exec(self, opts, stdout, stderr, stream, demux, timeout).result()


def _epoch(value, what):
    """since/until as docker-py takes them: a datetime, or seconds since the epoch."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise UsageError(f"{what} must be a datetime or seconds since the epoch, not {value!r}")


def _rechunk(chunks, size):
    """An iterator of bytes -> one of `size`-byte pieces (the last one shorter), as docker-py
    yields an archive; closing it early closes `chunks` (which stops the copier)."""
    buf = bytearray()
    try:
        for c in chunks:
            buf += c
            while len(buf) >= size:
                yield bytes(buf[:size])
                del buf[:size]
        if buf:
            yield bytes(buf)
    finally:
        getattr(chunks, "close", lambda: None)()


class _Exec:
    """One exec_run.  The process is launched and reaped by a thread of its own: a sandbox dies
    with the thread that started it, and the supervisor holds signals in its thread, so neither
    touches the caller's thread (a detached exec lives on after exec_run returns).  Its output
    comes through pipes: one for both streams unless demux, so their order is kept."""

    def __init__(self, container, opts, stdout, stderr, stream, demux, timeout):
        self.c, self.opts, self.stream, self.demux, self.timeout = container, opts, stream, demux, timeout
        self.want = (bool(stdout), bool(stderr))
        self.proc = None
        self.tty = -1
        self.code = None
        self.error = None
        self.launched = threading.Event()
        self.reaped = threading.Event()

    def result(self):
        child, mine = self._pipes()
        try:
            threading.Thread(target=self._supervise, args=(child,), daemon=True,
                             name=f"sbx exec in {self.c.name}").start()
            self.launched.wait()
        finally:
            for fd in set(child):
                os.close(fd)
        if self.error is not None:
            for fd in mine:
                os.close(fd)
            raise self.error
        if self.tty >= 0:
            mine = [self.tty]  # a terminal: its output is the pty's, stdout only (as Docker's)
        if self.opts.detach:
            for fd in mine:
                os.close(fd)
            return ExecResult(None, b"")
        if self.stream:
            return ExecResult(None, self._stream(mine))
        out = self._collect(mine)
        self.reaped.wait()
        return ExecResult(self.code, out)

    def _supervise(self, child):
        try:
            with config.use(self.c._ctx):
                self.proc = lifecycle.exec(self.c._where(), self.c.id, self.opts, stdio=child)
        except BaseException as e:
            self.error = e
            self.launched.set()
            return
        if self.opts.terminal and not self.opts.detach:
            self.tty = os.dup(self.proc.pty_master)
        self.launched.set()
        try:
            self.code = self.proc.wait(forward=())
        finally:
            self.proc.close()
            self.reaped.set()

    def _pipes(self):
        """(stdin, stdout, stderr) for the exec, and our read ends: [merged] or [out, err]."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        want_out, want_err = self.want
        if self.opts.detach or self.opts.terminal:
            return (null, null, null), []
        if not self.demux:
            r, w = os.pipe2(os.O_CLOEXEC)
            return (null, w if want_out else null, w if want_err else null), [r]
        ro, wo = os.pipe2(os.O_CLOEXEC)
        re_, we = os.pipe2(os.O_CLOEXEC)
        return (null, wo if want_out else null, we if want_err else null), [ro, re_]

    def _reads(self, fds, deadline):
        """(fd index, bytes) as output arrives, until every pipe is closed; at the deadline the
        exec is killed and WaitTimeout raised."""
        import selectors
        sel = selectors.DefaultSelector()
        for i, fd in enumerate(fds):
            sel.register(fd, selectors.EVENT_READ, i)
        finished = False
        try:
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"exec {' '.join(self.opts.argv)!r} in container {self.c.name} did not "
                                      f"finish within {self.timeout:g}s")
                for key, _ in sel.select(left):
                    try:
                        b = os.read(key.fd, 65536)
                    except OSError as e:  # a pty master once its last process is gone
                        if e.errno != errno.EIO:
                            raise
                        b = b""
                    if b:
                        yield key.data, b
                    else:
                        sel.unregister(key.fd)
            finished = True
        finally:
            sel.close()
            for fd in fds:
                os.close(fd)
            if not finished:
                self.proc.kill()  # given up on: a timeout, an interrupt, a stream closed early

    def _collect(self, fds):
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        bufs = [[] for _ in fds]
        try:
            for i, b in self._reads(fds, deadline):
                bufs[i].append(b)
        except WaitTimeout as e:
            out = b"".join(b"".join(v) for v in bufs).decode("utf-8", "replace")
            self.reaped.wait()
            raise WaitTimeout(f"{e}; output so far:\n{out[-2000:]}", last_output=out) from None
        parts = [b"".join(v) for v in bufs]
        if len(parts) == 1:
            return parts[0]
        return tuple(p if w else None for p, w in zip(parts, self.want))

    def _stream(self, fds):
        reads = self._reads(fds, None)
        try:
            for i, b in reads:
                yield ((b, None) if i == 0 else (None, b)) if self.demux else b
        finally:
            reads.close()  # kills the exec if the caller stopped reading early
            self.reaped.wait()


# --- the collection: run, create, get, list, prune --------------------------------------------------

def _ctx():
    return config.current()


def _container(ctx, ref):
    with config.use(ctx):
        return Container(container_doc(lifecycle.store(ctx.data_root).get(ref)), ctx)


def _create(ctx, opts):
    """The record of a new container (status created); an image is pulled per `opts.pull` and
    unpacked first."""
    with config.use(ctx):
        root = None
        if opts.image is not None:
            from ..runtime import image_root
            root = image_root.prepare(opts.image, pull=opts.pull, platform=opts.platform, userns=opts.userns)
        return lifecycle.create(lifecycle.store(ctx.data_root), opts, image=root)


def create(image=None, command=None, **kwargs):
    """A new container, not started (status created): `run`'s arguments."""
    kwargs.pop("detach", None)
    ctx = _ctx()
    rec = _create(ctx, run_options(image, command, **kwargs))
    return Container(container_doc(rec), ctx)


def run(image=None, command=None, *, rootfs=None, detach=True, stdout=True, stderr=False, remove=False,
        stream=False, **kwargs):
    """Create and start a container (docker-py's `containers.run`).  With `detach=True` (the
    default) returns the running `Container`.  With `detach=False` waits for it and returns its
    output (stdout; `stderr=True` adds stderr), or with `stream=True` an iterator of it; a
    non-zero exit raises `ContainerError` carrying the exit status and the stderr.  `remove`
    removes it afterwards (with `detach=True` it means `auto_remove`).  A container that fails
    to start is kept (created, its error recorded), as Docker's, unless it was to be removed."""
    if detach and remove:
        kwargs["auto_remove"] = True
    elif not detach and kwargs.get("auto_remove"):
        kwargs["auto_remove"], remove = False, True  # removed once its output and status are read
    opts = run_options(image, command, rootfs=rootfs, detach=True, **kwargs)
    ctx = _ctx()
    rec = _create(ctx, opts)
    with config.use(ctx):
        where = lifecycle.store(ctx.data_root)
        try:
            rec = lifecycle.run_detached(where, rec, runtime_root=ctx.runtime_root)
        except BaseException:
            if remove:
                try:
                    lifecycle.remove(where, rec.id, force=True)
                except SandboxError:
                    pass
            raise
    c = Container(container_doc(rec), ctx)
    if detach:
        return c
    out = _wait_output(c, " ".join(opts.argv), image if image is not None else rootfs, stdout, stderr, remove)
    return out if stream else b"".join(out)


def _wait_output(c, command, image, stdout, stderr, remove):
    """The output of a container run in the foreground (follows it to its exit), then its exit
    status checked and the container removed (`remove`), as docker-py's run(detach=False)."""
    done = False
    try:
        yield from c.logs(stdout=stdout, stderr=stderr, stream=True, follow=True)
        code = c.wait()["StatusCode"]
        err = c.logs(stdout=False, stderr=True) if code != 0 else None
        done = True
    finally:
        if remove:
            try:
                c.remove(force=not done)
            except NotFound:
                pass
    if code != 0:
        raise ContainerError(c, code, command, image, err)


def get(container_id):
    """The container with this name, id or unique id prefix; NotFound if there is none."""
    return _container(_ctx(), container_id)


def _filter_items(filters):
    """docker-py's filters ({"label": "a=1"} or {"label": ["a=1", "b"]}) -> ["label=a=1", ...],
    the form the engine's filter parsers check."""
    items = []
    for key, values in (filters or {}).items():
        values = [values] if isinstance(values, (str, int, float)) else values
        items.extend(f"{key}={v}" for v in values)
    return items


def _list(all=False, before=None, filters=None, limit=-1, since=None, sparse=False, ignore_removed=False):
    """Containers, newest first: running ones, or every one with `all=True` (or a `limit` > 0,
    a status filter, `before` or `since`), as Docker's `ps`.  `filters`: id, name, label, status,
    ancestor, exited, before, since; a value or a list of values each (Docker's rules: values of
    one key OR, labels AND, different keys AND)."""
    from . import filters as _filters
    items = _filter_items(filters) + [f"{k}={v}" for k, v in (("before", before), ("since", since)) if v]
    f = _filters.check(items)
    ctx = _ctx()
    with config.use(ctx):
        where = lifecycle.store(ctx.data_root)
        recs = _filters.select(where.list(), f, all_=bool(all), limit=limit if limit is not None else -1, store=where)
        return [Container(container_doc(rec), ctx) for rec in recs]


def prune(filters=None):
    """Remove every container that does not run (created, exited, dead) and matches `filters`
    (label, label!, until): {"ContainersDeleted": [ids] or None, "SpaceReclaimed": bytes}."""
    from . import pruning
    ctx = _ctx()
    with config.use(ctx):
        ids, reclaimed = pruning.containers(_filter_items(filters), store=lifecycle.store(ctx.data_root))
    return {"ContainersDeleted": builtins.list(ids) or None, "SpaceReclaimed": reclaimed}


list = _list
