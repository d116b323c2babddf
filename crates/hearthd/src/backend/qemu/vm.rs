//! The backend proper: boot (vhost-device-vsock, then QEMU), the agent
//! connection, drives, stop, destroy, liveness.
//!
//! Files in the sandbox's run dir: `vhost.sock` (vhost-user, QEMU ⇄
//! vhost-device-vsock), `vm.vsock` (hybrid vsock, host → guest),
//! `qmp.sock`, `serial.log` (the guest console), `qemu.log` and
//! `vsock.log` (the two processes' stderr).
//!
//! The scratch disk: the core creates the pod's scratch file before `boot`
//! and asks for it with `attach_drive("scratch")` once the agent answers.
//! virtio-mmio has no hot-plug and `BootSpec` does not carry the file, so
//! `boot` attaches the file the core's store keeps at
//! `<root>/sandboxes/<id>/scratch.img` (when present) as a virtio-blk
//! device with serial `scratch`, and `attach_drive` answers with that
//! serial. Other drives are hot-plugged: QMP `blockdev-add` + `device_add
//! virtio-blk-pci` into a free root port `hpN`, then `attach_drive` waits
//! for the guest driver's DRIVER_OK (≈ 0.2 s under TCG) before answering
//! with the drive's serial `hearth-hpN`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_qemu::argv::{vhost_vsock_args, BootDrive, Nic, VmArgs};
use hearth_qemu::spawn::{self, SocketWait, SpawnOptions};
use hearth_qemu::{Accel, Qmp};
use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::{
    BackendError, BackendHandle, BootSpec, DeviceLocator, Drive, Liveness, SandboxBackend,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{check, choose_accel, resolve_program, QemuConfig, KIND};
use crate::backend::process;
use crate::backend::{connect_agent_until, GuestNic, GuestState};

/// How long vhost-device-vsock may take to create its socket.
const VSOCK_SOCKET_WAIT: Duration = Duration::from_secs(5);
/// How long a QMP `quit` may take before QEMU is killed.
const QUIT_WAIT: Duration = Duration::from_secs(2);
/// How long a QMP command may take.
const QMP_WAIT: Duration = Duration::from_secs(5);
/// How long the guest may take to take a hot-plugged drive.
const HOTPLUG_WAIT: Duration = Duration::from_secs(15);
/// After DRIVER_OK, virtio_blk still adds the disk (`/sys/block/vdX`);
/// this covers that step (the agent does not wait for a serial to appear).
const HOTPLUG_SETTLE: Duration = Duration::from_millis(100);
/// How much of a log goes into an error message.
const LOG_TAIL_BYTES: usize = 8192;

/// The backend.
pub struct QemuBackend {
    config: QemuConfig,
    /// hearthd's `root`, where the core keeps each sandbox's scratch file.
    state_root: PathBuf,
}

/// A process the backend started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Proc {
    pid: u32,
    started: u64,
}

impl Proc {
    fn alive(&self) -> bool {
        spawn::alive(self.pid, self.started)
    }
}

/// A drive given to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AttachedDrive {
    path: PathBuf,
    serial: String,
}

/// A drive hot-plugged into root port `hp<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hotplugged {
    path: PathBuf,
    slot: u32,
}

impl Hotplugged {
    /// QEMU's device id and block node name.
    fn device_id(&self) -> String {
        format!("drive-hp{}", self.slot)
    }

    /// The guest-visible serial (virtio-blk keeps at most 20 bytes).
    fn serial(&self) -> String {
        format!("hearth-hp{}", self.slot)
    }
}

/// What is persisted per sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Handle {
    /// `kvm` or `tcg`.
    accel: String,
    /// What isolates the guest from the host, in words.
    isolation: String,
    qemu: Proc,
    vsock: Proc,
    run_dir: PathBuf,
    qmp_socket: PathBuf,
    vhost_socket: PathBuf,
    agent_socket: PathBuf,
    serial_log: PathBuf,
    qemu_log: PathBuf,
    vsock_log: PathBuf,
    /// Drives present from boot, by drive id.
    boot_drives: BTreeMap<String, AttachedDrive>,
    /// Drives the core has been given a locator for.
    #[serde(default)]
    attached: Vec<String>,
    /// PCIe root ports the VM has.
    #[serde(default)]
    hotplug_ports: u32,
    /// Hot-plugged drives, by drive id.
    #[serde(default)]
    hotplugged: BTreeMap<String, Hotplugged>,
    /// The network card's tap (pods with a network).
    #[serde(default)]
    nic: Option<GuestNic>,
    /// The uid (and gid) QEMU runs as once set up; `None`: root.
    #[serde(default)]
    uid: Option<u32>,
}

