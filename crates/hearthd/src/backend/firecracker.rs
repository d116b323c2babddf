//! The `firecracker` backend: one Firecracker microVM per pod, started
//! through the jailer (per-VM chroot, uid/gid, netns, cgroup, seccomp
//! filter) or directly (`use_jailer = false`, development).
//!
//! Layout:
//! - this file: the config, the backend and its `SandboxBackend` methods.
//! - [`check`](self::check): whether it can run here (binary, version,
//!   static, seccomp filter, guest bundle, /dev/kvm, PVM detection).
//! - `host`: host-side work that must also run from the persisted handle
//!   alone (uid choice, jail links, unmounts, cgroups, checked kill).
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

mod check;
mod host;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hearth_agent_proto::AGENT_PORT;
use hearth_firecracker::client::error_chain;
use hearth_firecracker::{
    BootSource, Drive as FcDrive, EntropyDevice, FifoKind, FirecrackerClient, FirecrackerError,
    JailerSpawn, LogLevel, Logger, MachineConfig, Metrics, PartialDrive, VmmProcess, VmmSpawn,
    Vsock,
};
use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::{
    BackendError, BackendHandle, BootSpec, DeviceLocator, Drive, Liveness, SandboxBackend,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::process;

const KIND: &str = "firecracker";

/// The kernel command line before `kernel_cmdline_extra`.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off quiet";

/// The pod annotation that sizes the placeholder pools: `ro=N,rw=M`.
pub const PLACEHOLDER_ANNOTATION: &str = "io.hearth.placeholder-drives";

/// Most drive slots a VM gets (scratch + placeholders): `/dev/vda`..`vdz`.
const MAX_SLOTS: u32 = 26;

/// Size of a placeholder file (sparse).
const PLACEHOLDER_BYTES: u64 = 4096;

/// Settings of the firecracker backend (`[firecracker]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirecrackerConfig {
    /// The Firecracker binary (≥ 1.8; static when jailed). A bare name is
    /// looked up on `PATH`.
    pub binary: PathBuf,
    /// The jailer binary. A bare name is looked up on `PATH`.
    pub jailer: PathBuf,
    /// Start every VM through the jailer. `false` runs Firecracker directly
    /// as hearthd's user (development only).
    pub use_jailer: bool,
    /// Compiled seccomp filter passed as `--seccomp-filter`; required with
    /// the jailer (Hearth never passes `--no-seccomp`). Empty: none.
    pub seccomp_filter: PathBuf,
    /// First uid (and gid) of the range VMs run as; each VM gets a free one.
    pub vm_uid_start: u32,
    /// Size of that range (at most this many jailed VMs at once).
    pub vm_uid_count: u32,
    /// The jailer's `--chroot-base-dir`. Empty: `<state>/jail`. Must be on
    /// the filesystem of the guest bundle and the disks to hard-link them
    /// (otherwise they are bind-mounted).
    pub chroot_base: PathBuf,
    /// Directory of the guest bundle (`vmlinux`, `initramfs.cpio`), as
    /// `hearthctl guest build` writes it. Empty: `<root>/guest`.
    pub guest_dir: PathBuf,
    /// Appended to the kernel command line.
    pub kernel_cmdline_extra: String,
    /// Read-only placeholder drives per VM (image slots).
    pub placeholders_ro: u32,
    /// Read-write placeholder drives per VM (besides the scratch disk).
    pub placeholders_rw: u32,
    /// How long from spawning Firecracker to InstanceStart accepted (API
    /// readiness plus configuration). The agent's own wait is
    /// `timeouts.boot_ms`.
    pub boot_timeout_ms: u64,
    /// Run even when /dev/kvm is paravirtual (PVM), where a stock guest
    /// kernel cannot boot: only the control plane up to InstanceStart works.
    pub allow_pvm: bool,
}

