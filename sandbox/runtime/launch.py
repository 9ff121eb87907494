"""Start a plan through the one native launcher and turn a failed step into a SandboxError
that names the step and the path and says how to fix it.

Two ways in:
    launch.start(spec, ...) -> (pid, pidfd)       the fast path: one call, vfork-like clone
    h = launch.create(spec, hooks=(...), wait_start=False, start_dir=None, ...)
        h.pid, h.pidfd                            the child, in its namespaces, held before any mount
        h.release() -> (pid, pidfd)               it goes on: returns once it exec'd, or (wait_start)
                                                  once it waits just before execve
        h.start()                                 wait_start: exec it now (and report its exec)
        h.start_fifo                              wait_start with start_dir: a FIFO another process
                                                  starts it through (launch.start_fifo(path))
        h.abort()                                 kill and reap it, tear the hooks down
Hooks (runtime/hooks.py) run between create and release: `hook.attach(pid)`."""
import errno as E
import os
import stat

from .. import _native
from ..errors import CommandNotExecutable, CommandNotFound, LaunchError

# csrc/sb_launch.h enum sb_stage, in order.
STAGES = ("none", "clone", "reset signals", "set parent-death signal", "wait for id maps",
          "write uid_map", "deny setgroups", "write gid_map", "newuidmap", "newgidmap",
          "make mounts private", "mount", "pivot_root", "sethostname", "bring up loopback",
          "setrlimit", "chdir to working directory", "drop bounding capabilities", "setgroups",
          "setgid", "setuid", "set capabilities", "set no_new_privs", "set up stdio", "setsid",
          "close file descriptors", "start init", "exec", "join namespaces", "allocate the pty",
          "forked", "make the exec process non-dumpable", "join a new session keyring",
          "install the seccomp filter", "launcher", "held", "ready", "enter its cgroup namespace")

USERNS_HINT = ("unprivileged user namespaces look disabled: on Debian/older kernels run "
               "'sysctl -w kernel.unprivileged_userns_clone=1'; on Ubuntu 24.04+ run "
               "'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' or give python an "
               "AppArmor profile with 'userns,'; also check user.max_user_namespaces > 0")


def _hint(stage, err, what, plan):
    if stage == "clone" and err in (E.EPERM, E.EACCES, E.ENOSPC, E.EINVAL, E.EUSERS):
        return USERNS_HINT
    if stage in ("write uid_map", "write gid_map", "deny setgroups") and err in (E.EPERM, E.EACCES):
        return USERNS_HINT
    if stage in ("newuidmap", "newgidmap"):
        if err == E.ENOENT:
            return "install newuidmap/newgidmap (Debian/Ubuntu package uidmap), or use --userns=single"
        return ("check your ranges in /etc/subuid and /etc/subgid (usermod --add-subuids/--add-subgids), "
                "or use --userns=single")
    if stage == "mount" and what.startswith("overlay"):
        return ("the kernel refused overlayfs in a user namespace (needs Linux >= 5.11): install "
                "fuse-overlayfs (and make /dev/fuse usable), use --read-only, or upgrade the kernel")
    if stage == "mount" and what.startswith("fuse-overlayfs"):
        return ("fuse-overlayfs could not mount the root: check that /dev/fuse is readable and writable "
                "by you (mode 0666) and that fuse-overlayfs is installed; or use --read-only")
    if stage == "mount" and what.startswith(("bind mount", "mount point")) and err in (E.ENOENT, E.EROFS):
        if "read-only root" in plan.op_names:
            return "the mount point is missing in a read-only root filesystem: create it there, or drop --read-only"
        return ("the mount point cannot be created: paths resolve inside the container's root, and a "
                "symlink on the way may point to a directory that does not exist there")
    if stage == "mount" and err == E.EPERM and ("proc" in what or "sysfs" in what):
        return "the host hides parts of /proc or /sys (running inside another container?)"
    if stage == "chdir to working directory":
        return "create the directory in the image, or pass -w with an existing path"
    if stage in ("setgroups", "setgid", "setuid"):
        return "the user or group is outside the mapped id range"
    if stage == "join a new session keyring" and err in (E.EDQUOT, E.ENOMEM):
        return ("your key quota is used up (every sandbox holds a session keyring): raise "
                "kernel.keys.maxkeys and kernel.keys.maxbytes, or end other sandboxes")
    if stage == "install the seccomp filter":
        return ("the kernel refused the seccomp program: check the profile given with "
                "--security-opt seccomp=..., or run with --security-opt seccomp=unconfined")
    if plan.seccomp and err == E.EPERM and stage in ("setgroups", "setgid", "setuid", "set capabilities",
                                                      "set no_new_privs", "set up stdio", "setsid",
                                                      "close file descriptors", "allocate the pty", "start init"):
        return "the seccomp profile blocks a call the launcher needs after it is installed: allow it in the profile"
    if stage == "start init":
        return "reinstall sbx: the sbx-init binary next to the package is missing"
    return None


