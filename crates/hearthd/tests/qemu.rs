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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hearth_agent_proto::AGENT_PORT;
use hearth_runtime::agent::AgentClient;
use hearthd::config::HandlerConfig;
use k8s_cri::v1 as cri;

const HANDLER: &str = "qemu";

struct GuestBundle {
    kernel: PathBuf,
    initramfs: PathBuf,
    release: String,
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Builds (or reuses) the bundle; `Err` says why the test must skip.
fn prerequisites(test: &str) -> Result<GuestBundle, ()> {
    let skip = |why: String| {
        eprintln!("{test}: skipped: {why}");
        Err(())
    };
    if hearth_test_support::skip_unless_root(test) {
        return Err(());
    }
    let defaults = hearthd::backend::qemu::QemuConfig::default();
    if find_program("qemu-system-x86_64").is_none() {
        return skip("qemu-system-x86_64 not in PATH (apt-get install -t bookworm-backports qemu-system-x86)".into());
    }
    if !defaults.firmware.is_file() {
        return skip(format!("{} missing (qemu-system-data)", defaults.firmware.display()));
    }
    if find_program("vhost-device-vsock").is_none() {
        return skip("vhost-device-vsock not in PATH (cargo install vhost-device-vsock)".into());
    }
    let agent = match hearth_test_support::agent_binary() {
        Ok(a) => a,
        Err(e) => return skip(format!("no static agent: {e}")),
    };
    static BUNDLE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUNDLE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = std::env::temp_dir();
    let kernel_deb = std::env::var_os("HEARTH_KERNEL_DEB")
        .map(PathBuf::from)
        .or_else(|| {
            std::fs::read_dir(tmp.join("hearth-guest-cache/kernel"))
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        });
    let spec = hearth_guest::BundleSpec {
        kernel_deb,
        ..hearth_guest::BundleSpec::new(tmp.join("hearth-qemu-bundle"), agent)
    };
    match hearth_guest::build(&spec) {
        Ok(b) => Ok(GuestBundle {
            kernel: b.vmlinux,
            initramfs: b.initramfs,
            release: b.kernel_release,
        }),
        Err(e) => skip(format!(
            "cannot build the guest bundle: {}",
            hearthd::cri::status::chain(&e)
        )),
    }
}

fn qemu_env(bundle: &GuestBundle) -> Env {
    let mut env = Env::new();
    env.config.runtime_handlers.insert(
        HANDLER.into(),
        HandlerConfig {
            backend: "qemu".into(),
        },
    );
    env.config.qemu.kernel = bundle.kernel.clone();
    env.config.qemu.initramfs = bundle.initramfs.clone();
    env.config.qemu.accel = "auto".into();
    // TCG on a loaded 2-core machine: generous.
    env.config.timeouts.boot_ms = 60_000;
    env
}

fn request(name: &str, env: &Env) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(pod(name, &env.cgroup_parent)),
        runtime_handler: HANDLER.into(),
    }
}

fn pid_of(info: &serde_json::Value, which: &str) -> u32 {
    info["backendState"][which]["pid"].as_u64().unwrap() as u32
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

async fn remove(c: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>, id: &str) {
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
    assert!(wait_gone(qemu, Duration::from_secs(5)).await, "QEMU still runs");
    assert!(wait_gone(vsock, Duration::from_secs(5)).await, "vhost-device-vsock still runs");
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(console.contains("rebooting"), "the guest did not end by itself: {console}");
    let (state, _) = common::info(&mut c, &id).await;
    assert_eq!(state, NOTREADY);

    remove(&mut c, &id).await;
    daemon.shutdown().await;
    let after = env.snapshot();
    assert_eq!(before.leaked(&after), Vec::<String>::new());
    assert!(env.leftover_cgroups().is_empty(), "{:?}", env.leftover_cgroups());
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
    for (victim, name, reason) in [("qemu", "killq", "QEMU"), ("vsock", "killv", "vhost-device-vsock")] {
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
