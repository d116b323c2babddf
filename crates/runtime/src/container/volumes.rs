//! The kubelet's volumes, carried into the guest (which shares no
//! filesystem with the host).
//!
//! A CRI mount's `host_path` is classified by where it lies under the
//! kubelet's root directory ([`classify`], pure):
//! - `pods/<uid>/volumes/kubernetes.io~{secret,configmap,projected,downward-api}/<name>`:
//!   [`VolumeKind::Synced`]: copied in (modes and ownership as the kubelet
//!   set them), then watched with inotify and re-synced on change;
//! - `pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`:
//!   [`VolumeKind::EmptyDir`]: a guest directory on the scratch disk, or a
//!   tmpfs when the kubelet's directory is one (medium Memory);
//! - `pods/<uid>/etc-hosts`, `pods/<uid>/volume-subpaths/...`, and paths
//!   under an allow-listed prefix: [`VolumeKind::Once`], copied in once;
//! - `pods/<uid>/containers/<name>/<id>`: [`VolumeKind::TerminationLog`],
//!   copied in, and copied back out when the container exits;
//! - anything else: refused (FailedPrecondition naming the path).
//!
//! Guest volume names are a kind prefix plus a hash of the host path, so
//! the pod's containers that mount one host directory share one guest
//! volume, and a restarted hearthd finds the same names. [`VolumeSet`]
//! counts the containers that use each guest volume, runs one watcher task
//! per synced volume, and removes the guest volume with its last user.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use hearth_agent_proto::v1 as proto;
use proto::file_entry::Kind;
use serde::{Deserialize, Serialize};

use super::MountConfig;
use crate::error::RuntimeError;

/// Largest tree one `SyncVolume` may carry: the agent protocol's message
/// limit less room for the message's own bytes.
pub const MAX_VOLUME_BYTES: u64 = hearth_agent_proto::MAX_MESSAGE_BYTES as u64 - (256 << 10);
/// Most entries in one volume.
const MAX_ENTRIES: usize = 10_000;
/// How long the watcher waits for the kubelet to finish an update before
/// it re-syncs.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// The entry a single-file volume holds.
pub const FILE_ENTRY: &str = "file";
/// Most bytes of a termination message copied back to the host.
pub const TERMINATION_LOG_MAX: u32 = 1 << 20;

/// `[volumes]` of the config: where the kubelet keeps pod volumes and
/// which host paths may be copied in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumePolicy {
    /// The kubelet's `--root-dir`.
    pub kubelet_root_dir: PathBuf,
    /// hostPath prefixes that may be copied into pods (read-only, once).
    pub host_path_allow_list: Vec<PathBuf>,
    /// Most bytes copied into one volume (at most [`MAX_VOLUME_BYTES`]).
    pub max_volume_bytes: u64,
}

impl Default for VolumePolicy {
    fn default() -> Self {
        VolumePolicy {
            kubelet_root_dir: "/var/lib/kubelet".into(),
            host_path_allow_list: Vec::new(),
            max_volume_bytes: 3 << 20,
        }
    }
}

impl VolumePolicy {
    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !clean_absolute(&self.kubelet_root_dir) {
            return Err("volumes.kubelet_root_dir must be an absolute path without '..'".into());
        }
        for p in &self.host_path_allow_list {
            if !clean_absolute(p) || p == Path::new("/") {
                return Err(format!(
                    "volumes.host_path_allow_list: {} must be an absolute path without '..', not /",
                    p.display()
                ));
            }
        }
        if self.max_volume_bytes == 0 || self.max_volume_bytes > MAX_VOLUME_BYTES {
            return Err(format!(
                "volumes.max_volume_bytes must be between 1 and {MAX_VOLUME_BYTES} (one agent message)"
            ));
        }
        Ok(())
    }
}

fn clean_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir))
}

/// How a guest volume is made and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeKind {
    /// Copied in and re-synced when the host copy changes.
    Synced,
    /// A guest-local directory (scratch) or tmpfs.
    EmptyDir,
    /// Copied in once.
    Once,
    /// Copied in; copied back to the host when the container exits.
    TerminationLog,
}