impl Default for FirecrackerConfig {
    fn default() -> Self {
        FirecrackerConfig {
            binary: "firecracker".into(),
            jailer: "jailer".into(),
            use_jailer: true,
            seccomp_filter: PathBuf::new(),
            vm_uid_start: 200_000,
            vm_uid_count: 10_000,
            chroot_base: PathBuf::new(),
            guest_dir: PathBuf::new(),
            kernel_cmdline_extra: String::new(),
            placeholders_ro: 4,
            placeholders_rw: 1,
            boot_timeout_ms: 5_000,
            allow_pvm: false,
        }
    }
}

/// The firecracker backends this hearthd runs, from the config.
pub fn backends(config: &crate::config::Config) -> Vec<Arc<dyn SandboxBackend>> {
    vec![Arc::new(FirecrackerBackend::new(config))]
}

/// Parses the placeholder annotation `ro=N,rw=M` (either part optional)
/// over the configured pool sizes.
pub fn placeholder_pools(
    annotations: &BTreeMap<String, String>,
    default: (u32, u32),
) -> Result<(u32, u32), String> {
    let Some(v) = annotations.get(PLACEHOLDER_ANNOTATION) else {
        return Ok(default);
    };
    let (mut ro, mut rw) = default;
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("annotation {PLACEHOLDER_ANNOTATION}: {part:?} is not ro=N or rw=N");
        let (k, n) = part.split_once('=').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        match k.trim() {
            "ro" => ro = n,
            "rw" => rw = n,
            _ => return Err(bad()),
        }
    }
    if 1 + ro + rw > MAX_SLOTS {
        return Err(format!(
            "annotation {PLACEHOLDER_ANNOTATION}: {} drives in all, at most {MAX_SLOTS}",
            1 + ro + rw
        ));
    }
    Ok((ro, rw))
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
}

impl Handle {
    fn from(h: &BackendHandle) -> Result<Handle, BackendError> {
        serde_json::from_value(h.0.clone()).map_err(|e| BackendError::Handle(e.to_string()))
    }

