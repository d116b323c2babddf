//! Namespaces mode: the same agent, on the host, in fresh namespaces and a
//! private root laid out like the VM's initramfs.
//!
//! The *launcher* (the process hearthd starts) joins `--netns`, writes its
//! pid into each `--cgroup-procs` file, unshares mount, UTS, IPC, pid and
//! cgroup namespaces and forks. The child is PID 1 of the new pid namespace:
//! it builds the private root (proc, read-only sysfs, cgroups, a minimal
//! /dev, /run, /tmp), pivots into it and tells the launcher over a pipe
//! whether that worked. The launcher then prints `pid <host pid>` and exits
//! 0, or prints the child's error and exits 1. The child serves gRPC on the
//! inherited listener, doing the hybrid-vsock handshake itself.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{fstat, makedev, mknod, Mode, SFlag};
use nix::sys::wait::waitpid;
use nix::unistd::{chdir, fork, pivot_root, ForkResult, Pid};

use super::{chain, mount_fs, pseudo, InitError};
use crate::cli::NamespacesArgs;
use crate::lifecycle::{Agent, ListenOn};
use crate::server::Mode as AgentMode;

/// Directories of the private root (as in the initramfs).
pub const LAYOUT: &[&str] = &["dev", "proc", "sys", "run", "tmp", "etc", "mnt"];

/// Character devices of the private /dev: name, major, minor.
const DEV_NODES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const READY: &[u8] = b"ok";
const MAX_CHILD_MESSAGE: u64 = 4096;
/// How long the launcher waits for the child to build its root.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `hearth-agent namespaces`: the launcher returns its exit code; the
/// agent child never returns.
pub fn main(args: NamespacesArgs) -> ExitCode {
    match launch(&args) {
        Ok(Forked::Parent { child }) => {
            let mut out = io::stdout().lock();
            if writeln!(out, "pid {child}")
                .and_then(|()| out.flush())
                .is_err()
            {
                tracing::error!("cannot write the pid line");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(Forked::Child {
            root,
            listener,
            ready,
        }) => child_main(&root, listener, ready),
        Err(err) => {
            tracing::error!(error = %chain(&err), "cannot start the agent");
            ExitCode::FAILURE
        }
    }
}

enum Forked {
    Parent {
        child: Pid,
    },
    Child {
        root: PathBuf,
        listener: OwnedFd,
        ready: OwnedFd,
    },
}

/// The launcher's part, up to and including the fork.
fn launch(args: &NamespacesArgs) -> Result<Forked, InitError> {
    let root = check_root(&args.root)?;
    let listener = take_listener(args.listen_fd)?;

    if let Some(path) = &args.netns {
        let netns_err = |source| InitError::Netns {
            path: path.clone(),
            source,
        };
        let ns = fs::File::open(path).map_err(netns_err)?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
    }
    let pid = std::process::id().to_string();
    for path in &args.cgroup_procs {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(pid.as_bytes()))
            .map_err(|source| InitError::Cgroup {
                path: path.clone(),
                source,
            })?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| sys("unshare", e))?;

    let (ready_rx, ready_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    // SAFETY: the launcher is single-threaded (no runtime or thread has
    // been started), so the child may do anything after the fork.
    match unsafe { fork() }.map_err(|e| sys("fork", e))? {
        ForkResult::Parent { child } => {
            drop(ready_tx);
            drop(listener);
            wait_ready(child, ready_rx).map(|()| Forked::Parent { child })
        }
        ForkResult::Child => {
            drop(ready_rx);
            Ok(Forked::Child {
                root,
                listener,
                ready: ready_tx,
            })
        }
    }
}

fn sys(what: &'static str, err: nix::Error) -> InitError {
    InitError::Sys {
        what,
        source: err.into(),
    }
}

fn check_root(root: &Path) -> Result<PathBuf, InitError> {
    let bad = |reason: String| InitError::Root {
        root: root.to_owned(),
        reason,
    };
    let canon = fs::canonicalize(root).map_err(|e| bad(e.to_string()))?;
    if !canon.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if canon == Path::new("/") {
        return Err(bad("must not be /".into()));
    }
    for dir in LAYOUT {
        let path = canon.join(dir);
        fs::create_dir_all(&path).map_err(|source| InitError::Create { path, source })?;
    }
    Ok(canon)
}

/// Checks that `fd` is an open listening socket and takes ownership of it.
fn take_listener(fd: RawFd) -> Result<OwnedFd, InitError> {
    let not_listening = |source: Option<io::Error>| InitError::ListenFd { fd, source };
    if fd <= 2 {
        // stdio is needed for the pid line and the log.
        return Err(not_listening(None));
    }
    let st = fstat(fd).map_err(|e| not_listening(Some(e.into())))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(not_listening(None));
    }
    // SAFETY: fstat proved `fd` open; it was inherited from hearthd and
    // nothing else in this process uses it, so we may own it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match getsockopt(&owned, sockopt::AcceptConn) {
        Ok(true) => Ok(owned),
        Ok(false) => Err(not_listening(None)),
        Err(e) => Err(not_listening(Some(e.into()))),
    }
}

