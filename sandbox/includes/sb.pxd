# C declarations of csrc/, one extern block per header, only the fields Cython touches.
from libc.stdint cimport uint64_t
from posix.types cimport pid_t, uid_t, gid_t
from posix.resource cimport rlimit


cdef extern from "sb_launch.h" nogil:
    cdef enum:
        SB_STAGE_PARENT
        SB_STAGE_HELD
        SB_STAGE_READY
        SB_STAGE_COUNT

    cdef enum:
        SB_HANDLE_DONE
        SB_HANDLE_HELD
        SB_HANDLE_WAITING

    cdef enum:
        SB_USERNS_NONE
        SB_USERNS_SELF
        SB_USERNS_HELPER

    ctypedef struct sb_op "struct sb_op":
        int kind
        unsigned int flags
        const char *src
        const char *dst
        const char *fstype
        const char *data
        size_t data_len
        unsigned long mflags
        unsigned int mode

    ctypedef struct sb_rlimit "struct sb_rlimit":
        int resource
        rlimit limit

    ctypedef struct sb_config "struct sb_config":
        int clone_flags
        int late_unshare
        int userns_mode
        const char *uid_map
        const char *gid_map
        char **newuidmap_argv
        char **newgidmap_argv
        const int *setns_fds
        const int *setns_types
        size_t n_setns
        const sb_op *ops
        size_t n_ops
        const char *newroot
        const char *hostname
        int loopback_up
        char **argv
        char **envp
        const char *path
        const char *cwd
        int mkdir_cwd
        int set_ids
        uid_t uid
        gid_t gid
        const gid_t *groups
        size_t n_groups
        int set_groups
        int set_caps
        uint64_t caps
        int cap_last
        int no_new_privs
        int die_with_parent
        const sb_rlimit *rlimits
        size_t n_rlimits
        int stdio[3]
        int setsid
        int ctty
        int console_socket
        unsigned short console_rows
        unsigned short console_cols
        const int *keep_fds
        size_t n_keep_fds
        int init_fd
        int new_keyring
        const void *seccomp_filter
        unsigned short seccomp_len
        int start_fd
        int hold_fd

    ctypedef struct sb_result "struct sb_result":
        pid_t pid
        int pidfd
        int vfork

    ctypedef struct sb_handle "struct sb_handle":
        int state
        pid_t pid
        int pidfd
        int report_r
        int sync_w
        int pid_r
        int vfork
        int wait_start

    ctypedef struct sb_error "struct sb_error":
        int stage
        int err
        int op
        char msg[256]

    int sb_spawn(const sb_config *cfg, sb_result *res, sb_error *err)
    int sb_spawn_create(const sb_config *cfg, sb_handle *h, sb_error *err)
    int sb_spawn_release(sb_handle *h, sb_result *res, sb_error *err)
    int sb_spawn_wait_exec(sb_handle *h, sb_error *err)
    void sb_spawn_abort(sb_handle *h)
    void sb_spawn_close(sb_handle *h)


cdef extern from "sb_wait.h" nogil:
    int sb_wait_forward(pid_t pid, const int *sigs, size_t nsigs, int *status)


cdef extern from "sb_inroot.h" nogil:
    int sb_open_in_root(int rootfd, const char *path, int flags, unsigned int mode)
    int sb_mkdirs_in_root(int rootfd, const char *path, unsigned int mode)
    void sb_inroot_force_walk(int on)