def _overlay_refused(e, drv, p):
    """Whether a failed launch is the kernel refusing the overlay, with fuse-overlayfs there."""
    from . import overlay
    return ((not p.setns or p.userns_kept) and drv == "kernel" and e.stage == "mount" and str(e).startswith("mount overlay")
            and e.errno in (E.EINVAL, E.EPERM, E.ENODEV, E.EOPNOTSUPP) and bool(overlay.fuse_overlayfs()))


def _driver(spec):
    from . import overlay
    return overlay.driver() if spec["root"]["path"] != "/" else "kernel"


def start(spec, **plan_options):
    """Compile `spec` and launch it; returns (pid, pidfd).  When the kernel refuses the overlay
    and fuse-overlayfs is installed, switch to it (and remember that) and try once more."""
    from . import overlay, plan as _plan
    drv = _driver(spec)
    p = _plan.compile(spec, overlay_driver=drv, kept_userns=_kept_userns(spec), **plan_options)
    try:
        got = spawn(p)
        if p.netns_pooled:
            from .keeper import prefetch_netns
            prefetch_netns()  # while the sandbox starts: the next launch makes no namespace
        return got
    except LaunchError as e:
        if not _overlay_refused(e, drv, p):
            raise
    overlay.remember_kernel_refused()
    return spawn(_plan.compile(spec, overlay_driver="fuse", kept_userns=_kept_userns(spec), **plan_options))


def _kept_userns(spec):
    """An fd of the kept user namespace when `spec` maps the full subordinate range the default
    way (runtime/keeper.py): joined instead of running newuidmap/newgidmap per sandbox."""
    if spec["sbx"].get("userns") != "helper":
        return None
    from . import keeper
    return keeper.userns_fd(spec)


def spawn(plan):
    """Launch; returns (pid, pidfd).  Raises LaunchError (or CommandNotFound/NotExecutable)."""
    return _native_call(plan, _native.spawn, plan)


def _native_call(plan, fn, *args):
    """Call the launcher; a ChildError becomes the LaunchError that names the step."""
    try:
        try:
            return fn(*args)
        finally:
            for fd, _ in plan.setns:  # namespaces joined by exec: the child has them now
                os.close(fd)
            plan.setns = []
    except _native.ChildError as e:
        raise _launch_error(e, plan) from None


def _launch_error(e, plan):
    stage = STAGES[e.stage] if 0 <= e.stage < len(STAGES) else f"step {e.stage}"
    err = e.errno
    cmd = os.fsdecode(plan.argv[0]) if plan.argv else "?"
    if stage == "exec" and err in (E.ENOENT, E.ENOTDIR):
        return CommandNotFound(f"{cmd}: executable file not found in $PATH" if "/" not in cmd
                               else f"{cmd}: no such file or directory", stage=stage, errno=err)
    if stage == "exec" and err in (E.EACCES, E.ENOEXEC, E.EISDIR, E.EPERM):
        return CommandNotExecutable(f"{cmd}: permission denied" if err != E.ENOEXEC
                                    else f"{cmd}: exec format error", stage=stage, errno=err)
    what = ""
    if stage == "mount" and 0 <= e.op < len(plan.op_names):
        what = plan.op_names[e.op]
    elif stage == "chdir to working directory":
        what = os.fsdecode(plan.cwd)
    if stage in ("newuidmap", "newgidmap", "launcher") and e.detail:
        msg = f"{stage} failed: {e.detail}"
    elif stage == "clone":
        msg = f"cannot create the sandbox's namespaces: {os.strerror(err)}"
    else:
        msg = f"{stage}{' ' + what if what else ''}: {os.strerror(err)}"
    return LaunchError(msg, hint=_hint(stage, err, what, plan), stage=stage, errno=err)


