/* sb_inroot.h - resolve paths inside a container root. */
#ifndef SB_INROOT_H
#define SB_INROOT_H
#endif
