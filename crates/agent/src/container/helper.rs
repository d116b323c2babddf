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
//!
//! Both report a failure before the exec as one line on fd 3 (close-on-exec,
//! so a successful exec closes it silently) and exit 127.

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

/// First argument of the container init helper.
pub const INIT: &str = "container-init";
/// First argument of the exec helper.
pub const EXEC: &str = "container-exec";
/// The fd a helper writes its error to.
pub const ERROR_FD: RawFd = 3;
/// Exit code of a helper that failed before the exec.
pub const FAILED: i32 = 127;

/// The `PATH` used when the process's env has none (as runc's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities a root container keeps by default (containerd's set):
/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPS: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];
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

fn cap_number(name: &str) -> Result<Option<u32>, String> {
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
    let mut set: Vec<u32> = if add_all {
        (0..CAP_NAMES.len() as u32).collect()
    } else if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    for c in add {
        if !set.contains(&c) {
            set.push(c);
        }
    }
    if !add_all {
        set.retain(|c| !drop.contains(c));
    }
    set.sort_unstable();
    Ok(set)
}

/// The user part of a helper's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

impl UserArgs {
    /// As five argv words.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            self.uid.map(|u| u.to_string()).unwrap_or_default(),
            self.username.clone(),
            self.gid.map(|g| g.to_string()).unwrap_or_default(),
            self.additional_gids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.caps
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ]
    }

    fn from_args(a: &[String]) -> Result<UserArgs, String> {
        let num = |s: &str| -> Result<Option<u32>, String> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| format!("bad id {s:?}"))
            }
        };
        let list = |s: &str| -> Result<Vec<u32>, String> {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(|g| g.parse().map_err(|_| format!("bad number {g:?}")))
                .collect()
        };
        Ok(UserArgs {
            uid: num(&a[0])?,
            username: a[1].clone(),
            gid: num(&a[2])?,
            additional_gids: list(&a[3])?,
            caps: list(&a[4])?,
        })
    }
}

/// argv (after the program name) of `container-init`.
pub fn init_args(
    rootfs: &Path,
    cwd: &str,
    user: &UserArgs,
    read_only: bool,
    args: &[String],
) -> Vec<String> {
    let mut v = vec![
        INIT.to_owned(),
        rootfs.to_string_lossy().into_owned(),
        cwd.to_owned(),
    ];
    v.extend(user.to_args());
    v.push(if read_only { "ro" } else { "rw" }.to_owned());
    v.push("--".to_owned());
    v.extend(args.iter().cloned());
    v
}

/// argv (after the program name) of `container-exec`.
pub fn exec_args(pid: i32, cwd: &str, user: &UserArgs, args: &[String]) -> Vec<String> {
    let mut v = vec![EXEC.to_owned(), pid.to_string(), cwd.to_owned()];
    v.extend(user.to_args());
    v.push("--".to_owned());
    v.extend(args.iter().cloned());
    v
}

