//! [`VolumeSet`]: the guest volumes of each pod, counted by the containers
//! that use them; a watcher task per synced volume (inotify on the host
//! directory, debounced re-sync); the termination-message copy-back.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_agent_proto::v1 as proto;
use tokio::sync::watch;
use tracing::Instrument;

use super::{
    walk, walk_refusal, VolumeKind, VolumeMount, VolumePolicy, DEBOUNCE, FILE_ENTRY,
    TERMINATION_LOG_MAX,
};
use crate::agent::AgentClient;
use crate::container::ContainerRecord;
use crate::error::RuntimeError;
use crate::id::Id;
use crate::SandboxManager;

fn agent_failure(what: &str, e: crate::agent::AgentError) -> RuntimeError {
    let msg = match e.status() {
        Some(s) => format!("{what}: {}", s.message()),
        None => format!("{what}: {e}"),
    };
    RuntimeError::FailedPrecondition(msg)
}

/// A synced volume's watcher task.
struct Watcher {
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Stops it between syncs (never in the middle of one, so a removed
    /// volume is not recreated by a late sync).
    async fn stop(self) {
        self.cancel.send_replace(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            // A sync stuck this long is cut off, so it cannot land after
            // the volume's removal.
            abort.abort();
            tracing::warn!("volume watcher did not stop in time; aborted");
        }
    }
}

struct Shared {
    users: BTreeSet<Id>,
    watcher: Option<Watcher>,
}

type PodVolumes = Arc<tokio::sync::Mutex<HashMap<String, Shared>>>;

/// The guest volumes of every pod, shared by the containers that mount
/// them.
pub struct VolumeSet {
    policy: VolumePolicy,
    pods: Mutex<HashMap<Id, PodVolumes>>,
}

impl VolumeSet {
    /// Empty, with this policy.
    pub fn new(policy: VolumePolicy) -> VolumeSet {
        VolumeSet {
            policy,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &VolumePolicy {
        &self.policy
    }

    fn pod(&self, pod: &Id) -> PodVolumes {
        self.pods
            .lock()
            .expect("volumes lock")
            .entry(pod.clone())
            .or_default()
            .clone()
    }

    /// Makes the record's volumes in the guest (or joins the ones its pod
    /// already has) and starts their watchers. On error, what this call
    /// made is undone.
    pub async fn acquire(
        &self,
        sandboxes: &Arc<SandboxManager>,
        agent: &AgentClient,
        record: &ContainerRecord,
    ) -> Result<(), RuntimeError> {
        let pod = self.pod(&record.sandbox_id);
        let mut vols = pod.lock().await;
        let mut result = Ok(());
        for v in &record.volumes {
            if let Some(s) = vols.get_mut(&v.volume) {
                s.users.insert(record.id.clone());
                continue;
            }
            if let Err(e) = self.make(agent, v).await {
                // A sync cut short may have left part of the volume.
                if let Err(undo) = agent.remove_volume(&v.volume).await {
                    tracing::debug!(volume = %v.volume, error = %undo, "partial volume not removed");
                }
                result = Err(e);
                break;
            }
            // The watcher syncs once more when it starts: the kubelet may
            // have swapped `..data` between this copy and its inotify watch.
            let watcher = (v.kind == VolumeKind::Synced).then(|| {
                spawn_watcher(
                    sandboxes.clone(),
                    record.sandbox_id.clone(),
                    v.clone(),
                    self.policy.max_volume_bytes,
                    true,
                )
            });
            vols.insert(
                v.volume.clone(),
                Shared {
                    users: BTreeSet::from([record.id.clone()]),
                    watcher,
                },
            );
        }
        if result.is_err() {
            drop(vols);
            self.release(sandboxes, record).await;
        }
        result
    }

    /// Makes one guest volume.
    async fn make(&self, agent: &AgentClient, v: &VolumeMount) -> Result<(), RuntimeError> {
        if v.kind == VolumeKind::EmptyDir {
            return agent
                .create_empty_dir(proto::CreateEmptyDirRequest {
                    name: v.volume.clone(),
                    tmpfs_size_bytes: v.tmpfs_size_bytes,
                    memory: v.memory,
                })
                .await
                .map_err(|e| agent_failure(&format!("emptyDir at {}", v.container_path), e));
        }
        sync_once(agent, v, self.policy.max_volume_bytes).await
    }

    /// Drops the record's container from its volumes; a volume without
    /// users loses its watcher and is removed from the guest (when the
    /// pod still runs: otherwise its guest state went with it).
    pub async fn release(&self, sandboxes: &Arc<SandboxManager>, record: &ContainerRecord) {
        let pod = self.pod(&record.sandbox_id);
        let mut vols = pod.lock().await;
        let unused: Vec<String> = vols
            .iter_mut()
            .filter_map(|(name, s)| {
                (s.users.remove(&record.id) && s.users.is_empty()).then(|| name.clone())
            })
            .collect();
        let agent = if unused.is_empty() {
            None
        } else {
            sandboxes.agent(&record.sandbox_id).await.ok()
        };
        for name in unused {
            let Some(shared) = vols.remove(&name) else {
                continue;
            };
            if let Some(w) = shared.watcher {
                w.stop().await;
            }
            if let Some(agent) = &agent {
                match agent.remove_volume(&name).await {
                    Ok(()) => {}
                    Err(e) if e.status().map(|s| s.code()) == Some(tonic::Code::NotFound) => {}
                    Err(e) => {
                        tracing::warn!(volume = %name, error = %e, "guest volume not removed")
                    }
                }
            }
        }
    }

    /// Forgets a removed pod (its containers are gone: nothing of its
    /// volumes is left to release).
    pub fn forget_pod(&self, pod: &Id) {
        self.pods.lock().expect("volumes lock").remove(pod);
    }

    /// Stops the watchers of a pod whose guest is gone.
    pub async fn stop_pod(&self, pod: &Id) {
        let Some(vols) = self.pods.lock().expect("volumes lock").get(pod).cloned() else {
            return;
        };
        let mut vols = vols.lock().await;
        for s in vols.values_mut() {
            if let Some(w) = s.watcher.take() {
                w.stop().await;
            }
        }
    }

    /// After a restart: counts the users of each volume again and restarts
    /// the watchers of synced volumes (each re-syncs once first: the host
    /// may have changed meanwhile). Needs a tokio runtime for watchers.
    pub fn recover(&self, sandboxes: &Arc<SandboxManager>, records: &[ContainerRecord]) {
        let can_spawn = tokio::runtime::Handle::try_current().is_ok();
        for r in records {
            let pod = self.pod(&r.sandbox_id);
            let Ok(mut vols) = pod.try_lock() else {
                continue;
            };
            for v in &r.volumes {
                let s = vols.entry(v.volume.clone()).or_insert_with(|| Shared {
                    users: BTreeSet::new(),
                    watcher: None,
                });
                s.users.insert(r.id.clone());
                if s.watcher.is_none() && v.kind == VolumeKind::Synced && can_spawn {
                    s.watcher = Some(spawn_watcher(
                        sandboxes.clone(),
                        r.sandbox_id.clone(),
                        v.clone(),
                        self.policy.max_volume_bytes,
                        true,
                    ));
                }
            }
        }
    }

    /// Copies the record's termination messages back to the host files
    /// the kubelet made (at most [`TERMINATION_LOG_MAX`] bytes, the
    /// head). Never creates a host file; errors are logged.
    pub async fn copy_back(&self, agent: &AgentClient, record: &ContainerRecord) {
        for v in record
            .volumes
            .iter()
            .filter(|v| v.kind == VolumeKind::TerminationLog)
        {
            let r = agent
                .read_volume_file(proto::ReadVolumeFileRequest {
                    name: v.volume.clone(),
                    path: FILE_ENTRY.into(),
                    max_bytes: TERMINATION_LOG_MAX,
                })
                .await;
            let mut r = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "termination message not read from the guest");
                    continue;
                }
            };
            // The guest is not trusted to honour max_bytes.
            r.truncated |= r.data.len() > TERMINATION_LOG_MAX as usize;
            r.data.truncate(TERMINATION_LOG_MAX as usize);
            if r.truncated {
                tracing::info!(
                    "termination message longer than {TERMINATION_LOG_MAX} bytes: its head is kept"
                );
            }
            let path = v.host_path.clone();
            let wrote = tokio::task::spawn_blocking(move || write_existing(&path, &r.data)).await;
            if let Ok(Err(e)) | Err(e) = wrote.map_err(std::io::Error::other) {
                tracing::warn!(path = %v.host_path.display(), error = %e, "termination message not copied back");
            }
        }
    }
}