    fn to_handle(&self) -> BackendHandle {
        BackendHandle(serde_json::to_value(self).expect("handle serializes"))
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
        let guest = or(&cfg.guest_dir, config.root.join("guest"));
        process::become_subreaper();
        FirecrackerBackend {
            chroot_base,
            kernel: guest.join("vmlinux"),
            initramfs: guest.join("initramfs.cpio"),
            cfg,
            versions: Default::default(),
            vms: Mutex::new(HashMap::new()),
            uids: Mutex::new(HashSet::new()),
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
        let uid = host::pick_uid(self.cfg.vm_uid_start, self.cfg.vm_uid_count, &uids)
            .ok_or_else(|| BackendError::Unavailable {
                backend: KIND,
                reason: format!(
                    "every uid of firecracker.vm_uid_start {} + vm_uid_count {} is in use",
                    self.cfg.vm_uid_start, self.cfg.vm_uid_count
                ),
            })?;
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

    /// Spawns Firecracker (jailed or direct) with the files it needs.
    async fn spawn(
        &self,
        spec: &BootSpec,
        r: &Resolved,
        uid: u32,
        slots: &[Slot],
        placeholders: &Path,
    ) -> Result<VmmProcess, FirecrackerError> {
        let vm_id = spec.id.short().to_owned();
        let Some(jailer) = &r.jailer else {
            let mut s = VmmSpawn::new(
                &r.firecracker,
                vm_id,
                spec.run_dir.join("firecracker.sock"),
            );
            if !self.cfg.seccomp_filter.as_os_str().is_empty() {
                s = s.seccomp_filter(&self.cfg.seccomp_filter);
            }
            if let Some(ns) = &spec.netns {
                s = s.netns(ns);
            }
            return s.spawn().await;
        };
        let mut s = JailerSpawn::new(
            jailer,
            &r.firecracker,
            vm_id,
            uid,
            uid,
            &self.chroot_base,
            &self.cfg.seccomp_filter,
        )
        .file(&self.kernel, "/vmlinux", false)
        .file(&self.initramfs, "/initramfs.cpio", false);
        for slot in slots {
            s = s.file(
                placeholders.join(format!("{}.img", slot.id)),
                &slot.placeholder,
                !slot.read_only,
            );
        }
        if let Some(ns) = &spec.netns {
            s = s.netns(ns);
        }
        let parent = spec.cgroup.parent.trim_matches('/');
        if !parent.is_empty() {
            let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
            s = s.cgroup(if v2 { 2 } else { 1 }, Some(parent.to_owned()));
            if !v2 {
                // On v1 the jailer only places the VMM when given a property.
                let shares = 1024 * u64::from(spec.size.vcpus.max(1));
                s = s.cgroup_property("cpu.shares", shares.to_string());
            }
        }
        s.spawn().await
    }

    /// Everything after the spawn up to InstanceStart.
    async fn configure(
        &self,
        vm: &mut VmmProcess,
        spec: &BootSpec,
        h: &Handle,
    ) -> Result<(), (&'static str, FirecrackerError)> {
        let deadline = Duration::from_millis(self.cfg.boot_timeout_ms);
        vm.wait_ready(deadline).await.map_err(|e| ("api", e))?;
        let c = vm.client();
        let log = vm.fifo("log.fifo", FifoKind::Log).map_err(|e| ("log", e))?;
        let metrics = vm
            .fifo("metrics.fifo", FifoKind::Metrics)
            .map_err(|e| ("metrics", e))?;
        c.put_logger(&Logger {
            log_path: Some(log.display().to_string()),
            level: Some(LogLevel::Warning),
            ..Default::default()
        })
        .await
        .map_err(|e| ("logger", e))?;
        c.put_metrics(&Metrics {
            metrics_path: metrics.display().to_string(),
        })
        .await
        .map_err(|e| ("metrics", e))?;
        c.put_machine_config(&MachineConfig {
            vcpu_count: u8::try_from(spec.size.vcpus).unwrap_or(u8::MAX),
            mem_size_mib: spec.size.memory_mib,
            ..Default::default()
        })
        .await
        .map_err(|e| ("machine config", e))?;
        let api = |p: &Path| p.display().to_string();
        let (kernel, initrd) = match h.jailed() {
            true => (PathBuf::from("/vmlinux"), PathBuf::from("/initramfs.cpio")),
            false => (self.kernel.clone(), self.initramfs.clone()),
        };
        let mut cmdline = BASE_CMDLINE.to_owned();
        if !self.cfg.kernel_cmdline_extra.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(self.cfg.kernel_cmdline_extra.trim());
        }
        c.put_boot_source(&BootSource {
            kernel_image_path: api(&kernel),
            boot_args: Some(cmdline),
            initrd_path: Some(api(&initrd)),
        })
        .await
        .map_err(|e| ("boot source", e))?;
        for slot in &h.slots {
            c.put_drive(&FcDrive {
                drive_id: slot.id.clone(),
                is_root_device: false,
                is_read_only: Some(slot.read_only),
                path_on_host: Some(slot.placeholder.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| ("drives", e))?;
        }
        let uds_path = match h.jailed() {
            true => "/run/vsock.sock".to_owned(),
            false => {
                vm.remove_on_kill(&h.vsock);
                h.vsock.display().to_string()
            }
        };
        c.put_vsock(&Vsock {
            guest_cid: 3,
            uds_path,
            vsock_id: None,
        })
        .await
        .map_err(|e| ("vsock", e))?;
        c.put_entropy(&EntropyDevice::default())
            .await
            .map_err(|e| ("entropy", e))?;
        let started = Instant::now();
        c.instance_start()
            .await
            .map_err(|e| ("instance start", e))?;
        tracing::debug!(elapsed = ?started.elapsed(), "InstanceStart accepted");
        Ok(())
    }

    async fn wait_gone(h: &Handle, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while h.alive() {
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Kills the VMM (after `grace` with Ctrl-Alt-Del first) and reaps it.
    async fn terminate(&self, h: &Handle, grace: Duration) {
        if h.alive() && !grace.is_zero() {
            let c = h.client().with_timeout(grace.min(Duration::from_secs(1)));
            if let Err(e) = c.send_ctrl_alt_del().await {
                tracing::debug!(error = %e, "ctrl-alt-del not delivered");
            }
            Self::wait_gone(h, grace).await;
        }
        if h.alive() {
            host::kill_checked(h.pid, h.started);
            if !Self::wait_gone(h, Duration::from_secs(5)).await {
                tracing::warn!(pid = h.pid, "firecracker did not die after SIGKILL");
            }
        }
        if let Some(vm) = self.vms.lock().expect("vms lock").get_mut(&h.vm_id) {
            let _ = vm.try_exit();
        }
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

fn boot_error(vm_id: &str, step: &str, e: &FirecrackerError) -> BackendError {
    let kind = if e.is_bad_request() {
        std::io::ErrorKind::InvalidInput
    } else {
        std::io::ErrorKind::Other
    };
    BackendError::Spawn {
        what: format!("firecracker vm {vm_id} ({step})"),
        source: std::io::Error::new(kind, error_chain(e)),
    }
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
        let end = Instant::now() + deadline;
        loop {
            if !h.alive() {
                return Err(BackendError::AgentNotReady {
                    reason: format!(
                        "VMM exited (firecracker pid {}): {}",
                        h.pid,
                        self.last_output(&h.vm_id)
                    ),
                });
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let pvm = match pvm() {
                    Some(_) => " (this host's /dev/kvm is PVM: a stock guest kernel cannot boot here)",
                    None => "",
                };
                return Err(BackendError::AgentNotReady {
                    reason: format!(
                        "no answer from the agent within {deadline:?}; firecracker pid {} still runs{pvm}",
                        h.pid
                    ),
                });
            }
            let attempt = left.min(Duration::from_millis(500));
            match AgentClient::connect(&h.vsock, AGENT_PORT, attempt).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::trace!(error = %e, "agent not answering yet");
                    let pause = Duration::from_millis(20).min(end.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn attach_drive(
        &self,
        handle: &mut BackendHandle,
        drive: &Drive,
    ) -> Result<DeviceLocator, BackendError> {
        let mut h = Handle::from(handle)?;
        let fail = |reason: String| BackendError::Drive {
            drive: drive.id.clone(),
            reason,
        };
        if let Some(i) = h
            .slots
            .iter()
            .position(|s| s.attached.as_ref().is_some_and(|(d, _)| *d == drive.id))
        {
            return Ok(DeviceLocator::Path(slot_letter(i)));
        }
        let i = if drive.id == "scratch" {
            h.slots.iter().position(|s| s.id == "scratch")
        } else {
            h.slots.iter().position(|s| {
                s.id != "scratch" && s.read_only == drive.read_only && s.attached.is_none()
            })
        };
        let Some(i) = i else {
            let (kind, knob) = match drive.read_only {
                true => ("read-only", "placeholders_ro"),
                false => ("read-write", "placeholders_rw"),
            };
            return Err(fail(format!(
                "no free {kind} drive slot: raise firecracker.{knob} (or the pod annotation {PLACEHOLDER_ANNOTATION})"
            )));
        };
        let slot_id = h.slots[i].id.clone();
        let api_path = if h.jailed() {
            let jail_path = PathBuf::from(format!("/{slot_id}.drive"));
            let (root, src, jp) = (h.root.clone(), drive.path.clone(), jail_path.clone());
            let (uid, gid, writable) = (h.uid, h.gid, !drive.read_only);
            tokio::task::spawn_blocking(move || {
                host::link_into(&root, &src, &jp, writable, uid, gid)
            })
            .await
            .map_err(blocking_err)?
            .map_err(|e| fail(format!("linking {} into the jail: {e}", drive.path.display())))?;
            jail_path.display().to_string()
        } else {
            drive.path.display().to_string()
        };
        let patch = PartialDrive {
            drive_id: slot_id.clone(),
            path_on_host: Some(api_path.clone()),
            rate_limiter: None,
        };
        if let Err(e) = h.client().patch_drive(&patch).await {
            if h.jailed() {
                let _ = host::unlink_or_unmount(&h.root.join(format!("{slot_id}.drive")));
            }
            return Err(fail(error_chain(&e)));
        }
        h.slots[i].attached = Some((drive.id.clone(), api_path));
        *handle = h.to_handle();
        Ok(DeviceLocator::Path(slot_letter(i)))
    }

    async fn detach_drive(
        &self,
        handle: &mut BackendHandle,
        drive_id: &str,
    ) -> Result<(), BackendError> {
        let mut h = Handle::from(handle)?;
        let Some(i) = h
            .slots
            .iter()
            .position(|s| s.attached.as_ref().is_some_and(|(d, _)| d == drive_id))
        else {
            return Ok(());
        };
        let slot = h.slots[i].clone();
        if h.alive() {
            let patch = PartialDrive {
                drive_id: slot.id.clone(),
                path_on_host: Some(slot.placeholder.clone()),
                rate_limiter: None,
            };
            h.client()
                .patch_drive(&patch)
                .await
                .map_err(|e| BackendError::Drive {
                    drive: drive_id.to_owned(),
                    reason: error_chain(&e),
                })?;
        }
        if h.jailed() {
            let p = h.root.join(format!("{}.drive", slot.id));
            host::unlink_or_unmount(&p).map_err(BackendError::io(&p))?;
        }
        h.slots[i].attached = None;
        *handle = h.to_handle();
        Ok(())
    }

    async fn stop(&self, handle: &BackendHandle, timeout: Duration) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        let span = tracing::info_span!("firecracker_stop", pod_id = %h.vm_id);
        self.terminate(&h, timeout).instrument(span).await;
        Ok(())
    }

    async fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        let span = tracing::info_span!("firecracker_destroy", pod_id = %h.vm_id);
        async {
            self.terminate(&h, Duration::ZERO).await;
            let vm = self.vms.lock().expect("vms lock").remove(&h.vm_id);
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
            self.release_uid(h.uid);
            tracing::info!("firecracker vm destroyed");
            Ok(())
        }
        .instrument(span)
        .await
    }

    fn liveness(&self, handle: &BackendHandle) -> Liveness {
        match Handle::from(handle) {
            Ok(h) if h.alive() => Liveness::Alive,
            Ok(h) => Liveness::Gone(format!("firecracker process {} is gone", h.pid)),
            Err(e) => Liveness::Gone(e.to_string()),
        }
    }
}

impl FirecrackerBackend {
    async fn boot_inner(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError> {
        let t0 = Instant::now();
        let r = self
            .check_reason()
            .map_err(|reason| BackendError::Unavailable {
                backend: KIND,
                reason,
            })?;
        let vm_id = spec.id.short().to_owned();
        let jailed = r.jailer.is_some();
        let placeholders = spec.run_dir.join("placeholders");
        let mut slots = vec![("scratch".to_owned(), false)];
        slots.extend((0..self.cfg.placeholders_rw).map(|i| (format!("ph_rw_{i}"), false)));
        slots.extend((0..self.cfg.placeholders_ro).map(|i| (format!("ph_ro_{i}"), true)));
        let slots: Vec<Slot> = slots
            .into_iter()
            .map(|(id, read_only)| Slot {
                placeholder: match jailed {
                    true => format!("/{id}.img"),
                    false => placeholders.join(format!("{id}.img")).display().to_string(),
                },
                id,
                read_only,
                attached: None,
            })
            .collect();
        let files: Vec<PathBuf> = slots
            .iter()
            .map(|s| placeholders.join(format!("{}.img", s.id)))
            .collect();
        let dir = placeholders.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(BackendError::io(&dir))?;
            for f in &files {
                let file = std::fs::File::create(f).map_err(BackendError::io(f))?;
                file.set_len(PLACEHOLDER_BYTES)
                    .map_err(BackendError::io(f))?;
            }
            Ok::<_, BackendError>(())
        })
        .await
        .map_err(blocking_err)??;

        let uid = match jailed {
            true => self.reserve_uid()?,
            false => {
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() }
            }
        };
        let host_cost = t0.elapsed();
        let mut vm = match self.spawn(spec, &r, uid, &slots, &placeholders).await {
            Ok(vm) => vm,
            Err(e) => {
                self.release_uid(uid);
                let _ = std::fs::remove_dir_all(&placeholders);
                return Err(boot_error(&vm_id, "spawn", &e));
            }
        };
        let pid = vm.pid().unwrap_or(0);
        let started = process::start_time(pid).unwrap_or(0);
        let root = vm.jail_root().map(Path::to_path_buf).unwrap_or_else(|| "/".into());
        let cgroup_parent = spec.cgroup.parent.trim_matches('/');
        let h = Handle {
            vm_id: vm_id.clone(),
            pid,
            started,
            uid,
            gid: uid,
            instance_dir: vm.jail_root().and_then(Path::parent).map(Path::to_path_buf),
            api_socket: vm.socket_path().to_path_buf(),
            vsock: match jailed {
                true => root.join("run/vsock.sock"),
                false => spec.run_dir.join("vsock.sock"),
            },
            root,
            cgroup: (jailed && !cgroup_parent.is_empty())
                .then(|| (cgroup_parent.to_owned(), vm_id.clone())),
            placeholders: placeholders.clone(),
            slots,
        };
        let t1 = Instant::now();
        if let Err((step, e)) = self.configure(&mut vm, spec, &h).await {
            let output = vm.last_output();
            let _ = vm.kill().await;
            let h2 = h.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(d) = &h2.instance_dir {
                    let _ = host::remove_tree(d);
                }
                if let Some((p, id)) = &h2.cgroup {
                    host::remove_vm_cgroups(p, id);
                }
                let _ = host::remove_tree(&h2.placeholders);
            })
            .await;
            self.release_uid(uid);
            let mut err = boot_error(&vm_id, step, &e);
            if let BackendError::Spawn { source, .. } = &mut err {
                if matches!(e, FirecrackerError::Exited(_)) || !output.is_empty() {
                    *source = std::io::Error::new(
                        source.kind(),
                        format!("{source}; firecracker said: {output}"),
                    );
                }
            }
            return Err(err);
        }
        tracing::info!(
            pid,
            uid,
            jailed,
            host_us = host_cost.as_micros() as u64,
            api_us = t1.elapsed().as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "firecracker vm started"
        );
        self.vms.lock().expect("vms lock").insert(vm_id, vm);
        Ok(h.to_handle())
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
    fn placeholder_annotation_parses_and_bounds() {
        let mut a = BTreeMap::new();
        assert_eq!(placeholder_pools(&a, (4, 1)), Ok((4, 1)));
        a.insert(PLACEHOLDER_ANNOTATION.into(), "ro=8, rw=2".into());
        assert_eq!(placeholder_pools(&a, (4, 1)), Ok((8, 2)));
        a.insert(PLACEHOLDER_ANNOTATION.into(), "rw=0".into());
        assert_eq!(placeholder_pools(&a, (4, 1)), Ok((4, 0)));
        a.insert(PLACEHOLDER_ANNOTATION.into(), "ro=x".into());
        assert!(placeholder_pools(&a, (4, 1)).unwrap_err().contains("ro=x"));
        a.insert(PLACEHOLDER_ANNOTATION.into(), "ro=30".into());
        assert!(placeholder_pools(&a, (4, 1)).unwrap_err().contains("at most"));
    }

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
        let r = reason(backend(|c| c.firecracker.binary = "no-such-firecracker".into()));
        assert!(r.contains("not found") && r.contains("firecracker.binary"), "{r}");
        let r = reason(backend(|c| c.firecracker.binary = "/bin/true".into()));
        assert!(r.contains("is not Firecracker"), "{r}");
        // A fake but well-versioned binary reaches the later checks.
        let fake = dir.path().join("firecracker");
        std::fs::write(&fake, "#!/bin/sh\necho 'Firecracker v1.16.1'\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let r = reason(backend(|c| {
            c.firecracker.binary = fake.clone();
            c.firecracker.use_jailer = false;
            c.root = dir.path().to_owned();
        }));
        assert!(r.contains("hearthctl guest build") && r.contains("vmlinux"), "{r}");
    }
}
