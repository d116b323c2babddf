//! Against a real Firecracker binary, when one is present.
//!
//! The binary comes from `HEARTH_FIRECRACKER` or `firecracker` on `PATH`; the
//! jailer from `HEARTH_JAILER` or beside it. InstanceStart needs a real ELF
//! vmlinux: `HEARTH_VMLINUX`, else the guest bundle test's cache
//! (`$TMPDIR/hearth-guest-cache/vmlinux`). The jailer run also needs a
//! compiled seccomp filter in `HEARTH_SECCOMP_FILTER` and root. Each missing
//! piece makes the test print why and return. On a PVM host the guest does
//! not boot; InstanceStart being accepted is what is checked.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_firecracker::*;

fn firecracker_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_FIRECRACKER") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("firecracker"))
        .find(|p| p.is_file())
}

fn prerequisites() -> Option<PathBuf> {
    let Some(fc) = firecracker_bin() else {
        eprintln!("skipping: no firecracker (set HEARTH_FIRECRACKER or put it on PATH)");
        return None;
    };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipping: no /dev/kvm");
        return None;
    }
    Some(fc)
}

fn vmlinux() -> Option<PathBuf> {
    std::env::var_os("HEARTH_VMLINUX")
        .map(PathBuf::from)
        .or_else(|| Some(std::env::temp_dir().join("hearth-guest-cache/vmlinux")))
        .filter(|p| p.is_file())
}

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// A named network namespace made with `ip netns`, deleted on drop.
struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    fn create(name: &str) -> Option<NetNs> {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("note: cannot create a netns here; jailer run without --netns");
            return None;
        }
        Some(NetNs {
            name: name.into(),
            path: PathBuf::from("/var/run/netns").join(name),
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Configures a VM the way the backend does; `p` maps a host file to the
/// path the API must be given (itself, or its path inside the jail).
async fn configure(
    vm: &mut VmmProcess,
    dir: &Path,
    kernel: &Path,
    jailed: bool,
) -> FullVmConfiguration {
    let c = vm.client();
    let log = vm.fifo("log.fifo", FifoKind::Log).unwrap();
    let metrics = vm.fifo("metrics.fifo", FifoKind::Metrics).unwrap();
    c.put_logger(&Logger {
        log_path: Some(log.display().to_string()),
        level: Some(LogLevel::Info),
        ..Default::default()
    })
    .await
    .unwrap();
    c.put_metrics(&Metrics {
        metrics_path: metrics.display().to_string(),
    })
    .await
    .unwrap();

    // A refused size is a 400 the daemon can map to InvalidArgument.
    let e = c
        .put_machine_config(&MachineConfig {
            vcpu_count: 0,
            mem_size_mib: 256,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.is_bad_request(), "{e}");
    assert!(e.fault_message().unwrap().contains("vCPU"), "{e}");
    c.put_machine_config(&MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 256,
        ..Default::default()
    })
    .await
    .unwrap();

    let (scratch, ph_ro, ph_rw) = (
        dir.join("scratch.img"),
        dir.join("ph-ro.img"),
        dir.join("ph-rw.img"),
    );
    sparse(&scratch, 256 << 20);
    sparse(&ph_ro, 4096);
    sparse(&ph_rw, 4096);
    // The guest bundle's initramfs, when it sits beside the vmlinux.
    let initrd = kernel.with_file_name("initramfs.cpio");
    let initrd = match initrd.is_file() {
        true => Some(
            vm.link_file(&initrd, Path::new("/initramfs.cpio"), false)
                .unwrap(),
        ),
        false => None,
    };
    let kernel = vm.link_file(kernel, Path::new("/vmlinux"), false).unwrap();
    let scratch = vm
        .link_file(&scratch, Path::new("/scratch.img"), true)
        .unwrap();
    let ph_ro = vm
        .link_file(&ph_ro, Path::new("/ph-ro.img"), false)
        .unwrap();
    let ph_rw = vm.link_file(&ph_rw, Path::new("/ph-rw.img"), true).unwrap();
    c.put_boot_source(&BootSource {
        kernel_image_path: kernel.display().to_string(),
        boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
        initrd_path: initrd.map(|p| p.display().to_string()),
    })
    .await
    .unwrap();
    for (id, path, ro) in [
        ("scratch", &scratch, false),
        ("ph_ro_0", &ph_ro, true),
        ("ph_rw_0", &ph_rw, false),
    ] {
        let drive = Drive {
            drive_id: id.into(),
            is_root_device: false,
            is_read_only: Some(ro),
            path_on_host: Some(path.display().to_string()),
            ..Default::default()
        };
        c.put_drive(&drive).await.unwrap();
    }
    let vsock_path = if jailed {
        "/run/vsock.sock".to_string()
    } else {
        dir.join("vsock.sock").display().to_string()
    };
    if !jailed {
        vm.remove_on_kill(dir.join("vsock.sock"));
    }
    c.put_vsock(&Vsock {
        guest_cid: 3,
        uds_path: vsock_path.clone(),
        vsock_id: None,
    })
    .await
    .unwrap();
    c.put_entropy(&EntropyDevice::default()).await.unwrap();

    let cfg = c.vm_config().await.unwrap();
    assert_eq!(cfg.machine_config.as_ref().unwrap().vcpu_count, 2);
    assert_eq!(cfg.machine_config.as_ref().unwrap().mem_size_mib, 256);
    assert_eq!(
        cfg.boot_source.as_ref().unwrap().kernel_image_path,
        kernel.display().to_string()
    );
    let ids: Vec<&str> = cfg.drives.iter().map(|d| d.drive_id.as_str()).collect();
    assert_eq!(ids, ["scratch", "ph_ro_0", "ph_rw_0"]);
    assert_eq!(cfg.drives[1].is_read_only, Some(true));
    assert_eq!(cfg.vsock.as_ref().unwrap().uds_path, vsock_path);
    assert!(cfg.entropy.is_some());

    // Before InstanceStart Firecracker refuses PATCH with a 400.
    let patch = PartialDrive {
        drive_id: "ph_ro_0".into(),
        path_on_host: Some(ph_rw.display().to_string()),
        rate_limiter: None,
    };
    let e = c.patch_drive(&patch).await.unwrap_err();
    assert!(e.is_bad_request(), "{e}");
    eprintln!(
        "pre-boot PATCH refused as expected: {}",
        e.fault_message().unwrap_or_default()
    );
    cfg
}

async fn start_and_patch(vm: &mut VmmProcess, dir: &Path, jailed: bool) {
    let c = vm.client();
    c.instance_start().await.unwrap();
    let info = c.instance_info().await.unwrap();
    eprintln!("after InstanceStart: state {:?}", info.state);
    assert!(info.is_running());
    // Attach an "image" to the read-only placeholder: PATCH after start.
    let image = dir.join("image.erofs");
    sparse(&image, 8192);
    let path = vm
        .link_file(&image, Path::new("/image.erofs"), false)
        .unwrap();
    let patch = PartialDrive {
        drive_id: "ph_ro_0".into(),
        path_on_host: Some(path.display().to_string()),
        rate_limiter: None,
    };
    c.patch_drive(&patch).await.unwrap();
    let cfg = c.vm_config().await.unwrap();
    let d = cfg.drives.iter().find(|d| d.drive_id == "ph_ro_0").unwrap();
    assert_eq!(d.path_on_host.as_deref(), Some(path.to_str().unwrap()));
    c.send_ctrl_alt_del().await.unwrap();
    let _ = jailed;
}

#[tokio::test]
async fn direct_firecracker_up_to_instance_start() {
    let Some(fc) = prerequisites() else { return };
    let version = check_binary(&fc).await.unwrap();
    eprintln!("firecracker {version} at {}", fc.display());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let netns = NetNs::create("hearth-test-direct");
    let mut spawn = VmmSpawn::new(&fc, "hearth-test-direct", &sock);
    if let Some(ns) = &netns {
        spawn = spawn.netns(&ns.path);
    }
    let mut vm = spawn.spawn().await.unwrap();
    if let Some(ns) = &netns {
        let pid = vm.pid().unwrap();
        assert_eq!(
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .unwrap()
                .ino(),
            std::fs::metadata(&ns.path).unwrap().ino(),
            "runs in the given netns"
        );
    }
    let info = vm.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(info.vmm_version, version.to_string());
    assert_eq!(info.id, "hearth-test-direct");
    assert_eq!(info.state, "Not started");
    let pid = vm.pid().unwrap();

    let kernel = vmlinux();
    let boot_kernel = kernel.clone().unwrap_or_else(|| {
        let k = dir.path().join("not-a-kernel");
        std::fs::write(&k, b"any file is accepted until InstanceStart").unwrap();
        k
    });
    configure(&mut vm, dir.path(), &boot_kernel, false).await;
    if kernel.is_some() {
        start_and_patch(&mut vm, dir.path(), false).await;
    } else {
        eprintln!(
            "skipping InstanceStart: no vmlinux (build the guest bundle or set HEARTH_VMLINUX)"
        );
    }

    // The guest cannot boot on this host, so Ctrl-Alt-Del goes unanswered
    // and shutdown falls back to SIGKILL after the grace period.
    vm.shutdown(Duration::from_millis(300)).await.unwrap();
    assert!(gone(pid), "firecracker {pid} still there");
    assert!(!sock.exists(), "api socket left behind");
    assert!(
        !dir.path().join("vsock.sock").exists(),
        "vsock socket left behind"
    );
    assert!(!dir.path().join("log.fifo").exists() && !dir.path().join("metrics.fifo").exists());
}

#[tokio::test]
async fn jailed_firecracker_up_to_instance_start() {
    let Some(fc) = prerequisites() else { return };
    let jailer = std::env::var_os("HEARTH_JAILER")
        .map(PathBuf::from)
        .unwrap_or_else(|| fc.with_file_name("jailer"));
    if !jailer.is_file() {
        eprintln!(
            "skipping: no jailer beside {} (or HEARTH_JAILER)",
            fc.display()
        );
        return;
    }
    let Some(filter) = std::env::var_os("HEARTH_SECCOMP_FILTER").map(PathBuf::from) else {
        eprintln!("skipping: HEARTH_SECCOMP_FILTER not set (the jailer path always passes --seccomp-filter)");
        return;
    };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: the jailer needs root");
        return;
    }
    if let Err(e) = check_static(&fc) {
        eprintln!("skipping: {e}");
        return;
    }
    let Some(kernel) = vmlinux() else {
        eprintln!("skipping: no vmlinux for the jailed run");
        return;
    };
    // Files are hard-linked into the jail: keep everything on one filesystem.
    let base = kernel.parent().unwrap().join("jail-test");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    // A network namespace (as CNI would create for the pod) and a v1 parent
    // cgroup, when this host allows creating them.
    let netns = NetNs::create("hearth-test-jailed");
    let cgroup_parent = "hearth-test-parent";
    let cgroup_ok = Path::new("/sys/fs/cgroup/cpu").is_dir()
        && std::fs::create_dir_all(format!("/sys/fs/cgroup/cpu/{cgroup_parent}")).is_ok();
    let mut spawn = JailerSpawn::new(
        &jailer,
        &fc,
        "hearth-test-jailed",
        65534,
        65534,
        dir.path().join("jail"),
        &filter,
    );
    if let Some(ns) = &netns {
        spawn = spawn.netns(&ns.path);
    }
    if cgroup_ok {
        spawn = spawn
            .cgroup(1, Some(cgroup_parent.into()))
            .cgroup_property("cpu.shares", "512");
    }
    let jail_root = spawn.jail_root();
    let mut vm = spawn.spawn().await.unwrap();
    let info = vm.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(info.id, "hearth-test-jailed");
    assert_eq!(vm.jail_root(), Some(jail_root.as_path()));
    let pid = vm.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(1) == Some("65534"),
        "runs as the VM uid: {uid_line}"
    );
    // The jailer pivot_roots into the jail in a new mount namespace.
    assert!(
        Path::new(&format!("/proc/{pid}/root/seccomp.bpf")).is_file(),
        "its root is the jail"
    );
    assert!(Path::new(&format!("/proc/{pid}/root/run/firecracker.socket")).exists());
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        "own mount namespace"
    );

    if let Some(ns) = &netns {
        assert_eq!(
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .unwrap()
                .ino(),
            std::fs::metadata(&ns.path).unwrap().ino(),
            "runs in the pod netns"
        );
    }
    let vm_cgroup = PathBuf::from(format!(
        "/sys/fs/cgroup/cpu/{cgroup_parent}/hearth-test-jailed"
    ));
    if cgroup_ok {
        let procs = std::fs::read_to_string(vm_cgroup.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "in its cgroup under the parent"
        );
        assert_eq!(
            std::fs::read_to_string(vm_cgroup.join("cpu.shares"))
                .unwrap()
                .trim(),
            "512"
        );
    }

    configure(&mut vm, dir.path(), &kernel, true).await;
    start_and_patch(&mut vm, dir.path(), true).await;

    vm.kill().await.unwrap();
    assert!(!vm_cgroup.exists(), "vm cgroup left behind");
    if cgroup_ok {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/cpu/{cgroup_parent}"));
    }
    drop(netns);
    assert!(gone(pid), "firecracker {pid} still there");
    assert!(!jail_root.exists(), "jail left behind");
    assert!(kernel.is_file(), "host files survive the jail's removal");
    drop(dir);
    let _ = std::fs::remove_dir_all(&base);
}
