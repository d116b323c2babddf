//! What a test compares before and after: the host resources a sandbox may
//! hold. `diff` names every difference, so a failing test says what leaked.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A snapshot of host resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Mount points of this process's mount namespace.
    pub mounts: BTreeSet<String>,
    /// Attached loop devices and their backing files.
    pub loops: BTreeSet<String>,
    /// Entries of the netns directories watched.
    pub netns: BTreeSet<String>,
    /// Network links of the host.
    pub links: BTreeSet<String>,
    /// Processes whose command line mentions one of the watched names.
    pub processes: BTreeSet<String>,
    /// Open fds of this process (targets).
    pub fds: BTreeSet<String>,
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Netns directories to list.
    pub netns_dirs: Vec<PathBuf>,
    /// Substrings of command lines that mark our processes.
    pub process_names: Vec<String>,
    /// Mounts and fds under these paths are ours (others are ignored, so
    /// unrelated activity on the machine does not fail a test).
    pub paths: Vec<PathBuf>,
    /// When set, only links enslaved to these bridges (the pods' host-side
    /// veths) and the bridges themselves count; other tests running at the
    /// same time make links of their own.
    pub bridges: Vec<String>,
}

impl Snapshot {
    /// Takes a snapshot.
    pub fn take(w: &Watch) -> Snapshot {
        let ours = |s: &str| {
            w.paths.is_empty() || w.paths.iter().any(|p| s.contains(&*p.to_string_lossy()))
        };
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| ours(m))
            .collect();
        let loops = fs::read_dir("/sys/block")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let b = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
                        ours(b.trim()).then(|| format!("{name} -> {}", b.trim()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let netns = w
            .netns_dirs
            .iter()
            .flat_map(|d| {
                list(d)
                    .into_iter()
                    .map(move |n| format!("{}/{n}", d.display()))
            })
            .collect();
        let links = list(Path::new("/sys/class/net"))
            .into_iter()
            .filter(|l| {
                if w.bridges.is_empty() || w.bridges.contains(l) {
                    return true;
                }
                fs::read_link(format!("/sys/class/net/{l}/master"))
                    .ok()
                    .and_then(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .is_some_and(|m| w.bridges.contains(&m))
            })
            .collect();
        let me = std::process::id().to_string();
        let processes = fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let pid = e.file_name().to_string_lossy().into_owned();
                        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                            return None;
                        }
                        let cmd = fs::read(e.path().join("cmdline")).ok()?;
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                        let state = stat
                            .rsplit(") ")
                            .next()
                            .and_then(|s| s.split(' ').next())
                            .unwrap_or("?")
                            .to_owned();
                        (w.process_names.iter().any(|n| cmd.contains(n.as_str())))
                            .then(|| format!("{pid} [{state}] {}", cmd.trim()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fds = fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| fs::read_link(e.path()).ok())
                    .map(|t| t.to_string_lossy().into_owned())
                    .filter(|t| ours(t))
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            mounts,
            loops,
            netns,
            links,
            processes,
            fds,
        }
    }

    /// Everything in `after` that was not in `self` (and so leaked).
    pub fn leaked(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>| {
            for x in b.difference(a) {
                out.push(format!("{what}: {x}"));
            }
        };
        diff("mount", &self.mounts, &after.mounts);
        diff("loop device", &self.loops, &after.loops);
        diff("netns", &self.netns, &after.netns);
        diff("link", &self.links, &after.links);
        diff("process", &self.processes, &after.processes);
        diff("fd", &self.fds, &after.fds);
        out
    }
}

fn list(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
