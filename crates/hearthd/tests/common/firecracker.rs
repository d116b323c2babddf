//! Where the Firecracker tests find Firecracker, its jailer, the seccomp
//! filter and the guest bundle (environment variables, else PATH and
//! defaults), and the backend config made of them. A test file includes it
//! next to `mod common`:
//!
//! ```ignore
//! mod common;
//! #[path = "common/firecracker.rs"]
//! mod fcenv;
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hearthd::backend::firecracker::FirecrackerConfig;

/// What the tests need from the host, or why they skip.
pub struct Fc {
    pub firecracker: PathBuf,
    pub jailer: PathBuf,
    pub seccomp: PathBuf,
    pub guest_dir: PathBuf,
}

pub fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

pub fn prerequisites(test: &str) -> Option<Fc> {
    if hearth_test_support::skip_unless_root(test) {
        return None;
    }
    let firecracker = env_path("HEARTH_FIRECRACKER").or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("firecracker"))
            .find(|p| p.is_file())
    });
    let Some(firecracker) = firecracker else {
        eprintln!("skipping {test}: no firecracker (set HEARTH_FIRECRACKER or put it on PATH)");
        return None;
    };
    if !firecracker.is_file() {
        eprintln!(
            "skipping {test}: no firecracker at {}",
            firecracker.display()
        );
        return None;
    }
    let dir = firecracker.parent().unwrap_or(Path::new("/")).to_owned();
    let jailer = env_path("HEARTH_JAILER").unwrap_or_else(|| dir.join("jailer"));
    let seccomp =
        env_path("HEARTH_SECCOMP_FILTER").unwrap_or_else(|| dir.join("empty-seccomp.bpf"));
    let guest_dir = env_path("HEARTH_GUEST_DIR")
        .unwrap_or_else(|| std::env::temp_dir().join("hearth-guest-cache"));
    for (what, p) in [
        ("jailer (HEARTH_JAILER)", &jailer),
        ("seccomp filter (HEARTH_SECCOMP_FILTER)", &seccomp),
        (
            "guest kernel (HEARTH_GUEST_DIR; `hearthctl guest build --work-dir <dir>`)",
            &guest_dir.join("vmlinux"),
        ),
        ("guest initramfs", &guest_dir.join("initramfs.cpio")),
    ] {
        if !p.is_file() {
            eprintln!("skipping {test}: no {what} at {}", p.display());
            return None;
        }
    }
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipping {test}: no /dev/kvm");
        return None;
    }
    Some(Fc {
        firecracker,
        jailer,
        seccomp,
        guest_dir,
    })
}

pub fn fc_config(fc: &Fc, allow_pvm: bool) -> FirecrackerConfig {
    FirecrackerConfig {
        binary: fc.firecracker.clone(),
        jailer: fc.jailer.clone(),
        seccomp_filter: fc.seccomp.clone(),
        guest_dir: fc.guest_dir.clone(),
        allow_pvm,
        ..FirecrackerConfig::default()
    }
}

/// Whether this host's /dev/kvm is PVM (what the backend's check says).
pub fn pvm_host() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}
