//! `SandboxManager`: the core's typed API for pod sandboxes.
//!
//! Every sandbox has its own operation lock (no global lock is held across
//! I/O) and a snapshot of its record for cheap listing. Each step of
//! RunPodSandbox is recorded in the persisted record before or right after
//! it is taken, so one function, [`SandboxManager::release`], undoes a
//! failed run, removes a sandbox, and cleans up what a crash left half-made.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_agent_proto::v1 as proto;
use serde::Serialize;

use crate::agent::AgentClient;
use crate::backend::{BootSpec, DeviceLocator, Drive, Liveness, SandboxBackend};
use crate::cgroup::{self, CgroupFs};
use crate::error::RuntimeError;
use crate::id::{self, Id};
use crate::network::PodNetworks;
use crate::sandbox::{SandboxConfig, SandboxRecord, SandboxState};
use crate::scratch::ScratchTemplate;
use crate::sizing::{SizingInput, SizingPolicy};
use crate::store::Store;
use crate::sysctl;

mod boot;
mod validate;
use validate::{default_hostname, validate};

/// Where the scratch disk is mounted in the guest.
pub const SCRATCH_MOUNTPOINT: &str = "/run/hearth/scratch";

/// The /etc/hosts every pod starts with (as containerd writes it).
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// Settings of the manager (from the daemon's config).
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Persistent state (records, scratch disks).
    pub root: PathBuf,
    /// Runtime state (sockets, agent roots).
    pub state: PathBuf,
    /// Handler used when the request names none.
    pub default_handler: String,
    /// Runtime handler name → backend kind.
    pub handlers: BTreeMap<String, String>,
    /// Sizing policy.
    pub sizing: SizingPolicy,
    /// Size of each pod's scratch disk.
    pub scratch_size_mib: u64,
    /// How long a booting guest may take to answer.
    pub boot_timeout: Duration,
    /// How long a stopping guest may take before it is forced.
    pub stop_timeout: Duration,
    /// Where the host's cgroups are mounted.
    pub cgroup_root: PathBuf,
    /// Parent cgroup of pods that name none.
    pub default_cgroup_parent: String,
    /// The host's resolv.conf, given to pods without a DNS config.
    pub host_resolv_conf: PathBuf,
}

/// One sandbox's live entry.
struct Entry {
    /// Held for the whole of any operation; caches the agent connection.
    op: tokio::sync::Mutex<Option<AgentClient>>,
    /// The last persisted record, for listing without waiting on `op`.
    view: Mutex<SandboxRecord>,
}

/// What PodSandboxStatus and ListPodSandbox show.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxView {
    /// The record as persisted.
    pub record: SandboxRecord,
}

/// Creates, tracks and removes pod sandboxes.
pub struct SandboxManager {
    cfg: ManagerConfig,
    store: Store,
    backends: BTreeMap<String, Arc<dyn SandboxBackend>>,
    network: Arc<dyn PodNetworks>,
    cgroups: Option<CgroupFs>,
    scratch: ScratchTemplate,
    sandboxes: Mutex<HashMap<Id, Arc<Entry>>>,
    names: Mutex<HashMap<String, Id>>,
}

