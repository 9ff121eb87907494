/* sb_common.h - parent-side helpers shared by csrc/ (never used in the child after clone). */
#ifndef SB_COMMON_H
#define SB_COMMON_H

#include <errno.h>
#include <unistd.h>

/* Close an fd when it goes out of scope, keeping errno (bubblewrap's/crun's cleanup_fd). */
static inline void
close_quietly (int *fd)
{
  if (*fd >= 0)
    {
      int saved = errno;
      close (*fd);
      errno = saved;
      *fd = -1;
    }
}
#define cleanup_fd __attribute__ ((cleanup (close_quietly)))

#endif
