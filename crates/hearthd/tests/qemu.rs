//! The qemu backend with a real guest: Hearth's guest bundle (Debian's
//! cloud kernel + the agent initramfs) boots under QEMU microvm (TCG on the
//! development machines), hearth-agent is PID 1, and RunPodSandbox through
//! an in-process hearthd reaches READY; then the faults.
//!
//! Needs root, `qemu-system-x86_64`, qboot.rom, `vhost-device-vsock` and
//! the guest bundle, which is built here (cached in
//! `$TMPDIR/hearth-qemu-bundle`; the kernel package comes from
//! `HEARTH_KERNEL_DEB`, the guest test's cache, or `apt-get download`).
//! Each test prints why it skips when something is missing.

mod common;
#[path = "common/qemu.rs"]
mod vm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hearth_agent_proto::AGENT_PORT;
use hearth_runtime::agent::AgentClient;
use k8s_cri::v1 as cri;
use vm::*;

fn request(name: &str, env: &Env) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(pod(name, &env.cgroup_parent)),
        runtime_handler: HANDLER.into(),
    }
}

fn pid_of(info: &serde_json::Value, which: &str) -> u32 {
    let state = if info.get("backendState").is_some() {
        &info["backendState"]
    } else {
        info
    };
    state[which]["pid"].as_u64().unwrap() as u32
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while running(pid) && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    !running(pid)
}

