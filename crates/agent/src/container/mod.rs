//! Containers in the guest (`CreateContainer` … `ContainerLogs`).
//!
//! The agent owns its OCI-style runtime rather than linking one: a
//! container is an overlay rootfs (lower: the image drive the host mounted,
//! upper/work: the pod's scratch disk) and one process started by
//! [`spawn::clone_helper`] in a new pid and mount namespace, which re-runs
//! this binary as [`helper`] `container-init` to build the mounts, pivot
//! and exec. The pod's uts, ipc and network namespaces are the agent's
//! own; the agent's pid namespace is never shared, so no container sees or
//! signals PID 1.
//!
//! Layout: [`helper`] (the re-executed helpers), [`spawn`] (clone + exec),
//! [`logs`] (bounded stdout/stderr backlog), [`exec`] (`ExecSync`), and here
//! the registry and the lifecycle RPCs.

pub mod exec;
pub mod helper;
pub mod logs;
pub mod spawn;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_agent_proto::v1::{
    ContainerProcess, ContainerState as ProtoState, CreateContainerRequest, WaitContainerResponse,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thiserror::Error;
use tokio::sync::watch;

use crate::reaper::{ExitStatus, Reaper};
use helper::UserArgs;

/// Longest container id.
const MAX_ID: usize = 64;
/// Longest error message read from a helper.
const MAX_HELPER_ERROR: u64 = 4096;
/// How long removal waits for a killed container to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Longest wait one `WaitContainer` may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Errors of the container RPCs.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// The request is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No container with this id.
    #[error("no container {0}")]
    NotFound(String),
    /// The id is taken.
    #[error("container {0} already exists")]
    Exists(String),
    /// The container is not in a state that allows the call.
    #[error("container {id} is {state}")]
    State {
        /// The container.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// The process could not be started (the helper's message).
    #[error("cannot start the process of {id}: {message}")]
    Start {
        /// The container.
        id: String,
        /// Why (e.g. executable file not found).
        message: String,
    },
    /// A system call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// Where containers live in the guest.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Per-container dirs with the rootfs mount point (tmpfs).
    pub run: PathBuf,
    /// Per-container upper/work dirs (the scratch disk).
    pub scratch: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            run: PathBuf::from("/run/hearth/containers"),
            scratch: PathBuf::from("/run/hearth/scratch/containers"),
        }
    }
}

/// Lifecycle of one container in the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Rootfs ready, nothing runs.
    Created,
    /// Its init runs.
    Running {
        /// Its pid (agent's view).
        pid: i32,
        /// ns since the epoch.
        started: i64,
    },
    /// Its init ended (or never started: `pid` 0).
    Exited {
        /// Its pid (agent's view).
        pid: i32,
        /// ns since the epoch.
        started: i64,
        /// ns since the epoch.
        finished: i64,
        /// How it ended.
        status: ExitStatus,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running { .. } => "running",
            State::Exited { .. } => "exited",
        }
    }
}

/// One container.
pub struct Container {
    id: String,
    rootfs: PathBuf,
    run_dir: PathBuf,
    scratch_dir: PathBuf,
    process: ContainerProcess,
    read_only: bool,
    state: Mutex<State>,
    exited: watch::Sender<bool>,
    logs: logs::LogQueue,
}

impl Container {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state as `WaitContainer` reports it.
    pub fn report(&self) -> WaitContainerResponse {
        match *self.state() {
            State::Created => WaitContainerResponse {
                state: ProtoState::Created as i32,
                ..Default::default()
            },
            State::Running { pid, started } => WaitContainerResponse {
                state: ProtoState::Running as i32,
                pid: pid as u32,
                started_at_ns: started,
                ..Default::default()
            },
            State::Exited {
                pid,
                started,
                finished,
                status,
            } => WaitContainerResponse {
                state: ProtoState::Exited as i32,
                pid: pid as u32,
                exit_code: status.code(),
                signal: match status {
                    ExitStatus::Signaled(s) => s,
                    ExitStatus::Exited(_) => 0,
                },
                started_at_ns: started,
                finished_at_ns: finished,
            },
        }
    }

