//! The runtime's default profile (`RuntimeDefault`), after containerd's and
//! Docker's default for x86_64: an allow-list, everything else fails with
//! EPERM. Argument-conditional entries:
//!
//! - `personality` only with the values Docker allows (0, PER_LINUX32,
//!   UNAME26, both, and the 0xffffffff query);
//! - `socket` for every family but AF_VSOCK (as Docker since 25: in a pod
//!   VM the vsock is the agent's channel to the host);
//! - `clone` without any CLONE_NEW* flag, `clone3` fails with ENOSYS (its
//!   flags live in memory a filter cannot read; libc then falls back to
//!   `clone`) — both unconditional when CAP_SYS_ADMIN is in the bounding set;
//! - the syscalls Docker ties to a capability (mount, unshare, setns, bpf,
//!   ptrace-less ones like reboot, chroot, module loading, settimeofday, …)
//!   only when the container has that capability.
//!
//! Simplifications: x86_64 only (i386 and x32 calls kill the process), no
//! kernel-version conditions (the table holds what Linux 6.10 has).

use super::bpf::{Cond, Op, Rule, Ruleset, RET_ALLOW, RET_ERRNO};
use super::syscalls::number;

/// Allowed whatever the capabilities.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    "arch_prctl",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "cachestat",
    "fchmodat2",
    "map_shadow_stack",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
];

// Capability numbers (linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_PACCT: u32 = 20;
/// CAP_SYS_ADMIN.
pub const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYS_TTY_CONFIG: u32 = 26;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Allowed when the container has the capability.
const BY_CAP: &[(u32, &[&str])] = &[
    (
        CAP_SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount2",
            "unshare",
        ],
    ),
    (CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
    (CAP_SYS_BOOT, &["reboot"]),
    (CAP_SYS_CHROOT, &["chroot"]),
    (
        CAP_SYS_MODULE,
        &["delete_module", "init_module", "finit_module"],
    ),
    (CAP_SYS_PACCT, &["acct"]),
    (CAP_SYS_RAWIO, &["iopl", "ioperm"]),
    (CAP_SYS_TIME, &["settimeofday", "clock_settime"]),
    (CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (
        CAP_SYS_NICE,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (CAP_SYSLOG, &["syslog"]),
    (CAP_BPF, &["bpf"]),
    (CAP_PERFMON, &["perf_event_open"]),
];

/// `personality` values Docker allows.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];
/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NEW_FLAGS: u64 = 0x7e02_0000;
const AF_VSOCK: u64 = 40;

fn nr(name: &str) -> u32 {
    // Every name here is in the table (a unit test checks it).
    number(name).unwrap_or(u32::MAX)
}

fn allow(conds: Vec<Cond>) -> Rule {
    Rule {
        conds,
        action: RET_ALLOW,
    }
}

fn cond(arg: u8, op: Op, value: u64, value_two: u64) -> Cond {
    Cond {
        arg,
        op,
        value,
        value_two,
    }
}

/// The default profile for a container whose bounding set is `caps`.
pub fn ruleset(caps: &[u32]) -> Ruleset {
    let mut rs = Ruleset {
        default: RET_ERRNO | libc::EPERM as u32,
        ..Default::default()
    };
    let names = ALLOWED.iter().chain(
        BY_CAP
            .iter()
            .filter(|(cap, _)| caps.contains(cap))
            .flat_map(|(_, names)| names.iter()),
    );
    for name in names {
        rs.add(nr(name), allow(vec![]));
    }
    for &p in PERSONALITIES {
        rs.add(nr("personality"), allow(vec![cond(0, Op::Eq, p, 0)]));
    }
    // `socket`'s family is an int: the kernel looks at the low 32 bits
    // only, so the refusal must too (a high bit set must not slip past).
    rs.add(
        nr("socket"),
        Rule {
            conds: vec![cond(0, Op::MaskedEq, 0xffff_ffff, AF_VSOCK)],
            action: RET_ERRNO | libc::EPERM as u32,
        },
    );
    rs.add(nr("socket"), allow(vec![]));
    // Unconditional above when CAP_SYS_ADMIN is there (add keeps the first).
    rs.add(
        nr("clone"),
        allow(vec![cond(0, Op::MaskedEq, CLONE_NEW_FLAGS, 0)]),
    );
    rs.add(
        nr("clone3"),
        Rule {
            conds: vec![],
            action: RET_ERRNO | libc::ENOSYS as u32,
        },
    );
    rs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_an_x86_64_syscall() {
        let all = ALLOWED
            .iter()
            .chain(BY_CAP.iter().flat_map(|(_, n)| n.iter()))
            .chain(["personality", "socket", "clone", "clone3"].iter());
        for name in all {
            assert!(number(name).is_some(), "{name}");
        }
        assert!(ALLOWED.len() > 290, "{}", ALLOWED.len());
    }
}
