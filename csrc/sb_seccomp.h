/* sb_seccomp.h - compile a seccomp profile to a BPF program with libseccomp (parent side only).
 *
 * sandbox/runtime/seccomp.py resolves a Docker/OCI profile for one container (includes/excludes on
 * capabilities, architecture and kernel version; conditions on one argument split as runc does)
 * into a flat list of rules; sandbox/_seccomp.pxi marshals it into these structs and calls
 * sb_seccomp_compile() without the GIL.  libseccomp only builds and exports the program: nothing is
 * loaded here and no_new_privs is not set; the launcher's child installs the returned
 * `struct sock_filter` array with seccomp(SECCOMP_SET_MODE_FILTER) just before execve. */
#ifndef SB_SECCOMP_H
#define SB_SECCOMP_H

#include <stddef.h>
#include <stdint.h>

/* The actions sbx accepts (SCMP_ACT_NOTIFY and SCMP_ACT_TRACE need a supervisor sbx does not run). */
enum sb_seccomp_action {
  SB_SECCOMP_KILL_THREAD,
  SB_SECCOMP_KILL_PROCESS,
  SB_SECCOMP_TRAP,
  SB_SECCOMP_ERRNO,
  SB_SECCOMP_LOG,
  SB_SECCOMP_ALLOW,
};

enum sb_seccomp_op {
  SB_SECCOMP_NE,
  SB_SECCOMP_LT,
  SB_SECCOMP_LE,
  SB_SECCOMP_EQ,
  SB_SECCOMP_GE,
  SB_SECCOMP_GT,
  SB_SECCOMP_MASKED_EQ, /* (arg & value) == value_two */
};

enum { SB_SECCOMP_MAX_ARGS = 6, SB_SECCOMP_MSG_SIZE = 256 };

struct sb_seccomp_arg {
  uint32_t index; /* 0..5 */
  uint32_t op;    /* enum sb_seccomp_op */
  uint64_t value;
  uint64_t value_two;
};

struct sb_seccomp_rule {
  const char *name; /* a syscall name; names libseccomp does not know are skipped (as runc does) */
  uint32_t action;  /* enum sb_seccomp_action */
  uint32_t errno_ret;
  const struct sb_seccomp_arg *args; /* all must match (AND); at most one per index */
  uint32_t n_args;
};

struct sb_seccomp_filter {
  uint32_t default_action; /* enum sb_seccomp_action */
  uint32_t default_errno;
  const char *const *arches; /* libseccomp names ("x86", "x32"); the native one is always there */
  size_t n_arches;
  const struct sb_seccomp_rule *rules;
  size_t n_rules;
};

struct sb_seccomp_error {
  int err;
  long rule; /* index into sb_seccomp_filter.rules of the rule refused, or -1 */
  char msg[SB_SECCOMP_MSG_SIZE];
};

/* Compile `f` into a malloc'd `struct sock_filter` array (*out, *out_len bytes; free() it).
   Rules whose action is the default action are dropped (libseccomp refuses them; runc skips them).
   *n_skipped counts rules naming syscalls unknown to libseccomp.  0, or -1 with `err` filled. */
int sb_seccomp_compile (const struct sb_seccomp_filter *f, unsigned char **out, size_t *out_len,
                        size_t *n_skipped, struct sb_seccomp_error *err);

/* libseccomp's run-time version, for cache keys. */
void sb_seccomp_version (unsigned v[3]);

#endif
