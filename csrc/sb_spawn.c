/* sb_spawn.c - the parent side of a launch: clone the child, feed it id maps when a helper
 * must write them, and collect its {stage, errno} report.
 *
 * Two clone modes:
 *  - CLONE_VM|CLONE_VFORK (single-id maps, or no new user namespace): the child borrows the
 *    parent's memory and the parent sleeps until the child execs or exits, as posix_spawn and
 *    CPython's vfork path do.  No page tables are copied, which keeps a launch from a large
 *    Python process cheap.
 *  - a fork-like clone (subuid ranges, a two-phase launch, an exec joining a sandbox): the
 *    child waits on a pipe while the parent runs newuidmap/newgidmap for it, or runs the
 *    caller's hooks between sb_spawn_create and sb_spawn_release, which it cannot do while
 *    suspended.
 * Either way the child reports failures on a CLOEXEC pipe: EOF means exec succeeded.  A
 * two-phase launch also gets markers there: HELD (create returns) and, with a start fd, READY
 * (release returns; the exec's own result comes later, sb_spawn_wait_exec).
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include "sb_common.h"
#include "sb_launch.h"
#include "sb_child.h"
#include "sb_syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define SB_STACK_SIZE (256 * 1024)
#define SB_HELPER_ARGS 64

static int
sb_fail (struct sb_error *err, int stage, int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

static int
sb_fail (struct sb_error *err, int stage, int errnum, const char *fmt, ...)
{
  va_list ap;
  err->stage = stage;
  err->err = errnum;
  err->op = -1;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  return -1;
}


/* Kill and reap a child on every error path after clone (crun's cleanup_pid). */
static void
reap_child (pid_t *pid)
{
  if (*pid > 0)
    {
      int saved = errno, st;
      kill (*pid, SIGKILL);
      while (waitpid (*pid, &st, __WALL) < 0 && errno == EINTR)
        ;
      errno = saved;
      *pid = 0;
    }
}
#define cleanup_pid __attribute__ ((cleanup (reap_child)))

/* newuidmap/newgidmap PID ...: started together (they write different files of the same
 * child), then waited for; a helper's stderr ends up in err->msg. */
struct map_helper
{
  pid_t pid;
  int out;        /* read end of its stdout+stderr */
  const char *name;
};