impl SandboxManager {
    /// Opens the store, prepares the scratch template, and recovers the
    /// sandboxes a previous hearthd left: live ones stay READY, those whose
    /// agent is gone become NOTREADY, half-made ones are cleaned up.
    pub async fn start(
        cfg: ManagerConfig,
        backends: Vec<Arc<dyn SandboxBackend>>,
        network: Arc<dyn PodNetworks>,
    ) -> Result<Arc<SandboxManager>, RuntimeError> {
        let store = Store::open(&cfg.root)?;
        let scratch_dir = cfg.root.join("templates");
        let size = cfg.scratch_size_mib;
        let scratch = blocking(move || ScratchTemplate::ensure(&scratch_dir, size)).await?;
        let cgroups = match CgroupFs::detect(&cfg.cgroup_root) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroups: pods will not be placed in cgroup_parent");
                None
            }
        };
        let backends = backends
            .into_iter()
            .map(|b| (b.kind().to_owned(), b))
            .collect();
        let mgr = Arc::new(SandboxManager {
            cfg,
            store,
            backends,
            network,
            cgroups,
            scratch,
            sandboxes: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        });
        mgr.recover().await?;
        Ok(mgr)
    }

    /// The configured handlers and whether each one's backend can run here.
    pub fn handlers(&self) -> Vec<(String, String, Result<(), String>)> {
        self.cfg
            .handlers
            .iter()
            .map(|(h, kind)| {
                let ok = match self.backends.get(kind) {
                    Some(b) => b.check().map_err(|e| e.to_string()),
                    None => Err(format!("backend {kind} is not built into this hearthd yet")),
                };
                (h.clone(), kind.clone(), ok)
            })
            .collect()
    }

    /// The network's readiness (for the NetworkReady condition).
    pub fn network_ready(&self) -> Result<(), String> {
        self.network.ready()
    }

    /// The host's cgroup version, if cgroups were found.
    pub fn cgroup_version(&self) -> Option<cgroup::CgroupVersion> {
        self.cgroups.as_ref().map(|c| c.version())
    }

    async fn recover(&self) -> Result<(), RuntimeError> {
        for mut record in self.store.load_all()? {
            let backend = self.backends.get(&record.backend).cloned();
            match record.state {
                SandboxState::Creating => {
                    tracing::warn!(pod_id = %record.id, "cleaning up a sandbox left half-made");
                    self.release(&record).await?;
                    continue;
                }
                SandboxState::Ready => {
                    let gone = match (&backend, &record.backend_handle) {
                        (Some(b), Some(h)) => match b.liveness(h) {
                            Liveness::Alive => None,
                            Liveness::Gone(why) => Some(why),
                        },
                        (None, _) => Some(format!("backend {} is not available", record.backend)),
                        (_, None) => Some("no backend handle was recorded".to_owned()),
                    };
                    if let Some(why) = gone {
                        tracing::warn!(pod_id = %record.id, reason = %why, "sandbox found not running");
                        record.state = record.state.transition(SandboxState::NotReady)?;
                        record.reason = Some(why);
                        self.store.save(&record)?;
                    } else {
                        tracing::info!(pod_id = %record.id, "sandbox found running");
                    }
                }
                SandboxState::NotReady => {}
            }
            self.names
                .lock()
                .expect("names lock")
                .insert(record.config.metadata.unique_name(), record.id.clone());
            self.insert(record);
        }
        Ok(())
    }

    fn insert(&self, record: SandboxRecord) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            op: tokio::sync::Mutex::new(None),
            view: Mutex::new(record.clone()),
        });
        self.sandboxes
            .lock()
            .expect("sandboxes lock")
            .insert(record.id.clone(), entry.clone());
        entry
    }

    fn persist(&self, entry: &Entry, record: &SandboxRecord) -> Result<(), RuntimeError> {
        self.store.save(record)?;
        *entry.view.lock().expect("view lock") = record.clone();
        Ok(())
    }

    /// Resolves a full id or unique prefix.
    pub fn resolve(&self, prefix: &str) -> Result<Id, RuntimeError> {
        let map = self.sandboxes.lock().expect("sandboxes lock");
        Ok(id::resolve_prefix(map.keys(), prefix, "pod sandbox")?)
    }

    /// The sandbox Stop or Remove acts on; `None` when there is none (an
    /// unknown id is not an error for them, as CRI asks).
    fn teardown_target(&self, prefix: &str) -> Result<Option<(Id, Arc<Entry>)>, RuntimeError> {
        let id = match self.resolve(prefix) {
            Ok(id) => id,
            Err(RuntimeError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self.entry(&id).map(|e| (id, e)))
    }

    fn entry(&self, id: &Id) -> Option<Arc<Entry>> {
        self.sandboxes
            .lock()
            .expect("sandboxes lock")
            .get(id)
            .cloned()
    }

    fn backend_for(
        &self,
        handler: &str,
    ) -> Result<(String, Arc<dyn SandboxBackend>), RuntimeError> {
        let handler = if handler.is_empty() {
            self.cfg.default_handler.as_str()
        } else {
            handler
        };
        let kind = self
            .cfg
            .handlers
            .get(handler)
            .ok_or_else(|| RuntimeError::UnknownHandler(handler.to_owned()))?;
        let backend = self.backends.get(kind).ok_or_else(|| {
            RuntimeError::Unimplemented(format!(
                "runtime handler {handler:?} uses the {kind} backend, which this hearthd does not have yet"
            ))
        })?;
        Ok((handler.to_owned(), backend.clone()))
    }

    /// What the backend of pod `prefix` reports live about its VM (for
    /// the verbose PodSandboxStatus); `None` when nothing or not running.
    pub async fn live_info(&self, prefix: &str) -> Option<serde_json::Value> {
        let record = self.status(prefix).await.ok()?.record;
        if record.state != SandboxState::Ready {
            return None;
        }
        let backend = self.backends.get(record.backend.as_str())?;
        backend.live_info(record.backend_handle.as_ref()?).await
    }

    /// Whether the backend of pod `id` runs privileged containers.
    pub fn allows_privileged(&self, record: &SandboxRecord) -> bool {
        self.backends
            .get(record.backend.as_str())
            .is_some_and(|b| b.allows_privileged())
    }

    /// RunPodSandbox: validates, sizes, creates the netns, the scratch disk
    /// and the guest, and sets the pod up through its agent. On any error
    /// every step taken is undone.
    pub async fn run(&self, mut config: SandboxConfig, handler: &str) -> Result<Id, RuntimeError> {
        validate(&config)?;
        if config.hostname.is_empty() && !config.host_network() {
            // The kubelet always sends one; crictl's own example does not.
            config.hostname = default_hostname(&config.metadata.name);
        }
        let (handler, backend) = self.backend_for(handler)?;
        if config.host_network() && !backend.supports_host_network() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "runtime handler {handler:?} ({} backend) cannot run a hostNetwork pod: a VM has its own \
                 network stack; run node agents that need the host network with the namespaces RuntimeClass",
                backend.kind()
            )));
        }
        backend.check()?;
        if !config.host_network() {
            self.network.ready().map_err(|reason| {
                RuntimeError::FailedPrecondition(format!("pod network is not ready: {reason}"))
            })?;
        }
        let size = self.cfg.sizing.size(&SizingInput {
            resources: config.resources,
            overhead: config.overhead,
            annotations: config.annotations.clone(),
        })?;
        sysctl::validate(&config.sysctls, config.host_network())?;

        let name = config.metadata.unique_name();
        let id;
        {
            let mut names = self.names.lock().expect("names lock");
            // Runtime dirs and netns names use the short id; keep it unique
            // among live sandboxes.
            id = loop {
                let candidate = Id::generate();
                let map = self.sandboxes.lock().expect("sandboxes lock");
                if !map.keys().any(|k| k.short() == candidate.short()) {
                    break candidate;
                }
            };
            if let Some(holder) = names.get(&name) {
                return Err(RuntimeError::AlreadyExists {
                    name,
                    id: holder.to_string(),
                });
            }
            names.insert(name.clone(), id.clone());
        }
        let span = tracing::info_span!("run_pod_sandbox", pod_id = %id.short(), pod = %config.metadata.name);
        let _enter = span.enter();
        let mut record = SandboxRecord {
            id: id.clone(),
            state: SandboxState::Creating,
            created_at_ns: now_ns(),
            runtime_handler: handler,
            backend: backend.kind().to_owned(),
            config,
            size,
            netns: None,
            network: None,
            scratch: None,
            cgroups_created: Vec::new(),
            backend_handle: None,
            reason: None,
        };
        let entry = self.insert(record.clone());
        let mut guard = entry.op.lock().await;
        match self.run_steps(&entry, &mut record, backend.as_ref()).await {
            Ok(agent) => {
                *guard = Some(agent);
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "RunPodSandbox failed; rolling back");
                if let Err(undo) = self.release(&record).await {
                    tracing::error!(error = %undo, "rollback incomplete");
                }
                drop(guard);
                self.sandboxes.lock().expect("sandboxes lock").remove(&id);
                self.names.lock().expect("names lock").remove(&name);
                Err(e)
            }
        }
    }

    /// Keyed by the short id: unix socket paths inside it must stay under
    /// 108 bytes.
    fn run_dir(&self, id: &Id) -> PathBuf {
        self.cfg.state.join("sandboxes").join(id.short())
    }

    /// StopPodSandbox: asks the agent to shut down, then has the backend end
    /// the guest (forcing it after the stop timeout). Idempotent; an
    /// unknown id is not an error.
    pub async fn stop(&self, prefix: &str) -> Result<(), RuntimeError> {
        let Some((_, entry)) = self.teardown_target(prefix)? else {
            return Ok(());
        };
        let mut agent = entry.op.lock().await;
        let mut record = entry.view.lock().expect("view lock").clone();
        self.stop_locked(&entry, &mut record, &mut agent).await
    }

    async fn stop_locked(
        &self,
        entry: &Entry,
        record: &mut SandboxRecord,
        agent: &mut Option<AgentClient>,
    ) -> Result<(), RuntimeError> {
        let span = tracing::info_span!("stop_pod_sandbox", pod_id = %record.id.short());
        let _enter = span.enter();
        let backend = self.backends.get(&record.backend).cloned();
        if let (Some(backend), Some(handle)) = (&backend, &record.backend_handle) {
            if backend.liveness(handle) == Liveness::Alive {
                let client = match agent.take() {
                    Some(c) => Some(c),
                    None => backend
                        .connect_agent(handle, Duration::from_secs(2))
                        .await
                        .ok(),
                };
                if let Some(c) = client {
                    if let Err(e) = c.shutdown().await {
                        tracing::info!(error = %e, "agent did not take the shutdown; forcing");
                    }
                }
            }
            backend.stop(handle, self.cfg.stop_timeout).await?;
        }
        *agent = None;
        // Release the pod's IP and the plugins' rules now (the kubelet
        // calls Stop eagerly); the netns goes at Remove.
        if record.network.as_ref().is_some_and(|n| n.record.is_some()) {
            self.network
                .teardown(
                    &record.id,
                    &record.config,
                    record.network.as_ref(),
                    record.netns.as_deref(),
                )
                .await?;
            if let Some(n) = record.network.as_mut() {
                n.record = None;
            }
            self.persist(entry, record)?;
        }
        if record.state != SandboxState::NotReady {
            record.state = record.state.transition(SandboxState::NotReady)?;
            self.persist(entry, record)?;
        }
        Ok(())
    }

    /// RemovePodSandbox: stops the sandbox if it runs, then frees everything
    /// it holds. Idempotent; an unknown id is not an error.
    pub async fn remove(&self, prefix: &str) -> Result<(), RuntimeError> {
        let Some((id, entry)) = self.teardown_target(prefix)? else {
            return Ok(());
        };
        let mut agent = entry.op.lock().await;
        let mut record = entry.view.lock().expect("view lock").clone();
        if !self
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .contains_key(&id)
        {
            return Ok(()); // removed while we waited for the lock
        }
        self.stop_locked(&entry, &mut record, &mut agent).await?;
        self.release(&record).await?;
        self.sandboxes.lock().expect("sandboxes lock").remove(&id);
        self.names
            .lock()
            .expect("names lock")
            .remove(&record.config.metadata.unique_name());
        Ok(())
    }

    /// Frees everything a record says was made: the guest and its drives,
    /// the run dir, the scratch disk, the netns, the cgroups, the record.
    /// Safe on records from any step of `run` and after a crash.
    async fn release(&self, record: &SandboxRecord) -> Result<(), RuntimeError> {
        if let Some(handle) = &record.backend_handle {
            match self.backends.get(&record.backend) {
                Some(b) => b.destroy(handle).await?,
                None => {
                    tracing::error!(pod_id = %record.id, backend = %record.backend, "backend missing: guest not destroyed")
                }
            }
        }
        let run_dir = self.run_dir(&record.id);
        let scratch = record.scratch.clone();
        blocking(move || {
            remove_dir_if_present(&run_dir)?;
            if let Some(s) = scratch {
                remove_file_if_present(&s)?;
            }
            Ok::<_, RuntimeError>(())
        })
        .await?;
        if !record.config.host_network() {
            let recorded = record.network.as_ref().is_some_and(|n| n.record.is_some());
            if recorded || record.state == SandboxState::Creating {
                self.network
                    .teardown(
                        &record.id,
                        &record.config,
                        record.network.as_ref(),
                        record.netns.as_deref(),
                    )
                    .await?;
            }
        }
        if record.netns.is_some() || record.state == SandboxState::Creating {
            self.network.remove_netns(&record.id).await?;
        }
        cgroup::remove_created(&record.cgroups_created);
        self.store.delete(&record.id)?;
        Ok(())
    }

    /// PodSandboxStatus: the record, with the state corrected when the
    /// guest is found gone.
    pub async fn status(&self, prefix: &str) -> Result<SandboxView, RuntimeError> {
        let id = self.resolve(prefix)?;
        let entry = self.entry(&id).ok_or_else(|| {
            RuntimeError::NotFound(id::IdError::NotFound {
                kind: "pod sandbox",
                prefix: prefix.to_owned(),
            })
        })?;
        let _op = entry.op.lock().await;
        let mut record = entry.view.lock().expect("view lock").clone();
        if record.state == SandboxState::Ready {
            if let Some(why) = self.gone(&record) {
                record.state = record.state.transition(SandboxState::NotReady)?;
                record.reason = Some(why);
                self.persist(&entry, &record)?;
            }
        }
        Ok(SandboxView { record })
    }

    fn gone(&self, record: &SandboxRecord) -> Option<String> {
        let backend = self.backends.get(&record.backend)?;
        match backend.liveness(record.backend_handle.as_ref()?) {
            Liveness::Alive => None,
            Liveness::Gone(why) => Some(why),
        }
    }

    fn list_records(&self) -> Vec<SandboxRecord> {
        let entries: Vec<Arc<Entry>> = self
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .values()
            .cloned()
            .collect();
        entries
            .iter()
            .map(|e| e.view.lock().expect("view lock").clone())
            .collect()
    }

    /// ListPodSandbox: every sandbox (filtering is the caller's), without
    /// waiting on operations in progress. Sandboxes still being created are
    /// not listed, as containerd does not list them.
    pub fn list(&self) -> Vec<SandboxView> {
        let mut out: Vec<SandboxView> = self
            .list_records()
            .into_iter()
            .filter(|r| r.state != SandboxState::Creating)
            .map(|mut record| {
                if record.state == SandboxState::Ready {
                    if let Some(why) = self.gone(&record) {
                        record.state = SandboxState::NotReady;
                        record.reason = Some(why);
                    }
                }
                SandboxView { record }
            })
            .collect();
        out.sort_by_key(|v| v.record.created_at_ns);
        out
    }

    /// Where persistent state lives (the container records go under it).
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// Gives a READY sandbox's guest a drive (the containers' images); the
    /// backend's handle, which records it, is persisted.
    pub async fn attach_drive(
        &self,
        id: &Id,
        drive: &Drive,
    ) -> Result<DeviceLocator, RuntimeError> {
        let entry = self.entry(id).ok_or_else(|| not_found(id))?;
        let _op = entry.op.lock().await;
        let mut record = entry.view.lock().expect("view lock").clone();
        if record.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                record.id
            )));
        }
        let backend = self.backends.get(&record.backend).cloned().ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!("backend {} missing", record.backend))
        })?;
        let handle = record.backend_handle.as_mut().ok_or_else(|| {
            RuntimeError::FailedPrecondition("sandbox has no backend handle".into())
        })?;
        let res = backend.attach_drive(handle, drive).await;
        self.persist(&entry, &record)?;
        Ok(res?)
    }

    /// Takes a drive away from a sandbox's guest (it has unmounted it).
    /// Missing drives and sandboxes are fine.
    pub async fn detach_drive(&self, id: &Id, drive_id: &str) -> Result<(), RuntimeError> {
        let Some(entry) = self.entry(id) else {
            return Ok(());
        };
        let _op = entry.op.lock().await;
        let mut record = entry.view.lock().expect("view lock").clone();
        let Some(backend) = self.backends.get(&record.backend).cloned() else {
            return Ok(());
        };
        let Some(handle) = record.backend_handle.as_mut() else {
            return Ok(());
        };
        let res = backend.detach_drive(handle, drive_id).await;
        self.persist(&entry, &record)?;
        Ok(res?)
    }

    /// An agent client for a READY sandbox (connecting if needed).
    pub async fn agent(&self, id: &Id) -> Result<AgentClient, RuntimeError> {
        let entry = self.entry(id).ok_or_else(|| {
            RuntimeError::NotFound(id::IdError::NotFound {
                kind: "pod sandbox",
                prefix: id.to_string(),
            })
        })?;
        let mut cached = entry.op.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let record = entry.view.lock().expect("view lock").clone();
        if record.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                record.id
            )));
        }
        let backend = self.backends.get(&record.backend).ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!("backend {} missing", record.backend))
        })?;
        let handle = record.backend_handle.as_ref().ok_or_else(|| {
            RuntimeError::FailedPrecondition("sandbox has no backend handle".into())
        })?;
        let c = backend
            .connect_agent(handle, Duration::from_secs(5))
            .await?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