/// uids given to VMs this hearthd started and has not destroyed (a uid
/// is also skipped while any process on the host runs as it).
static VM_UIDS: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A VM uid from the configured range, reserved until [`release_uid`].
fn reserve_uid(config: &QemuConfig) -> Result<Option<u32>, BackendError> {
    if config.vm_uid_count == 0 {
        return Ok(None);
    }
    let mut taken = VM_UIDS.lock().expect("uids lock");
    let reserved: std::collections::HashSet<u32> = taken.iter().copied().collect();
    let uid = crate::backend::pick_uid(config.vm_uid_start, config.vm_uid_count, &reserved)
        .ok_or_else(|| BackendError::Unavailable {
            backend: KIND,
            reason: format!(
                "every uid of qemu.vm_uid_start {} + vm_uid_count {} is in use",
                config.vm_uid_start, config.vm_uid_count
            ),
        })?;
    taken.insert(uid);
    Ok(Some(uid))
}

fn release_uid(uid: Option<u32>) {
    if let Some(uid) = uid {
        VM_UIDS.lock().expect("uids lock").remove(&uid);
    }
}

impl Handle {
    fn from(h: &BackendHandle) -> Result<Handle, BackendError> {
        h.decode()
    }

    fn to_handle(&self) -> BackendHandle {
        BackendHandle::encode(self)
    }

    /// Why the VM is not running, or `None` when both processes run.
    fn gone(&self) -> Option<String> {
        if !self.qemu.alive() {
            return Some(format!(
                "QEMU (pid {}) exited; guest console: {}",
                self.qemu.pid,
                console_summary(&self.serial_log)
            ));
        }
        if !self.vsock.alive() {
            return Some(format!(
                "vhost-device-vsock (pid {}) exited: {}",
                self.vsock.pid,
                last_lines(&self.vsock_log, 3)
            ));
        }
        None
    }
}

impl QemuBackend {
    /// A backend with `config`; `state_root` is hearthd's `root`.
    pub fn new(config: QemuConfig, state_root: PathBuf) -> QemuBackend {
        QemuBackend { config, state_root }
    }

    fn scratch_file(&self, spec: &BootSpec) -> PathBuf {
        spec.scratch.clone().unwrap_or_else(|| {
            self.state_root
                .join("sandboxes")
                .join(spec.id.as_str())
                .join("scratch.img")
        })
    }

    /// Starts both processes (blocking), QEMU dropping to a uid of its
    /// own. On error nothing is left running and the uid is free again.
    fn start(&self, spec: &BootSpec, nic: Option<GuestNic>) -> Result<Handle, BackendError> {
        let uid = reserve_uid(&self.config)?;
        let started = self.start_as(spec, nic, uid);
        if started.is_err() {
            release_uid(uid);
        }
        started
    }

