# cython: language_level=3, boundscheck=False, wraparound=False
"""The native launcher: marshal a launch plan into C and call sb_spawn() without the GIL.

Everything is converted to C strings and arrays here, in the parent, before clone(): the
child (csrc/sb_child.c) never touches Python or allocates.  The bytes objects stay referenced
by the _CPlan holder until sb_spawn() returns, so the char pointers stay valid.
"""
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree
from libc.string cimport memset
from libc.errno cimport errno
from posix.types cimport pid_t

from .includes cimport sb

import os as _os


# Number of launch stages (csrc/sb_launch.h enum sb_stage); runtime/launch.py names them.
STAGE_COUNT = sb.SB_STAGE_COUNT


class ChildError(OSError):
    """A launch step failed; `stage` and `op` say which (sandbox.runtime.stages maps them)."""


cdef char **_cstr_array(list items, list keep) except? NULL:
    cdef size_t n = len(items)
    cdef char **arr = <char **>PyMem_RawCalloc(n + 1, sizeof(char *))
    cdef size_t i
    if arr == NULL:
        raise MemoryError()
    for i in range(n):
        b = items[i]
        keep.append(b)
        arr[i] = <char *>(<bytes>b)
    arr[n] = NULL
    return arr


cdef inline const char *_cstr(object b, list keep):
    if b is None:
        return NULL
    keep.append(b)
    return <const char *>(<bytes>b)


cdef class _CPlan:
    """Owns the C copy of one plan (uvloop's process.pyx keeps its argv/env the same way)."""
    cdef sb.sb_config cfg
    cdef list keep
    cdef sb.sb_op *ops
    cdef sb.sb_rlimit *rlimits
    cdef int *ints
    cdef pid_t *gids
    cdef char **arrays[4]

    def __cinit__(self):
        memset(&self.cfg, 0, sizeof(self.cfg))
        self.keep = []

    def __dealloc__(self):
        PyMem_RawFree(self.ops)
        PyMem_RawFree(self.rlimits)
        PyMem_RawFree(self.ints)
        PyMem_RawFree(self.gids)
        for i in range(4):
            PyMem_RawFree(self.arrays[i])

    cdef int fill(self, plan) except -1:
        cdef sb.sb_config *c = &self.cfg
        cdef list keep = self.keep
        cdef list ops = plan.ops
        cdef Py_ssize_t i, n
        c.clone_flags = plan.clone_flags
        c.late_unshare = plan.late_unshare
        c.userns_mode = plan.userns_mode
        c.uid_map = _cstr(plan.uid_map, keep)
        c.gid_map = _cstr(plan.gid_map, keep)
        if plan.newuidmap is not None:
            self.arrays[0] = _cstr_array(plan.newuidmap, keep)
            self.arrays[1] = _cstr_array(plan.newgidmap, keep)
            c.newuidmap_argv = self.arrays[0]
            c.newgidmap_argv = self.arrays[1]

        n = len(ops)
        self.ops = <sb.sb_op *>PyMem_RawCalloc(n + 1, sizeof(sb.sb_op))
        if self.ops == NULL:
            raise MemoryError()
        for i in range(n):
            kind, flags, src, dst, fstype, data, mflags, mode = ops[i]
            self.ops[i].kind = kind
            self.ops[i].flags = flags
            self.ops[i].src = _cstr(src, keep)
            self.ops[i].dst = _cstr(dst, keep)
            self.ops[i].fstype = _cstr(fstype, keep)
            self.ops[i].data = _cstr(data, keep)
            self.ops[i].data_len = len(data) if data is not None else 0
            self.ops[i].mflags = mflags
            self.ops[i].mode = mode
        c.ops = self.ops
        c.n_ops = n

        setns = plan.setns
        keep_fds = plan.keep_fds
        n = len(setns) * 2 + len(keep_fds)
        self.ints = <int *>PyMem_RawCalloc(n + 1, sizeof(int))
        if self.ints == NULL:
            raise MemoryError()
        for i in range(len(setns)):
            self.ints[i] = setns[i][0]
            self.ints[len(setns) + i] = setns[i][1]
        for i in range(len(keep_fds)):
            self.ints[2 * len(setns) + i] = keep_fds[i]
        c.setns_fds = self.ints
        c.setns_types = self.ints + len(setns)
        c.n_setns = len(setns)
        c.keep_fds = self.ints + 2 * len(setns)
        c.n_keep_fds = len(keep_fds)

        c.newroot = _cstr(plan.newroot, keep)
        c.hostname = _cstr(plan.hostname, keep)
        c.loopback_up = plan.loopback
        self.arrays[2] = _cstr_array(plan.argv, keep)
        self.arrays[3] = _cstr_array(plan.envp, keep)
        c.argv = self.arrays[2]
        c.envp = self.arrays[3]
        c.path = _cstr(plan.path, keep)
        c.cwd = _cstr(plan.cwd, keep)
        c.mkdir_cwd = plan.mkdir_cwd

        ids = plan.ids
        if ids is not None:
            uid, gid, groups = ids
            c.set_ids = 1
            c.uid = uid
            c.gid = gid
            if groups is not None:
                c.set_groups = 1
                self.gids = <pid_t *>PyMem_RawCalloc(len(groups) + 1, sizeof(pid_t))
                if self.gids == NULL:
                    raise MemoryError()
                for i in range(len(groups)):
                    self.gids[i] = groups[i]
                c.groups = <const sb.gid_t *>self.gids
                c.n_groups = len(groups)
        if plan.caps is not None:
            c.set_caps = 1
            c.caps = plan.caps
        c.cap_last = plan.cap_last
        c.no_new_privs = plan.no_new_privs
        c.die_with_parent = plan.die_with_parent

        rl = plan.rlimits
        self.rlimits = <sb.sb_rlimit *>PyMem_RawCalloc(len(rl) + 1, sizeof(sb.sb_rlimit))
        if self.rlimits == NULL:
            raise MemoryError()
        for i in range(len(rl)):
            self.rlimits[i].resource = rl[i][0]
            self.rlimits[i].limit.rlim_cur = rl[i][1]
            self.rlimits[i].limit.rlim_max = rl[i][2]
        c.rlimits = self.rlimits
        c.n_rlimits = len(rl)

        c.stdio[0], c.stdio[1], c.stdio[2] = plan.stdio
        c.setsid = plan.setsid
        c.ctty = plan.ctty
        c.console_socket = plan.console_socket
        c.console_rows, c.console_cols = plan.console_size
        c.init_fd = plan.init_fd
        c.new_keyring = plan.new_keyring
        filt = plan.seccomp
        if filt:
            if len(filt) % 8 or len(filt) // 8 > 4096:
                raise ValueError("a seccomp program is 1 to 4096 instructions of 8 bytes")
            keep.append(filt)
            c.seccomp_filter = <const void *>(<const char *>(<bytes>filt))
            c.seccomp_len = len(filt) // 8
        c.start_fd = plan.start_fd
        c.hold_fd = plan.hold_fd
        return 0


