"""The Python API for harnesses: subprocess's interface, with a sandbox around the process.

    sandbox.run(["sh", "-c", "echo hi"], rootfs=R, capture_output=True, text=True)
    with sandbox.Popen(["cat"], rootfs=R, stdin=PIPE, stdout=PIPE) as p: ...

Popen subclasses subprocess.Popen, so pipes, communicate(), timeouts, text mode and the
context manager behave exactly as there; only the step that starts the child is ours.  Every
sandbox keeps its writable layer in its own mount namespace, so nothing is left on the host
when it ends, however it ends.  A signalled sandbox gives returncode -N, as in subprocess.
"""
import os
import subprocess

from . import errors as _errors

from .runtime import spec as _spec_mod
from .runtime.process import SandboxProcess

PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired


class CompletedProcess(subprocess.CompletedProcess):
    def check_returncode(self):
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)


class CalledProcessError(subprocess.CalledProcessError, _errors.SandboxError):
    """subprocess's error, and an sbx error like every other (`except sandbox.SandboxError`)."""
    hint = None

    @property
    def msg(self):
        return str(self)

    @property
    def exit_code(self):
        return self.returncode if self.returncode > 0 else 128 - self.returncode


def _high_fd(fd, tmp):
    """The launcher wants stdio sources at fd >= 3 (dup2 order then never matters)."""
    if fd is None or fd < 0 or fd >= 3:
        return -1 if fd is None else fd
    new = os.dup(fd)
    while new < 3:
        tmp.append(new)
        new = os.dup(fd)
    tmp.append(new)
    return new