/// Overwrites an existing host file (never creating one, never through a
/// symlink).
fn write_existing(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(data)
}

/// Walks the host copy and sends it.
async fn sync_once(agent: &AgentClient, v: &VolumeMount, max: u64) -> Result<(), RuntimeError> {
    let host = v.host_path.clone();
    let tree = tokio::task::spawn_blocking(move || walk(&host, max))
        .await
        .map_err(|e| RuntimeError::FailedPrecondition(format!("volume walk failed: {e}")))?
        .map_err(|e| walk_refusal(v, e))?;
    agent
        .sync_volume(proto::SyncVolumeRequest {
            name: v.volume.clone(),
            entries: tree.entries,
            root_mode: tree.root_mode,
        })
        .await
        .map_err(|e| agent_failure(&format!("volume at {}", v.container_path), e))
}

fn spawn_watcher(
    sandboxes: Arc<SandboxManager>,
    pod: Id,
    v: VolumeMount,
    max: u64,
    resync_first: bool,
) -> Watcher {
    let (cancel, rx) = watch::channel(false);
    let span = tracing::info_span!("volume_watch", pod_id = %pod.short(), volume = %v.volume);
    let task = tokio::spawn(
        async move {
            if let Err(e) = watch_volume(&sandboxes, &pod, &v, max, resync_first, rx).await {
                tracing::warn!(path = %v.host_path.display(), error = %e, "volume no longer watched; the guest keeps its last copy");
            }
        }
        .instrument(span),
    );
    Watcher { cancel, task }
}

