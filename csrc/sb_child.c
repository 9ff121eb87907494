/* sb_child.c - the child after clone(): executes a launch plan and execs.
 *
 * All of the code in this file runs in a child cloned from a (possibly multi-threaded) Python
 * process, often with CLONE_VM|CLONE_VFORK, so it shares the parent's memory while the parent
 * is suspended.  It must only use async-signal-safe functions: no malloc, no stdio, no
 * strerror, no locks, no libc set*id wrappers (they signal other threads; we use raw syscalls),
 * and it must not touch Python.  Every step is one call and one check; a failure is written
 * as {stage, errno, op} to the report pipe (CLOEXEC, so EOF there means exec succeeded) and
 * the child exits with 127.  The parent turns the report into a Python exception with a hint.
 *
 * The shape follows bubblewrap's main() (one step per syscall) and CPython's
 * _posixsubprocess.c child_exec() (the async-signal-safety rules).
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include "sb_launch.h"
#include "sb_syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <linux/capability.h>

#include "sb_child.h"
#include "sb_inroot.h"

#include <linux/filter.h>
#include <linux/seccomp.h>

/* Report a failure and exit.  write() to a pipe is async-signal-safe; a short write cannot
 * happen for 16 bytes (< PIPE_BUF). */
static void __attribute__ ((noreturn))
fail (const struct sb_child_ctx *ctx, int stage, int err, int op)
{
  struct sb_report r = { stage, err, op, 0 };
  ssize_t unused = write (ctx->report_fd, &r, sizeof r);
  (void) unused;
  _exit (127);
}

/* A marker of a two-phase launch (HELD, READY): not a failure, the child goes on. */
static void
mark (const struct sb_child_ctx *ctx, int stage)
{
  struct sb_report r = { stage, 0, -1, 0 };
  ssize_t unused = write (ctx->report_fd, &r, sizeof r);
  (void) unused;
}

/* Block until one byte arrives on `fd`; anything else (EOF: the parent gave up, or an error)
 * ends the child quietly: whoever closed the other end knows why. */
static void
wait_for_byte (int fd)
{
  char go;
  ssize_t n;
  do
    n = read (fd, &go, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1)
    _exit (127);
}

#define CHECK(expr, stage)                                 \
  do {                                                     \
    if (UNLIKELY ((expr) < 0))                             \
      fail (ctx, (stage), errno, -1);                      \
  } while (0)

static size_t
sb_strlen (const char *s)
{
  size_t n = 0;
  while (s[n])
    n++;
  return n;
}

/* Write a whole small buffer to a file that must already exist (proc files). */
static int
write_file (const char *path, const char *data, size_t len)
{
  int fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = write (fd, data, len);
  int saved = errno;
  close (fd);
  if (n < 0)
    {
      errno = saved;
      return -1;
    }
  if ((size_t) n != len)
    {
      errno = EIO;
      return -1;
    }
  return 0;
}

static int
create_and_write (const char *path, const char *data, size_t len, unsigned mode)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return -1;
  while (len > 0)
    {
      ssize_t n = write (fd, data, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          int saved = n < 0 ? errno : EIO;
          close (fd);
          errno = saved;
          return -1;
        }
      data += n;
      len -= (size_t) n;
    }
  return close (fd);
}

/* Set mount attributes (read-only, nosuid, ...) on a mount and everything below it.
 * mount_setattr(AT_RECURSIVE) does it in one call and also covers submounts, which a
 * MS_REMOUNT|MS_RDONLY of the top mount would leave writable (bind mounts of / have many). */
static int
set_attr (const char *path, unsigned int attrs, int recursive)
{
  struct sb_mount_attr attr = { .attr_set = attrs };
  return sb_mount_setattr (AT_FDCWD, path, (recursive ? AT_RECURSIVE : 0) | AT_NO_AUTOMOUNT,
                           &attr, sizeof attr);
}

/* Run a helper to completion.  A raw clone(SIGCHLD) is fork without libc's atfork handlers
 * (they belong to the Python parent); the helper gets an empty environment.  It runs chrooted
 * in `dst` (a recursive bind of /): pivot_root moves the root of every process whose root is
 * the old root, and a fuse daemon whose root became its own mount would deadlock. */
