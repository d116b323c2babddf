//! The two helper commands the agent re-executes itself as (through
//! `/proc/self/exe`), so that all namespace and root set-up happens in a
//! fresh single-threaded process, never in a fork of the async agent:
//!
//! - `container-init`: cloned by the agent into a new pid and mount
//!   namespace (PID 1 there); builds the container's mounts on its rootfs,
//!   pivots into it, takes the container's user and execs its command, which
//!   so becomes the container's PID 1.
//! - `container-exec`: joins a running container's pid and mount namespaces,
//!   forks the command (dying with the helper), mirrors its exit status.
//! - `pod-pause`: PID 1 of the pid namespace a pod's containers share when
//!   the pod asks for one (reaps orphans, sleeps).
//!
//! The agent writes each helper's spec ([`InitSpec`], [`ExecSpec`]) as a
//! JSON file and passes its path. Both report a failure before the exec as
//! one line on fd 3 (close-on-exec, so a successful exec closes it
//! silently) and exit 127.

use std::ffi::{CString, OsString};
use std::fs;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, fork, pivot_root, ForkResult, Gid, Uid};
use serde::{Deserialize, Serialize};

use super::cgroup;
use super::mounts::{self, BindMount};
use super::seccomp::{self, SeccompSpec};

/// First argument of the container init helper.
pub const INIT: &str = "container-init";
/// First argument of the exec helper.
pub const EXEC: &str = "container-exec";
/// First argument of the pod's pid namespace holder.
pub const PAUSE: &str = "pod-pause";
/// Where the pid namespace holder mounts its empty root (in its own mount
/// namespace).
const PAUSE_ROOT: &str = "/run/hearth/pause-root";
/// The uid and gid the pid namespace holder runs as.
const NOBODY: u32 = 65534;
/// The fd a helper writes its error to.
pub const ERROR_FD: RawFd = 3;
/// Exit code of a helper that failed before the exec.
pub const FAILED: i32 = 127;

/// The `PATH` used when the process's env has none (as runc's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities a root container keeps by default: containerd's set
/// without MKNOD (there is no device cgroup in the guest yet, so a device
/// node a container made would open the real device): CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPS: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 29, 31];
/// Highest capability number tried when dropping the bounding set.
const LAST_CAP: u32 = 63;
/// Capability names by number (linux/capability.h).
const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The number of a capability name (`CAP_CHOWN` or `chown`); `None` for
/// `ALL`.
pub(super) fn cap_number(name: &str) -> Result<Option<u32>, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(None);
    }
    CAP_NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| Some(i as u32))
        .ok_or_else(|| format!("unknown capability {name:?}"))
}

/// The capability set from the default one and the CRI's changes
/// (containerd's rules: `ALL` in drop starts from none; `ALL` in add gives
/// every capability; then the named ones are added and dropped).
pub fn capability_set(add: &[String], drop: &[String]) -> Result<Vec<u32>, String> {
    let parse = |v: &[String]| -> Result<(bool, Vec<u32>), String> {
        let mut all = false;
        let mut caps = Vec::new();
        for n in v {
            match cap_number(n)? {
                None => all = true,
                Some(c) => caps.push(c),
            }
        }
        Ok((all, caps))
    };
    let (add_all, add) = parse(add)?;
    let (drop_all, drop) = parse(drop)?;
    // containerd's order: `drop ALL` wins over `add ALL`; the named drops
    // apply after the adds.
    let mut set: Vec<u32> = if drop_all {
        Vec::new()
    } else if add_all {
        (0..CAP_NAMES.len() as u32).collect()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    for c in add {
        if !set.contains(&c) {
            set.push(c);
        }
    }
    set.retain(|c| !drop.contains(c));
    set.sort_unstable();
    Ok(set)
}

/// The user part of a helper's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserArgs {
    /// Numeric uid.
    pub uid: Option<u32>,
    /// Name to resolve in the container's /etc/passwd.
    pub username: String,
    /// Numeric gid.
    pub gid: Option<u32>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Capabilities kept in the bounding set.
    pub caps: Vec<u32>,
}

