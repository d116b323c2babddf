//! Starting QEMU and vhost-device-vsock, and telling whether they still run.
//!
//! Both are direct children of the caller, which must reap them (hearthd
//! does, with a pidfd per process). The child joins the pod's cgroup (by
//! writing `0` to each `cgroup.procs`, opened before the fork) and, for
//! QEMU, the pod's network namespace (`setns`) before `exec`, so nothing of
//! the VM ever runs outside them.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Errors of starting a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A file the child needs could not be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// fork/exec (or the set-up in the child) failed.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the child runs.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The network namespace to enter (a `/var/run/netns/<name>` file).
    pub netns: Option<PathBuf>,
    /// The `cgroup.procs` files to join (one per v1 hierarchy, or one).
    pub cgroup_procs: Vec<PathBuf>,
    /// stdout and stderr go here (created or truncated).
    pub log: PathBuf,
}

/// Starts `program` with `args`; returns its pid. The caller reaps it.
pub fn spawn(program: &Path, args: &[OsString], opts: &SpawnOptions) -> Result<u32, SpawnError> {
    let open = |path: &Path, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
            .map_err(|source| SpawnError::Open {
                path: path.to_owned(),
                source,
            })
    };
    let netns: Option<File> = opts.netns.as_deref().map(|p| open(p, false)).transpose()?;
    let procs: Vec<File> = opts
        .cgroup_procs
        .iter()
        .map(|p| open(p, true))
        .collect::<Result<_, _>>()?;
    let log = File::create(&opts.log).map_err(|source| SpawnError::Open {
        path: opts.log.clone(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| SpawnError::Open {
        path: opts.log.clone(),
        source,
    })?;
    let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
    let procs_fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: the closure makes only async-signal-safe calls (write, setns,
    // setsid) on fds opened before the fork, and allocates nothing (the
    // fd list was built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            // Own session: a signal to hearthd's process group does not
            // reach the VM.
            libc::setsid();
            for fd in &procs_fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    Ok(child.id())
}

/// The process start time (field 22 of /proc/<pid>/stat), which tells a
/// pid apart from a later process that reuses the number. `None` when the
/// process is gone or a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `started`.
pub fn alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// Resident memory of `pid` in KiB (`VmRSS`), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Why waiting for a socket ended without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketWait {
    /// The process exited first.
    Exited,
    /// The deadline passed.
    TimedOut,
}

/// Waits until `path` is a socket, while `pid` (started at `started`)
/// runs, for at most `deadline`. Blocking; polls every few ms.
pub fn wait_for_socket(
    path: &Path,
    pid: u32,
    started: u64,
    deadline: Duration,
) -> Result<(), SocketWait> {
    use std::os::unix::fs::FileTypeExt;
    let end = Instant::now() + deadline;
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(());
        }
        if !alive(pid, started) {
            return Err(SocketWait::Exited);
        }
        if Instant::now() >= end {
            return Err(SocketWait::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Sends `signal` to `pid` if it is still the process that started at
/// `started`. Returns whether it was sent.
pub fn signal_if_alive(pid: u32, started: u64, signal: i32) -> bool {
    if !alive(pid, started) {
        return false;
    }
    // SAFETY: kill takes a pid and a signal; the pid was checked to be our
    // process by its start time just above.
    unsafe { libc::kill(pid as i32, signal) == 0 }
}

/// The host's CPU frequency in kHz from /proc/cpuinfo (`cpu MHz`), for
/// the guest's `tsc_early_khz` under TCG.
pub fn host_cpu_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_khz(&info)
}

/// [`host_cpu_khz`] over a given cpuinfo text.
pub fn parse_cpu_khz(cpuinfo: &str) -> Option<u64> {
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split_once(':')?
        .1
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_khz_from_cpuinfo() {
        assert_eq!(
            parse_cpu_khz("processor\t: 0\ncpu MHz\t\t: 2100.000\n"),
            Some(2_100_000)
        );
        assert_eq!(parse_cpu_khz("cpu MHz : 2394.454"), Some(2_394_454));
        assert_eq!(parse_cpu_khz("nothing"), None);
        assert_eq!(parse_cpu_khz("cpu MHz : bogus"), None);
    }

    #[test]
    fn spawned_process_is_alive_then_gone() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpawnOptions {
            log: dir.path().join("log"),
            ..Default::default()
        };
        let pid = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "echo hi; sleep 30".into()],
            &opts,
        )
        .unwrap();
        let started = start_time(pid).unwrap();
        assert!(alive(pid, started));
        let log = dir.path().join("log");
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&log).unwrap() != "hi\n" && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!alive(pid, started + 1));
        assert!(rss_kib(pid).is_some());
        assert!(signal_if_alive(pid, started, libc::SIGKILL));
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        assert!(!alive(pid, started));
        assert!(!signal_if_alive(pid, started, libc::SIGKILL));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hi\n");
    }

    #[test]
    fn missing_program_and_cgroup_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpawnOptions {
            log: dir.path().join("log"),
            cgroup_procs: vec![dir.path().join("nope/cgroup.procs")],
            ..Default::default()
        };
        let err = spawn(Path::new("/bin/true"), &[], &opts).unwrap_err();
        assert!(err.to_string().contains("nope/cgroup.procs"), "{err}");
        let opts = SpawnOptions {
            log: dir.path().join("log"),
            ..Default::default()
        };
        let err = spawn(&dir.path().join("no-such-qemu"), &[], &opts).unwrap_err();
        assert!(err.to_string().contains("no-such-qemu"), "{err}");
    }
}
