/* sb_diff.c - layer diffing: overlay upperdir (or a two-tree compare) -> PAX tar / change list.
 *
 * The fast path tars the overlay upperdir directly, as containers/storage's overlay Diff() does: with
 * redirect_dir and metacopy off the upper alone is the layer, once its whiteouts are converted
 *  - a character device 0/0, or a zero-size file with the overlay.whiteout xattr  -> `dir/.wh.NAME`
 *  - a directory with overlay.opaque=y                -> the directory, then `dir/.wh..wh..opq`, the
 *    marker only when a lower layer has that directory (storage's WhiteoutData: lowerDirs)
 * and overlay's own xattrs dropped.  An overlay.redirect or overlay.metacopy xattr means the upper is
 * not self-contained: that is an error, not a silently wrong layer.
 *
 * The fallback (SB_DIFF_COMPARE) walks the base and the changed tree side by side with the same sorted
 * listings: a name in both with the same inode on the same device is pruned without a stat (storage's
 * changes_linux.go walker); otherwise continuity's sameFile rule decides (mode, owner, rdev, size, mtime
 * with nanoseconds, security.capability, then content when both nanoseconds are 0).  Unchanged parents
 * of a change are emitted before it (containerd's includeParents), deletions become `.wh.NAME`.  It
 * never writes opaque markers: it cannot tell "emptied" from "replaced", and per-entry whiteouts give
 * the same merged view.
 *
 * Tar details, for reproducible layers (containerd's ChangeWriter, umoci's tar_generate): PAX; names
 * sorted bytewise per directory, parents first, directories with a trailing slash, no "./"; numeric
 * ids only (translated by an optional uid/gid map), no uname/gname; mtime in whole seconds, clamped to
 * SOURCE_DATE_EPOCH when asked, no atime/ctime; whiteouts with mode 0, ids 0 and mtime 0; regular
 * files with more than one link are written once, later names are hard links to the first; xattrs
 * reduced to security.capability (SCHILY.xattr); sockets skipped; the PAX header entries are all
 * named "././@PaxHeader" (Python's tarfile does the same); the archive ends with two zero blocks.
 *
 * Syscalls: getdents64 into one reused buffer, names in an arena (offsets, not pointers: the arena is
 * a stack shared by the recursion), fstatat/openat relative to the directory fd, flistxattr on files
 * we open anyway, file bodies read() straight into the output buffer.
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include "sb_common.h"
#include "sb_diff.h"
#include "sb_syscalls.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define BLOCK 512
#define DENTS_SIZE (64 * 1024)
#define CMP_CHUNK (64 * 1024)
#define WH_PREFIX ".wh."
#define WH_PREFIX_LEN 4
#define WH_OPAQUE ".wh..wh..opq"
#define XATTR_CAP "security.capability"
#define PAX_NAME "././@PaxHeader"

#define VFS_CAP_REVISION_MASK 0xFF000000u
#define VFS_CAP_REVISION_2 0x02000000u
#define VFS_CAP_REVISION_3 0x03000000u

enum { LOWER_NONE = 0, LOWER_FILE, LOWER_DIR };

/* --- errors and cleanup ------------------------------------------------------------------------ */