class Popen(subprocess.Popen):
    """subprocess.Popen, sandboxed.  Sandbox options are keyword-only; see sandbox.run."""

    def __init__(self, args, *, rootfs=None, image=None, entrypoint=None, pull="missing", platform=None, env=None, cwd=None, user=None, volumes=(), tmpfs=(),
                 network="none", hostname=None, init=False, read_only=False, userns=None,
                 cap_add=(), cap_drop=(), no_new_privileges=False, ulimits=(), group_add=(),
                 pass_fds=(), name=None, namespaces=None, seccomp=None, _spec=None, **popen_kwargs):
        for bad in ("shell", "preexec_fn", "executable", "user", "group", "extra_groups", "umask",
                    "start_new_session", "process_group", "close_fds"):
            if bad in popen_kwargs:
                raise TypeError(f"sandbox.Popen does not take {bad}=")
        if isinstance(args, (str, bytes)):
            args = [args]
        elif args is None:
            args = []  # an image's default command (Entrypoint + Cmd)
        self.container_id = os.urandom(32).hex()
        self._sbx_hold = -1
        root = None
        if image is not None:
            if rootfs is not None:
                raise TypeError("give rootfs= or image=, not both")
            from .runtime import image_root
            root = image_root.prepare(image, pull=pull, platform=platform, userns=userns)
        # Validate and compile everything before any pipe exists: bad input raises here.
        self._sbx_spec = _spec or _spec_mod.build(
            list(args), rootfs=rootfs, image=root, entrypoint=entrypoint, env=env, cwd=cwd, user=user, volumes=volumes, tmpfs=tmpfs,
            network=network, hostname=hostname, read_only=read_only, init=init, userns=userns,
            cap_add=cap_add, cap_drop=cap_drop, no_new_privileges=no_new_privileges,
            ulimits=ulimits, group_add=group_add, container_id=self.container_id, seccomp=seccomp,
            **({"namespaces": tuple(namespaces)} if namespaces is not None else {}))
        self._sbx_pass_fds = tuple(pass_fds)
        self.pidfd = -1
        self._sbx_process = None
        self._sbx_claim = None
        try:
            if root is not None:
                from .runtime import image_root
                self._sbx_hold = image_root.hold(root.image_id)  # rmi refuses it while we run
            if name is not None:
                # A named sandbox is a container held by this process: `sbx ps` shows it,
                # `sbx exec/stop/inspect NAME` find it; it is removed when it ends.
                from .containers import lifecycle
                store = lifecycle.store()
                rec = lifecycle.new_container(store, self._sbx_spec, name=name, command=list(args),
                                              auto_remove=True, foreground=True)
                try:
                    self._sbx_claim = lifecycle.Supervision(store, rec, sync=False)
                except BaseException:
                    store.remove_dir(rec)
                    raise
            super().__init__(args, **popen_kwargs)
        except BaseException:
            self._release()
            raise

    def _release(self):
        """Give back what this sandbox held while running: its name, its image."""
        if self._sbx_hold >= 0:
            os.close(self._sbx_hold)
            self._sbx_hold = -1
        if self._sbx_claim is not None:
            self._sbx_claim.release()
            self._sbx_claim = None

    def exec(self, argv, *, env=None, cwd=None, user=None, **popen_kwargs):
        """Start another process inside this running sandbox (`docker exec`): its namespaces,
        its environment, working directory and user unless given.  Returns a Popen for it."""
        if self.returncode is not None or self.poll() is not None:
            raise _errors.UsageError("the sandbox is not running")
        spec = _spec_mod.build_exec(self._sbx_spec, self.pid, list(argv), env=env, cwd=cwd, user=user)
        return Popen(list(argv), _spec=spec, **popen_kwargs)

    @property
    def spec(self):
        """The runtime description this sandbox was started from (OCI-shaped dict)."""
        return self._sbx_spec

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
                       errread, errwrite, *unused):
        tmp = []
        try:
            stdio = []
            for fd in (p2cread, c2pwrite, errwrite):
                stdio.append(_high_fd(fd, tmp))
            if c2pwrite != -1 and errwrite == c2pwrite:  # stderr=STDOUT
                stdio[2] = stdio[1]
            # subprocess waits and reaps (its wait/poll/communicate); the supervisor launches and
            # tears down.  No signals held: a Python caller's Ctrl-C stays its own.
            p = SandboxProcess.launch(self._sbx_spec, stdio=stdio, keep_fds=self._sbx_pass_fds, hold=())
            self._sbx_process = p
            self.pid, self.pidfd = p.pid, p.pidfd
            self._child_created = True
            p.add_teardown(self._release)
            if self._sbx_claim is not None:
                self._sbx_claim.started(self.pid)
        finally:
            for fd in tmp:
                os.close(fd)
            # The child's ends of the pipes subprocess made (never the caller's own files).
            if p2cread != -1 and p2cwrite != -1 and p2cread != getattr(self, "_devnull", None):
                os.close(p2cread)
            if c2pwrite != -1 and c2pread != -1 and c2pwrite != getattr(self, "_devnull", None):
                os.close(c2pwrite)
            if errwrite != -1 and errread != -1 and errwrite != getattr(self, "_devnull", None):
                os.close(errwrite)
            devnull = getattr(self, "_devnull", None)
            if devnull is not None:
                os.close(devnull)
                del self._devnull
            self._closed_child_pipe_fds = True

    def _handle_exitstatus(self, sts, *args, **kwargs):
        super()._handle_exitstatus(sts, *args, **kwargs)
        p = self._sbx_process
        if p is not None:
            self.pidfd = -1
            p.exited(sts)  # reaped by subprocess: teardowns run (name, image), the pidfd closes
            p.close()

    def __del__(self, *args, **kwargs):
        # subprocess warns about a child still running; a sandbox dies with its parent anyway.
        if getattr(self, "pidfd", -1) >= 0 and self.returncode is None:
            try:
                self.kill()
                self.wait()
            except Exception:
                pass
        if hasattr(self, "_child_created"):
            super().__del__(*args, **kwargs)


def run(argv, *, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """subprocess.run in a sandbox: returns CompletedProcess, raises CalledProcessError with
    check=True and subprocess.TimeoutExpired (after killing the sandbox) on timeout."""
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = kwargs["stderr"] = PIPE
    with Popen(argv, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        except BaseException:
            proc.kill()
            raise
        rc = proc.poll()
    if check and rc:
        raise CalledProcessError(rc, proc.args, output=stdout, stderr=stderr)
    return CompletedProcess(proc.args, rc, stdout, stderr)
