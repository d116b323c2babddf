//! Named network namespaces against the real kernel (needs root).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hearth_network::{run_in_netns, NetnsManager, NetworkError};

/// A manager on a temp dir; on drop removes the namespaces it knows and the
/// directory's own bind mount, even when the test failed.
struct Fixture {
    mgr: NetnsManager,
    names: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: needs root (mounts and network namespaces)");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mgr = NetnsManager::new(tmp.path().join("netns"));
        Some(Fixture {
            mgr,
            names: Vec::new(),
            _tmp: tmp,
        })
    }

    fn create(&mut self, name: &str) -> Result<PathBuf, NetworkError> {
        self.names.push(name.to_string());
        self.mgr.create(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.mgr.remove(n);
        }
        let _ = self.mgr.unmount_dir();
    }
}

/// `(mount point, fstype)` of every mount at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((PathBuf::from(fields[4]), fields.get(sep + 1)?.to_string()))
        })
        .filter(|(p, _)| p.starts_with(dir))
        .collect()
}

#[test]
fn create_gives_nsfs_mount_with_lo_up_and_remove_frees_it() {
    let Some(mut fx) = Fixture::new() else { return };
    let path = fx.create("hearth-test-a").unwrap();
    assert_eq!(path, fx.mgr.path("hearth-test-a"));
    assert!(fx.mgr.exists("hearth-test-a"));

    // The file is an nsfs mount, and a different namespace from ours.
    let mounts = mounts_under(&path);
    assert_eq!(mounts, vec![(path.clone(), "nsfs".to_string())]);
    let ours = fs::metadata("/proc/self/ns/net").unwrap();
    let theirs = fs::metadata(&path).unwrap();
    assert_ne!((ours.dev(), ours.ino()), (theirs.dev(), theirs.ino()));

    // Inside: lo is up and has 127.0.0.1; nothing else is there.
    let (ino_inside, lo_up, has_127, others) = run_in_netns(&path, || {
        let ino = fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let mut up = false;
        let mut v4 = false;
        let mut others = Vec::new();
        for ifa in nix::ifaddrs::getifaddrs().unwrap() {
            if ifa.interface_name != "lo" {
                others.push(ifa.interface_name.clone());
                continue;
            }
            up |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                v4 |= sin.ip() == std::net::Ipv4Addr::LOCALHOST;
            }
        }
        (ino, up, v4, others)
    })
    .unwrap();
    assert_eq!(
        ino_inside,
        theirs.ino(),
        "run_in_netns entered another netns"
    );
    assert!(lo_up, "lo is not up");
    assert!(has_127, "lo has no 127.0.0.1");
    assert!(others.is_empty(), "unexpected interfaces {others:?}");

    // Creating it again fails and does not touch the existing one.
    let err = fx.mgr.create("hearth-test-a").unwrap_err();
    assert!(matches!(err, NetworkError::NetnsExists { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert!(fx.mgr.exists("hearth-test-a"));

    fx.mgr.remove("hearth-test-a").unwrap();
    assert!(!path.exists());
    assert!(!fx.mgr.exists("hearth-test-a"));
    assert!(mounts_under(&path).is_empty(), "netns still mounted");
    fx.mgr.remove("hearth-test-a").unwrap();

    // The directory's own bind mount goes too when asked.
    fx.mgr.unmount_dir().unwrap();
    assert!(mounts_under(fx.mgr.dir()).is_empty());
}

#[test]
fn remove_missing_is_ok() {
    let Some(fx) = Fixture::new() else { return };
    fx.mgr.remove("never-created").unwrap();
    fx.mgr.remove("never-created").unwrap();
}

#[test]
fn stale_empty_file_is_replaced() {
    let Some(mut fx) = Fixture::new() else { return };
    fs::create_dir_all(fx.mgr.dir()).unwrap();
    fs::write(fx.mgr.path("stale"), b"").unwrap();
    assert!(!fx.mgr.exists("stale"));
    let path = fx.create("stale").unwrap();
    assert!(fx.mgr.exists("stale"));
    fx.mgr.remove("stale").unwrap();
    assert!(!path.exists());
}

#[test]
fn run_in_netns_refuses_plain_files() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    fs::write(&plain, b"").unwrap();
    let err = run_in_netns(&plain, || ()).unwrap_err();
    assert!(err.to_string().contains("plain"), "{err}");
    let missing = tmp.path().join("missing");
    assert!(run_in_netns(&missing, || ()).is_err());
}