/// One CRI mount as the guest does it (persisted in the container record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The guest volume.
    pub volume: String,
    /// Its kind.
    pub kind: VolumeKind,
    /// The kubelet's path.
    pub host_path: PathBuf,
    /// The path inside the guest volume (empty: all of it).
    pub sub_path: String,
    /// Where the container sees it.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// EmptyDir medium Memory: a tmpfs of this size (0: the default).
    #[serde(default)]
    pub tmpfs_size_bytes: u64,
    /// EmptyDir medium Memory.
    #[serde(default)]
    pub memory: bool,
}

fn refuse(m: &MountConfig, why: &str) -> RuntimeError {
    RuntimeError::FailedPrecondition(format!(
        "mount of {} at {}: {why}",
        m.host_path.display(),
        m.container_path
    ))
}

/// FNV-1a: stable across builds and restarts (a name must not change).
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The guest volume name of a host path: a kind prefix and a hash.
pub fn volume_name(kind: VolumeKind, host_path: &Path) -> String {
    let prefix = match kind {
        VolumeKind::Synced => "kv",
        VolumeKind::EmptyDir => "ed",
        VolumeKind::Once => "cp",
        VolumeKind::TerminationLog => "tl",
    };
    format!("{prefix}-{:016x}", fnv64(host_path.as_os_str().as_bytes()))
}

/// Classifies a mount by its host path (no filesystem access): the
/// kind, or why it is refused. `pod_uid` is the pod's; another pod's
/// volumes are refused.
pub fn classify(
    policy: &VolumePolicy,
    pod_uid: &str,
    m: &MountConfig,
) -> Result<VolumeKind, RuntimeError> {
    let p = &m.host_path;
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(RuntimeError::InvalidArgument(format!(
            "mounts: host_path {:?} must be an absolute path without '..'",
            p.display().to_string()
        )));
    }
    if !m.container_path.starts_with('/') {
        return Err(RuntimeError::InvalidArgument(format!(
            "mounts: container_path {:?} must be an absolute path",
            m.container_path
        )));
    }
    if let Ok(rel) = p.strip_prefix(&policy.kubelet_root_dir) {
        let c: Vec<&str> = rel
            .components()
            .map(|c| c.as_os_str().to_str().unwrap_or("\u{fffd}"))
            .collect();
        let kind = match c.as_slice() {
            ["pods", uid, "volumes", plugin, _name] if *uid == pod_uid => match *plugin {
                "kubernetes.io~secret"
                | "kubernetes.io~configmap"
                | "kubernetes.io~projected"
                | "kubernetes.io~downward-api" => Some(VolumeKind::Synced),
                "kubernetes.io~empty-dir" => Some(VolumeKind::EmptyDir),
                _ => None,
            },
            ["pods", uid, "etc-hosts"] if *uid == pod_uid => Some(VolumeKind::Once),
            ["pods", uid, "containers", _ctr, _id] if *uid == pod_uid => {
                Some(VolumeKind::TerminationLog)
            }
            ["pods", uid, "volume-subpaths", vol, _ctr, _n] if *uid == pod_uid => {
                // The kubelet binds the volume's subpath here for every
                // kind of volume: only those that may be copied may pass.
                subpath_volume(policy, pod_uid, vol).map_err(|why| refuse(m, &why))?;
                Some(VolumeKind::Once)
            }
            ["pods", uid, ..] if *uid != pod_uid => {
                return Err(refuse(
                    m,
                    &format!("it belongs to another pod than {pod_uid}"),
                ))
            }
            _ => None,
        };
        if let Some(kind) = kind {
            return Ok(kind);
        }
    }
    // Compared as resolved paths: a link under an allowed prefix must not
    // reach outside it.
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let resolved = real(p);
    if policy
        .host_path_allow_list
        .iter()
        .any(|prefix| resolved.starts_with(real(prefix)))
    {
        return Ok(VolumeKind::Once);
    }
    Err(refuse(
        m,
        &format!(
            "hostPath and other host directories cannot reach a hearth pod (its guest shares no \
             filesystem with the node); only the kubelet's secret, configMap, projected, \
             downwardAPI and emptyDir volumes under {}/pods/<uid>/volumes are supported. To copy \
             it in read-only, add its prefix to [volumes] host_path_allow_list",
            policy.kubelet_root_dir.display()
        ),
    ))
}

