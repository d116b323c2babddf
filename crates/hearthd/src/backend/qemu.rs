//! The `qemu` backend: one QEMU `microvm` per pod, booting Hearth's guest
//! bundle (the same `vmlinux` + agent initramfs as Firecracker) with
//! hearth-agent as PID 1.
//!
//! - vsock goes through a vhost-device-vsock daemon per VM, whose unix
//!   socket speaks the hybrid-vsock handshake, so the host's agent client is
//!   the one every backend uses.
//! - The scratch disk is a virtio-blk device present from boot (serial
//!   `scratch`); see [`vm`] for how its file is found. Later drives are
//!   hot-plugged as virtio-blk-pci into pre-created PCIe root ports.
//! - A pod with a network gets a virtio-net NIC over the tap `tap0` that
//!   `boot` makes in the pod's netns (see [`GuestNic`](super::GuestNic));
//!   QEMU, running in that netns, opens it by name.
//! - KVM is used when `/dev/kvm` can boot a stock guest; on a PVM host (the
//!   development machines) and without `/dev/kvm` it is TCG: software
//!   emulation, 6–15× slower and **no security boundary** (the guest's code
//!   is interpreted by a QEMU process running as root on the host). The
//!   choice is in the sandbox's `backendState.accel` and
//!   `backendState.isolation` (PodSandboxStatus verbose info).
//!
//! Layout: this file (config, start-up checks), [`vm`] (the backend).

mod vm;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_qemu::Accel;
use hearth_runtime::backend::{BackendError, SandboxBackend};
use serde::{Deserialize, Serialize};

pub use vm::QemuBackend;

const KIND: &str = "qemu";

/// Settings of the qemu backend (`[qemu]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    /// The QEMU binary; a bare name is looked up in `PATH`.
    pub qemu_binary: PathBuf,
    /// QEMU's data directory (`-L`); empty uses the binary's built-in one.
    pub data_dir: PathBuf,
    /// The firmware (`-bios`); qboot is required (SeaBIOS triple-faults the
    /// PVH vmlinux under QEMU 10 most of the time).
    pub firmware: PathBuf,
    /// The vhost-device-vsock binary; a bare name is looked up in `PATH`.
    pub vhost_vsock_binary: PathBuf,
    /// The guest kernel (uncompressed ELF `vmlinux` of the guest bundle).
    pub kernel: PathBuf,
    /// The guest initramfs (the bundle's, with hearth-agent as `/init`).
    pub initramfs: PathBuf,
    /// `auto` (KVM when it can boot a stock guest, else TCG), `kvm` or
    /// `tcg`.
    pub accel: String,
    /// PCIe root ports per VM for drives attached after boot (PCIe
    /// hot-plug); 0 turns PCIe off (then only the scratch disk works).
    pub hotplug_slots: u32,
    /// Run QEMU with its seccomp sandbox (`-sandbox on,...`).
    pub seccomp: bool,
    /// First uid (and gid) of the range QEMU drops to once its devices are
    /// set up, one per VM (`-run-with user=`).
    pub vm_uid_start: u32,
    /// Size of that range; 0 leaves QEMU running as root.
    pub vm_uid_count: u32,
    /// Host TSC frequency in kHz for the guest under TCG; 0 reads
    /// `cpu MHz` from /proc/cpuinfo.
    pub tsc_khz: u64,
    /// Appended to the guest kernel command line.
    pub extra_cmdline: String,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            qemu_binary: "qemu-system-x86_64".into(),
            data_dir: PathBuf::new(),
            firmware: "/usr/share/qemu/qboot.rom".into(),
            vhost_vsock_binary: "vhost-device-vsock".into(),
            kernel: "/var/lib/hearth/guest/vmlinux".into(),
            initramfs: "/var/lib/hearth/guest/initramfs.cpio".into(),
            accel: "auto".into(),
            hotplug_slots: 4,
            seccomp: true,
            vm_uid_start: 300_000,
            vm_uid_count: 10_000,
            tsc_khz: 0,
            extra_cmdline: String::new(),
        }
    }
}

/// The qemu backends this hearthd runs, from the config.
pub fn backends(config: &crate::config::Config) -> Vec<Arc<dyn SandboxBackend>> {
    vec![Arc::new(QemuBackend::new(
        config.qemu.clone(),
        config.root.clone(),
    ))]
}

