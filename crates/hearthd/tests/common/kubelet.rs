//! The kubelet's side of volumes, as the end-to-end tests play it: pod
//! directories under a kubelet root, and the atomic writer's layout for
//! secret / configMap volumes (`..<timestamp>/` dirs, the `..data` link
//! swapped by rename, `key -> ..data/key` links).
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// `<root>/pods/<uid>/volumes/kubernetes.io~<kind>/<name>`.
pub fn volume_dir(root: &Path, uid: &str, kind: &str, name: &str) -> PathBuf {
    root.join("pods")
        .join(uid)
        .join("volumes")
        .join(format!("kubernetes.io~{kind}"))
        .join(name)
}

/// Writes `files` into `dir` the way the kubelet's atomic writer does: a
/// new timestamped directory, `..data_tmp` renamed over `..data`, the
/// user-visible links, then the old timestamped directory removed.
pub fn write_atomic(dir: &Path, files: &[(&str, &str)]) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(dir).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let ts = format!(
        "..2026_11_28_19_00_00.{:09}",
        SEQ.fetch_add(1, Ordering::Relaxed) + std::process::id()
    );
    std::fs::create_dir(dir.join(&ts)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&ts).join(name), content).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}
