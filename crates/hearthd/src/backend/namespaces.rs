//! The `namespaces` backend: the same hearth-agent that is PID 1 of a VM,
//! run on the host as PID 1 of fresh mount/pid/uts/ipc/cgroup namespaces,
//! pivot_root'ed into a private root laid out like the initramfs, inside
//! the pod's network namespace and cgroup. No hardware isolation: it is for
//! hostNetwork node agents, development and CI.
//!
//! The host reaches the agent through a unix socket that speaks the
//! Firecracker hybrid-vsock handshake (served by the agent itself), so the
//! host's agent client is the one every backend uses. Drives are loop
//! devices; the agent makes its own device node from the number.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::{
    BackendError, BackendHandle, BootSpec, DeviceLocator, Drive, Liveness, SandboxBackend,
};
use serde::{Deserialize, Serialize};

use super::loopdev::{self, LoopDevice};
use super::process;
use super::{connect_agent_until, GuestState};

const KIND: &str = "namespaces";

/// The directories of the agent's private root (as in the initramfs).
const ROOT_DIRS: &[&str] = &["dev", "proc", "sys", "run", "tmp", "etc", "mnt"];

/// The backend.
pub struct NamespacesBackend {
    agent_binary: PathBuf,
    allow_privileged: bool,
}

/// What is persisted per sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Handle {
    agent_pid: u32,
    agent_started: u64,
    socket: PathBuf,
    root: PathBuf,
    log: PathBuf,
    #[serde(default)]
    drives: BTreeMap<String, LoopDevice>,
}

impl Handle {
    fn from(h: &BackendHandle) -> Result<Handle, BackendError> {
        h.decode()
    }

    fn to_handle(&self) -> BackendHandle {
        BackendHandle::encode(self)
    }

    fn alive(&self) -> bool {
        process::alive(self.agent_pid, self.agent_started)
    }
}

impl NamespacesBackend {
    /// A backend that runs `agent_binary`. Makes hearthd the child
    /// subreaper so it can reap the agents it adopts.
    pub fn new(agent_binary: PathBuf, allow_privileged: bool) -> NamespacesBackend {
        process::become_subreaper();
        NamespacesBackend {
            agent_binary,
            allow_privileged,
        }
    }

