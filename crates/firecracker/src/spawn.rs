//! Starting Firecracker: through the jailer (production) or directly
//! (development), and the [`VmmProcess`] handle that owns what was created.
//!
//! The builders produce the exact argv ([`VmmSpawn::argv`],
//! [`JailerSpawn::argv`]) so it can be checked without running anything.
//! Through the jailer, every file the VM uses must be inside the chroot:
//! [`JailerSpawn::file`] / [`VmmProcess::link_file`] hard-link it in (or
//! bind-mount it when it lives on another filesystem) and make sure the
//! VM's uid can use it. `--seccomp-filter` is always passed to the jailer's
//! Firecracker; `--no-seccomp` never is.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncRead;
use tokio::task::JoinHandle;

use crate::binary::{check_binary, check_static};
use crate::client::FirecrackerClient;
use crate::error::{FirecrackerError, Result};
use crate::fifo;
use crate::jail::Jail;
use crate::models::InstanceInfo;

/// The API socket path inside the jail (the jailer creates `/run`).
pub const JAIL_API_SOCKET: &str = "/run/firecracker.socket";
/// Where the seccomp filter is linked inside the jail.
pub const JAIL_SECCOMP_FILTER: &str = "/seccomp.bpf";

/// Firecracker's `--id` / the jailer's `--id`: alphanumerics and `-`, 1-64.
pub fn check_instance_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(FirecrackerError::InvalidArgument {
            field: "vm id",
            reason: format!("{id:?} must be 1-64 ascii letters, digits or '-'"),
        });
    }
    Ok(())
}

/// Runs `firecracker` directly (development; no chroot, no uid change).
#[derive(Debug, Clone)]
pub struct VmmSpawn {
    /// The Firecracker binary.
    pub firecracker: PathBuf,
    /// Instance id.
    pub id: String,
    /// Host path of the API socket (its directory also holds the FIFOs).
    pub api_socket: PathBuf,
    /// Compiled seccomp filter; without it Firecracker uses its built-in one.
    pub seccomp_filter: Option<PathBuf>,
    /// Network namespace to run in (`/var/run/netns/<name>`).
    pub netns: Option<PathBuf>,
}

impl VmmSpawn {
    /// A direct spawn of `firecracker` with instance `id` and API socket.
    pub fn new(
        firecracker: impl Into<PathBuf>,
        id: impl Into<String>,
        api_socket: impl Into<PathBuf>,
    ) -> Self {
        VmmSpawn {
            firecracker: firecracker.into(),
            id: id.into(),
            api_socket: api_socket.into(),
            seccomp_filter: None,
            netns: None,
        }
    }

    /// Passes `--seccomp-filter <path>`.
    pub fn seccomp_filter(mut self, path: impl Into<PathBuf>) -> Self {
        self.seccomp_filter = Some(path.into());
        self
    }

    /// Joins this network namespace before exec.
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    /// The full argv, program first.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            self.firecracker.clone().into(),
            "--api-sock".into(),
            self.api_socket.clone().into(),
            "--id".into(),
            self.id.clone().into(),
        ];
        if let Some(f) = &self.seccomp_filter {
            v.push("--seccomp-filter".into());
            v.push(f.clone().into());
        }
        v
    }

    /// Checks the binary, starts Firecracker and returns its handle (the API
    /// may not answer yet: call [`VmmProcess::wait_ready`]).
    pub async fn spawn(self) -> Result<VmmProcess> {
        check_instance_id(&self.id)?;
        check_binary(&self.firecracker).await?;
        if self.api_socket.exists() {
            return Err(FirecrackerError::InvalidArgument {
                field: "api socket",
                reason: format!("{} already exists (another VM?)", self.api_socket.display()),
            });
        }
        let run_dir = self
            .api_socket
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ".".into());
        let argv = self.argv();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if let Some(ns) = &self.netns {
            let fd = std::fs::File::open(ns).map_err(FirecrackerError::io("open netns", ns))?;
            pre_exec_setns(&mut cmd, fd);
        }
        VmmProcess::start(
            cmd,
            &self.firecracker,
            self.id,
            self.api_socket,
            run_dir,
            None,
        )
        .await
    }
}

#[allow(unsafe_code)]
fn pre_exec_setns(cmd: &mut tokio::process::Command, fd: std::fs::File) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setns(2), which is async-signal-safe; it allocates nothing. `fd` is moved
    // into the closure, so it stays open until then.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
}

/// A file to make visible inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    /// Host path.
    pub host: PathBuf,
    /// Absolute path inside the jail (what the API is told).
    pub jail_path: PathBuf,
    /// Writable files are chowned to the VM's uid/gid; read-only ones must
    /// already be readable by it.
    pub writable: bool,
}