/// The volume `vol` of pod `uid` that a subPath mount comes from must be
/// one Hearth copies (secret, configMap, projected, downwardAPI). A
/// subPath of an emptyDir would be a private copy instead of the shared
/// directory, and any other volume (hostPath, PVCs) cannot reach the guest.
fn subpath_volume(policy: &VolumePolicy, uid: &str, vol: &str) -> Result<(), String> {
    let volumes = policy
        .kubelet_root_dir
        .join("pods")
        .join(uid)
        .join("volumes");
    let copied = [
        "kubernetes.io~secret",
        "kubernetes.io~configmap",
        "kubernetes.io~projected",
        "kubernetes.io~downward-api",
    ];
    if copied
        .iter()
        .any(|plugin| volumes.join(plugin).join(vol).is_dir())
    {
        return Ok(());
    }
    if volumes.join("kubernetes.io~empty-dir").join(vol).is_dir() {
        return Err(format!(
            "a subPath of the emptyDir {vol} is not supported yet (the container would get a \
             private copy, not the pod's shared directory)"
        ));
    }
    Err(format!(
        "its volume {vol} is not a secret, configMap, projected or downwardAPI volume of the pod; \
         hostPath and other volumes cannot reach a hearth pod through a subPath either"
    ))
}

/// Classifies and checks the pod's mounts against the host: what each
/// becomes in the guest. Blocking (stat calls).
pub fn plan(
    policy: &VolumePolicy,
    pod_uid: &str,
    mounts: &[MountConfig],
) -> Result<Vec<VolumeMount>, RuntimeError> {
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let kind = classify(policy, pod_uid, m)?;
        let meta = std::fs::metadata(&m.host_path).map_err(|e| {
            refuse(
                m,
                &format!("the host path cannot be read ({e}); the kubelet creates it first"),
            )
        })?;
        let (mut tmpfs_size_bytes, mut memory) = (0, false);
        let sub_path = if meta.is_file() {
            FILE_ENTRY.to_owned()
        } else if meta.is_dir() {
            String::new()
        } else {
            return Err(refuse(m, "it is neither a file nor a directory"));
        };
        let read_only = match kind {
            VolumeKind::EmptyDir => {
                if !meta.is_dir() {
                    return Err(refuse(m, "an emptyDir must be a directory"));
                }
                if let Some(size) = host_tmpfs_size(&m.host_path) {
                    (tmpfs_size_bytes, memory) = (size, true);
                }
                m.read_only
            }
            VolumeKind::TerminationLog if !meta.is_file() => {
                return Err(refuse(m, "a termination-message path must be a file"))
            }
            VolumeKind::Once if !m.host_path.starts_with(&policy.kubelet_root_dir) => {
                if !m.read_only {
                    tracing::debug!(path = %m.host_path.display(), "allow-listed hostPath copied in read-only");
                }
                true
            }
            _ => m.read_only,
        };
        out.push(VolumeMount {
            volume: volume_name(kind, &m.host_path),
            kind,
            host_path: m.host_path.clone(),
            sub_path,
            container_path: m.container_path.clone(),
            read_only,
            tmpfs_size_bytes,
            memory,
        });
    }
    Ok(out)
}

/// The mounts as the agent's CreateContainer takes them.
pub fn container_mounts(plan: &[VolumeMount]) -> Vec<proto::ContainerMount> {
    plan.iter()
        .map(|v| proto::ContainerMount {
            volume: v.volume.clone(),
            sub_path: v.sub_path.clone(),
            container_path: v.container_path.clone(),
            read_only: v.read_only,
        })
        .collect()
}

/// When `dir` is a tmpfs mounted right there (the kubelet's medium
/// Memory emptyDir): its size in bytes (0 when unlimited or unknown).
pub fn host_tmpfs_size(dir: &Path) -> Option<u64> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    let real = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    tmpfs_size_in_mountinfo(&info, &real)
}