    fn start_as(
        &self,
        spec: &BootSpec,
        nic: Option<GuestNic>,
        uid: Option<u32>,
    ) -> Result<Handle, BackendError> {
        let accel =
            choose_accel(&self.config.accel).map_err(|reason| BackendError::Unavailable {
                backend: KIND,
                reason,
            })?;
        let run = &spec.run_dir;
        let file = |n: &str| run.join(n);
        let (qmp_socket, vhost_socket, agent_socket) =
            (file("qmp.sock"), file("vhost.sock"), file("vm.vsock"));
        let (serial_log, qemu_log, vsock_log) =
            (file("serial.log"), file("qemu.log"), file("vsock.log"));
        let unavailable = |what: &Path| BackendError::Unavailable {
            backend: KIND,
            reason: format!("{} not found", what.display()),
        };
        let vsock_bin = resolve_program(&self.config.vhost_vsock_binary)
            .ok_or_else(|| unavailable(&self.config.vhost_vsock_binary))?;
        let qemu_bin = resolve_program(&self.config.qemu_binary)
            .ok_or_else(|| unavailable(&self.config.qemu_binary))?;

        let mut boot_drives = BTreeMap::new();
        let scratch = self.scratch_file(spec);
        if scratch.is_file() {
            boot_drives.insert(
                "scratch".to_owned(),
                AttachedDrive {
                    path: scratch,
                    serial: "scratch".to_owned(),
                },
            );
        }
        let tsc_khz = match (accel, self.config.tsc_khz) {
            (Accel::Kvm, _) => None,
            (Accel::Tcg, 0) => spawn::host_cpu_khz(),
            (Accel::Tcg, khz) => Some(khz),
        };
        let args = VmArgs {
            name: format!("hearth-{}", spec.id.short()),
            kernel: self.config.kernel.clone(),
            initramfs: self.config.initramfs.clone(),
            firmware: self.config.firmware.clone(),
            data_dir: (!self.config.data_dir.as_os_str().is_empty())
                .then(|| self.config.data_dir.clone()),
            vcpus: spec.size.vcpus,
            memory_mib: spec.size.memory_mib,
            accel,
            tsc_khz,
            serial_log: serial_log.clone(),
            qmp_socket: qmp_socket.clone(),
            vhost_vsock_socket: vhost_socket.clone(),
            drives: boot_drives
                .iter()
                .map(|(id, d)| BootDrive {
                    id: id.clone(),
                    path: d.path.clone(),
                    read_only: false,
                })
                .collect(),
            hotplug_ports: self.config.hotplug_slots,
            nic: nic.as_ref().map(|n| Nic {
                tap: n.tap.tap_name.clone(),
                mac: n.mac.clone(),
            }),
            seccomp: self.config.seccomp,
            run_as: uid.map(|u| (u, u)),
            extra_cmdline: self.config.extra_cmdline.clone(),
        };

        for s in [&qmp_socket, &vhost_socket, &agent_socket] {
            remove_if_present(s)?;
        }
        let cgroup_procs = spec.cgroup.procs_files.clone();
        let vsock_opts = SpawnOptions {
            netns: None,
            cgroup_procs: cgroup_procs.clone(),
            log: vsock_log.clone(),
        };
        let vsock = start_proc(
            &vsock_bin,
            &vhost_vsock_args(&vhost_socket, &agent_socket),
            &vsock_opts,
        )?;
        match spawn::wait_for_socket(&vhost_socket, vsock.pid, vsock.started, VSOCK_SOCKET_WAIT) {
            Ok(()) => {}
            Err(why) => {
                kill_now(&vsock);
                return Err(BackendError::AgentNotReady {
                    reason: format!(
                        "vhost-device-vsock {} before creating {}: {}",
                        match why {
                            SocketWait::Exited => "exited",
                            SocketWait::TimedOut => "timed out",
                        },
                        vhost_socket.display(),
                        last_lines(&vsock_log, 5)
                    ),
                });
            }
        }
        let qemu_opts = SpawnOptions {
            netns: spec.netns.clone(),
            cgroup_procs,
            log: qemu_log.clone(),
        };
        let qemu = match start_proc(&qemu_bin, &args.to_args(), &qemu_opts) {
            Ok(p) => p,
            Err(e) => {
                kill_now(&vsock);
                return Err(e);
            }
        };
        let runs_as = match uid {
            Some(u) => format!("QEMU runs as uid {u}"),
            None => "QEMU runs as root".to_owned(),
        };
        let isolation = match accel {
            Accel::Kvm => format!("hardware virtualization (KVM); {runs_as}"),
            Accel::Tcg => {
                format!("none: TCG software emulation is no security boundary ({runs_as})")
            }
        };
        tracing::info!(
            qemu_pid = qemu.pid,
            vsock_pid = vsock.pid,
            accel = accel.as_str(),
            "VM started"
        );
        Ok(Handle {
            accel: accel.as_str().to_owned(),
            isolation,
            qemu,
            vsock,
            run_dir: run.clone(),
            qmp_socket,
            vhost_socket,
            agent_socket,
            serial_log,
            qemu_log,
            vsock_log,
            boot_drives,
            attached: Vec::new(),
            hotplug_ports: self.config.hotplug_slots,
            hotplugged: BTreeMap::new(),
            nic,
            uid,
        })
    }