/// What a helper makes of its process: everything between the namespace
/// set-up and the `execve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv (looked up in the env's `PATH` when `args[0]` has no '/').
    pub args: Vec<String>,
    /// Working directory (empty: `/`).
    pub cwd: String,
    /// User, groups and the capability bounding set.
    pub user: UserArgs,
    /// `PR_SET_NO_NEW_PRIVS` before the exec.
    pub no_new_privs: bool,
    /// The seccomp filter (unset: unconfined).
    pub seccomp: Option<SeccompSpec>,
    /// cgroup files (`cgroup.procs`) the helper writes itself into first.
    pub cgroup_procs: Vec<PathBuf>,
}

/// What `container-init` builds and runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    /// The container's rootfs (an overlay mount point).
    pub rootfs: PathBuf,
    /// Remount the rootfs read-only.
    pub read_only: bool,
    /// Guest paths bound into the container, in order.
    pub mounts: Vec<BindMount>,
    /// Paths hidden from the container.
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// sysfs read-write (privileged containers).
    pub sysfs_rw: bool,
    /// The process.
    pub process: ProcessSpec,
}

/// What `container-exec` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The container's init (its namespaces are joined).
    pub pid: i32,
    /// The process.
    pub process: ProcessSpec,
}

/// argv (after the program name) of `container-init` reading `spec`.
pub fn init_args(spec: &Path) -> Vec<String> {
    vec![INIT.to_owned(), spec.to_string_lossy().into_owned()]
}

/// argv (after the program name) of `container-exec` reading `spec`.
pub fn exec_args(spec: &Path) -> Vec<String> {
    vec![EXEC.to_owned(), spec.to_string_lossy().into_owned()]
}

/// argv (after the program name) of the pod's pid namespace holder.
pub fn pause_args() -> Vec<String> {
    vec![PAUSE.to_owned()]
}

/// Writes a helper's spec (JSON) to `path`, readable by root only.
pub fn write_spec<T: Serialize>(path: &Path, spec: &T) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let data = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&data)
}

fn read_spec<T: for<'de> Deserialize<'de>>(args: &[String]) -> Result<T, String> {
    let [path] = args else {
        return Err("malformed helper arguments".into());
    };
    let data = fs::read(path).map_err(|e| format!("cannot read the spec {path}: {e}"))?;
    serde_json::from_slice(&data).map_err(|e| format!("malformed spec {path}: {e}"))
}

/// If this process was started as a helper, runs it (never returns).
pub fn run_if_helper() {
    let args: Vec<String> = std::env::args_os()
        .map(|a| String::from_utf8_lossy(&a.into_vec()).into_owned())
        .collect();
    let res = match args.get(1).map(String::as_str) {
        Some(INIT) => init_main(&args[2..]),
        Some(EXEC) => exec_main(&args[2..]),
        Some(PAUSE) => pause_main(),
        _ => return,
    };
    let msg = match res {
        Ok(never) => match never {},
        Err(msg) => msg,
    };
    // SAFETY: fd 3 was set up by the agent for this message; nothing else
    // in this process owns it.
    let mut f = unsafe { fs::File::from_raw_fd(ERROR_FD) };
    let _ = f.write_all(msg.as_bytes());
    std::process::exit(FAILED);
}

enum Never {}

