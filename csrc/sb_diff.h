/* sb_diff.h - layer diffing: turn a container's changes into an OCI layer tar, or a change list.
 *
 * Two sources of changes (sb_diff.c has the details):
 *  - SB_DIFF_OVERLAY: an overlayfs upperdir, which alone is the diff when the overlay was mounted
 *    without redirect_dir and metacopy (containers/storage's native diff).  `lowers` (topmost first,
 *    in overlay form: 0/0 whiteouts, opaque xattrs) decide A vs C in the change list and whether an
 *    opaque directory needs a `.wh..wh..opq` marker.
 *  - SB_DIFF_COMPARE: the fallback for roots that are not an overlay: a double walk of `base` (before)
 *    and `root` (after), pruned by inode, then stat, then content (continuity's sameFile rule).
 *
 * Tar output is produced by a walker thread into a ring of buffers; the caller pulls full buffers
 * with sb_diff_stream_next() (Cython hashes, compresses and writes them) while the walker fills the
 * next one.  All functions run without the GIL and never call into Python.
 */
#ifndef SB_DIFF_H
#define SB_DIFF_H

#include <stddef.h>
#include <stdint.h>

#define SB_DIFF_MSG_SIZE 512

/* One fixed-size error object per call: errno and a message naming the path (sb_spawn's sb_error). */
struct sb_diff_error {
  int err;
  char msg[SB_DIFF_MSG_SIZE];
};

enum sb_diff_mode {
  SB_DIFF_OVERLAY = 0,
  SB_DIFF_COMPARE = 1,
};

/* One line of /proc/PID/uid_map: ids [outside, outside+count) on the host are [inside, ...) in the
 * container.  Given a map, every uid/gid written to the tar is translated, and an unmapped id is an
 * error; without one, ids are written as they are. */
struct sb_diff_idmap {
  uint32_t inside;
  uint32_t outside;
  uint32_t count;
};

struct sb_diff_opts {
  int mode;                        /* enum sb_diff_mode */
  const char *root;                /* OVERLAY: the upperdir; COMPARE: the changed tree */
  const char *base;                /* COMPARE: the tree before the changes */
  const char *const *lowers;       /* OVERLAY: the lower directories, topmost first */
  size_t n_lowers;
  int clamp_mtime;                 /* non-zero: mtime = min(mtime, epoch) (SOURCE_DATE_EPOCH) */
  int64_t epoch;
  const struct sb_diff_idmap *uid_map;
  size_t n_uid_map;
  const struct sb_diff_idmap *gid_map;
  size_t n_gid_map;
};

/* The change list: *out is a malloc'd run of records "K" path "\0" (K is 'A', 'C' or 'D'; paths are
 * relative, without a leading slash), in walk order (sorted, parents first).  Free with free(). */
int sb_diff_changes (const struct sb_diff_opts *o, char **out, size_t *out_len,
                     struct sb_diff_error *err);

/* Tar streaming.  open() starts the walker thread; next() hands out the next full buffer (valid until
 * the following next() or close()) and returns 1, or 0 at the end of the tar, or -1 when the walker
 * failed; close() stops the walker if it is still running, joins it and frees everything, and returns
 * -1 with *err filled if the walker failed.  `o` and the strings it points to must stay valid until
 * close(). */
struct sb_diff_stream;
int sb_diff_stream_open (const struct sb_diff_opts *o, size_t buf_size, unsigned n_bufs,
                         struct sb_diff_stream **out, struct sb_diff_error *err);
int sb_diff_stream_next (struct sb_diff_stream *s, const unsigned char **buf, size_t *len);
int sb_diff_stream_close (struct sb_diff_stream *s, struct sb_diff_error *err);

#endif