/// An inotify instance as tokio's `AsyncFd` takes it.
struct Notify(nix::sys::inotify::Inotify);

impl AsRawFd for Notify {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches the host directory (its top level: the kubelet's atomic writer
/// changes `..data` and the timestamped directories there) and re-syncs
/// [`DEBOUNCE`] after the last change. Ends when cancelled or when the
/// directory goes away.
async fn watch_volume(
    sandboxes: &Arc<SandboxManager>,
    pod: &Id,
    v: &VolumeMount,
    max: u64,
    resync_first: bool,
    mut cancel: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    ino.add_watch(
        &v.host_path,
        F::IN_CREATE
            | F::IN_DELETE
            | F::IN_MOVED_TO
            | F::IN_MOVED_FROM
            | F::IN_CLOSE_WRITE
            | F::IN_ATTRIB
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_ONLYDIR
            | F::IN_DONT_FOLLOW,
    )?;
    // SAFETY: the AsyncFd owns the inotify fd, so it stays open while
    // registered.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(Notify(ino)) }?;
    let mut dirty = resync_first;
    loop {
        if dirty {
            // Let the kubelet finish its swap; absorb its other events.
            tokio::select! {
                _ = cancel.wait_for(|c| *c) => return Ok(()),
                _ = tokio::time::sleep(DEBOUNCE) => {}
            }
            if drain(&fd)?.0 {
                return Err(gone(v));
            }
            match sandboxes.agent(pod).await {
                Ok(agent) => match sync_once(&agent, v, max).await {
                    Ok(()) => tracing::debug!("volume re-synced"),
                    Err(e) => tracing::warn!(error = %e, "volume not re-synced"),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "pod agent unreachable; volume not re-synced")
                }
            }
        }
        tokio::select! {
            _ = cancel.wait_for(|c| *c) => return Ok(()),
            ready = fd.readable() => {
                let mut guard = ready?;
                guard.clear_ready();
                let (gone_now, events) = drain(&fd)?;
                if gone_now {
                    return Err(gone(v));
                }
                // Readiness left from events the debounce already read
                // brings no new ones: no second sync for them.
                dirty = events > 0;
            }
        }
    }
}

fn gone(v: &VolumeMount) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{} was removed on the host", v.host_path.display()),
    )
}

/// Reads the pending events: (the watched directory is gone, how many
/// events were read).
fn drain(fd: &tokio::io::unix::AsyncFd<Notify>) -> std::io::Result<(bool, usize)> {
    use nix::sys::inotify::AddWatchFlags as F;
    let (mut gone, mut count) = (false, 0);
    loop {
        match fd.get_ref().0.read_events() {
            Ok(events) => {
                count += events.len();
                gone |= events.iter().any(|e| {
                    e.mask
                        .intersects(F::IN_DELETE_SELF | F::IN_MOVE_SELF | F::IN_IGNORED)
                });
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok((gone, count)),
            Err(e) => return Err(e.into()),
        }
    }
}
