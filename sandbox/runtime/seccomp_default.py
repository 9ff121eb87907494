"""Docker's default seccomp profile (moby profiles/seccomp/default.json), in a compact form.

`sandbox.runtime.seccomp.default_profile()` expands this into the Docker/OCI JSON shape.  The
data follows moby's file rule for rule, in its order:

* everything in `ALLOWED` is allowed unconditionally; anything not named anywhere gets
  `defaultAction` SCMP_ACT_ERRNO with errno 1 (EPERM): add_key, keyctl, request_key, userfaultfd,
  move_pages, kexec_*, swapon/swapoff, io_uring_* (moby blocks io_uring since v25), ...;
* `RULES` are the conditional rules: (names, action, errnoRet, args, includes, excludes), where
  args are (index, op, value, valueTwo) with op without its SCMP_CMP_ prefix, and includes /
  excludes are dicts of Docker's `caps`, `arches` and `minKernel` keys.

Notable Docker decisions kept as they are: ptrace and process_vm_readv/writev are allowed on
kernels >= 4.8 (the kernel then re-checks seccomp after a tracer changes a syscall, and both are
subject to the same ptrace access check inside the container's pid namespace); clone is allowed
only without CLONE_NEW* flags and clone3 returns ENOSYS (so libc falls back to clone) unless the
bounding set holds CAP_SYS_ADMIN; socket(AF_VSOCK) is refused.
"""

DEFAULT_ACTION = "SCMP_ACT_ERRNO"
DEFAULT_ERRNO = 1  # EPERM

# Docker's archMap: the native architecture and the ones a process of it can also call through.
ARCH_MAP = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
)

ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync
fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr
llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64
preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read
readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl
semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid
setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall
socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs
sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime
utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
"""

_ALLOW = "SCMP_ACT_ALLOW"
_CLONE_NEW_MASK = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# (names, action, errnoRet, args, includes, excludes)
RULES = (
    ("process_vm_readv process_vm_writev ptrace", _ALLOW, None, (), {"minKernel": "4.8"}, {}),
    ("socket", _ALLOW, None, ((0, "NE", 40, 0),), {}, {}),  # not AF_VSOCK
    ("personality", _ALLOW, None, ((0, "EQ", 0x0, 0),), {}, {}),  # PER_LINUX
    ("personality", _ALLOW, None, ((0, "EQ", 0x8, 0),), {}, {}),  # UNAME26
    ("personality", _ALLOW, None, ((0, "EQ", 0x20000, 0),), {}, {}),  # PER_LINUX32
    ("personality", _ALLOW, None, ((0, "EQ", 0x20008, 0),), {}, {}),  # UNAME26|PER_LINUX32
    ("personality", _ALLOW, None, ((0, "EQ", 0xFFFFFFFF, 0),), {}, {}),  # query
    ("sync_file_range2 swapcontext", _ALLOW, None, (), {"arches": ["ppc64le"]}, {}),
    ("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls", _ALLOW, None, (),
     {"arches": ["arm", "arm64"]}, {}),
    ("arch_prctl", _ALLOW, None, (), {"arches": ["amd64", "x32"]}, {}),
    ("modify_ldt", _ALLOW, None, (), {"arches": ["amd64", "x32", "x86"]}, {}),
    ("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", _ALLOW, None, (),
     {"arches": ["s390", "s390x"]}, {}),
    ("riscv_flush_icache", _ALLOW, None, (), {"arches": ["riscv64"]}, {}),
    ("open_by_handle_at", _ALLOW, None, (), {"caps": ["CAP_DAC_READ_SEARCH"]}, {}),
    ("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr "
     "move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog "
     "umount umount2 unshare", _ALLOW, None, (), {"caps": ["CAP_SYS_ADMIN"]}, {}),
    ("clone", _ALLOW, None, ((0, "MASKED_EQ", _CLONE_NEW_MASK, 0),), {},
     {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
    # s390 passes clone's flags in the second argument.
    ("clone", _ALLOW, None, ((1, "MASKED_EQ", _CLONE_NEW_MASK, 0),), {"arches": ["s390", "s390x"]},
     {"caps": ["CAP_SYS_ADMIN"]}),
    # clone3's flags are in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
    ("clone3", "SCMP_ACT_ERRNO", 38, (), {}, {"caps": ["CAP_SYS_ADMIN"]}),
    ("reboot", _ALLOW, None, (), {"caps": ["CAP_SYS_BOOT"]}, {}),
    ("chroot", _ALLOW, None, (), {"caps": ["CAP_SYS_CHROOT"]}, {}),
    ("delete_module init_module finit_module", _ALLOW, None, (), {"caps": ["CAP_SYS_MODULE"]}, {}),
    ("acct", _ALLOW, None, (), {"caps": ["CAP_SYS_PACCT"]}, {}),
    ("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace", _ALLOW, None, (),
     {"caps": ["CAP_SYS_PTRACE"]}, {}),
    ("iopl ioperm", _ALLOW, None, (), {"caps": ["CAP_SYS_RAWIO"]}, {}),
    ("settimeofday stime clock_settime clock_settime64", _ALLOW, None, (), {"caps": ["CAP_SYS_TIME"]}, {}),
    ("vhangup", _ALLOW, None, (), {"caps": ["CAP_SYS_TTY_CONFIG"]}, {}),
    ("get_mempolicy mbind set_mempolicy set_mempolicy_home_node", _ALLOW, None, (),
     {"caps": ["CAP_SYS_NICE"]}, {}),
    ("syslog", _ALLOW, None, (), {"caps": ["CAP_SYSLOG"]}, {}),
    ("bpf", _ALLOW, None, (), {"caps": ["CAP_BPF"]}, {}),
    ("perf_event_open", _ALLOW, None, (), {"caps": ["CAP_PERFMON"]}, {}),
)
