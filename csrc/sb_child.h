/* sb_child.h - what the parent hands the child besides the plan (private to csrc/). */
#ifndef SB_CHILD_H
#define SB_CHILD_H

#include <signal.h>
#include "sb_launch.h"

struct sb_child_ctx {
  const struct sb_config *cfg;
  int report_fd;          /* write end of the CLOEXEC report pipe */
  int sync_fd;            /* read end of the sync pipe (id maps written by a helper, or a hold),
                           * else -1 */
  int hold;               /* report HELD after the id maps, then wait for a byte on sync_fd */
  int pid_fd;             /* write end of the pipe that carries the pid of the process forked
                           * into a joined pid namespace (from clone's return value), else -1 */
  sigset_t child_sigmask; /* the mask the command starts with */
  char **init_argv;       /* {init, <resolved path slot>, argv...}, NULL without init */
  char *fork_stack;       /* shared_vm: the top of the stack of the process forked into a new
                           * pid namespace (the lower half of the parent's mapping) */
  int shared_vm;          /* cloned CLONE_VM|CLONE_VFORK: the fork into a pid namespace is one
                           * too (the parent sleeps until both have exec'd or exited) */
};

#endif