static int
run_program (const struct sb_op *op)
{
  char *argv[SB_RUN_MAX_ARGS + 1];
  char *const envp[] = { NULL };
  size_t n = 0;
  for (size_t i = 0; i < op->data_len && n < SB_RUN_MAX_ARGS; n++)
    {
      argv[n] = (char *) op->data + i;
      i += sb_strlen (op->data + i) + 1;
    }
  argv[n] = NULL;

  long pid = syscall (SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (pid < 0)
    return -1;
  if (pid == 0)
    {
      sigset_t none;
      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      if (op->dst && (chroot (op->dst) < 0 || chdir ("/") < 0))
        _exit (126);
      execve (op->src, argv, envp);
      _exit (127);
    }
  int st;
  while (waitpid ((pid_t) pid, &st, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (!WIFEXITED (st) || WEXITSTATUS (st) != 0)
    {
      errno = WIFEXITED (st) && WEXITSTATUS (st) == 127 ? ENOENT : EIO;
      return -1;
    }
  return 0;
}

/* "N" into buf (at least 12 bytes); returns the end. */
static char *
put_int (char *buf, int v)
{
  char digits[12];
  int n = 0;
  do
    {
      digits[n++] = (char) ('0' + v % 10);
      v /= 10;
    }
  while (v > 0);
  while (n > 0)
    *buf++ = digits[--n];
  *buf = '\0';
  return buf;
}

/* "/proc/self/fd/N" in a caller's buffer, for mount(2) onto an fd (runc's way of mounting on
 * a target that was resolved safely: the string is never looked up through the root). */
static const char *
fd_path (char *buf, int fd)
{
  static const char prefix[] = "/proc/self/fd/";
  memcpy (buf, prefix, sizeof prefix - 1);
  put_int (buf + sizeof prefix - 1, fd);
  return buf;
}

/* The new root as an O_PATH fd, opened on first use (after the root itself is mounted). */
static int
root_fd (const struct sb_config *cfg, int *rootfd)
{
  if (*rootfd < 0)
    *rootfd = open (cfg->newroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
  return *rootfd;
}

static int
close_ret (int fd, int rc)
{
  int saved = errno;
  if (fd >= 0)
    close (fd);
  errno = saved;
  return rc;
}

/* Bind `src` (a host path, or with SB_OPF_SRC_INROOT a path in the root) onto the resolved
 * target: the new mount API clones the tree detached, sets its attributes while nothing can
 * see it, and attaches it to the fd, so no path string is resolved twice. */
static int
bind_in_root (const struct sb_op *op, int root, int target)
{
  unsigned int rec = (op->flags & SB_OPF_NONREC) ? 0 : AT_RECURSIVE;
  int tree;
  if (op->flags & SB_OPF_SRC_INROOT)
    {
      int sfd = sb_open_in_root (root, op->src, O_PATH, 0);
      if (sfd < 0)
        return -1;
      tree = sb_open_tree (sfd, "", SB_OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH | rec);
      close_ret (sfd, 0);
    }
  else
    tree = sb_open_tree (AT_FDCWD, op->src, SB_OPEN_TREE_CLONE | O_CLOEXEC | rec);
  if (tree < 0)
    return -1;
  if (op->mode)
    {
      struct sb_mount_attr attr = { .attr_set = op->mode };
      if (sb_mount_setattr (tree, "", AT_EMPTY_PATH | rec, &attr, sizeof attr) < 0)
        return close_ret (tree, -1);
    }
  int rc = sb_move_mount (tree, "", target, "", SB_MOVE_MOUNT_F_EMPTY_PATH | SB_MOVE_MOUNT_T_EMPTY_PATH);
  return close_ret (tree, rc);
}

/* An op whose dst lies in the new root: every path is resolved inside it (sb_inroot.c). */
static int
run_op_in_root (const struct sb_config *cfg, const struct sb_op *op, int *rootfd)
{
  char name[NAME_MAX + 1], procfd[32];
  int root = root_fd (cfg, rootfd);
  if (root < 0)
    return -1;
  switch (op->kind)
    {
    case SB_OP_MKDIR:
      {
        int fd = sb_mkdirs_in_root (root, op->dst, op->mode);
        return fd < 0 ? -1 : close_ret (fd, 0);
      }

    case SB_OP_MKFILE:
      {
        int dir = sb_parent_in_root (root, op->dst, 1, 0755, name, sizeof name);
        if (dir < 0)
          return -1;
        /* O_EXCL: an existing target is fine as it is (a symlink is followed inside the root
         * when the mount resolves it), and must not be opened for writing, which would copy it
         * up into the overlay's upper layer. */
        int fd = openat (dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, op->mode);
        if (fd < 0)
          {
            struct stat st;
            if ((errno == EEXIST || errno == EROFS || errno == EACCES)
                && fstatat (dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
              return close_ret (dir, 0);
            return close_ret (dir, -1);
          }
        close (fd);
        return close_ret (dir, 0);
      }

    case SB_OP_SYMLINK:
      {
        int dir = sb_parent_in_root (root, op->dst, 0, 0, name, sizeof name);
        if (dir < 0)
          return -1;
        if (symlinkat (op->src, dir, name) < 0 && errno != EEXIST)
          return close_ret (dir, -1);
        return close_ret (dir, 0);
      }

    case SB_OP_BIND:
    case SB_OP_MOUNT:
    case SB_OP_SETATTR:
      {
        int target = sb_open_in_root (root, op->dst, O_PATH, 0);
        if (target < 0)
          return -1;
        int rc;
        if (op->kind == SB_OP_BIND)
          rc = bind_in_root (op, root, target);
        else if (op->kind == SB_OP_MOUNT)
          rc = mount (op->src, fd_path (procfd, target), op->fstype, op->mflags, op->data);
        else
          {
            struct sb_mount_attr attr = { .attr_set = op->mode };
            rc = sb_mount_setattr (target, "", AT_EMPTY_PATH | ((op->flags & SB_OPF_NONREC) ? 0 : AT_RECURSIVE),
                                   &attr, sizeof attr);
          }
        return close_ret (target, rc);
      }

    default:
      errno = EINVAL;
      return -1;
    }
}

static int
run_op (const struct sb_config *cfg, const struct sb_op *op, int *rootfd)
{
  if (op->flags & SB_OPF_INROOT)
    return run_op_in_root (cfg, op, rootfd);

  switch (op->kind)
    {
    case SB_OP_MOUNT:
      return mount (op->src, op->dst, op->fstype, op->mflags, op->data);

    case SB_OP_BIND:
      {
        unsigned long fl = MS_BIND | ((op->flags & SB_OPF_NONREC) ? 0 : MS_REC);
        if (mount (op->src, op->dst, NULL, fl, NULL) < 0)
          return -1;
        if (op->mode)
          return set_attr (op->dst, op->mode, 1);
        return 0;
      }

    case SB_OP_MKDIR:
      if (mkdir (op->dst, op->mode) < 0 && errno != EEXIST)
        return -1;
      return 0;

    case SB_OP_MKFILE:
      {
        /* O_EXCL: an existing target is fine as it is, and must not be opened for writing,
         * which would copy it up into the overlay's upper layer. */
        int fd = open (op->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, op->mode);
        if (fd < 0)
          {
            struct stat st;
            if ((errno == EEXIST || errno == EROFS || errno == EACCES) && lstat (op->dst, &st) == 0)
              return 0;
            return -1;
          }
        return close (fd);
      }

    case SB_OP_WRITE:
      return create_and_write (op->dst, op->data, op->data_len, op->mode);

    case SB_OP_SYMLINK:
      if (symlink (op->src, op->dst) < 0 && errno != EEXIST)
        return -1;
      return 0;

    case SB_OP_SETATTR:
      return set_attr (op->dst, op->mode, !(op->flags & SB_OPF_NONREC));

    case SB_OP_CHMOD:
      return chmod (op->dst, op->mode);

    case SB_OP_RUN:
      return run_program (op);

    default:
      errno = EINVAL;
      return -1;
    }
}

/* Bring `lo` up: one ioctl round trip, no netlink parsing needed (bwrap uses rtnetlink for
 * the address; a fresh netns already has 127.0.0.1/8 and ::1 on lo once it is up). */
static int
loopback_up (void)
{
  struct ifreq ifr;
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  memset (&ifr, 0, sizeof ifr);
  memcpy (ifr.ifr_name, "lo", 3);
  if (ioctl (fd, SIOCGIFFLAGS, &ifr) < 0)
    goto err;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl (fd, SIOCSIFFLAGS, &ifr) < 0)
    goto err;
  return close (fd);
err:
  {
    int saved = errno;
    close (fd);
    errno = saved;
    return -1;
  }
}

/* Allocate a pty in the sandbox's own devpts (so ttyname() and /dev/pts agree inside), hand
 * the master to the parent over a unix socket (SCM_RIGHTS, as crun's --console-socket) and
 * return the slave, opened with TIOCGPTPEER: no path lookup, no race. */
static int
open_console (const struct sb_config *cfg)
{
  int master = open ("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0)
    return -1;
  int unlock = 0;
  if (ioctl (master, TIOCSPTLCK, &unlock) < 0)
    return -1;
  struct winsize ws = { cfg->console_rows, cfg->console_cols, 0, 0 };
  int slave = ioctl (master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0)
    return -1;
  if (ws.ws_row && ioctl (slave, TIOCSWINSZ, &ws) < 0)
    return -1;

  char dummy = 'p';
  struct iovec iov = { &dummy, 1 };
  union
  {
    char buf[CMSG_SPACE (sizeof (int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg;
  memset (&msg, 0, sizeof msg);
  memset (&u, 0, sizeof u);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  struct cmsghdr *cm = CMSG_FIRSTHDR (&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN (sizeof (int));
  memcpy (CMSG_DATA (cm), &master, sizeof (int));
  if (sendmsg (cfg->console_socket, &msg, MSG_NOSIGNAL) < 0)
    return -1;
  close (master);
  return slave;
}

/* mkdir -p for the working directory, on a stack copy of the path. */
static int
mkdir_p (const char *path)
{
  char buf[PATH_MAX];
  size_t n = sb_strlen (path);
  if (n == 0 || n >= sizeof buf)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  memcpy (buf, path, n + 1);
  for (size_t i = 1; i <= n; i++)
    {
      if (buf[i] != '/' && buf[i] != '\0')
        continue;
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir (buf, 0755) < 0 && errno != EEXIST)
        return -1;
      buf[i] = c;
    }
  return 0;
}

/* Drop every capability not in `keep` from the bounding set (needs CAP_SETPCAP, which the
 * child has in its own user namespace). */
static int
drop_bounding (uint64_t keep, int cap_last)
{
  for (int cap = 0; cap <= cap_last; cap++)
    {
      if (keep & (1ULL << cap))
        continue;
      if (prctl (PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
        return -1;
    }
  return 0;
}

static int
set_caps (uint64_t caps)
{
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct data[2];
  memset (data, 0, sizeof data);
  data[0].effective = data[0].permitted = (uint32_t) caps;
  data[1].effective = data[1].permitted = (uint32_t) (caps >> 32);
  return (int) syscall (SYS_capset, &hdr, data);
}

/* Look argv[0] up in PATH the way execvp does (ENOENT/ENOTDIR: next entry; EACCES: remember
 * and go on), and exec it.  With `resolve_only`, copy the found path into `out` instead. */
static int
exec_search (const struct sb_config *cfg, char *out, int resolve_only)
{
  const char *file = cfg->argv[0];
  char buf[PATH_MAX];
  int seen_eacces = 0;

  for (const char *c = file; *c; c++)
    if (*c == '/')
      {
        if (resolve_only)
          {
            size_t n = sb_strlen (file);
            if (n >= PATH_MAX)
              {
                errno = ENAMETOOLONG;
                return -1;
              }
            if (access (file, X_OK) < 0)
              return -1;
            memcpy (out, file, n + 1);
            return 0;
          }
        execve (file, cfg->argv, cfg->envp);
        return -1;
      }

  size_t flen = sb_strlen (file);
  const char *p = cfg->path ? cfg->path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  while (1)
    {
      const char *end = p;
      while (*end && *end != ':')
        end++;
      size_t dlen = (size_t) (end - p);
      if (dlen == 0)
        {
          buf[0] = '.';
          dlen = 1;
        }
      else if (dlen + 1 + flen + 1 <= sizeof buf)
        memcpy (buf, p, dlen);
      if (dlen + 1 + flen + 1 <= sizeof buf)
        {
          buf[dlen] = '/';
          memcpy (buf + dlen + 1, file, flen + 1);
          if (resolve_only)
            {
              if (access (buf, X_OK) == 0)
                {
                  memcpy (out, buf, dlen + 1 + flen + 1);
                  return 0;
                }
            }
          else
            execve (buf, cfg->argv, cfg->envp);
          if (errno == EACCES)
            seen_eacces = 1;
          else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP && errno != ENAMETOOLONG)
            return -1;
        }
      if (*end == '\0')
        break;
      p = end + 1;
    }
  errno = seen_eacces ? EACCES : ENOENT;
  return -1;
}

/* Close (mark close-on-exec) every fd >= 3 except the ones to keep.  CLOSE_RANGE_CLOEXEC keeps
 * the report pipe and the start fd usable until exec closes them. */
static int
cloexec_fds (const struct sb_config *cfg)
{
  unsigned int lo = 3;
  for (size_t i = 0; i < cfg->n_keep_fds; i++)
    {
      unsigned int k = (unsigned int) cfg->keep_fds[i];
      if (k > lo && sb_close_range (lo, k - 1, CLOSE_RANGE_CLOEXEC) < 0)
        return -1;
      int fl = fcntl ((int) k, F_GETFD);
      if (fl < 0 || fcntl ((int) k, F_SETFD, fl & ~FD_CLOEXEC) < 0)
        return -1;
      lo = k + 1;
    }
  return sb_close_range (lo, ~0U, CLOSE_RANGE_CLOEXEC);
}

/* Parse an unsigned decimal at *p, advancing it. */
static unsigned long
parse_ulong (const char **p)
{
  unsigned long v = 0;
  while (**p >= '0' && **p <= '9')
    v = v * 10 + (unsigned long) (*(*p)++ - '0');
  return v;
}

/* Wipe the command line and environment this process inherited from its caller (an exec
 * joining a sandbox is a fork of the caller: `sbx exec -e TOKEN=...` is in its argv, the
 * caller's environment in its environ).  /proc/N/cmdline is readable by anyone who can see the
 * process, so once it is in the sandbox's pid namespace its inherited memory must hold nothing.
 * Only this process's own copy is written: it does not share memory with the caller. */
static void
scrub_inherited_args (void)
{
  char buf[1024];
  int fd = open ("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return;
  buf[n] = '\0';
  const char *p = buf + n;
  while (p > buf && *p != ')')
    p--;
  if (*p != ')')
    return;
  p++;
  /* after "comm)" comes field 3; arg_start..env_end are fields 48..51 (proc(5)) */
  unsigned long v[4];
  int field = 2;
  while (*p && field < 48)
    if (*p++ == ' ')
      field++;
  for (int i = 0; i < 4; i++)
    {
      if (*p < '0' || *p > '9')
        return;
      v[i] = parse_ulong (&p);
      if (*p == ' ')
        p++;
    }
  if (v[0] && v[1] > v[0])
    memset ((void *) v[0], 0, v[1] - v[0]);
  if (v[2] && v[3] > v[2])
    memset ((void *) v[2], 0, v[3] - v[2]);
}

/* Close every fd >= 3 but the ones the exec needs, before it enters the sandbox's pid
 * namespace (CVE-2024-21626's class: a leaked fd of the host is a way out). */
static int
close_all_but (const int *keep, size_t n)
{
  int sorted[64];
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    {
      int fd = keep[i];
      if (fd < 3 || m == sizeof sorted / sizeof sorted[0])
        continue;
      size_t j = m++;
      while (j > 0 && sorted[j - 1] > fd)
        {
          sorted[j] = sorted[j - 1];
          j--;
        }
      sorted[j] = fd;
    }
  unsigned int lo = 3;
  for (size_t i = 0; i < m; i++)
    {
      unsigned int k = (unsigned int) sorted[i];
      if (k > lo && sb_close_range (lo, k - 1, 0) < 0)
        return -1;
      if (k + 1 > lo)
        lo = k + 1;
    }
  return sb_close_range (lo, ~0U, 0);
}

static int
install_seccomp (const struct sb_config *cfg)
{
  struct sock_fprog prog = { cfg->seccomp_len, (struct sock_filter *) cfg->seccomp_filter };
  return (int) syscall (SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* Has the parent died?  Its end of the report pipe is then closed, and a pipe whose readers are
 * all gone polls as an error for its writer.  (getppid() cannot tell: as PID 1 of a new pid
 * namespace we always see 0.) */
static int
parent_gone (int report_fd)
{
  struct pollfd p = { .fd = report_fd, .events = POLLOUT, .revents = 0 };
  return poll (&p, 1, 0) > 0 && (p.revents & POLLERR) != 0;
}

/* Held until start, this is pid 1 of a container whose hooks and execs run beside it: a copy
 * of the caller's memory (its environment, its parsed config) and a /proc/1/exe naming the
 * host's python (CVE-2019-5736's class) must not wait there.  So everything but the command's
 * execve is done, and the holder takes over: sbx-init from its sealed memfd, which reports
 * READY, waits for the start byte and execs the command (csrc/sb_init.c).  The report pipe and
 * the start fd cross this exec (the holder makes them close-on-exec again); nothing else
 * changes, so the command gets the same ids, caps, no_new_privs, seccomp, rlimits and cwd. */
static void __attribute__ ((noreturn))
exec_holder (const struct sb_child_ctx *ctx, char *resolved)
{
  const struct sb_config *cfg = ctx->cfg;
  static const char prefix[] = "sbx-start:";
  char name[sizeof prefix + 40];
  memcpy (name, prefix, sizeof prefix - 1);
  char *p = put_int (name + sizeof prefix - 1, ctx->report_fd);
  *p++ = ':';
  p = put_int (p, cfg->start_fd);
  *p++ = ':';
  put_int (p, cfg->init_fd >= 0);
  if (cfg->hold_fd < 0 || !ctx->init_argv)
    fail (ctx, SB_STAGE_INIT, EBADF, -1);
  CHECK (fcntl (ctx->report_fd, F_SETFD, 0), SB_STAGE_INIT);
  CHECK (fcntl (cfg->start_fd, F_SETFD, 0), SB_STAGE_INIT);
  ctx->init_argv[0] = name;
  ctx->init_argv[1] = resolved;
  sb_execveat (cfg->hold_fd, "", ctx->init_argv, cfg->envp, AT_EMPTY_PATH);
  fail (ctx, SB_STAGE_INIT, errno, -1);
}

static int child_forked (void *arg);
static int child_rest (const struct sb_child_ctx *ctx);

int
sb_child_main (void *arg)
{
  const struct sb_child_ctx *ctx = arg;
  const struct sb_config *cfg = ctx->cfg;

  /* 1. Signals: default dispositions (Python ignores SIGPIPE, for instance).  The mask stays
   * fully blocked until just before exec, so no handler of the parent can run here. */
  for (int sig = 1; sig < _NSIG; sig++)
    {
      if (sig == SIGKILL || sig == SIGSTOP)
        continue;
      struct sigaction sa;
      if (sigaction (sig, NULL, &sa) < 0)
        continue;  /* signals reserved by libc */
      if (sa.sa_handler == SIG_DFL)
        continue;
      sa.sa_handler = SIG_DFL;
      sa.sa_flags = 0;
      CHECK (sigaction (sig, &sa, NULL), SB_STAGE_SIGNALS);
    }

  if (cfg->die_with_parent)
    CHECK (prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), SB_STAGE_PDEATHSIG);

  /* 2. Join existing namespaces (exec into a running sandbox), the user namespace first: it
   * gives us the capabilities the others need.  Joining a pid namespace only applies to our
   * children, so then fork once more; CLONE_PARENT makes the new process a child of the
   * caller (which waits for it), and this one reports its pid and leaves. */
  int joined_pid = 0;
  if (cfg->n_setns && !cfg->clone_flags)
    {
      /* Before anything of the sandbox can see us: non-dumpable, so its processes cannot open
       * our /proc/N/{environ,exe,fd,cwd,mem} or ptrace us (runc's setns process does the same;
       * execve makes the command dumpable again), and nothing of the caller's argv/env.  A new
       * sandbox that only joins a user namespace has nobody in its namespaces yet, and its
       * hooks (the network holder) must open its /proc/N/ns files. */
      CHECK (prctl (PR_SET_DUMPABLE, 0, 0, 0, 0), SB_STAGE_DUMPABLE);
      scrub_inherited_args ();
    }
  for (size_t i = 0; i < cfg->n_setns; i++)
    {
      CHECK (setns (cfg->setns_fds[i], cfg->setns_types[i]), SB_STAGE_SETNS);
      joined_pid |= cfg->setns_types[i] == CLONE_NEWPID;
    }
  /* New namespaces besides joined ones (a container joining the network holder's user
   * namespace): made now, so they belong to the joined user namespace; a new pid namespace,
   * like a joined one, takes the fork below. */
  if (cfg->n_setns && cfg->clone_flags)
    {
      CHECK (unshare (cfg->clone_flags), SB_STAGE_SETNS);
      joined_pid |= (cfg->clone_flags & CLONE_NEWPID) != 0;
    }
  if (cfg->n_setns && !joined_pid)
    close (ctx->pid_fd);  /* no fork, no pid to send: EOF now, not at exec (a held child waits) */
  if (joined_pid)
    {
      int keep[72];
      size_t nk = 0;
      keep[nk++] = ctx->report_fd;
      keep[nk++] = ctx->pid_fd;
      keep[nk++] = ctx->sync_fd;
      keep[nk++] = cfg->start_fd;
      keep[nk++] = cfg->console_socket;
      keep[nk++] = cfg->init_fd;  /* --init execs it after the fork */
      keep[nk++] = cfg->hold_fd;
      for (int i = 0; i < 3; i++)
        keep[nk++] = cfg->stdio[i];
      for (size_t i = 0; i < cfg->n_keep_fds && nk < sizeof keep / sizeof keep[0]; i++)
        keep[nk++] = cfg->keep_fds[i];
      if (cfg->n_keep_fds + 10 > sizeof keep / sizeof keep[0])
        fail (ctx, SB_STAGE_CLOSE_FDS, EMFILE, -1);
      CHECK (close_all_but (keep, nk), SB_STAGE_CLOSE_FDS);

      /* The pid comes from clone's return value and goes on a pipe that the new process
       * closes first thing: nothing inside the sandbox can forge it.  Sharing the caller's
       * memory (a new sandbox joining a kept user namespace, launched vfork-like), the new
       * process shares it too, on a stack of its own, and this one sleeps until it has
       * exec'd or exited: no page table is copied on the way. */
      /* A change of the effective uid or gid marks the mm non-dumpable (commit_creds): on a
       * shared mm that would be the caller's, whose /proc/self then turns root's.  So a sandbox
       * that switches to another user forks here; root inside (the caller's own ids) does not. */
      int share = ctx->shared_vm && !(cfg->set_ids && (cfg->uid != 0 || cfg->gid != 0));
      long pid;
      if (share)
        pid = clone (child_forked, ctx->fork_stack, CLONE_VM | CLONE_VFORK | CLONE_PARENT | SIGCHLD,
                     (void *) ctx);
      else
        pid = syscall (SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
      CHECK (pid, SB_STAGE_SETNS);
      if (pid > 0)
        {
          pid_t p = (pid_t) pid;
          ssize_t unused = write (ctx->pid_fd, &p, sizeof p);
          (void) unused;
          _exit (0);
        }
      return child_forked ((void *) ctx);
    }
  return child_rest (ctx);
}

/* The process forked into the new (or joined) pid namespace goes on from here. */
static int
child_forked (void *arg)
{
  const struct sb_child_ctx *ctx = arg;
  close (ctx->pid_fd);
  if (ctx->cfg->die_with_parent)
    CHECK (prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), SB_STAGE_PDEATHSIG);
  return child_rest (ctx);
}

/* Id maps, the hold, the mounts, the process's attributes, exec. */
static int
child_rest (const struct sb_child_ctx *ctx)
{
  const struct sb_config *cfg = ctx->cfg;
  char resolved[PATH_MAX];

  /* 3. Id maps.  A single-id map can be written by the child itself (the kernel allows an
   * unprivileged process to map its own euid once, after setgroups is denied for the gid map:
   * user_namespaces(7)); a range needs newuidmap, run by the parent while we wait. */
  if (cfg->userns_mode == SB_USERNS_SELF)
    {
      CHECK (write_file ("/proc/self/uid_map", cfg->uid_map, sb_strlen (cfg->uid_map)), SB_STAGE_UID_MAP);
      CHECK (write_file ("/proc/self/setgroups", "deny", 4), SB_STAGE_SETGROUPS_DENY);
      CHECK (write_file ("/proc/self/gid_map", cfg->gid_map, sb_strlen (cfg->gid_map)), SB_STAGE_GID_MAP);
    }
  else if (cfg->userns_mode == SB_USERNS_HELPER)
    wait_for_byte (ctx->sync_fd);  /* EOF: the parent failed and reports why itself */

  /* A two-phase launch: the namespaces exist and the id maps are written; nothing is mounted
   * yet.  The parent runs its hooks (join our network namespace, move us to a cgroup, ...)
   * until it releases us. */
  if (ctx->hold)
    {
      mark (ctx, SB_STAGE_HELD);
      wait_for_byte (ctx->sync_fd);
    }

  /* Namespaces rooted where the hooks put us: a cgroup namespace made now has the cgroup the
   * parent moved us to as its root (inside, /proc/self/cgroup says 0::/). */
  if (cfg->late_unshare)
    CHECK (unshare (cfg->late_unshare), SB_STAGE_LATE_UNSHARE);

  /* A session keyring of its own: the caller's keys (kerberos tickets, ecryptfs, ...) are out
   * of reach, as runc does.  A kernel without keyrings has nothing to hide. */
  if (cfg->new_keyring && syscall (SYS_keyctl, SB_KEYCTL_JOIN_SESSION_KEYRING, NULL, 0, 0, 0) < 0
      && errno != ENOSYS)
    fail (ctx, SB_STAGE_KEYRING, errno, -1);

  /* 4. The mount table.  Nothing we mount may propagate back to the host. */
  if (cfg->clone_flags & CLONE_NEWNS)
    CHECK (mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), SB_STAGE_MOUNT_PRIVATE);

  int rootfd = -1;
  for (size_t i = 0; i < cfg->n_ops; i++)
    {
      const struct sb_op *op = &cfg->ops[i];
      if (run_op (cfg, op, &rootfd) == 0)
        continue;
      if ((op->flags & SB_OPF_OPTIONAL) && (errno == ENOENT || errno == EROFS || errno == ENOTDIR))
        continue;
      fail (ctx, SB_STAGE_OP, errno, (int) i);
    }

  if (rootfd >= 0)
    close (rootfd);

  /* 6. pivot_root(".", "."): stack the old root under the new one and detach it, so no path
   * leads back to the host (the method runc and LXC use; no put_old directory needed). */
  if (cfg->newroot)
    {
      CHECK (chdir (cfg->newroot), SB_STAGE_PIVOT);
      CHECK (sb_pivot_root (".", "."), SB_STAGE_PIVOT);
      CHECK (umount2 (".", MNT_DETACH), SB_STAGE_PIVOT);
      CHECK (chdir ("/"), SB_STAGE_PIVOT);
    }

  if (cfg->hostname)
    CHECK (sethostname (cfg->hostname, sb_strlen (cfg->hostname)), SB_STAGE_HOSTNAME);

  if (cfg->loopback_up)
    CHECK (loopback_up (), SB_STAGE_LOOPBACK);

  for (size_t i = 0; i < cfg->n_rlimits; i++)
    CHECK (setrlimit (cfg->rlimits[i].resource, &cfg->rlimits[i].limit), SB_STAGE_RLIMIT);

  if (cfg->cwd)
    {
      if (chdir (cfg->cwd) < 0)
        {
          if (!(cfg->mkdir_cwd && errno == ENOENT))
            fail (ctx, SB_STAGE_CWD, errno, -1);
          CHECK (mkdir_p (cfg->cwd), SB_STAGE_CWD);
          CHECK (chdir (cfg->cwd), SB_STAGE_CWD);
        }
    }

  /* Seccomp, as late as it can be: loading a filter needs no_new_privs or CAP_SYS_ADMIN, so
   * without no_new_privs it goes in while we still hold every capability (runc's order); the
   * steps below are then filtered too, and Docker's profile allows them. */
  if (cfg->seccomp_len && !cfg->no_new_privs)
    CHECK (install_seccomp (cfg), SB_STAGE_SECCOMP);

  /* 7. Privileges: bounding set first (needs CAP_SETPCAP), then ids (raw syscalls: the libc
   * wrappers broadcast to all threads of a process we share memory with), then caps. */
  if (cfg->set_caps)
    CHECK (drop_bounding (cfg->caps, cfg->cap_last), SB_STAGE_CAPBSET);

  if (cfg->set_ids)
    {
      if (cfg->set_groups)
        CHECK (syscall (SYS_setgroups, cfg->n_groups, cfg->groups), SB_STAGE_SETGROUPS);
      CHECK (syscall (SYS_setresgid, cfg->gid, cfg->gid, cfg->gid), SB_STAGE_SETGID);
      CHECK (syscall (SYS_setresuid, cfg->uid, cfg->uid, cfg->uid), SB_STAGE_SETUID);
      /* A change of ids clears the parent-death signal (prctl(2)): arm it again, then make sure
       * the parent did not die in between, which no signal would now tell us. */
      if (cfg->die_with_parent)
        {
          CHECK (prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), SB_STAGE_PDEATHSIG);
          if (parent_gone (ctx->report_fd))
            _exit (127);
        }
    }

  /* A uid 0 process keeps exactly `caps`; any other uid loses them all at execve (and after
   * setresuid to non-zero there is nothing left to set). */
  if (cfg->set_caps && (!cfg->set_ids || cfg->uid == 0))
    CHECK (set_caps (cfg->caps), SB_STAGE_CAPSET);

  if (cfg->no_new_privs)
    CHECK (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), SB_STAGE_NO_NEW_PRIVS);

  /* 8. stdio.  The parent guarantees every source fd is >= 3 or already in place.  Without a
   * pty of its own the sandbox gets a new session, so it cannot push input into a terminal
   * it inherited (TIOCSTI needs the tty to be the caller's controlling terminal). */
  if (cfg->console_socket >= 0)
    {
      int slave = open_console (cfg);
      CHECK (slave, SB_STAGE_CONSOLE);
      for (int i = 0; i < 3; i++)
        CHECK (dup2 (slave, i), SB_STAGE_STDIO);
    }
  else
    for (int i = 0; i < 3; i++)
      if (cfg->stdio[i] >= 0 && cfg->stdio[i] != i)
        CHECK (dup2 (cfg->stdio[i], i), SB_STAGE_STDIO);

  if (cfg->setsid)
    CHECK (setsid (), SB_STAGE_SETSID);
  if (cfg->ctty)
    CHECK (ioctl (0, TIOCSCTTY, 0), SB_STAGE_SETSID);

  CHECK (cloexec_fds (cfg), SB_STAGE_CLOSE_FDS);

  if (cfg->seccomp_len && cfg->no_new_privs)
    CHECK (install_seccomp (cfg), SB_STAGE_SECCOMP);

  /* 9. Exec.  With an init, resolve the command first so "not found" is reported precisely,
   * then exec the init with the resolved path in argv[1] (`sbx-init PATH ARGV0 ARGS...`).
   * With a start fd, resolve it too (runc looks the command up before its exec.fifo), report
   * READY, and exec only once a byte arrives: the start of OCI create/start.  The start fd is
   * close-on-exec since cloexec_fds(), so the command never sees it. */
  if ((cfg->init_fd >= 0 || cfg->start_fd >= 0) && exec_search (cfg, resolved, 1) < 0)
    fail (ctx, SB_STAGE_EXEC, errno, -1);
  if (cfg->start_fd >= 0)
    exec_holder (ctx, resolved);

  CHECK (sigprocmask (SIG_SETMASK, &ctx->child_sigmask, NULL), SB_STAGE_SIGNALS);

  if (cfg->init_fd >= 0)
    {
      ctx->init_argv[1] = resolved;
      sb_execveat (cfg->init_fd, "", ctx->init_argv, cfg->envp, AT_EMPTY_PATH);
      fail (ctx, SB_STAGE_INIT, errno, -1);
    }

  if (cfg->start_fd >= 0)
    execve (resolved, cfg->argv, cfg->envp);
  else
    exec_search (cfg, resolved, 0);
  fail (ctx, SB_STAGE_EXEC, errno, -1);
}