/// Launcher: waits (at most [`SETUP_TIMEOUT`]) for the child's verdict on
/// its set-up.
fn wait_ready(child: Pid, ready: OwnedFd) -> Result<(), InitError> {
    let (msg, timed_out) = read_verdict(ready, SETUP_TIMEOUT);
    if !timed_out && msg == READY {
        return Ok(());
    }
    // The child has failed (and exits), died or hangs: end and collect it.
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(child, None);
    let msg = String::from_utf8_lossy(&msg).into_owned();
    Err(InitError::Child(if timed_out {
        format!("no answer within {SETUP_TIMEOUT:?}")
    } else if msg.is_empty() {
        "the agent exited during set-up".into()
    } else {
        msg
    }))
}

/// Reads the pipe to EOF (at most [`MAX_CHILD_MESSAGE`] bytes) or until
/// `timeout`. Returns what was read and whether time ran out.
fn read_verdict(fd: OwnedFd, timeout: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + timeout;
    let mut file = fs::File::from(fd);
    let mut msg = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (msg, true);
        }
        let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (msg, false),
        }
        match file.read(&mut buf) {
            Ok(0) => return (msg, false),
            Ok(n) => {
                msg.extend_from_slice(&buf[..n]);
                if msg.len() as u64 >= MAX_CHILD_MESSAGE {
                    return (msg, false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (msg, false),
        }
    }
}

/// The agent child: PID 1 of the new pid namespace.
fn child_main(root: &Path, listener: OwnedFd, ready: OwnedFd) -> ! {
    // The launcher's stdout carries only the pid line: once it exits, its
    // reader must see EOF, so the agent logs everything to stderr.
    // SAFETY: dup2 onto fd 1, which std's stdout refers to by number only.
    unsafe { libc::dup2(2, 1) };
    let mut ready = fs::File::from(ready);
    if let Err(err) = setup_root(root) {
        let msg = chain(&err);
        tracing::error!(error = %msg, "private root set-up failed");
        let _ = ready.write_all(msg.as_bytes());
        std::process::exit(1);
    }
    let _ = ready.write_all(READY);
    drop(ready);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "hearth-agent started (namespaces)"
    );
    let agent = Agent::new(AgentMode::Namespaces);
    let res = agent.serve(ListenOn::Unix(listener));
    if let Err(err) = &res {
        tracing::error!(error = %chain(err), "agent stopped");
    }
    agent.teardown();
    std::process::exit(if res.is_ok() { 0 } else { 1 })
}

/// Builds the private root under `root` and pivots into it.
pub fn setup_root(root: &Path) -> Result<(), InitError> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| sys("making / private", e))?;
    // pivot_root needs the new root to be a mount point. Not recursive:
    // nothing mounted below `root` on the host comes along.
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| InitError::Mount {
        fstype: "bind".into(),
        target: root.to_owned(),
        source: e.into(),
    })?;
    mount_fs("proc", &root.join("proc"), "proc", pseudo(), None)?;
    match mount_fs(
        "sysfs",
        &root.join("sys"),
        "sysfs",
        pseudo() | MsFlags::MS_RDONLY,
        None,
    ) {
        Ok(()) => mount_cgroups(&root.join("sys/fs/cgroup")),
        Err(err) => tracing::warn!(error = %chain(&err), "no sysfs"),
    }
    setup_dev(&root.join("dev"))?;
    let tmp_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(
        "run",
        &root.join("run"),
        "tmpfs",
        tmp_flags,
        Some("mode=0755"),
    )?;
    mount_fs(
        "tmp",
        &root.join("tmp"),
        "tmpfs",
        tmp_flags,
        Some("mode=1777"),
    )?;
    enter_root(root)
}