    /// The init's pid while it runs.
    pub fn running_pid(&self) -> Option<i32> {
        match *self.state() {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// The container's process spec.
    pub fn process(&self) -> &ContainerProcess {
        &self.process
    }

    /// Its log backlog.
    pub fn logs(&self) -> &logs::LogQueue {
        &self.logs
    }
}

/// All containers of the pod.
pub struct Containers {
    reaper: Reaper,
    paths: Paths,
    map: Mutex<HashMap<String, Arc<Container>>>,
}

/// ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn validate_id(id: &str) -> Result<(), ContainerError> {
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Err(ContainerError::Invalid {
            field: "container_id",
            reason: format!("{id:?} must be 1-{MAX_ID} characters of [a-z0-9]"),
        });
    }
    Ok(())
}

/// Checks a process spec (args, env, cwd, user).
pub fn validate_process(p: &ContainerProcess, need_cwd: bool) -> Result<(), ContainerError> {
    let invalid = |field, reason: String| ContainerError::Invalid { field, reason };
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(invalid(
            "process.args",
            "the command must not be empty".into(),
        ));
    }
    for s in p.args.iter().chain(&p.env) {
        if s.contains('\0') {
            return Err(invalid("process", format!("{s:?} contains a NUL byte")));
        }
    }
    for e in &p.env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(invalid("process.env", format!("{e:?} is not KEY=value")));
        }
    }
    if (need_cwd || !p.cwd.is_empty()) && !p.cwd.starts_with('/') {
        return Err(invalid(
            "process.cwd",
            format!("{:?} must be an absolute path", p.cwd),
        ));
    }
    if let Some(c) = &p.capabilities {
        helper::capability_set(&c.add, &c.drop).map_err(|reason| ContainerError::Invalid {
            field: "process.capabilities",
            reason,
        })?;
    }
    if let Some(u) = &p.user {
        if u.username.contains(':') || u.username.contains('\0') {
            return Err(invalid(
                "process.user.username",
                format!("{:?} is not a user name", u.username),
            ));
        }
    }
    Ok(())
}

/// The helper's user and capability arguments (the process is valid).
fn user_args(p: &ContainerProcess) -> UserArgs {
    let caps = match &p.capabilities {
        Some(c) => helper::capability_set(&c.add, &c.drop).unwrap_or_default(),
        None => helper::DEFAULT_CAPS.to_vec(),
    };
    match &p.user {
        Some(u) => UserArgs {
            uid: u.uid,
            username: u.username.clone(),
            gid: u.gid,
            additional_gids: u.additional_gids.clone(),
            caps,
        },
        None => UserArgs {
            caps,
            ..UserArgs::default()
        },
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))
}

/// /dev/null for a child's stdin.
pub fn dev_null() -> Result<OwnedFd, ContainerError> {
    fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(io_err("open /dev/null"))
}

/// Reads a helper's error fd to EOF (at most [`MAX_HELPER_ERROR`] bytes).
/// Empty: the exec happened.
pub fn read_helper_error(fd: OwnedFd) -> String {
    let mut msg = Vec::new();
    let _ = fs::File::from(fd)
        .take(MAX_HELPER_ERROR)
        .read_to_end(&mut msg);
    String::from_utf8_lossy(&msg).trim().to_owned()
}

impl Containers {
    /// No containers yet.
    pub fn new(reaper: Reaper, paths: Paths) -> Containers {
        Containers {
            reaper,
            paths,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(id.to_owned()))
    }

