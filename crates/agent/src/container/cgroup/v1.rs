//! The v1 driver: one hierarchy per controller set (this project's hosts,
//! namespaces backend). A container gets `containers/<id>` in each
//! hierarchy of cpu, cpuacct, cpuset, memory and pids.

use std::fs;
use std::path::Path;

use hearth_agent_proto::v1::ContainerResources;

use super::{flat_key, read_trim, write_err, write_file, Hierarchy};

/// The v1 controllers a container gets a cgroup of its own in.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "pids"];

/// The v1 hierarchies under `root`: directories (not the per-controller
/// symlinks) holding `cgroup.procs` but no `cgroup.controllers` (that is
/// a v2 mount, e.g. `unified`), named by their controllers.
pub fn hierarchies(root: &Path) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mount = e.path();
        if !mount.join("cgroup.procs").exists() || mount.join("cgroup.controllers").exists() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let controllers: Vec<String> = name
            .split(',')
            .filter(|c| V1_CONTROLLERS.contains(c))
            .map(str::to_owned)
            .collect();
        if !controllers.is_empty() {
            out.push(Hierarchy { mount, controllers });
        }
    }
    out.sort_by(|a, b| a.mount.cmp(&b.mount));
    out
}

pub(super) fn apply(controller: &str, dir: &Path, r: &ContainerResources) -> Result<(), String> {
    match controller {
        "cpu" => {
            if r.cpu_shares != 0 {
                write_v1(dir, "cpu.shares", &r.cpu_shares.to_string())?;
            }
            cpu_quota(dir, r.cpu_quota, r.cpu_period)
        }
        "cpuset" => {
            if !r.cpuset_cpus.is_empty() {
                write_v1(dir, "cpuset.cpus", &r.cpuset_cpus)?;
            }
            if !r.cpuset_mems.is_empty() {
                write_v1(dir, "cpuset.mems", &r.cpuset_mems)?;
            }
            Ok(())
        }
        "memory" => memory(dir, r.memory_limit_bytes, r.memory_swap_limit_bytes),
        "pids" => match r.unified.get("pids.max") {
            Some(v) => write_v1(dir, "pids.max", v),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn write_v1(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    write_file(&path, value).map_err(|e| write_err(&path, value, &e))
}

/// Period first; a period the kernel refuses against the old quota
/// (EINVAL) is retried after the quota (runc's order).
fn cpu_quota(dir: &Path, quota: i64, period: i64) -> Result<(), String> {
    let mut retry_period = false;
    if period != 0 {
        let path = dir.join("cpu.cfs_period_us");
        match write_file(&path, &period.to_string()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota != 0 => retry_period = true,
            Err(e) => return Err(write_err(&path, &period.to_string(), &e)),
        }
    }
    if quota != 0 {
        write_v1(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        if retry_period {
            write_v1(dir, "cpu.cfs_period_us", &period.to_string())?;
        }
    }
    Ok(())
}

/// `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` (which must
/// stay ≥ the former): raising writes memsw first, lowering the limit
/// first (runc's order).
fn memory(dir: &Path, memory: i64, swap: i64) -> Result<(), String> {
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let has_memsw = memsw.exists();
    let swap = if memory == -1 && swap == 0 && has_memsw {
        -1
    } else {
        swap
    };
    let set_mem = || {
        if memory == 0 {
            return Ok(());
        }
        let path = dir.join("memory.limit_in_bytes");
        write_file(&path, &memory.to_string()).map_err(|e| {
            let mut msg = write_err(&path, &memory.to_string(), &e);
            if e.raw_os_error() == Some(libc::EBUSY) {
                msg.push_str(" (the container uses more memory than that)");
            }
            msg
        })
    };
    let set_swap = || {
        if swap == 0 {
            return Ok(());
        }
        if !has_memsw {
            // No swap accounting: fine unless real swap was asked for.
            return if swap == -1 || swap == memory {
                Ok(())
            } else {
                Err(format!(
                    "a swap limit was asked for but {} does not exist (no swap accounting)",
                    memsw.display()
                ))
            };
        }
        write_v1(dir, "memory.memsw.limit_in_bytes", &swap.to_string())
    };
    if memory != 0 && swap != 0 {
        let current = read_trim(&dir.join("memory.limit_in_bytes"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if swap == -1 || current < swap as u64 {
            set_swap()?;
            return set_mem();
        }
    }
    set_mem()?;
    set_swap()
}

pub(super) fn oom_killed(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("memory.oom_control")) else {
        return false;
    };
    match flat_key(&text, "oom_kill") {
        Some(n) => n > 0,
        // Kernels before 4.13 do not count kills: a cgroup still under
        // OOM is the best hint left.
        None => flat_key(&text, "under_oom").is_some_and(|n| n > 0),
    }
}

/// A new v1 cpuset cgroup starts with no cpus and mems; tasks cannot
/// join it until they are set: copies the parent's.
pub(super) fn inherit_cpuset(dir: &Path) -> Result<(), String> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = read_trim(&dir.join(f));
        if mine.as_deref().is_some_and(|v| v.is_empty()) {
            if let Some(value) = read_trim(&parent.join(f)) {
                write_v1(dir, f, &value)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{fake_cgroup, read_all, resources, Driver};
    use super::*;

    fn v1_fake() -> (tempfile::TempDir, Driver) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for h in [
            "cpu,cpuacct",
            "memory",
            "cpuset",
            "pids",
            "systemd",
            "blkio",
        ] {
            fake_cgroup(&root.join(h), &["cgroup.procs"]);
        }
        fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        fake_cgroup(
            &root.join("unified"),
            &["cgroup.procs", "cgroup.controllers"],
        );
        let hierarchies = hierarchies(root);
        (t, Driver::V1 { hierarchies })
    }

    fn v1_container(root: &Path, id: &str) {
        for dir in [
            root.join("cpuset/containers"),
            root.join("cpuset/containers").join(id),
        ] {
            fake_cgroup(&dir, &["cgroup.procs", "cpuset.cpus", "cpuset.mems"]);
        }
        fake_cgroup(
            &root.join("cpu,cpuacct/containers").join(id),
            &[
                "cgroup.procs",
                "cpu.shares",
                "cpu.cfs_quota_us",
                "cpu.cfs_period_us",
            ],
        );
        let mem = root.join("memory/containers").join(id);
        fake_cgroup(
            &mem,
            &[
                "cgroup.procs",
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.oom_control",
            ],
        );
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        fake_cgroup(
            &root.join("pids/containers").join(id),
            &["cgroup.procs", "pids.max"],
        );
    }

    #[test]
    fn v1_hierarchies_are_found_by_controller() {
        let (t, d) = v1_fake();
        let Driver::V1 { hierarchies } = d else {
            panic!("v1 expected")
        };
        let names: Vec<(String, Vec<String>)> = hierarchies
            .iter()
            .map(|h| {
                (
                    h.mount
                        .strip_prefix(t.path())
                        .unwrap()
                        .display()
                        .to_string(),
                    h.controllers.clone(),
                )
            })
            .collect();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names,
            vec![
                ("cpu,cpuacct".into(), v(&["cpu", "cpuacct"])),
                ("cpuset".into(), v(&["cpuset"])),
                ("memory".into(), v(&["memory"])),
                ("pids".into(), v(&["pids"])),
            ]
        );
    }

    #[test]
    fn v1_create_writes_the_limits() {
        let (t, d) = v1_fake();
        let root = t.path();
        v1_container(root, "abc");
        let mut r = resources();
        r.unified = [("pids.max".to_string(), "100".to_string())].into();
        r.cpuset_cpus.clear();
        d.create("abc", Some(&r)).unwrap();
        let cpu = read_all(&root.join("cpu,cpuacct/containers/abc"));
        assert_eq!(cpu["cpu.shares"], "512");
        assert_eq!(cpu["cpu.cfs_quota_us"], "50000");
        assert_eq!(cpu["cpu.cfs_period_us"], "100000");
        let mem = read_all(&root.join("memory/containers/abc"));
        assert_eq!(mem["memory.limit_in_bytes"], (32 << 20).to_string());
        assert_eq!(mem["memory.memsw.limit_in_bytes"], (48 << 20).to_string());
        // cpuset: inherited from the parent where unset, down the chain.
        let set = read_all(&root.join("cpuset/containers/abc"));
        assert_eq!(set["cpuset.cpus"], "0-3");
        assert_eq!(set["cpuset.mems"], "0");
        assert_eq!(
            read_all(&root.join("cpuset/containers"))["cpuset.cpus"],
            "0-3"
        );
        assert_eq!(
            read_all(&root.join("pids/containers/abc"))["pids.max"],
            "100"
        );
        let mut procs = d.procs("abc");
        procs.sort();
        assert_eq!(
            procs,
            ["cpu,cpuacct", "cpuset", "memory", "pids"]
                .iter()
                .map(|h| root.join(h).join("containers/abc/cgroup.procs"))
                .collect::<Vec<_>>()
        );
        // Unlimited memory without swap: both unlimited.
        d.update(
            "abc",
            &ContainerResources {
                memory_limit_bytes: -1,
                cpu_quota: -1,
                ..Default::default()
            },
        )
        .unwrap();
        let mem = read_all(&root.join("memory/containers/abc"));
        assert_eq!(mem["memory.limit_in_bytes"], "-1");
        assert_eq!(mem["memory.memsw.limit_in_bytes"], "-1");
        let cpu = read_all(&root.join("cpu,cpuacct/containers/abc"));
        assert_eq!(cpu["cpu.cfs_quota_us"], "-1");
        assert_eq!(cpu["cpu.shares"], "512");
    }

    #[test]
    fn v1_refuses_v2_only_files() {
        let (t, d) = v1_fake();
        v1_container(t.path(), "abc");
        let mut r = ContainerResources::default();
        r.unified.insert("memory.high".into(), "1".into());
        let err = d.create("abc", Some(&r)).unwrap_err();
        assert!(err.contains("memory.high"), "{err}");
        assert!(d.update("abc", &r).is_err());
    }

    #[test]
    fn v1_oom_from_oom_control() {
        let (t, d) = v1_fake();
        v1_container(t.path(), "abc");
        let f = t.path().join("memory/containers/abc/memory.oom_control");
        fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        assert!(!d.oom_killed("abc"));
        fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert!(d.oom_killed("abc"));
        // Old kernels: no counter.
        fs::write(&f, "oom_kill_disable 0\nunder_oom 1\n").unwrap();
        assert!(d.oom_killed("abc"));
        fs::write(&f, "oom_kill_disable 0\nunder_oom 0\n").unwrap();
        assert!(!d.oom_killed("abc"));
    }
}