cdef object _child_error(sb.sb_error *err):
    e = ChildError(err.err, _os.strerror(err.err))
    e.stage = err.stage
    e.op = err.op
    e.detail = err.msg.decode("utf-8", "replace")
    return e


def spawn(plan):
    """Start `plan` in a new sandbox.  Returns (pid, pidfd); pidfd is -1 on old kernels.

    Raises ChildError (an OSError whose errno picks the subclass: FileNotFoundError,
    PermissionError, ...) with `stage`, `op` and `detail` when a launch step fails.
    """
    cdef _CPlan cp = _CPlan()
    cdef sb.sb_result res
    cdef sb.sb_error err
    cdef int rc
    cp.fill(plan)
    with nogil:
        rc = sb.sb_spawn(&cp.cfg, &res, &err)
    plan.clone_mode = "vfork" if res.vfork else "fork"
    if rc < 0:
        raise _child_error(&err)
    return res.pid, res.pidfd


cdef class SpawnHandle:
    """A launch between clone() and execve (csrc/sb_spawn.c sb_spawn_create).

    Created: the child is in its new namespaces with its id maps written and waits on a sync
    pipe before any mount (`state` "held").  `release()` lets it go on and returns (pid, pidfd)
    once it exec'd, or, with a start fd in the plan, once it is ready and blocked just before
    execve ("waiting"); then `wait_exec()` collects the exec's result after the start byte.
    `abort()` kills and reaps a held or waiting child.  Dropping a held handle aborts it.
    """
    cdef sb.sb_handle h
    cdef _CPlan cp
    cdef readonly pid_t pid
    cdef readonly str clone_mode

    def __cinit__(self):
        memset(&self.h, 0, sizeof(self.h))
        self.h.state = sb.SB_HANDLE_DONE
        self.h.pidfd = self.h.report_r = self.h.sync_w = self.h.pid_r = -1

    def __dealloc__(self):
        sb.sb_spawn_close(&self.h)

    @property
    def pidfd(self):
        """The handle's own pidfd while held or waiting (-1 after, or without CLONE_PIDFD)."""
        return self.h.pidfd

    @property
    def state(self):
        return ("done", "held", "waiting")[self.h.state]

    def release(self):
        """Let the held child go on; returns (pid, pidfd), the pidfd the caller's to close."""
        cdef sb.sb_result res
        cdef sb.sb_error err
        cdef int rc
        with nogil:
            rc = sb.sb_spawn_release(&self.h, &res, &err)
        if rc < 0:
            raise _child_error(&err)
        return res.pid, res.pidfd

    def wait_exec(self):
        """After the start byte: wait until the child exec'd; raises ChildError if it failed
        (the child is reaped then)."""
        cdef sb.sb_error err
        cdef int rc
        with nogil:
            rc = sb.sb_spawn_wait_exec(&self.h, &err)
        if rc < 0:
            raise _child_error(&err)

    def abort(self):
        """Kill and reap a held or waiting child; close the handle.  Idempotent."""
        with nogil:
            sb.sb_spawn_abort(&self.h)

    def close(self):
        """Close the handle's fds (a child never released is killed and reaped)."""
        with nogil:
            sb.sb_spawn_close(&self.h)


