"""The OCI hooks (config.json `hooks`): each entry's `path` run with its `args` and exactly its
`env`, the container's state JSON on stdin, killed after its `timeout` seconds.

When they run (runtime-spec runtime.md "Lifecycle"), as placed on the engine's two-phase launch:
    prestart, createRuntime   create, the process held in its new namespaces (a launch hook);
                              in the runtime's namespaces
    createContainer           right after, in the container's namespaces (user, mount, ...)
    startContainer            start, before the FIFO is written; its path is the container's
                              (the image's program), so it runs as the container's process
                              would (runtime._run_hook_inside: every namespace, pid included,
                              the leaf, user, capabilities, seccomp)
    poststart                 start, after the FIFO was written; a failure is only logged
    poststop                  delete, after the container is gone; a failure is only logged"""
import os

from ..runtime.hooks import Hook
from . import jsonc
from .errors import OCIError

NS_ORDER = ("user", "mnt", "uts", "ipc", "net", "cgroup")


def _setns_fn():
    if hasattr(os, "setns"):
        return os.setns
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd, nstype=0):
        if libc.setns(fd, nstype) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    return setns


def _enter(pid):
    """A preexec_fn joining the namespaces of `pid` that differ from ours (files opened here,
    before the fork)."""
    fds = []
    for ns in NS_ORDER:
        try:
            if os.stat(f"/proc/{pid}/ns/{ns}").st_ino == os.stat(f"/proc/self/ns/{ns}").st_ino:
                continue
            fds.append(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            raise OCIError(f"cannot enter the container's {ns} namespace: {e.strerror}") from None
    setns = _setns_fn()

    def preexec():
        for fd in fds:
            setns(fd, 0)
        os.chdir("/")
    return preexec, fds


def run(kind, hook, state, in_container_of=None):
    """Run one hook; raises OCIError naming it when it fails or times out."""
    preexec, fds = (None, [])
    if in_container_of is not None:
        preexec, fds = _enter(in_container_of)
    import subprocess
    name = f"{kind} hook {hook['path']}"
    try:
        p = subprocess.Popen(hook["args"], executable=hook["path"], env=dict(e.split("=", 1) for e in hook["env"]
                                                                              if "=" in e),
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=preexec, close_fds=True)
    except OSError as e:
        raise OCIError(f"{name}: cannot run it: {e.strerror}",
                       hint="hook paths resolve in the runtime's namespaces (startContainer's in the container's)")
    except subprocess.SubprocessError as e:
        raise OCIError(f"{name}: cannot enter the container's namespaces: {e}") from None
    finally:
        for fd in fds:
            os.close(fd)
    try:
        _, err = p.communicate(jsonc.dumps(state).encode(), timeout=hook.get("timeout"))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise OCIError(f"{name}: timed out after {hook['timeout']} s") from None
    if p.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        code = f"signal {-p.returncode}" if p.returncode < 0 else f"status {p.returncode}"
        raise OCIError(f"{name} failed: exit {code}" + (f": {why[0]}" if why else ""))


def run_all(kinds, hooks, state, in_container_of=None):
    for kind in kinds:
        for h in hooks.get(kind, ()):
            run(kind, h, state, in_container_of)


class HeldHooks(Hook):
    """The launch hook (runtime/hooks.py) of create: oomScoreAdj, sysctl and domainname for the
    held child, then prestart + createRuntime, then createContainer hooks, each with the state
    (status "creating", the pid).  Nothing to undo: the caller deletes the container."""
    name = "oci"

    def __init__(self, translation, state_of):
        self.t, self.state_of = translation, state_of

    def attach(self, pid):
        t = self.t
        if t.oom_score_adj is not None:
            with open(f"/proc/{pid}/oom_score_adj", "w") as f:
                f.write(str(t.oom_score_adj))
        writes = dict(t.sysctl)
        if t.domainname is not None:
            writes["kernel.domainname"] = t.domainname
        if writes:
            _sysctl(pid, writes)
        state = self.state_of(pid)
        run_all(("prestart", "createRuntime"), t.hooks, state)
        run_all(("createContainer",), t.hooks, state, in_container_of=pid)

    def teardown(self):
        pass


def _sysctl(pid, writes):
    """Write /proc/sys files as a process in the container's namespaces sees them (net.* and
    kernel.msg* are per namespace: /proc/sys shows the writer's)."""
    preexec, fds = _enter(pid)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(r)
        code = 0
        try:
            preexec()
            for k, v in writes.items():
                if k in ("kernel.hostname", "kernel.domainname"):
                    _set_uts_name(k, v)  # /proc/sys checks the global root for these
                    continue
                with open("/proc/sys/" + k.replace(".", "/"), "w") as f:
                    f.write(v)
        except OSError as e:
            os.write(w, f"{e.filename or ''}: {e.strerror}".encode())
            code = 1
        os._exit(code)
    os.close(w)
    for fd in fds:
        os.close(fd)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise OCIError(f"linux.sysctl: cannot write {msg}")


def _set_uts_name(key, value):
    """sethostname/setdomainname in the uts namespace we joined."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.sethostname if key == "kernel.hostname" else libc.setdomainname
    data = value.encode()
    if fn(data, len(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), key)
