/* sb_launch.h - the launch plan: what Python compiles and the C launcher executes.
 *
 * Python (sandbox/runtime/plan.py) turns an OCI-runtime-spec-shaped description into this
 * flat structure; sandbox/_native.pyx marshals it into C strings and arrays that stay alive
 * for the whole call; sb_spawn() (sb_spawn.c, parent side) clones a child that runs
 * sb_child_main() (sb_child.c) which executes it step by step and execs.
 *
 * Everything the child needs is precomputed here: absolute host paths, mount option strings,
 * map contents, argv/envp.  The child never allocates.
 */
#ifndef SB_LAUNCH_H
#define SB_LAUNCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/resource.h>

/* Steps the child reports on failure (kept in sync with STAGES in sandbox/runtime/launch.py;
 * tests/test_launch_phases.py checks that the two agree).  HELD and READY are not failures but
 * the markers of a two-phase launch (sb_spawn_create). */
enum sb_stage {
  SB_STAGE_NONE = 0,
  SB_STAGE_CLONE,          /* parent: clone() itself */
  SB_STAGE_SIGNALS,        /* child: reset signal dispositions */
  SB_STAGE_PDEATHSIG,
  SB_STAGE_SYNC,           /* child: waiting for the parent to write id maps */
  SB_STAGE_UID_MAP,
  SB_STAGE_SETGROUPS_DENY,
  SB_STAGE_GID_MAP,
  SB_STAGE_NEWUIDMAP,      /* parent: newuidmap helper */
  SB_STAGE_NEWGIDMAP,      /* parent: newgidmap helper */
  SB_STAGE_MOUNT_PRIVATE,  /* make / private in the new mount namespace */
  SB_STAGE_OP,             /* a mount-table op, index in `op` */
  SB_STAGE_PIVOT,
  SB_STAGE_HOSTNAME,
  SB_STAGE_LOOPBACK,
  SB_STAGE_RLIMIT,
  SB_STAGE_CWD,
  SB_STAGE_CAPBSET,
  SB_STAGE_SETGROUPS,
  SB_STAGE_SETGID,
  SB_STAGE_SETUID,
  SB_STAGE_CAPSET,
  SB_STAGE_NO_NEW_PRIVS,
  SB_STAGE_STDIO,
  SB_STAGE_SETSID,
  SB_STAGE_CLOSE_FDS,
  SB_STAGE_INIT,           /* open/exec of the sbx init binary */
  SB_STAGE_EXEC,
  SB_STAGE_SETNS,          /* joining an existing sandbox's namespaces */
  SB_STAGE_CONSOLE,        /* allocating the pty in the sandbox's devpts */
  SB_STAGE_FORKED,         /* unused: the pid of a forked exec process comes on its own pipe */
  SB_STAGE_DUMPABLE,       /* exec: make the joining process non-dumpable before it joins */
  SB_STAGE_KEYRING,        /* a fresh anonymous session keyring */
  SB_STAGE_SECCOMP,        /* installing the seccomp filter */
  SB_STAGE_PARENT,         /* parent-side plumbing (pipe, mmap, read) */
  SB_STAGE_HELD,           /* marker: in its namespaces, id maps written, waiting to be released */
  SB_STAGE_READY,          /* marker: everything but execve done, waiting on the start fd */
  SB_STAGE_LATE_UNSHARE,   /* child: namespaces made once released (the cgroup namespace) */
  SB_STAGE_COUNT
};

/* Mount-table operations, executed in order before pivot_root. */
enum sb_op_kind {
  SB_OP_MOUNT = 1,    /* mount(src, dst, fstype, mflags, data) */
  SB_OP_BIND,         /* bind src on dst (recursive unless NONREC), then SETATTR `mode` if non-zero */
  SB_OP_MKDIR,        /* mkdir(dst, mode); an existing directory is fine */
  SB_OP_MKFILE,       /* create an empty file dst (a bind target); existing is fine */
  SB_OP_WRITE,        /* create dst with mode and write `data` into it */
  SB_OP_SYMLINK,      /* symlink(src, dst); existing is fine */
  SB_OP_SETATTR,      /* mount_setattr(dst, AT_RECURSIVE, attr_set = `mode`): MOUNT_ATTR_RDONLY... */
  SB_OP_CHMOD,        /* chmod(dst, mode) */
  SB_OP_RUN,          /* run program `src` chrooted in `dst`, argv = the NUL-separated strings
                       * in `data`, and wait for it to exit 0 (fuse-overlayfs mounting the root) */
};

