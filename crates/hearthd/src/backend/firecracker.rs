//! The `firecracker` backend: one Firecracker microVM per pod, started
//! through the jailer (per-VM chroot, uid/gid, netns, cgroup, seccomp
//! filter) or directly (`use_jailer = false`, development).
//!
//! Layout:
//! - this file: the handle, the backend and its `SandboxBackend` methods.
//! - `config`: `[firecracker]` and the placeholder-pool pod annotation.
//! - `check`: whether it can run here (binary, version, static, seccomp
//!   filter, guest bundle, /dev/kvm, PVM detection: see its docs).
//! - `boot`: placeholders, spawn, API configuration up to InstanceStart,
//!   and the undo of a failed boot; per-phase timings in the log.
//! - `drives`: attach (PATCH a slot to a file) and detach.
//! - `teardown`: Ctrl-Alt-Del then SIGKILL; adopting the VMs of a previous
//!   hearthd (re-opening their log and metrics FIFOs).
//! - `host`: host-side work that must also run from the persisted handle
//!   alone (uid choice, jail links, unmounts, cgroups, checked kill).
//!
//! Network: a pod with a network gets the tap `tap0` in its netns, owned
//! by the VM's uid and gid (see [`GuestNic`](super::GuestNic)), as
//! `PUT /network-interfaces/eth0` with the CNI interface's MAC before
//! InstanceStart; `stop` and `destroy` remove it.
//!
//! VMs outlive hearthd: the handle (pid + start time, uid, jail, sockets,
//! cgroup, slots) is all a restarted hearthd needs to watch, stop and
//! destroy them.
//!
//! Drives: Firecracker cannot hot-plug, so a VM boots with a fixed set of
//! drive slots, PUT in this order, which the guest sees as `/dev/vda`,
//! `/dev/vdb`, ... in the same order:
//! 1. `scratch` (read-write): a placeholder at boot, PATCHed to the pod's
//!    scratch disk by `attach_drive("scratch")` after InstanceStart;
//! 2. `ph_rw_0` .. `ph_rw_{n-1}` (read-write placeholders);
//! 3. `ph_ro_0` .. `ph_ro_{m-1}` (read-only placeholders, for images).
//!
//! `attach_drive` hard-links the file into the jail (or bind-mounts it
//! across filesystems), PATCHes a free slot of the right kind to it, and
//! returns `DeviceLocator::Path("/dev/vdX")` by slot position;
//! `detach_drive` PATCHes the slot back to its placeholder.

mod boot;
mod check;
mod config;
mod drives;
mod host;
mod teardown;

pub use config::{placeholder_pools, FirecrackerConfig, BASE_CMDLINE, PLACEHOLDER_ANNOTATION};
use config::{MAX_SLOTS, PLACEHOLDER_BYTES};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hearth_firecracker::client::error_chain;
use hearth_firecracker::{
    ActionType, BootSource, Drive as FcDrive, EntropyDevice, FifoKind, FirecrackerClient,
    FirecrackerError, JailerSpawn, LogLevel, Logger, MachineConfig, Metrics, NetworkInterface,
    PartialDrive, VmmProcess, VmmSpawn, Vsock,
};
use hearth_network::TapOwner;
use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::{
    BackendError, BackendHandle, BootSpec, DeviceLocator, Drive, Liveness, SandboxBackend,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::process;
use super::{connect_agent_until, GuestNic, GuestState};

const KIND: &str = "firecracker";

/// The firecracker backends this hearthd runs, from the config.
pub fn backends(config: &crate::config::Config) -> Vec<Arc<dyn SandboxBackend>> {
    vec![Arc::new(FirecrackerBackend::new(config))]
}

/// One drive slot of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Slot {
    /// Firecracker drive id.
    id: String,
    read_only: bool,
    /// The placeholder's path as the API knows it.
    placeholder: String,
    /// The attached drive: (Hearth drive id, path as the API knows it).
    attached: Option<(String, String)>,
}

