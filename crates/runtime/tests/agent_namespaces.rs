//! The real, static `hearth-agent` in namespaces mode, driven by
//! [`AgentClient`]: private root, SetupSandbox, MountDrive of a loop
//! device, garbage peers, Shutdown, and cleanup.
//!
//! Needs root (namespaces, mounts, loop devices); skips with a message
//! otherwise. The agent binary comes from `HEARTH_AGENT_BIN`, else from
//! `scripts/build-agent.sh`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth_agent_proto::v1::{
    device_locator::By, DeviceLocator, DeviceNumber, MountDriveRequest, SetupSandboxRequest,
    UnmountDriveRequest,
};
use hearth_agent_proto::AGENT_PORT;
use hearth_runtime::agent::{open_stream, AgentClient, AgentError};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The static agent binary (built once per test run).
fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = match std::env::var_os("HEARTH_AGENT_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-agent.sh");
                let out = Command::new(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("run scripts/build-agent.sh");
                assert!(out.status.success(), "build-agent.sh failed");
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            }
        };
        let file = Command::new("file")
            .arg("-L")
            .arg(&bin)
            .output()
            .expect("file(1)");
        let what = String::from_utf8_lossy(&file.stdout);
        assert!(
            what.contains("statically linked") || what.contains("static-pie linked"),
            "{} is not static: {what}",
            bin.display()
        );
        bin
    })
    .clone()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Undoes everything the test set up, even when an assertion fails.
