//! The firecracker backend against a real Firecracker binary, when one is
//! present: the binary from `HEARTH_FIRECRACKER` (else `firecracker` on
//! PATH), the jailer and
//! the compiled seccomp filter from `HEARTH_JAILER` / `HEARTH_SECCOMP_FILTER`
//! (else beside the binary: `jailer`, `empty-seccomp.bpf`), the guest bundle
//! from `HEARTH_GUEST_DIR` (else `$TMPDIR/hearth-guest-cache`, where the
//! guest crate's test and `hearthctl guest build --work-dir` put it). Each
//! missing piece makes a test print why and return: CI has no Firecracker.
//!
//! On this project's machines /dev/kvm is PVM: Firecracker accepts its
//! whole API and InstanceStart, but the guest never boots. So the checks
//! here stop at InstanceStart, the agent wait ending by deadline or VMM
//! exit, and the cleanup after it.

mod common;
#[path = "common/firecracker.rs"]
mod fcenv;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use fcenv::*;
use hearth_firecracker::FirecrackerClient;
use hearth_runtime::backend::{
    BackendError, BootSpec, DeviceLocator, Drive, Liveness, PodCgroupSpec, SandboxBackend,
};
use hearth_runtime::sizing::VmSize;
use hearth_runtime::Id;
use hearthd::backend::firecracker::{vm_info, FirecrackerBackend, FirecrackerConfig};
use k8s_cri::v1 as cri;
use tonic::Code;

/// An `Env` with the firecracker backend configured (`allow_pvm` as
/// given) and the leak snapshot taken before anything runs.
fn fc_env(fc: &Fc, allow_pvm: bool) -> (Env, hearth_test_support::leaks::Snapshot) {
    let mut env = Env::new();
    env.config.firecracker = fc_config(fc, allow_pvm);
    let before = env.snapshot();
    (env, before)
}

/// No Firecracker process of this test is left.
fn assert_no_vmm(env: &Env) {
    assert!(
        vmms_under(env.path()).is_empty(),
        "{:?}",
        vmms_under(env.path())
    );
}

/// Nothing leaked since `before`.
fn assert_nothing_leaked(env: &Env, before: &hearth_test_support::leaks::Snapshot) {
    let leaked = before.leaked(&env.snapshot());
    assert!(leaked.is_empty(), "{leaked:#?}");
}

/// Processes whose root (chroot) or command line is under `dir`.
fn vmms_under(dir: &Path) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                return None;
            }
            let root = std::fs::read_link(e.path().join("root")).ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (root.starts_with(dir) || cmd.contains(&*dir.to_string_lossy()))
                .then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

/// Entries of the jail base left over (the `firecracker` dir itself may stay).
fn jails_left(env: &Env) -> Vec<PathBuf> {
    let base = env.config.state.join("jail/firecracker");
    std::fs::read_dir(base)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn boot_spec(dir: &Path, vcpus: u32, memory_mib: u64, cgroup_parent: &str) -> BootSpec {
    let id = Id::generate();
    let run_dir = dir.join("run").join(id.short());
    std::fs::create_dir_all(&run_dir).unwrap();
    BootSpec {
        id,
        size: VmSize {
            vcpus,
            memory_mib,
            vcpus_source: "test".into(),
            memory_source: "test".into(),
            clamped: Vec::new(),
        },
        netns: None,
        cgroup: PodCgroupSpec {
            parent: cgroup_parent.into(),
            procs_files: Vec::new(),
        },
        run_dir,
        scratch: None,
        annotations: Default::default(),
    }
}

/// (a) Without allow_pvm on a PVM host: FailedPrecondition with the PVM
/// message, the reason in Status, and nothing started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvm_host_is_refused_without_allow_pvm() {
    let Some(fc) = prerequisites("pvm_host_is_refused_without_allow_pvm") else {
        return;
    };
    if !pvm_host() {
        eprintln!("skipping pvm_host_is_refused_without_allow_pvm: /dev/kvm here is not PVM");
        return;
    }
    let (env, before) = fc_env(&fc, false);
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let e = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod("pvm", &env.cgroup_parent)),
            runtime_handler: "firecracker".into(),
        })
        .await
        .expect_err("must be refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    for needle in [
        "paravirtual (PVM",
        "stock guest kernel cannot boot",
        "qemu or namespaces handler",
        "firecracker.allow_pvm = true",
    ] {
        assert!(
            e.message().contains(needle),
            "{needle:?} not in {:?}",
            e.message()
        );
    }
    let s = c
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let handlers: serde_json::Value = serde_json::from_str(&s.info["runtimeHandlers"]).unwrap();
    assert_eq!(handlers["firecracker"]["usable"], false);
    assert!(handlers["firecracker"]["reason"]
        .as_str()
        .unwrap()
        .contains("PVM"));
    drop(c);
    daemon.shutdown().await;
    assert_no_vmm(&env);
    assert!(jails_left(&env).is_empty(), "{:?}", jails_left(&env));
    assert!(!env.config.state.join("jail").exists(), "jail base made");
    assert_nothing_leaked(&env, &before);
}