#define SB_RUN_MAX_ARGS 32

#define SB_OPF_OPTIONAL  0x1u  /* ENOENT/EROFS/ENOTDIR: skip this op instead of failing */
#define SB_OPF_NONREC    0x4u  /* for BIND and SETATTR: not recursive */
#define SB_OPF_INROOT    0x8u  /* dst is a path inside the new root, resolved there (sb_inroot.h)
                                * and never through the host; mounts go onto the resolved fd */
#define SB_OPF_SRC_INROOT 0x10u /* for BIND: src is inside the new root too */

struct sb_op {
  int kind;
  unsigned int flags;
  const char *src;
  const char *dst;
  const char *fstype;
  const char *data;
  size_t data_len;           /* for SB_OP_WRITE */
  unsigned long mflags;      /* MS_* for SB_OP_MOUNT */
  unsigned int mode;
};

struct sb_rlimit {
  int resource;
  struct rlimit limit;
};

/* How the child's user namespace gets its id maps. */
enum sb_userns_mode {
  SB_USERNS_NONE = 0,    /* no new user namespace (or joining one with setns) */
  SB_USERNS_SELF,        /* the child writes a single-id map itself: no parent round trip */
  SB_USERNS_HELPER,      /* the parent runs newuidmap/newgidmap, then releases the child */
};

struct sb_config {
  int clone_flags;                  /* CLONE_NEW* */
  int late_unshare;                 /* CLONE_NEW* made by the child once released (the cgroup
                                     * namespace, rooted where the parent's hooks moved it) */
  int userns_mode;
  const char *uid_map;              /* SB_USERNS_SELF: map contents */
  const char *gid_map;
  char *const *newuidmap_argv;      /* SB_USERNS_HELPER: argv, the pid slot (index 1) is filled in */
  char *const *newgidmap_argv;

  const int *setns_fds;             /* join these namespaces first (exec into a sandbox) */
  const int *setns_types;
  size_t n_setns;

  const struct sb_op *ops;
  size_t n_ops;
  const char *newroot;              /* pivot_root into this directory; NULL: no pivot */

  const char *hostname;             /* NULL: leave as is */
  int loopback_up;

  char *const *argv;                /* argv[0] is searched in `path` unless it contains '/' */
  char *const *envp;
  const char *path;                 /* PATH used for the search */
  const char *cwd;
  int mkdir_cwd;                    /* create cwd (and parents) when missing */

  int set_ids;                      /* switch to uid/gid/groups below (helper mode or plain root) */
  uid_t uid;
  gid_t gid;
  const gid_t *groups;
  size_t n_groups;
  int set_groups;                   /* call setgroups(groups) */

  int set_caps;
  uint64_t caps;                    /* bounding + effective + permitted */
  int cap_last;                     /* /proc/sys/kernel/cap_last_cap */
  int no_new_privs;
  int die_with_parent;

  const struct sb_rlimit *rlimits;
  size_t n_rlimits;

  int stdio[3];                     /* fd to put on 0/1/2; -1 keeps what is there */
  int setsid;                       /* new session */
  int ctty;                         /* make fd 0 the controlling terminal (needs setsid) */
  int console_socket;               /* >= 0: open a pty in the new /dev/pts, send its master
                                     * over this unix socket, use the peer as stdio + ctty */
  unsigned short console_rows, console_cols;
  const int *keep_fds;              /* sorted, >= 3: survive exec (pass_fds) */
  size_t n_keep_fds;