/// What is persisted per sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Handle {
    vm_id: String,
    pid: u32,
    started: u64,
    uid: u32,
    gid: u32,
    /// The jailer's instance dir (`<chroot_base>/firecracker/<id>`), when jailed.
    instance_dir: Option<PathBuf>,
    /// Where API paths resolve on the host: the jail root, or `/`.
    root: PathBuf,
    api_socket: PathBuf,
    /// Host path of the vsock unix socket.
    vsock: PathBuf,
    /// `(parent, id)` of the per-VM cgroup the jailer made.
    cgroup: Option<(String, String)>,
    /// Host directory of the placeholder files.
    placeholders: PathBuf,
    slots: Vec<Slot>,
    /// The network card's tap (pods with a network), owned by `uid`.
    #[serde(default)]
    nic: Option<GuestNic>,
}

impl Handle {
    fn from(h: &BackendHandle) -> Result<Handle, BackendError> {
        h.decode()
    }

    fn to_handle(&self) -> BackendHandle {
        BackendHandle::encode(self)
    }

    fn alive(&self) -> bool {
        process::alive(self.pid, self.started)
    }

    fn jailed(&self) -> bool {
        self.instance_dir.is_some()
    }

    fn client(&self) -> FirecrackerClient {
        FirecrackerClient::new(&self.api_socket)
    }
}

/// Facts about a booted VM, for tests and `hearthctl`.
#[derive(Debug, Clone)]
pub struct VmInfo {
    /// The Firecracker process.
    pub pid: u32,
    /// Host path of the API socket.
    pub api_socket: PathBuf,
    /// Host path of the vsock unix socket.
    pub vsock: PathBuf,
    /// The jailer's instance dir, when jailed.
    pub instance_dir: Option<PathBuf>,
    /// The uid the VMM runs as.
    pub uid: u32,
    /// The network card's tap in the pod's netns, and the guest's MAC.
    pub nic: Option<(String, String)>,
}

/// Describes the VM of a handle this backend returned.
pub fn vm_info(handle: &BackendHandle) -> Result<VmInfo, BackendError> {
    let h = Handle::from(handle)?;
    Ok(VmInfo {
        pid: h.pid,
        api_socket: h.api_socket,
        vsock: h.vsock,
        instance_dir: h.instance_dir,
        uid: h.uid,
        nic: h.nic.map(|n| (n.tap.tap_name, n.mac)),
    })
}

/// What `check` resolved.
struct Resolved {
    firecracker: PathBuf,
    jailer: Option<PathBuf>,
}

/// The backend.
pub struct FirecrackerBackend {
    cfg: FirecrackerConfig,
    chroot_base: PathBuf,
    kernel: PathBuf,
    initramfs: PathBuf,
    versions: check::VersionCache,
    /// The VMMs this hearthd spawned (owning their FIFO drains).
    vms: Mutex<HashMap<String, VmmProcess>>,
    /// uids of VMs being booted or running.
    uids: Mutex<HashSet<u32>>,
    /// Log and metrics drains re-opened for VMs a previous hearthd started.
    adopted: Mutex<HashMap<String, Vec<tokio::task::JoinHandle<()>>>>,
}

impl FirecrackerBackend {
    /// A backend from the daemon's config (relative defaults resolved
    /// against `root` and `state`).
    pub fn new(config: &crate::config::Config) -> FirecrackerBackend {
        let cfg = config.firecracker.clone();
        let or = |p: &Path, d: PathBuf| {
            if p.as_os_str().is_empty() {
                d
            } else {
                p.to_owned()
            }
        };
        let chroot_base = or(&cfg.chroot_base, config.state.join("jail"));
        let guest = guest_dir(config);
        FirecrackerBackend {
            chroot_base,
            kernel: guest.join("vmlinux"),
            initramfs: guest.join("initramfs.cpio"),
            cfg,
            versions: Default::default(),
            vms: Mutex::new(HashMap::new()),
            uids: Mutex::new(HashSet::new()),
            adopted: Mutex::new(HashMap::new()),
        }
    }

