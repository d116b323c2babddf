//! Shared set-up of hearthd's benchmarks: a temp-dir hearthd as its own
//! process on the namespaces backend with loopback-only pods, a CRI channel
//! to it, sample statistics and process RSS. A bench includes it next to the
//! tests' `common` (whose temp dir and CRI helpers it uses):
//!
//! ```ignore
//! #[path = "../tests/common/mod.rs"]
//! mod common;
//! mod support;
//! ```
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hearthd::config::Config;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Why a benchmark cannot run here, if it cannot: it needs root and the
/// static agent.
pub fn cannot_run() -> Option<String> {
    if !hearth_test_support::is_root() {
        return Some("needs root".into());
    }
    hearth_test_support::agent_binary()
        .err()
        .map(|e| format!("no agent binary: {e}"))
}

/// The count in environment variable `var` (e.g. `RUNS=n`), else `default`.
pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` to its end on a multi-threaded tokio runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A hearthd config in a fresh temp dir: namespaces backend, a CNI network
/// of just the loopback plugin, its own cgroup parent, warnings only.
pub fn config(prefix: &str) -> (tempfile::TempDir, Config) {
    let (dir, tag) = crate::common::temp_dir(prefix);
    let mut config = Config {
        address: dir.path().join("hearth.sock"),
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        default_runtime_handler: "namespaces".into(),
        log_level: "warn".into(),
        ..Default::default()
    };
    config.namespaces.agent_binary = hearth_test_support::agent_binary().unwrap();
    config.network.netns_dir = dir.path().join("netns");
    config.cgroups.default_parent = format!("/{tag}");
    let cni = dir.path().join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    std::fs::write(
        cni.join("10-loopback.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "bench-lo", "plugins": [{"type": "loopback"}]}"#,
    )
    .unwrap();
    config.network.cni_conf_dir = cni;
    config.network.cni_bin_dirs = vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()];
    (dir, config)
}

/// hearthd as its own process; SIGTERM and clean-up on drop.
pub struct Hearthd {
    child: Child,
    socket: PathBuf,
    netns_dir: PathBuf,
}

impl Hearthd {
    /// Writes `config` into `dir` and starts hearthd on it.
    pub fn spawn(dir: &Path, config: &Config) -> Hearthd {
        let path = dir.join("config.toml");
        std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hearthd"))
            .arg("--config")
            .arg(&path)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Hearthd {
            child,
            socket: config.address.clone(),
            netns_dir: config.network.netns_dir.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A channel to its CRI socket once it answers Version.
    pub async fn connect(&self) -> Channel {
        for _ in 0..400 {
            if let Ok(ch) = hearth_test_support::cri_channel(&self.socket).await {
                let mut c = RuntimeServiceClient::new(ch.clone());
                if c.version(cri::VersionRequest::default()).await.is_ok() {
                    return ch;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hearthd did not come up");
    }
}

impl Drop for Hearthd {
    fn drop(&mut self) {
        // SAFETY: plain signal to our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        unmount_netns_dir(&self.netns_dir);
    }
}

/// Unmounts the netns directory (hearthd makes it a mount point on first
/// use; a node-level mount, left for the bench to remove).
pub fn unmount_netns_dir(dir: &Path) {
    let d = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: umount2 with a valid C string.
    unsafe { libc::umount2(d.as_ptr(), libc::MNT_DETACH) };
}

/// A loopback-only pod (namespaces handler).
pub fn pod(prefix: &str, i: usize) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("{prefix}-{i}"),
            uid: format!("uid-{prefix}-{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("{prefix}-{i}"),
        ..Default::default()
    }
}

/// Milliseconds since `t`.
pub fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// (min, median, p95) of samples.
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
    (s[0], at(0.5), at(0.95))
}

/// The header of the table `print_row` writes.
pub fn print_header() {
    println!(
        "{:<40} {:>9} {:>9} {:>9}",
        "operation", "min ms", "median ms", "p95 ms"
    );
}

/// One table row: name, min, median, p95.
pub fn print_row(name: &str, samples: &[f64]) {
    let (min, med, p95) = stats(samples);
    println!("{name:<40} {min:>9.1} {med:>9.1} {p95:>9.1}");
}

/// A process's resident set, KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