static int
start_map_helper (char *const *argv_in, pid_t child, int stage, struct map_helper *h, struct sb_error *err)
{
  char *argv[SB_HELPER_ARGS];
  char pidbuf[24];
  size_t n = 0;
  while (argv_in[n] && n < SB_HELPER_ARGS - 1)
    {
      argv[n] = argv_in[n];
      n++;
    }
  argv[n] = NULL;
  if (n < 2)
    return sb_fail (err, stage, EINVAL, "bad id-map helper command");
  snprintf (pidbuf, sizeof pidbuf, "%d", (int) child);
  argv[1] = pidbuf;
  h->name = argv_in[0];

  int p[2];
  if (pipe2 (p, O_CLOEXEC) < 0)
    return sb_fail (err, SB_STAGE_PARENT, errno, "pipe");
  cleanup_fd int out_w = p[1];
  h->out = p[0];

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_adddup2 (&fa, out_w, 2);
  posix_spawn_file_actions_adddup2 (&fa, out_w, 1);
  int rc = posix_spawn (&h->pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  if (rc != 0)
    {
      close_quietly (&h->out);
      h->pid = 0;
      return sb_fail (err, stage, rc, "%s", argv[0]);
    }
  return 0;
}

static int
finish_map_helper (struct map_helper *h, int stage, struct sb_error *err)
{
  char msg[200];
  size_t got = 0;
  while (got < sizeof msg - 1)
    {
      ssize_t r = read (h->out, msg + got, sizeof msg - 1 - got);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      got += (size_t) r;
    }
  close_quietly (&h->out);
  msg[got] = '\0';
  while (got > 0 && (msg[got - 1] == '\n' || msg[got - 1] == ' '))
    msg[--got] = '\0';

  int st;
  while (waitpid (h->pid, &st, 0) < 0)
    if (errno != EINTR)
      return sb_fail (err, stage, errno, "waitpid %s", h->name);
  if (!WIFEXITED (st) || WEXITSTATUS (st) != 0)
    return sb_fail (err, stage, EPERM, "%s", got ? msg : h->name);
  return 0;
}

static int
run_map_helpers (const struct sb_config *cfg, pid_t child, struct sb_error *err)
{
  struct map_helper u = { 0, -1, NULL }, g = { 0, -1, NULL };
  struct sb_error gerr;
  if (start_map_helper (cfg->newuidmap_argv, child, SB_STAGE_NEWUIDMAP, &u, err) < 0)
    return -1;
  int grc = start_map_helper (cfg->newgidmap_argv, child, SB_STAGE_NEWGIDMAP, &g, &gerr);
  int urc = finish_map_helper (&u, SB_STAGE_NEWUIDMAP, err);
  if (grc == 0)
    grc = finish_map_helper (&g, SB_STAGE_NEWGIDMAP, &gerr);
  if (urc < 0)
    return -1;
  if (grc < 0)
    {
      *err = gerr;
      return -1;
    }
  return 0;
}

/* Read {stage, errno} reports until EOF or, with `stop`, until a report of that stage (a marker
 * of a two-phase launch).  Returns 1 at the marker, 0 at EOF, -1 after a failure report (err
 * filled in) or a short read.  After a failure it reads on to EOF, which comes once the child
 * (and the process it forked, if it joined a pid namespace) has exec'd or exited: after a fork
 * two processes write here and the new one's failure can arrive before the "forked" message;
 * both must be known, or a failed process would stay an unreaped zombie inside the sandbox's
 * pid namespace, where it keeps PID 1 from ever finishing its exit. */
static int
read_reports (int fd, int stop, struct sb_error *err)
{
  struct sb_report rep, failure = { 0, 0, -1, 0 };
  int failed = 0;
  for (;;)
    {
      ssize_t n;
      do
        n = read (fd, &rep, sizeof rep);
      while (n < 0 && errno == EINTR);
      if (n == 0)
        break;
      if (n != (ssize_t) sizeof rep)
        return sb_fail (err, SB_STAGE_PARENT, n < 0 ? errno : EIO, "short report from child");
      if (rep.stage == SB_STAGE_HELD || rep.stage == SB_STAGE_READY)
        {
          if (!failed && rep.stage == stop)
            return 1;
          continue;
        }
      if (!failed)
        {
          failure = rep;
          failed = 1;
        }
    }
  if (!failed)
    return 0;
  err->stage = failure.stage;
  err->err = failure.err;
  err->op = failure.op;
  err->msg[0] = '\0';
  return -1;
}

/* Exec into a joined pid namespace: the child forked the process that execs (CLONE_PARENT, so
 * it is ours) and wrote its pid from clone's return value before exiting; it is there once the
 * forked process has reported (or the report pipe is at EOF).  Reap the intermediate child and
 * make the forked process the handle's. */
static void
collect_forked (struct sb_handle *h)
{
  if (h->pid_r < 0)
    return;
  pid_t got = 0;
  ssize_t n;
  do
    n = read (h->pid_r, &got, sizeof got);
  while (n < 0 && errno == EINTR);
  close_quietly (&h->pid_r);
  if (n != (ssize_t) sizeof got || got <= 0)
    return;
  int st;
  while (waitpid (h->pid, &st, __WALL) < 0 && errno == EINTR)
    ;
  h->pid = got;
  close_quietly (&h->pidfd);
  h->pidfd = (int) syscall (__NR_pidfd_open, got, 0);
}

static void
handle_init (struct sb_handle *h)
{
  h->state = SB_HANDLE_DONE;
  h->pid = 0;
  h->pidfd = h->report_r = h->sync_w = h->pid_r = -1;
  h->vfork = 0;
  h->wait_start = 0;
}

static void
handle_close_fds (struct sb_handle *h)
{
  close_quietly (&h->report_r);
  close_quietly (&h->sync_w);
  close_quietly (&h->pid_r);
  close_quietly (&h->pidfd);
}

void
sb_spawn_abort (struct sb_handle *h)
{
  if (h->state != SB_HANDLE_DONE && h->pid > 0)
    {
      /* Through the pidfd, which cannot name a recycled pid (the caller may already have
       * reaped a child that was waiting to start). */
      if (h->pidfd >= 0)
        syscall (__NR_pidfd_send_signal, h->pidfd, SIGKILL, NULL, 0);
      else
        kill (h->pid, SIGKILL);
      if (h->pid_r >= 0)
        collect_forked (h);  /* a process forked into a joined pid namespace is ours too */
      int st;
      while (waitpid (h->pid, &st, __WALL) < 0 && errno == EINTR)
        ;
    }
  h->pid = 0;
  h->state = SB_HANDLE_DONE;
  handle_close_fds (h);
}

void
sb_spawn_close (struct sb_handle *h)
{
  if (h->state == SB_HANDLE_HELD)
    sb_spawn_abort (h);
  h->state = SB_HANDLE_DONE;
  handle_close_fds (h);
}

/* Clone the child and run the id-map helpers; with `hold`, wait until the child reports HELD. */
static int
spawn_begin (const struct sb_config *cfg, int hold, struct sb_handle *h, struct sb_error *err)
{
  cleanup_fd int report_r = -1;
  cleanup_fd int report_w = -1;
  cleanup_fd int sync_r = -1;
  cleanup_fd int sync_w = -1;
  cleanup_fd int pid_r = -1;
  cleanup_fd int pid_w = -1;
  cleanup_pid pid_t pid = 0;
  cleanup_fd int pidfd = -1;
  int p[2];
  int helper = cfg->userns_mode == SB_USERNS_HELPER;
  struct sb_child_ctx ctx;

  memset (err, 0, sizeof *err);
  err->op = -1;
  handle_init (h);

  if (cfg->start_fd >= 0 && !hold)
    return sb_fail (err, SB_STAGE_PARENT, EINVAL, "a start fd needs a two-phase launch");

  if (pipe2 (p, O_CLOEXEC) < 0)
    return sb_fail (err, SB_STAGE_PARENT, errno, "pipe");
  report_r = p[0];
  report_w = p[1];
  if (helper || hold)
    {
      if (pipe2 (p, O_CLOEXEC) < 0)
        return sb_fail (err, SB_STAGE_PARENT, errno, "pipe");
      sync_r = p[0];
      sync_w = p[1];
    }

  if (cfg->n_setns)
    {
      if (pipe2 (p, O_CLOEXEC) < 0)
        return sb_fail (err, SB_STAGE_PARENT, errno, "pipe");
      pid_r = p[0];
      pid_w = p[1];
    }

  char **init_argv = NULL;
  if (cfg->init_fd >= 0 || cfg->hold_fd >= 0)  /* the holder takes the same argv */
    {
      size_t n = 0;
      while (cfg->argv[n])
        n++;
      init_argv = calloc (n + 3, sizeof *init_argv);
      if (!init_argv)
        return sb_fail (err, SB_STAGE_PARENT, ENOMEM, "calloc");
      init_argv[0] = (char *) "sbx-init";
      for (size_t i = 0; i < n; i++)
        init_argv[i + 2] = cfg->argv[i];
    }

  /* A new sandbox joining a kept user namespace: the child setns()es it (a vfork-like child
   * may: it is a thread group of its own with its own fs_struct), makes the other namespaces
   * inside it and, for the new pid namespace, clones once more vfork-like (sb_child.c) on the
   * lower half of this mapping. */
  int vfork_join = cfg->n_setns && cfg->clone_flags && !helper && !hold;
  size_t stack_size = vfork_join ? 2 * SB_STACK_SIZE : SB_STACK_SIZE;
  void *stack = mmap (NULL, stack_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED)
    {
      free (init_argv);
      return sb_fail (err, SB_STAGE_PARENT, errno, "mmap child stack");
    }

  ctx.cfg = cfg;
  ctx.report_fd = report_w;
  ctx.sync_fd = sync_r;
  ctx.pid_fd = pid_w;
  ctx.hold = hold;
  ctx.init_argv = init_argv;
  ctx.shared_vm = vfork_join;
  ctx.fork_stack = vfork_join ? (char *) stack + SB_STACK_SIZE : NULL;
  sigemptyset (&ctx.child_sigmask);

  /* Block every signal around clone so no handler of ours runs in the child before it has
   * reset the dispositions (CPython does the same around vfork). */
  sigset_t all, old;
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);

  /* vfork-like only when the parent has nothing to do until the child execs: the id-map
   * helpers, a hold and a start fd all need the parent running while the child waits, and an
   * exec joining a sandbox wipes its inherited argv/environment and turns non-dumpable before
   * it joins, which must happen in memory of its own, never in the caller's. */
  /* With namespaces to join, the new ones are made by the child after it joined (unshare):
   * made inside a joined user namespace, they belong to it. */
  int flags = (cfg->n_setns ? 0 : cfg->clone_flags) | SIGCHLD | CLONE_PIDFD;
  if (!helper && !hold && (!cfg->n_setns || vfork_join))
    flags |= CLONE_VM | CLONE_VFORK;
  pid = clone (sb_child_main, (char *) stack + stack_size, flags, &ctx, &pidfd);
  if (pid < 0 && errno == EINVAL)
    {
      /* Kernels before 5.2 have no CLONE_PIDFD. */
      pidfd = -1;
      pid = clone (sb_child_main, (char *) stack + stack_size, flags & ~CLONE_PIDFD, &ctx, NULL);
    }
  int clone_errno = errno;
  pthread_sigmask (SIG_SETMASK, &old, NULL);

  /* After a vfork-style clone the child has exec'd or exited; after a fork-like one it has its
   * own copy of the stack, the plan and init_argv.  Either way ours can go. */
  munmap (stack, stack_size);
  free (init_argv);
  if (pid < 0)
    {
      pid = 0;
      return sb_fail (err, SB_STAGE_CLONE, clone_errno, "clone");
    }

  close_quietly (&report_w);
  close_quietly (&sync_r);
  close_quietly (&pid_w);

  if (helper)
    {
      if (run_map_helpers (cfg, pid, err) < 0)
        return -1;  /* cleanup_pid kills and reaps the child, cleanup_fd closes the pipes */
      if (write (sync_w, "1", 1) != 1)
        return sb_fail (err, SB_STAGE_SYNC, errno, "release child");
      if (!hold)
        close_quietly (&sync_w);
    }

  /* The handle owns the child and the fds from here on. */
  h->state = SB_HANDLE_HELD;
  h->vfork = (flags & CLONE_VFORK) != 0;
  h->wait_start = cfg->start_fd >= 0;
  h->report_r = report_r;
  h->pid_r = pid_r;
  h->sync_w = sync_w;
  h->pidfd = pidfd;
  h->pid = pid;
  report_r = pid_r = sync_w = pidfd = -1;
  pid = 0;
  if (!hold)
    return 0;

  /* The child writes HELD once its id maps are in place, just before it blocks on the sync
   * pipe; anything else is a failure of a step before that, or an exit. */
  int rc = read_reports (h->report_r, SB_STAGE_HELD, err);
  collect_forked (h);
  if (rc == 1)
    return 0;
  if (rc == 0)
    sb_fail (err, SB_STAGE_PARENT, ECHILD, "the child exited before it was held");
  sb_spawn_abort (h);
  return -1;
}

