//! The `[firecracker]` config section and the pod annotation that sizes
//! the placeholder pools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kernel command line before `kernel_cmdline_extra`.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off quiet";

/// The pod annotation that sizes the placeholder pools: `ro=N,rw=M`.
pub const PLACEHOLDER_ANNOTATION: &str = "io.hearth.placeholder-drives";

/// Most drive slots a VM gets (scratch + placeholders): `/dev/vda`..`vdz`.
pub(super) const MAX_SLOTS: u32 = 26;

/// Size of a placeholder file (sparse).
pub(super) const PLACEHOLDER_BYTES: u64 = 4096;

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
        assert!(placeholder_pools(&a, (4, 1))
            .unwrap_err()
            .contains("at most"));
    }
}