    fn check_reason(&self) -> Result<Resolved, String> {
        let cfg = &self.cfg;
        let firecracker = check::resolve_program(&cfg.binary).ok_or_else(|| {
            format!(
                "firecracker binary {:?} not found: install Firecracker >= 1.8 (a static release build) and set firecracker.binary",
                cfg.binary
            )
        })?;
        self.versions.check(&firecracker)?;
        let jailer = if cfg.use_jailer {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("the jailer needs root: run hearthd as root (or set firecracker.use_jailer = false for development)".into());
            }
            let jailer = check::resolve_program(&cfg.jailer).ok_or_else(|| {
                format!(
                    "jailer binary {:?} not found: install the jailer of the same Firecracker release and set firecracker.jailer",
                    cfg.jailer
                )
            })?;
            hearth_firecracker::check_static(&firecracker).map_err(|e| {
                format!(
                    "{}: use a static Firecracker release build (or set firecracker.use_jailer = false for development)",
                    error_chain(&e)
                )
            })?;
            if cfg.seccomp_filter.as_os_str().is_empty() {
                return Err("firecracker.seccomp_filter is not set: the jailer path always passes --seccomp-filter (never --no-seccomp); compile a filter with seccompiler-bin and set it".into());
            }
            if !cfg.seccomp_filter.is_file() {
                return Err(format!(
                    "seccomp filter {} not found (firecracker.seccomp_filter)",
                    cfg.seccomp_filter.display()
                ));
            }
            Some(jailer)
        } else {
            None
        };
        for (what, p) in [
            ("guest kernel", &self.kernel),
            ("guest initramfs", &self.initramfs),
        ] {
            if !p.is_file() {
                return Err(format!(
                    "{what} {} not found: run `hearthctl guest build` (or set firecracker.guest_dir)",
                    p.display()
                ));
            }
        }
        if 1 + cfg.placeholders_ro + cfg.placeholders_rw > MAX_SLOTS {
            return Err(format!(
                "firecracker.placeholders_ro + placeholders_rw must be at most {}",
                MAX_SLOTS - 1
            ));
        }
        check::kvm_usable()?;
        if !cfg.allow_pvm {
            if let Some(evidence) = pvm() {
                return Err(check::pvm_message(evidence));
            }
        }
        Ok(Resolved {
            firecracker,
            jailer,
        })
    }

    fn reserve_uid(&self) -> Result<u32, BackendError> {
        let mut uids = self.uids.lock().expect("uids lock");
        let uid = super::pick_uid(self.cfg.vm_uid_start, self.cfg.vm_uid_count, &uids).ok_or_else(
            || BackendError::Unavailable {
                backend: KIND,
                reason: format!(
                    "every uid of firecracker.vm_uid_start {} + vm_uid_count {} is in use",
                    self.cfg.vm_uid_start, self.cfg.vm_uid_count
                ),
            },
        )?;
        uids.insert(uid);
        Ok(uid)
    }

    fn release_uid(&self, uid: u32) {
        self.uids.lock().expect("uids lock").remove(&uid);
    }

    fn last_output(&self, vm_id: &str) -> String {
        let mut vms = self.vms.lock().expect("vms lock");
        match vms.get_mut(vm_id) {
            Some(vm) => {
                let status = match vm.try_exit() {
                    Ok(Some(s)) => format!("{s}; "),
                    _ => String::new(),
                };
                let out = vm.last_output();
                format!(
                    "{status}last output: {}",
                    if out.is_empty() { "(none)" } else { &out }
                )
            }
            None => "not started by this hearthd".into(),
        }
    }
}

/// Why this host's `/dev/kvm` is paravirtual (PVM), if it is: the signal
/// the backend's check uses (see the `check` module docs).
pub fn pvm_evidence() -> Option<String> {
    check::pvm_evidence()
}

