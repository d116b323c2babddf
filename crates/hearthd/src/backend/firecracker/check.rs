//! Whether the firecracker backend can run on this host, and why not.
//!
//! Everything here is synchronous and cheap after the first call: the
//! binary's `--version` is run once per (path, size, mtime) and cached,
//! because `check()` runs on every RunPodSandbox and Status.
//!
//! PVM: `/dev/kvm` may be provided by a paravirtual KVM (the `kvm_pvm`
//! module) on machines that are themselves VMs. Firecracker starts and
//! accepts its whole API there, but a stock guest kernel cannot boot. Two
//! signals, either one is enough:
//! 1. `/sys/module/kvm_pvm` exists: the PVM vendor module is loaded. KVM
//!    takes exactly one vendor module (`kvm_intel`, `kvm_amd` or `kvm_pvm`),
//!    so when it is present it is the one behind `/dev/kvm`. It is
//!    readable without privileges and needs no dmesg.
//! 2. `/dev/kvm` exists while `/proc/cpuinfo` has the `hypervisor` flag and
//!    neither `vmx` nor `svm`: a KVM without hardware virtualization, which
//!    is what PVM is (covers a kernel with PVM built in, where
//!    `/sys/module/kvm_pvm` might not appear).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hearth_firecracker::FirecrackerVersion;

/// A binary's identity: path, size, mtime.
type FileKey = (PathBuf, u64, i64);

/// The result of running `<binary> --version`, cached by file identity.
#[derive(Default)]
pub(crate) struct VersionCache {
    entries: Mutex<HashMap<FileKey, Result<FirecrackerVersion, String>>>,
}

impl VersionCache {
    /// Runs (once per file version) `binary --version` and checks ≥ 1.8.
    pub(crate) fn check(&self, binary: &Path) -> Result<FirecrackerVersion, String> {
        let meta = std::fs::metadata(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
        let key = (binary.to_owned(), meta.size(), meta.mtime());
        if let Some(r) = self.entries.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return r;
        }
        let r = version_of(binary);
        if let Ok(mut m) = self.entries.lock() {
            m.insert(key, r.clone());
        }
        r
    }
}

/// `binary --version`, bounded by 5 s, parsed and checked against 1.8.
fn version_of(binary: &Path) -> Result<FirecrackerVersion, String> {
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(2))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} --version did not finish", binary.display()));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{} --version: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = FirecrackerVersion::from_version_output(&text).ok_or_else(|| {
        let first: String = text.lines().next().unwrap_or("").chars().take(80).collect();
        format!(
            "{} is not Firecracker (its --version printed {first:?}); set firecracker.binary to a Firecracker >= 1.8",
            binary.display()
        )
    })?;
    v.check_supported().map_err(|e| {
        format!(
            "{}: {e}; install Firecracker >= 1.8 and set firecracker.binary",
            binary.display()
        )
    })
}

/// Resolves a bare program name on `PATH`; a path with a `/` is kept.
pub(crate) fn resolve_program(p: &Path) -> Option<PathBuf> {
    if p.as_os_str().is_empty() {
        return None;
    }
    if p.components().count() > 1 || p.is_absolute() {
        return p.is_file().then(|| p.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// Why `/dev/kvm` here is PVM, if it is (see the module docs).
pub(crate) fn pvm_evidence() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    pvm_evidence_from(
        Path::new("/sys/module"),
        &cpuinfo,
        Path::new("/dev/kvm").exists(),
    )
}

/// [`pvm_evidence`] over explicit inputs (for tests).
pub(crate) fn pvm_evidence_from(
    sys_module: &Path,
    cpuinfo: &str,
    kvm_exists: bool,
) -> Option<String> {
    let module = sys_module.join("kvm_pvm");
    if module.exists() {
        return Some(format!("{} exists", module.display()));
    }
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let hw = flags.iter().any(|f| *f == "vmx" || *f == "svm");
    if kvm_exists && !flags.is_empty() && !hw && flags.contains(&"hypervisor") {
        return Some("/dev/kvm exists on a virtual CPU without vmx/svm".into());
    }
    None
}

/// The message for a PVM host (kept in one place; tests look for it).
pub(crate) fn pvm_message(evidence: &str) -> String {
    format!(
        "this host's /dev/kvm is paravirtual (PVM: {evidence}): Firecracker starts but a stock \
         guest kernel cannot boot; use the qemu or namespaces handler, or set \
         firecracker.allow_pvm = true to run the control plane anyway"
    )
}

/// Whether `/dev/kvm` can be opened read-write.
pub(crate) fn kvm_usable() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "no /dev/kvm: Firecracker needs KVM (load kvm_intel or kvm_amd, or use the qemu or namespaces handler)"
                .into(),
        ),
        Err(e) => Err(format!(
            "/dev/kvm cannot be opened read-write ({e}): run hearthd as root or give it access to /dev/kvm"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_signals() {
        let dir = tempfile::tempdir().unwrap();
        let intel = "flags\t\t: fpu vme vmx hypervisor\n";
        let pvm_cpu = "flags\t\t: fpu vme sse hypervisor\n";
        let bare = "flags\t\t: fpu vme svm\n";
        assert_eq!(pvm_evidence_from(dir.path(), intel, true), None);
        assert_eq!(pvm_evidence_from(dir.path(), bare, true), None);
        // No /dev/kvm: nothing to say about PVM (the kvm check speaks).
        assert_eq!(pvm_evidence_from(dir.path(), pvm_cpu, false), None);
        assert!(pvm_evidence_from(dir.path(), pvm_cpu, true)
            .unwrap()
            .contains("vmx/svm"));
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        assert!(pvm_evidence_from(dir.path(), intel, true)
            .unwrap()
            .contains("kvm_pvm"));
        assert!(pvm_message("x").contains("firecracker.allow_pvm = true"));
    }

    #[test]
    fn programs_resolve_on_path_or_by_path() {
        assert!(resolve_program(Path::new("sh")).is_some());
        assert_eq!(
            resolve_program(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(resolve_program(Path::new("no-such-program-hearth")).is_none());
        assert!(resolve_program(Path::new("")).is_none());
    }

    #[test]
    fn version_check_names_the_problem() {
        let cache = VersionCache::default();
        let e = cache.check(Path::new("/bin/true")).unwrap_err();
        assert!(e.contains("is not Firecracker"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("firecracker");
        // Written by a child process: a file this (multi-threaded) test
        // process had open for writing could be inherited by a concurrent
        // fork and make the exec fail with ETXTBSY.
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '#!/bin/sh\\necho \"Firecracker v1.7.0\"\\n' > \"$1\" && chmod 755 \"$1\"")
            .arg("sh")
            .arg(&old)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let e = cache.check(&old).unwrap_err();
        assert!(e.contains("too old") && e.contains("1.7.0"), "{e}");
    }
}