    /// Waits up to `wait` for QEMU to exit by itself.
    async fn wait_exit(p: &Proc, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while p.alive() {
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Ends QEMU: QMP `quit`, then SIGKILL; then vhost-device-vsock.
    async fn end_processes(&self, h: &Handle) {
        if h.qemu.alive() {
            let quit = async {
                let mut q = Qmp::connect(&h.qmp_socket, QUIT_WAIT).await?;
                q.quit(QUIT_WAIT).await
            };
            if let Err(e) = quit.await {
                tracing::info!(error = %crate::cri::status::chain(&e), "QMP quit failed; killing QEMU");
            }
            if !Self::wait_exit(&h.qemu, QUIT_WAIT).await {
                spawn::signal_if_alive(h.qemu.pid, h.qemu.started, libc::SIGKILL);
                Self::wait_exit(&h.qemu, Duration::from_secs(5)).await;
            }
        }
        if h.vsock.alive() {
            spawn::signal_if_alive(h.vsock.pid, h.vsock.started, libc::SIGTERM);
            if !Self::wait_exit(&h.vsock, Duration::from_secs(1)).await {
                spawn::signal_if_alive(h.vsock.pid, h.vsock.started, libc::SIGKILL);
                Self::wait_exit(&h.vsock, Duration::from_secs(5)).await;
            }
        }
    }
}

/// Hot-plugs `drive` into a free root port and waits for the guest driver.
async fn hotplug(h: &mut Handle, drive: &Drive) -> Result<Hotplugged, BackendError> {
    let fail = |reason: String| BackendError::Drive {
        drive: drive.id.clone(),
        reason,
    };
    if let Some(hp) = h.hotplugged.get(&drive.id) {
        return if hp.path == drive.path {
            Ok(hp.clone())
        } else {
            Err(fail(format!("already attached from {}", hp.path.display())))
        };
    }
    let used: Vec<u32> = h.hotplugged.values().map(|d| d.slot).collect();
    let Some(slot) = (0..h.hotplug_ports).find(|s| !used.contains(s)) else {
        return Err(fail(format!(
            "no free hot-plug slot ({} per VM: qemu.hotplug_slots)",
            h.hotplug_ports
        )));
    };
    let hp = Hotplugged {
        path: drive.path.clone(),
        slot,
    };
    let id = hp.device_id();
    let qmp_err = |e: hearth_qemu::QmpError| fail(crate::cri::status::chain(&e));
    let mut q = Qmp::connect(&h.qmp_socket, QMP_WAIT)
        .await
        .map_err(qmp_err)?;
    q.add_raw_file(&id, &drive.path, drive.read_only, QMP_WAIT)
        .await
        .map_err(qmp_err)?;
    let props = serde_json::json!({
        "driver": "virtio-blk-pci",
        "id": id,
        "drive": id,
        "serial": hp.serial(),
        "bus": hearth_qemu::argv::hotplug_port(slot),
    });
    if let Err(e) = q.device_add(props, QMP_WAIT).await {
        let _ = q.blockdev_del(&id, QMP_WAIT).await;
        return Err(qmp_err(e));
    }
    let end = Instant::now() + HOTPLUG_WAIT;
    loop {
        match q.virtio_driver_ok(&id, QMP_WAIT).await {
            Ok(true) => break,
            Ok(false) if Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(false) => {
                let _ = unplug(h, &hp).await;
                return Err(fail(format!(
                    "the guest did not take the device within {HOTPLUG_WAIT:?}"
                )));
            }
            Err(e) => {
                let _ = unplug(h, &hp).await;
                return Err(qmp_err(e));
            }
        }
    }
    tokio::time::sleep(HOTPLUG_SETTLE).await;
    tracing::info!(drive = %drive.id, slot, "drive hot-plugged");
    Ok(hp)
}

/// Unplugs a hot-plugged drive: `device_del`, then `blockdev-del` once the
/// guest has released the device (the node is busy until then).
async fn unplug(h: &Handle, hp: &Hotplugged) -> Result<(), hearth_qemu::QmpError> {
    let id = hp.device_id();
    let mut q = Qmp::connect(&h.qmp_socket, QMP_WAIT).await?;
    match q.device_del(&id, QMP_WAIT).await {
        Ok(()) => {}
        // Already gone (an earlier attempt got this far).
        Err(hearth_qemu::QmpError::Command { class, .. }) if class == "DeviceNotFound" => {}
        Err(e) => return Err(e),
    }
    let end = Instant::now() + HOTPLUG_WAIT;
    loop {
        match q.blockdev_del(&id, QMP_WAIT).await {
            Ok(()) => return Ok(()),
            Err(hearth_qemu::QmpError::Command { desc, .. })
                if desc.contains("Failed to find node") =>
            {
                return Ok(())
            }
            Err(e @ hearth_qemu::QmpError::Command { .. }) => {
                if Instant::now() >= end {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts one process and has it reaped when it exits.
fn start_proc(
    program: &Path,
    args: &[std::ffi::OsString],
    opts: &SpawnOptions,
) -> Result<Proc, BackendError> {
    let pid = spawn::spawn(program, args, opts).map_err(|e| BackendError::Spawn {
        what: program.display().to_string(),
        source: std::io::Error::other(crate::cri::status::chain(&e)),
    })?;
    let Some(started) = spawn::start_time(pid) else {
        return Err(BackendError::AgentNotReady {
            reason: format!(
                "{} exited at once: {}",
                program.display(),
                last_lines(&opts.log, 5)
            ),
        });
    };
    Ok(Proc { pid, started })
}

fn kill_now(p: &Proc) {
    spawn::signal_if_alive(p.pid, p.started, libc::SIGKILL);
    // SAFETY: waitpid on our own child (or a pid that is not our child,
    // which fails harmlessly) with a valid status pointer.
    unsafe {
        let mut status = 0;
        libc::waitpid(p.pid as i32, &mut status, 0);
    }
}

fn remove_if_present(p: &Path) -> Result<(), BackendError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BackendError::io(p)(e)),
        _ => Ok(()),
    }
}

/// The agent's start-up line (`lifecycle`), as the VM-mode agent logs it
/// on the console.
const SERVING_MARK: &[u8] = b"agent serving";

/// How much of the console's start is searched for [`SERVING_MARK`]; a
/// console that grew past it without the mark no longer gates connecting.
const SERVING_SEARCH_BYTES: u64 = 64 * 1024;

/// Whether the console shows the agent serving (reads at most
/// [`SERVING_SEARCH_BYTES`] from its start), or is too long to tell.
fn console_says_serving(serial: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(serial) else {
        return false;
    };
    let mut buf = Vec::new();
    let _ = f.take(SERVING_SEARCH_BYTES).read_to_end(&mut buf);
    buf.len() as u64 >= SERVING_SEARCH_BYTES
        || buf.windows(SERVING_MARK.len()).any(|w| w == SERVING_MARK)
}

/// What the guest console says about the end: the kernel's panic line
/// when there is one, else the last lines.
fn console_summary(serial: &Path) -> String {
    let tail = last_lines(serial, 40);
    match tail.split(" | ").find(|l| l.contains("Kernel panic")) {
        Some(panic) => format!(
            "guest {}",
            panic.trim_start_matches(|c: char| c == '['
                || c == ' '
                || c == '.'
                || c.is_ascii_digit()
                || c == ']')
        ),
        None => last_lines(serial, 3),
    }
}

/// The last `n` non-empty lines of a log (at most [`LOG_TAIL_BYTES`] read).
fn last_lines(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return format!("({} missing)", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES as u64)));
    let mut buf = Vec::with_capacity(LOG_TAIL_BYTES);
    let _ = f.take(LOG_TAIL_BYTES as u64).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}

#[async_trait::async_trait]
impl SandboxBackend for QemuBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self) -> Result<(), BackendError> {
        check(&self.config)
    }

