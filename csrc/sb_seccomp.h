/* sb_seccomp.h - compile a seccomp profile to a BPF program with libseccomp (parent side only). */
#ifndef SB_SECCOMP_H
#define SB_SECCOMP_H
#endif