/// Runs Firecracker through the jailer (production).
#[derive(Debug, Clone)]
pub struct JailerSpawn {
    /// The jailer binary.
    pub jailer: PathBuf,
    /// The static Firecracker binary the jailer copies into the chroot.
    pub firecracker: PathBuf,
    /// Instance id (also names the chroot).
    pub id: String,
    /// uid the VMM runs as.
    pub uid: u32,
    /// gid the VMM runs as.
    pub gid: u32,
    /// `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// `--netns`: the pod's network namespace.
    pub netns: Option<PathBuf>,
    /// `--cgroup-version` (1 or 2).
    pub cgroup_version: u8,
    /// `--parent-cgroup` (relative, e.g. the pod's cgroup parent). With
    /// cgroup v2 and no [`cgroups`](Self::cgroups) the jailer moves the VMM
    /// into it; with v1 the jailer only acts when at least one `--cgroup`
    /// property is given (it then creates `<parent>/<id>` in that
    /// controller's hierarchy, which [`VmmProcess::kill`] removes).
    pub parent_cgroup: Option<String>,
    /// `--cgroup <file>=<value>` properties.
    pub cgroups: Vec<(String, String)>,
    /// Compiled seccomp filter (host path; linked into the jail). Required.
    pub seccomp_filter: PathBuf,
    /// Files linked into the jail before start.
    pub files: Vec<JailFile>,
}

impl JailerSpawn {
    /// A jailer spawn with the required settings.
    pub fn new(
        jailer: impl Into<PathBuf>,
        firecracker: impl Into<PathBuf>,
        id: impl Into<String>,
        uid: u32,
        gid: u32,
        chroot_base: impl Into<PathBuf>,
        seccomp_filter: impl Into<PathBuf>,
    ) -> Self {
        JailerSpawn {
            jailer: jailer.into(),
            firecracker: firecracker.into(),
            id: id.into(),
            uid,
            gid,
            chroot_base: chroot_base.into(),
            netns: None,
            cgroup_version: 1,
            parent_cgroup: None,
            cgroups: Vec::new(),
            seccomp_filter: seccomp_filter.into(),
            files: Vec::new(),
        }
    }

    /// Sets `--netns`.
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    /// Sets `--cgroup-version` and `--parent-cgroup`.
    pub fn cgroup(mut self, version: u8, parent: Option<String>) -> Self {
        self.cgroup_version = version;
        self.parent_cgroup = parent;
        self
    }

    /// Adds a `--cgroup <file>=<value>` property.
    pub fn cgroup_property(mut self, file: impl Into<String>, value: impl Into<String>) -> Self {
        self.cgroups.push((file.into(), value.into()));
        self
    }

    /// Links `host` into the jail at `jail_path` before start.
    pub fn file(
        mut self,
        host: impl Into<PathBuf>,
        jail_path: impl Into<PathBuf>,
        writable: bool,
    ) -> Self {
        self.files.push(JailFile {
            host: host.into(),
            jail_path: jail_path.into(),
            writable,
        });
        self
    }

