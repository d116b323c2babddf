//! Helpers shared by the root-only integration tests.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hearth_network::{run_in_netns, NetnsManager};

/// `None` (and a printed reason) unless the test can run here.
pub fn require(what: &str, tools: &[&str]) -> Option<()> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping {what}: needs root");
        return None;
    }
    for tool in tools {
        if !Path::new(tool).exists() {
            eprintln!("skipping {what}: {tool} is missing");
            return None;
        }
    }
    Some(())
}

/// A short name unique to this process and call, e.g. `hbr1234a`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        (b'a' + n as u8 % 26) as char
    )
}

/// Runs a command; returns (success, stdout + stderr).
pub fn run(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("{}: {e}", args[0])),
    }
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) -> String {
    let (ok, out) = run(args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

/// Runs a command inside a network namespace via `nsenter --net`.
pub fn in_ns(netns: &Path, args: &[&str]) -> (bool, String) {
    let net = format!("--net={}", netns.display());
    let mut all = vec!["nsenter", net.as_str()];
    all.extend_from_slice(args);
    run(&all)
}

/// Network namespaces in a temp dir, removed on drop.
pub struct Namespaces {
    pub mgr: NetnsManager,
    names: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Namespaces {
    pub fn new() -> Namespaces {
        let tmp = tempfile::tempdir().unwrap();
        Namespaces {
            mgr: NetnsManager::new(tmp.path().join("netns")),
            names: Vec::new(),
            _tmp: tmp,
        }
    }

    pub fn create(&mut self, name: &str) -> PathBuf {
        self.names.push(name.to_string());
        self.mgr.create(name).unwrap()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.mgr.remove(n);
        }
        let _ = self.mgr.unmount_dir();
    }
}

/// Deletes a host link on drop.
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.0]);
    }
}

/// Serves one TCP connection on `port` inside `netns` on a background
/// thread, answering `reply`. Returns once the listener is bound.
pub fn serve_once(netns: &Path, port: u16, reply: &'static str) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let netns = netns.to_path_buf();
    let handle = std::thread::spawn(move || {
        run_in_netns(&netns, move || {
            let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        use std::io::Write;
                        let _ = s.write_all(reply.as_bytes());
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("listener did not start");
    handle
}

/// Connects to `addr` (from the calling thread's namespace) and reads the
/// reply.
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