fn enter_root(root: &Path) -> Result<(), InitError> {
    chdir(root).map_err(|e| sys("chdir to the new root", e))?;
    // pivot_root(".", "."): the old root ends up mounted on top of the new
    // one, where it is detached at once (pivot_root(2), NOTES); no
    // directory for it is needed, so none is left behind.
    pivot_root(".", ".").map_err(|e| sys("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| sys("detaching the old root", e))?;
    chdir("/").map_err(|e| sys("chdir /", e))?;
    Ok(())
}

fn setup_dev(dev: &Path) -> Result<(), InitError> {
    mount_fs(
        "dev",
        dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1024k"),
    )?;
    let create = |path: PathBuf| move |source| InitError::Create { path, source };
    for (name, major, minor) in DEV_NODES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .map_err(|e| create(path.clone())(e.into()))?;
        // mknod's mode is filtered by the umask.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(create(path.clone()))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        symlink(target, &path).map_err(create(path.clone()))?;
    }
    let hearth = dev.join("hearth");
    fs::create_dir_all(&hearth).map_err(create(hearth))?;
    mount_fs(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_fs(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    Ok(())
}

/// cgroup2 if the host is on v2; else a tmpfs holding each v1 hierarchy
/// this process is in, mounted by its controllers (plus `unified` on a
/// hybrid host). Best effort: failures are logged.
fn mount_cgroups(target: &Path) {
    let host_v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    let warn = |err: InitError| tracing::warn!(error = %chain(&err), "cgroup mount failed");
    if host_v2 {
        if let Err(e) = mount_fs("cgroup2", target, "cgroup2", pseudo(), None) {
            warn(e);
        }
        return;
    }
    if let Err(e) = mount_fs("cgroup", target, "tmpfs", pseudo(), Some("mode=0755")) {
        return warn(e);
    }
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let (hierarchies, unified) = parse_v1_hierarchies(&own);
    for controllers in hierarchies {
        let dir = controllers.replace("name=", "");
        let opts = if controllers.split(',').all(|c| c.starts_with("name=")) {
            format!("none,{controllers}")
        } else {
            controllers.clone()
        };
        match mount_fs(
            "cgroup",
            &target.join(&dir),
            "cgroup",
            pseudo(),
            Some(&opts),
        ) {
            Ok(()) => {
                if dir.contains(',') {
                    for single in dir.split(',') {
                        let _ = symlink(&dir, target.join(single));
                    }
                }
            }
            Err(e) => warn(e),
        }
    }
    if unified {
        if let Err(e) = mount_fs(
            "cgroup2",
            &target.join("unified"),
            "cgroup2",
            pseudo(),
            None,
        ) {
            warn(e);
        }
    }
    // Like systemd: the tmpfs itself is read-only.
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | pseudo();
    if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, Some("mode=0755")) {
        tracing::warn!(error = %e, "cannot make the cgroup tmpfs read-only");
    }
}

/// From `/proc/self/cgroup`: the v1 hierarchies (their controller lists,
/// e.g. `cpu,cpuacct` or `name=systemd`) and whether a v2 entry exists.
pub fn parse_v1_hierarchies(text: &str) -> (Vec<String>, bool) {
    let mut hierarchies = Vec::new();
    let mut unified = false;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(_path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = true;
        } else if !controllers.is_empty()
            && controllers
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_,=-".contains(&b))
        {
            hierarchies.push(controllers.to_owned());
        }
    }
    hierarchies.sort();
    (hierarchies, unified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_from_proc_self_cgroup() {
        let text = "\
12:cpu,cpuacct:/pod
9:name=systemd:/
4:memory:/pod
3:pids:/pod
0::/
bogus line
5:weird/../x:/
";
        let (h, unified) = parse_v1_hierarchies(text);
        assert_eq!(h, vec!["cpu,cpuacct", "memory", "name=systemd", "pids"]);
        assert!(unified);
        let (h, unified) = parse_v1_hierarchies("0::/pod\n");
        assert!(h.is_empty());
        assert!(unified);
    }

    #[test]
    fn launcher_reads_the_verdict_or_gives_up() {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        fs::File::from(tx).write_all(b"ok").unwrap();
        assert_eq!(
            read_verdict(rx, Duration::from_secs(5)),
            (b"ok".to_vec(), false)
        );

        let (rx, tx) = nix::unistd::pipe().unwrap();
        let start = Instant::now();
        assert_eq!(
            read_verdict(rx, Duration::from_millis(100)),
            (Vec::new(), true)
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        drop(tx);
    }

    #[test]
    fn listen_fd_must_be_a_listening_socket() {
        assert!(matches!(
            take_listener(1),
            Err(InitError::ListenFd { fd: 1, .. })
        ));
        let file = fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // Not a socket: refused before ownership is taken.
        assert!(take_listener(fd).is_err());
        let _ = &file;
    }
}