/// The guest bundle files the backend boots: (vmlinux, initramfs).
pub fn guest_files(config: &crate::config::Config) -> (PathBuf, PathBuf) {
    let dir = guest_dir(config);
    (dir.join("vmlinux"), dir.join("initramfs.cpio"))
}

/// `firecracker.guest_dir`, or `<root>/guest` when empty.
pub fn guest_dir(config: &crate::config::Config) -> PathBuf {
    match config.firecracker.guest_dir.as_os_str().is_empty() {
        true => config.root.join("guest"),
        false => config.firecracker.guest_dir.clone(),
    }
}

/// The PVM evidence, computed once per process.
fn pvm() -> Option<&'static str> {
    static PVM: OnceLock<Option<String>> = OnceLock::new();
    PVM.get_or_init(check::pvm_evidence).as_deref()
}

fn slot_letter(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    format!("/dev/vd{}", char::from(letters[i % letters.len()]))
}

fn blocking_err(e: tokio::task::JoinError) -> BackendError {
    BackendError::Handle(format!("blocking task failed: {e}"))
}

#[async_trait::async_trait]
impl SandboxBackend for FirecrackerBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self) -> Result<(), BackendError> {
        self.check_reason()
            .map(|_| ())
            .map_err(|reason| BackendError::Unavailable {
                backend: KIND,
                reason,
            })
    }

    async fn boot(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError> {
        let span = tracing::info_span!("firecracker_boot", pod_id = %spec.id.short());
        self.boot_inner(spec).instrument(span).await
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
                "VMM exited (firecracker pid {}): {}",
                h.pid,
                self.last_output(&h.vm_id)
            )),
        };
        connect_agent_until(&h.vsock, deadline, probe, |_| {
            let pvm = match pvm() {
                Some(_) => " (this host's /dev/kvm is PVM: a stock guest kernel cannot boot here)",
                None => "",
            };
            format!(
                "no answer from the agent within {deadline:?}; firecracker pid {} still runs{pvm}",
                h.pid
            )
        })
        .await
    }

    async fn attach_drive(
        &self,
        handle: &mut BackendHandle,
        drive: &Drive,
    ) -> Result<DeviceLocator, BackendError> {
        self.attach(handle, drive).await
    }

    async fn detach_drive(
        &self,
        handle: &mut BackendHandle,
        drive_id: &str,
    ) -> Result<(), BackendError> {
        self.detach(handle, drive_id).await
    }

    async fn stop(&self, handle: &BackendHandle, timeout: Duration) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        let span = tracing::info_span!("firecracker_stop", pod_id = %h.vm_id);
        self.terminate(&h, timeout).instrument(span).await;
        // The tap goes with the VM (the CNI interface goes next, at DEL).
        match &h.nic {
            Some(nic) => nic.remove().await,
            None => Ok(()),
        }
    }

    async fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        let span = tracing::info_span!("firecracker_destroy", pod_id = %h.vm_id);
        async {
            self.terminate(&h, Duration::ZERO).await;
            let vm = self.vms.lock().expect("vms lock").remove(&h.vm_id);
            for t in self
                .adopted
                .lock()
                .expect("adopted lock")
                .remove(&h.vm_id)
                .unwrap_or_default()
            {
                t.abort();
            }
            // Our own bind mounts first: the jail cannot go while they hold.
            if let Some(dir) = h.instance_dir.clone() {
                tokio::task::spawn_blocking(move || {
                    for m in host::mounts_under(&dir) {
                        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
                    }
                })
                .await
                .map_err(blocking_err)?;
            }
            if let Some(vm) = vm {
                if let Err(e) = vm.kill().await {
                    tracing::warn!(error = %e, "reaping firecracker");
                }
            }
            let h2 = h.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(dir) = &h2.instance_dir {
                    host::remove_tree(dir).map_err(BackendError::io(dir))?;
                }
                if let Some((parent, id)) = &h2.cgroup {
                    host::remove_vm_cgroups(parent, id);
                }
                for p in [&h2.api_socket, &h2.vsock] {
                    if !h2.jailed() {
                        host::unlink_or_unmount(p).map_err(BackendError::io(p))?;
                    }
                }
                host::remove_tree(&h2.placeholders).map_err(BackendError::io(&h2.placeholders))
            })
            .await
            .map_err(blocking_err)??;
            if let Some(nic) = &h.nic {
                nic.remove().await?;
            }
            self.release_uid(h.uid);
            tracing::info!("firecracker vm destroyed");
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn configure_guest(
        &self,
        handle: &BackendHandle,
        agent: &AgentClient,
    ) -> Result<(), BackendError> {
        GuestNic::configure(Handle::from(handle)?.nic.as_ref(), agent).await
    }

    /// Firecracker's metrics, flushed now (`FlushMetrics`) and read from
    /// what the metrics FIFO's drain kept.
    async fn live_info(&self, handle: &BackendHandle) -> Option<serde_json::Value> {
        let h = Handle::from(handle).ok()?;
        if !h.alive() {
            return None;
        }
        let fifo = h.api_socket.parent()?.join("metrics.fifo");
        let before = hearth_firecracker::fifo::read_latest_metrics(&fifo);
        let flushed = tokio::time::timeout(
            Duration::from_secs(1),
            h.client().action(ActionType::FlushMetrics),
        )
        .await;
        if matches!(flushed, Ok(Ok(()))) {
            // The drain writes the flushed line a moment later.
            let end = Instant::now() + Duration::from_millis(500);
            while Instant::now() < end {
                let now = hearth_firecracker::fifo::read_latest_metrics(&fifo);
                if now.is_some() && now != before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let metrics = hearth_firecracker::fifo::read_latest_metrics(&fifo)?;
        Some(serde_json::json!({ "firecrackerMetrics": metrics }))
    }

    fn liveness(&self, handle: &BackendHandle) -> Liveness {
        match Handle::from(handle) {
            Ok(h) if h.alive() => {
                self.adopt(&h);
                Liveness::Alive
            }
            Ok(h) => Liveness::Gone(format!("firecracker process {} is gone", h.pid)),
            Err(e) => Liveness::Gone(e.to_string()),
        }
    }
}

impl Drop for FirecrackerBackend {
    /// VMs outlive hearthd (a restarted hearthd re-adopts them from their
    /// handles), so the `VmmProcess`es are not dropped: that would kill them.
    fn drop(&mut self) {
        if let Ok(mut vms) = self.vms.lock() {
            for (_, vm) in vms.drain() {
                std::mem::forget(vm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_vd_letters() {
        assert_eq!(slot_letter(0), "/dev/vda");
        assert_eq!(slot_letter(2), "/dev/vdc");
    }

    fn backend(f: impl FnOnce(&mut crate::config::Config)) -> FirecrackerBackend {
        let mut c = crate::config::Config::default();
        f(&mut c);
        FirecrackerBackend::new(&c)
    }

    #[test]
    fn check_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let reason = |b: FirecrackerBackend| match b.check() {
            Err(BackendError::Unavailable { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        let r = reason(backend(|c| {
            c.firecracker.binary = "no-such-firecracker".into()
        }));
        assert!(
            r.contains("not found") && r.contains("firecracker.binary"),
            "{r}"
        );
        let r = reason(backend(|c| c.firecracker.binary = "/bin/true".into()));
        assert!(r.contains("is not Firecracker"), "{r}");
        // A fake but well-versioned binary reaches the later checks.
        let fake = dir.path().join("firecracker");
        hearth_test_support::write_executable(&fake, "#!/bin/sh\necho 'Firecracker v1.16.1'\n");
        let r = reason(backend(|c| {
            c.firecracker.binary = fake.clone();
            c.firecracker.use_jailer = false;
            c.root = dir.path().to_owned();
        }));
        assert!(
            r.contains("hearthctl guest build") && r.contains("vmlinux"),
            "{r}"
        );
    }
}