    /// The reaper containers are started through.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// `CreateContainer` (blocking: mounts).
    pub fn create(&self, req: CreateContainerRequest) -> Result<(), ContainerError> {
        validate_id(&req.container_id)?;
        let process = req.process.clone().unwrap_or_default();
        validate_process(&process, true)?;
        let image = Path::new(&req.image_mountpoint);
        if !image.is_absolute() || !image.is_dir() {
            return Err(ContainerError::Invalid {
                field: "image_mountpoint",
                reason: format!(
                    "{} is not a directory; mount the image drive first",
                    image.display()
                ),
            });
        }
        let id = req.container_id.clone();
        let run_dir = self.paths.run.join(&id);
        let scratch_dir = self.paths.scratch.join(&id);
        let (tx, _) = watch::channel(false);
        let container = Arc::new(Container {
            id: id.clone(),
            rootfs: run_dir.join("rootfs"),
            run_dir,
            scratch_dir,
            process,
            read_only: req.read_only_rootfs,
            state: Mutex::new(State::Created),
            exited: tx,
            logs: logs::LogQueue::new(),
        });
        {
            let mut map = self.map();
            if map.contains_key(&id) {
                return Err(ContainerError::Exists(id));
            }
            map.insert(id.clone(), container.clone());
        }
        if let Err(e) = mount_rootfs(&container, image) {
            let _ = cleanup_rootfs(&container);
            self.map().remove(&id);
            return Err(e);
        }
        tracing::info!(container_id = %id, "container created");
        Ok(())
    }

    /// `StartContainer`: returns (pid, started).
    pub async fn start(&self, id: &str) -> Result<(i32, i64), ContainerError> {
        let c = self.get(id)?;
        let state = c.state().name();
        if state != "created" {
            return Err(ContainerError::State {
                id: id.to_owned(),
                state,
            });
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (fail_r, fail_w) = pipe()?;
        let null = dev_null()?;
        let args = helper::init_args(
            &c.rootfs,
            &c.process.cwd,
            &user_args(&c.process),
            c.read_only,
            &c.process.args,
        );
        let env = c.process.env.clone();
        let reaper = self.reaper.clone();
        let started = now_ns();
        let (pid, waiter, failure) = tokio::task::spawn_blocking(move || {
            let fds = spawn::ChildFds {
                stdin: &null,
                stdout: &out_w,
                stderr: &err_w,
                error: &fail_w,
            };
            let (pid, waiter) = reaper
                .spawn_watched(|| {
                    spawn::clone_helper(libc::CLONE_NEWPID | libc::CLONE_NEWNS, &args, &env, &fds)
                })
                .map_err(|e| io_err("clone")(io::Error::other(e)))?;
            drop((null, out_w, err_w, fail_w));
            Ok::<_, ContainerError>((pid, waiter, read_helper_error(fail_r)))
        })
        .await
        .map_err(|e| io_err("start task")(io::Error::other(e)))??;
        let mut readers = Vec::new();
        for (fd, stream) in [(out_r, logs::STDOUT), (err_r, logs::STDERR)] {
            readers.push(c.logs.read_pipe(fd, stream)?);
        }
        *c.state() = State::Running {
            pid: pid.as_raw(),
            started,
        };
        let cc = c.clone();
        tokio::spawn(async move {
            let status = waiter.await.unwrap_or(ExitStatus::Signaled(9));
            let finished = now_ns();
            // The log readers end when every writer has closed its end.
            // Bounded: a background process may keep them open.
            for r in readers {
                let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
            }
            *cc.state() = State::Exited {
                pid: pid.as_raw(),
                started,
                finished,
                status,
            };
            cc.logs.close();
            cc.exited.send_replace(true);
            tracing::info!(container_id = %cc.id, ?status, "container exited");
        });
        if !failure.is_empty() {
            // The helper exits 127 right after writing: wait for that.
            let _ = self.wait(id, Duration::from_secs(5)).await;
            return Err(ContainerError::Start {
                id: id.to_owned(),
                message: failure,
            });
        }
        tracing::info!(container_id = %id, pid = pid.as_raw(), "container started");
        Ok((pid.as_raw(), started))
    }

    /// `SignalContainer`.
    pub fn signal(&self, id: &str, signal: u32) -> Result<(), ContainerError> {
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| ContainerError::Invalid {
                field: "signal",
                reason: format!("{signal} is not a signal number"),
            })?;
        let c = self.get(id)?;
        match c.running_pid() {
            Some(pid) => match kill(Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(e) => Err(io_err(format!("kill {pid}"))(e.into())),
            },
            // Signalling what has exited is not an error (it raced).
            None => Ok(()),
        }
    }

