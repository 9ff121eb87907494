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

#endif