  int init_fd;                      /* >= 0: exec this init binary (a sealed memfd copy of sbx-init,
                                     * so nothing inside can rewrite the installed file), which runs
                                     * the command */
  int new_keyring;                  /* join a fresh anonymous session keyring */
  const void *seccomp_filter;       /* struct sock_filter[seccomp_len], compiled by the parent */
  unsigned short seccomp_len;       /* 0: no filter */
  int start_fd;                     /* >= 0 (sb_spawn_create only): once everything but execve is
                                     * done, report READY and read one byte from it; the byte
                                     * execs, EOF or an error exits 127 (runc's exec.fifo) */
  int hold_fd;                      /* with start_fd: the sealed sbx-init memfd the child execs to
                                     * wait for the start byte in (csrc/sb_init.c's holder), so the
                                     * held pid 1 keeps nothing of the caller's memory */
};

/* What the child writes to the parent on failure (fixed size: no malloc on either side). */
struct sb_report {
  int stage;
  int err;        /* errno */
  int op;         /* index into ops for SB_STAGE_OP, else -1 */
  int pad;
};

struct sb_result {
  pid_t pid;
  int pidfd;      /* -1 when the kernel has no CLONE_PIDFD */
  int vfork;      /* the clone was vfork-like (CLONE_VM|CLONE_VFORK): tests check the fast path */
};

/* The one error object threaded through the parent side (crun's libcrun_error_t, fixed size). */
struct sb_error {
  int stage;
  int err;
  int op;
  char msg[256];
};

/* One launch in progress (sb_spawn_create .. sb_spawn_release .. sb_spawn_wait_exec). */
enum sb_handle_state {
  SB_HANDLE_DONE = 0,      /* nothing left to do: the child exec'd or is gone, fds closed */
  SB_HANDLE_HELD,          /* created: the child waits on the sync pipe, before any mount */
  SB_HANDLE_WAITING,       /* released with a start fd: the child waits just before execve */
};

struct sb_handle {
  int state;
  pid_t pid;
  int pidfd;               /* -1 without CLONE_PIDFD; kept by the handle while state != DONE */
  int report_r;            /* read end of the report pipe (EOF: exec'd) */
  int sync_w;              /* write end of the sync pipe: one byte releases the held child */
  int pid_r;               /* exec into a pid namespace: carries the forked process's pid */
  int vfork;               /* 1 when the clone shared memory with the parent (CLONE_VM|CLONE_VFORK) */
  int wait_start;          /* cfg->start_fd >= 0 */
};

/* The fast path: clone (vfork-like unless id-map helpers or a joined namespace need a copy of
 * memory), run the id-map helpers, collect reports until exec.  No hold, no start fd. */
int sb_spawn (const struct sb_config *cfg, struct sb_result *res, struct sb_error *err);
/* Two phases: create returns with the child in its new namespaces (helper-mode id maps written,
 * single-id maps written by the child itself) and blocked on the sync pipe before any mount;
 * the caller may join its namespaces, move it to a cgroup, ...  release lets it go on and
 * collects the reports as sb_spawn does, up to READY when cfg->start_fd >= 0.  abort kills and
 * reaps a child that is held or waiting to start, and closes the handle. */
int sb_spawn_create (const struct sb_config *cfg, struct sb_handle *h, struct sb_error *err);
/* res->pidfd is the caller's own (a duplicate while the handle still waits for the exec). */
int sb_spawn_release (struct sb_handle *h, struct sb_result *res, struct sb_error *err);
/* After the start byte: read the report pipe to EOF.  0: the command exec'd; -1: it failed
 * (err says why; the child is reaped). */
int sb_spawn_wait_exec (struct sb_handle *h, struct sb_error *err);
void sb_spawn_abort (struct sb_handle *h);
/* Close the handle's fds; a child still held (never released) is killed and reaped. */
void sb_spawn_close (struct sb_handle *h);

/* Child side, in sb_child.c.  Never returns. */
int sb_child_main (void *arg);

#endif