/// A program path: absolute or relative paths as given, bare names from
/// `PATH`.
pub(crate) fn resolve_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// Why `/dev/kvm` cannot boot a stock guest here, or `None` when it can.
pub(crate) fn kvm_unusable() -> Option<String> {
    kvm_unusable_from(Path::new("/dev/kvm"), Path::new("/sys/module"))
}

fn kvm_unusable_from(dev_kvm: &Path, sys_module: &Path) -> Option<String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
        .is_err()
    {
        return Some(format!("{} cannot be opened", dev_kvm.display()));
    }
    if sys_module.join("kvm_pvm").exists() {
        return Some(
            "/dev/kvm is a paravirtual KVM (kvm_pvm), which cannot boot a stock guest kernel"
                .into(),
        );
    }
    None
}

/// The accelerator the config asks for, resolved on this host.
pub(crate) fn choose_accel(setting: &str) -> Result<Accel, String> {
    match setting {
        "tcg" => Ok(Accel::Tcg),
        "kvm" => match kvm_unusable() {
            None => Ok(Accel::Kvm),
            Some(why) => Err(format!(
                "qemu.accel is \"kvm\" but {why}; set qemu.accel = \"tcg\" or \"auto\""
            )),
        },
        "auto" => Ok(if kvm_unusable().is_none() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }),
        other => Err(format!(
            "qemu.accel {other:?} must be \"auto\", \"kvm\" or \"tcg\""
        )),
    }
}

/// Checks that everything the backend needs is on this host.
pub(crate) fn check(config: &QemuConfig) -> Result<(), BackendError> {
    let unavailable = |reason: String| {
        Err(BackendError::Unavailable {
            backend: KIND,
            reason,
        })
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("hearthd must run as root to run QEMU in pod namespaces".into());
    }
    if resolve_program(&config.qemu_binary).is_none() {
        return unavailable(format!(
            "{} not found: install qemu-system-x86 (apt-get install -t bookworm-backports qemu-system-x86) or set qemu.qemu_binary",
            config.qemu_binary.display()
        ));
    }
    if !config.firmware.is_file() {
        return unavailable(format!(
            "firmware {} not found: it ships with qemu-system-data (qboot.rom); set qemu.firmware",
            config.firmware.display()
        ));
    }
    if resolve_program(&config.vhost_vsock_binary).is_none() {
        return unavailable(format!(
            "{} not found: cargo install vhost-device-vsock (and put it in PATH) or set qemu.vhost_vsock_binary",
            config.vhost_vsock_binary.display()
        ));
    }
    for (field, p) in [("kernel", &config.kernel), ("initramfs", &config.initramfs)] {
        if !p.is_file() {
            return unavailable(format!(
                "guest {field} {} not found: build the guest bundle (hearthctl guest build) and set qemu.{field}",
                p.display()
            ));
        }
    }
    if let Err(why) = choose_accel(&config.accel) {
        return unavailable(why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_and_missing_kvm_mean_tcg() {
        let dir = tempfile::tempdir().unwrap();
        let why = kvm_unusable_from(&dir.path().join("kvm"), dir.path()).unwrap();
        assert!(why.contains("cannot be opened"), "{why}");
        let kvm = dir.path().join("kvm");
        std::fs::write(&kvm, "").unwrap();
        assert_eq!(kvm_unusable_from(&kvm, dir.path()), None);
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        assert!(kvm_unusable_from(&kvm, dir.path())
            .unwrap()
            .contains("paravirtual"));
    }

    #[test]
    fn accel_settings_are_checked() {
        assert_eq!(choose_accel("tcg"), Ok(Accel::Tcg));
        assert!(choose_accel("auto").is_ok());
        assert!(choose_accel("hvf").unwrap_err().contains("qemu.accel"));
    }

    #[test]
    fn missing_pieces_say_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let config = QemuConfig {
            qemu_binary: dir.path().join("qemu"),
            ..QemuConfig::default()
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let err = check(&config).unwrap_err().to_string();
        assert!(err.contains("qemu.qemu_binary"), "{err}");
        let config = QemuConfig {
            qemu_binary: "/bin/sh".into(),
            firmware: "/bin/sh".into(),
            vhost_vsock_binary: "/bin/sh".into(),
            kernel: dir.path().join("vmlinux"),
            ..QemuConfig::default()
        };
        let err = check(&config).unwrap_err().to_string();
        assert!(err.contains("hearthctl guest build"), "{err}");
    }
}
