//! `ContainerManager`: creates, starts, stops and removes containers in
//! their pod's guest, and keeps their records.
//!
//! Each container has an operation lock and a snapshot of its record;
//! records are persisted before the agent is asked to act. Each pod has the
//! set of images attached to its guest, under a lock that serialises
//! attaching and detaching them (an image is attached once per pod and
//! detached once no container of the pod has used it for [`IMAGE_IDLE`]). A
//! started container has a watcher task: it copies the agent's output
//! stream into the CRI log file and long-polls `WaitContainer`; when the
//! process ends it records the exit (after the log is drained), the one
//! place besides a dead sandbox where Running becomes Exited.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_agent_proto::v1 as proto;
use tokio::sync::watch;

use super::log_stream::{copy_log, ReopenRequest};
use super::merge::merge;
use super::store::ContainerStore;
use super::volumes::{self, VolumePolicy, VolumeSet};
use super::{
    parse_signal, unique_name, ContainerConfig, ContainerRecord, ContainerState, ImageInfo,
    ImageResolver,
};
use crate::agent::{AgentClient, AgentError};
use crate::backend::BackendError;
use crate::error::RuntimeError;
use crate::id::{self, Id, IdError};
use crate::sandbox::SandboxState;
use crate::SandboxManager;

mod convert;
mod images;
pub use convert::resources_proto;
use convert::{merge_resources, security_proto};
#[cfg(test)]
use images::image_drive;
use images::image_mountpoint;

/// Where image drives are mounted in the guest.
pub const IMAGE_MOUNT_DIR: &str = "/run/hearth/images";
/// How long one `WaitContainer` long-poll lasts.
const POLL: Duration = Duration::from_secs(30);
/// How long a stopping or exited container's log may take to drain.
const LOG_DRAIN: Duration = Duration::from_secs(3);
/// How long an image drive no container of its pod uses stays attached.
const IMAGE_IDLE: Duration = Duration::from_secs(30);
/// How long StopContainer waits after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// ExecSync's cap per stream (the CRI's).
pub const EXEC_OUTPUT_CAP: u64 = hearth_agent_proto::MAX_EXEC_OUTPUT_BYTES;
/// What ExecSync's stdout and stderr may hold together: the kubelet
/// accepts CRI messages of at most 16 MiB, so both streams plus the
/// message's own bytes must fit in that.
pub const EXEC_RESPONSE_BUDGET: usize = (16 << 20) - (64 << 10);

/// What ExecSync returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    /// stdout, at most [`EXEC_OUTPUT_CAP`] bytes.
    pub stdout: Vec<u8>,
    /// stderr, at most [`EXEC_OUTPUT_CAP`] bytes.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
    /// Killed at the timeout.
    pub timed_out: bool,
}

struct Entry {
    op: tokio::sync::Mutex<()>,
    view: Mutex<ContainerRecord>,
    /// Set once the exit is recorded.
    done: watch::Sender<bool>,
    /// Reaches the log copy while it runs.
    reopen: Mutex<Option<tokio::sync::mpsc::Sender<ReopenRequest>>>,
}

/// Creates, tracks and removes containers.
pub struct ContainerManager {
    sandboxes: Arc<SandboxManager>,
    images: Arc<dyn ImageResolver>,
    store: ContainerStore,
    entries: Mutex<HashMap<Id, Arc<Entry>>>,
    names: Mutex<HashMap<String, Id>>,
    /// Per pod: the images attached and mounted in its guest (the lock
    /// serialises attach and detach).
    pods: Mutex<HashMap<Id, PodImages>>,
    /// The pods' guest volumes, shared by their containers.
    volumes: VolumeSet,
}

type PodImages = Arc<tokio::sync::Mutex<BTreeSet<String>>>;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The agent's answer as a core error; the codes the agent chose survive.
fn agent_err(e: AgentError) -> RuntimeError {
    let Some(status) = e.status() else {
        return BackendError::Agent(e).into();
    };
    let msg = status.message().to_owned();
    match status.code() {
        tonic::Code::InvalidArgument => RuntimeError::InvalidArgument(msg),
        tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
            RuntimeError::FailedPrecondition(msg)
        }
        tonic::Code::Unimplemented => RuntimeError::Unimplemented(format!(
            "the pod's agent does not run containers (too old?): {msg}"
        )),
        _ => BackendError::Agent(e).into(),
    }
}

