//! Processes hearthd did not start directly but adopted: the agents of the
//! namespaces backend, whose launcher exits after forking them. hearthd is
//! their child subreaper, so it reaps them; after a hearthd restart it
//! only watches them.

use std::fs;

/// The process start time (field 22 of /proc/<pid>/stat), which tells a
/// pid apart from a later process that reuses the number.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is the process that started at `started`.
pub fn alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// Makes this process the child subreaper, so that agents whose launcher
/// exits are reparented to hearthd (the host's PID 1 may not reap).
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become child subreaper");
    }
}

/// Reaps `pid` once it exits, if it is our child; returns when it is gone.
pub async fn reap_when_exited(pid: u32) {
    let Ok(fd) = pidfd_open(pid) else {
        return;
    };
    // SAFETY: the AsyncFd owns the pidfd, which stays open and the same
    // until it is dropped.
    if let Ok(afd) = unsafe { tokio::io::unix::AsyncFd::register(fd) } {
        let _ = afd.readable().await;
    }
    // SAFETY: waitpid on a specific pid with a valid status pointer.
    unsafe {
        let mut status = 0;
        libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned by the kernel and is owned by us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable_and_others_are_not_alive() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert!(!alive(u32::MAX - 1, 0));
    }
}