/// Marks fd 3 close-on-exec and every fd above it too: the agent is
/// multi-threaded, and an fd another thread opened without O_CLOEXEC while
/// this helper was cloned must not reach the container.
fn set_cloexec_on_error_fd() {
    // SAFETY: fcntl on a plain fd number.
    unsafe { libc::fcntl(ERROR_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (ERROR_FD + 1) as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Older kernels: mark them one by one.
        for fd in (ERROR_FD + 1)..1024 {
            // SAFETY: fcntl on a plain fd number; EBADF is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

fn init_main(args: &[String]) -> Result<Never, String> {
    set_cloexec_on_error_fd();
    let spec: InitSpec = read_spec(args)?;
    cgroup::join(&spec.process.cgroup_procs)?;
    setup_rootfs(&spec)?;
    if !spec.process.cwd.is_empty() {
        // Created as root, before the user is taken (as runc does).
        let _ = fs::create_dir_all(&spec.process.cwd);
    }
    become_process(&spec.process)
}

/// The end of both helpers, in the container's root: the user, the
/// capability bounding set, no_new_privs and seccomp, then the exec.
fn become_process(p: &ProcessSpec) -> Result<Never, String> {
    let cred = resolve_user(&p.user, Path::new("/"))?;
    drop_bounding_set(&p.user.caps)?;
    let filter = p
        .seccomp
        .as_ref()
        .map(|s| seccomp::compile_for(s, &p.user.caps))
        .transpose()?;
    if p.no_new_privs {
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "cannot set no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    } else if let Some(f) = &filter {
        // Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a
        // filter: load it while still root (runc's order).
        seccomp::install(f)?;
    }
    apply_user(&cred)?;
    if !p.cwd.is_empty() {
        chdir(p.cwd.as_str())
            .map_err(|e| format!("cannot enter working directory {}: {e}", p.cwd))?;
    }
    if p.no_new_privs {
        if let Some(f) = &filter {
            seccomp::install(f)?;
        }
    }
    exec(&p.args)
}

fn exec_main(args: &[String]) -> Result<Never, String> {
    set_cloexec_on_error_fd();
    let spec: ExecSpec = read_spec(args)?;
    let pid = spec.pid;
    let ns = |name: &str| {
        fs::File::open(format!("/proc/{pid}/ns/{name}"))
            .map_err(|e| format!("container process {pid} is gone ({name} namespace: {e})"))
    };
    let pid_ns = ns("pid")?;
    let mnt_ns = ns("mnt")?;
    cgroup::join(&spec.process.cgroup_procs)?;
    setns(&pid_ns, CloneFlags::CLONE_NEWPID).map_err(|e| format!("setns pid: {e}"))?;
    setns(&mnt_ns, CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns mnt: {e}"))?;
    // setns into a mount namespace moves us to its root: the container's.
    // SAFETY: this helper is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // Dies with the helper (the agent kills it on timeout).
            // SAFETY: prctl with constant arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let Err(msg) = become_process(&spec.process);
            // SAFETY: see run_if_helper.
            let mut f = unsafe { fs::File::from_raw_fd(ERROR_FD) };
            let _ = f.write_all(msg.as_bytes());
            std::process::exit(FAILED);
        }
        ForkResult::Parent { child } => {
            // Only the child's exec (or error) may end the agent's read.
            // SAFETY: closing our copy of fd 3, which we do not use again.
            unsafe { libc::close(ERROR_FD) };
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waitpid: {e}")),
                }
            }
        }
    }
}

/// PID 1 of the pod's shared pid namespace: reaps what is orphaned there
/// and otherwise sleeps. As a namespace's init it only receives the
/// signals it handles (none) from inside; the agent kills it.
fn pause_main() -> Result<Never, String> {
    set_cloexec_on_error_fd();
    // Nothing for the pod's containers to reach through /proc/1: an empty
    // root of its own, no capabilities, an unprivileged uid.
    make_root_private()?;
    let root = Path::new(PAUSE_ROOT);
    ensure_dir(root)?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        Some("size=4k,mode=0555"),
    )
    .map_err(|e| mnt_err("an empty tmpfs", root, e))?;
    pivot_into(root)?;
    drop_bounding_set(&[])?;
    apply_user(&Creds {
        uid: NOBODY,
        gid: NOBODY,
        groups: Vec::new(),
    })?;
    // SAFETY: closing fd 3: nothing to report once running.
    unsafe { libc::close(ERROR_FD) };
    loop {
        match waitpid(None::<nix::unistd::Pid>, None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // No children: sleep until one is reparented here.
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

pub(super) fn mnt_err(what: &str, target: &Path, e: nix::Error) -> String {
    format!("cannot mount {what} on {}: {e}", target.display())
}

pub(super) fn ensure_dir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
}

pub(super) fn ensure_file(p: &Path) -> Result<(), String> {
    if let Some(parent) = p.parent() {
        ensure_dir(parent)?;
    }
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => {
            let _ = fs::remove_file(p);
            fs::write(p, b"").map_err(|e| format!("cannot create {}: {e}", p.display()))
        }
        Err(_) => fs::write(p, b"").map_err(|e| format!("cannot create {}: {e}", p.display())),
    }
}

/// Makes every mount of this (new) mount namespace private: nothing
/// mounted here propagates back.
fn make_root_private() -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))
}