/* Let a held child go on (hold) and read its reports to EOF, or to READY with a start fd. */
static int
spawn_finish (struct sb_handle *h, struct sb_result *res, struct sb_error *err)
{
  res->pid = -1;
  res->pidfd = -1;
  res->vfork = h->vfork;
  if (h->sync_w >= 0)
    {
      if (write (h->sync_w, "1", 1) != 1)
        {
          sb_fail (err, SB_STAGE_SYNC, errno, "release child");
          sb_spawn_abort (h);
          return -1;
        }
      close_quietly (&h->sync_w);
    }

  int rc = read_reports (h->report_r, h->wait_start ? SB_STAGE_READY : 0, err);
  if (rc != 1)
    collect_forked (h);
  if (rc < 0 || (rc == 0 && h->wait_start))
    {
      if (rc == 0)
        sb_fail (err, SB_STAGE_PARENT, ECHILD, "the child exited before it was ready");
      sb_spawn_abort (h);  /* kill and reap whatever is left */
      return -1;
    }

  res->pid = h->pid;
  if (rc == 1)
    {
      /* Waiting to start: the handle keeps the report pipe and a pidfd of its own to abort. */
      h->state = SB_HANDLE_WAITING;
      res->pidfd = h->pidfd >= 0 ? fcntl (h->pidfd, F_DUPFD_CLOEXEC, 3) : -1;
      if (h->pidfd >= 0 && res->pidfd < 0)
        {
          sb_fail (err, SB_STAGE_PARENT, errno, "dup pidfd");
          sb_spawn_abort (h);
          return -1;
        }
      return 0;
    }
  res->pidfd = h->pidfd;
  h->pidfd = -1;  /* the caller's now */
  h->pid = 0;
  h->state = SB_HANDLE_DONE;
  handle_close_fds (h);
  return 0;
}

