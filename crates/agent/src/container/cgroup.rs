//! Each container's cgroup in the guest: created under the pod's, limits
//! written from the CRI's resources, OOM kills read back.
//!
//! The agent sees the pod's cgroup as the root of `/sys/fs/cgroup`: in a
//! VM the whole guest is the pod; on the namespaces backend the agent runs
//! in a cgroup namespace whose root is the pod's cgroup on the host. Two
//! drivers, chosen by what is mounted there ([`Driver::detect`]):
//!
//! - **v2** (the guest kernel): one unified hierarchy. Containers live in
//!   `containers/<id>`; the controllers are enabled in the root's and in
//!   `containers`' `cgroup.subtree_control` (`containers` holds no process,
//!   so the "no internal processes" rule holds; the root is exempt in a
//!   VM, and elsewhere the agent moves itself into a leaf `agent` first).
//!   OOM kills are `memory.events`' `oom_kill`.
//! - **v1** (this project's hosts, namespaces backend): a tmpfs with one
//!   hierarchy per controller set. Containers get `containers/<id>` in
//!   each hierarchy of cpu, cpuacct, cpuset, memory and pids. OOM kills
//!   are `memory.oom_control`'s `oom_kill` (kernels ≥ 4.13).
//!
//! The conversions follow runc's: `cpu.weight` from shares, `cpu.max` from
//! quota and period, `memory.swap.max` = swap limit − memory limit, and
//! the write orders that keep the kernel's checks happy on updates.
//!
//! Layout: here the API the container code calls, the [`Driver`], input
//! checks and file helpers; `v1` and `v2` the drivers' conversions and
//! writes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hearth_agent_proto::v1::ContainerResources;

mod v1;
mod v2;

/// Where the agent mounts (or finds) the cgroup filesystem.
const ROOT: &str = "/sys/fs/cgroup";
/// The directory under the pod's cgroup that holds the containers'.
const CONTAINERS: &str = "containers";
/// v2 core files the `unified` map may not write.
const V2_RESERVED: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.kill",
    "cgroup.subtree_control",
    "cgroup.type",
];
/// How long removal retries a cgroup whose last processes are still
/// being torn down (EBUSY).
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

/// Writes the calling process into each of `procs` (`cgroup.procs` files;
/// "0" means the writer).
pub fn join(procs: &[PathBuf]) -> Result<(), String> {
    for p in procs {
        std::fs::write(p, b"0").map_err(|e| format!("cannot join {}: {e}", p.display()))?;
    }
    Ok(())
}

/// The driver for what this agent sees at `/sys/fs/cgroup`, detected once.
fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let d = Driver::detect(Path::new(ROOT));
            match &d {
                Some(d) => tracing::info!(driver = ?d, "container cgroups"),
                None => tracing::warn!("no cgroup filesystem at {ROOT}: containers get no limits"),
            }
            d
        })
        .as_ref()
}

/// Creates the cgroup of container `id` with the limits `resources` asks
/// for.
pub fn create(id: &str, resources: Option<&ContainerResources>) -> Result<(), String> {
    match driver() {
        Some(d) => d.create(id, resources),
        None if resources.is_some_and(has_limits) => Err(format!(
            "no cgroup filesystem is mounted at {ROOT}: the limits of {id} cannot be applied"
        )),
        None => Ok(()),
    }
}

/// Checks `resources` against what this agent's cgroups can do, before
/// anything is made (bad values, bad `unified` names, v2-only files on v1).
pub fn check(resources: &ContainerResources) -> Result<(), String> {
    match driver() {
        Some(d) => d.validate(resources),
        None => validate(resources),
    }
}

/// The `cgroup.procs` files the processes of container `id` join (none
/// when it has no cgroup of its own).
pub fn procs(id: &str) -> Vec<PathBuf> {
    driver().map(|d| d.procs(id)).unwrap_or_default()
}

/// Applies new limits to the cgroup of container `id`.
pub fn update(id: &str, resources: &ContainerResources) -> Result<(), String> {
    match driver() {
        Some(d) => d.update(id, resources),
        None => Err(format!(
            "no cgroup filesystem is mounted at {ROOT}: the limits of {id} cannot be changed"
        )),
    }
}

