/* A static test payload for checks busybox cannot make (built by tests/conftest.py into the test
 * root filesystem as /bin/probe, like crun's tests/init.c).
 *
 *   probe fds      print the open file descriptors of this process, space separated
 *                  (without the one used to read /proc/self/fd)
 *   probe zombie   make an orphan that exits, wait 500 ms, print "reaped" if something reaped it
 *                  (PID 1 of the sandbox does) or "zombie" if it is still a zombie
 *   probe pid      print getpid() and getppid()
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int cmd_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self, first = 1;
    if (!d) {
        perror("probe: opendir /proc/self/fd");
        return 1;
    }
    self = dirfd(d);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) == self)
            continue;
        printf("%s%s", first ? "" : " ", e->d_name);
        first = 0;
    }
    printf("\n");
    closedir(d);
    return 0;
}

static int cmd_zombie(void)
{
    int fds[2];
    pid_t child, grandchild = 0;
    char path[64], buf[512];
    FILE *f;

    if (pipe(fds) < 0) {
        perror("probe: pipe");
        return 1;
    }
    child = fork();
    if (child < 0) {
        perror("probe: fork");
        return 1;
    }
    if (child == 0) {
        pid_t g = fork();
        if (g == 0) {
            /* Outlive the parent, so this process is an orphan reparented to PID 1, then exit. */
            sleep_ms(100);
            _exit(0);
        }
        if (write(fds[1], &g, sizeof g) != sizeof g)
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], &grandchild, sizeof grandchild) != sizeof grandchild || grandchild <= 0) {
        fprintf(stderr, "probe: no grandchild pid\n");
        return 1;
    }
    waitpid(child, NULL, 0);
    sleep_ms(600);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)grandchild);
    f = fopen(path, "r");
    if (!f) {
        printf("reaped\n");
        return 0;
    }
    if (!fgets(buf, sizeof buf, f))
        buf[0] = 0;
    fclose(f);
    {
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z')
            printf("zombie\n");
        else
            printf("running %s\n", buf);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: probe fds|zombie|pid\n");
        return 2;
    }
    if (!strcmp(argv[1], "fds"))
        return cmd_fds();
    if (!strcmp(argv[1], "zombie"))
        return cmd_zombie();
    if (!strcmp(argv[1], "pid")) {
        printf("%d %d\n", (int)getpid(), (int)getppid());
        return 0;
    }
    fprintf(stderr, "probe: unknown command %s\n", argv[1]);
    return 2;
}