int
sb_spawn (const struct sb_config *cfg, struct sb_result *res, struct sb_error *err)
{
  struct sb_handle h;
  res->pid = -1;
  res->pidfd = -1;
  res->vfork = 0;
  if (spawn_begin (cfg, 0, &h, err) < 0)
    return -1;
  return spawn_finish (&h, res, err);
}

int
sb_spawn_create (const struct sb_config *cfg, struct sb_handle *h, struct sb_error *err)
{
  return spawn_begin (cfg, 1, h, err);
}

int
sb_spawn_release (struct sb_handle *h, struct sb_result *res, struct sb_error *err)
{
  memset (err, 0, sizeof *err);
  err->op = -1;
  if (h->state != SB_HANDLE_HELD)
    return sb_fail (err, SB_STAGE_PARENT, EINVAL, "the launch is not held");
  return spawn_finish (h, res, err);
}

int
sb_spawn_wait_exec (struct sb_handle *h, struct sb_error *err)
{
  memset (err, 0, sizeof *err);
  err->op = -1;
  if (h->state != SB_HANDLE_WAITING)
    return sb_fail (err, SB_STAGE_PARENT, EINVAL, "the launch is not waiting to start");
  int rc = read_reports (h->report_r, 0, err);
  if (rc < 0)
    {
      sb_spawn_abort (h);  /* the child exits 127 after its report: reap it */
      return -1;
    }
  h->pid = 0;
  h->state = SB_HANDLE_DONE;
  handle_close_fds (h);
  return 0;
}