def spawn_create(plan):
    """The first phase of a two-phase launch: returns a SpawnHandle with the child held.
    Raises ChildError as spawn() does."""
    cdef SpawnHandle h = SpawnHandle.__new__(SpawnHandle)
    cdef sb.sb_error err
    cdef int rc
    h.cp = _CPlan()
    h.cp.fill(plan)
    with nogil:
        rc = sb.sb_spawn_create(&h.cp.cfg, &h.h, &err)
    if rc < 0:
        raise _child_error(&err)
    h.pid = h.h.pid
    h.clone_mode = plan.clone_mode = "vfork" if h.h.vfork else "fork"
    return h


def wait_forward(pid_t pid, signals):
    """Wait for `pid`, forwarding `signals` to it; returns the raw wait status."""
    cdef int sigs[64]
    cdef int status = 0
    cdef size_t n = 0
    cdef int rc
    for s in signals:
        if n < 64:
            sigs[n] = s
            n += 1
    with nogil:
        rc = sb.sb_wait_forward(pid, sigs, n, &status)
    if rc < 0:
        raise OSError(errno, _os.strerror(errno))
    return status


def open_in_root(int rootfd, path, int flags=_os.O_PATH, unsigned int mode=0o644):
    """Open `path` inside the tree at `rootfd`: symlinks and ".." resolve inside it
    (csrc/sb_inroot.c: openat2 RESOLVE_IN_ROOT, or a safe walk).  Returns a new fd."""
    cdef bytes b = _os.fsencode(path)
    cdef const char *c = b
    cdef int fd
    with nogil:
        fd = sb.sb_open_in_root(rootfd, c, flags, mode)
    if fd < 0:
        raise OSError(errno, _os.strerror(errno), _os.fsdecode(path))
    return fd


def mkdirs_in_root(int rootfd, path, unsigned int mode=0o755):
    """mkdir -p of `path` inside the tree at `rootfd`; returns an O_PATH fd of the directory."""
    cdef bytes b = _os.fsencode(path)
    cdef const char *c = b
    cdef int fd
    with nogil:
        fd = sb.sb_mkdirs_in_root(rootfd, c, mode)
    if fd < 0:
        raise OSError(errno, _os.strerror(errno), _os.fsdecode(path))
    return fd


def inroot_force_walk(bint on):
    """Tests: resolve with the user-space walk even where the kernel has openat2."""
    sb.sb_inroot_force_walk(on)



cdef extern from "<sys/syscall.h>" nogil:
    long syscall(long number, ...)
    const long SYS_pidfd_getfd


def pidfd_getfd(int pidfd, int targetfd):
    """A close-on-exec duplicate of fd `targetfd` of the process behind `pidfd` (pidfd_getfd(2):
    needs ptrace access to it).  Returns the new fd."""
    cdef long fd
    with nogil:
        fd = syscall(SYS_pidfd_getfd, pidfd, targetfd, 0)
    if fd < 0:
        raise OSError(errno, _os.strerror(errno))
    return fd

include "_diff.pxi"

include "_seccomp.pxi"