#[derive(Default)]
struct Cleanup {
    agent_pid: Option<i32>,
    loop_dev: Option<String>,
    netns: Option<String>,
    cgroups: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.agent_pid.take() {
            if Path::new(&format!("/proc/{pid}")).exists() {
                // SAFETY: kill with the pid of the agent this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = wait_gone(pid, Duration::from_secs(5));
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        if let Some(ns) = self.netns.take() {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
        for cg in self.cgroups.drain(..) {
            let _ = fs::remove_dir(cg);
        }
    }
}

/// Waits for `pid` (our child, thanks to the subreaper flag) to exit;
/// returns its wait status.
fn wait_gone(pid: i32, timeout: Duration) -> Option<i32> {
    let end = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on a pid we are the (sub)reaper of.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && !Path::new(&format!("/proc/{pid}")).exists() {
            return Some(-1);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `hearth-agent namespaces` on a fresh listener; returns the
/// launcher's exit status, its stdout and the socket path.
fn launch(dir: &Path, root: &Path, extra: &[&str]) -> (std::process::ExitStatus, String, PathBuf) {
    let sock = dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let log = fs::File::create(dir.join("agent.log")).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(agent_bin());
    cmd.arg("namespaces")
        .arg("--root")
        .arg(root)
        .args(["--listen-fd", "3"])
        .args(extra)
        .env("HEARTH_AGENT_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    pass_as_fd3(&mut cmd, fd);
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let mut out = String::new();
    // Reads to EOF: the agent must not keep the launcher's stdout open.
    child
        .stdout
        .take()
        .unwrap()
        .take(1024)
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    (status, out, sock)
}

/// Makes `fd` the child's fd 3, without FD_CLOEXEC.
fn pass_as_fd3(cmd: &mut Command, fd: i32) {
    // SAFETY: only async-signal-safe calls (dup2, fcntl) in the child.
    unsafe {
        cmd.pre_exec(move || {
            let res = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                // dup2 leaves FD_CLOEXEC off on the new fd.
                libc::dup2(fd, 3)
            };
            if res < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` inside some of the agent's namespaces (no mount namespace:
/// the agent's root has no programs).
fn in_ns(pid: i32, ns: &str, cmd: &[&str]) -> String {
    let target = pid.to_string();
    let mut args = vec!["-t", target.as_str(), ns, "--"];
    args.extend_from_slice(cmd);
    run("nsenter", &args)
}

fn mount_points(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap().to_owned())
        .collect()
}

/// Host pids and states of the processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid {
            let child: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
            out.push((child, state));
        }
    }
    out
}

fn log_of(dir: &Path) -> String {
    fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_agent_end_to_end() {
    if !is_root() {
        eprintln!(
            "skipping namespaces_agent_end_to_end: needs root (namespaces, mounts, loop devices)"
        );
        return;
    }
    for tool in ["losetup", "mkfs.ext4", "ip"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping namespaces_agent_end_to_end: {tool} not found");
            return;
        }
    }
    // The agent is reparented to us when its launcher exits, so we can reap
    // it and see its exit status.
    // SAFETY: prctl with integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );

    let mut cleanup = Cleanup::default();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();

    // A network namespace for the pod, as hearthd would make.
    let netns = format!("hearth-agent-test-{}", std::process::id());
    run("ip", &["netns", "add", &netns]);
    cleanup.netns = Some(netns.clone());
    let netns_path = format!("/run/netns/{netns}");

    // The pod's cgroup: one per v1 hierarchy we use (or one on v2).
    let cg_name = format!("hearth-agent-test-{}", std::process::id());
    let cg_roots: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        ["pids", "cpu"]
            .iter()
            .map(|h| Path::new("/sys/fs/cgroup").join(h))
            .filter(|p| p.exists())
            .collect()
    };
    let mut cg_args = Vec::new();
    for root in &cg_roots {
        let cg = root.join(&cg_name);
        fs::create_dir(&cg).unwrap();
        cleanup.cgroups.push(cg.clone());
        cg_args.push("--cgroup-procs".to_owned());
        cg_args.push(cg.join("cgroup.procs").to_str().unwrap().to_owned());
    }

    // An ext4 image with a file in it, on a loop device.
    let content = dir.path().join("content");
    fs::create_dir(&content).unwrap();
    fs::write(content.join("hello.txt"), "hello from the image\n").unwrap();
    let image = dir.path().join("disk.img");
    fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            content.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
    );
    let loop_dev = run("losetup", &["--find", "--show", image.to_str().unwrap()])
        .trim()
        .to_owned();
    cleanup.loop_dev = Some(loop_dev.clone());
    let rdev = fs::metadata(&loop_dev).unwrap().rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));

    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_msgmax = fs::read_to_string("/proc/sys/kernel/msgmax").unwrap();

    // Launch.
    let mut extra = vec!["--netns", netns_path.as_str()];
    extra.extend(cg_args.iter().map(String::as_str));
    let (status, out, sock) = launch(dir.path(), &root, &extra);
    assert!(
        status.success(),
        "launcher: {status}; log:\n{}",
        log_of(dir.path())
    );
    let pid: i32 = out
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("launcher printed {out:?}"));
    cleanup.agent_pid = Some(pid);

    let client =
        AgentClient::connect_until(&sock, AGENT_PORT, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("connect: {e:?}; log:\n{}", log_of(dir.path())));
    let hello = client.agent_info().clone();
    assert_eq!(hello.pid, 1);
    assert_eq!(hello.mode, "namespaces");
    assert_eq!(hello.kernel_release, run("uname", &["-r"]).trim());
    client.health().await.unwrap();

    // It joined the pod's network namespace.
    assert_eq!(
        fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino(),
        fs::metadata(&netns_path).unwrap().ino()
    );

    // It is in the pod's cgroups.
    for cg in &cleanup.cgroups {
        let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|p| p == pid.to_string()),
            "{}: {procs:?}",
            cg.display()
        );
    }

    // Its root holds the initramfs layout and no host path.
    let top: BTreeSet<String> = fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let layout: BTreeSet<String> = ["dev", "proc", "sys", "run", "tmp", "etc", "mnt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(top, layout);
    let allowed = |m: &str| {
        [
            "/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp",
        ]
        .contains(&m)
            || m.starts_with("/sys/fs/cgroup")
    };
    let mounts = mount_points(pid);
    assert!(
        mounts.iter().all(|m| allowed(m)),
        "unexpected mounts: {mounts:?}"
    );
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        assert!(
            Path::new(&format!("/proc/{pid}/root/dev/{dev}")).exists(),
            "/dev/{dev}"
        );
    }
    let sysfs_ro = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .any(|l| {
            l.split(' ').nth(4) == Some("/sys") && l.split(' ').nth(5).unwrap().starts_with("ro")
        });
    assert!(sysfs_ro, "sysfs must be read-only");

    // The agent's own handshake refuses other ports and junk.
    let err = open_stream(&sock, 52, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::HandshakeClosed { .. }), "{err:?}");
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        s.write_all(&[b'Z'; 100]).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("the agent closes a junk peer")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    // SetupSandbox.
    let mut req = SetupSandboxRequest {
        hostname: "hearth-test-pod".into(),
        hosts: b"127.0.0.1 localhost\n".to_vec(),
        resolv_conf: b"nameserver 192.0.2.53\n".to_vec(),
        ..Default::default()
    };
    req.sysctls.insert("kernel.msgmax".into(), "12345".into());
    req.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    client.setup_sandbox(req.clone()).await.unwrap();
    let in_pod = |p: &str| fs::read_to_string(format!("/proc/{pid}/root{p}")).unwrap();
    assert_eq!(in_pod("/etc/hostname"), "hearth-test-pod\n");
    // /proc/sys shows the reader's namespaces: read them from inside.
    assert_eq!(in_ns(pid, "-u", &["hostname"]), "hearth-test-pod\n");
    assert_eq!(in_pod("/etc/resolv.conf"), "nameserver 192.0.2.53\n");
    assert_eq!(in_pod("/etc/hosts"), "127.0.0.1 localhost\n");
    assert_eq!(
        in_ns(pid, "-i", &["cat", "/proc/sys/kernel/msgmax"]),
        "12345\n"
    );
    assert_eq!(
        in_ns(pid, "-n", &["cat", "/proc/sys/net/ipv4/ip_forward"]),
        "1\n"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/msgmax").unwrap(),
        host_msgmax
    );

    req.sysctls.insert("kernel.hostname".into(), "evil".into());
    let err = client.setup_sandbox(req).await.unwrap_err();
    let status = err.status().unwrap();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("kernel.hostname"), "{status:?}");

    // MountDrive by device number.
    let mount_req = MountDriveRequest {
        device: Some(DeviceLocator {
            by: Some(By::Number(DeviceNumber { major, minor })),
        }),
        mountpoint: "/mnt/data".into(),
        fstype: "ext4".into(),
        read_only: false,
        options: String::new(),
    };
    let mounted = client.mount_drive(mount_req.clone()).await.unwrap();
    assert_eq!(mounted.device_path, format!("/dev/hearth/{major}:{minor}"));
    assert_eq!(in_pod("/mnt/data/hello.txt"), "hello from the image\n");
    assert!(mount_points(pid).contains(&"/mnt/data".to_owned()));
    // Mounted only in the pod's mount namespace.
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&loop_dev),
        "{loop_dev} leaked into the host"
    );

    let err = client.mount_drive(mount_req.clone()).await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), tonic::Code::AlreadyExists);
    let err = client
        .mount_drive(MountDriveRequest {
            device: Some(DeviceLocator {
                by: Some(By::Serial("no-such-serial".into())),
            }),
            mountpoint: "/mnt/serial".into(),
            ..mount_req.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code(), tonic::Code::NotFound);
    assert!(err.status().unwrap().message().contains("no-such-serial"));
    let err = client
        .mount_drive(MountDriveRequest {
            mountpoint: "/mnt/other".into(),
            fstype: "erofs".into(),
            ..mount_req.clone()
        })
        .await
        .unwrap_err();
    let msg = err.status().unwrap().message().to_owned();
    assert!(
        msg.contains(&format!("{major}:{minor}")) && msg.contains("/mnt/other"),
        "{msg}"
    );

    client
        .unmount_drive(UnmountDriveRequest {
            mountpoint: "/mnt/data".into(),
        })
        .await
        .unwrap();
    assert!(!mount_points(pid).contains(&"/mnt/data".to_owned()));
    assert!(!Path::new(&format!("/proc/{pid}/root/dev/hearth/{major}:{minor}")).exists());
    let err = client
        .unmount_drive(UnmountDriveRequest {
            mountpoint: "/mnt/data".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code(), tonic::Code::NotFound);

    // Mount again and leave it to Shutdown.
    client.mount_drive(mount_req).await.unwrap();

    let rss_kib: u64 = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    eprintln!("agent VmRSS: {rss_kib} KiB");

    // Orphans in the pod are reaped by the agent: a short sleep must not
    // stay a zombie; a long one must die at Shutdown.
    let target = pid.to_string();
    let mut nsenter = Command::new("nsenter")
        .args([
            "-t",
            &target,
            "-p",
            "--",
            "sh",
            "-c",
            "sleep 0.1 & sleep 1000 & exit 0",
        ])
        .spawn()
        .unwrap();
    assert!(nsenter.wait().unwrap().success());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let kids = children_of(pid);
    assert!(
        kids.iter().any(|(_, state)| *state != 'Z'),
        "sleep 1000 runs: {kids:?}"
    );
    assert!(
        kids.iter().all(|(_, state)| *state != 'Z'),
        "zombies: {kids:?}"
    );
    let long_sleep = kids[0].0;

    // Shutdown: the reply arrives, then the agent goes away.
    client.shutdown().await.unwrap();
    let status = wait_gone(pid, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "agent still running after Shutdown; log:\n{}",
            log_of(dir.path())
        )
    });
    cleanup.agent_pid = None;
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "agent wait status {status}; log:\n{}",
        log_of(dir.path())
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        !Path::new(&format!("/proc/{long_sleep}")).exists(),
        "the pod's processes are killed"
    );
    let log = log_of(dir.path());
    assert!(log.contains("drive unmounted"), "{log}");

    // Nothing left: no mount of ours on the host, the loop device detaches.
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(root.to_str().unwrap()));
    assert!(!host_mounts.contains(&loop_dev));
    run("losetup", &["-d", &loop_dev]);
    cleanup.loop_dev = None;
    let listed = run("losetup", &["-a"]);
    assert!(!listed.contains(image.to_str().unwrap()), "{listed}");
    run("ip", &["netns", "delete", &netns]);
    cleanup.netns = None;
    // The pod cgroups are empty: they can be removed.
    for cg in cleanup.cgroups.drain(..) {
        fs::remove_dir(&cg).unwrap_or_else(|e| panic!("{}: {e}", cg.display()));
    }
    // Nothing is mounted in the root any more: its mountpoints are empty.
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt/data"] {
        let inner = fs::read_dir(root.join(d)).unwrap().count();
        assert_eq!(inner, 0, "{d} not empty");
    }
}

#[test]
fn launcher_rejects_bad_arguments() {
    let bin = agent_bin();
    let dir = tempfile::tempdir().unwrap();
    // Not a listening socket (fd 3 is a plain file).
    let file = fs::File::create(dir.path().join("f")).unwrap();
    let fd = file.as_raw_fd();
    let mut cmd = Command::new(&bin);
    cmd.args(["namespaces", "--root"])
        .arg(dir.path())
        .args(["--listen-fd", "3"])
        .stdin(Stdio::null());
    pass_as_fd3(&mut cmd, fd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fd 3 is not a listening socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Missing root; missing arguments.
    let out = Command::new(&bin)
        .args([
            "namespaces",
            "--root",
            "/nonexistent/hearth",
            "--listen-fd",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid root /nonexistent/hearth"));
    let out = Command::new(&bin).args(["namespaces"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
