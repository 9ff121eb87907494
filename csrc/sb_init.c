/* sb_init.c - `sbx-init PATH ARGV0 [ARGS...]`: the --init process (PID 1 of a sandbox).
 *
 * Built statically (it runs inside any root filesystem) and exec'd by the launcher from an fd
 * opened before pivot_root.  It starts the command as its child in a process group of its
 * own (the foreground group when stdin is a terminal), forwards every catchable signal to it,
 * reaps every zombie re-parented to PID 1, and exits with the command's status (128+N when
 * the command was killed by signal N), as tini and docker-init do.
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
#include <unistd.h>

int
main (int argc, char **argv)
{
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