static int
sb_diff_fail (struct sb_diff_error *err, int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static int
sb_diff_fail (struct sb_diff_error *err, int errnum, const char *fmt, ...)
{
  va_list ap;
  err->err = errnum ? errnum : EIO;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  return -1;
}


/* --- growable buffers -------------------------------------------------------------------------- */

struct sbuf
{
  char *p;
  size_t len, cap;
};

static int
sbuf_reserve (struct sbuf *b, size_t extra)
{
  if (b->len + extra <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra)
    cap *= 2;
  char *p = realloc (b->p, cap);
  if (p == NULL)
    {
      errno = ENOMEM;
      return -1;
    }
  b->p = p;
  b->cap = cap;
  return 0;
}

static int
sbuf_add (struct sbuf *b, const void *data, size_t n)
{
  if (sbuf_reserve (b, n + 1) < 0)
    return -1;
  memcpy (b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

/* --- the walk ---------------------------------------------------------------------------------- */

struct ent
{
  size_t name_off;   /* in walk.names */
  uint32_t name_len;
  uint32_t layer;    /* lower listings: which layer the name came from */
  uint64_t ino;
  unsigned char type;
};

struct list
{
  size_t first, n;   /* range of walk.ents */
  size_t names_mark; /* walk.names.len before the listing */
};

struct hl_slot
{
  dev_t dev;
  ino_t ino;
  size_t off, len;   /* the first name, in hl_names */
  int used;
};

struct pend
{
  size_t path_len;
  struct stat st;
  int emitted;
};

struct xinfo
{
  int opaque;        /* overlay.opaque = "y" */
  int whiteout;      /* overlay.whiteout present */
  const char *bad;   /* overlay.redirect / overlay.metacopy: not a self-contained upper */
  size_t cap_len;
  unsigned char cap[64];
};

struct tw
{
  unsigned char *buf;
  size_t len, cap;
  int (*flush) (struct tw *tw);
  void *ctx;
};

struct walk
{
  const struct sb_diff_opts *o;
  struct sb_diff_error *err;
  struct tw *tw;          /* tar output, or NULL */
  struct sbuf *chg;       /* change records, or NULL */
  uid_t euid;

  struct sbuf path;       /* relative path of the current entry */
  struct sbuf name;       /* scratch: tar names */
  struct sbuf pax;        /* scratch: PAX records */
  struct sbuf link;       /* scratch: symlink targets */
  struct sbuf link2;
  struct sbuf names;      /* name arena of the listings on the stack */
  struct ent *ents;
  size_t n_ents, cap_ents;
  char *dents;

  struct hl_slot *hl;     /* hard links: (dev, ino) -> first name */
  size_t hl_cap, hl_n;
  struct sbuf hl_names;

  int *lfd;               /* OVERLAY: per depth, one fd per lower layer (-1: nothing there) */
  size_t lfd_depths;

  struct pend *pend;      /* COMPARE: per depth, the directory and whether it was emitted */
  size_t pend_cap;

  char *xbuf;             /* flistxattr */
  size_t xcap;
  unsigned char *cmpbuf;  /* COMPARE: content comparison, 2 * CMP_CHUNK */
};

static int
wfail (struct walk *w, int errnum, const char *what)
{
  const char *root = w->o->root;
  return sb_diff_fail (w->err, errnum, "%s %s%s%s", what, root,
                       w->path.len ? "/" : "", w->path.len ? w->path.p : "");
}

static int
path_push (struct walk *w, const char *name, size_t n, size_t *saved)
{
  *saved = w->path.len;
  if (sbuf_reserve (&w->path, n + 2) < 0)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  if (w->path.len)
    w->path.p[w->path.len++] = '/';
  memcpy (w->path.p + w->path.len, name, n);
  w->path.len += n;
  w->path.p[w->path.len] = '\0';
  return 0;
}

static void
path_pop (struct walk *w, size_t saved)
{
  w->path.len = saved;
  w->path.p[saved] = '\0';
}

/* --- listing directories ----------------------------------------------------------------------- */

static int
ent_cmp (const void *a, const void *b, void *arg)
{
  const struct walk *w = arg;
  const struct ent *x = a, *y = b;
  int c = strcmp (w->names.p + x->name_off, w->names.p + y->name_off);
  if (c)
    return c;
  return x->layer < y->layer ? -1 : x->layer > y->layer;
}

static inline const char *
ent_name (const struct walk *w, const struct ent *e)
{
  return w->names.p + e->name_off;
}

/* Append the names of directory `fd` to the listing stack (skipping . and ..), tagged with `layer`. */
static int
list_append (struct walk *w, int fd, uint32_t layer, struct list *l)
{
  if (w->dents == NULL && (w->dents = malloc (DENTS_SIZE)) == NULL)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  for (;;)
    {
      ssize_t n = getdents64 (fd, w->dents, DENTS_SIZE);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return wfail (w, errno, "read directory");
        }
      if (n == 0)
        return 0;
      for (ssize_t off = 0; off < n;)
        {
          struct dirent64 *d = (struct dirent64 *) (w->dents + off);
          off += d->d_reclen;
          const char *nm = d->d_name;
          if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
            continue;
          size_t len = strlen (nm);
          if (w->n_ents == w->cap_ents)
            {
              size_t cap = w->cap_ents ? w->cap_ents * 2 : 1024;
              struct ent *e = realloc (w->ents, cap * sizeof *e);
              if (e == NULL)
                return sb_diff_fail (w->err, ENOMEM, "out of memory");
              w->ents = e;
              w->cap_ents = cap;
            }
          struct ent *e = &w->ents[w->n_ents++];
          e->name_off = w->names.len;
          e->name_len = (uint32_t) len;
          e->layer = layer;
          e->ino = d->d_ino;
          e->type = d->d_type;
          if (sbuf_reserve (&w->names, len + 1) < 0)
            return sb_diff_fail (w->err, ENOMEM, "out of memory");
          memcpy (w->names.p + w->names.len, nm, len + 1);
          w->names.len += len + 1;
          l->n++;
        }
    }
}

static void
list_begin (struct walk *w, struct list *l)
{
  l->first = w->n_ents;
  l->n = 0;
  l->names_mark = w->names.len;
}

static void
list_sort (struct walk *w, struct list *l)
{
  if (l->n > 1)
    qsort_r (w->ents + l->first, l->n, sizeof (struct ent), ent_cmp, w);
}

static void
list_drop (struct walk *w, const struct list *l)
{
  w->n_ents = l->first;
  w->names.len = l->names_mark;
}

/* --- tar writing ------------------------------------------------------------------------------- */

static int
tw_flush (struct walk *w)
{
  if (w->tw->flush (w->tw) < 0)
    {
      if (errno == ECANCELED)
        return sb_diff_fail (w->err, ECANCELED, "layer writing was cancelled");
      return wfail (w, errno, "write layer at");
    }
  return 0;
}

/* Append n bytes of `data` to the stream, or n zero bytes when `data` is NULL (padding). */
static int
tw_write (struct walk *w, const void *data, size_t n)
{
  struct tw *tw = w->tw;
  const unsigned char *p = data;
  while (n)
    {
      if (tw->len == tw->cap && tw_flush (w) < 0)
        return -1;
      size_t k = tw->cap - tw->len;
      if (k > n)
        k = n;
      if (p)
        {
          memcpy (tw->buf + tw->len, p, k);
          p += k;
        }
      else
        memset (tw->buf + tw->len, 0, k);
      tw->len += k;
      n -= k;
    }
  return 0;
}

static int
tw_zero (struct walk *w, size_t n)
{
  return tw_write (w, NULL, n);
}

/* Copy exactly `size` bytes of `fd` into the stream, then the padding. */
static int
tw_copy_fd (struct walk *w, int fd, uint64_t size)
{
  struct tw *tw = w->tw;
  uint64_t left = size;
  while (left)
    {
      if (tw->len == tw->cap && tw_flush (w) < 0)
        return -1;
      size_t room = tw->cap - tw->len;
      if (room > left)
        room = (size_t) left;
      ssize_t n = read (fd, tw->buf + tw->len, room);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return wfail (w, errno, "read");
        }
      if (n == 0)
        return wfail (w, EIO, "file shrank while being read:");
      tw->len += (size_t) n;
      left -= (uint64_t) n;
    }
  return tw_zero (w, (BLOCK - size % BLOCK) % BLOCK);
}

static void
octal (char *dst, size_t width, uint64_t v)
{
  dst[width - 1] = '\0';
  for (size_t i = width - 1; i-- > 0;)
    {
      dst[i] = (char) ('0' + (v & 7));
      v >>= 3;
    }
}

static int
fits_octal (uint64_t v, size_t width)
{
  return v < ((uint64_t) 1 << (3 * (width - 1)));
}

static int
is_ascii (const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if ((unsigned char) s[i] >= 0x80)
      return 0;
  return 1;
}

/* One PAX record: "LEN KEY=VALUE\n", LEN counting itself. */
static int
pax_add (struct walk *w, const char *key, const void *val, size_t vlen)
{
  size_t base = strlen (key) + vlen + 3, digits = 1, len;
  for (;;)
    {
      len = base + digits;
      size_t d = 0;
      for (size_t v = len; v; v /= 10)
        d++;
      if (d == digits)
        break;
      digits = d;
    }
  char num[32];
  int k = snprintf (num, sizeof num, "%zu ", len);
  if (sbuf_add (&w->pax, num, (size_t) k) < 0 || sbuf_add (&w->pax, key, strlen (key)) < 0
      || sbuf_add (&w->pax, "=", 1) < 0 || sbuf_add (&w->pax, val, vlen) < 0
      || sbuf_add (&w->pax, "\n", 1) < 0)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  return 0;
}

static int
pax_add_num (struct walk *w, const char *key, long long v)
{
  char num[32];
  int k = snprintf (num, sizeof num, "%lld", v);
  return pax_add (w, key, num, (size_t) k);
}

struct hdr
{
  const char *name;
  size_t name_len;
  const char *link;
  size_t link_len;
  char type;
  unsigned mode;
  uint64_t uid, gid, size;
  int64_t mtime;
  unsigned devmajor, devminor;
  const unsigned char *cap;
  size_t cap_len;
};

static void
ustar_block (unsigned char *b, const char *name, size_t name_len, const struct hdr *h,
             uint64_t size, int64_t mtime, uint64_t uid, uint64_t gid)
{
  char *c = (char *) b;
  memset (b, 0, BLOCK);
  memcpy (c, name, name_len > 100 ? 100 : name_len);
  octal (c + 100, 8, h->mode & 07777);
  octal (c + 108, 8, uid);
  octal (c + 116, 8, gid);
  octal (c + 124, 12, size);
  octal (c + 136, 12, (uint64_t) mtime);
  c[156] = h->type;
  if (h->link_len)
    memcpy (c + 157, h->link, h->link_len > 100 ? 100 : h->link_len);
  memcpy (c + 257, "ustar", 6);
  memcpy (c + 263, "00", 2);
  octal (c + 329, 8, h->devmajor);
  octal (c + 337, 8, h->devminor);
  memset (c + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < BLOCK; i++)
    sum += b[i];
  snprintf (c + 148, 7, "%06o", sum & 0777777);
  c[154] = '\0';
  c[155] = ' ';
}

static int
tw_header (struct walk *w, const struct hdr *h)
{
  unsigned char block[BLOCK];
  int long_name = h->name_len > 100 || !is_ascii (h->name, h->name_len);
  int long_link = h->link_len > 100 || !is_ascii (h->link, h->link_len);
  uint64_t uid = h->uid, gid = h->gid, size = h->size;
  int64_t mtime = h->mtime;

  /* Names that are not UTF-8 go into the records as they are, without "hdrcharset=BINARY": GNU tar
   * warns about that keyword, Go's archive/tar (which writes Docker's layers) never writes it, and
   * Python's tarfile falls back to its own encoding when a path does not decode. */
  w->pax.len = 0;
  if (long_link && pax_add (w, "linkpath", h->link, h->link_len) < 0)
    return -1;
  if (long_name && pax_add (w, "path", h->name, h->name_len) < 0)
    return -1;
  if (!fits_octal (uid, 8))
    {
      if (pax_add_num (w, "uid", (long long) uid) < 0)
        return -1;
      uid = 0;
    }
  if (!fits_octal (gid, 8))
    {
      if (pax_add_num (w, "gid", (long long) gid) < 0)
        return -1;
      gid = 0;
    }
  if (!fits_octal (size, 12))
    {
      if (pax_add_num (w, "size", (long long) size) < 0)
        return -1;
      size = 0;
    }
  if (mtime < 0 || !fits_octal ((uint64_t) mtime, 12))
    {
      if (pax_add_num (w, "mtime", (long long) mtime) < 0)
        return -1;
      mtime = 0;
    }
  if (h->cap_len && pax_add (w, "SCHILY.xattr." XATTR_CAP, h->cap, h->cap_len) < 0)
    return -1;

  if (w->pax.len)
    {
      struct hdr x = { .type = 'x', .mode = 0644 };
      ustar_block (block, PAX_NAME, sizeof PAX_NAME - 1, &x, w->pax.len, 0, 0, 0);
      if (tw_write (w, block, BLOCK) < 0 || tw_write (w, w->pax.p, w->pax.len) < 0
          || tw_zero (w, (BLOCK - w->pax.len % BLOCK) % BLOCK) < 0)
        return -1;
    }
  ustar_block (block, h->name, h->name_len, h, size, mtime, uid, gid);
  return tw_write (w, block, BLOCK);
}

/* --- ids, capabilities, hard links ------------------------------------------------------------- */

static int
map_id (const struct sb_diff_idmap *m, size_t n, uint64_t id, uint64_t *out)
{
  if (n == 0)
    {
      *out = id;
      return 0;
    }
  for (size_t i = 0; i < n; i++)
    if (id >= m[i].outside && id - m[i].outside < m[i].count)
      {
        *out = m[i].inside + (id - m[i].outside);
        return 0;
      }
  return -1;
}

static uint32_t
le32 (const unsigned char *p)
{
  return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static void
put_le32 (unsigned char *p, uint32_t v)
{
  p[0] = (unsigned char) (v & 0xff);
  p[1] = (unsigned char) ((v >> 8) & 0xff);
  p[2] = (unsigned char) ((v >> 16) & 0xff);
  p[3] = (unsigned char) ((v >> 24) & 0xff);
}

/* A v3 (namespaced) file capability read from outside the container's user namespace carries the
 * host uid of the container's root.  With a uid map, translate it; when it is the container's root,
 * write the plain v2 form, which is what the same file has inside the container. */
static size_t
cap_for_tar (const struct walk *w, const struct xinfo *xi, unsigned char *out)
{
  size_t n = xi->cap_len;
  memcpy (out, xi->cap, n);
  if (w->o->n_uid_map == 0 || n != 24 || (le32 (out) & VFS_CAP_REVISION_MASK) != VFS_CAP_REVISION_3)
    return n;
  uint64_t inside;
  if (map_id (w->o->uid_map, w->o->n_uid_map, le32 (out + 20), &inside) < 0)
    return n;
  if (inside == 0)
    {
      put_le32 (out, (le32 (out) & ~VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_2);
      return 20;
    }
  put_le32 (out + 20, (uint32_t) inside);
  return n;
}

static size_t
hl_hash (dev_t dev, ino_t ino, size_t cap)
{
  uint64_t h = (uint64_t) ino * 0x9E3779B97F4A7C15ull ^ (uint64_t) dev * 0xC2B2AE3D27D4EB4Full;
  return (size_t) (h ^ (h >> 29)) & (cap - 1);
}

/* Find the first name of (dev, ino); if it is new, remember `name` for it and return NULL. */
static struct hl_slot *
hl_lookup (struct walk *w, dev_t dev, ino_t ino, const char *name, size_t len, int *oom)
{
  *oom = 0;
  if (w->hl_n * 2 >= w->hl_cap)
    {
      size_t cap = w->hl_cap ? w->hl_cap * 2 : 256;
      struct hl_slot *t = calloc (cap, sizeof *t);
      if (t == NULL)
        {
          *oom = 1;
          return NULL;
        }
      for (size_t i = 0; i < w->hl_cap; i++)
        if (w->hl[i].used)
          {
            size_t j = hl_hash (w->hl[i].dev, w->hl[i].ino, cap);
            while (t[j].used)
              j = (j + 1) & (cap - 1);
            t[j] = w->hl[i];
          }
      free (w->hl);
      w->hl = t;
      w->hl_cap = cap;
    }
  size_t j = hl_hash (dev, ino, w->hl_cap);
  while (w->hl[j].used)
    {
      if (w->hl[j].dev == dev && w->hl[j].ino == ino)
        return &w->hl[j];
      j = (j + 1) & (w->hl_cap - 1);
    }
  size_t off = w->hl_names.len;
  if (sbuf_add (&w->hl_names, name, len) < 0 || sbuf_add (&w->hl_names, "", 1) < 0)
    {
      *oom = 1;
      return NULL;
    }
  w->hl[j] = (struct hl_slot) { .dev = dev, .ino = ino, .off = off, .len = len, .used = 1 };
  w->hl_n++;
  return NULL;
}

/* --- xattrs ------------------------------------------------------------------------------------ */

static int
is_overlay_xattr (const char *k, const char **rest)
{
  if (strncmp (k, "user.overlay.", 13) == 0)
    {
      *rest = k + 13;
      return 1;
    }
  if (strncmp (k, "trusted.overlay.", 16) == 0)
    {
      *rest = k + 16;
      return 1;
    }
  return 0;
}

/* What we care about in the xattrs of an open file or directory.  listxattr, not getxattr, finds the
 * overlay ones: an unprivileged getxattr of trusted.* answers ENODATA (umoci isOverlayWhiteout). */
static int
read_xattrs (struct walk *w, int fd, struct xinfo *xi)
{
  memset (xi, 0, offsetof (struct xinfo, cap));
  if (w->xbuf == NULL)
    {
      if ((w->xbuf = malloc (4096)) == NULL)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      w->xcap = 4096;
    }
  ssize_t n;
  for (;;)
    {
      n = flistxattr (fd, w->xbuf, w->xcap);
      if (n >= 0)
        break;
      if (errno == ENOTSUP || errno == EOPNOTSUPP)
        return 0;
      if (errno != ERANGE)
        return wfail (w, errno, "list xattrs of");
      ssize_t need = flistxattr (fd, NULL, 0);
      if (need < 0)
        return wfail (w, errno, "list xattrs of");
      char *p = realloc (w->xbuf, (size_t) need + 256);
      if (p == NULL)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      w->xbuf = p;
      w->xcap = (size_t) need + 256;
    }
  for (ssize_t i = 0; i < n;)
    {
      const char *k = w->xbuf + i, *rest;
      i += (ssize_t) strlen (k) + 1;
      if (is_overlay_xattr (k, &rest))
        {
          if (strcmp (rest, "opaque") == 0)
            {
              char v[4];
              ssize_t r = fgetxattr (fd, k, v, sizeof v);
              if (r == 1 && v[0] == 'y')
                xi->opaque = 1;
            }
          else if (strcmp (rest, "whiteout") == 0)
            xi->whiteout = 1;
          else if (strcmp (rest, "redirect") == 0 || strcmp (rest, "metacopy") == 0)
            xi->bad = strcmp (rest, "redirect") == 0 ? "overlay.redirect" : "overlay.metacopy";
          continue;
        }
      if (strcmp (k, XATTR_CAP) == 0)
        {
          ssize_t r = fgetxattr (fd, k, xi->cap, sizeof xi->cap);
          if (r >= 0)
            xi->cap_len = (size_t) r;
          else if (errno != ENODATA)
            return wfail (w, errno, "read " XATTR_CAP " of");
        }
    }
  return 0;
}

/* Open an entry of the tree we are writing.  A file or directory that its owner cannot read (mode
 * 000 files are common: Fedora's /etc/shadow) is made readable for the moment when we are that
 * owner, as umoci's pkg/unpriv does; a file gets its mode back at once, a directory (which must stay
 * searchable while we walk it) when *restore is handled by the caller. */
static int
open_entry (struct walk *w, int dfd, const char *name, const struct stat *st, int is_dir, int *restore)
{
  /* O_NONBLOCK: should the file have been swapped for a FIFO since the stat, do not hang on it */
  int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (is_dir ? O_DIRECTORY : O_NOCTTY | O_NONBLOCK);
  *restore = 0;
  int fd = openat (dfd, name, flags);
  if (fd >= 0 || errno != EACCES || w->euid == 0 || st->st_uid != w->euid)
    return fd;
  mode_t mode = st->st_mode & 07777;
  if (fchmodat (dfd, name, mode | S_IRUSR | (is_dir ? S_IXUSR : 0), 0) < 0)
    {
      errno = EACCES;
      return -1;
    }
  fd = openat (dfd, name, flags);
  int saved = errno;
  if (is_dir && fd >= 0)
    *restore = 1;
  else
    fchmodat (dfd, name, mode, 0);
  errno = saved;
  return fd;
}

/* --- emitting entries -------------------------------------------------------------------------- */

static int
record_change (struct walk *w, char kind, const char *path, size_t len)
{
  if (sbuf_add (w->chg, &kind, 1) < 0 || sbuf_add (w->chg, path, len) < 0
      || sbuf_add (w->chg, "", 1) < 0)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  return 0;
}

static int64_t
clamp_mtime (const struct walk *w, int64_t t)
{
  if (w->o->clamp_mtime && t > w->o->epoch)
    return w->o->epoch;
  return t;
}

/* `.wh.NAME` for the current path (or the opaque marker inside it): mode 0, ids 0, time 0. */
static int
emit_marker (struct walk *w, int opaque)
{
  const char *p = w->path.p;
  size_t len = w->path.len, parent = 0;
  for (size_t i = len; i-- > 0;)
    if (p[i] == '/')
      {
        parent = i + 1;
        break;
      }
  w->name.len = 0;
  int rc;
  if (opaque)
    rc = sbuf_add (&w->name, p, len) < 0 || sbuf_add (&w->name, "/" WH_OPAQUE, sizeof WH_OPAQUE) < 0;
  else
    rc = sbuf_add (&w->name, p, parent) < 0 || sbuf_add (&w->name, WH_PREFIX, WH_PREFIX_LEN) < 0
         || sbuf_add (&w->name, p + parent, len - parent) < 0;
  if (rc)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  struct hdr h = { .name = w->name.p, .name_len = w->name.len, .link = "", .type = '0' };
  return tw_header (w, &h);
}

static int
emit_whiteout (struct walk *w)
{
  if (w->chg)
    return record_change (w, 'D', w->path.p, w->path.len);
  return emit_marker (w, 0);
}

/* The tar entry (or change record) for the current path.  `fd`: the open regular file or directory,
 * `xi` its xattrs (or NULL), `path_len`: how much of w->path names it (parents pending in COMPARE mode
 * are prefixes of the current path). */
static int
emit_entry (struct walk *w, size_t path_len, const struct stat *st, int fd, const struct xinfo *xi,
            char kind, int dfd, const char *leaf)
{
  if (w->chg)
    return record_change (w, kind, w->path.p, path_len);

  struct hdr h = { .link = "", .mode = st->st_mode & 07777 };
  uint64_t body = 0;
  unsigned char cap[64];
  w->name.len = 0;
  if (sbuf_add (&w->name, w->path.p, path_len) < 0)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");

  switch (st->st_mode & S_IFMT)
    {
    case S_IFDIR:
      h.type = '5';
      if (sbuf_add (&w->name, "/", 1) < 0)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      break;
    case S_IFREG:
      h.type = '0';
      if (st->st_nlink > 1)
        {
          int oom;
          struct hl_slot *s = hl_lookup (w, st->st_dev, st->st_ino, w->name.p, w->name.len, &oom);
          if (oom)
            return sb_diff_fail (w->err, ENOMEM, "out of memory");
          if (s)
            {
              h.type = '1';
              h.link = w->hl_names.p + s->off;
              h.link_len = s->len;
              break;
            }
        }
      body = (uint64_t) st->st_size;
      h.size = body;
      if (xi && xi->cap_len)
        {
          h.cap = cap;
          h.cap_len = cap_for_tar (w, xi, cap);
        }
      break;
    case S_IFLNK:
      {
        h.type = '2';
        size_t want = (size_t) st->st_size + 2;
        for (;;)
          {
            w->link.len = 0;
            if (sbuf_reserve (&w->link, want) < 0)
              return sb_diff_fail (w->err, ENOMEM, "out of memory");
            ssize_t n = readlinkat (dfd, leaf, w->link.p, w->link.cap);
            if (n < 0)
              return wfail (w, errno, "readlink");
            if ((size_t) n < w->link.cap)
              {
                w->link.len = (size_t) n;
                break;
              }
            want = w->link.cap * 2;
          }
        h.link = w->link.p;
        h.link_len = w->link.len;
        break;
      }
    case S_IFCHR:
    case S_IFBLK:
      h.type = S_ISCHR (st->st_mode) ? '3' : '4';
      h.devmajor = major (st->st_rdev);
      h.devminor = minor (st->st_rdev);
      break;
    case S_IFIFO:
      h.type = '6';
      break;
    default:
      return 0;  /* sockets */
    }

  if (map_id (w->o->uid_map, w->o->n_uid_map, st->st_uid, &h.uid) < 0)
    {
      char what[64];
      snprintf (what, sizeof what, "uid %u is not in the id map:", (unsigned) st->st_uid);
      return wfail (w, EOVERFLOW, what);
    }
  if (map_id (w->o->gid_map, w->o->n_gid_map, st->st_gid, &h.gid) < 0)
    {
      char what[64];
      snprintf (what, sizeof what, "gid %u is not in the id map:", (unsigned) st->st_gid);
      return wfail (w, EOVERFLOW, what);
    }
  h.mtime = clamp_mtime (w, st->st_mtim.tv_sec);
  h.name = w->name.p;
  h.name_len = w->name.len;
  if (tw_header (w, &h) < 0)
    return -1;
  if (body)
    return tw_copy_fd (w, fd, body);
  return 0;
}

static int
refuse_wh (struct walk *w, const char *name)
{
  if (strncmp (name, WH_PREFIX, WH_PREFIX_LEN) == 0)
    return wfail (w, EINVAL, "names starting with .wh. are reserved for whiteouts, refusing");
  return 0;
}

/* --- the overlay walk -------------------------------------------------------------------------- */

static int *
lfd_frame (struct walk *w, size_t depth)
{
  return w->lfd + depth * w->o->n_lowers;
}

static int
lfd_ensure (struct walk *w, size_t depth)
{
  size_t n = w->o->n_lowers;
  if (depth < w->lfd_depths)
    return 0;
  size_t depths = w->lfd_depths ? w->lfd_depths * 2 : 16;
  while (depths <= depth)
    depths *= 2;
  int *p = realloc (w->lfd, depths * n * sizeof (int));
  if (p == NULL)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  for (size_t i = w->lfd_depths * n; i < depths * n; i++)
    p[i] = -1;
  w->lfd = p;
  w->lfd_depths = depths;
  return 0;
}

static void
lfd_close (struct walk *w, size_t depth)
{
  if (depth >= w->lfd_depths)
    return;
  int *f = lfd_frame (w, depth);
  for (size_t i = 0; i < w->o->n_lowers; i++)
    close_quietly (&f[i]);
}

static int
fd_has_opaque (int fd)
{
  char v[4];
  return (fgetxattr (fd, "user.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y')
         || (fgetxattr (fd, "trusted.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y');
}

/* Is NAME in directory `dfd` of a lower layer a whiteout (0/0 device, or an xattr whiteout)? */
static int
lower_is_whiteout (int dfd, const char *name, const struct stat *st)
{
  if (S_ISCHR (st->st_mode))
    return st->st_rdev == 0;
  if (!S_ISREG (st->st_mode) || st->st_size != 0)
    return 0;
  cleanup_fd int fd = openat (dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return 0;
  char v[4];
  return fgetxattr (fd, "user.overlay.whiteout", v, sizeof v) >= 0
         || fgetxattr (fd, "trusted.overlay.whiteout", v, sizeof v) >= 0;
}

/* What the merged lower layers have at NAME inside the directory whose per-layer fds are `fds`.
 * The topmost layer that has the name decides; a directory merges with the directories below it
 * until one is opaque or a layer has a whiteout or a non-directory there.  With `child`, open the
 * contributing directories into it (the frame for walking below NAME). */
static int
lower_lookup (struct walk *w, const int *fds, const char *name, int *child)
{
  size_t n = w->o->n_lowers;
  int res = LOWER_NONE, cut = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (child)
        child[i] = -1;
      if (cut || fds[i] < 0)
        continue;
      struct stat st;
      if (fstatat (fds[i], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          if (errno == ENOENT || errno == ENOTDIR || errno == EACCES)
            continue;
          return sb_diff_fail (w->err, errno, "lstat %s/%s in lower layer %zu", w->o->lowers[i],
                               w->path.p, i);
        }
      int wh = lower_is_whiteout (fds[i], name, &st);
      if (wh || !S_ISDIR (st.st_mode))
        {
          cut = 1;
          if (res == LOWER_NONE && !wh)
            res = LOWER_FILE;
          if (!child)
            break;
          continue;
        }
      res = LOWER_DIR;
      if (!child)
        break;
      int fd = openat (fds[i], name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        {
          if (errno == EACCES)
            continue;
          return sb_diff_fail (w->err, errno, "open %s/%s in lower layer %zu", w->o->lowers[i],
                               w->path.p, i);
        }
      child[i] = fd;
      if (fd_has_opaque (fd))
        cut = 1;
    }
  return res;
}

/* Names the merged lower layers have in the directory of lower frame `depth`: appended to the
 * listing stack as a sorted, de-duplicated list without the whited-out ones. */
static int
lower_names (struct walk *w, size_t depth, struct list *out)
{
  int *fds = lfd_frame (w, depth);
  list_begin (w, out);
  for (size_t i = 0; i < w->o->n_lowers; i++)
    if (fds[i] >= 0)
      {
        /* the frame's fds serve only *at() calls otherwise: their offset is ours to use */
        if (lseek (fds[i], 0, SEEK_SET) < 0)
          return wfail (w, errno, "rewind a lower directory of");
        if (list_append (w, fds[i], (uint32_t) i, out) < 0)
          return -1;
      }
  list_sort (w, out);
  /* keep the topmost entry per name, drop whiteouts and .wh. leftovers */
  size_t k = 0;
  for (size_t j = 0; j < out->n; j++)
    {
      struct ent *e = &w->ents[out->first + j];
      const char *nm = ent_name (w, e);
      /* (compaction only ever rewrites slots below j, or slot j with itself) */
      if (j > 0 && strcmp (ent_name (w, &w->ents[out->first + j - 1]), nm) == 0)
        continue;  /* a lower copy of a name whose topmost entry was a whiteout */
      if (strncmp (nm, WH_PREFIX, WH_PREFIX_LEN) == 0)
        continue;
      if (e->type == DT_CHR || e->type == DT_REG || e->type == DT_UNKNOWN)
        {
          struct stat st;
          int fd = fds[e->layer];
          if (fstatat (fd, nm, &st, AT_SYMLINK_NOFOLLOW) == 0 && lower_is_whiteout (fd, nm, &st))
            continue;
        }
      w->ents[out->first + k++] = *e;
    }
  out->n = k;
  w->n_ents = out->first + k;
  return 0;
}

static int ov_dir (struct walk *w, int dfd, size_t depth, int list_deleted);

static int
ov_entry (struct walk *w, int dfd, size_t depth, const char *name, size_t nlen)
{
  size_t saved;
  struct stat st;
  struct xinfo xi;
  int restore = 0;
  if (path_push (w, name, nlen, &saved) < 0)
    return -1;
  if (refuse_wh (w, name) < 0)
    return -1;
  if (fstatat (dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return wfail (w, errno, "lstat");

  int rc = 0;
  char kind = 'A';
  switch (st.st_mode & S_IFMT)
    {
    case S_IFREG:
      {
        /* The change list needs the file only to tell an xattr whiteout (size 0) from a file. */
        if (w->chg && st.st_size != 0)
          goto plain;
        cleanup_fd int fd = open_entry (w, dfd, name, &st, 0, &restore);
        if (fd < 0)
          return wfail (w, errno, "open");
        if (read_xattrs (w, fd, &xi) < 0)
          return -1;
        if (xi.bad)
          goto bad;
        if (st.st_size == 0 && xi.whiteout)
          {
            rc = emit_whiteout (w);
            break;
          }
        if (w->chg && w->o->n_lowers && lower_lookup (w, lfd_frame (w, depth), name, NULL) != LOWER_NONE)
          kind = 'C';
        rc = emit_entry (w, w->path.len, &st, fd, &xi, kind, dfd, name);
        break;
      }
    case S_IFDIR:
      {
        cleanup_fd int fd = open_entry (w, dfd, name, &st, 1, &restore);
        if (fd < 0)
          return wfail (w, errno, "open directory");
        if (read_xattrs (w, fd, &xi) < 0)
          return -1;
        if (xi.bad)
          goto bad;
        int lower = LOWER_NONE;
        if (w->o->n_lowers)
          {
            if (lfd_ensure (w, depth + 1) < 0)
              return -1;
            lower = lower_lookup (w, lfd_frame (w, depth), name, lfd_frame (w, depth + 1));
            if (lower < 0)
              {
                lfd_close (w, depth + 1);
                return -1;
              }
          }
        int opaque = xi.opaque && lower == LOWER_DIR;
        rc = emit_entry (w, w->path.len, &st, fd, &xi, lower != LOWER_NONE ? 'C' : 'A', dfd, name);
        if (rc == 0 && opaque && w->tw)
          rc = emit_marker (w, 1);
        if (rc == 0)
          rc = ov_dir (w, fd, depth + 1, opaque);
        if (w->o->n_lowers)
          lfd_close (w, depth + 1);
        if (restore)
          fchmod (fd, st.st_mode & 07777);
        break;
      }
    case S_IFCHR:
      if (st.st_rdev == 0)
        {
          rc = emit_whiteout (w);
          break;
        }
      /* fall through */
    default:
    plain:
      if (S_ISSOCK (st.st_mode))
        break;
      if (w->chg && w->o->n_lowers && lower_lookup (w, lfd_frame (w, depth), name, NULL) != LOWER_NONE)
        kind = 'C';
      if (rc == 0)
        rc = emit_entry (w, w->path.len, &st, -1, NULL, kind, dfd, name);
      break;
    }
  if (rc == 0)
    path_pop (w, saved);
  return rc;

bad:
  {
    char what[160];
    snprintf (what, sizeof what, "the upper directory is not a self-contained diff (%s xattr; mount "
              "the overlay with redirect_dir=off,metacopy=off):", xi.bad);
    return wfail (w, EINVAL, what);
  }
}

static int
ov_dir (struct walk *w, int dfd, size_t depth, int list_deleted)
{
  struct list l, del = { 0 };
  int have_del = 0;
  list_begin (w, &l);
  if (list_append (w, dfd, 0, &l) < 0)
    return -1;
  list_sort (w, &l);
  if (list_deleted && w->chg)
    {
      /* an opaque directory hides everything below it: each lower name it does not have is deleted */
      if (lower_names (w, depth, &del) < 0)
        return -1;
      have_del = 1;
    }
  size_t i = 0, j = 0;
  int rc = 0;
  while (rc == 0 && (i < l.n || j < del.n))
    {
      const struct ent *a = i < l.n ? &w->ents[l.first + i] : NULL;
      const struct ent *b = j < del.n ? &w->ents[del.first + j] : NULL;
      int c = !a ? 1 : !b ? -1 : strcmp (ent_name (w, a), ent_name (w, b));
      if (c > 0)
        {
          size_t saved;
          rc = path_push (w, ent_name (w, b), b->name_len, &saved);
          if (rc == 0)
            rc = record_change (w, 'D', w->path.p, w->path.len);
          path_pop (w, saved);
          j++;
          continue;
        }
      if (c == 0)
        j++;
      /* copy: the arena may move while we recurse */
      size_t off = a->name_off, len = a->name_len;
      char small[256];
      char *nm = len < sizeof small ? small : malloc (len + 1);
      if (nm == NULL)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      memcpy (nm, w->names.p + off, len + 1);
      rc = ov_entry (w, dfd, depth, nm, len);
      if (nm != small)
        free (nm);
      i++;
    }
  if (have_del)
    list_drop (w, &del);
  list_drop (w, &l);
  return rc;
}

/* --- the two-tree compare ---------------------------------------------------------------------- */

static int
pend_set (struct walk *w, size_t depth, const struct stat *st, int emitted)
{
  if (depth >= w->pend_cap)
    {
      size_t cap = w->pend_cap ? w->pend_cap * 2 : 32;
      while (cap <= depth)
        cap *= 2;
      struct pend *p = realloc (w->pend, cap * sizeof *p);
      if (p == NULL)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      w->pend = p;
      w->pend_cap = cap;
    }
  w->pend[depth].path_len = w->path.len;
  if (st)
    w->pend[depth].st = *st;
  w->pend[depth].emitted = emitted;
  return 0;
}

/* Emit the directories above a change that were not emitted yet, outermost first. */
static int
flush_parents (struct walk *w, size_t depth)
{
  for (size_t d = 1; d <= depth; d++)
    if (!w->pend[d].emitted)
      {
        if (emit_entry (w, w->pend[d].path_len, &w->pend[d].st, -1, NULL, 'C', -1, NULL) < 0)
          return -1;
        w->pend[d].emitted = 1;
      }
  return 0;
}

static int cmp_dir (struct walk *w, int bfd, int cfd, size_t depth, int same_dev);

/* Emit NAME of the changed tree (and, for a directory, everything below it) as `kind`. */
static int
cmp_emit (struct walk *w, int cfd, size_t depth, const char *name, const struct stat *st, char kind)
{
  struct xinfo xi;
  int restore = 0, rc;
  if (refuse_wh (w, name) < 0)
    return -1;
  if (flush_parents (w, depth) < 0)
    return -1;
  if (S_ISSOCK (st->st_mode))
    return 0;
  if (S_ISDIR (st->st_mode))
    {
      cleanup_fd int fd = open_entry (w, cfd, name, st, 1, &restore);
      if (fd < 0)
        return wfail (w, errno, "open directory");
      rc = emit_entry (w, w->path.len, st, fd, NULL, kind, cfd, name);
      if (rc == 0)
        rc = pend_set (w, depth + 1, st, 1);
      if (rc == 0)
        rc = cmp_dir (w, -1, fd, depth + 1, 0);
      if (restore)
        fchmod (fd, st->st_mode & 07777);
      return rc;
    }
  if (S_ISREG (st->st_mode) && !w->chg)
    {
      cleanup_fd int fd = open_entry (w, cfd, name, st, 0, &restore);
      if (fd < 0)
        return wfail (w, errno, "open");
      if (read_xattrs (w, fd, &xi) < 0)
        return -1;
      return emit_entry (w, w->path.len, st, fd, &xi, kind, cfd, name);
    }
  return emit_entry (w, w->path.len, st, -1, NULL, kind, cfd, name);
}

static int
read_full (int fd, unsigned char *buf, size_t n)
{
  size_t got = 0;
  while (got < n)
    {
      ssize_t r = read (fd, buf + got, n - got);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      if (r == 0)
        break;
      got += (size_t) r;
    }
  return (int) got;
}

/* Regular files with equal stat: same security.capability and, when both mtimes have no
 * nanoseconds (tar truncated them), same content?  1 same, 0 different, -1 error. */
static int
same_regular (struct walk *w, int bfd, int cfd, const char *name, const struct stat *bs,
              const struct stat *cs)
{
  int restore;
  cleanup_fd int b = openat (bfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (b < 0)
    return sb_diff_fail (w->err, errno, "open %s/%s", w->o->base, w->path.p);
  cleanup_fd int c = open_entry (w, cfd, name, cs, 0, &restore);
  if (c < 0)
    return wfail (w, errno, "open");
  unsigned char v1[64], v2[64];
  ssize_t n1 = fgetxattr (b, XATTR_CAP, v1, sizeof v1);
  ssize_t n2 = fgetxattr (c, XATTR_CAP, v2, sizeof v2);
  if (n1 != n2 || (n1 > 0 && memcmp (v1, v2, (size_t) n1) != 0))
    return 0;
  if (bs->st_mtim.tv_nsec != 0 || cs->st_mtim.tv_nsec != 0)
    return 1;
  if (w->cmpbuf == NULL && (w->cmpbuf = malloc (2 * CMP_CHUNK)) == NULL)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  for (;;)
    {
      int r1 = read_full (b, w->cmpbuf, CMP_CHUNK);
      if (r1 < 0)
        return sb_diff_fail (w->err, errno, "read %s/%s", w->o->base, w->path.p);
      int r2 = read_full (c, w->cmpbuf + CMP_CHUNK, CMP_CHUNK);
      if (r2 < 0)
        return wfail (w, errno, "read");
      if (r1 != r2 || memcmp (w->cmpbuf, w->cmpbuf + CMP_CHUNK, (size_t) r1) != 0)
        return 0;
      if (r1 == 0)
        return 1;
    }
}

static int
same_symlink (struct walk *w, int bfd, int cfd, const char *name)
{
  struct sbuf *bufs[2] = { &w->link, &w->link2 };
  int fds[2] = { bfd, cfd };
  for (int k = 0; k < 2; k++)
    {
      if (sbuf_reserve (bufs[k], PATH_MAX + 1) < 0)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      ssize_t n = readlinkat (fds[k], name, bufs[k]->p, bufs[k]->cap);
      if (n < 0)
        return wfail (w, errno, "readlink");
      bufs[k]->len = (size_t) n;
    }
  return w->link.len == w->link2.len && memcmp (w->link.p, w->link2.p, w->link.len) == 0;
}

static int
cmp_entry (struct walk *w, int bfd, int cfd, size_t depth, const char *name)
{
  struct stat bs, cs;
  if (fstatat (cfd, name, &cs, AT_SYMLINK_NOFOLLOW) < 0)
    return wfail (w, errno, "lstat");
  if (fstatat (bfd, name, &bs, AT_SYMLINK_NOFOLLOW) < 0)
    return sb_diff_fail (w->err, errno, "lstat %s/%s", w->o->base, w->path.p);

  if ((bs.st_mode & S_IFMT) != (cs.st_mode & S_IFMT))
    return cmp_emit (w, cfd, depth, name, &cs, 'C');

  int differ = (bs.st_mode != cs.st_mode || bs.st_uid != cs.st_uid || bs.st_gid != cs.st_gid
                || bs.st_mtim.tv_sec != cs.st_mtim.tv_sec || bs.st_mtim.tv_nsec != cs.st_mtim.tv_nsec);
  if (S_ISDIR (cs.st_mode))
    {
      int restore = 0, rc;
      if (refuse_wh (w, name) < 0)
        return -1;
      cleanup_fd int c = open_entry (w, cfd, name, &cs, 1, &restore);
      if (c < 0)
        return wfail (w, errno, "open directory");
      cleanup_fd int b = openat (bfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (b < 0)
        return sb_diff_fail (w->err, errno, "open %s/%s", w->o->base, w->path.p);
      if (differ)
        {
          rc = flush_parents (w, depth);
          if (rc == 0)
            rc = emit_entry (w, w->path.len, &cs, c, NULL, 'C', cfd, name);
        }
      else
        rc = 0;
      if (rc == 0)
        rc = pend_set (w, depth + 1, &cs, differ);
      if (rc == 0)
        rc = cmp_dir (w, b, c, depth + 1, bs.st_dev == cs.st_dev);
      if (restore)
        fchmod (c, cs.st_mode & 07777);
      return rc;
    }
  if (!differ)
    {
      if (S_ISCHR (cs.st_mode) || S_ISBLK (cs.st_mode))
        differ = bs.st_rdev != cs.st_rdev;
      else if (S_ISREG (cs.st_mode) || S_ISLNK (cs.st_mode))
        differ = bs.st_size != cs.st_size;
    }
  if (!differ && S_ISREG (cs.st_mode))
    {
      int same = same_regular (w, bfd, cfd, name, &bs, &cs);
      if (same < 0)
        return -1;
      differ = !same;
    }
  else if (!differ && S_ISLNK (cs.st_mode))
    {
      int same = same_symlink (w, bfd, cfd, name);
      if (same < 0)
        return -1;
      differ = !same;
    }
  if (!differ)
    return 0;
  return cmp_emit (w, cfd, depth, name, &cs, 'C');
}

static int
cmp_dir (struct walk *w, int bfd, int cfd, size_t depth, int same_dev)
{
  struct list lc, lb = { 0 };
  list_begin (w, &lc);
  if (list_append (w, cfd, 0, &lc) < 0)
    return -1;
  list_sort (w, &lc);
  list_begin (w, &lb);
  if (bfd >= 0)
    {
      if (list_append (w, bfd, 1, &lb) < 0)
        return -1;
      list_sort (w, &lb);
    }
  size_t i = 0, j = 0;
  int rc = 0;
  while (rc == 0 && (i < lc.n || j < lb.n))
    {
      const struct ent *c = i < lc.n ? &w->ents[lc.first + i] : NULL;
      const struct ent *b = j < lb.n ? &w->ents[lb.first + j] : NULL;
      int k = !c ? 1 : !b ? -1 : strcmp (ent_name (w, c), ent_name (w, b));
      const struct ent *e = k > 0 ? b : c;
      size_t len = e->name_len, saved;
      char small[256];
      char *nm = len < sizeof small ? small : malloc (len + 1);
      if (nm == NULL)
        return sb_diff_fail (w->err, ENOMEM, "out of memory");
      memcpy (nm, ent_name (w, e), len + 1);
      int same_ino = k == 0 && same_dev && c->ino == b->ino;
      rc = path_push (w, nm, len, &saved);
      if (rc == 0)
        {
          if (k > 0)
            {
              /* only in the base: deleted */
              rc = flush_parents (w, depth);
              if (rc == 0)
                rc = emit_whiteout (w);
            }
          else if (k < 0)
            {
              struct stat st;
              if (fstatat (cfd, nm, &st, AT_SYMLINK_NOFOLLOW) < 0)
                rc = wfail (w, errno, "lstat");
              else
                rc = cmp_emit (w, cfd, depth, nm, &st, 'A');
            }
          else if (!same_ino)
            rc = cmp_entry (w, bfd, cfd, depth, nm);
          if (rc == 0)
            path_pop (w, saved);
        }
      if (nm != small)
        free (nm);
      if (k >= 0)
        j++;
      if (k <= 0)
        i++;
    }
  list_drop (w, &lb);
  list_drop (w, &lc);
  return rc;
}

/* --- driving a walk ---------------------------------------------------------------------------- */

static void
walk_free (struct walk *w)
{
  if (w->lfd)
    for (size_t d = 0; d < w->lfd_depths; d++)
      lfd_close (w, d);
  free (w->lfd);
  free (w->path.p);
  free (w->name.p);
  free (w->pax.p);
  free (w->link.p);
  free (w->link2.p);
  free (w->names.p);
  free (w->ents);
  free (w->dents);
  free (w->hl);
  free (w->hl_names.p);
  free (w->pend);
  free (w->xbuf);
  free (w->cmpbuf);
}

static int
walk_run (struct walk *w)
{
  const struct sb_diff_opts *o = w->o;
  w->euid = geteuid ();
  if (sbuf_add (&w->path, "", 0) < 0)
    return sb_diff_fail (w->err, ENOMEM, "out of memory");
  if (o->root == NULL || (o->mode == SB_DIFF_COMPARE && o->base == NULL))
    return sb_diff_fail (w->err, EINVAL, "no directory to diff");

  cleanup_fd int root = open (o->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    return sb_diff_fail (w->err, errno, "open %s", o->root);
  int rc;
  if (o->mode == SB_DIFF_OVERLAY)
    {
      if (o->n_lowers)
        {
          if (lfd_ensure (w, 0) < 0)
            return -1;
          int *f = lfd_frame (w, 0);
          for (size_t i = 0; i < o->n_lowers; i++)
            {
              f[i] = open (o->lowers[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
              if (f[i] < 0)
                return sb_diff_fail (w->err, errno, "open lower directory %s", o->lowers[i]);
            }
        }
      rc = ov_dir (w, root, 0, 0);
    }
  else if (o->mode == SB_DIFF_COMPARE)
    {
      cleanup_fd int base = open (o->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (base < 0)
        return sb_diff_fail (w->err, errno, "open %s", o->base);
      struct stat bs, cs;
      if (fstat (base, &bs) < 0 || fstat (root, &cs) < 0)
        return sb_diff_fail (w->err, errno, "stat %s", o->root);
      if (pend_set (w, 0, &cs, 1) < 0)
        return -1;
      rc = cmp_dir (w, base, root, 0, bs.st_dev == cs.st_dev);
    }
  else
    return sb_diff_fail (w->err, EINVAL, "unknown diff mode %d", o->mode);
  if (rc == 0 && w->tw)
    rc = tw_zero (w, 2 * BLOCK);
  return rc;
}

int
sb_diff_changes (const struct sb_diff_opts *o, char **out, size_t *out_len, struct sb_diff_error *err)
{
  struct sbuf chg = { 0 };
  struct walk w = { .o = o, .err = err, .chg = &chg };
  *out = NULL;
  *out_len = 0;
  int rc = walk_run (&w);
  walk_free (&w);
  if (rc < 0)
    {
      free (chg.p);
      return -1;
    }
  *out = chg.p;
  *out_len = chg.len;
  return 0;
}

/* --- streaming: the walker thread fills a ring of buffers, the caller drains it ---------------- */

struct sb_diff_stream
{
  struct sb_diff_opts o;
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned char **bufs;
  size_t *lens;
  unsigned n_bufs;
  size_t buf_size;
  unsigned head, count;  /* full buffers: bufs[head], ... count of them; the walker fills bufs[head + count] */
  int holding;           /* the caller holds bufs[head] */
  int done, rc, cancel;
  struct sb_diff_error err;
  struct tw tw;
};

/* Queue the buffer being filled; with `more`, wait for a free one to fill next. */
static int
stream_push (struct sb_diff_stream *s, int more)
{
  pthread_mutex_lock (&s->mu);
  if (s->cancel)
    {
      pthread_mutex_unlock (&s->mu);
      errno = ECANCELED;
      return -1;
    }
  s->lens[(s->head + s->count) % s->n_bufs] = s->tw.len;
  s->count++;
  pthread_cond_broadcast (&s->cv);
  if (more)
    {
      while (s->count == s->n_bufs && !s->cancel)
        pthread_cond_wait (&s->cv, &s->mu);
      if (s->cancel)
        {
          pthread_mutex_unlock (&s->mu);
          errno = ECANCELED;
          return -1;
        }
      s->tw.buf = s->bufs[(s->head + s->count) % s->n_bufs];
      s->tw.len = 0;
    }
  pthread_mutex_unlock (&s->mu);
  return 0;
}

static int
stream_flush (struct tw *tw)
{
  return stream_push (tw->ctx, 1);
}

static void *
stream_main (void *arg)
{
  struct sb_diff_stream *s = arg;
  struct walk w = { .o = &s->o, .err = &s->err, .tw = &s->tw };
  int rc = walk_run (&w);
  walk_free (&w);
  if (rc == 0 && s->tw.len && stream_push (s, 0) < 0)
    rc = sb_diff_fail (&s->err, ECANCELED, "layer writing was cancelled");
  pthread_mutex_lock (&s->mu);
  s->done = 1;
  s->rc = rc;
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->mu);
  return NULL;
}

static void
stream_free (struct sb_diff_stream *s)
{
  if (s->bufs)
    for (unsigned i = 0; i < s->n_bufs; i++)
      free (s->bufs[i]);
  free (s->bufs);
  free (s->lens);
  pthread_mutex_destroy (&s->mu);
  pthread_cond_destroy (&s->cv);
  free (s);
}

int
sb_diff_stream_open (const struct sb_diff_opts *o, size_t buf_size, unsigned n_bufs,
                     struct sb_diff_stream **out, struct sb_diff_error *err)
{
  *out = NULL;
  if (n_bufs < 2)
    n_bufs = 2;
  if (buf_size < 16 * BLOCK)
    buf_size = 16 * BLOCK;
  struct sb_diff_stream *s = calloc (1, sizeof *s);
  if (s == NULL)
    return sb_diff_fail (err, ENOMEM, "out of memory");
  pthread_mutex_init (&s->mu, NULL);
  pthread_cond_init (&s->cv, NULL);
  s->o = *o;
  s->n_bufs = n_bufs;
  s->buf_size = buf_size;
  s->bufs = calloc (n_bufs, sizeof *s->bufs);
  s->lens = calloc (n_bufs, sizeof *s->lens);
  if (s->bufs == NULL || s->lens == NULL)
    {
      stream_free (s);
      return sb_diff_fail (err, ENOMEM, "out of memory");
    }
  for (unsigned i = 0; i < n_bufs; i++)
    if ((s->bufs[i] = malloc (buf_size)) == NULL)
      {
        stream_free (s);
        return sb_diff_fail (err, ENOMEM, "out of memory");
      }
  s->tw = (struct tw) { .buf = s->bufs[0], .cap = buf_size, .flush = stream_flush, .ctx = s };

  /* The walker takes no signals: they stay with the Python threads that handle them. */
  sigset_t all, old;
  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);
  int rc = pthread_create (&s->thread, NULL, stream_main, s);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (rc != 0)
    {
      stream_free (s);
      return sb_diff_fail (err, rc, "cannot start the layer walker thread");
    }
  s->started = 1;
  *out = s;
  return 0;
}

int
sb_diff_stream_next (struct sb_diff_stream *s, const unsigned char **buf, size_t *len)
{
  pthread_mutex_lock (&s->mu);
  if (s->holding)
    {
      s->head = (s->head + 1) % s->n_bufs;
      s->count--;
      s->holding = 0;
      pthread_cond_broadcast (&s->cv);
    }
  while (s->count == 0 && !s->done)
    pthread_cond_wait (&s->cv, &s->mu);
  int ret;
  if (s->done && s->rc < 0)
    ret = -1;
  else if (s->count > 0)
    {
      *buf = s->bufs[s->head];
      *len = s->lens[s->head];
      s->holding = 1;
      ret = 1;
    }
  else
    ret = 0;
  pthread_mutex_unlock (&s->mu);
  return ret;
}

int
sb_diff_stream_close (struct sb_diff_stream *s, struct sb_diff_error *err)
{
  if (s == NULL)
    return 0;
  pthread_mutex_lock (&s->mu);
  s->cancel = 1;
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->mu);
  if (s->started)
    pthread_join (s->thread, NULL);
  int rc = s->rc;
  if (rc < 0 && err)
    *err = s->err;
  stream_free (s);
  return rc < 0 ? -1 : 0;
}
