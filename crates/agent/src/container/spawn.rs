//! Starting a helper: a raw `clone(2)` (optionally into new namespaces)
//! whose child only moves four fds into place and `execveat`s the agent's
//! own binary. Nothing else runs between the clone and the exec, because
//! the child is a copy of one thread of a multi-threaded process: only
//! async-signal-safe calls are allowed there, and every argument is
//! prepared before the clone.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::unistd::Pid;

/// fds below this are the child's stdio and error fd; sources are moved
/// above it first so that the `dup2`s cannot overwrite each other.
const HIGH_FD: RawFd = 64;

/// The agent's own binary, opened once (it may not be reachable by path
/// from the agent's root).
fn self_exe() -> io::Result<RawFd> {
    static EXE: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();
    match EXE.get_or_init(|| {
        fs::File::open("/proc/self/exe")
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(code) => Err(io::Error::from_raw_os_error(*code)),
    }
}

fn cstrings(v: &[String]) -> io::Result<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{s:?} contains a NUL byte"),
                )
            })
        })
        .collect()
}

fn dup_high(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on an fd we were given; the result is a new fd we own.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The child's fds 0-3.
pub struct ChildFds<'a> {
    /// stdin.
    pub stdin: &'a OwnedFd,
    /// stdout.
    pub stdout: &'a OwnedFd,
    /// stderr.
    pub stderr: &'a OwnedFd,
    /// The helper's error fd.
    pub error: &'a OwnedFd,
}

/// Clones a child with `flags` (e.g. `CLONE_NEWPID | CLONE_NEWNS`) that
/// execs the agent binary with `args` (argv after argv[0]) and `env`.
/// Returns the child's pid. Call it inside [`crate::reaper::Reaper::spawn_watched`].
pub fn clone_helper(
    flags: libc::c_int,
    args: &[String],
    env: &[String],
    fds: &ChildFds<'_>,
) -> io::Result<Pid> {
    let exe = self_exe()?;
    let mut argv_s = vec!["hearth-agent".to_owned()];
    argv_s.extend(args.iter().cloned());
    let argv = cstrings(&argv_s)?;
    let envp = cstrings(env)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let empty = c"";
    let high = [
        dup_high(fds.stdin.as_raw_fd())?,
        dup_high(fds.stdout.as_raw_fd())?,
        dup_high(fds.stderr.as_raw_fd())?,
        dup_high(fds.error.as_raw_fd())?,
    ];
    let src: [RawFd; 4] = [
        high[0].as_raw_fd(),
        high[1].as_raw_fd(),
        high[2].as_raw_fd(),
        high[3].as_raw_fd(),
    ];
    let clone_flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a fork-like clone (no new stack, no shared memory). In the
    // child only dup2, execveat and _exit run, all async-signal-safe, on
    // memory prepared above; the child never returns from this block.
    let pid = unsafe {
        let r = libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize);
        if r == 0 {
            for (target, fd) in src.iter().enumerate() {
                if libc::dup2(*fd, target as libc::c_int) < 0 {
                    libc::_exit(126);
                }
            }
            libc::syscall(
                libc::SYS_execveat,
                exe,
                empty.as_ptr(),
                argv_p.as_ptr(),
                envp_p.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(126);
        }
        r
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Pid::from_raw(pid as i32))
}

/// Runs `f` (which clones) with the calling thread's pid namespace for
/// children set to `ns`, then restores the thread's own (also when `f`
/// panics: the thread goes back to a pool). Children cloned without
/// `CLONE_NEWPID` in `f` start in `ns`.
pub fn in_pid_namespace<T>(ns: &fs::File, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    struct Restore(fs::File);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Err(e) = nix::sched::setns(&self.0, nix::sched::CloneFlags::CLONE_NEWPID) {
                tracing::error!(error = %e, "cannot restore the thread's pid namespace");
            }
        }
    }
    let own = Restore(fs::File::open("/proc/thread-self/ns/pid")?);
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    let r = f();
    drop(own);
    r
}