    async fn boot(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError> {
        let span = tracing::info_span!("qemu_boot", pod_id = %spec.id.short());
        // The tap first: QEMU opens it by name in the pod's netns (as
        // root, so it needs no owner).
        let nic = match &spec.netns {
            Some(netns) => {
                GuestNic::create(&spec.id, netns, None)
                    .instrument(span.clone())
                    .await?
            }
            None => None,
        };
        let this = QemuBackend::new(self.config.clone(), self.state_root.clone());
        let spec2 = spec.clone();
        let nic2 = nic.clone();
        let started = tokio::task::spawn_blocking(move || this.start(&spec2, nic2))
            .instrument(span)
            .await
            .map_err(|e| BackendError::AgentNotReady {
                reason: format!("boot task failed: {e}"),
            })
            .and_then(|r| r);
        let h = match started {
            Ok(h) => h,
            Err(e) => {
                if let Some(nic) = &nic {
                    if let Err(undo) = nic.remove().await {
                        tracing::warn!(error = %undo, "removing the tap of a failed boot");
                    }
                }
                return Err(e);
            }
        };
        tokio::spawn(process::reap_when_exited(h.qemu.pid));
        tokio::spawn(process::reap_when_exited(h.vsock.pid));
        Ok(h.to_handle())
    }

    async fn connect_agent(
        &self,
        handle: &BackendHandle,
        deadline: Duration,
    ) -> Result<AgentClient, BackendError> {
        let h = Handle::from(handle)?;
        // The console is only a hint (it is the guest's): connecting before
        // the guest's vsock is up queues requests in vhost-device-vsock,
        // which then (rarely) never answers again.
        let probe = || match h.gone() {
            Some(why) => GuestState::Gone(why),
            None if !console_says_serving(&h.serial_log) => {
                GuestState::NotYet("the guest console does not show the agent serving yet".into())
            }
            None => GuestState::Ready,
        };
        connect_agent_until(&h.agent_socket, deadline, probe, |last| {
            format!(
                "no answer from the agent within {deadline:?} ({} guest; last error: {}); guest console: {}",
                h.accel,
                last.as_deref().unwrap_or("none"),
                console_summary(&h.serial_log)
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
        let Some(d) = h.boot_drives.get(&drive.id) else {
            let hp = hotplug(&mut h, drive).await?;
            let locator = DeviceLocator::Serial(hp.serial());
            h.hotplugged.insert(drive.id.clone(), hp);
            *handle = h.to_handle();
            return Ok(locator);
        };
        if d.path != drive.path || drive.read_only {
            return Err(BackendError::Drive {
                drive: drive.id.clone(),
                reason: format!(
                    "the VM booted with {} read-write, not {} (read_only {})",
                    d.path.display(),
                    drive.path.display(),
                    drive.read_only
                ),
            });
        }
        let locator = DeviceLocator::Serial(d.serial.clone());
        if !h.attached.contains(&drive.id) {
            h.attached.push(drive.id.clone());
        }
        *handle = h.to_handle();
        Ok(locator)
    }

    async fn detach_drive(
        &self,
        handle: &mut BackendHandle,
        drive_id: &str,
    ) -> Result<(), BackendError> {
        let mut h = Handle::from(handle)?;
        if let Some(hp) = h.hotplugged.get(drive_id).cloned() {
            if h.qemu.alive() {
                unplug(&h, &hp).await.map_err(|e| BackendError::Drive {
                    drive: drive_id.to_owned(),
                    reason: crate::cri::status::chain(&e),
                })?;
            }
            h.hotplugged.remove(drive_id);
        }
        // Boot drives stay on the virtio-mmio bus until the VM ends; the
        // guest has unmounted it, so forgetting it is all there is to do.
        h.attached.retain(|d| d != drive_id);
        *handle = h.to_handle();
        Ok(())
    }

    async fn stop(&self, handle: &BackendHandle, timeout: Duration) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        let span = tracing::info_span!("qemu_stop", qemu_pid = h.qemu.pid);
        async {
            // The core has asked the agent to shut down: with reboot=t and
            // -no-reboot QEMU exits ≈ 15 ms after the guest's reset.
            if !Self::wait_exit(&h.qemu, timeout).await {
                tracing::info!(?timeout, "guest did not end; forcing");
            }
            self.end_processes(&h).await;
        }
        .instrument(span)
        .await;
        // The tap goes with the VM (the CNI interface goes next, at DEL).
        match &h.nic {
            Some(nic) => nic.remove().await,
            None => Ok(()),
        }
    }

    async fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        let h = Handle::from(handle)?;
        for p in [&h.qemu, &h.vsock] {
            if p.alive() {
                spawn::signal_if_alive(p.pid, p.started, libc::SIGKILL);
                Self::wait_exit(p, Duration::from_secs(5)).await;
            }
        }
        if let Some(p) = [&h.qemu, &h.vsock].into_iter().find(|p| p.alive()) {
            return Err(BackendError::AgentNotReady {
                reason: format!("process {} survived SIGKILL", p.pid),
            });
        }
        for s in [&h.qmp_socket, &h.vhost_socket, &h.agent_socket] {
            remove_if_present(s)?;
        }
        if let Some(nic) = &h.nic {
            nic.remove().await?;
        }
        release_uid(h.uid);
        Ok(())
    }

    async fn configure_guest(
        &self,
        handle: &BackendHandle,
        agent: &AgentClient,
    ) -> Result<(), BackendError> {
        GuestNic::configure(Handle::from(handle)?.nic.as_ref(), agent).await
    }

    fn liveness(&self, handle: &BackendHandle) -> Liveness {
        match Handle::from(handle) {
            Ok(h) => match h.gone() {
                None => Liveness::Alive,
                Some(why) => Liveness::Gone(why),
            },
            Err(e) => Liveness::Gone(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
