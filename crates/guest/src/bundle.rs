//! [`build`]: kernel package → `vmlinux` + `initramfs.cpio` + manifest.
//!
//! Work directory layout:
//!
//! ```text
//! <work_dir>/kernel/<package>_<version>.deb   downloaded package
//! <work_dir>/kernel/<package>_<version>/      dpkg -x of it
//! <work_dir>/vmlinux                          uncompressed ELF kernel
//! <work_dir>/initramfs.cpio                   newc archive (uncompressed)
//! <work_dir>/manifest.json                    inputs, outputs, checksums
//! <work_dir>/.lock                            flock held while building
//! ```
//!
//! A build whose inputs (package, version and `.deb` checksum, agent
//! checksum, module list, bundle format) match the manifest, and whose
//! outputs still have the recorded checksums, does nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bzimage;
use crate::cpio::CpioWriter;
use crate::error::{GuestError, Result};
use crate::kernel::{self, sha256_file, KernelPackage};
use crate::modules;

/// The kernel package used when the spec names none.
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// The modules the agent loads (names; built-in ones are skipped).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport",
    "overlay",
    "erofs",
];

/// Bumped when the bundle layout changes, so old bundles are rebuilt.
const FORMAT: u32 = 1;

/// Where the agent finds its module list inside the initramfs.
pub const MODULES_LIST: &str = "etc/hearth/modules";

/// What to build.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// Directory for downloads, the unpacked package and the outputs.
    pub work_dir: PathBuf,
    /// The static `hearth-agent` binary; becomes `/init`.
    pub agent_binary: PathBuf,
    /// Kernel package (meta or versioned); default [`DEFAULT_KERNEL_PACKAGE`].
    pub kernel_package: Option<String>,
    /// A `.deb` to use instead of resolving and downloading one.
    pub kernel_deb: Option<PathBuf>,
}

impl BundleSpec {
    /// The default kernel package, resolved and downloaded with apt.
    pub fn new(work_dir: impl Into<PathBuf>, agent_binary: impl Into<PathBuf>) -> Self {
        BundleSpec {
            work_dir: work_dir.into(),
            agent_binary: agent_binary.into(),
            kernel_package: None,
            kernel_deb: None,
        }
    }
}

/// The built bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Uncompressed ELF kernel for Firecracker / QEMU.
    pub vmlinux: PathBuf,
    /// The initramfs (newc cpio).
    pub initramfs: PathBuf,
    /// `uname -r` of the kernel.
    pub kernel_release: String,
    /// What went in and came out.
    pub manifest: Manifest,
    /// False when the existing bundle was up to date.
    pub rebuilt: bool,
}

/// The `manifest.json` of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Inputs; a change in any of them triggers a rebuild.
    pub inputs: Inputs,
    /// Facts found while building.
    pub kernel_release: String,
    /// Compression of the bzImage payload (`lz4`, `gzip`, ...).
    pub kernel_compression: String,
    /// Wanted modules that are built into the kernel.
    pub builtin_modules: Vec<String>,
    /// Module paths in `/etc/hearth/modules`, in load order.
    pub module_load_order: Vec<String>,
    /// The vmlinux written.
    pub vmlinux: Output,
    /// The initramfs written.
    pub initramfs: Output,
}

/// Inputs of a bundle build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Bundle format version.
    pub format: u32,
    /// Package asked for (meta or versioned).
    pub requested_package: String,
    /// Versioned package used.
    pub kernel_package: String,
    /// Its exact Debian version.
    pub kernel_version: String,
    /// sha256 of the `.deb`.
    pub kernel_deb_sha256: String,
    /// sha256 of the agent binary.
    pub agent_sha256: String,
    /// Module names asked for.
    pub modules: Vec<String>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// File name inside the work directory.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
}

