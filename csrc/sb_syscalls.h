/* sb_syscalls.h - raw wrappers for syscalls older libcs lack, and LIKELY/UNLIKELY.
 * Raw syscall(2) calls are async-signal-safe, which the child needs. */
#ifndef SB_SYSCALLS_H
#define SB_SYSCALLS_H

#include <stdint.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>

#define LIKELY(x) __builtin_expect (!!(x), 1)
#define UNLIKELY(x) __builtin_expect (!!(x), 0)

#ifndef CLONE_PIDFD
# define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_NEWCGROUP
# define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWTIME
# define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLOSE_RANGE_CLOEXEC
# define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef AT_RECURSIVE
# define AT_RECURSIVE 0x8000
#endif
#ifndef MOUNT_ATTR_RDONLY
# define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef __NR_close_range
# define __NR_close_range 436
#endif
#ifndef __NR_mount_setattr
# define __NR_mount_setattr 442
#endif
#ifndef __NR_pidfd_open
# define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_send_signal
# define __NR_pidfd_send_signal 424
#endif

#ifndef __NR_open_tree
# define __NR_open_tree 428
#endif
#ifndef __NR_move_mount
# define __NR_move_mount 429
#endif
#ifndef __NR_openat2
# define __NR_openat2 437
#endif
#define SB_OPEN_TREE_CLONE 1
#define SB_MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define SB_MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#define SB_RESOLVE_NO_MAGICLINKS 0x02
#define SB_RESOLVE_IN_ROOT 0x10
#define SB_KEYCTL_JOIN_SESSION_KEYRING 1

struct sb_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};

struct sb_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

static inline int
sb_close_range (unsigned int first, unsigned int last, unsigned int flags)
{
  return (int) syscall (__NR_close_range, first, last, flags);
}

static inline int
sb_mount_setattr (int dfd, const char *path, unsigned int flags, struct sb_mount_attr *attr, size_t size)
{
  return (int) syscall (__NR_mount_setattr, dfd, path, flags, attr, size);
}

static inline int
sb_pivot_root (const char *new_root, const char *put_old)
{
  return (int) syscall (SYS_pivot_root, new_root, put_old);
}

static inline int
sb_execveat (int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
  return (int) syscall (SYS_execveat, dirfd, path, argv, envp, flags);
}

static inline int
sb_openat2 (int dirfd, const char *path, struct sb_open_how *how, size_t size)
{
  return (int) syscall (__NR_openat2, dirfd, path, how, size);
}

static inline int
sb_open_tree (int dirfd, const char *path, unsigned int flags)
{
  return (int) syscall (__NR_open_tree, dirfd, path, flags);
}

static inline int
sb_move_mount (int from_dfd, const char *from, int to_dfd, const char *to, unsigned int flags)
{
  return (int) syscall (__NR_move_mount, from_dfd, from, to_dfd, to, flags);
}

#endif