/// (b) With allow_pvm, the backend directly: the jailed VMM starts in its
/// cgroup as its own uid, /vm/config shows the pod's size, boot source,
/// scratch + placeholder drives and vsock; InstanceStart is accepted;
/// drives attach by PATCH; the agent wait ends naming the deadline or the
/// VMM's exit; destroy leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_vm_is_configured_up_to_instance_start() {
    let Some(fc) = prerequisites("jailed_vm_is_configured_up_to_instance_start") else {
        return;
    };
    let (env, before) = fc_env(&fc, true);
    // The pod's cgroup, as the manager would have made it (cpu hierarchy).
    let (parent, cgroups, _cleanup) = pod_cgroup(&env, "pod-direct");
    let cpu = Path::new(CPU_HIERARCHY);
    let backend = FirecrackerBackend::new(&env.config);
    backend.check().expect("usable with allow_pvm");

    // 1.5 CPU and 256 MiB + the guest's 64 MiB, as the sizing computes it.
    let spec = boot_spec(env.path(), 2, 320, if cgroups { &parent } else { "" });
    let t = Instant::now();
    let mut handle = backend.boot(&spec).await.expect("boot");
    eprintln!("boot (spawn + api + InstanceStart): {:?}", t.elapsed());
    let info = vm_info(&handle).unwrap();
    let instance_dir = info.instance_dir.clone().expect("jailed");
    assert!(instance_dir.starts_with(env.config.state.join("jail/firecracker")));
    let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(info.uid.to_string().as_str()),
        "{uid_line}"
    );
    assert!(info.uid >= 200_000, "uid from the configured range");
    let vm_cgroup = cpu.join(&parent).join(spec.id.short());
    if cgroups {
        let procs = std::fs::read_to_string(vm_cgroup.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|p| p == info.pid.to_string()), "{procs}");
        assert_eq!(
            std::fs::read_to_string(vm_cgroup.join("cpu.shares"))
                .unwrap()
                .trim(),
            "2048"
        );
    } else {
        eprintln!("no cgroup v1 cpu hierarchy here: --parent-cgroup not checked");
    }

    let api = FirecrackerClient::new(&info.api_socket);
    let state = api.instance_info().await.unwrap();
    assert!(state.is_running(), "InstanceStart accepted: {state:?}");
    // Firecracker's metrics, flushed on demand, for PodSandboxStatus.
    let live = backend.live_info(&handle).await.expect("metrics");
    let metrics = &live["firecrackerMetrics"];
    assert!(metrics["utc_timestamp_ms"].as_u64().unwrap() > 0, "{live}");
    assert!(metrics.get("vmm").is_some(), "{live}");
    let cfg = api.vm_config().await.unwrap();
    let m = cfg.machine_config.as_ref().unwrap();
    assert_eq!((m.vcpu_count, m.mem_size_mib), (2, 320));
    let boot = cfg.boot_source.as_ref().unwrap();
    assert_eq!(boot.kernel_image_path, "/vmlinux");
    assert_eq!(boot.initrd_path.as_deref(), Some("/initramfs.cpio"));
    assert!(boot
        .boot_args
        .as_deref()
        .unwrap()
        .starts_with("console=ttyS0 reboot=k panic=-1 pci=off quiet"));
    // GET /vm/config lists the drives in no particular order after
    // InstanceStart; the slot order (vda, vdb, ...) is the PUT order.
    let mut drives: Vec<(&str, Option<bool>)> = cfg
        .drives
        .iter()
        .map(|d| (d.drive_id.as_str(), d.is_read_only))
        .collect();
    drives.sort();
    assert_eq!(
        drives,
        [
            ("ph_ro_0", Some(true)),
            ("ph_ro_1", Some(true)),
            ("ph_ro_2", Some(true)),
            ("ph_ro_3", Some(true)),
            ("ph_rw_0", Some(false)),
            ("scratch", Some(false)),
        ]
    );
    assert!(cfg.drives.iter().all(|d| !d.is_root_device));
    let vsock = cfg.vsock.as_ref().unwrap();
    assert_eq!(
        (vsock.guest_cid, vsock.uds_path.as_str()),
        (3, "/run/vsock.sock")
    );
    assert!(cfg.entropy.is_some(), "{cfg:?}");

    // Drives: scratch is slot 0 (vda); an image takes the first read-only
    // placeholder (vdc); detach points it back at its placeholder.
    let scratch = env.path().join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let image = env.path().join("image.erofs");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let loc = backend
        .attach_drive(
            &mut handle,
            &Drive {
                id: "scratch".into(),
                path: scratch.clone(),
                read_only: false,
            },
        )
        .await
        .expect("attach scratch");
    assert_eq!(loc, DeviceLocator::Path("/dev/vda".into()));
    let loc = backend
        .attach_drive(
            &mut handle,
            &Drive {
                id: "img1".into(),
                path: image.clone(),
                read_only: true,
            },
        )
        .await
        .expect("attach image");
    assert_eq!(loc, DeviceLocator::Path("/dev/vdc".into()));
    let cfg = api.vm_config().await.unwrap();
    let path_of = |cfg: &hearth_firecracker::FullVmConfiguration, id: &str| {
        cfg.drives
            .iter()
            .find(|d| d.drive_id == id)
            .and_then(|d| d.path_on_host.clone())
            .unwrap()
    };
    assert_eq!(path_of(&cfg, "scratch"), "/scratch.drive");
    assert_eq!(path_of(&cfg, "ph_ro_0"), "/ph_ro_0.drive");
    assert!(instance_dir.join("root/ph_ro_0.drive").exists());
    backend.detach_drive(&mut handle, "img1").await.unwrap();
    let cfg = api.vm_config().await.unwrap();
    assert_eq!(path_of(&cfg, "ph_ro_0"), "/ph_ro_0.img");
    assert!(!instance_dir.join("root/ph_ro_0.drive").exists());
    backend.detach_drive(&mut handle, "img1").await.unwrap();

    // The agent wait ends at the deadline or when the VMM exits, and says which.
    let t = Instant::now();
    let e = match backend.connect_agent(&handle, Duration::from_secs(2)).await {
        Ok(_) => panic!("an agent answered on a PVM host?"),
        Err(e) => e,
    };
    let BackendError::AgentNotReady { reason } = &e else {
        panic!("{e:?}")
    };
    eprintln!("agent wait ended after {:?}: {reason}", t.elapsed());
    assert!(
        reason.contains("no answer from the agent within 2s") || reason.contains("VMM exited"),
        "{reason}"
    );
    assert!(t.elapsed() < Duration::from_secs(4));

    // Stop: Ctrl-Alt-Del (no guest here to take it), then SIGKILL after
    // the timeout; the jail stays until destroy.
    assert_eq!(backend.liveness(&handle), Liveness::Alive);
    let t = Instant::now();
    backend
        .stop(&handle, Duration::from_millis(500))
        .await
        .expect("stop");
    eprintln!("stop took {:?}", t.elapsed());
    assert!(matches!(backend.liveness(&handle), Liveness::Gone(_)));
    assert!(instance_dir.exists());
    backend
        .stop(&handle, Duration::from_millis(500))
        .await
        .expect("stop is idempotent");
    backend.destroy(&handle).await.expect("destroy");
    backend
        .destroy(&handle)
        .await
        .expect("destroy is idempotent");
    assert!(!Path::new(&format!("/proc/{}", info.pid)).exists() || !alive(info.pid));
    assert!(!instance_dir.exists(), "jail left");
    assert!(!vm_cgroup.exists(), "vm cgroup left");
    assert!(!spec.run_dir.join("placeholders").exists());
    assert!(
        scratch.exists() && image.exists(),
        "the files themselves stay"
    );
    if cgroups {
        std::fs::remove_dir(cpu.join(&parent)).unwrap();
        let _ = std::fs::remove_dir(cpu.join(env.cgroup_parent.trim_start_matches('/')));
    }
    assert_no_vmm(&env);
    assert_nothing_leaked(&env, &before);
}

