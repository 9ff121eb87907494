/* sb_wait.c - wait for a sandbox while forwarding signals to it (the CLI's foreground path).
 *
 * The signals are blocked and taken synchronously with sigwaitinfo, so no Python handler runs
 * and nothing is lost between "child exited" and "start waiting": SIGCHLD stays pending while
 * blocked.  Signals still pending when the child is gone are drained, not delivered to us. */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include "sb_wait.h"

int
sb_wait_forward (pid_t pid, const int *sigs, size_t nsigs, int *status)
{
  sigset_t set, old;
  sigemptyset (&set);
  sigaddset (&set, SIGCHLD);
  for (size_t i = 0; i < nsigs; i++)
    sigaddset (&set, sigs[i]);
  pthread_sigmask (SIG_BLOCK, &set, &old);

  int ret = 0;
  for (;;)
    {
      pid_t r = waitpid (pid, status, WNOHANG | __WALL);
      if (r == pid)
        break;
      if (r < 0 && errno != EINTR)
        {
          ret = -errno;
          break;
        }
      siginfo_t si;
      int s = sigwaitinfo (&set, &si);
      if (s > 0 && s != SIGCHLD)
        kill (pid, s);
    }

  struct timespec zero = { 0, 0 };
  siginfo_t si;
  while (sigtimedwait (&set, &si, &zero) > 0)
    ;
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (ret < 0)
    errno = -ret;
  return ret < 0 ? -1 : 0;
}
