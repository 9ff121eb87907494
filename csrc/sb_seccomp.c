/* sb_seccomp.c - seccomp profile -> BPF with libseccomp (parent side only; see sb_seccomp.h). */
#include "sb_seccomp.h"
