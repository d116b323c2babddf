//! The v2 driver: the unified hierarchy (the guest kernel). Containers
//! live in `containers/<id>`, with the controllers enabled in the root's
//! and `containers`' `cgroup.subtree_control`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hearth_agent_proto::v1::ContainerResources;

use super::{check_unified_name, flat_key, mkdir, read_trim, write_err, write_file, CONTAINERS};

/// The leaf the agent moves itself into when the v2 root is not exempt
/// from the "no internal processes" rule.
const AGENT_LEAF: &str = "agent";
/// The v2 controllers enabled for containers (when the kernel has them).
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids"];

/// cgroup v2 `cpu.weight` from v1 shares (2..262144 → 1..10000).
pub fn shares_to_weight(shares: i64) -> u64 {
    let s = shares.clamp(2, 262_144) as u64;
    1 + ((s - 2) * 9999) / 262_142
}

/// cgroup v2 `cpu.max` from quota and period (runc's rules); `None` when
/// neither is set.
pub fn cpu_max(quota: i64, period: i64) -> Option<String> {
    if quota <= 0 && period == 0 {
        return None;
    }
    let period = if period == 0 { 100_000 } else { period };
    Some(if quota <= 0 {
        format!("max {period}")
    } else {
        format!("{quota} {period}")
    })
}

/// cgroup v2 `memory.swap.max` from the CRI's memory+swap limit and the
/// memory limit (runc's rules): `Ok(None)` when unset, `-1` is `max`.
pub fn swap(swap: i64, memory: i64) -> Result<Option<String>, String> {
    if memory == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    match swap {
        0 => return Ok(None),
        -1 => return Ok(Some("max".into())),
        _ => {}
    }
    if memory <= 0 {
        return Err("a swap limit needs a memory limit".into());
    }
    if swap < memory {
        return Err(format!(
            "memory+swap {swap} is below the memory limit {memory}"
        ));
    }
    Ok(Some((swap - memory).to_string()))
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// One file to write in a v2 cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The file.
    pub file: String,
    /// What goes in.
    pub value: String,
    /// A missing file is fine (swap not compiled in, and no swap asked).
    pub optional: bool,
}

/// What `r` writes into a v2 cgroup, in order (`unified` last, so it
/// overrides).
pub fn writes(r: &ContainerResources) -> Result<Vec<Write>, String> {
    let mut out = Vec::new();
    let mut put = |file: &str, value: String, optional: bool| {
        out.push(Write {
            file: file.into(),
            value,
            optional,
        })
    };
    if r.cpu_shares != 0 {
        put(
            "cpu.weight",
            shares_to_weight(r.cpu_shares).to_string(),
            false,
        );
    }
    if let Some(v) = cpu_max(r.cpu_quota, r.cpu_period) {
        put("cpu.max", v, false);
    }
    if r.memory_limit_bytes != 0 {
        put("memory.max", limit(r.memory_limit_bytes), false);
    }
    if let Some(v) = swap(r.memory_swap_limit_bytes, r.memory_limit_bytes)? {
        let optional = v == "max" || v == "0";
        put("memory.swap.max", v, optional);
    }
    if !r.cpuset_cpus.is_empty() {
        put("cpuset.cpus", r.cpuset_cpus.clone(), false);
    }
    if !r.cpuset_mems.is_empty() {
        put("cpuset.mems", r.cpuset_mems.clone(), false);
    }
    let mut unified: Vec<_> = r.unified.iter().collect();
    unified.sort();
    for (name, value) in unified {
        check_unified_name(name)?;
        put(name, value.clone(), false);
    }
    Ok(out)
}

pub(super) fn apply(dir: &Path, r: &ContainerResources) -> Result<(), String> {
    for w in writes(r)? {
        let path = dir.join(&w.file);
        match write_file(&path, &w.value) {
            Ok(()) => {}
            Err(e) if w.optional && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "{}: no such cgroup file (is its controller enabled in the guest kernel?)",
                    path.display()
                ))
            }
            Err(e) => return Err(write_err(&path, &w.value, &e)),
        }
    }
    Ok(())
}

/// Enables the controllers for containers: in the root's and in
/// `containers`' `cgroup.subtree_control`. Returns `containers`.
pub(super) fn prepare_parent(root: &Path) -> Result<PathBuf, String> {
    let available = read_trim(&root.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    match enable_controllers(root, &wanted) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            // Not the real root (a cgroup namespace on a v2 host): it may
            // not both hold processes and enable controllers. Move the
            // agent (and whatever else is there) into a leaf.
            let leaf = root.join(AGENT_LEAF);
            mkdir(&leaf)?;
            let procs = fs::read_to_string(root.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                match write_file(&leaf.join("cgroup.procs"), pid) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(write_err(&leaf.join("cgroup.procs"), pid, &e)),
                }
            }
            enable_controllers(root, &wanted).map_err(|e| {
                write_err(&root.join("cgroup.subtree_control"), &wanted.join(" "), &e)
            })?;
        }
        Err(e) => {
            return Err(write_err(
                &root.join("cgroup.subtree_control"),
                &wanted.join(" "),
                &e,
            ))
        }
        Ok(()) => {}
    }
    let parent = root.join(CONTAINERS);
    mkdir(&parent)?;
    enable_controllers(&parent, &wanted).map_err(|e| {
        write_err(
            &parent.join("cgroup.subtree_control"),
            &wanted.join(" "),
            &e,
        )
    })?;
    Ok(parent)
}