    fn spawn_agent(
        &self,
        spec: &BootSpec,
        root: &Path,
        socket: &Path,
        log: &Path,
    ) -> Result<u32, BackendError> {
        let listener =
            std::os::unix::net::UnixListener::bind(socket).map_err(BackendError::io(socket))?;
        let log_file = fs::File::create(log).map_err(BackendError::io(log))?;
        let mut cmd = Command::new(&self.agent_binary);
        cmd.arg("namespaces")
            .arg("--root")
            .arg(root)
            .args(["--listen-fd", "3"]);
        if let Some(netns) = &spec.netns {
            cmd.arg("--netns").arg(netns);
        }
        for f in &spec.cgroup.procs_files {
            cmd.arg("--cgroup-procs").arg(f);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let fd = listener.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) in the child.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| BackendError::Spawn {
            what: format!("{} namespaces", self.agent_binary.display()),
            source,
        })?;
        drop(listener);
        let mut out = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = stdout.take(64).read_to_string(&mut out);
        }
        let status = child.wait().map_err(|source| BackendError::Spawn {
            what: "waiting for the agent launcher".into(),
            source,
        })?;
        let pid = out
            .trim()
            .strip_prefix("pid ")
            .and_then(|p| p.parse::<u32>().ok());
        match (status.success(), pid) {
            (true, Some(pid)) => Ok(pid),
            _ => Err(BackendError::AgentNotReady {
                reason: format!(
                    "agent launcher exited with {status} and printed {out:?}; log: {}",
                    log_tail(log)
                ),
            }),
        }
    }

    async fn kill_and_wait(&self, h: &Handle, grace: Duration) {
        let deadline = Instant::now() + grace;
        while h.alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if h.alive() {
            // SAFETY: kill with a pid we checked is our agent (start time).
            unsafe { libc::kill(h.agent_pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while h.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn log_tail(log: &Path) -> String {
    let text = fs::read(log).unwrap_or_default();
    let start = text.len().saturating_sub(1024);
    String::from_utf8_lossy(&text[start..]).trim().to_owned()
}

#[async_trait::async_trait]
impl SandboxBackend for NamespacesBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn supports_host_network(&self) -> bool {
        true
    }

    fn allows_privileged(&self) -> bool {
        self.allow_privileged
    }

    fn check(&self) -> Result<(), BackendError> {
        let unavailable = |reason: String| {
            Err(BackendError::Unavailable {
                backend: KIND,
                reason,
            })
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return unavailable(
                "hearthd must run as root to create namespaces and loop devices".into(),
            );
        }
        match fs::metadata(&self.agent_binary) {
            Ok(m) if m.is_file() => Ok(()),
            _ => unavailable(format!(
                "agent binary {} not found: build it with scripts/build-agent.sh and set namespaces.agent_binary",
                self.agent_binary.display()
            )),
        }
    }

    async fn boot(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError> {
        let root = spec.run_dir.join("root");
        for d in ROOT_DIRS {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(BackendError::io(&p))?;
        }
        let socket = spec.run_dir.join("agent.sock");
        let log = spec.run_dir.join("agent.log");
        let (s, r, l, spec2) = (socket.clone(), root.clone(), log.clone(), spec.clone());
        let this = NamespacesBackend {
            agent_binary: self.agent_binary.clone(),
            allow_privileged: self.allow_privileged,
        };
        let pid = tokio::task::spawn_blocking(move || this.spawn_agent(&spec2, &r, &s, &l))
            .await
            .map_err(|e| BackendError::AgentNotReady {
                reason: format!("spawn task failed: {e}"),
            })??;
        let Some(started) = process::start_time(pid) else {
            return Err(BackendError::AgentNotReady {
                reason: format!("agent {pid} exited at once; log: {}", log_tail(&log)),
            });
        };
        tokio::spawn(process::reap_when_exited(pid));
        Ok(Handle {
            agent_pid: pid,
            agent_started: started,
            socket,
            root,
            log,
            drives: BTreeMap::new(),
        }
        .to_handle())
    }

    async fn connect_agent(
        &self,
        handle: &BackendHandle,
        deadline: Duration,
    ) -> Result<AgentClient, BackendError> {
        let h = Handle::from(handle)?;
        let probe = || match h.alive() {
            true => GuestState::Ready,
            false => GuestState::Gone(format!(
                "agent process {} exited; log: {}",
                h.agent_pid,
                log_tail(&h.log)
            )),
        };
        connect_agent_until(&h.socket, deadline, probe, |last| {
            format!(
                "no answer from the agent within {deadline:?} (last error: {})",
                last.as_deref().unwrap_or("none")
            )
        })
        .await
    }

    async fn attach_drive(
        &self,
        handle: &mut BackendHandle,
        drive: &Drive,
    ) -> Result<DeviceLocator, BackendError> {
        let mut h = Handle::from(handle)?;
        let (path, ro) = (drive.path.clone(), drive.read_only);
        let dev = tokio::task::spawn_blocking(move || loopdev::attach(&path, ro))
            .await
            .map_err(|e| BackendError::Drive {
                drive: drive.id.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| BackendError::Drive {
                drive: drive.id.clone(),
                reason: hearth_chain(&e),
            })?;
        let locator = DeviceLocator::Number {
            major: dev.major,
            minor: dev.minor,
        };
        h.drives.insert(drive.id.clone(), dev);
        *handle = h.to_handle();
        Ok(locator)
    }

    async fn detach_drive(
        &self,
        handle: &mut BackendHandle,
        drive_id: &str,
    ) -> Result<(), BackendError> {
        let mut h = Handle::from(handle)?;
        if let Some(dev) = h.drives.remove(drive_id) {
            tokio::task::spawn_blocking(move || loopdev::detach(&dev))
                .await
                .map_err(|e| BackendError::Drive {
                    drive: drive_id.to_owned(),
                    reason: e.to_string(),
                })?
                .map_err(|e| BackendError::Drive {
                    drive: drive_id.to_owned(),
                    reason: hearth_chain(&e),
                })?;
        }
        *handle = h.to_handle();
        Ok(())
    }

    async fn stop(&self, handle: &BackendHandle, timeout: Duration) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        self.kill_and_wait(&h, timeout).await;
        Ok(())
    }

    async fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        self.kill_and_wait(&h, Duration::ZERO).await;
        for (id, dev) in &h.drives {
            let dev = dev.clone();
            let r = tokio::task::spawn_blocking(move || loopdev::detach(&dev)).await;
            if let Ok(Err(e)) = r {
                return Err(BackendError::Drive {
                    drive: id.clone(),
                    reason: hearth_chain(&e),
                });
            }
        }
        match fs::remove_file(&h.socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(BackendError::io(&h.socket)(e))
            }
            _ => Ok(()),
        }
    }

    fn liveness(&self, handle: &BackendHandle) -> Liveness {
        match Handle::from(handle) {
            Ok(h) if h.alive() => Liveness::Alive,
            Ok(h) => Liveness::Gone(format!("agent process {} is gone", h.agent_pid)),
            Err(e) => Liveness::Gone(e.to_string()),
        }
    }
}

fn hearth_chain(e: &dyn std::error::Error) -> String {
    crate::cri::status::chain(e)
}