/// Removes a test's cgroup tree (empty dirs only) even when the test
/// panics half-way; the asserts check the backend's own cleanup first.
/// The host's v1 cpu hierarchy (the jailer's cgroup is checked there).
const CPU_HIERARCHY: &str = "/sys/fs/cgroup/cpu";

/// The pod's cgroup in the v1 cpu hierarchy, as the manager would have
/// made it: its path relative to the hierarchy, whether it could be made
/// (no v1 cpu hierarchy: false), and a guard that removes the test's tree.
fn pod_cgroup(env: &Env, name: &str) -> (String, bool, CgroupCleanup) {
    let parent = format!("{}/{name}", env.cgroup_parent.trim_start_matches('/'));
    let cpu = Path::new(CPU_HIERARCHY);
    let made = cpu.is_dir() && std::fs::create_dir_all(cpu.join(&parent)).is_ok();
    let cleanup = CgroupCleanup(cpu.join(env.cgroup_parent.trim_start_matches('/')));
    (parent, made, cleanup)
}

struct CgroupCleanup(PathBuf);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        fn rm(dir: &Path) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rm(&e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        rm(&self.0);
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// (b) With allow_pvm, through the CRI: RunPodSandbox boots the VM, waits
/// for an agent that cannot come, fails naming why, and the rollback
/// leaves no process, jail, socket, loop device, netns or cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pod_sandbox_with_allow_pvm_fails_cleanly() {
    let Some(fc) = prerequisites("run_pod_sandbox_with_allow_pvm_fails_cleanly") else {
        return;
    };
    if !pvm_host() {
        eprintln!("skipping run_pod_sandbox_with_allow_pvm_fails_cleanly: not a PVM host (a real guest would boot)");
        return;
    }
    let mut env = Env::new();
    env.config.firecracker = fc_config(&fc, true);
    env.config.timeouts.boot_ms = 2_000;
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let t = Instant::now();
    let e = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod("fcpod", &env.cgroup_parent)),
            runtime_handler: "firecracker".into(),
        })
        .await
        .expect_err("no guest boots on PVM");
    eprintln!("RunPodSandbox failed after {:?}: {e:?}", t.elapsed());
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("no answer from the agent within 2s")
            || e.message().contains("VMM exited"),
        "{e:?}"
    );
    let pods = c
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(pods.items.is_empty(), "{:?}", pods.items);
    drop(c);
    daemon.shutdown().await;
    assert_no_vmm(&env);
    assert!(jails_left(&env).is_empty(), "{:?}", jails_left(&env));
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
    let sandboxes = env.config.state.join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run dirs left: {left:?}");
    assert_nothing_leaked(&env, &before);
}