/// Writes `+c` for each of `wanted` not yet in `dir`'s subtree_control.
fn enable_controllers(dir: &Path, wanted: &[&str]) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let current = read_trim(&file).unwrap_or_default();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !current.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&file, &missing.join(" "))
}

/// Whether `memory.events` of the container's cgroup `dir` counts an OOM
/// kill.
pub(super) fn oom_killed(dir: &Path) -> bool {
    fs::read_to_string(dir.join("memory.events"))
        .ok()
        .and_then(|t| flat_key(&t, "oom_kill"))
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::super::{fake_cgroup, read_all, resources, Driver};
    use super::*;

    const V2_FILES: &[&str] = &[
        "cgroup.procs",
        "cgroup.controllers",
        "cgroup.subtree_control",
        "cpu.weight",
        "cpu.max",
        "memory.max",
        "memory.swap.max",
        "memory.events",
        "memory.high",
        "memory.oom.group",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
    ];

    fn v2_fake() -> (tempfile::TempDir, Driver) {
        let t = tempfile::tempdir().unwrap();
        fake_cgroup(t.path(), &["cgroup.procs", "cgroup.subtree_control"]);
        fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let d = Driver::V2 {
            root: t.path().to_owned(),
        };
        (t, d)
    }

    #[test]
    fn conversions_follow_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 30), 10_000);
        assert_eq!(cpu_max(0, 0), None);
        assert_eq!(cpu_max(50_000, 100_000).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(50_000, 0).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(0, 100_000).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(-1, 200_000).as_deref(), Some("max 200000"));
        assert_eq!(swap(0, 100), Ok(None));
        assert_eq!(swap(150, 100), Ok(Some("50".into())));
        assert_eq!(swap(100, 100), Ok(Some("0".into())));
        assert_eq!(swap(-1, 100), Ok(Some("max".into())));
        assert_eq!(swap(0, -1), Ok(Some("max".into())));
        assert!(swap(50, 100).is_err());
        assert!(swap(50, 0).is_err());
    }

    #[test]
    fn v2_create_writes_the_limits() {
        let (t, d) = v2_fake();
        let dir = t.path().join("containers/abc");
        // The kernel makes these on mkdir; the fake makes them first.
        fake_cgroup(&t.path().join("containers"), &["cgroup.subtree_control"]);
        fake_cgroup(&dir, V2_FILES);
        d.create("abc", Some(&resources())).unwrap();
        let root_ctl = fs::read_to_string(t.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(root_ctl, "+cpu +cpuset +memory +pids");
        let ctl = fs::read_to_string(t.path().join("containers/cgroup.subtree_control")).unwrap();
        assert_eq!(ctl, "+cpu +cpuset +memory +pids");
        let files = read_all(&dir);
        assert_eq!(files["cpu.weight"], "20");
        assert_eq!(files["cpu.max"], "50000 100000");
        assert_eq!(files["memory.max"], (32 << 20).to_string());
        assert_eq!(files["memory.swap.max"], (16 << 20).to_string());
        assert_eq!(files["cpuset.cpus"], "0-1");
        assert_eq!(files["cpuset.mems"], "0");
        assert_eq!(files["memory.high"], "30000000");
        assert_eq!(files["pids.max"], "");
        assert_eq!(d.procs("abc"), vec![dir.join("cgroup.procs")]);
        assert!(d.procs("other").is_empty());

        // An update writes only what it sets.
        d.update(
            "abc",
            &ContainerResources {
                memory_limit_bytes: 64 << 20,
                cpu_quota: 200_000,
                cpu_period: 100_000,
                ..Default::default()
            },
        )
        .unwrap();
        let files = read_all(&dir);
        assert_eq!(files["memory.max"], (64 << 20).to_string());
        assert_eq!(files["cpu.max"], "200000 100000");
        assert_eq!(files["cpu.weight"], "20");
        assert!(d.update("nope", &resources()).is_err());
    }

    #[test]
    fn v2_refuses_a_missing_controller_file_and_rolls_back() {
        let (t, d) = v2_fake();
        let dir = t.path().join("containers/abc");
        fake_cgroup(&t.path().join("containers"), &["cgroup.subtree_control"]);
        fake_cgroup(&dir, &[]);
        let mut r = ContainerResources::default();
        r.unified.insert("hugetlb.2MB.max".into(), "0".into());
        let err = d.create("abc", Some(&r)).unwrap_err();
        assert!(err.contains("hugetlb.2MB.max"), "{err}");
        // Rolled back (the fake dir is empty, so rmdir works).
        assert!(!dir.exists());
        // No swap file and no swap asked: fine.
        fake_cgroup(&dir, &["memory.max"]);
        d.create(
            "abc",
            Some(&ContainerResources {
                memory_limit_bytes: -1,
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(read_all(&dir)["memory.max"], "max");
    }

    #[test]
    fn v2_oom_from_memory_events() {
        let (t, d) = v2_fake();
        let dir = t.path().join("containers/abc");
        fake_cgroup(&dir, V2_FILES);
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\noom_group_kill 0\n",
        )
        .unwrap();
        assert!(!d.oom_killed("abc"));
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert!(d.oom_killed("abc"));
        assert!(!d.oom_killed("gone"));
        assert!(!d.oom_killed("../abc"));
    }
}