/// Whether the OOM killer killed a process in the cgroup of container `id`.
pub fn oom_killed(id: &str) -> bool {
    driver().is_some_and(|d| d.oom_killed(id))
}

/// Removes the cgroup of container `id` (its processes are gone).
pub fn remove(id: &str) -> Result<(), String> {
    match driver() {
        Some(d) => d.remove(id),
        None => Ok(()),
    }
}

/// SIGKILLs every process listed in the cgroup `dir` (errors ignored: the
/// removal that follows says what is left).
fn kill_all(dir: &Path) {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether `r` asks for any limit.
pub fn has_limits(r: &ContainerResources) -> bool {
    r != &ContainerResources::default()
}

/// One v1 hierarchy: its mount point and the controllers (of
/// cpu, cpuacct, cpuset, memory, pids) it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Mount point (e.g. `/sys/fs/cgroup/memory`).
    pub mount: PathBuf,
    /// Its controllers that matter here (e.g. `cpu`, `cpuacct`).
    pub controllers: Vec<String>,
}

/// How the agent drives cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// The unified hierarchy mounted at `root`.
    V2 {
        /// Mount point (the pod's cgroup).
        root: PathBuf,
    },
    /// One hierarchy per controller set.
    V1 {
        /// The hierarchies with controllers containers are limited by.
        hierarchies: Vec<Hierarchy>,
    },
}