    /// `WaitContainer`: the state, once exited or after `timeout`.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<WaitContainerResponse, ContainerError> {
        let c = self.get(id)?;
        let mut rx = c.exited.subscribe();
        let running = matches!(*c.state(), State::Running { .. });
        if running && !timeout.is_zero() {
            let _ = tokio::time::timeout(timeout.min(MAX_WAIT), rx.wait_for(|e| *e)).await;
        }
        Ok(c.report())
    }

    /// `RemoveContainer`: kills, unmounts, deletes. Unknown ids are fine.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let Ok(c) = self.get(id) else {
            return Ok(());
        };
        if let Some(pid) = c.running_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let mut rx = c.exited.subscribe();
            if tokio::time::timeout(KILL_WAIT, rx.wait_for(|e| *e))
                .await
                .is_err()
            {
                return Err(ContainerError::State {
                    id: id.to_owned(),
                    state: "still running after SIGKILL",
                });
            }
        }
        let cc = c.clone();
        tokio::task::spawn_blocking(move || cleanup_rootfs(&cc))
            .await
            .map_err(|e| io_err("remove task")(io::Error::other(e)))??;
        c.logs.close();
        self.map().remove(id);
        tracing::info!(container_id = %id, "container removed");
        Ok(())
    }
}

fn mount_rootfs(c: &Container, image: &Path) -> Result<(), ContainerError> {
    let upper = c.scratch_dir.join("upper");
    let work = c.scratch_dir.join("work");
    for d in [&upper, &work, &c.rootfs] {
        fs::create_dir_all(d).map_err(io_err(format!("cannot create {}", d.display())))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &c.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        io_err(format!(
            "cannot mount the overlay rootfs on {}",
            c.rootfs.display()
        ))(e.into())
    })
}

fn cleanup_rootfs(c: &Container) -> Result<(), ContainerError> {
    match umount2(&c.rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(io_err(format!("cannot unmount {}", c.rootfs.display()))(
                e.into(),
            ))
        }
    }
    for d in [&c.run_dir, &c.scratch_dir] {
        match fs::remove_dir_all(d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("cannot remove {}", d.display()))(e))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_agent_proto::v1::ContainerUser;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc123").is_ok());
        for bad in ["", "ABC", "a/b", "../x", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn processes_are_checked() {
        let ok = ContainerProcess {
            args: vec!["sh".into()],
            env: vec!["A=b".into(), "EMPTY=".into()],
            cwd: "/".into(),
            user: Some(ContainerUser::default()),
            capabilities: None,
        };
        assert!(validate_process(&ok, true).is_ok());
        let mut p = ok.clone();
        p.args.clear();
        assert!(validate_process(&p, true).is_err());
        let mut p = ok.clone();
        p.env.push("NOEQUALS".into());
        assert!(validate_process(&p, true).is_err());
        let mut p = ok.clone();
        p.cwd = "rel".into();
        assert!(validate_process(&p, true).is_err());
        p.cwd = String::new();
        assert!(validate_process(&p, false).is_ok());
        p.capabilities = Some(hearth_agent_proto::v1::Capabilities {
            add: vec!["CAP_NOPE".into()],
            drop: vec![],
        });
        assert!(validate_process(&p, false).is_err());
        assert!(validate_process(&p, true).is_err());
    }

    #[tokio::test]
    async fn unknown_containers() {
        let cs = Containers::new(Reaper::new(), Paths::default());
        assert!(matches!(
            cs.start("nope").await,
            Err(ContainerError::NotFound(_))
        ));
        assert!(cs.remove("nope").await.is_ok());
        assert!(matches!(
            cs.signal("nope", 15),
            Err(ContainerError::NotFound(_))
        ));
        assert!(matches!(
            cs.signal("nope", 99),
            Err(ContainerError::Invalid { .. })
        ));
    }
}