fn not_found(id: &Id) -> RuntimeError {
    RuntimeError::NotFound(id::IdError::NotFound {
        kind: "pod sandbox",
        prefix: id.to_string(),
    })
}

/// The protocol's form of a device locator.
pub fn locator_proto(l: &DeviceLocator) -> proto::DeviceLocator {
    locator_to_proto(l)
}

fn locator_to_proto(l: &DeviceLocator) -> proto::DeviceLocator {
    use proto::device_locator::By;
    let by = match l {
        DeviceLocator::Number { major, minor } => By::Number(proto::DeviceNumber {
            major: *major,
            minor: *minor,
        }),
        DeviceLocator::Serial(s) => By::Serial(s.clone()),
        DeviceLocator::Path(p) => By::Path(p.clone()),
    };
    proto::DeviceLocator { by: Some(by) }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn remove_dir_if_present(p: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::backend::BackendError::io(p)(e).into())
        }
        _ => Ok(()),
    }
}

fn remove_file_if_present(p: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::backend::BackendError::io(p)(e).into())
        }
        _ => Ok(()),
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T, E, F>(f: F) -> Result<T, RuntimeError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Into<RuntimeError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(RuntimeError::FailedPrecondition(format!(
            "blocking task failed: {e}"
        ))),
    }
}
