#ifndef SB_WAIT_H
#define SB_WAIT_H
#include <stddef.h>
#include <sys/types.h>
int sb_wait_forward (pid_t pid, const int *sigs, size_t nsigs, int *status);
#endif