def create(spec, hooks=(), wait_start=False, start_dir=None, **plan_options):
    """The first phase of a two-phase launch: clone the child into its namespaces (helper-mode
    id maps written), run each hook's attach(pid) while it is held before any mount, and return
    a Launch to release it.  A hook that raises aborts the launch (the child is killed and
    reaped, the hooks attached so far are torn down) and raises LaunchError naming it.

    wait_start: after release the child waits just before execve until started (Launch.start;
    with start_dir, through a FIFO made there that any process of the user can start with
    start_fifo(path): runc's exec.fifo)."""
    h = Launch(spec, tuple(hooks), wait_start, start_dir, plan_options)
    h._create(_driver(spec))
    return h


FIFO_NAME = "start.fifo"


class Launch:
    """A sandbox between create and exec: see create().  `pid` and `pidfd` are the child's (the
    pidfd is the Launch's until release, the caller's to close after)."""

    def __init__(self, spec, hooks, wait_start, start_dir, plan_options):
        self.spec, self.hooks, self.wait_start = spec, hooks, wait_start
        self._opts = plan_options
        self.start_fifo = os.path.join(start_dir, FIFO_NAME) if wait_start and start_dir is not None else None
        self._start_w = -1          # wait_start without a FIFO: our end of the start pipe
        self._handle = None
        self._attached = []
        self.plan = self._driver = None
        self.pid = self.pidfd = -1
        self.state = "new"          # held, waiting (to start), running, gone

    @property
    def clone_mode(self):
        return self.plan.clone_mode

    def _start_channel(self):
        """The child's start fd: the FIFO opened O_RDWR (so opening it never blocks, and a
        starter's O_WRONLY|O_NONBLOCK open finds a reader for as long as the child waits), or
        the read end of a pipe whose write end we keep."""
        if self.start_fifo is None:
            r, self._start_w = os.pipe2(os.O_CLOEXEC)
            return r
        try:
            try:
                os.mkfifo(self.start_fifo, 0o600)
            except FileExistsError:
                pass  # left by a launch retried with fuse-overlayfs, or one that died
            fd = os.open(self.start_fifo, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise LaunchError(f"cannot make the start FIFO {self.start_fifo}: {e.strerror}",
                              hint="start_dir must be an existing directory you can write to",
                              stage="start fifo", errno=e.errno) from None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise LaunchError(f"cannot make the start FIFO {self.start_fifo}: something else is there",
                              stage="start fifo", errno=E.EEXIST)
        os.set_blocking(fd, True)  # the child blocks in read() on it
        return fd

    def _create(self, drv):
        from . import plan as _plan
        self._driver = drv
        self._close_start_w()
        start_fd = self._start_channel() if self.wait_start else -1
        try:
            self.plan = p = _plan.compile(self.spec, overlay_driver=drv, start_fd=start_fd,
                                          kept_userns=_kept_userns(self.spec), **self._opts)
            if self.hooks and p.clone_flags & _plan.CLONE_FLAGS["cgroup"]:
                # A hook may move the child to another cgroup (issue 10): its cgroup namespace
                # is made once it is released, rooted there, not at the cgroup it was cloned in.
                p.clone_flags &= ~_plan.CLONE_FLAGS["cgroup"]
                p.late_unshare |= _plan.CLONE_FLAGS["cgroup"]
            self._handle = _native_call(p, _native.spawn_create, p)
        except BaseException:
            self._discard_channel()
            raise
        finally:
            if start_fd >= 0:
                os.close(start_fd)  # the child has it
        self.pid, self.pidfd = self._handle.pid, self._handle.pidfd
        self.state = "held"
        for hook in self.hooks:
            self._attached.append(hook)  # a hook that fails half-way is torn down too
            try:
                hook.attach(self.pid)
            except BaseException as e:
                if not isinstance(e, Exception):
                    self.abort()
                    raise
                name = getattr(hook, "name", type(hook).__name__)
                err = LaunchError(f"hook {name} failed: {e}", stage=f"hook {name}",
                                  errno=getattr(e, "errno", None), hint=getattr(e, "hint", None))
                h, self._handle = self._handle, None
                h.abort()
                self.state = "gone"
                self._discard_channel()
                _add_teardown_failure(err, self)
                raise err from e

    def release(self):
        """Let the child go on: returns (pid, pidfd) once it exec'd, or with wait_start once it
        waits just before execve.  A failed step raises LaunchError as start() does (the child
        is reaped, the hooks torn down); a kernel that refuses the overlay is retried with
        fuse-overlayfs, hooks attached again to the new child."""
        if self.state != "held":
            raise LaunchError(f"cannot release a launch that is {self.state}", stage="release")
        try:
            pid, pidfd = _native_call(self.plan, self._handle.release)
        except LaunchError as e:
            self._handle = None
            self.state = "gone"
            refused = _overlay_refused(e, self._driver, self.plan)
            if not refused:
                self._discard_channel()
            _add_teardown_failure(e, self)
            if not refused:
                raise
            from . import overlay
            overlay.remember_kernel_refused()
            self._create("fuse")
            return self.release()
        self.pid, self.pidfd = pid, pidfd
        if self.wait_start:
            self.state = "waiting"
        else:
            self.state = "running"
            self._handle = None
        return pid, pidfd

    def start(self):
        """wait_start: exec the waiting child now; returns once it exec'd, raises LaunchError
        (CommandNotFound, ...) when the exec failed (the child is reaped then)."""
        if self.state != "waiting":
            raise LaunchError(f"cannot start a launch that is {self.state}", stage="start")
        if self.start_fifo is not None:
            try:
                start_fifo(self.start_fifo)
            except LaunchError as e:
                if e.errno == E.ENXIO:  # no reader: the child is gone
                    self.abort()
                raise  # ENOENT: started through the FIFO already (wait_exec() reports), or removed
        else:
            try:
                os.write(self._start_w, b"\0")
            except BrokenPipeError:
                self.abort()  # it is gone (killed from outside): reap it, tear the hooks down
                raise LaunchError("cannot start the sandbox: it is no longer waiting", stage="start",
                                  errno=E.EPIPE) from None
            finally:
                self._close_start_w()
        self.wait_exec()

    def wait_exec(self):
        """wait_start, once started (by start(), or by another process through the FIFO): wait
        until the child exec'd.  A failure raises LaunchError and the child is reaped."""
        if self.state != "waiting":
            raise LaunchError(f"cannot wait for the exec of a launch that is {self.state}", stage="start")
        try:
            _native_call(self.plan, self._handle.wait_exec)
        except LaunchError as e:
            self.state = "gone"
            self._handle = None
            self._discard_channel()
            _add_teardown_failure(e, self)
            raise
        self.state = "running"
        self._handle = None
        self._discard_channel()

    def abort(self):
        """Kill and reap a child that has not exec'd yet (held or waiting), tear the hooks down,
        remove the start FIFO.  Idempotent; a running child is left alone."""
        h, self._handle = self._handle, None
        if h is not None and self.state in ("held", "waiting"):
            h.abort()
            self.state = "gone"
        try:
            self.teardown()
        finally:
            self._discard_channel()

    def teardown(self):
        """Tear down every attached hook, last attached first (each one even if another fails;
        the first failure is raised after).  The owner of a running sandbox calls this once it
        has exited."""
        first = None
        while self._attached:
            hook = self._attached.pop()
            try:
                hook.teardown()
            except Exception as e:  # noqa: PERF203 - every hook gets its teardown
                first = first or e
        if first is not None:
            raise first

    def _close_start_w(self):
        if self._start_w >= 0:
            os.close(self._start_w)
            self._start_w = -1

    def _discard_channel(self):
        self._close_start_w()
        if self.start_fifo is not None:
            try:
                os.unlink(self.start_fifo)
            except FileNotFoundError:
                pass

    def __del__(self):
        if getattr(self, "_start_w", -1) >= 0:
            os.close(self._start_w)


def _add_teardown_failure(err, launch):
    """Tear the hooks down after a failed launch; a teardown that fails too is added to the
    launch's error message instead of hiding it."""
    try:
        launch.teardown()
    except Exception as t:  # noqa: BLE001 - reported, not swallowed
        err.msg = f"{err.msg} (and a hook's teardown failed too: {t})"
        err.args = (err.msg,)


def start_fifo(path):
    """Start a sandbox waiting on its start FIFO (made by create(wait_start=True, start_dir=...)),
    from any process of the same user: one byte, then the FIFO is removed (runc's exec.fifo).
    Raises LaunchError when nothing waits there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        why = ("nothing waits on it (the sandbox was started, or is gone)" if e.errno in (E.ENOENT, E.ENXIO)
               else e.strerror)
        raise LaunchError(f"cannot start through {path}: {why}", stage="start", errno=e.errno) from None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise LaunchError(f"cannot start through {path}: not a FIFO", stage="start", errno=E.EINVAL)
        os.write(fd, b"\0")
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