impl Driver {
    /// cgroup2 at `root`, or a directory (tmpfs) of v1 hierarchies;
    /// `None` when neither is there.
    pub fn detect(root: &Path) -> Option<Driver> {
        let fs = nix::sys::statfs::statfs(root).ok()?;
        if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return Some(Driver::V2 {
                root: root.to_owned(),
            });
        }
        let hierarchies = v1::hierarchies(root);
        (!hierarchies.is_empty()).then_some(Driver::V1 { hierarchies })
    }

    /// The container's cgroup directories (one per v1 hierarchy).
    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        match self {
            Driver::V2 { root } => vec![root.join(CONTAINERS).join(id)],
            Driver::V1 { hierarchies } => hierarchies
                .iter()
                .map(|h| h.mount.join(CONTAINERS).join(id))
                .collect(),
        }
    }

    /// Makes the container's cgroup(s) and applies `resources`; on error
    /// nothing of the container's is left.
    pub fn create(&self, id: &str, resources: Option<&ContainerResources>) -> Result<(), String> {
        check_id(id)?;
        let empty = ContainerResources::default();
        let r = resources.unwrap_or(&empty);
        self.validate(r)?;
        let made = self.make(id).and_then(|()| self.apply(id, r));
        if let Err(e) = made {
            let _ = self.remove(id);
            return Err(e);
        }
        Ok(())
    }

    fn make(&self, id: &str) -> Result<(), String> {
        match self {
            Driver::V2 { root } => {
                let parent = v2::prepare_parent(root)?;
                mkdir(&parent.join(id))
            }
            Driver::V1 { hierarchies } => {
                for h in hierarchies {
                    let cpuset = h.controllers.iter().any(|c| c == "cpuset");
                    let parent = h.mount.join(CONTAINERS);
                    for dir in [&parent, &parent.join(id)] {
                        mkdir(dir)?;
                        if cpuset {
                            v1::inherit_cpuset(dir)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Applies new limits to an existing container cgroup.
    pub fn update(&self, id: &str, r: &ContainerResources) -> Result<(), String> {
        check_id(id)?;
        self.validate(r)?;
        if let Some(missing) = self.dirs(id).into_iter().find(|d| !d.is_dir()) {
            return Err(format!(
                "container {id} has no cgroup ({} is missing)",
                missing.display()
            ));
        }
        self.apply(id, r)
    }

    fn validate(&self, r: &ContainerResources) -> Result<(), String> {
        validate(r)?;
        if let Driver::V1 { .. } = self {
            if let Some(key) = r.unified.keys().find(|k| k.as_str() != "pids.max") {
                return Err(format!(
                    "resources.unified: {key:?} is a cgroup v2 file and this pod's cgroups are v1 \
                     (only pids.max has a v1 equivalent)"
                ));
            }
        }
        Ok(())
    }

    fn apply(&self, id: &str, r: &ContainerResources) -> Result<(), String> {
        match self {
            Driver::V2 { root } => v2::apply(&root.join(CONTAINERS).join(id), r),
            Driver::V1 { hierarchies } => {
                for h in hierarchies {
                    let dir = h.mount.join(CONTAINERS).join(id);
                    for c in &h.controllers {
                        v1::apply(c, &dir, r)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// The `cgroup.procs` files of the container's cgroup(s) that exist.
    pub fn procs(&self, id: &str) -> Vec<PathBuf> {
        if check_id(id).is_err() {
            return Vec::new();
        }
        self.dirs(id)
            .into_iter()
            .filter(|d| d.is_dir())
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Whether the kernel's OOM killer killed one of the container's
    /// processes.
    pub fn oom_killed(&self, id: &str) -> bool {
        if check_id(id).is_err() {
            return false;
        }
        match self {
            Driver::V2 { root } => v2::oom_killed(&root.join(CONTAINERS).join(id)),
            Driver::V1 { hierarchies } => hierarchies
                .iter()
                .filter(|h| h.controllers.iter().any(|c| c == "memory"))
                .any(|h| v1::oom_killed(&h.mount.join(CONTAINERS).join(id))),
        }
    }

    /// Removes the container's cgroup(s), waiting briefly for the last
    /// processes to leave. The shared `containers` parent stays.
    pub fn remove(&self, id: &str) -> Result<(), String> {
        check_id(id)?;
        // What outlived the container's init (in the pod's shared pid
        // namespace its children are not killed with it) goes now.
        for dir in self.dirs(id) {
            kill_all(&dir);
        }
        let mut first_err = None;
        for dir in self.dirs(id) {
            if let Err(e) = remove_dir(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if !super::is_container_id(id) {
        return Err(format!("{id:?} is not a container id"));
    }
    Ok(())
}

/// Checks the values and the `unified` names before anything is written.
pub fn validate(r: &ContainerResources) -> Result<(), String> {
    let bad = |field: &str, why: String| Err(format!("resources.{field}: {why}"));
    if r.cpu_period < 0 {
        return bad("cpu_period", format!("{} is negative", r.cpu_period));
    }
    if r.cpu_quota < -1 {
        return bad(
            "cpu_quota",
            format!("{} is neither -1 (no limit) nor positive", r.cpu_quota),
        );
    }
    if r.cpu_shares < 0 {
        return bad("cpu_shares", format!("{} is negative", r.cpu_shares));
    }
    if r.memory_limit_bytes < -1 {
        return bad(
            "memory_limit_in_bytes",
            format!(
                "{} is neither -1 (no limit) nor positive",
                r.memory_limit_bytes
            ),
        );
    }
    if r.memory_swap_limit_bytes < -1 {
        return bad(
            "memory_swap_limit_in_bytes",
            format!(
                "{} is neither -1 (no limit) nor positive",
                r.memory_swap_limit_bytes
            ),
        );
    }
    for (field, list) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if list.len() > 4096
            || !list
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
        {
            return bad(field, format!("{list:?} is not a list like 0-3,5"));
        }
    }
    v2::swap(r.memory_swap_limit_bytes, r.memory_limit_bytes)
        .map_err(|e| format!("resources.memory_swap_limit_in_bytes: {e}"))?;
    for (name, value) in &r.unified {
        check_unified_name(name).map_err(|e| format!("resources.unified: {e}"))?;
        if value.contains(['\0', '\n']) || value.len() > 4096 {
            return bad("unified", format!("the value of {name} is not one line"));
        }
    }
    Ok(())
}

/// A `unified` key must name a controller file of the cgroup itself.
pub fn check_unified_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if name.is_empty()
        || name.len() > 64
        || !ok_chars
        || name.contains("..")
        || name.starts_with('.')
        || name.ends_with('.')
        || !name.contains('.')
    {
        return Err(format!(
            "{name:?} is not a cgroup file name (like memory.high; no '/' or '..')"
        ));
    }
    if V2_RESERVED.contains(&name) {
        return Err(format!("{name} cannot be written through resources"));
    }
    Ok(())
}

/// The value of `key` in a flat keyed file (`key value` lines).
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create the cgroup {}: {e}", dir.display())),
    }
}

/// rmdir, retried while the kernel still counts processes in it.
fn remove_dir(dir: &Path) -> Result<(), String> {
    let end = std::time::Instant::now() + REMOVE_PATIENCE;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let procs = read_trim(&dir.join("cgroup.procs")).unwrap_or_default();
                return Err(format!(
                    "cannot remove the cgroup {}: {e} (processes: [{}])",
                    dir.display(),
                    procs.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
        }
    }
}

/// Writes a cgroup file in one write (no create: a missing file is
/// NotFound, as on cgroupfs).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

fn write_err(path: &Path, value: &str, e: &io::Error) -> String {
    format!("cannot write {value:?} to {}: {e}", path.display())
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// For tests: the values of a v1 or v2 container cgroup's files.
#[cfg(test)]
fn read_all(dir: &Path) -> std::collections::HashMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

/// For tests: a directory laid out like a cgroup (the kernel would make
/// the files on mkdir; here they are made by hand).
#[cfg(test)]
fn fake_cgroup(dir: &Path, files: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    for f in files {
        fs::write(dir.join(f), "").unwrap();
    }
}

/// For tests: limits of every kind.
#[cfg(test)]
fn resources() -> ContainerResources {
    ContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_bytes: 32 << 20,
        memory_swap_limit_bytes: 48 << 20,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        unified: [("memory.high".to_string(), "30000000".to_string())].into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_names_are_checked() {
        for ok in ["memory.high", "pids.max", "memory.oom.group", "io.weight"] {
            assert_eq!(check_unified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../memory.max",
            "a/b.max",
            "memory..max",
            ".hidden",
            "memory",
            "cgroup.procs",
            "cgroup.subtree_control",
            "memory.max\n",
        ] {
            assert!(check_unified_name(bad).is_err(), "{bad:?}");
        }
        let mut r = ContainerResources::default();
        r.unified.insert("../../etc.passwd".into(), "x".into());
        assert!(validate(&r).is_err());
        let mut r = ContainerResources::default();
        r.unified.insert("memory.high".into(), "1\n2".into());
        assert!(validate(&r).is_err());
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(validate(&resources()), Ok(()));
        assert_eq!(validate(&ContainerResources::default()), Ok(()));
        let cases: [fn(&mut ContainerResources); 7] = [
            |r| r.cpu_period = -5,
            |r| r.cpu_quota = -2,
            |r| r.cpu_shares = -1,
            |r| r.memory_limit_bytes = -7,
            |r| r.memory_swap_limit_bytes = 1,
            |r| r.cpuset_cpus = "0;1".into(),
            |r| r.cpuset_mems = "all".into(),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut r = resources();
            f(&mut r);
            assert!(validate(&r).is_err(), "case {i}");
        }
    }

    #[test]
    fn flat_keys() {
        assert_eq!(flat_key("a 1\noom_kill 7\n", "oom_kill"), Some(7));
        assert_eq!(flat_key("oom_kill_disable 0\n", "oom_kill"), None);
        assert_eq!(flat_key("oom_kill x\n", "oom_kill"), None);
    }

    #[test]
    fn bad_ids_touch_nothing() {
        let t = tempfile::tempdir().unwrap();
        let d = Driver::V2 {
            root: t.path().to_owned(),
        };
        assert!(d.create("../x", None).is_err());
        assert!(d.remove("a/b").is_err());
        assert!(d.procs("..").is_empty());
        assert!(!d.oom_killed(".."));
    }
}
