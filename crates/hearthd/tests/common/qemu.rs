//! The qemu backend's test set-up: the guest bundle (Debian's cloud kernel
//! and the agent initramfs, built once into `$TMPDIR/hearth-qemu-bundle`)
//! and an `Env` with the `qemu` runtime handler. A test file includes it next to
//! `mod common`:
//!
//! ```ignore
//! mod common;
//! #[path = "common/qemu.rs"]
//! mod vm;
//! ```
#![allow(dead_code)]

use std::path::PathBuf;

use crate::common::Env;
use hearthd::config::HandlerConfig;

/// The runtime handler of the qemu backend in these tests.
pub const HANDLER: &str = "qemu";

pub struct GuestBundle {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Builds (or reuses) the bundle; `Err` says why the test must skip.
pub fn prerequisites(test: &str) -> Result<GuestBundle, ()> {
    let skip = |why: String| {
        eprintln!("{test}: skipped: {why}");
        Err(())
    };
    if hearth_test_support::skip_unless_root(test) {
        return Err(());
    }
    let defaults = hearthd::backend::qemu::QemuConfig::default();
    if find_program("qemu-system-x86_64").is_none() {
        return skip("qemu-system-x86_64 not in PATH (apt-get install -t bookworm-backports qemu-system-x86)".into());
    }
    if !defaults.firmware.is_file() {
        return skip(format!(
            "{} missing (qemu-system-data)",
            defaults.firmware.display()
        ));
    }
    if find_program("vhost-device-vsock").is_none() {
        return skip("vhost-device-vsock not in PATH (cargo install vhost-device-vsock)".into());
    }
    let agent = match hearth_test_support::agent_binary() {
        Ok(a) => a,
        Err(e) => return skip(format!("no static agent: {e}")),
    };
    static BUNDLE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUNDLE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = std::env::temp_dir();
    let kernel_deb = std::env::var_os("HEARTH_KERNEL_DEB")
        .map(PathBuf::from)
        .or_else(|| {
            std::fs::read_dir(tmp.join("hearth-guest-cache/kernel"))
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        });
    let spec = hearth_guest::BundleSpec {
        kernel_deb,
        ..hearth_guest::BundleSpec::new(tmp.join("hearth-qemu-bundle"), agent)
    };
    match hearth_guest::build(&spec) {
        Ok(b) => Ok(GuestBundle {
            kernel: b.vmlinux,
            initramfs: b.initramfs,
            release: b.kernel_release,
        }),
        Err(e) => skip(format!(
            "cannot build the guest bundle: {}",
            hearthd::cri::status::chain(&e)
        )),
    }
}

pub fn qemu_env(bundle: &GuestBundle) -> Env {
    let mut env = Env::new();
    env.config.runtime_handlers.insert(
        HANDLER.into(),
        HandlerConfig {
            backend: "qemu".into(),
        },
    );
    env.config.qemu.kernel = bundle.kernel.clone();
    env.config.qemu.initramfs = bundle.initramfs.clone();
    env.config.qemu.accel = "auto".into();
    // TCG on a loaded 2-core machine: generous.
    env.config.timeouts.boot_ms = 60_000;
    env
}