async fn remove(
    c: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) {
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_pod_boots_a_real_guest_with_the_agent_as_pid_1_and_leaves_nothing() {
    let test = "qemu_pod_boots_a_real_guest";
    let Ok(bundle) = prerequisites(test) else {
        return;
    };
    let env = qemu_env(&bundle);
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();

    let t0 = Instant::now();
    let id = c
        .run_pod_sandbox(request("vm", &env))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    eprintln!("{test}: RunPodSandbox → READY in {:?}", t0.elapsed());
    let (state, info) = common::info(&mut c, &id).await;
    assert_eq!(state, READY, "{info}");
    assert_eq!(info["backend"], "qemu");
    let accel = info["backendState"]["accel"].as_str().unwrap().to_owned();
    assert!(accel == "tcg" || accel == "kvm", "{info}");
    if accel == "tcg" {
        assert!(info["backendState"]["isolation"]
            .as_str()
            .unwrap()
            .contains("no security boundary"));
    }
    let qemu = pid_of(&info, "qemu");
    let vsock = pid_of(&info, "vsock");
    assert!(running(qemu) && running(vsock));
    // Both run in the pod's cgroup; QEMU in the pod's network namespace.
    for pid in [qemu, vsock] {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cg.contains("/pod-vm"), "{pid}: {cg}");
    }
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(ns(&qemu.to_string()), ns("self"));
    // QEMU dropped to a uid of the configured range once set up.
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    let uids: Vec<u32> = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect();
    let range =
        env.config.qemu.vm_uid_start..env.config.qemu.vm_uid_start + env.config.qemu.vm_uid_count;
    assert!(uids.iter().all(|u| range.contains(u)), "QEMU uids {uids:?}");
    assert!(info["backendState"]["isolation"]
        .as_str()
        .unwrap()
        .contains(&format!("QEMU runs as uid {}", uids[0])));

    // The agent is PID 1 of a real guest kernel.
    let socket = PathBuf::from(info["backendState"]["agent_socket"].as_str().unwrap());
    let agent = AgentClient::connect(&socket, AGENT_PORT, Duration::from_secs(10))
        .await
        .unwrap();
    let hello = agent.agent_info().clone();
    assert_eq!(hello.pid, 1, "{hello:?}");
    assert_eq!(hello.mode, "vm");
    assert_eq!(hello.kernel_release, bundle.release);
    drop(agent);
    // The scratch disk was mounted (READY needs MountDrive): the guest
    // console says which device.
    let serial = PathBuf::from(info["backendState"]["serial_log"].as_str().unwrap());
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(
        console.contains("drive mounted") && console.contains("/run/hearth/scratch"),
        "{console}"
    );

    // Stop: the agent shuts down, the guest resets, QEMU exits.
    let t1 = Instant::now();
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    eprintln!("{test}: StopPodSandbox in {:?}", t1.elapsed());
    assert!(
        wait_gone(qemu, Duration::from_secs(5)).await,
        "QEMU still runs"
    );
    assert!(
        wait_gone(vsock, Duration::from_secs(5)).await,
        "vhost-device-vsock still runs"
    );
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(
        console.contains("rebooting"),
        "the guest did not end by itself: {console}"
    );
    let (state, _) = common::info(&mut c, &id).await;
    assert_eq!(state, NOTREADY);

    remove(&mut c, &id).await;
    daemon.shutdown().await;
    let after = env.snapshot();
    assert_eq!(before.leaked(&after), Vec::<String>::new());
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_or_vsock_daemon_dying_makes_the_pod_notready_with_the_reason() {
    let test = "qemu_processes_dying";
    let Ok(bundle) = prerequisites(test) else {
        return;
    };
    let env = qemu_env(&bundle);
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    for (victim, name, reason) in [
        ("qemu", "killq", "QEMU"),
        ("vsock", "killv", "vhost-device-vsock"),
    ] {
        let id = c
            .run_pod_sandbox(request(name, &env))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let (_, info) = common::info(&mut c, &id).await;
        let pid = pid_of(&info, victim);
        // SAFETY: kill of a pid this test just read from the sandbox.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(wait_gone(pid, Duration::from_secs(5)).await);
        let (state, info) = common::info(&mut c, &id).await;
        assert_eq!(state, NOTREADY, "{info}");
        let why = info["reason"].as_str().unwrap_or_default();
        assert!(why.contains(reason), "{victim}: {info}");
        remove(&mut c, &id).await;
    }
    daemon.shutdown().await;
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_panic_and_hung_boot_fail_run_with_the_reason_and_leave_nothing() {
    let test = "qemu_boot_faults";
    let Ok(bundle) = prerequisites(test) else {
        return;
    };
    // A kernel panic (no init: panic=-1 resets, QEMU exits at once).
    let mut env = qemu_env(&bundle);
    env.config.qemu.extra_cmdline = "rdinit=/no-such-init".into();
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let err = c.run_pod_sandbox(request("panic", &env)).await.unwrap_err();
    assert!(err.message().contains("QEMU"), "{err:?}");
    assert!(err.message().contains("panic"), "{err:?}");
    daemon.shutdown().await;
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
    drop(env);

    // A guest that cannot answer within the boot timeout.
    let mut env = qemu_env(&bundle);
    env.config.timeouts.boot_ms = 200;
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let err = c.run_pod_sandbox(request("slow", &env)).await.unwrap_err();
    assert!(err.message().contains("within"), "{err:?}");
    daemon.shutdown().await;
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
}

/// Runs `ip <args>` in the network namespace at `netns`; (success, stdout).
fn ip_in(netns: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("ip")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Whether a TCP SYN to `ip`:1 is answered (refused) within `within`: the
/// answer is the guest kernel's RST, so the pod IP reaches the guest.
async fn answers(ip: std::net::IpAddr, within: Duration) -> Result<(), String> {
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        let addr = std::net::SocketAddr::new(ip, 1);
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            Ok(Ok(_)) => return Err(format!("something listens on {addr}")),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_pod_answers_on_its_pod_ip_through_the_tap_and_leaves_no_tap() {
    let test = "qemu_pod_network";
    let Ok(bundle) = prerequisites(test) else {
        return;
    };
    if find_program("nsenter").is_none() {
        eprintln!("{test}: skipped: nsenter not in PATH (util-linux)");
        return;
    }
    let env = qemu_env(&bundle);
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let id = c
        .run_pod_sandbox(request("net", &env))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let (state, info) = common::info(&mut c, &id).await;
    assert_eq!(state, READY, "{info}");
    let ip: std::net::IpAddr = info["network"]["ips"][0].as_str().unwrap().parse().unwrap();
    let netns = info["netns"].as_str().unwrap().to_owned();
    let nic = &info["backendState"]["nic"];
    assert_eq!(nic["tap"]["tap_name"], "tap0", "{info}");
    let mac = nic["mac"].as_str().unwrap().to_owned();

    // The tap is in the pod's netns, mirrored with the CNI veth, whose MAC
    // the guest NIC took.
    let (ok, tap) = ip_in(&netns, &["-d", "link", "show", "tap0"]);
    assert!(ok && tap.contains("tun type tap"), "{tap}");
    let (_, veth) = ip_in(&netns, &["link", "show", "eth0"]);
    assert!(veth.contains(&mac), "{mac} not in {veth}");
    // The guest configured its eth0 (the agent logs it on the console).
    let serial = PathBuf::from(info["backendState"]["serial_log"].as_str().unwrap());
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(
        console.contains("interface configured") && console.contains(&mac),
        "{console}"
    );

    // The host reaches the pod IP over the test's bridge: the guest's
    // kernel answers (RST; nothing listens in the guest).
    let t = Instant::now();
    if let Err(why) = answers(ip, Duration::from_secs(20)).await {
        panic!("{ip} did not answer: {why}; console: {console}");
    }
    eprintln!("{test}: {ip} answered in {:?}", t.elapsed());

    // Stop takes the tap with the VM (the netns stays until Remove).
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    let (exists, links) = ip_in(&netns, &["-o", "link", "show"]);
    assert!(exists, "the netns went at Stop");
    assert!(!links.contains("tap0"), "tap left after Stop: {links}");
    remove(&mut c, &id).await;
    daemon.shutdown().await;
    env.assert_clean(&before);
}

/// A tap that cannot be made (here: a link of that name is already in the
/// pod's netns) fails the boot with an error naming it, before any process
/// starts, and leaves the other link alone. Needs root only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_that_cannot_be_created_fails_the_boot_and_leaves_nothing() {
    use hearth_runtime::backend::{BackendError, SandboxBackend};
    let test = "qemu_tap_clash";
    if hearth_test_support::skip_unless_root(test) {
        return;
    }
    if find_program("nsenter").is_none() || !Path::new("/dev/net/tun").exists() {
        eprintln!("{test}: skipped: needs nsenter and /dev/net/tun");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let netns = hearth_network::NetnsManager::new(dir.path().join("netns"));
    let ns = netns.create("clash").unwrap();
    let ns_s = ns.to_str().unwrap().to_owned();
    assert!(ip_in(&ns_s, &["link", "add", "tap0", "type", "bridge"]).0);
    let backend = hearthd::backend::qemu::QemuBackend::new(
        hearthd::backend::qemu::QemuConfig::default(),
        dir.path().join("root"),
    );
    let mut spec = bench_spec(dir.path(), "vm");
    spec.netns = Some(ns.clone());
    let err = backend.boot(&spec).await.unwrap_err();
    assert!(matches!(err, BackendError::Network { .. }), "{err}");
    let msg = hearthd::cri::status::chain(&err);
    assert!(
        msg.contains("tap0") && msg.contains("already exists"),
        "{msg}"
    );
    let (ok, links) = ip_in(&ns_s, &["-d", "link", "show", "tap0"]);
    assert!(
        ok && links.contains("bridge"),
        "the clashing link went: {links}"
    );
    let (_, all) = ip_in(&ns_s, &["-d", "-o", "link", "show"]);
    assert!(!all.contains("tun type tap"), "a tap was left: {all}");
    assert_eq!(
        std::fs::read_dir(&spec.run_dir).unwrap().count(),
        0,
        "files left in the run dir"
    );
    netns.remove("clash").unwrap();
}

/// Kills a VM's processes if the test panics before its own clean-up.
struct KillOnDrop(Vec<u32>);

impl KillOnDrop {
    fn new(handle: &hearth_runtime::backend::BackendHandle) -> KillOnDrop {
        KillOnDrop(vec![pid_of(&handle.0, "qemu"), pid_of(&handle.0, "vsock")])
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if running(*pid) {
                // SAFETY: kill of a pid this test started (checked running).
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// A bare boot spec: 1 vCPU, 256 MiB, host network, no cgroup.
fn bench_spec(dir: &Path, name: &str) -> hearth_runtime::backend::BootSpec {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    hearth_runtime::backend::BootSpec {
        id: hearth_runtime::id::Id::generate(),
        size: hearth_runtime::sizing::VmSize {
            vcpus: 1,
            memory_mib: 256,
            vcpus_source: "test".into(),
            memory_source: "test".into(),
            clamped: vec![],
        },
        netns: None,
        cgroup: Default::default(),
        run_dir,
        scratch: None,
        annotations: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_are_hot_plugged_mounted_and_unplugged() {
    use hearth_agent_proto::v1 as proto;
    use hearth_runtime::backend::{DeviceLocator, Drive, SandboxBackend};
    let test = "qemu_hotplug";
    let Ok(bundle) = prerequisites(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("extra.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&image)
        .status();
    if !mkfs.is_ok_and(|s| s.success()) {
        eprintln!("{test}: skipped: mkfs.ext4 failed or is missing (e2fsprogs)");
        return;
    }
    let config = hearthd::backend::qemu::QemuConfig {
        kernel: bundle.kernel.clone(),
        initramfs: bundle.initramfs.clone(),
        ..Default::default()
    };
    let backend = hearthd::backend::qemu::QemuBackend::new(config, dir.path().join("root"));
    let spec = bench_spec(dir.path(), "vm");
    let mut handle = backend.boot(&spec).await.unwrap();
    let _guard = KillOnDrop::new(&handle);
    let agent = backend
        .connect_agent(&handle, Duration::from_secs(60))
        .await
        .unwrap();
    let drive = Drive {
        id: "extra".into(),
        path: image.clone(),
        read_only: false,
    };
    let t = Instant::now();
    let locator = backend.attach_drive(&mut handle, &drive).await.unwrap();
    eprintln!("{test}: hot-plug to DRIVER_OK in {:?}", t.elapsed());
    let DeviceLocator::Serial(serial) = locator else {
        panic!("{locator:?}");
    };
    assert_eq!(serial, "hearth-hp0");
    agent
        .mount_drive(proto::MountDriveRequest {
            device: Some(proto::DeviceLocator {
                by: Some(proto::device_locator::By::Serial(serial)),
            }),
            mountpoint: "/mnt/extra".into(),
            fstype: "ext4".into(),
            read_only: false,
            options: String::new(),
        })
        .await
        .unwrap();
    agent
        .unmount_drive(proto::UnmountDriveRequest {
            mountpoint: "/mnt/extra".into(),
        })
        .await
        .unwrap();
    backend.detach_drive(&mut handle, "extra").await.unwrap();
    assert_eq!(handle.0["hotplugged"], serde_json::json!({}));
    // The slot is free again.
    backend.attach_drive(&mut handle, &drive).await.unwrap();
    assert_eq!(handle.0["hotplugged"]["extra"]["slot"], 0);

    let qemu = pid_of(&handle.0, "qemu");
    let _ = agent.shutdown().await;
    backend
        .stop(&handle, Duration::from_secs(10))
        .await
        .unwrap();
    backend.destroy(&handle).await.unwrap();
    assert!(!running(qemu));
}

/// Not a test: boot-to-agent-ready and host memory per VM, printed.
/// `cargo test -p hearthd --test qemu -- --ignored --nocapture bench`
/// (`HEARTH_QEMU_BENCH_BOOTS`, default 20). The backend is driven directly
/// (no CNI, no scratch disk), so this is the VM's own cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_boot_to_agent_ready() {
    use hearth_runtime::backend::SandboxBackend;
    let test = "bench_boot_to_agent_ready";
    let Ok(bundle) = prerequisites(test) else {
        return;
    };
    let boots: usize = std::env::var("HEARTH_QEMU_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let config = hearthd::backend::qemu::QemuConfig {
        kernel: bundle.kernel.clone(),
        initramfs: bundle.initramfs.clone(),
        ..Default::default()
    };
    let backend = hearthd::backend::qemu::QemuBackend::new(config, dir.path().join("root"));
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    let mut accel = String::new();
    let mut failures = 0;
    for i in 0..boots {
        let spec = bench_spec(dir.path(), &format!("r{i}"));
        let t = Instant::now();
        let handle = backend.boot(&spec).await.unwrap();
        let _guard = KillOnDrop::new(&handle);
        let agent = match backend
            .connect_agent(&handle, Duration::from_secs(60))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                failures += 1;
                let log = std::fs::read_to_string(spec.run_dir.join("vsock.log"));
                eprintln!("{test}: boot {i} failed: {e:?}; vsock.log: {log:?}");
                backend.destroy(&handle).await.unwrap();
                continue;
            }
        };
        ready.push(t.elapsed());
        eprintln!("{test}: boot {i}: {:?}", t.elapsed());
        accel = handle.0["accel"].as_str().unwrap_or_default().to_owned();
        let kib = |which: &str| {
            let pid = handle.0[which]["pid"].as_u64().unwrap() as u32;
            hearth_qemu::spawn::rss_kib(pid).unwrap_or(0)
        };
        rss.push((kib("qemu"), kib("vsock")));
        let _ = agent.shutdown().await;
        backend
            .stop(&handle, Duration::from_secs(10))
            .await
            .unwrap();
        backend.destroy(&handle).await.unwrap();
    }
    ready.sort();
    let pct = |p: f64| ready[((ready.len() as f64 * p).ceil() as usize).clamp(1, ready.len()) - 1];
    let mean_rss = |f: fn(&(u64, u64)) -> u64| rss.iter().map(f).sum::<u64>() / rss.len() as u64;
    eprintln!(
        "{test}: {} boots, {failures} failed ({accel}, 1 vCPU, 256 MiB): boot→agent ready median {:?}, p95 {:?}, min {:?}, max {:?}; RSS at ready: QEMU {} KiB, vhost-device-vsock {} KiB (mean)",
        ready.len(),
        pct(0.5),
        pct(0.95),
        ready[0],
        ready[ready.len() - 1],
        mean_rss(|r| r.0),
        mean_rss(|r| r.1),
    );
}