/// Builds (or reuses) the guest bundle described by `spec`. Blocking: call
/// it from `spawn_blocking` in async code.
pub fn build(spec: &BundleSpec) -> Result<Bundle> {
    let work = &spec.work_dir;
    let kdir = work.join("kernel");
    std::fs::create_dir_all(&kdir).map_err(GuestError::io("create", &kdir))?;
    // One build per work directory at a time (daemon and hearthctl may race).
    let lock_path = work.join(".lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(GuestError::io("open", &lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, e)| GuestError::Io {
            op: "lock",
            path: lock_path.clone(),
            source: e.into(),
        },
    )?;
    let requested = spec
        .kernel_package
        .clone()
        .unwrap_or_else(|| DEFAULT_KERNEL_PACKAGE.to_string());
    let (pkg, deb) = match &spec.kernel_deb {
        Some(deb) => (kernel::deb_identity(deb)?, deb.clone()),
        None => {
            let pkg = kernel::resolve(&requested)?;
            let deb = kernel::download(&pkg, &kdir)?;
            (pkg, deb)
        }
    };
    tracing::info!(package = %pkg.package, version = %pkg.version, "guest kernel package");
    let unpacked = kernel::unpack(&pkg, &deb, &kdir)?;
    let inputs = Inputs {
        format: FORMAT,
        requested_package: requested,
        kernel_package: pkg.package.clone(),
        kernel_version: pkg.version.clone(),
        kernel_deb_sha256: unpacked.deb_sha256.clone(),
        agent_sha256: sha256_file(&spec.agent_binary)?,
        modules: GUEST_MODULES.iter().map(|s| s.to_string()).collect(),
    };
    let manifest_path = work.join("manifest.json");
    if let Some(m) = up_to_date(work, &manifest_path, &inputs)? {
        tracing::info!(dir = %work.display(), "guest bundle up to date");
        return Ok(Bundle {
            vmlinux: work.join(&m.vmlinux.file),
            initramfs: work.join(&m.initramfs.file),
            kernel_release: m.kernel_release.clone(),
            manifest: m,
            rebuilt: false,
        });
    }

    let vmlinuz = unpacked.vmlinuz();
    let bz = std::fs::read(&vmlinuz).map_err(GuestError::io("read", &vmlinuz))?;
    let (elf, compression) = bzimage::extract_vmlinux_with(&bz)?;
    drop(bz);
    let vmlinux = write_output(work, "vmlinux", &elf)?;
    drop(elf);

    let set = modules::resolve(&unpacked.modules_root(), GUEST_MODULES)?;
    let agent =
        std::fs::read(&spec.agent_binary).map_err(GuestError::io("read", &spec.agent_binary))?;
    let (cpio, load_order) = initramfs(&agent, &unpacked.modules_root(), &unpacked.release, &set)?;
    let initramfs = write_output(work, "initramfs.cpio", &cpio)?;

    let manifest = Manifest {
        inputs,
        kernel_release: unpacked.release.clone(),
        kernel_compression: compression.name().to_string(),
        builtin_modules: set.builtin.clone(),
        module_load_order: load_order,
        vmlinux,
        initramfs,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(GuestError::Manifest)?;
    atomic_write(&manifest_path, &json)?;
    tracing::info!(release = %manifest.kernel_release, compression = %manifest.kernel_compression, "guest bundle built");
    Ok(Bundle {
        vmlinux: work.join("vmlinux"),
        initramfs: work.join("initramfs.cpio"),
        kernel_release: unpacked.release,
        manifest,
        rebuilt: true,
    })
}

/// Builds the initramfs bytes; returns them and the load order written to
/// `/etc/hearth/modules` (paths of the decompressed modules).
pub fn initramfs(
    agent: &[u8],
    modules_root: &Path,
    release: &str,
    set: &modules::ModuleSet,
) -> Result<(Vec<u8>, Vec<String>)> {
    let mut w = CpioWriter::new(Vec::new());
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt", "etc/hearth"] {
        w.add_dir(d, 0o755)?;
    }
    w.add_char_device("dev/console", 0o600, 5, 1)?;
    w.add_char_device("dev/null", 0o666, 1, 3)?;
    w.add_file("init", 0o755, agent)?;
    let base = format!("lib/modules/{release}");
    let mut order = Vec::new();
    for rel in &set.load_order {
        let src = modules_root.join(rel);
        let raw = std::fs::read(&src).map_err(GuestError::io("read", &src))?;
        // Decompressed so that finit_module works whether or not the kernel
        // has CONFIG_MODULE_DECOMPRESS.
        let (ko, plain) = modules::decompress_module(rel, &raw)?;
        w.add_file(&format!("{base}/{plain}"), 0o644, &ko)?;
        order.push(plain);
    }
    let mut dep = String::new();
    for line in set.modules_dep.lines().filter(|l| !l.trim().is_empty()) {
        let plain = |p: &str| {
            p.trim_end_matches(".xz")
                .trim_end_matches(".zst")
                .trim_end_matches(".gz")
                .to_string()
        };
        let (path, deps) = line.split_once(':').unwrap_or((line, ""));
        if order.contains(&plain(path.trim())) {
            let deps: Vec<String> = deps.split_whitespace().map(plain).collect();
            let sep = if deps.is_empty() { "" } else { " " };
            dep.push_str(&format!("{}:{sep}{}\n", plain(path.trim()), deps.join(" ")));
        }
    }
    w.add_file(&format!("{base}/modules.dep"), 0o644, dep.as_bytes())?;
    let list: String = order.iter().map(|p| format!("{p}\n")).collect();
    w.add_file(MODULES_LIST, 0o644, list.as_bytes())?;
    Ok((w.finish()?, order))
}

fn up_to_date(work: &Path, manifest_path: &Path, inputs: &Inputs) -> Result<Option<Manifest>> {
    let Ok(text) = std::fs::read(manifest_path) else {
        return Ok(None);
    };
    let Ok(m) = serde_json::from_slice::<Manifest>(&text) else {
        return Ok(None);
    };
    if &m.inputs != inputs {
        return Ok(None);
    }
    for out in [&m.vmlinux, &m.initramfs] {
        let p = work.join(&out.file);
        if !p.is_file() || sha256_file(&p)? != out.sha256 {
            return Ok(None);
        }
    }
    Ok(Some(m))
}

fn write_output(work: &Path, file: &str, data: &[u8]) -> Result<Output> {
    atomic_write(&work.join(file), data)?;
    use sha2::Digest;
    Ok(Output {
        file: file.to_string(),
        size: data.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(data)),
    })
}

fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(GuestError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(GuestError::io("rename", path))
}

/// Identity of the package a bundle was built from, from its manifest.
pub fn package_of(m: &Manifest) -> KernelPackage {
    KernelPackage {
        package: m.inputs.kernel_package.clone(),
        version: m.inputs.kernel_version.clone(),
    }
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
