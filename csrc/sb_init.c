/* sb_init.c - `sbx-init PATH ARGV0 [ARGS...]`: the --init process (PID 1 of a sandbox), and
 * the holder of a container between OCI create and start (`sbx-start:R:S:I PATH ARGV0 ...`).
 *
 * Built statically and without libc (it runs inside any root filesystem, from a sealed memfd
 * copy made for every launch that uses it: at ~10 KB the copy and the exec cost tens of
 * microseconds, where a static glibc binary costs ~1 ms), and exec'd by the launcher from an fd
 * opened before pivot_root.  It starts the command as its child in a process group of its
 * own (the foreground group when stdin is a terminal), forwards every catchable signal to it,
 * reaps every zombie re-parented to PID 1, and exits with the command's status (128+N when
 * the command was killed by signal N), as tini and docker-init do.
 *
 * Holder: a launch with a start fd (OCI create) does everything but the command's execve, then
 * execs this binary from the same sealed memfd (csrc/sb_child.c, exec_holder), with argv[0]
 * "sbx-start:R:S:I" (R the launcher's report fd, S the start fd, I 1 to go on as the init once
 * started), the resolved PATH, the command's argv and its environment.  Until start, the
 * container's pid 1 is then this small static program: none of the caller's memory (sbx-runc's
 * environment, its parsed config) is left in /proc/1/mem, and /proc/1/exe is the sealed memfd,
 * not the host's python (CVE-2019-5736's class, which runc closed the same way).  It reports
 * READY on R, waits for one byte on S, and execs PATH; a failed execve is reported on R as the
 * launcher's own child reports it ({SB_STAGE_EXEC, errno}), and R is close-on-exec, so EOF there
 * still means the command runs.  Caps, ids, no_new_privs, seccomp, rlimits, cwd and stdio were
 * set by the launcher and carry across both execs.
 *
 * Without libc: headers give constants only (a libc call would not link), syscalls are made by
 * sys() below, and _start hands the initial stack to start_c().
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sb_launch.h"

#if defined(__x86_64__)
__asm__ (".text\n.global _start\n_start:\n"
         "  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call start_c\n  hlt\n");

static long
sys (long n, long a, long b, long c, long d, long e)
{
  register long r10 __asm__ ("r10") = d;
  register long r8 __asm__ ("r8") = e;
  long ret;
  __asm__ volatile ("syscall" : "=a" (ret) : "a" (n), "D" (a), "S" (b), "d" (c), "r" (r10), "r" (r8)
                    : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
__asm__ (".text\n.global _start\n_start:\n"
         "  mov x29, #0\n  mov x30, #0\n  mov x0, sp\n  and x1, x0, #-16\n  mov sp, x1\n  bl start_c\n");

static long
sys (long n, long a, long b, long c, long d, long e)
{
  register long x8 __asm__ ("x8") = n;
  register long x0 __asm__ ("x0") = a;
  register long x1 __asm__ ("x1") = b;
  register long x2 __asm__ ("x2") = c;
  register long x3 __asm__ ("x3") = d;
  register long x4 __asm__ ("x4") = e;
  __asm__ volatile ("svc 0" : "+r" (x0) : "r" (x8), "r" (x1), "r" (x2), "r" (x3), "r" (x4) : "memory", "cc");
  return x0;
}
#else
# error "sbx-init: add _start and sys() for this architecture"
#endif

#define SYS(n, a, b, c) sys ((n), (long) (a), (long) (b), (long) (c), 0, 0)
#define KSIGSET 8  /* the kernel's sigset_t: 64 signals */

static void __attribute__ ((noreturn))
die (int code)
{
  for (;;)
    SYS (SYS_exit_group, code, 0, 0);
}

static unsigned long
slen (const char *s)
{
  unsigned long n = 0;
  while (s[n])
    n++;
  return n;
}

static void
say (const char *s)
{
  SYS (SYS_write, 2, s, slen (s));
}

/* The messages of the errors an exec of the command can end in (no strerror without libc). */
static const char *
why (long err)
{
  switch (err)
    {
    case ENOENT: return "No such file or directory";
    case EACCES: return "Permission denied";
    case ENOEXEC: return "Exec format error";
    case ENOTDIR: return "Not a directory";
    case ENOMEM: return "Cannot allocate memory";
    case E2BIG: return "Argument list too long";
    case ELOOP: return "Too many levels of symbolic links";
    case ETXTBSY: return "Text file busy";
    case EPERM: return "Operation not permitted";
    case EAGAIN: return "Resource temporarily unavailable";
    default: return "error";
    }
}

static void
report (int fd, int stage, int err)
{
  struct sb_report r = { stage, err, -1, 0 };
  SYS (SYS_write, fd, &r, sizeof r);
}

