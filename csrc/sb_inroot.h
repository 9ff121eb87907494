/* sb_inroot.h - resolve paths inside a container root, never through the host.
 *
 * A container's root is a tree the image (and so anyone) controls: `/data -> /home/user` or
 * `../../..` must lead to the root's own /home/user, not the host's.  Every lookup here goes
 * through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), where the kernel keeps symlinks
 * and ".." inside the tree (Linux >= 5.6); on older kernels a component-by-component walk
 * does the same in user space (runc's securejoin, libpathrs).
 *
 * Async-signal-safe and allocation-free: the launcher's child calls these after clone(). */
#ifndef SB_INROOT_H
#define SB_INROOT_H

#include <stddef.h>

/* Open `path` (absolute or relative; taken relative to the tree at `rootfd`) with open(2)
 * `flags` and `mode`; the final component is followed unless `flags` has O_NOFOLLOW. */
int sb_open_in_root (int rootfd, const char *path, int flags, unsigned int mode);

/* mkdir -p inside the tree; returns an O_PATH fd of the directory. */
int sb_mkdirs_in_root (int rootfd, const char *path, unsigned int mode);

/* The directory holding `path`'s last component (made with `mode` when `create`), as an
 * O_PATH fd; the last component is copied into `name` (NUL-terminated). */
int sb_parent_in_root (int rootfd, const char *path, int create, unsigned int mode,
                       char *name, size_t name_size);

/* Tests and old kernels: 1 forces the user-space walk even where openat2 exists. */
void sb_inroot_force_walk (int on);

#endif
