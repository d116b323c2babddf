//! Containers in the guest (`CreateContainer` … `ContainerLogs`).
//!
//! The agent owns its OCI-style runtime rather than linking one: a
//! container is an overlay rootfs (lower: the image drive the host mounted,
//! upper/work: the pod's scratch disk) and one process started by
//! [`spawn::clone_helper`] in a new pid and mount namespace, which re-runs
//! this binary as [`helper`] `container-init` to build the mounts, pivot
//! and exec. The pod's uts, ipc and network namespaces are the agent's
//! own; the agent's pid namespace is never shared, so no container sees or
//! signals PID 1. Containers that ask for the pod's pid namespace share one
//! the agent creates for them (held by a `pod-pause` helper).
//!
//! Layout: [`helper`] (the re-executed helpers), [`spawn`] (clone + exec),
//! [`mounts`] (volumes, masked and read-only paths), [`seccomp`],
//! [`cgroup`] (limits, OOM), [`logs`] (bounded stdout/stderr backlog),
//! [`exec`] (`ExecSync`), and here the registry and the lifecycle RPCs.

pub mod cgroup;
pub mod exec;
pub mod helper;
pub mod logs;
pub mod mounts;
pub mod seccomp;
pub mod spawn;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_agent_proto::v1::{
    seccomp_profile, ContainerProcess, ContainerResources, ContainerState as ProtoState,
    CreateContainerRequest, WaitContainerResponse,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thiserror::Error;
use tokio::sync::watch;

use crate::reaper::{ExitStatus, Reaper};
use crate::volumes::{VolumeError, Volumes};
use helper::{InitSpec, ProcessSpec, UserArgs};
use mounts::BindMount;
use seccomp::SeccompSpec;

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
    /// What its init helper gets (the process part from `process`).
    init: InitSpec,
    /// Joins the pod's pid namespace.
    pod_pid_namespace: bool,
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
        // A copy: the OOM check below reads a file, not under the lock.
        let state = *self.state();
        match state {
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
                oom_killed: cgroup::oom_killed(&self.id),
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

    /// The process spec an exec in this container gets: `args`, its
    /// own cwd/user, and the container's confinement (capabilities,
    /// no_new_privs, seccomp, cgroup). An exec never gets more.
    pub fn exec_spec(&self, args: Vec<String>, cwd: String, user: UserArgs) -> ProcessSpec {
        let c = &self.init.process;
        ProcessSpec {
            args,
            cwd,
            user: UserArgs {
                caps: c.user.caps.clone(),
                ..user
            },
            no_new_privs: c.no_new_privs,
            seccomp: c.seccomp.clone(),
            cgroup_procs: cgroup::procs(&self.id),
        }
    }

    /// Where its helpers' spec files go.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

/// All containers of the pod.
pub struct Containers {
    reaper: Reaper,
    paths: Paths,
    volumes: Arc<Volumes>,
    map: Mutex<HashMap<String, Arc<Container>>>,
    /// The pid of the pod's pid namespace holder, once one was needed.
    pause: Mutex<Option<i32>>,
}

/// ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Whether `id` is a container id: 1-[`MAX_ID`] characters of [a-z0-9]
/// (safe as a path component).
pub fn is_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn validate_id(id: &str) -> Result<(), ContainerError> {
    if !is_container_id(id) {
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
pub fn user_args(p: &ContainerProcess) -> UserArgs {
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
    pub fn new(reaper: Reaper, paths: Paths, volumes: Arc<Volumes>) -> Containers {
        Containers {
            reaper,
            paths,
            volumes,
            map: Mutex::new(HashMap::new()),
            pause: Mutex::new(None),
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
        if let Some(r) = &req.resources {
            cgroup::check(r).map_err(|reason| ContainerError::Invalid {
                field: "resources",
                reason,
            })?;
        }
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
        let rootfs = run_dir.join("rootfs");
        let mut init = self.init_spec(&req, &process)?;
        init.rootfs = rootfs.clone();
        let (tx, _) = watch::channel(false);
        let container = Arc::new(Container {
            id: id.clone(),
            rootfs,
            run_dir,
            scratch_dir,
            process,
            init,
            pod_pid_namespace: req.pod_pid_namespace,
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
        let made = mount_rootfs(&container, image).and_then(|()| {
            cgroup::create(&id, req.resources.as_ref())
                .map_err(|e| io_err(format!("cgroup of {id}"))(io::Error::other(e)))
        });
        if let Err(e) = made {
            let _ = cleanup_rootfs(&container);
            let _ = cgroup::remove(&id);
            self.map().remove(&id);
            return Err(e);
        }
        tracing::info!(container_id = %id, "container created");
        Ok(())
    }

    /// The init spec of a new container: mounts, confinement, process.
    fn init_spec(
        &self,
        req: &CreateContainerRequest,
        process: &ContainerProcess,
    ) -> Result<InitSpec, ContainerError> {
        let invalid = |field, reason: String| ContainerError::Invalid { field, reason };
        let mut mounts = Vec::with_capacity(req.mounts.len());
        for m in &req.mounts {
            if !m.container_path.starts_with('/') || m.container_path.contains('\0') {
                return Err(invalid(
                    "mounts.container_path",
                    format!("{:?} must be an absolute path", m.container_path),
                ));
            }
            let source = self
                .volumes
                .source(&m.volume, &m.sub_path)
                .map_err(|e| match e {
                    VolumeError::Invalid { .. } => invalid("mounts", e.to_string()),
                    _ => invalid(
                        "mounts",
                        format!("{} (sync the volume before creating the container)", e),
                    ),
                })?;
            mounts.push(BindMount {
                source,
                destination: m.container_path.clone(),
                read_only: m.read_only,
            });
        }
        let sec = req.security.clone().unwrap_or_default();
        for p in sec.masked_paths.iter().chain(&sec.readonly_paths) {
            if !p.starts_with('/') {
                return Err(invalid(
                    "security.masked_paths/readonly_paths",
                    format!("{p:?} must be an absolute path"),
                ));
            }
        }
        let seccomp = match sec.seccomp.and_then(|s| s.profile) {
            _ if sec.privileged => None,
            None => None,
            Some(seccomp_profile::Profile::RuntimeDefault(_)) => Some(SeccompSpec::RuntimeDefault),
            Some(seccomp_profile::Profile::Json(bytes)) => Some(SeccompSpec::Json(
                String::from_utf8(bytes)
                    .map_err(|_| invalid("security.seccomp", "the profile is not UTF-8".into()))?,
            )),
        };
        if let Some(s) = &seccomp {
            seccomp::compile(s).map_err(|reason| invalid("security.seccomp", reason))?;
        }
        let mut user = user_args(process);
        if sec.privileged {
            user.caps = helper::capability_set(&["ALL".to_owned()], &[])
                .map_err(|reason| invalid("process.capabilities", reason))?;
        }
        Ok(InitSpec {
            rootfs: PathBuf::new(),
            read_only: req.read_only_rootfs,
            mounts,
            masked_paths: if sec.privileged {
                Vec::new()
            } else {
                sec.masked_paths
            },
            readonly_paths: if sec.privileged {
                Vec::new()
            } else {
                sec.readonly_paths
            },
            sysfs_rw: sec.privileged,
            process: ProcessSpec {
                args: process.args.clone(),
                cwd: process.cwd.clone(),
                user,
                no_new_privs: sec.no_new_privs,
                seccomp,
                cgroup_procs: Vec::new(),
            },
        })
    }

    /// The pod's shared pid namespace (`/proc/<pause>/ns/pid`), made by
    /// starting its holder the first time a container asks for it.
    async fn pod_pid_namespace(&self) -> Result<fs::File, ContainerError> {
        let known = *self.pause.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = known {
            if let Ok(f) = fs::File::open(format!("/proc/{pid}/ns/pid")) {
                return Ok(f);
            }
        }
        let (fail_r, fail_w) = pipe()?;
        let null = dev_null()?;
        let reaper = self.reaper.clone();
        let pid = tokio::task::spawn_blocking(move || {
            let fds = spawn::ChildFds {
                stdin: &null,
                stdout: &null,
                stderr: &null,
                error: &fail_w,
            };
            let (pid, _waiter) = reaper
                .spawn_watched(|| {
                    spawn::clone_helper(
                        libc::CLONE_NEWPID | libc::CLONE_NEWNS,
                        &helper::pause_args(),
                        &[],
                        &fds,
                    )
                })
                .map_err(|e| io_err("clone")(io::Error::other(e)))?;
            drop((null, fail_w));
            let failure = read_helper_error(fail_r);
            if !failure.is_empty() {
                return Err(io_err("the pod's pid namespace")(io::Error::other(failure)));
            }
            Ok::<_, ContainerError>(pid.as_raw())
        })
        .await
        .map_err(|e| io_err("pause task")(io::Error::other(e)))??;
        *self.pause.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        tracing::info!(pid, "pod pid namespace created");
        fs::File::open(format!("/proc/{pid}/ns/pid")).map_err(io_err("the pod's pid namespace"))
    }

    /// `UpdateContainerResources` (blocking).
    pub fn update_resources(
        &self,
        id: &str,
        resources: ContainerResources,
    ) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        if matches!(*c.state(), State::Exited { .. }) {
            return Err(ContainerError::State {
                id: id.to_owned(),
                state: "exited",
            });
        }
        // Bad values, and limits the kernel refuses (e.g. below the
        // memory in use), are the caller's to fix.
        cgroup::update(id, &resources).map_err(|reason| ContainerError::Invalid {
            field: "resources",
            reason,
        })
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
        let mut spec = c.init.clone();
        spec.process.cgroup_procs = cgroup::procs(&c.id);
        let spec_path = c.run_dir.join("init.json");
        helper::write_spec(&spec_path, &spec)
            .map_err(io_err(format!("cannot write {}", spec_path.display())))?;
        let args = helper::init_args(&spec_path);
        let env = c.process.env.clone();
        let reaper = self.reaper.clone();
        let pod_pidns = if c.pod_pid_namespace {
            Some(self.pod_pid_namespace().await?)
        } else {
            None
        };
        let started = now_ns();
        let (pid, waiter, failure) = tokio::task::spawn_blocking(move || {
            let fds = spawn::ChildFds {
                stdin: &null,
                stdout: &out_w,
                stderr: &err_w,
                error: &fail_w,
            };
            let (pid, waiter) = reaper
                .spawn_watched(|| match &pod_pidns {
                    Some(ns) => spawn::in_pid_namespace(ns, || {
                        spawn::clone_helper(libc::CLONE_NEWNS, &args, &env, &fds)
                    }),
                    None => spawn::clone_helper(
                        libc::CLONE_NEWPID | libc::CLONE_NEWNS,
                        &args,
                        &env,
                        &fds,
                    ),
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
        tokio::task::spawn_blocking(move || {
            cleanup_rootfs(&cc)?;
            cgroup::remove(&cc.id).map_err(|e| io_err("cgroup")(io::Error::other(e)))
        })
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
    // nodev: a device node in the image or made in the container opens
    // nothing (the container's /dev is its own tmpfs).
    mount(
        Some("overlay"),
        &c.rootfs,
        Some("overlay"),
        MsFlags::MS_NODEV,
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
mod tests;
