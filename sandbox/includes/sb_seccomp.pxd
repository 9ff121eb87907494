# C declarations of csrc/sb_seccomp.h (seccomp profile -> BPF), only what sandbox/_seccomp.pxi touches.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "sb_seccomp.h" nogil:
    cdef enum:
        SB_SECCOMP_KILL_THREAD
        SB_SECCOMP_KILL_PROCESS
        SB_SECCOMP_TRAP
        SB_SECCOMP_ERRNO
        SB_SECCOMP_LOG
        SB_SECCOMP_ALLOW
        SB_SECCOMP_NE
        SB_SECCOMP_LT
        SB_SECCOMP_LE
        SB_SECCOMP_EQ
        SB_SECCOMP_GE
        SB_SECCOMP_GT
        SB_SECCOMP_MASKED_EQ
        SB_SECCOMP_MAX_ARGS

    ctypedef struct sb_seccomp_arg "struct sb_seccomp_arg":
        uint32_t index
        uint32_t op
        uint64_t value
        uint64_t value_two

    ctypedef struct sb_seccomp_rule "struct sb_seccomp_rule":
        const char *name
        uint32_t action
        uint32_t errno_ret
        const sb_seccomp_arg *args
        uint32_t n_args

    ctypedef struct sb_seccomp_filter "struct sb_seccomp_filter":
        uint32_t default_action
        uint32_t default_errno
        const char *const *arches
        size_t n_arches
        const sb_seccomp_rule *rules
        size_t n_rules

    ctypedef struct sb_seccomp_error "struct sb_seccomp_error":
        int err
        long rule
        char msg[256]

    int sb_seccomp_compile(const sb_seccomp_filter *f, unsigned char **out, size_t *out_len,
                           size_t *n_skipped, sb_seccomp_error *err)
    void sb_seccomp_version(unsigned v[3])
