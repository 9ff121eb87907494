"""Start a plan through the one native launcher and turn a failed step into a SandboxError
that names the step and the path and says how to fix it."""
import errno as E
import os

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
          "install the seccomp filter", "launcher")

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
                                                      "close file descriptors", "allocate the pty"):
        return "the seccomp profile blocks a call the launcher needs after it is installed: allow it in the profile"
    if stage == "start init":
        return "reinstall sbx: the sbx-init binary next to the package is missing"
    return None


def start(spec, **plan_options):
    """Compile `spec` and launch it; returns (pid, pidfd).  When the kernel refuses the overlay
    and fuse-overlayfs is installed, switch to it (and remember that) and try once more."""
    from . import overlay, plan as _plan
    drv = overlay.driver() if spec["root"]["path"] != "/" else "kernel"
    p = _plan.compile(spec, overlay_driver=drv, **plan_options)
    try:
        return spawn(p)
    except LaunchError as e:
        if p.setns:
            raise
        if not (drv == "kernel" and e.stage == "mount" and str(e).startswith("mount overlay")
                and e.errno in (E.EINVAL, E.EPERM, E.ENODEV, E.EOPNOTSUPP) and overlay.fuse_overlayfs()):
            raise
    overlay.remember_kernel_refused()
    return spawn(_plan.compile(spec, overlay_driver="fuse", **plan_options))


def spawn(plan):
    """Launch; returns (pid, pidfd).  Raises LaunchError (or CommandNotFound/NotExecutable)."""
    try:
        try:
            return _native.spawn(plan)
        finally:
            for fd, _ in plan.setns:  # namespaces joined by exec: the child has them now
                os.close(fd)
            plan.setns = []
    except _native.ChildError as e:
        stage = STAGES[e.stage] if 0 <= e.stage < len(STAGES) else f"step {e.stage}"
        err = e.errno
        cmd = os.fsdecode(plan.argv[0]) if plan.argv else "?"
        if stage == "exec" and err in (E.ENOENT, E.ENOTDIR):
            raise CommandNotFound(f"{cmd}: executable file not found in $PATH" if "/" not in cmd
                                  else f"{cmd}: no such file or directory",
                                  stage=stage, errno=err) from None
        if stage == "exec" and err in (E.EACCES, E.ENOEXEC, E.EISDIR, E.EPERM):
            raise CommandNotExecutable(f"{cmd}: permission denied" if err != E.ENOEXEC
                                       else f"{cmd}: exec format error", stage=stage, errno=err) from None
        what = ""
        if stage == "mount" and 0 <= e.op < len(plan.op_names):
            what = plan.op_names[e.op]
        elif stage == "chdir to working directory":
            what = os.fsdecode(plan.cwd)
        if stage in ("newuidmap", "newgidmap") and e.detail:
            msg = f"{stage} failed: {e.detail}"
        elif stage == "clone":
            msg = f"cannot create the sandbox's namespaces: {os.strerror(err)}"
        else:
            msg = f"{stage}{' ' + what if what else ''}: {os.strerror(err)}"
        raise LaunchError(msg, hint=_hint(stage, err, what, plan), stage=stage, errno=err) from None