/// If this process was started as a helper, runs it (never returns).
pub fn run_if_helper() {
    let args: Vec<String> = std::env::args_os()
        .map(|a| String::from_utf8_lossy(&a.into_vec()).into_owned())
        .collect();
    let res = match args.get(1).map(String::as_str) {
        Some(INIT) => init_main(&args[2..]),
        Some(EXEC) => exec_main(&args[2..]),
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

fn split_command(args: &[String], fixed: usize) -> Result<(&[String], &[String]), String> {
    if args.len() < fixed + 2 || args[fixed] != "--" {
        return Err("malformed helper arguments".into());
    }
    let cmd = &args[fixed + 1..];
    if cmd.is_empty() {
        return Err("no command given".into());
    }
    Ok((&args[..fixed], cmd))
}

fn set_cloexec_on_error_fd() {
    // SAFETY: fcntl on a plain fd number.
    unsafe { libc::fcntl(ERROR_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
}

fn init_main(args: &[String]) -> Result<Never, String> {
    set_cloexec_on_error_fd();
    let (fixed, cmd) = split_command(args, 8)?;
    let rootfs = PathBuf::from(&fixed[0]);
    let cwd = fixed[1].clone();
    let user = UserArgs::from_args(&fixed[2..7])?;
    let read_only = fixed[7] == "ro";
    setup_rootfs(&rootfs, read_only)?;
    let cred = resolve_user(&user, Path::new("/"))?;
    drop_bounding_set(&user.caps)?;
    if !cwd.is_empty() {
        let _ = fs::create_dir_all(&cwd);
    }
    apply_user(&cred)?;
    if !cwd.is_empty() {
        chdir(cwd.as_str()).map_err(|e| format!("cannot enter working directory {cwd}: {e}"))?;
    }
    exec(cmd)
}

fn exec_main(args: &[String]) -> Result<Never, String> {
    set_cloexec_on_error_fd();
    let (fixed, cmd) = split_command(args, 7)?;
    let pid: i32 = fixed[0].parse().map_err(|_| "bad pid".to_owned())?;
    let cwd = fixed[1].clone();
    let user = UserArgs::from_args(&fixed[2..7])?;
    let ns = |name: &str| {
        fs::File::open(format!("/proc/{pid}/ns/{name}"))
            .map_err(|e| format!("container process {pid} is gone ({name} namespace: {e})"))
    };
    let pid_ns = ns("pid")?;
    let mnt_ns = ns("mnt")?;
    setns(&pid_ns, CloneFlags::CLONE_NEWPID).map_err(|e| format!("setns pid: {e}"))?;
    setns(&mnt_ns, CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns mnt: {e}"))?;
    // setns into a mount namespace moves us to its root: the container's.
    let cred = resolve_user(&user, Path::new("/"))?;
    // SAFETY: this helper is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let res = (|| {
                drop_bounding_set(&user.caps)?;
                apply_user(&cred)?;
                if !cwd.is_empty() {
                    chdir(cwd.as_str())
                        .map_err(|e| format!("cannot enter working directory {cwd}: {e}"))?;
                }
                // Dies with the helper (the agent kills it on timeout).
                // SAFETY: prctl with constant arguments.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
                exec(cmd)
            })();
            let Err(msg) = res;
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

fn mnt_err(what: &str, target: &Path, e: nix::Error) -> String {
    format!("cannot mount {what} on {}: {e}", target.display())
}

fn ensure_dir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
}

fn ensure_file(p: &Path) -> Result<(), String> {
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

/// Mounts /proc, /dev, /sys and the pod's /etc files on `rootfs` (already
/// an overlay mount point), then pivots into it.
fn setup_rootfs(rootfs: &Path, read_only: bool) -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    for d in ["proc", "dev", "sys", "etc"] {
        ensure_dir(&rootfs.join(d))?;
    }
    let etc_files = ["hosts", "resolv.conf", "hostname"];
    let etc_present: Vec<&str> = etc_files
        .into_iter()
        .filter(|f| Path::new("/etc").join(f).is_file())
        .collect();
    for f in &etc_present {
        ensure_file(&rootfs.join("etc").join(f))?;
    }
    if read_only {
        mount(
            None::<&str>,
            rootfs,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| mnt_err("read-only root", rootfs, e))?;
    }
    let pseudo = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = rootfs.join("proc");
    mount(Some("proc"), &proc_dir, Some("proc"), pseudo, None::<&str>)
        .map_err(|e| mnt_err("proc", &proc_dir, e))?;
    let sys = rootfs.join("sys");
    if let Err(e) = mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        pseudo | MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        // Not fatal (as in the agent's own root).
        eprintln!("hearth: no /sys in the container: {e}");
    }
    setup_dev(&rootfs.join("dev"))?;
    for f in &etc_present {
        let src = Path::new("/etc").join(f);
        let dst = rootfs.join("etc").join(f);
        mount(
            Some(&src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mnt_err(&src.display().to_string(), &dst, e))?;
        // The pod's files are the agent's: read-only in the container.
        let _ = mount(
            None::<&str>,
            &dst,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        );
    }
    chdir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
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

/// Resolves the user in the passwd/group files under `root`.
pub fn resolve_user(user: &UserArgs, root: &Path) -> Result<Creds, String> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let group = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
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

fn exec(cmd: &[String]) -> Result<Never, String> {
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
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_containers_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nuser:x:1000:1001::/home:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nusers:x:100:user,other\nwheel:x:10:root\n",
        )
        .unwrap();
        let by_name = UserArgs {
            username: "user".into(),
            ..Default::default()
        };
        assert_eq!(
            resolve_user(&by_name, dir.path()).unwrap(),
            Creds {
                uid: 1000,
                gid: 1001,
                groups: vec![100]
            }
        );
        let by_uid = UserArgs {
            uid: Some(1000),
            gid: Some(5),
            additional_gids: vec![7, 100],
            ..Default::default()
        };
        assert_eq!(
            resolve_user(&by_uid, dir.path()).unwrap(),
            Creds {
                uid: 1000,
                gid: 5,
                groups: vec![100, 7]
            }
        );
        let unknown_uid = UserArgs {
            uid: Some(4242),
            ..Default::default()
        };
        assert_eq!(
            resolve_user(&unknown_uid, dir.path()).unwrap(),
            Creds {
                uid: 4242,
                gid: 0,
                groups: vec![]
            }
        );
        let missing = UserArgs {
            username: "nobody".into(),
            ..Default::default()
        };
        assert!(resolve_user(&missing, dir.path())
            .unwrap_err()
            .contains("\"nobody\" not found"));
    }

    #[test]
    fn helper_arguments_round_trip() {
        let u = UserArgs {
            uid: Some(1),
            username: String::new(),
            gid: None,
            additional_gids: vec![3, 4],
            caps: vec![0, 21],
        };
        let a = u.to_args();
        assert_eq!(UserArgs::from_args(&a).unwrap(), u);
        let v = init_args(Path::new("/r"), "/w", &u, true, &["sh".into()]);
        let (fixed, cmd) = split_command(&v[1..], 8).unwrap();
        assert_eq!(fixed[0], "/r");
        assert_eq!(UserArgs::from_args(&fixed[2..7]).unwrap(), u);
        assert_eq!(fixed[7], "ro");
        assert_eq!(cmd, ["sh".to_owned()]);
        assert!(split_command(&v[1..3], 8).is_err());
        let v = exec_args(7, "/w", &u, &["id".into()]);
        let (fixed, _) = split_command(&v[1..], 7).unwrap();
        assert_eq!(UserArgs::from_args(&fixed[2..7]).unwrap(), u);
    }

    #[test]
    fn capability_sets_follow_containerd() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(capability_set(&[], &[]).unwrap(), DEFAULT_CAPS);
        let no_chown = capability_set(&[], &s(&["CAP_CHOWN"])).unwrap();
        assert!(!no_chown.contains(&0) && no_chown.contains(&1));
        assert_eq!(
            capability_set(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"])).unwrap(),
            [10]
        );
        let admin = capability_set(&s(&["cap_sys_admin"]), &[]).unwrap();
        assert!(admin.contains(&21) && admin.contains(&0));
        assert_eq!(
            capability_set(&s(&["ALL"]), &[]).unwrap().len(),
            CAP_NAMES.len()
        );
        assert!(capability_set(&s(&["CAP_BOGUS"]), &[])
            .unwrap_err()
            .contains("CAP_BOGUS"));
    }

    #[test]
    fn lookup_follows_path() {
        assert_eq!(lookup("/x/y", ""), Some(PathBuf::from("/x/y")));
        assert!(lookup("sh", "/nonexistent:/bin").is_some());
        assert_eq!(lookup("no-such-command-here", "/bin"), None);
    }
}
