use super::*;
use crate::bzimage::tests::{lz4_legacy_frame, synthetic_bzimage, synthetic_elf};
use crate::cpio::CpioReader;
use crate::modules::tests::synthetic_module;
use std::process::Command;

const RELEASE: &str = "9.9.9-1-test-amd64";

/// Builds a fake kernel .deb with dpkg-deb: synthetic bzImage + modules.
fn fake_deb(dir: &Path) -> Option<PathBuf> {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        return None;
    }
    let tree = dir.join("pkg");
    let put = |rel: &str, data: &[u8]| {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    put(
        "DEBIAN/control",
        format!("Package: linux-image-{RELEASE}\nVersion: 9.9.9-1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test\n").as_bytes(),
    );
    let elf = synthetic_elf(1 << 16);
    put(
        &format!("boot/vmlinuz-{RELEASE}"),
        &synthetic_bzimage(&lz4_legacy_frame(&elf)),
    );
    let m = format!("lib/modules/{RELEASE}");
    let ko = |name: &str, deps: &str| synthetic_module(name, deps);
    put(
        &format!("{m}/kernel/drivers/virtio/virtio.ko"),
        &ko("virtio", ""),
    );
    put(
        &format!("{m}/kernel/drivers/virtio/virtio_ring.ko"),
        &ko("virtio_ring", "virtio"),
    );
    put(
        &format!("{m}/kernel/drivers/virtio/virtio_mmio.ko"),
        &ko("virtio_mmio", "virtio,virtio_ring"),
    );
    put(
        &format!("{m}/kernel/drivers/virtio/virtio_pci.ko"),
        &ko("virtio_pci", "virtio_ring,virtio"),
    );
    put(
        &format!("{m}/kernel/drivers/block/virtio_blk.ko"),
        &ko("virtio_blk", "virtio,virtio_ring"),
    );
    put(
        &format!("{m}/kernel/drivers/net/virtio_net.ko"),
        &ko("virtio_net", "virtio_ring,virtio,net_failover"),
    );
    put(
        &format!("{m}/kernel/drivers/net/net_failover.ko"),
        &ko("net_failover", "failover"),
    );
    put(
        &format!("{m}/kernel/net/core/failover.ko"),
        &ko("failover", ""),
    );
    put(
        &format!("{m}/kernel/net/vmw_vsock/vsock.ko"),
        &ko("vsock", ""),
    );
    put(
        &format!("{m}/kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko"),
        &ko("vmw_vsock_virtio_transport_common", "vsock,virtio"),
    );
    put(
        &format!("{m}/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko"),
        &ko(
            "vmw_vsock_virtio_transport",
            "virtio,vmw_vsock_virtio_transport_common,virtio_ring,vsock",
        ),
    );
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &ko("erofs", "")[..], &mut xz).unwrap();
    put(&format!("{m}/kernel/fs/erofs/erofs.ko.xz"), &xz);
    put(
        &format!("{m}/kernel/drivers/unrelated.ko"),
        &ko("unrelated", ""),
    );
    put(
        &format!("{m}/modules.builtin"),
        b"kernel/fs/overlayfs/overlay.ko\n",
    );
    let deb = dir.join("linux-image-test.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(deb)
}

#[test]
fn builds_then_second_build_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let Some(deb) = fake_deb(dir.path()) else {
        eprintln!("skipping: dpkg-deb not installed");
        return;
    };
    let agent = dir.path().join("agent");
    std::fs::write(&agent, synthetic_elf(100)).unwrap();
    let spec = BundleSpec {
        work_dir: dir.path().join("work"),
        agent_binary: agent.clone(),
        kernel_package: None,
        kernel_deb: Some(deb),
    };
    let b = build(&spec).unwrap();
    assert!(b.rebuilt);
    assert_eq!(b.kernel_release, RELEASE);
    assert_eq!(
        b.manifest.inputs.kernel_package,
        format!("linux-image-{RELEASE}")
    );
    assert_eq!(b.manifest.inputs.kernel_version, "9.9.9-1");
    assert_eq!(b.manifest.kernel_compression, "lz4");
    assert_eq!(b.manifest.builtin_modules, ["overlay"]);
    assert_eq!(std::fs::read(&b.vmlinux).unwrap(), synthetic_elf(1 << 16));

    let cpio = std::fs::read(&b.initramfs).unwrap();
    let entries = CpioReader::read_all(&cpio).unwrap();
    let get = |n: &str| entries.iter().find(|e| e.name == n);
    assert_eq!(get("init").unwrap().data, std::fs::read(&agent).unwrap());
    assert_eq!(get("init").unwrap().mode, crate::cpio::S_IFREG | 0o755);
    let list = String::from_utf8(get(MODULES_LIST).unwrap().data.clone()).unwrap();
    let list: Vec<&str> = list.lines().collect();
    assert_eq!(
        list,
        [
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio_mmio.ko",
            "kernel/drivers/virtio/virtio_pci.ko",
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/net/core/failover.ko",
            "kernel/drivers/net/net_failover.ko",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/net/vmw_vsock/vsock.ko",
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
            "kernel/fs/erofs/erofs.ko",
        ]
    );
    for p in &list {
        let e = get(&format!("lib/modules/{RELEASE}/{p}")).unwrap_or_else(|| panic!("{p} missing"));
        assert!(e.data.starts_with(b"\x7fELF"), "{p} stored decompressed");
    }
    assert!(
        !entries.iter().any(|e| e.name.contains("unrelated")),
        "only the closure goes in"
    );
    assert_eq!(get("dev/console").unwrap().rdev, (5, 1));

    // Second build: nothing changes, nothing is rewritten.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (v0, i0) = (mtime(&b.vmlinux), mtime(&b.initramfs));
    let b2 = build(&spec).unwrap();
    assert!(!b2.rebuilt);
    assert_eq!(b2.manifest, b.manifest);
    assert_eq!((mtime(&b2.vmlinux), mtime(&b2.initramfs)), (v0, i0));

    // A changed input (the agent) rebuilds; a damaged output too.
    std::fs::write(&agent, synthetic_elf(200)).unwrap();
    let b3 = build(&spec).unwrap();
    assert!(b3.rebuilt);
    assert_ne!(b3.manifest.initramfs.sha256, b.manifest.initramfs.sha256);
    assert_eq!(b3.manifest.vmlinux, b.manifest.vmlinux);
    std::fs::write(&b3.vmlinux, b"clobbered").unwrap();
    assert!(build(&spec).unwrap().rebuilt);
}