/// Bad set-ups are named with their fix, before anything starts: a
/// missing guest bundle, a binary that is not Firecracker, one too old, a
/// dynamic one with the jailer, no seccomp filter with the jailer; and a
/// size Firecracker refuses comes back with Firecracker's own words,
/// leaving nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_firecracker_setups_are_named() {
    let Some(fc) = prerequisites("bad_firecracker_setups_are_named") else {
        return;
    };
    let env = Env::new();
    let reason = |f: &dyn Fn(&mut FirecrackerConfig)| {
        let mut config = env.config.clone();
        config.firecracker = fc_config(&fc, true);
        f(&mut config.firecracker);
        match FirecrackerBackend::new(&config).check() {
            Err(BackendError::Unavailable { reason, .. }) => reason,
            other => panic!("{other:?}"),
        }
    };
    let empty = env.path().join("empty-guest");
    std::fs::create_dir_all(&empty).unwrap();
    let r = reason(&|c| c.guest_dir = empty.clone());
    assert!(
        r.contains("vmlinux") && r.contains("run `hearthctl guest build`"),
        "{r}"
    );
    let r = reason(&|c| c.binary = "/bin/true".into());
    assert!(r.contains("/bin/true is not Firecracker"), "{r}");
    let old = env.path().join("old-firecracker");
    hearth_test_support::write_executable(&old, "#!/bin/sh\necho 'Firecracker v1.7.0'\n");
    let r = reason(&|c| c.binary = old.clone());
    assert!(
        r.contains("1.7.0 is too old") && r.contains(">= 1.8"),
        "{r}"
    );
    let r = reason(&|c| c.seccomp_filter = PathBuf::new());
    assert!(
        r.contains("firecracker.seccomp_filter") && r.contains("--no-seccomp"),
        "{r}"
    );
    let r = reason(&|c| c.binary = "no-such-firecracker".into());
    assert!(
        r.contains("not found") && r.contains("firecracker.binary"),
        "{r}"
    );
    // A dynamically linked binary that passes the version check.
    let dynamic = env.path().join("dyn-firecracker");
    let src = env.path().join("dyn.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void){puts(\"Firecracker v1.16.1\");return 0;}\n",
    )
    .unwrap();
    let cc = std::process::Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&dynamic)
        .status();
    if matches!(cc, Ok(s) if s.success()) {
        let r = reason(&|c| c.binary = dynamic.clone());
        assert!(
            r.contains("dynamically linked") && r.contains("static"),
            "{r}"
        );
    } else {
        eprintln!("no C compiler: the dynamic-binary case is not checked");
    }

    // A size Firecracker refuses: its fault message comes back, nothing stays.
    let mut config = env.config.clone();
    config.firecracker = fc_config(&fc, true);
    let backend = FirecrackerBackend::new(&config);
    let spec = boot_spec(env.path(), 33, 256, "");
    let e = backend.boot(&spec).await.expect_err("33 vCPUs");
    let text = hearthd::cri::status::chain(&e);
    eprintln!("refused size: {text}");
    assert!(
        text.contains("PUT /machine-config") && text.contains("400"),
        "{text}"
    );
    assert!(text.contains("vCPU"), "Firecracker's own words: {text}");
    // The CRI sees it as the pod's fault: InvalidArgument.
    assert!(
        matches!(e, hearth_runtime::backend::BackendError::Refused { .. }),
        "{e:?}"
    );
    let status = hearthd::cri::status::to_status(hearth_runtime::RuntimeError::Backend(e));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_no_vmm(&env);
    assert!(jails_left(&env).is_empty(), "{:?}", jails_left(&env));
    assert!(!spec.run_dir.join("placeholders").exists());
}

