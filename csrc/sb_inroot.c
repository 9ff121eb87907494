/* sb_inroot.c - in-root path resolution (see sb_inroot.h).  No malloc, no stdio: the
 * launcher's child runs this after clone(). */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include "sb_inroot.h"
#include "sb_syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SB_MAX_LINKS 40

static int force_walk;

void
sb_inroot_force_walk (int on)
{
  force_walk = on;
}

static void
close_keep_errno (int fd)
{
  int saved = errno;
  if (fd >= 0)
    close (fd);
  errno = saved;
}

static size_t
slen (const char *s)
{
  size_t n = 0;
  while (s[n])
    n++;
  return n;
}

/* The user-space walk.  `rest` holds what is left to resolve; a symlink's target is spliced
 * in front of the remainder, an absolute one restarting at the root.  Directories are held
 * as O_PATH fds, so each step is one openat() relative to a directory already inside the
 * tree; ".." at the root stays at the root. */
static int
walk (int rootfd, const char *path, int flags, unsigned int mode)
{
  char rest[PATH_MAX], link[PATH_MAX];
  size_t n = slen (path);
  int links = 0;
  struct stat root_st, st;

  if (n >= sizeof rest)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  memcpy (rest, path, n + 1);
  if (fstat (rootfd, &root_st) < 0)
    return -1;
  int cur = openat (rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cur < 0)
    return -1;

  size_t pos = 0;
  for (;;)
    {
      while (rest[pos] == '/')
        pos++;
      if (rest[pos] == '\0')
        {
          /* The path named a directory (or was empty): open it with the caller's flags. */
          int fd = openat (cur, ".", flags | O_CLOEXEC, mode);
          close_keep_errno (cur);
          return fd;
        }
      size_t start = pos;
      while (rest[pos] && rest[pos] != '/')
        pos++;
      size_t clen = pos - start;
      int last = 1;
      for (size_t i = pos; rest[i]; i++)
        if (rest[i] != '/')
          {
            last = 0;
            break;
          }
      char comp[NAME_MAX + 1];
      if (clen > NAME_MAX)
        {
          close_keep_errno (cur);
          errno = ENAMETOOLONG;
          return -1;
        }
      memcpy (comp, rest + start, clen);
      comp[clen] = '\0';

      if (clen == 1 && comp[0] == '.')
        {
          if (last)
            rest[pos] = '\0';
          continue;
        }
      if (clen == 2 && comp[0] == '.' && comp[1] == '.')
        {
          if (fstat (cur, &st) < 0)
            goto fail;
          if (!(st.st_dev == root_st.st_dev && st.st_ino == root_st.st_ino))
            {
              int up = openat (cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
              if (up < 0)
                goto fail;
              close (cur);
              cur = up;
            }
          continue;
        }

      int next = openat (cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0)
        {
          if (last && errno == ENOENT && (flags & O_CREAT))
            {
              int fd = openat (cur, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
              close_keep_errno (cur);
              return fd;
            }
          goto fail;
        }
      if (fstatat (next, "", &st, AT_EMPTY_PATH) < 0)
        {
          close_keep_errno (next);
          goto fail;
        }
      if (S_ISLNK (st.st_mode) && !(last && (flags & O_NOFOLLOW)))
        {
          if (++links > SB_MAX_LINKS)
            {
              close (next);
              errno = ELOOP;
              goto fail;
            }
          ssize_t ln = readlinkat (next, "", link, sizeof link - 1);
          close_keep_errno (next);
          if (ln < 0)
            goto fail;
          link[ln] = '\0';
          size_t tail = slen (rest + pos);
          if ((size_t) ln + 1 + tail >= sizeof rest)
            {
              errno = ENAMETOOLONG;
              goto fail;
            }
          /* rest = link + "/" + remainder */
          memmove (rest + ln + 1, rest + pos, tail + 1);
          memcpy (rest, link, (size_t) ln);
          rest[ln] = '/';
          pos = 0;
          if (link[0] == '/')
            {
              int r = openat (rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
              if (r < 0)
                goto fail;
              close (cur);
              cur = r;
            }
          continue;
        }
      if (last)
        {
          close (next);
          /* Reopen the final component with the caller's flags; O_NOFOLLOW: it was not a
           * symlink a moment ago and must not have become one. */
          int fd = openat (cur, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
          close_keep_errno (cur);
          return fd;
        }
      if (!S_ISDIR (st.st_mode))
        {
          close (next);
          errno = ENOTDIR;
          goto fail;
        }
      close (cur);
      cur = next;
    }

fail:
  close_keep_errno (cur);
  return -1;
}

int
sb_open_in_root (int rootfd, const char *path, int flags, unsigned int mode)
{
  while (path[0] == '/')
    path++;
  if (path[0] == '\0')
    path = ".";  /* the root itself (openat2 would say ENOENT for "") */
  if (!force_walk)
    {
      struct sb_open_how how;
      memset (&how, 0, sizeof how);
      how.flags = (uint64_t) (flags | O_CLOEXEC);
      /* openat2 refuses a mode without O_CREAT/O_TMPFILE (glibc's __O_TMPFILE includes
       * O_DIRECTORY, so test the whole of O_TMPFILE). */
      how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0;
      how.resolve = SB_RESOLVE_IN_ROOT | SB_RESOLVE_NO_MAGICLINKS;
      for (int tries = 0; tries < 16; tries++)
        {
          int fd = sb_openat2 (rootfd, path, &how, sizeof how);
          if (fd >= 0)
            return fd;
          if (errno == EAGAIN || errno == EINTR)
            continue;  /* a concurrent rename; the kernel asks us to retry */
          if (errno != ENOSYS)
            return -1;
          break;
        }
    }
  return walk (rootfd, path, flags, mode);
}

/* Copy `path` without trailing slashes into buf; returns its length. */
static int
copy_trimmed (const char *path, char *buf, size_t size)
{
  size_t n = slen (path);
  while (n > 1 && path[n - 1] == '/')
    n--;
  if (n >= size)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  memcpy (buf, path, n);
  buf[n] = '\0';
  return (int) n;
}

int
sb_mkdirs_in_root (int rootfd, const char *path, unsigned int mode)
{
  char buf[PATH_MAX], link[PATH_MAX], next[PATH_MAX];
  int n = copy_trimmed (path, buf, sizeof buf);
  if (n < 0)
    return -1;
  /* Fast path: it is there already. */
  int fd = sb_open_in_root (rootfd, buf, O_PATH | O_DIRECTORY, 0);
  if (fd >= 0 || errno != ENOENT)
    return fd;

  int links = 0;
restart:;
  int parent = openat (rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (parent < 0)
    return -1;
  for (int i = 0; i <= n; i++)
    {
      if (buf[i] != '/' && buf[i] != '\0')
        continue;
      int start = i - 1;
      while (start >= 0 && buf[start] != '/')
        start--;
      start++;
      if (i == start)
        continue;  /* empty component ("//" or a leading "/") */
      char c = buf[i];
      buf[i] = '\0';
      fd = sb_open_in_root (rootfd, buf, O_PATH | O_DIRECTORY, 0);
      if (fd < 0 && errno == ENOENT)
        {
          /* `parent` is where the prefix so far resolved inside the root: create the
           * component there. */
          if (mkdirat (parent, buf + start, mode) < 0)
            {
              if (errno != EEXIST)
                {
                  close_keep_errno (parent);
                  return -1;
                }
              /* A symlink to nothing: make its target, inside the root, as Docker does for
               * a mount point behind a link.  The path is rewritten as prefix + target +
               * rest and walked again (at most SB_MAX_LINKS times). */
              ssize_t ln = readlinkat (parent, buf + start, link, sizeof link - 1);
              if (ln > 0 && ++links <= SB_MAX_LINKS)
                {
                  link[ln] = '\0';
                  buf[i] = c;
                  size_t pre = link[0] == '/' ? 0 : (size_t) start;
                  size_t rest = (size_t) (n - i);
                  if (pre + (size_t) ln + rest >= sizeof next)
                    {
                      close (parent);
                      errno = ENAMETOOLONG;
                      return -1;
                    }
                  memcpy (next, buf, pre);
                  memcpy (next + pre, link, (size_t) ln);
                  memcpy (next + pre + ln, buf + i, rest + 1);
                  n = (int) (pre + (size_t) ln + rest);
                  memcpy (buf, next, (size_t) n + 1);
                  close (parent);
                  goto restart;
                }
              if (ln > 0)
                {
                  close (parent);
                  errno = ELOOP;
                  return -1;
                }
            }
          fd = sb_open_in_root (rootfd, buf, O_PATH | O_DIRECTORY, 0);
        }
      buf[i] = c;
      if (fd < 0)
        {
          close_keep_errno (parent);
          return -1;
        }
      close (parent);
      parent = fd;
    }
  return parent;
}

int
sb_parent_in_root (int rootfd, const char *path, int create, unsigned int mode,
                   char *name, size_t name_size)
{
  char buf[PATH_MAX];
  int n = copy_trimmed (path, buf, sizeof buf);
  if (n < 0)
    return -1;
  int slash = n - 1;
  while (slash >= 0 && buf[slash] != '/')
    slash--;
  const char *last = buf + slash + 1;
  size_t llen = slen (last);
  if (llen == 0 || llen >= name_size || (llen == 1 && last[0] == '.')
      || (llen == 2 && last[0] == '.' && last[1] == '.'))
    {
      errno = EINVAL;
      return -1;
    }
  memcpy (name, last, llen + 1);
  if (slash <= 0)
    return openat (rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  buf[slash] = '\0';
  if (create)
    return sb_mkdirs_in_root (rootfd, buf, mode);
  return sb_open_in_root (rootfd, buf, O_PATH | O_DIRECTORY, 0);
}
