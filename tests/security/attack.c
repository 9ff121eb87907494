/* Attacks from inside a sandbox, for tests/security (built static into the test root as
 * /bin/attack by the `attack_rootfs` fixture).
 *
 *   attack keyring SERIAL     print this process's session keyring id, then the errno of reading
 *                             key SERIAL (a key the host put in its session keyring) and of
 *                             searching the session keyring for it ("ok" where it worked)
 *   attack watch NEEDLE... -- SECONDS
 *                             for SECONDS, read /proc/N/{environ,cmdline} and every /proc/N/fd/M
 *                             link of every other process again and again; print
 *                             "FOUND <needle> in <file>" for each needle seen, then "scans N"
 *                             and "others N" (how many other processes it saw)
 *   attack syscalls           try syscalls Docker's default seccomp profile blocks; one line each:
 *                             "<name> ok" or "<name> <errno>"
 *   attack dnsflood ADDR N    send N DNS queries (A, for n<i>.flood.example.) to ADDR:53 from one
 *                             UDP socket as fast as it can, reading no answer; print "sent N"
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static void report (const char *name, long rc)
{
  if (rc < 0)
    printf ("%s %d\n", name, errno);
  else
    printf ("%s ok\n", name);
}

static int cmd_keyring (long serial)
{
  long self = syscall (SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
  printf ("session %ld\n", self);
  char buf[256];
  report ("read", syscall (SYS_keyctl, KEYCTL_READ, serial, buf, sizeof buf));
  report ("search", syscall (SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", "sbx-test-secret", 0));
  return 0;
}

static int contains (const char *buf, size_t n, const char *needle)
{
  size_t k = strlen (needle);
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp (buf + i, needle, k) == 0)
      return 1;
  return 0;
}

static void check_file (const char *path, char **needles, int nn, int *found)
{
  char buf[65536];
  int fd = open (path, O_RDONLY);
  if (fd < 0)
    return;
  ssize_t n = read (fd, buf, sizeof buf);
  close (fd);
  for (int i = 0; n > 0 && i < nn; i++)
    if (!found[i] && contains (buf, (size_t) n, needles[i]))
      {
        found[i] = 1;
        printf ("FOUND %s in %s\n", needles[i], path);
        fflush (stdout);
      }
}

static int cmd_watch (char **needles, int nn, int seconds)
{
  int found[64] = { 0 };
  long scans = 0;
  static int seen[4096];
  int nseen = 0;
  char path[512], link[4096];
  pid_t me = getpid ();
  time_t end = time (NULL) + seconds;
  while (time (NULL) < end)
    {
      DIR *d = opendir ("/proc");
      struct dirent *e;
      while (d && (e = readdir (d)))
        {
          int pid = atoi (e->d_name);
          if (pid <= 0 || pid == me)
            continue;
          if (pid != 1 && nseen < 4096)
            {
              int known = 0;
              for (int i = 0; i < nseen && !known; i++)
                known = seen[i] == pid;
              if (!known)
                seen[nseen++] = pid;
            }
          snprintf (path, sizeof path, "/proc/%d/environ", pid);
          check_file (path, needles, nn, found);
          snprintf (path, sizeof path, "/proc/%d/cmdline", pid);
          check_file (path, needles, nn, found);
          snprintf (path, sizeof path, "/proc/%d/exe", pid);
          ssize_t ln = readlink (path, link, sizeof link);
          for (int i = 0; ln > 0 && i < nn; i++)
            if (!found[i] && contains (link, (size_t) ln, needles[i]))
              {
                found[i] = 1;
                printf ("FOUND %s in %s\n", needles[i], path);
              }
          snprintf (path, sizeof path, "/proc/%d/fd", pid);
          DIR *fds = opendir (path);
          struct dirent *f;
          while (fds && (f = readdir (fds)))
            {
              char p2[600];
              snprintf (p2, sizeof p2, "%s/%s", path, f->d_name);
              ln = readlink (p2, link, sizeof link);
              for (int i = 0; ln > 0 && i < nn; i++)
                if (!found[i] && contains (link, (size_t) ln, needles[i]))
                  {
                    found[i] = 1;
                    printf ("FOUND %s in %s\n", needles[i], p2);
                  }
            }
          if (fds)
            closedir (fds);
        }
      if (d)
        closedir (d);
      scans++;
    }
  printf ("scans %ld\n", scans);
  printf ("others %d\n", nseen);
  return 0;
}

static int cmd_syscalls (void)
{
  static char buf[4096];
  report ("add_key", syscall (SYS_add_key, "user", "sbx", "x", 1, KEY_SPEC_PROCESS_KEYRING));
  report ("keyctl", syscall (SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
  report ("kcmp", syscall (SYS_kcmp, getpid (), getpid (), 0, 0, 0));
  report ("perf_event_open", syscall (SYS_perf_event_open, buf, 0, -1, -1, 0));
  report ("userfaultfd", syscall (SYS_userfaultfd, 0));
  report ("process_vm_readv", syscall (SYS_process_vm_readv, getpid (), NULL, 0, NULL, 0, 0));
  report ("move_pages", syscall (SYS_move_pages, 0, 0, NULL, NULL, NULL, 0));
  report ("personality_0x1234", syscall (SYS_personality, 0x1234));
  report ("personality_query", syscall (SYS_personality, 0xffffffff));
  report ("io_uring_setup", syscall (SYS_io_uring_setup, 1, buf));
  report ("unshare_user", syscall (SYS_unshare, CLONE_NEWUSER));
  report ("unshare_ns", syscall (SYS_unshare, CLONE_NEWNS));
  report ("clone3", syscall (SYS_clone3, NULL, 0));
  report ("getpid", syscall (SYS_getpid));
  report ("uname", syscall (SYS_uname, buf));
  return 0;
}

static int cmd_dnsflood (const char *addr, long n)
{
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons (53) };
  int s = socket (AF_INET, SOCK_DGRAM, 0);
  long sent = 0;
  if (s < 0 || inet_pton (AF_INET, addr, &to.sin_addr) != 1)
    return 2;
  for (long i = 0; i < n; i++)
    {
      unsigned char q[64] = { (unsigned char) (i >> 8), (unsigned char) i, 1, 0, 0, 1 };
      char label[16];
      int len = snprintf (label, sizeof label, "n%ld", i), at = 12;
      q[at++] = (unsigned char) len;
      memcpy (q + at, label, len);
      at += len;
      memcpy (q + at, "\005flood\007example\000\000\001\000\001", 19);
      at += 19;
      if (sendto (s, q, at, 0, (struct sockaddr *) &to, sizeof to) == at)
        sent++;
    }
  printf ("sent %ld\n", sent);
  return 0;
}

int main (int argc, char **argv)
{
  setvbuf (stdout, NULL, _IOLBF, 0);
  if (argc >= 3 && strcmp (argv[1], "keyring") == 0)
    return cmd_keyring (atol (argv[2]));
  if (argc >= 5 && strcmp (argv[1], "watch") == 0)
    {
      int nn = 0;
      while (2 + nn < argc && strcmp (argv[2 + nn], "--") != 0)
        nn++;
      if (2 + nn + 1 >= argc || nn > 64)
        return 2;
      return cmd_watch (argv + 2, nn, atoi (argv[2 + nn + 1]));
    }
  if (argc >= 2 && strcmp (argv[1], "syscalls") == 0)
    return cmd_syscalls ();
  if (argc >= 4 && strcmp (argv[1], "dnsflood") == 0)
    return cmd_dnsflood (argv[2], atol (argv[3]));
  fprintf (stderr, "usage: attack keyring SERIAL | watch NEEDLE... -- SECONDS | syscalls | dnsflood ADDR N\n");
  return 2;
}