/// `use_jailer = false` (development): Firecracker runs directly, the API
/// is given host paths, and destroy removes its sockets and placeholders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_vm_without_the_jailer() {
    let Some(fc) = prerequisites("direct_vm_without_the_jailer") else {
        return;
    };
    let mut env = Env::new();
    env.config.firecracker = FirecrackerConfig {
        use_jailer: false,
        seccomp_filter: PathBuf::new(),
        ..fc_config(&fc, true)
    };
    let before = env.snapshot();
    let backend = FirecrackerBackend::new(&env.config);
    backend.check().expect("usable without the jailer");
    // A malformed placeholder annotation is the pod's error.
    let mut bad = boot_spec(env.path(), 1, 128, "");
    bad.annotations.insert(
        hearthd::backend::firecracker::PLACEHOLDER_ANNOTATION.into(),
        "ro=lots".into(),
    );
    let e = backend.boot(&bad).await.expect_err("bad annotation");
    assert!(matches!(e, BackendError::Refused { .. }), "{e:?}");
    // The annotation sizes the pool: scratch + 2 read-only slots.
    let mut spec = boot_spec(env.path(), 1, 128, "");
    spec.annotations.insert(
        hearthd::backend::firecracker::PLACEHOLDER_ANNOTATION.into(),
        "ro=2,rw=0".into(),
    );
    let mut handle = backend.boot(&spec).await.expect("boot");
    let info = vm_info(&handle).unwrap();
    assert!(info.instance_dir.is_none());
    let mut ids: Vec<String> = FirecrackerClient::new(&info.api_socket)
        .vm_config()
        .await
        .unwrap()
        .drives
        .into_iter()
        .map(|d| d.drive_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["ph_ro_0", "ph_ro_1", "scratch"]);
    assert!(info.api_socket.starts_with(&spec.run_dir));
    let api = FirecrackerClient::new(&info.api_socket);
    assert!(api.instance_info().await.unwrap().is_running());
    let cfg = api.vm_config().await.unwrap();
    assert_eq!(
        cfg.boot_source.unwrap().kernel_image_path,
        fc.guest_dir.join("vmlinux").display().to_string()
    );
    let scratch = env.path().join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let loc = backend
        .attach_drive(
            &mut handle,
            &Drive {
                id: "scratch".into(),
                path: scratch.clone(),
                read_only: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(loc, DeviceLocator::Path("/dev/vda".into()));
    let cfg = api.vm_config().await.unwrap();
    let d = cfg.drives.iter().find(|d| d.drive_id == "scratch").unwrap();
    assert_eq!(d.path_on_host.as_deref(), scratch.to_str());
    // A VMM that dies ends the agent wait at once, saying so.
    // SAFETY: kill(2) on the VMM this test started.
    unsafe { libc::kill(info.pid as i32, libc::SIGKILL) };
    let t = Instant::now();
    let e = match backend.connect_agent(&handle, Duration::from_secs(5)).await {
        Ok(_) => panic!("agent of a killed VMM answered"),
        Err(e) => e,
    };
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let BackendError::AgentNotReady { reason } = &e else {
        panic!("{e:?}")
    };
    assert!(reason.starts_with("VMM exited"), "{reason}");
    assert!(reason.contains("last output: "), "{reason}");
    backend.destroy(&handle).await.expect("destroy");
    assert!(!info.api_socket.exists() && !info.vsock.exists());
    assert!(!spec.run_dir.join("placeholders").exists());
    assert_no_vmm(&env);
    std::fs::remove_dir_all(env.path().join("run")).unwrap();
    assert_nothing_leaked(&env, &before);
}

/// After a hearthd restart the VM is found from its persisted handle alone:
/// alive, and destroyed with everything it held, including a drive
/// bind-mounted into the jail from another filesystem and the jailer's cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_adopts_and_destroys_from_the_handle() {
    let Some(fc) = prerequisites("a_restarted_backend_adopts_and_destroys_from_the_handle") else {
        return;
    };
    let (env, before) = fc_env(&fc, true);
    let (parent, cgroups, _cleanup) = pod_cgroup(&env, "pod-restart");
    let cpu = Path::new(CPU_HIERARCHY);
    let spec = boot_spec(env.path(), 1, 128, if cgroups { &parent } else { "" });
    let first = FirecrackerBackend::new(&env.config);
    let mut handle = first.boot(&spec).await.expect("boot");
    // A drive on another filesystem is bind-mounted, not hard-linked.
    let shm = tempfile::Builder::new()
        .prefix("hearth-fc-test")
        .tempdir_in("/dev/shm")
        .ok();
    if let Some(shm) = &shm {
        let image = shm.path().join("image.erofs");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        first
            .attach_drive(
                &mut handle,
                &Drive {
                    id: "img".into(),
                    path: image,
                    read_only: true,
                },
            )
            .await
            .expect("attach across filesystems");
    }
    let persisted = serde_json::to_string(&handle).unwrap();
    drop(first); // hearthd exits; the VM keeps running

    let second = FirecrackerBackend::new(&env.config);
    let handle = serde_json::from_str(&persisted).unwrap();
    let info = vm_info(&handle).unwrap();
    let instance_dir = info.instance_dir.clone().unwrap();
    // The first backend's FIFO drains live on in this process (a real
    // restart ends them with the process): 2 fds. Adoption re-opens both.
    let fifo_fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|t| t.starts_with(&instance_dir))
            .count()
    };
    assert_eq!(fifo_fds(), 2);
    assert_eq!(second.liveness(&handle), Liveness::Alive);
    assert_eq!(fifo_fds(), 4, "log and metrics drains re-opened");
    second
        .destroy(&handle)
        .await
        .expect("destroy from the handle");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fifo_fds(), 2, "adopted drains closed");
    assert!(matches!(second.liveness(&handle), Liveness::Gone(_)));
    assert!(!instance_dir.exists(), "jail left");
    let vm_cgroup = cpu.join(&parent).join(spec.id.short());
    assert!(!vm_cgroup.exists(), "vm cgroup left");
    if cgroups {
        std::fs::remove_dir(cpu.join(&parent)).unwrap();
        let _ = std::fs::remove_dir(cpu.join(env.cgroup_parent.trim_start_matches('/')));
    }
    assert_no_vmm(&env);
    let leaked: Vec<String> = before
        .leaked(&env.snapshot())
        .into_iter()
        .filter(|l| !(l.starts_with("fd: ") && l.contains(".fifo (deleted)")))
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}

