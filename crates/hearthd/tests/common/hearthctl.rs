//! hearthctl as the tests run it: its binary, and a runner against one
//! hearthd socket. A test file includes it next to `mod common`:
//!
//! ```ignore
//! mod common;
//! #[path = "common/hearthctl.rs"]
//! mod hearthctl;
//! ```
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// hearthctl's binary: HEARTHCTL_BIN (scripts/test.sh builds and sets it),
/// else target/debug/hearthctl if it was built; `None` (and why) when
/// `test` must skip.
pub fn binary(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTHCTL_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/hearthctl");
    if !p.exists() {
        eprintln!(
            "{test}: skipped: no hearthctl binary (build it with cargo build -p hearthctl or set HEARTHCTL_BIN)"
        );
        return None;
    }
    Some(p)
}

/// What one hearthctl call did.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// hearthctl against the hearthd at `socket`, run from the workspace root
/// (so that `examples/…` paths resolve).
pub struct Hearthctl {
    pub bin: PathBuf,
    pub socket: PathBuf,
}

impl Hearthctl {
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.bin)
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `run` that must exit 0; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, 0, "hearthctl {args:?} failed: {}", out.stderr);
        out.stdout
    }
}
