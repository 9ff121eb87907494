/* sb_seccomp.c - seccomp profile -> BPF with libseccomp (parent side only; see sb_seccomp.h). */
#include "sb_seccomp.h"

#include <errno.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sb_common.h"

static int __attribute__ ((format (printf, 3, 4)))
fail (struct sb_seccomp_error *err, int e, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  err->err = e;
  return -1;
}

/* fail() about rule `i` (Python then names the profile entry it came from). */
#define fail_rule(err, i, e, ...) ((err)->rule = (long) (i), fail ((err), (e), __VA_ARGS__))

static void
release_ctx (scmp_filter_ctx *ctx)
{
  if (*ctx != NULL)
    seccomp_release (*ctx);
}
#define cleanup_ctx __attribute__ ((cleanup (release_ctx)))

static int
to_action (uint32_t kind, uint32_t errno_ret, uint32_t *out)
{
  switch (kind)
    {
    case SB_SECCOMP_KILL_THREAD: *out = SCMP_ACT_KILL_THREAD; return 0;
    case SB_SECCOMP_KILL_PROCESS: *out = SCMP_ACT_KILL_PROCESS; return 0;
    case SB_SECCOMP_TRAP: *out = SCMP_ACT_TRAP; return 0;
    case SB_SECCOMP_ERRNO: *out = SCMP_ACT_ERRNO (errno_ret); return 0;
    case SB_SECCOMP_LOG: *out = SCMP_ACT_LOG; return 0;
    case SB_SECCOMP_ALLOW: *out = SCMP_ACT_ALLOW; return 0;
    default: return -1;
    }
}

static int
to_compare (uint32_t op, enum scmp_compare *out)
{
  switch (op)
    {
    case SB_SECCOMP_NE: *out = SCMP_CMP_NE; return 0;
    case SB_SECCOMP_LT: *out = SCMP_CMP_LT; return 0;
    case SB_SECCOMP_LE: *out = SCMP_CMP_LE; return 0;
    case SB_SECCOMP_EQ: *out = SCMP_CMP_EQ; return 0;
    case SB_SECCOMP_GE: *out = SCMP_CMP_GE; return 0;
    case SB_SECCOMP_GT: *out = SCMP_CMP_GT; return 0;
    case SB_SECCOMP_MASKED_EQ: *out = SCMP_CMP_MASKED_EQ; return 0;
    default: return -1;
    }
}

static int
add_rule (scmp_filter_ctx ctx, uint32_t def, size_t i, const struct sb_seccomp_rule *r, size_t *n_skipped,
          struct sb_seccomp_error *err)
{
  struct scmp_arg_cmp cmp[SB_SECCOMP_MAX_ARGS];
  uint32_t act;
  uint32_t k;
  int nr, rc;

  nr = seccomp_syscall_resolve_name (r->name);
  if (nr == __NR_SCMP_ERROR)
    {
      (*n_skipped)++;
      return 0;
    }
  if (to_action (r->action, r->errno_ret, &act) < 0)
    return fail_rule (err, i, EINVAL, "%s: unknown action %u", r->name, r->action);
  if (act == def)
    return 0;
  if (r->n_args > SB_SECCOMP_MAX_ARGS)
    return fail_rule (err, i, EINVAL, "%s: %u argument conditions, at most %d", r->name, r->n_args,
                      SB_SECCOMP_MAX_ARGS);
  for (k = 0; k < r->n_args; k++)
    {
      if (r->args[k].index >= SB_SECCOMP_MAX_ARGS || to_compare (r->args[k].op, &cmp[k].op) < 0)
        return fail_rule (err, i, EINVAL, "%s: bad argument condition %u", r->name, k);
      cmp[k].arg = r->args[k].index;
      cmp[k].datum_a = r->args[k].value;
      cmp[k].datum_b = r->args[k].value_two;
    }
  rc = seccomp_rule_add_array (ctx, act, nr, r->n_args, cmp);
  if (rc < 0)
    return fail_rule (err, i, -rc, "%s: libseccomp refused the rule: %s%s", r->name, strerror (-rc),
                      rc == -EEXIST ? " (another rule with the same conditions has a different action)" : "");
  return 0;
}

static int
export_bpf (scmp_filter_ctx ctx, unsigned char **out, size_t *out_len, struct sb_seccomp_error *err)
{
  cleanup_fd int fd = memfd_create ("sbx-seccomp", MFD_CLOEXEC);
  struct stat st;
  unsigned char *buf;
  ssize_t n;
  int rc;

  if (fd < 0)
    return fail (err, errno, "memfd_create: %s", strerror (errno));
  rc = seccomp_export_bpf (ctx, fd);
  if (rc < 0)
    return fail (err, -rc, "seccomp_export_bpf: %s", strerror (-rc));
  if (fstat (fd, &st) < 0)
    return fail (err, errno, "fstat of the exported program: %s", strerror (errno));
  if (st.st_size <= 0 || st.st_size % 8 != 0)
    return fail (err, EIO, "libseccomp exported %lld bytes, not whole BPF instructions", (long long) st.st_size);
  buf = malloc (st.st_size);
  if (buf == NULL)
    return fail (err, ENOMEM, "out of memory for a %lld-byte program", (long long) st.st_size);
  n = pread (fd, buf, st.st_size, 0);
  if (n != st.st_size)
    {
      int e = n < 0 ? errno : EIO;
      free (buf);
      return fail (err, e, "reading the exported program: %s", strerror (e));
    }
  *out = buf;
  *out_len = (size_t) n;
  return 0;
}

int
sb_seccomp_compile (const struct sb_seccomp_filter *f, unsigned char **out, size_t *out_len, size_t *n_skipped,
                    struct sb_seccomp_error *err)
{
  cleanup_ctx scmp_filter_ctx ctx = NULL;
  uint32_t def;
  size_t i;
  int rc;

  *n_skipped = 0;
  err->rule = -1;
  if (to_action (f->default_action, f->default_errno, &def) < 0)
    return fail (err, EINVAL, "unknown default action %u", f->default_action);
  ctx = seccomp_init (def);
  if (ctx == NULL)
    return fail (err, ENOMEM, "seccomp_init failed");
  /* Export only: the child sets no_new_privs itself when the spec asks for it. */
  rc = seccomp_attr_set (ctx, SCMP_FLTATR_CTL_NNP, 0);
  if (rc == 0)
    /* A binary search over syscall numbers instead of a linear chain: ~9 jumps per syscall
       instead of up to ~350 with Docker's profile. */
    rc = seccomp_attr_set (ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  if (rc < 0)
    return fail (err, -rc, "seccomp_attr_set: %s", strerror (-rc));
  for (i = 0; i < f->n_arches; i++)
    {
      uint32_t token = seccomp_arch_resolve_name (f->arches[i]);
      if (token == 0)
        return fail (err, EINVAL, "architecture %s is unknown to libseccomp", f->arches[i]);
      rc = seccomp_arch_add (ctx, token);
      if (rc < 0 && rc != -EEXIST)
        return fail (err, -rc, "architecture %s: %s", f->arches[i], strerror (-rc));
    }
  for (i = 0; i < f->n_rules; i++)
    if (add_rule (ctx, def, i, &f->rules[i], n_skipped, err) < 0)
      return -1;
  return export_bpf (ctx, out, out_len, err);
}

void
sb_seccomp_version (unsigned v[3])
{
  const struct scmp_version *ver = seccomp_version ();
  v[0] = ver->major;
  v[1] = ver->minor;
  v[2] = ver->micro;
}