/// The `size=` of the last tmpfs mounted at `mountpoint` in a mountinfo
/// text; `None` when no tmpfs is mounted exactly there.
pub fn tmpfs_size_in_mountinfo(info: &str, mountpoint: &Path) -> Option<u64> {
    let mut found = None;
    for line in info.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let Some(mp) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("tmpfs") || Path::new(&unescape(mp)) != mountpoint {
            continue;
        }
        let opts = r.nth(1).unwrap_or("");
        let size = opts
            .split(',')
            .find_map(|o| o.strip_prefix("size="))
            .and_then(parse_size)
            .unwrap_or(0);
        found = Some(size);
    }
    found
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Errors of walking a host tree.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A filesystem call failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tree is larger than allowed.
    #[error("{path} holds more than {max} bytes (or {MAX_ENTRIES} entries); it cannot be copied into the guest")]
    TooLarge {
        /// The volume.
        path: PathBuf,
        /// The bound.
        max: u64,
    },
    /// A name that is not UTF-8.
    #[error("{0} has a name that is not UTF-8")]
    BadName(PathBuf),
    /// Deeper than the agent takes.
    #[error("{0} is nested more than {MAX_DEPTH} directories deep")]
    TooDeep(PathBuf),
}

/// Deepest directory nesting copied (the agent's bound too).
const MAX_DEPTH: usize = 32;

/// Maps an i/o error on `p` to a [`WalkError`].
fn walk_io(p: &Path) -> impl FnOnce(std::io::Error) -> WalkError {
    let path = p.to_owned();
    move |source| WalkError::Io { path, source }
}

/// A host tree as `SyncVolume` sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Parents before children, names sorted.
    pub entries: Vec<proto::FileEntry>,
    /// The root's permission bits.
    pub root_mode: u32,
}

/// Reads the host tree at `path` (a directory, or one file that becomes
/// [`FILE_ENTRY`]), without following symlinks below it: they are sent as
/// symlinks. Sockets, FIFOs and devices are skipped. Retries when the
/// kubelet swaps `..data` during the walk. Blocking.
pub fn walk(path: &Path, max_bytes: u64) -> Result<Tree, WalkError> {
    let mut tries = 0;
    loop {
        let result = walk_once(path, max_bytes);
        let retry = match &result {
            Err(WalkError::Io { source, .. }) => source.kind() == std::io::ErrorKind::NotFound,
            Ok(tree) => !links_resolve(tree),
            Err(_) => false,
        };
        tries += 1;
        if !retry || tries >= 5 {
            // A tree with a dangling link is still what the host has.
            return result;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn walk_once(path: &Path, max_bytes: u64) -> Result<Tree, WalkError> {
    // The root may be a link (an allow-listed path); below it nothing is
    // followed.
    let real = std::fs::canonicalize(path).map_err(walk_io(path))?;
    let meta = std::fs::metadata(&real).map_err(walk_io(path))?;
    let mut budget = Budget {
        left: max_bytes,
        path,
        max: max_bytes,
    };
    if meta.is_file() {
        let data = read_capped(&real, path, &mut budget)?;
        return Ok(Tree {
            entries: vec![proto::FileEntry {
                path: FILE_ENTRY.into(),
                kind: Some(Kind::File(data)),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            }],
            root_mode: 0o755,
        });
    }
    let mut tree = Tree {
        entries: Vec::new(),
        root_mode: meta.mode() & 0o7777,
    };
    let root = open_dir(&real, path)?;
    walk_dir(&fd_path(&root), path, "", &mut tree.entries, &mut budget)?;
    Ok(tree)
}

/// Opens a directory without following a link at its last component.
fn open_dir(p: &Path, shown: &Path) -> Result<std::fs::File, WalkError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(p)
        .map_err(walk_io(shown))
}

/// The path that names an open directory itself: lookups below it cannot
/// be redirected by a link swapped in above it.
fn fd_path(dir: &std::fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

struct Budget<'a> {
    left: u64,
    path: &'a Path,
    max: u64,
}

impl Budget<'_> {
    fn take(&mut self, n: u64) -> Result<(), WalkError> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| WalkError::TooLarge {
                path: self.path.to_owned(),
                max: self.max,
            })?;
        Ok(())
    }
}

