//! PID 1's duty: reap every child, and hand exit statuses to whoever asked.
//!
//! Orphans anywhere in the guest (or the pid namespace) are reparented to the
//! agent, so on every `SIGCHLD` the reaper collects all exited children with
//! `waitpid(-1, WNOHANG)`. A component that starts a process and needs its
//! exit status (the container runtime, exec) starts it through
//! [`Reaper::spawn_watched`]: the registry lock is held from before the fork
//! until the pid is registered, and the reaper takes the same lock around
//! `waitpid`, so an early exit can never be reaped unseen. Everything else is
//! reaped and forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }
}

/// Errors of the reaper.
#[derive(Debug, Error)]
pub enum ReaperError {
    /// A pid is watched at most once.
    #[error("pid {0} is already watched")]
    AlreadyWatched(i32),
    /// The spawn function failed.
    #[error("spawn failed")]
    Spawn(#[source] std::io::Error),
    /// Installing the SIGCHLD handler failed.
    #[error("cannot install the SIGCHLD handler")]
    Signal(#[source] std::io::Error),
}

/// Receives the exit status of one watched pid.
pub type ExitWaiter = oneshot::Receiver<ExitStatus>;

/// Pids someone waits for. Pure bookkeeping: no syscalls.
#[derive(Debug, Default)]
pub struct Registry {
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

impl Registry {
    /// Starts watching `pid`.
    pub fn watch(&mut self, pid: i32) -> Result<ExitWaiter, ReaperError> {
        if self.waiters.contains_key(&pid) {
            return Err(ReaperError::AlreadyWatched(pid));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(pid, tx);
        Ok(rx)
    }

    /// Records that `pid` ended. Returns whether someone was watching it.
    pub fn exited(&mut self, pid: i32, status: ExitStatus) -> bool {
        match self.waiters.remove(&pid) {
            // The waiter may have given up (dropped its receiver): fine.
            Some(tx) => {
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }

    /// How many pids are watched.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether no pid is watched.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

/// The agent's reaper (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
}

impl Reaper {
    /// A reaper with no watched pids.
    pub fn new() -> Reaper {
        Reaper::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `spawn` (which forks and returns the child's pid) with reaping
    /// held off, and watches the pid it returns.
    pub fn spawn_watched<F>(&self, spawn: F) -> Result<(Pid, ExitWaiter), ReaperError>
    where
        F: FnOnce() -> std::io::Result<Pid>,
    {
        let mut registry = self.lock();
        let pid = spawn().map_err(ReaperError::Spawn)?;
        let waiter = registry.watch(pid.as_raw())?;
        Ok((pid, waiter))
    }

    /// Reaps every child that has exited, without blocking. Returns how many.
    pub fn reap_exited(&self) -> usize {
        self.reap().0
    }

    /// Reaps what has exited; also tells whether no child is left at all.
    fn reap(&self) -> (usize, bool) {
        let mut registry = self.lock();
        let mut reaped = 0;
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _core)) => {
                    (pid, ExitStatus::Signaled(sig as i32))
                }
                Ok(WaitStatus::StillAlive) => return (reaped, false),
                Err(Errno::ECHILD) => return (reaped, true),
                // Stopped / continued (not asked for), EINTR: look again.
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "waitpid failed");
                    return (reaped, false);
                }
            };
            reaped += 1;
            let watched = registry.exited(pid.as_raw(), status);
            tracing::debug!(pid = pid.as_raw(), ?status, watched, "reaped");
        }
    }

    /// Reaps on every `SIGCHLD`, for ever. Install it before starting any
    /// child.
    pub fn start(&self) -> Result<tokio::task::JoinHandle<()>, ReaperError> {
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        let reaper = self.clone();
        Ok(tokio::spawn(async move {
            // Children that ended before the handler existed.
            reaper.reap_exited();
            while sigchld.recv().await.is_some() {
                reaper.reap_exited();
            }
        }))
    }

    /// Blocking: reaps until no child is left or `timeout` passes. Returns
    /// whether every child is gone. For the shutdown path, after the async
    /// runtime is gone.
    pub fn reap_all_blocking(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.reap().1 {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_pid_gets_its_status() {
        let mut r = Registry::default();
        let mut rx = r.watch(42).unwrap();
        assert!(r.exited(42, ExitStatus::Exited(3)));
        assert_eq!(rx.try_recv().unwrap(), ExitStatus::Exited(3));
        assert!(r.is_empty());
    }

    #[test]
    fn unwatched_pid_is_just_reaped() {
        let mut r = Registry::default();
        let _rx = r.watch(42).unwrap();
        assert!(!r.exited(7, ExitStatus::Signaled(9)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn pid_is_watched_once() {
        let mut r = Registry::default();
        let _rx = r.watch(42).unwrap();
        assert!(matches!(r.watch(42), Err(ReaperError::AlreadyWatched(42))));
    }

    #[test]
    fn gone_waiter_is_not_an_error() {
        let mut r = Registry::default();
        drop(r.watch(42).unwrap());
        assert!(r.exited(42, ExitStatus::Exited(0)));
        assert!(r.is_empty());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Exited(2).code(), 2);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
    }

    #[test]
    fn spawn_watched_delivers_the_real_exit_status() {
        let reaper = Reaper::new();
        let (pid, mut rx) = reaper
            .spawn_watched(|| {
                let child = std::process::Command::new("sh")
                    .args(["-c", "exit 7"])
                    .spawn()?;
                Ok(Pid::from_raw(child.id() as i32))
            })
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            reaper.reap_exited();
            if let Ok(status) = rx.try_recv() {
                assert_eq!(status, ExitStatus::Exited(7), "pid {pid}");
                break;
            }
            assert!(Instant::now() < end, "child {pid} never reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
