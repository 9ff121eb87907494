# Seccomp: the Cython side of csrc/sb_seccomp.c, included at the end of _native.pyx.
#
# sandbox/runtime/seccomp.py resolves a profile into flat rules; seccomp_compile() copies them into
# C arrays (the name bytes stay referenced in `keep`) and runs libseccomp without the GIL.
from libc.stdint cimport uint32_t
from libc.stdlib cimport free as _scmp_free

from .includes cimport sb_seccomp as scmp

# OCI action and operator names -> csrc/sb_seccomp.h enums.  SCMP_ACT_NOTIFY and SCMP_ACT_TRACE
# are missing on purpose: sbx runs no supervisor or tracer for them.
SECCOMP_ACTIONS = {
    "SCMP_ACT_KILL": scmp.SB_SECCOMP_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": scmp.SB_SECCOMP_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": scmp.SB_SECCOMP_KILL_PROCESS,
    "SCMP_ACT_TRAP": scmp.SB_SECCOMP_TRAP,
    "SCMP_ACT_ERRNO": scmp.SB_SECCOMP_ERRNO,
    "SCMP_ACT_LOG": scmp.SB_SECCOMP_LOG,
    "SCMP_ACT_ALLOW": scmp.SB_SECCOMP_ALLOW,
}
SECCOMP_OPS = {
    "SCMP_CMP_NE": scmp.SB_SECCOMP_NE,
    "SCMP_CMP_LT": scmp.SB_SECCOMP_LT,
    "SCMP_CMP_LE": scmp.SB_SECCOMP_LE,
    "SCMP_CMP_EQ": scmp.SB_SECCOMP_EQ,
    "SCMP_CMP_GE": scmp.SB_SECCOMP_GE,
    "SCMP_CMP_GT": scmp.SB_SECCOMP_GT,
    "SCMP_CMP_MASKED_EQ": scmp.SB_SECCOMP_MASKED_EQ,
}
SECCOMP_MAX_ARGS = scmp.SB_SECCOMP_MAX_ARGS


class SeccompError(OSError):
    """libseccomp refused a profile; `detail` names the syscall, `rule` is the index of the rule
    in the list given to seccomp_compile() (None when the error is not about one rule)."""


def seccomp_version():
    """libseccomp's run-time version as (major, minor, micro)."""
    cdef unsigned v[3]
    scmp.sb_seccomp_version(v)
    return (v[0], v[1], v[2])


cdef class _ScmpFilter:
    """Owns the C copy of one compile request."""
    cdef scmp.sb_seccomp_filter f
    cdef scmp.sb_seccomp_rule *rules
    cdef scmp.sb_seccomp_arg *args
    cdef const char **arches
    cdef list keep

    def __cinit__(self):
        memset(&self.f, 0, sizeof(self.f))
        self.keep = []

    def __dealloc__(self):
        PyMem_RawFree(self.rules)
        PyMem_RawFree(self.args)
        PyMem_RawFree(self.arches)

    cdef int fill(self, uint32_t default_action, uint32_t default_errno, arches, rules) except -1:
        cdef Py_ssize_t i, k, n_args = 0
        cdef scmp.sb_seccomp_rule *r
        cdef scmp.sb_seccomp_arg *a
        arches = [a_.encode() for a_ in arches]
        self.arches = <const char **>PyMem_RawCalloc(len(arches) + 1, sizeof(char *))
        self.rules = <scmp.sb_seccomp_rule *>PyMem_RawCalloc(len(rules) + 1, sizeof(scmp.sb_seccomp_rule))
        for rule in rules:
            n_args += len(rule[3])
        self.args = <scmp.sb_seccomp_arg *>PyMem_RawCalloc(n_args + 1, sizeof(scmp.sb_seccomp_arg))
        if self.arches == NULL or self.rules == NULL or self.args == NULL:
            raise MemoryError()
        for i in range(len(arches)):
            self.arches[i] = _cstr(arches[i], self.keep)
        a = self.args
        for i in range(len(rules)):
            name, action, errno_ret, conds = rules[i]
            r = &self.rules[i]
            r.name = _cstr(name.encode(), self.keep)
            r.action = action
            r.errno_ret = errno_ret
            r.args = a
            r.n_args = len(conds)
            for k in range(len(conds)):
                a.index, a.op, a.value, a.value_two = conds[k]
                a += 1
        self.f.default_action = default_action
        self.f.default_errno = default_errno
        self.f.arches = self.arches
        self.f.n_arches = len(arches)
        self.f.rules = self.rules
        self.f.n_rules = len(rules)
        return 0


def seccomp_compile(default_action, default_errno, arches, rules):
    """Compile with libseccomp: `arches` are libseccomp names added to the native one, `rules` are
    (syscall name, action, errno, ((index, op, value, value_two), ...)) with the SB_SECCOMP_* codes
    of SECCOMP_ACTIONS and SECCOMP_OPS.  Returns (the struct sock_filter array as bytes, the number
    of rules skipped because libseccomp does not know their syscall)."""
    cdef _ScmpFilter holder = _ScmpFilter()
    cdef scmp.sb_seccomp_error err
    cdef unsigned char *out = NULL
    cdef size_t out_len = 0, n_skipped = 0
    cdef int rc
    holder.fill(default_action, default_errno, arches, rules)
    memset(&err, 0, sizeof(err))
    with nogil:
        rc = scmp.sb_seccomp_compile(&holder.f, &out, &out_len, &n_skipped, &err)
    if rc < 0:
        e = SeccompError(err.err, _os.strerror(err.err))
        e.detail = (<bytes>err.msg).decode("utf-8", "replace")
        e.rule = None if err.rule < 0 else err.rule
        raise e
    try:
        return out[:out_len], n_skipped
    finally:
        _scmp_free(out)