/// Makes the mount point `root` this process's `/` and detaches the old
/// root.
fn pivot_into(root: &Path) -> Result<(), String> {
    chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Mounts /proc, /dev, /sys, the pod's /etc files and the volumes on the
/// rootfs (already an overlay mount point), pivots into it, then masks
/// and write-protects what the spec says.
fn setup_rootfs(spec: &InitSpec) -> Result<(), String> {
    let rootfs = spec.rootfs.as_path();
    make_root_private()?;
    // Inside the rootfs every path is resolved as if it were /: a link in
    // the image cannot point these mounts (or the files made for them)
    // outside it.
    let inside = |p: &str| mounts::secure_join(rootfs, Path::new(p));
    for d in ["proc", "dev", "sys", "etc"] {
        ensure_dir(&inside(d)?)?;
    }
    let etc_files = ["hosts", "resolv.conf", "hostname"];
    let etc_present: Vec<&str> = etc_files
        .into_iter()
        .filter(|f| Path::new("/etc").join(f).is_file())
        .collect();
    for f in &etc_present {
        ensure_file(&inside(&format!("etc/{f}"))?)?;
    }
    let pseudo = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = inside("proc")?;
    mount(Some("proc"), &proc_dir, Some("proc"), pseudo, None::<&str>)
        .map_err(|e| mnt_err("proc", &proc_dir, e))?;
    let sys = inside("sys")?;
    let sys_flags = if spec.sysfs_rw {
        pseudo
    } else {
        pseudo | MsFlags::MS_RDONLY
    };
    if let Err(e) = mount(Some("sysfs"), &sys, Some("sysfs"), sys_flags, None::<&str>) {
        // Not fatal (as in the agent's own root).
        eprintln!("hearth: no /sys in the container: {e}");
    }
    setup_dev(&inside("dev")?)?;
    for f in &etc_present {
        // The pod's files are the agent's: read-only in the container.
        mounts::bind(
            &Path::new("/etc").join(f),
            &inside(&format!("etc/{f}"))?,
            true,
        )?;
    }
    for m in &spec.mounts {
        mounts::bind_into(rootfs, m)?;
    }
    pivot_into(rootfs)?;
    for p in &spec.masked_paths {
        mounts::mask(Path::new(p))?;
    }
    for p in &spec.readonly_paths {
        mounts::read_only(Path::new(p))?;
    }
    if spec.read_only {
        // Only the root mount: /dev, /proc and the volumes keep their own.
        mounts::remount_read_only(Path::new("/"))?;
    }
    Ok(())
}

fn setup_dev(dev: &Path) -> Result<(), String> {
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536k"),
    )
    .map_err(|e| mnt_err("tmpfs", dev, e))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", p.display()))?;
        let _ = nix::sys::stat::fchmodat(
            None,
            &p,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| mnt_err("devpts", &pts, e))?;
    // The pod's /dev/shm (the agent's), shared by its containers.
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mount(
        Some("/dev/shm"),
        &shm,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mnt_err("/dev/shm", &shm, e))?;
    Ok(())
}