fn illegal(e: super::IllegalContainerTransition) -> RuntimeError {
    RuntimeError::FailedPrecondition(e.to_string())
}

fn container_not_found(prefix: &str) -> RuntimeError {
    RuntimeError::NotFound(IdError::NotFound {
        kind: "container",
        prefix: prefix.to_owned(),
    })
}

fn log_path(dir: &str, rel: &str) -> Result<PathBuf, RuntimeError> {
    if dir.is_empty() || rel.is_empty() {
        return Ok(PathBuf::new());
    }
    let rel_p = Path::new(rel);
    if rel_p.is_absolute()
        || rel_p
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "log_path {rel:?} must be a relative path below the pod's log_directory"
        )));
    }
    Ok(Path::new(dir).join(rel_p))
}

impl ContainerManager {
    /// Loads the records a previous hearthd left (those of sandboxes that
    /// are gone are deleted) and resumes watching running containers.
    pub fn open(
        sandboxes: Arc<SandboxManager>,
        images: Arc<dyn ImageResolver>,
        volume_policy: VolumePolicy,
    ) -> Result<Arc<ContainerManager>, RuntimeError> {
        let store = ContainerStore::open(sandboxes.root())?;
        let mgr = Arc::new(ContainerManager {
            sandboxes,
            images,
            store,
            entries: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashMap::new()),
            volumes: VolumeSet::new(volume_policy),
        });
        let mut mounted: HashMap<Id, BTreeSet<String>> = HashMap::new();
        let mut kept = Vec::new();
        for record in mgr.store.load_all()? {
            if mgr.sandboxes.resolve(record.sandbox_id.as_str()).is_err() {
                tracing::info!(container_id = %record.id, "dropping the record of a container whose pod is gone");
                mgr.store.delete(&record.id)?;
                continue;
            }
            // Its image was attached for it and stays until it is removed.
            mounted
                .entry(record.sandbox_id.clone())
                .or_default()
                .insert(record.image.id.clone());
            let running = record.state == ContainerState::Running;
            kept.push(record.clone());
            let entry = mgr.insert(record.clone());
            if running && tokio::runtime::Handle::try_current().is_ok() {
                mgr.spawn_watch(entry, record.id.clone(), None);
            }
        }
        // Volume users counted again; watchers of synced volumes restarted.
        mgr.volumes.recover(&mgr.sandboxes, &kept);
        *mgr.pods.lock().expect("pods lock") = mounted
            .into_iter()
            .map(|(pod, images)| (pod, Arc::new(tokio::sync::Mutex::new(images))))
            .collect();
        Ok(mgr)
    }

    fn insert(&self, record: ContainerRecord) -> Arc<Entry> {
        let (done, _) = watch::channel(record.state == ContainerState::Exited);
        self.names
            .lock()
            .expect("names lock")
            .insert(record.unique_name(), record.id.clone());
        let id = record.id.clone();
        let entry = Arc::new(Entry {
            op: tokio::sync::Mutex::new(()),
            view: Mutex::new(record),
            done,
            reopen: Mutex::new(None),
        });
        self.entries
            .lock()
            .expect("entries lock")
            .insert(id, entry.clone());
        entry
    }

    fn forget(&self, record: &ContainerRecord) {
        self.entries
            .lock()
            .expect("entries lock")
            .remove(&record.id);
        let mut names = self.names.lock().expect("names lock");
        if names.get(&record.unique_name()) == Some(&record.id) {
            names.remove(&record.unique_name());
        }
    }

    fn persist(&self, entry: &Entry, record: &ContainerRecord) -> Result<(), RuntimeError> {
        self.store.save(record)?;
        *entry.view.lock().expect("view lock") = record.clone();
        Ok(())
    }

    fn pod_images(&self, pod: &Id) -> PodImages {
        self.pods
            .lock()
            .expect("pods lock")
            .entry(pod.clone())
            .or_default()
            .clone()
    }

    /// Resolves a full id or unique prefix.
    pub fn resolve(&self, prefix: &str) -> Result<Id, RuntimeError> {
        let map = self.entries.lock().expect("entries lock");
        Ok(id::resolve_prefix(map.keys(), prefix, "container")?)
    }

    fn entry(&self, prefix: &str) -> Result<(Id, Arc<Entry>), RuntimeError> {
        let id = self.resolve(prefix)?;
        let e = self
            .entries
            .lock()
            .expect("entries lock")
            .get(&id)
            .cloned()
            .ok_or_else(|| container_not_found(prefix))?;
        Ok((id, e))
    }

    /// CreateContainer: checks the pod and the image, persists the record,
    /// attaches and mounts the image drive if the pod has not got it yet,
    /// and has the agent prepare the rootfs. Undone on error.
    pub async fn create(&self, sandbox: &str, config: ContainerConfig) -> Result<Id, RuntimeError> {
        if config.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "config.metadata.name must not be empty".into(),
            ));
        }
        if config.image.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "config.image.image must name an image".into(),
            ));
        }
        let pod = self.sandboxes.status(sandbox).await?.record;
        if pod.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        if config.security.privileged && !self.sandboxes.allows_privileged(&pod) {
            return Err(RuntimeError::FailedPrecondition(format!(
                "privileged containers are refused on the {} backend (there they would be root on the node); \
                 set [namespaces] allow_privileged in hearthd's config to allow them",
                pod.backend
            )));
        }
        // Without a device cgroup a device node opens the real device: on
        // the node itself here. MKNOD (or ALL) is as good as privileged.
        let adds_mknod = config.capabilities.as_ref().is_some_and(|c| {
            c.add.iter().any(|n| {
                let n = n.trim().to_ascii_uppercase();
                matches!(n.strip_prefix("CAP_").unwrap_or(&n), "MKNOD" | "ALL")
            })
        });
        if adds_mknod && !self.sandboxes.allows_privileged(&pod) {
            return Err(RuntimeError::FailedPrecondition(format!(
                "adding CAP_MKNOD (or ALL) is refused on the {} backend: with no device cgroup a \
                 device node the container made would open the node's own device; set \
                 [namespaces] allow_privileged in hearthd's config to allow it",
                pod.backend
            )));
        }
        let image = self
            .images
            .resolve(&config.image)
            .ok_or_else(|| RuntimeError::ImageNotFound(config.image.clone()))?;
        let process = merge(&config, &image)?;
        let stop_signal = parse_signal(&image.stop_signal).unwrap_or(15);
        let log_path = log_path(&pod.config.log_directory, &config.log_path)?;
        let planned = {
            let (policy, uid) = (
                self.volumes.policy().clone(),
                pod.config.metadata.uid.clone(),
            );
            let mounts = config.mounts.clone();
            tokio::task::spawn_blocking(move || volumes::plan(&policy, &uid, &mounts))
                .await
                .map_err(|e| {
                    RuntimeError::FailedPrecondition(format!("mounts not checked: {e}"))
                })??
        };

        let name = unique_name(&pod.id, &config.name, config.attempt);
        let id = Id::generate();
        {
            let mut names = self.names.lock().expect("names lock");
            if let Some(holder) = names.get(&name) {
                return Err(RuntimeError::ContainerNameInUse {
                    name: format!("{}_{}", config.name, config.attempt),
                    pod: pod.id.to_string(),
                    id: holder.to_string(),
                });
            }
            names.insert(name, id.clone());
        }
        let span = tracing::info_span!("create_container", pod_id = %pod.id.short(), container_id = %id.short());
        let _enter = span.enter();
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: pod.id.clone(),
            state: ContainerState::Created,
            config,
            image,
            process_args: process.args.clone(),
            process_env: process.env.clone(),
            process_cwd: process.cwd.clone(),
            stop_signal,
            log_path,
            created_at_ns: now_ns(),
            started_at_ns: 0,
            finished_at_ns: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            volumes: planned,
        };
        if let Err(e) = self.store.save(&record) {
            self.names
                .lock()
                .expect("names lock")
                .remove(&record.unique_name());
            return Err(e.into());
        }
        let entry = self.insert(record.clone());
        let _op = entry.op.lock().await;
        match self.create_in_guest(&record, &process).await {
            Ok(()) => {
                tracing::info!(name = %record.config.name, "container created");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "CreateContainer failed; rolling back");
                self.forget(&record);
                self.volumes.release(&self.sandboxes, &record).await;
                if let Err(undo) = self.release_image(&record).await {
                    tracing::error!(error = %undo, "image drive not released");
                }
                let _ = self.store.delete(&record.id);
                Err(e)
            }
        }
    }

    async fn create_in_guest(
        &self,
        record: &ContainerRecord,
        process: &super::merge::Process,
    ) -> Result<(), RuntimeError> {
        let agent = self.sandboxes.agent(&record.sandbox_id).await?;
        self.attach_image(&agent, record).await?;
        self.volumes
            .acquire(&self.sandboxes, &agent, record)
            .await?;
        let user = &process.user;
        agent
            .create_container(proto::CreateContainerRequest {
                container_id: record.id.to_string(),
                image_mountpoint: image_mountpoint(&record.image.id),
                process: Some(proto::ContainerProcess {
                    args: process.args.clone(),
                    env: process.env.clone(),
                    cwd: process.cwd.clone(),
                    user: Some(proto::ContainerUser {
                        uid: user.uid,
                        username: user.username.clone(),
                        gid: user.gid,
                        additional_gids: user.supplemental_groups.clone(),
                    }),
                    capabilities: record.config.capabilities.as_ref().map(|c| {
                        proto::Capabilities {
                            add: c.add.clone(),
                            drop: c.drop.clone(),
                        }
                    }),
                }),
                read_only_rootfs: record.config.read_only_rootfs,
                mounts: volumes::container_mounts(&record.volumes),
                security: Some(security_proto(&record.config.security)),
                resources: record.config.resources.as_ref().map(resources_proto),
                pod_pid_namespace: record.config.pod_pid_namespace,
            })
            .await
            .map_err(agent_err)
    }

    /// StartContainer: runs the process; starts the log copy and the exit
    /// watch. A process that cannot start (e.g. command not found) leaves
    /// the container EXITED with reason StartError and the error message.
    pub async fn start(self: &Arc<Self>, prefix: &str) -> Result<(), RuntimeError> {
        let (id, entry) = self.entry(prefix)?;
        let _op = entry.op.lock().await;
        let mut record = entry.view.lock().expect("view lock").clone();
        if record.state != ContainerState::Created {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is {:?}, not Created: it can be started once",
                record.state
            )));
        }
        let agent = self.sandboxes.agent(&record.sandbox_id).await?;
        match agent.start_container(id.as_str()).await {
            Ok(r) => {
                record.state = record
                    .state
                    .transition(ContainerState::Running)
                    .map_err(illegal)?;
                record.started_at_ns = now_ns();
                record.pid = r.pid;
                self.persist(&entry, &record)?;
                self.spawn_watch(entry.clone(), id, Some(agent));
                Ok(())
            }
            Err(err) => {
                let e = agent_err(err);
                if matches!(e, RuntimeError::FailedPrecondition(_)) {
                    record.state = record
                        .state
                        .transition(ContainerState::Exited)
                        .map_err(illegal)?;
                    record.started_at_ns = now_ns();
                    record.finished_at_ns = record.started_at_ns;
                    record.exit_code = 128;
                    record.reason = "StartError".into();
                    record.message = e.to_string();
                    self.persist(&entry, &record)?;
                    entry.done.send_replace(true);
                }
                Err(e)
            }
        }
    }

    /// Starts [`ContainerManager::watch`]; the log can be reopened from now.
    fn spawn_watch(self: &Arc<Self>, entry: Arc<Entry>, id: Id, agent: Option<AgentClient>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        *entry.reopen.lock().expect("reopen lock") = Some(tx);
        let m = self.clone();
        tokio::spawn(async move { m.watch(entry, id, agent, rx).await });
    }

    /// Copies the log and waits for the exit, then records it.
    async fn watch(
        self: Arc<Self>,
        entry: Arc<Entry>,
        id: Id,
        agent: Option<AgentClient>,
        reopen: tokio::sync::mpsc::Receiver<ReopenRequest>,
    ) {
        let record = entry.view.lock().expect("view lock").clone();
        let span = tracing::info_span!("container", container_id = %id.short());
        let _enter = span.enter();
        let mut agent = match agent {
            Some(a) => Some(a),
            None => self.sandboxes.agent(&record.sandbox_id).await.ok(),
        };
        let log = agent
            .clone()
            .map(|a| tokio::spawn(copy_log(a, id.clone(), record.log_path.clone(), reopen)));
        let mut result = None;
        let mut pod_gone = None;
        while let Some(a) = agent.as_ref() {
            match a.wait_container(id.as_str(), POLL).await {
                Ok(r) if r.state == proto::ContainerState::Exited as i32 => {
                    result = Some(r);
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "WaitContainer failed");
                    match self.sandboxes.status(record.sandbox_id.as_str()).await {
                        Ok(v) if v.record.state == SandboxState::Ready => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            agent = self.sandboxes.agent(&record.sandbox_id).await.ok();
                        }
                        Ok(v) => {
                            pod_gone = v.record.reason;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        if let Some(log) = log {
            if tokio::time::timeout(LOG_DRAIN, log).await.is_err() {
                tracing::warn!("container log still open after the exit; leaving it");
            }
        }
        // The termination message reaches the host before the kubelet
        // sees the exit.
        if let (Some(_), Some(a)) = (&result, &agent) {
            self.volumes.copy_back(a, &record).await;
        }
        self.record_exit(&entry, result.as_ref(), pod_gone);
    }

    /// Running → Exited (idempotent); `None`: the sandbox went away.
    /// Records the exit `exit` reports, or, without one, that the pod went
    /// away under the container (`pod_gone`: why, when known).
    fn record_exit(
        &self,
        entry: &Entry,
        exit: Option<&proto::WaitContainerResponse>,
        pod_gone: Option<String>,
    ) {
        let mut view = entry.view.lock().expect("view lock");
        if view.state == ContainerState::Exited {
            return;
        }
        let mut record = view.clone();
        let Ok(state) = record.state.transition(ContainerState::Exited) else {
            return;
        };
        record.state = state;
        record.finished_at_ns = now_ns();
        match exit {
            Some(r) => {
                record.exit_code = r.exit_code;
                record.reason = if r.oom_killed {
                    "OOMKilled"
                } else if r.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into();
                if r.signal != 0 {
                    record.message = format!("killed by signal {}", r.signal);
                }
            }
            None => {
                record.exit_code = 255;
                record.reason = "Error".into();
                record.message = match pod_gone {
                    Some(why) => format!("the pod sandbox died ({why}); exit status unknown"),
                    None => "the pod sandbox stopped; exit status unknown".into(),
                };
            }
        }
        if let Err(e) = self.store.save(&record) {
            tracing::error!(error = %e, "cannot persist the container's exit");
        }
        tracing::info!(exit_code = record.exit_code, reason = %record.reason, "container exited");
        *view = record;
        drop(view);
        entry.done.send_replace(true);
    }

    /// StopContainer: the image's stop signal (SIGTERM by default), then
    /// SIGKILL once `timeout` has passed. Idempotent.
    pub async fn stop(&self, prefix: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let (id, entry) = match self.entry(prefix) {
            Ok(x) => x,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = entry.op.lock().await;
        let record = entry.view.lock().expect("view lock").clone();
        if record.state != ContainerState::Running {
            return Ok(());
        }
        let span = tracing::info_span!("stop_container", container_id = %id.short());
        let _enter = span.enter();
        let Ok(agent) = self.sandboxes.agent(&record.sandbox_id).await else {
            self.record_exit(&entry, None, None);
            return Ok(());
        };
        let mut last = None;
        if !timeout.is_zero() {
            agent
                .signal_container(id.as_str(), record.stop_signal)
                .await
                .map_err(agent_err)?;
            let r = agent
                .wait_container(id.as_str(), timeout)
                .await
                .map_err(agent_err)?;
            if r.state == proto::ContainerState::Exited as i32 {
                last = Some(r);
            }
        }
        if last.is_none() {
            agent
                .signal_container(id.as_str(), libc::SIGKILL as u32)
                .await
                .map_err(agent_err)?;
            let r = agent
                .wait_container(id.as_str(), KILL_WAIT)
                .await
                .map_err(agent_err)?;
            if r.state != proto::ContainerState::Exited as i32 {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "container {id} still runs {KILL_WAIT:?} after SIGKILL"
                )));
            }
            last = Some(r);
        }
        // Let the watcher drain the log and record the exit.
        let mut done = entry.done.subscribe();
        if tokio::time::timeout(LOG_DRAIN + Duration::from_secs(1), done.wait_for(|d| *d))
            .await
            .is_err()
        {
            self.record_exit(&entry, last.as_ref(), None);
        }
        Ok(())
    }

    /// RemoveContainer: kills it if it runs, has the agent delete its
    /// rootfs, releases its image drive if no other container of the pod
    /// uses it, deletes the record. Idempotent.
    pub async fn remove(self: &Arc<Self>, prefix: &str) -> Result<(), RuntimeError> {
        let (id, entry) = match self.entry(prefix) {
            Ok(x) => x,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(id.as_str(), Duration::ZERO).await?;
        let _op = entry.op.lock().await;
        let record = entry.view.lock().expect("view lock").clone();
        if let Ok(agent) = self.sandboxes.agent(&record.sandbox_id).await {
            agent
                .remove_container(id.as_str())
                .await
                .map_err(agent_err)?;
        }
        self.forget(&record);
        self.volumes.release(&self.sandboxes, &record).await;
        // The image drive stays attached for IMAGE_IDLE after its pod's
        // last container of it goes: a container restarted by the kubelet
        // finds it there, and a detach (a PCIe hot-unplug the guest must
        // acknowledge: seconds under TCG) is not paid at every removal.
        let this = self.clone();
        let released = record.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IMAGE_IDLE).await;
            if let Err(e) = this.release_image(&released).await {
                tracing::warn!(container_id = %released.id.short(), error = %e, "image drive not released");
            }
        });
        self.store.delete(&id)?;
        tracing::info!(container_id = %id.short(), "container removed");
        Ok(())
    }

    /// ReopenContainerLog: the log file is opened anew at its path (the
    /// kubelet has renamed the old one). Only for a running container.
    pub async fn reopen_log(&self, prefix: &str) -> Result<(), RuntimeError> {
        let (id, entry) = self.entry(prefix)?;
        let state = entry.view.lock().expect("view lock").state;
        let tx = entry.reopen.lock().expect("reopen lock").clone();
        let (Some(tx), ContainerState::Running) = (tx, state) else {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running ({state:?}): its log cannot be reopened"
            )));
        };
        let (ack, answer) = tokio::sync::oneshot::channel();
        let gone = || {
            RuntimeError::FailedPrecondition(format!("container {id} has stopped writing its log"))
        };
        tx.send(ack).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?.map_err(|e| {
            RuntimeError::FailedPrecondition(format!("cannot reopen the log of {id}: {e}"))
        })
    }

    /// UpdateContainerResources: the agent applies the new limits to the
    /// container's cgroup, then the record keeps them (fields left 0 /
    /// empty keep their old values, as containerd does). Created or
    /// Running containers only. Recorded after the agent accepted them, so
    /// that ContainerStatus never reports limits that were refused.
    pub async fn update_resources(
        &self,
        prefix: &str,
        resources: super::Resources,
    ) -> Result<(), RuntimeError> {
        let (id, entry) = self.entry(prefix)?;
        let _op = entry.op.lock().await;
        let record = entry.view.lock().expect("view lock").clone();
        if record.state == ContainerState::Exited {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} has exited: its resources cannot be updated"
            )));
        }
        let span = tracing::info_span!("update_container_resources", container_id = %id.short());
        let _enter = span.enter();
        let agent = self.sandboxes.agent(&record.sandbox_id).await?;
        agent
            .update_container_resources(id.as_str(), resources_proto(&resources))
            .await
            .map_err(agent_err)?;
        let mut view = entry.view.lock().expect("view lock");
        let mut updated = view.clone();
        updated.config.resources = Some(merge_resources(
            updated.config.resources.take().unwrap_or_default(),
            resources,
        ));
        self.store.save(&updated)?;
        *view = updated;
        tracing::info!("container resources updated");
        Ok(())
    }

    /// ContainerStatus.
    pub fn status(&self, prefix: &str) -> Result<ContainerRecord, RuntimeError> {
        let (_, entry) = self.entry(prefix)?;
        let r = entry.view.lock().expect("view lock").clone();
        Ok(r)
    }

    /// ListContainers (filtering is the caller's), oldest first.
    pub fn list(&self) -> Vec<ContainerRecord> {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .lock()
            .expect("entries lock")
            .values()
            .cloned()
            .collect();
        let mut out: Vec<ContainerRecord> = entries
            .iter()
            .map(|e| e.view.lock().expect("view lock").clone())
            .collect();
        out.sort_by_key(|r| r.created_at_ns);
        out
    }

    /// ExecSync: `cmd` in the running container; output capped at
    /// [`EXEC_OUTPUT_CAP`] per stream and [`EXEC_RESPONSE_BUDGET`] for both
    /// (stdout first); killed after `timeout` (zero: none).
    pub async fn exec_sync(
        &self,
        prefix: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "cmd must not be empty".into(),
            ));
        }
        let (id, entry) = self.entry(prefix)?;
        let record = entry.view.lock().expect("view lock").clone();
        if record.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running ({:?})",
                record.state
            )));
        }
        let agent = self.sandboxes.agent(&record.sandbox_id).await?;
        let r = agent
            .exec_sync(proto::ExecSyncRequest {
                container_id: id.to_string(),
                process: Some(proto::ContainerProcess {
                    args: cmd,
                    ..Default::default()
                }),
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                max_output_bytes: EXEC_OUTPUT_CAP,
            })
            .await
            .map_err(agent_err)?;
        let (mut stdout, mut stderr) = (r.stdout, r.stderr);
        stdout.truncate(EXEC_RESPONSE_BUDGET);
        stderr.truncate(EXEC_RESPONSE_BUDGET - stdout.len());
        Ok(ExecResult {
            stdout,
            stderr,
            exit_code: r.exit_code,
            timed_out: r.timed_out,
        })
    }

    fn pod_containers(&self, pod: &Id) -> Vec<ContainerRecord> {
        self.list()
            .into_iter()
            .filter(|r| &r.sandbox_id == pod)
            .collect()
    }

    /// StopPodSandbox: kills the pod's running containers, then stops the
    /// sandbox. Idempotent.
    pub async fn stop_pod(&self, prefix: &str) -> Result<(), RuntimeError> {
        if let Ok(pod) = self.sandboxes.resolve(prefix) {
            for c in self.pod_containers(&pod) {
                if c.state == ContainerState::Running {
                    if let Err(e) = self.stop(c.id.as_str(), Duration::ZERO).await {
                        tracing::warn!(container_id = %c.id.short(), error = %e, "container not stopped; the sandbox stop ends it");
                    }
                }
            }
        }
        self.sandboxes.stop(prefix).await?;
        // The agent is gone: whatever still ran has ended with it.
        if let Ok(pod) = self.sandboxes.resolve(prefix) {
            self.volumes.stop_pod(&pod).await;
            for c in self.pod_containers(&pod) {
                if c.state == ContainerState::Running {
                    if let Ok((_, e)) = self.entry(c.id.as_str()) {
                        self.record_exit(&e, None, None);
                    }
                }
            }
        }
        Ok(())
    }

    /// RemovePodSandbox: removes the pod's containers, then the sandbox.
    /// Idempotent.
    pub async fn remove_pod(self: &Arc<Self>, prefix: &str) -> Result<(), RuntimeError> {
        if let Ok(pod) = self.sandboxes.resolve(prefix) {
            for c in self.pod_containers(&pod) {
                self.remove(c.id.as_str()).await?;
            }
            self.pods.lock().expect("pods lock").remove(&pod);
            self.volumes.forget_pod(&pod);
        }
        self.sandboxes.remove(prefix).await
    }

    /// The image info of a container (for status conversions).
    pub fn image_of(record: &ContainerRecord) -> &ImageInfo {
        &record.image
    }
}

#[cfg(test)]
mod tests;
