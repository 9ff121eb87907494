# Seccomp: the Cython side of csrc/sb_seccomp.c, included at the end of _native.pyx.
