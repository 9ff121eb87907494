/* sb_init.c - `sbx-init PATH ARGV0 [ARGS...]`: the --init process (PID 1 of a sandbox), and
 * the holder of a container between OCI create and start (`sbx-start:R:S:I PATH ARGV0 ...`).
 *
 * Built statically (it runs inside any root filesystem) and exec'd by the launcher from an fd
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
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "sb_launch.h"

#define HOLDER_PREFIX "sbx-start:"

static void
report (int fd, int stage, int err)
{
  struct sb_report r = { stage, err, -1, 0 };
  ssize_t unused = write (fd, &r, sizeof r);
  (void) unused;
}

/* The holder: returns (with argv shifted) only to go on as the init; else execs or exits. */
static int
hold (int argc, char **argv)
{
  char *p = argv[0] + sizeof HOLDER_PREFIX - 1;
  int report_fd = (int) strtol (p, &p, 10);
  int start_fd = *p == ':' ? (int) strtol (p + 1, &p, 10) : -1;
  int as_init = *p == ':' && p[1] == '1';
  if (argc < 3 || report_fd < 3 || start_fd < 3)
    _exit (125);
  /* Neither fd may reach the command: the report pipe's EOF is how the launcher learns the
   * exec happened. */
  fcntl (report_fd, F_SETFD, FD_CLOEXEC);
  fcntl (start_fd, F_SETFD, FD_CLOEXEC);
  report (report_fd, SB_STAGE_READY, 0);
  char go;
  ssize_t n;
  do
    n = read (start_fd, &go, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1)
    _exit (127);  /* EOF: the launch was aborted; whoever closed it knows why */
  close (start_fd);
  if (as_init)
    {
      close (report_fd);
      return 0;
    }
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  execv (argv[1], argv + 2);
  report (report_fd, SB_STAGE_EXEC, errno);
  _exit (127);
}

int
main (int argc, char **argv)
{
  if (argc > 0 && strncmp (argv[0], HOLDER_PREFIX, sizeof HOLDER_PREFIX - 1) == 0)
    {
      hold (argc, argv);
      argv[0] = (char *) "sbx-init";
    }

  sigset_t all, none;
  sigfillset (&all);
  sigemptyset (&none);

  if (argc < 3)
    {
      fprintf (stderr, "usage: sbx-init PATH ARGV0 [ARGS...]\n");
      return 125;
    }

  sigprocmask (SIG_SETMASK, &all, NULL);

  pid_t child = fork ();
  if (child < 0)
    {
      fprintf (stderr, "sbx-init: fork: %s\n", strerror (errno));
      return 125;
    }
  if (child == 0)
    {
      setpgid (0, 0);
      if (isatty (0))
        {
          signal (SIGTTOU, SIG_IGN);
          tcsetpgrp (0, getpid ());
          signal (SIGTTOU, SIG_DFL);
        }
      sigprocmask (SIG_SETMASK, &none, NULL);
      execv (argv[1], argv + 2);
      int e = errno;
      fprintf (stderr, "sbx-init: exec %s: %s\n", argv[1], strerror (e));
      _exit (e == ENOENT ? 127 : 126);
    }

  for (;;)
    {
      siginfo_t info;
      int sig = sigwaitinfo (&all, &info);
      if (sig < 0)
        continue;
      if (sig != SIGCHLD)
        {
          /* Terminal job-control signals aimed at us are for the command too. */
          kill (child, sig);
          continue;
        }
      for (;;)
        {
          int st;
          pid_t p = waitpid (-1, &st, WNOHANG);
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