/// The pod's scratch disk is in its slot at boot (Firecracker refuses PATCH
/// before InstanceStart, and a PATCH after it would race the agent's mount
/// against the guest seeing the new size): here from another filesystem
/// (/dev/shm), so it is bind-mounted into the jail. attach_drive("scratch")
/// then only tells the core where it is; destroy leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_disk_is_in_its_slot_at_boot() {
    let Some(fc) = prerequisites("the_scratch_disk_is_in_its_slot_at_boot") else {
        return;
    };
    let (env, before) = fc_env(&fc, true);
    let shm = tempfile::Builder::new()
        .prefix("hearth-scratch")
        .tempdir_in("/dev/shm")
        .unwrap();
    let scratch = shm.path().join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let backend = FirecrackerBackend::new(&env.config);
    let mut spec = boot_spec(env.path(), 1, 128, "");
    spec.scratch = Some(scratch.clone());
    let mut handle = backend.boot(&spec).await.expect("boot");
    let info = vm_info(&handle).unwrap();
    let api = FirecrackerClient::new(&info.api_socket);
    let cfg = api.vm_config().await.unwrap();
    let d = cfg.drives.iter().find(|d| d.drive_id == "scratch").unwrap();
    assert_eq!(d.path_on_host.as_deref(), Some("/scratch.drive"));
    assert_eq!(d.is_read_only, Some(false));
    let jailed = info
        .instance_dir
        .clone()
        .expect("jailed")
        .join("root/scratch.drive");
    assert_eq!(
        std::fs::metadata(&jailed).unwrap().len(),
        16 << 20,
        "the jail holds the pod's scratch disk, not a placeholder"
    );
    let loc = backend
        .attach_drive(
            &mut handle,
            &Drive {
                id: "scratch".into(),
                path: scratch.clone(),
                read_only: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(loc, DeviceLocator::Path("/dev/vda".into()));
    backend.destroy(&handle).await.expect("destroy");
    assert!(
        scratch.exists(),
        "destroy must not delete the pod's scratch disk (the core does)"
    );
    assert!(vmms_under(env.path()).is_empty());
    assert!(jails_left(&env).is_empty(), "{:?}", jails_left(&env));
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
}

/// Runs a command, panicking with its output when it fails; returns stdout.
fn cmd(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod with a network: the tap is made in the pod's netns owned by the
/// VM's uid and gid (the jailed Firecracker opens it without
/// CAP_NET_ADMIN), given to Firecracker before InstanceStart with the CNI
/// interface's MAC, and gone after Stop + destroy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_is_owned_by_the_vm_uid_and_given_to_firecracker() {
    let test = "the_tap_is_owned_by_the_vm_uid_and_given_to_firecracker";
    let Some(fc) = prerequisites(test) else {
        return;
    };
    let (env, before) = fc_env(&fc, true);
    // The pod's netns with a CNI-like veth `eth0` (address, default route).
    let netns = hearth_network::NetnsManager::new(env.config.network.netns_dir.clone());
    let ns = netns.create("fcnet").unwrap();
    let ns_s = ns.to_str().unwrap().to_owned();
    let nsenter = format!("--net={ns_s}");
    let outside = format!("hfo{}", std::process::id() % 100_000);
    cmd(&[
        "ip", "link", "add", "name", &outside, "type", "veth", "peer", "name", "eth0", "netns",
        &ns_s,
    ]);
    let in_ns = |args: &[&str]| {
        let mut a = vec!["nsenter", nsenter.as_str(), "ip"];
        a.extend_from_slice(args);
        cmd(&a)
    };
    in_ns(&["addr", "add", "10.231.9.2/24", "dev", "eth0"]);
    in_ns(&["link", "set", "eth0", "up"]);
    in_ns(&["route", "add", "default", "via", "10.231.9.1"]);
    let veth = in_ns(&["-o", "link", "show", "eth0"]);

    let backend = FirecrackerBackend::new(&env.config);
    let mut spec = boot_spec(env.path(), 1, 128, "");
    spec.netns = Some(ns.clone());
    let handle = backend.boot(&spec).await.expect("boot");
    let info = vm_info(&handle).unwrap();
    let (tap, mac) = info.nic.clone().expect("a NIC");
    assert_eq!(tap, "tap0");
    assert!(
        veth.contains(&mac),
        "the guest takes the veth's MAC {mac}: {veth}"
    );
    let details = in_ns(&["-d", "link", "show", "tap0"]);
    assert!(details.contains("tun type tap"), "{details}");
    assert!(
        details.contains(&format!("user {} group {}", info.uid, info.uid)),
        "the tap is the VM's: {details}"
    );
    let api = FirecrackerClient::new(&info.api_socket);
    assert!(api.instance_info().await.unwrap().is_running());
    let cfg = api.vm_config().await.unwrap();
    assert_eq!(cfg.network_interfaces.len(), 1, "{cfg:?}");
    let nic = &cfg.network_interfaces[0];
    assert_eq!(
        (nic.iface_id.as_str(), nic.host_dev_name.as_str()),
        ("eth0", "tap0")
    );
    assert_eq!(nic.guest_mac.as_deref(), Some(mac.as_str()));

    backend
        .stop(&handle, Duration::from_millis(200))
        .await
        .unwrap();
    let links = in_ns(&["-o", "link", "show"]);
    assert!(!links.contains("tap0"), "tap left after stop: {links}");
    backend.destroy(&handle).await.expect("destroy");
    // Destroy again (a second Remove, or after a restart): nothing to do.
    backend.destroy(&handle).await.expect("destroy twice");
    let q = cmd(&["nsenter", &nsenter, "tc", "qdisc", "show", "dev", "eth0"]);
    assert!(!q.contains("ingress"), "the redirect stayed: {q}");
    netns.remove("fcnet").unwrap();
    assert!(vmms_under(env.path()).is_empty());
    assert!(jails_left(&env).is_empty(), "{:?}", jails_left(&env));
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
}