    /// `<chroot_base>/<firecracker file name>/<id>`; the jailer's chroot is its `root`.
    pub fn instance_dir(&self) -> PathBuf {
        let exe = self
            .firecracker
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "firecracker".into());
        self.chroot_base.join(exe).join(&self.id)
    }

    /// The chroot directory.
    pub fn jail_root(&self) -> PathBuf {
        self.instance_dir().join("root")
    }

    /// The full argv, program first.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            self.jailer.clone().into(),
            "--id".into(),
            self.id.clone().into(),
            "--exec-file".into(),
            self.firecracker.clone().into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--cgroup-version".into(),
            self.cgroup_version.to_string().into(),
        ];
        if let Some(ns) = &self.netns {
            v.push("--netns".into());
            v.push(ns.clone().into());
        }
        if let Some(p) = &self.parent_cgroup {
            v.push("--parent-cgroup".into());
            v.push(p.into());
        }
        for (file, value) in &self.cgroups {
            v.push("--cgroup".into());
            v.push(format!("{file}={value}").into());
        }
        // The jailer passes `--id` to Firecracker itself.
        v.extend(["--".into(), "--api-sock".into(), JAIL_API_SOCKET.into()]);
        v.extend(["--seccomp-filter".into(), JAIL_SECCOMP_FILTER.into()]);
        v
    }

    fn validate(&self) -> Result<()> {
        check_instance_id(&self.id)?;
        if !matches!(self.cgroup_version, 1 | 2) {
            return Err(FirecrackerError::InvalidArgument {
                field: "cgroup version",
                reason: "must be 1 or 2".into(),
            });
        }
        if let Some(p) = &self.parent_cgroup {
            if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".") {
                return Err(FirecrackerError::InvalidArgument {
                    field: "parent cgroup",
                    reason: format!("{p:?} must be relative, without '.' or '..'"),
                });
            }
        }
        for (file, value) in &self.cgroups {
            if file.contains(['=', '/']) || value.is_empty() || value.contains('=') {
                return Err(FirecrackerError::InvalidArgument {
                    field: "cgroup property",
                    reason: format!("{file}={value}"),
                });
            }
        }
        if !self.seccomp_filter.is_file() {
            return Err(FirecrackerError::InvalidArgument {
                field: "seccomp filter",
                reason: format!(
                    "{} is not a file (the jailer path never runs without a filter)",
                    self.seccomp_filter.display()
                ),
            });
        }
        Ok(())
    }

    /// Validates, checks the binary (≥ 1.8, static), prepares the chroot
    /// (files, seccomp filter) and starts the jailer.
    pub async fn spawn(self) -> Result<VmmProcess> {
        self.validate()?;
        check_binary(&self.firecracker).await?;
        check_static(&self.firecracker)?;
        let instance_dir = self.instance_dir();
        if instance_dir.exists() {
            return Err(FirecrackerError::InvalidArgument {
                field: "vm id",
                reason: format!(
                    "{} already exists (id in use or left over)",
                    instance_dir.display()
                ),
            });
        }
        let root = self.jail_root();
        std::fs::create_dir_all(&root).map_err(FirecrackerError::io("create", &root))?;
        let cgroup = (!self.cgroups.is_empty()).then(|| {
            let exe = self
                .firecracker
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let parent = self.parent_cgroup.clone().or(exe);
            (
                parent.unwrap_or_else(|| "firecracker".into()),
                self.id.clone(),
            )
        });
        let mut jail = Jail::new(instance_dir, root, self.uid, self.gid, cgroup);
        let prepared = (|| {
            jail.link(&self.seccomp_filter, Path::new(JAIL_SECCOMP_FILTER), false)?;
            for f in &self.files {
                jail.link(&f.host, &f.jail_path, f.writable)?;
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            jail.remove();
            return Err(e);
        }
        let argv = self.argv();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let socket = jail.host_path(Path::new(JAIL_API_SOCKET));
        let run_dir = jail.host_path(Path::new("/run"));
        VmmProcess::start(cmd, &self.jailer, self.id, socket, run_dir, Some(jail)).await
    }
}

/// A running Firecracker and everything created for it. Dropping it kills
/// the process; [`kill`](Self::kill) also waits and removes the files.
#[derive(Debug)]
pub struct VmmProcess {
    child: tokio::process::Child,
    id: String,
    socket: PathBuf,
    run_dir: PathBuf,
    jail: Option<Jail>,
    tasks: Vec<JoinHandle<()>>,
    fifos: Vec<PathBuf>,
    owned: Vec<PathBuf>,
    output_tail: OutputTail,
}

/// The last lines the process printed, for error messages.
type OutputTail = Arc<Mutex<VecDeque<String>>>;
const TAIL_LINES: usize = 6;

impl VmmProcess {
    async fn start(
        mut cmd: tokio::process::Command,
        program: &Path,
        id: String,
        socket: PathBuf,
        run_dir: PathBuf,
        mut jail: Option<Jail>,
    ) -> Result<VmmProcess> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(j) = jail.as_mut() {
                    j.remove();
                }
                return Err(FirecrackerError::Spawn(program.to_path_buf(), e));
            }
        };
        let mut tasks = Vec::new();
        let output_tail = OutputTail::default();
        if let Some(out) = child.stdout.take() {
            tasks.push(drain(out, id.clone(), "stdout", output_tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tasks.push(drain(err, id.clone(), "stderr", output_tail.clone()));
        }
        tracing::info!(vm = %id, pid = ?child.id(), jailed = jail.is_some(), "firecracker started");
        Ok(VmmProcess {
            child,
            id,
            socket,
            run_dir,
            jail,
            tasks,
            fifos: Vec::new(),
            owned: Vec::new(),
            output_tail,
        })
    }

    /// Process id (None once reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host path of the API socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The chroot, when jailed.
    pub fn jail_root(&self) -> Option<&Path> {
        self.jail.as_ref().map(|j| j.root.as_path())
    }

    /// A client for this VM's API socket.
    pub fn client(&self) -> FirecrackerClient {
        FirecrackerClient::new(&self.socket)
    }

    /// Waits until the API answers, failing early if the process exits.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<InstanceInfo> {
        let client = self.client();
        let child = &mut self.child;
        let r = client
            .wait_ready_until(Instant::now() + deadline, || match child.try_wait() {
                Ok(Some(status)) => Err(FirecrackerError::Exited(format!(
                    "{status} before the api answered"
                ))),
                _ => Ok(()),
            })
            .await;
        match r {
            Err(FirecrackerError::Exited(what)) => {
                // Let the drain tasks catch the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(FirecrackerError::Exited(format!(
                    "{what}; last output: {}",
                    self.last_output()
                )))
            }
            other => other,
        }
    }

    /// The last lines the process wrote to stdout/stderr (bounded).
    pub fn last_output(&self) -> String {
        let tail = self
            .output_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "));
        tail.unwrap_or_default()
    }

    /// Makes a host file available to the VM and returns the path to give
    /// the API: hard-linked (or bind-mounted) into the jail, or the host
    /// path itself when not jailed.
    pub fn link_file(&mut self, host: &Path, jail_path: &Path, writable: bool) -> Result<PathBuf> {
        match self.jail.as_mut() {
            Some(j) => {
                j.link(host, jail_path, writable)?;
                Ok(jail_path.to_path_buf())
            }
            None => Ok(host.to_path_buf()),
        }
    }

    /// Creates a FIFO named `name` next to the API socket, drains it into
    /// `tracing` (lines bounded), and returns the path to give
    /// `PUT /logger` or `PUT /metrics`.
    /// When jailed, call it after [`wait_ready`](Self::wait_ready): the
    /// jailer creates the jail's `/run`.
    pub fn fifo(&mut self, name: &str, kind: fifo::FifoKind) -> Result<PathBuf> {
        if name.is_empty() || name.contains('/') {
            return Err(FirecrackerError::InvalidArgument {
                field: "fifo name",
                reason: name.to_string(),
            });
        }
        let host = self.run_dir.join(name);
        let owner = self.jail.as_ref().map(|j| (j.uid, j.gid));
        let task = fifo::create_and_drain(&host, owner, self.id.clone(), kind)?;
        self.tasks.push(task);
        self.fifos.push(host.clone());
        Ok(match &self.jail {
            Some(_) => Path::new("/run").join(name),
            None => host,
        })
    }

    /// Registers a host path Firecracker creates (e.g. the vsock `uds_path`
    /// outside a jail) to be removed with the VM.
    pub fn remove_on_kill(&mut self, path: impl Into<PathBuf>) {
        self.owned.push(path.into());
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(FirecrackerError::io("wait", &self.socket))
    }

    /// Waits for the process to exit (e.g. after SendCtrlAltDel).
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .await
            .map_err(FirecrackerError::io("wait", &self.socket))
    }

    /// Asks the guest to stop (SendCtrlAltDel: the agent reboots, Firecracker
    /// exits), waits up to `grace`, then falls back to [`kill`](Self::kill).
    pub async fn shutdown(mut self, grace: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        if let Err(e) = self.client().with_timeout(grace).send_ctrl_alt_del().await {
            tracing::debug!(vm = %self.id, error = %e, "ctrl-alt-del not delivered");
        }
        let left = grace.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.cleanup();
                tracing::info!(vm = %self.id, %status, "firecracker exited");
                Ok(status)
            }
            _ => self.kill().await,
        }
    }

    /// SIGKILLs the process, reaps it, and removes the socket, FIFOs and jail.
    pub async fn kill(mut self) -> Result<ExitStatus> {
        let _ = self.child.start_kill();
        let status = self
            .child
            .wait()
            .await
            .map_err(FirecrackerError::io("wait", &self.socket))?;
        self.cleanup();
        tracing::info!(vm = %self.id, %status, "firecracker stopped");
        Ok(status)
    }

    fn cleanup(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for f in self.fifos.drain(..).chain(self.owned.drain(..)) {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_file(&self.socket);
        if let Some(j) = self.jail.as_mut() {
            j.remove();
        }
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.start_kill();
        }
        self.cleanup();
    }
}

/// Forwards a child's stdout/stderr lines to tracing, keeping the last few.
fn drain(
    r: impl AsyncRead + Unpin + Send + 'static,
    vm: String,
    stream: &'static str,
    tail: OutputTail,
) -> JoinHandle<()> {
    tokio::spawn(fifo::drain_lines(r, move |line| {
        tracing::info!(target: "firecracker", vm = %vm, stream, "{line}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.chars().take(500).collect());
        }
    }))
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;