/// Resolved credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Largest /etc/passwd or /etc/group read from an image.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// The image's /etc/passwd or /etc/group: a regular file, at most
/// [`MAX_ACCOUNT_FILE`] bytes (a FIFO or /dev/zero in its place must not
/// hang or fill the helper); empty when absent or unusable.
fn read_account_file(p: &Path) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
    else {
        return String::new();
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return String::new();
    }
    let mut data = Vec::new();
    let _ = f.take(MAX_ACCOUNT_FILE).read_to_end(&mut data);
    String::from_utf8_lossy(&data).into_owned()
}

/// Resolves the user in the passwd/group files under `root`.
pub fn resolve_user(user: &UserArgs, root: &Path) -> Result<Creds, String> {
    let passwd = read_account_file(&root.join("etc/passwd"));
    let group = read_account_file(&root.join("etc/group"));
    // name:x:uid:gid:...
    let entries: Vec<(String, u32, u32)> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some((f[0].to_owned(), f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .collect();
    let (uid, name, primary) = if !user.username.is_empty() {
        match entries.iter().find(|e| e.0 == user.username) {
            Some(e) => (e.1, Some(e.0.clone()), Some(e.2)),
            None => {
                return Err(format!(
                    "user {:?} not found in the container's /etc/passwd",
                    user.username
                ))
            }
        }
    } else {
        let uid = user.uid.unwrap_or(0);
        match entries.iter().find(|e| e.1 == uid) {
            Some(e) => (uid, Some(e.0.clone()), Some(e.2)),
            None => (uid, None, None),
        }
    };
    let gid = user.gid.or(primary).unwrap_or(0);
    let mut groups = Vec::new();
    if let Some(name) = name {
        // name:x:gid:member,member
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    for g in &user.additional_gids {
        if !groups.contains(g) {
            groups.push(*g);
        }
    }
    Ok(Creds { uid, gid, groups })
}

fn drop_bounding_set(keep: &[u32]) -> Result<(), String> {
    for cap in 0..=LAST_CAP {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!("cannot drop capability {cap}: {e}"));
        }
    }
    Ok(())
}

fn apply_user(c: &Creds) -> Result<(), String> {
    let groups: Vec<Gid> = c.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(c.gid)).map_err(|e| format!("setgid {}: {e}", c.gid))?;
    nix::unistd::setuid(Uid::from_raw(c.uid)).map_err(|e| format!("setuid {}: {e}", c.uid))?;
    Ok(())
}

/// Finds `cmd` like execvp would, in `path` (a `PATH` value).
pub fn lookup(cmd: &str, path: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(cmd))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Gives the process the signal state a fresh program expects: every
/// disposition default (the agent, as a Rust program, ignores SIGPIPE, and
/// an ignored signal stays ignored across exec) and nothing blocked.
fn reset_signals() {
    // The kernel's `struct sigaction` on x86_64: handler, flags, restorer,
    // mask; all zero is SIG_DFL. Through the raw syscall, because glibc
    // refuses its reserved signals (32, 33), which may be ignored too.
    let default = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid struct and no old-action
        // pointer; a default disposition runs no code of ours.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
    // SAFETY: an empty set, unblocking everything in this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn exec(cmd: &[String]) -> Result<Never, String> {
    reset_signals();
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned());
    let prog = lookup(&cmd[0], &path).ok_or_else(|| {
        format!(
            "exec: {:?}: executable file not found in $PATH ({path})",
            cmd[0]
        )
    })?;
    let c = |s: &str| CString::new(s).map_err(|_| format!("argument {s:?} contains NUL"));
    let argv: Vec<CString> = cmd.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let prog_c = CString::new(OsString::from(prog.clone()).into_vec())
        .map_err(|_| "path contains NUL".to_owned())?;
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    let e = nix::unistd::execve(&prog_c, &argv, &env).unwrap_err();
    Err(format!("exec {}: {e}", prog.display()))
}

#[cfg(test)]
mod tests;