static const char *
parse_int (const char *p, int *out)
{
  int v = 0;
  while (*p >= '0' && *p <= '9')
    v = v * 10 + (*p++ - '0');
  *out = v;
  return p;
}

static void
set_mask (unsigned long mask)
{
  sys (SYS_rt_sigprocmask, SIG_SETMASK, (long) &mask, 0, KSIGSET, 0);
}

#define HOLDER_PREFIX "sbx-start:"

/* The holder: returns only to go on as the init; else execs the command or exits. */
static void
hold (int argc, char **argv, char **envp)
{
  int report_fd, start_fd = -1, as_init = 0;
  const char *p = parse_int (argv[0] + sizeof HOLDER_PREFIX - 1, &report_fd);
  if (*p == ':')
    p = parse_int (p + 1, &start_fd);
  if (*p == ':')
    parse_int (p + 1, &as_init);
  if (argc < 3 || report_fd < 3 || start_fd < 3)
    die (125);
  /* Neither fd may reach the command: the report pipe's EOF is how the launcher learns the
   * exec happened. */
  SYS (SYS_fcntl, report_fd, F_SETFD, FD_CLOEXEC);
  SYS (SYS_fcntl, start_fd, F_SETFD, FD_CLOEXEC);
  report (report_fd, SB_STAGE_READY, 0);
  char go;
  long n;
  do
    n = SYS (SYS_read, start_fd, &go, 1);
  while (n == -EINTR);
  if (n != 1)
    die (127);  /* EOF: the launch was aborted; whoever closed it knows why */
  SYS (SYS_close, start_fd, 0, 0);
  if (as_init)
    {
      SYS (SYS_close, report_fd, 0, 0);
      return;
    }
  set_mask (0);
  long err = SYS (SYS_execve, argv[1], argv + 2, envp);
  report (report_fd, SB_STAGE_EXEC, (int) -err);
  die (127);
}

/* sigaction(sig, SIG_IGN or SIG_DFL): the kernel's struct (handler, flags, restorer, mask). */
static void
disposition (int sig, long handler)
{
  long act[4] = { handler, 0, 0, 0 };
  sys (SYS_rt_sigaction, sig, (long) act, 0, KSIGSET, 0);
}

static int
init_main (int argc, char **argv, char **envp)
{
  if (argc < 3)
    {
      say ("usage: sbx-init PATH ARGV0 [ARGS...]\n");
      return 125;
    }

  set_mask (~0UL);

  long child = sys (SYS_clone, SIGCHLD, 0, 0, 0, 0);  /* fork */
  if (child < 0)
    {
      say ("sbx-init: fork: ");
      say (why (-child));
      say ("\n");
      return 125;
    }
  if (child == 0)
    {
      SYS (SYS_setpgid, 0, 0, 0);
      char termios[64];
      if (SYS (SYS_ioctl, 0, TCGETS, termios) == 0)
        {
          int me = (int) SYS (SYS_getpid, 0, 0, 0);
          disposition (SIGTTOU, (long) SIG_IGN);
          SYS (SYS_ioctl, 0, TIOCSPGRP, &me);
          disposition (SIGTTOU, (long) SIG_DFL);
        }
      set_mask (0);
      long e = -SYS (SYS_execve, argv[1], argv + 2, envp);
      say ("sbx-init: exec ");
      say (argv[1]);
      say (": ");
      say (why (e));
      say ("\n");
      die (e == ENOENT ? 127 : 126);
    }

  for (;;)
    {
      unsigned long all = ~0UL;
      long sig = sys (SYS_rt_sigtimedwait, (long) &all, 0, 0, KSIGSET, 0);
      if (sig < 0)
        continue;
      if (sig != SIGCHLD)
        {
          /* Terminal job-control signals aimed at us are for the command too. */
          SYS (SYS_kill, child, sig, 0);
          continue;
        }
      for (;;)
        {
          int st;
          long p = sys (SYS_wait4, -1, (long) &st, WNOHANG, 0, 0);
          if (p <= 0)
            break;
          if (p != child)
            continue;
          if (WIFEXITED (st))
            return WEXITSTATUS (st);
          if (WIFSIGNALED (st))
            return 128 + WTERMSIG (st);
        }
    }
}

void __attribute__ ((noreturn, used))
start_c (long *sp)
{
  int argc = (int) sp[0];
  char **argv = (char **) (sp + 1);
  char **envp = argv + argc + 1;
  const char *prefix = HOLDER_PREFIX;
  int holder = argc > 0;
  for (unsigned long i = 0; holder && prefix[i]; i++)
    holder = argv[0][i] == prefix[i];
  if (holder)
    {
      hold (argc, argv, envp);
      argv[0] = (char *) "sbx-init";
    }
  die (init_main (argc, argv, envp));
}