/// Walks the open directory `dir` (`shown` in messages), whose entries
/// are named `prefix/<name>` in the tree.
fn walk_dir(
    dir: &Path,
    shown: &Path,
    prefix: &str,
    out: &mut Vec<proto::FileEntry>,
    budget: &mut Budget,
) -> Result<(), WalkError> {
    if !prefix.is_empty() && prefix.split('/').count() >= MAX_DEPTH {
        return Err(WalkError::TooDeep(shown.to_owned()));
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(walk_io(shown))? {
        names.push(e.map_err(walk_io(shown))?.file_name());
        if out.len() + names.len() > MAX_ENTRIES {
            return Err(WalkError::TooLarge {
                path: budget.path.to_owned(),
                max: budget.max,
            });
        }
    }
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let p_shown = shown.join(&name);
        let name = name
            .to_str()
            .ok_or_else(|| WalkError::BadName(p_shown.clone()))?;
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&p).map_err(walk_io(&p_shown))?;
        if out.len() >= MAX_ENTRIES {
            return Err(WalkError::TooLarge {
                path: budget.path.to_owned(),
                max: budget.max,
            });
        }
        // Every entry costs its path and some framing.
        budget.take(rel.len() as u64 + 32)?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Directory(true)
        } else if ft.is_file() {
            Kind::File(read_capped(&p, &p_shown, budget)?)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p).map_err(walk_io(&p_shown))?;
            let target = target
                .to_str()
                .ok_or_else(|| WalkError::BadName(p_shown.clone()))?
                .to_owned();
            budget.take(target.len() as u64)?;
            Kind::Symlink(target)
        } else {
            tracing::debug!(path = %p_shown.display(), "not copied into the guest: not a file, directory or symlink");
            continue;
        };
        out.push(proto::FileEntry {
            path: rel.clone(),
            kind: Some(kind),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if ft.is_dir() {
            let sub = open_dir(&p, &p_shown)?;
            walk_dir(&fd_path(&sub), &p_shown, &rel, out, budget)?;
        }
    }
    Ok(())
}

/// Reads a regular file without following a symlink, within the budget;
/// what was opened must still be a regular file (not swapped for a
/// device or FIFO since it was looked at).
fn read_capped(p: &Path, shown: &Path, budget: &mut Budget) -> Result<Vec<u8>, WalkError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .map_err(walk_io(shown))?;
    if !f.metadata().map_err(walk_io(shown))?.is_file() {
        return Err(WalkError::Io {
            path: shown.to_owned(),
            source: std::io::Error::other("no longer a regular file"),
        });
    }
    let mut data = Vec::new();
    f.take(budget.left.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(walk_io(shown))?;
    budget.take(data.len() as u64)?;
    Ok(data)
}

/// Whether each relative symlink that points inside the tree finds its
/// target (false: the walk raced the kubelet's swap).
fn links_resolve(tree: &Tree) -> bool {
    let have: BTreeSet<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
    tree.entries.iter().all(|e| {
        let Some(Kind::Symlink(target)) = &e.kind else {
            return true;
        };
        if target.starts_with('/') || target.split('/').any(|c| c == "..") {
            return true;
        }
        let parent = Path::new(&e.path).parent().unwrap_or(Path::new(""));
        let first = parent.join(target.split('/').next().unwrap_or(""));
        have.contains(first.to_str().unwrap_or(""))
    })
}

/// What a host failure of a volume means for CreateContainer.
pub(super) fn walk_refusal(v: &VolumeMount, e: WalkError) -> RuntimeError {
    let chain = match &e {
        WalkError::Io { source, .. } => format!("{e}: {source}"),
        _ => e.to_string(),
    };
    RuntimeError::FailedPrecondition(format!(
        "volume at {} cannot be copied into the guest: {chain}",
        v.container_path
    ))
}

mod set;

pub use set::VolumeSet;

#[cfg(test)]
mod tests;
