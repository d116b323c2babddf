use super::*;

const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/net/net_failover.ko
kernel/fs/erofs/erofs.ko.xz: kernel/lib/libcrc32c.ko.xz
kernel/lib/libcrc32c.ko.xz:
kernel/net/vmw_vsock/vsock-diag.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
";

#[test]
fn closure_puts_dependencies_first_in_wanted_order() {
    let order = module_closure(DEP, &["virtio_net", "virtio_mmio", "erofs"]).unwrap();
    assert_eq!(
        order,
        [
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio.ko",
            "kernel/net/core/failover.ko",
            "kernel/drivers/net/net_failover.ko",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/drivers/virtio/virtio_mmio.ko",
            "kernel/lib/libcrc32c.ko.xz",
            "kernel/fs/erofs/erofs.ko.xz",
        ]
    );
}

#[test]
fn closure_normalises_dashes_and_skips_unwanted() {
    let order = module_closure(DEP, &["vsock-diag"]).unwrap();
    assert_eq!(
        order,
        [
            "kernel/net/vmw_vsock/vsock.ko",
            "kernel/net/vmw_vsock/vsock-diag.ko"
        ]
    );
}

#[test]
fn closure_reports_missing_and_cycles() {
    assert!(
        matches!(module_closure(DEP, &["nope"]), Err(GuestError::ModuleNotFound(n)) if n == "nope")
    );
    let cyc = "a.ko: b.ko\nb.ko: a.ko\n";
    assert!(matches!(
        module_closure(cyc, &["a"]),
        Err(GuestError::BadModuleDeps(_))
    ));
    let dangling = "a.ko: b.ko\n";
    assert!(matches!(
        module_closure(dangling, &["a"]),
        Err(GuestError::BadModuleDeps(_))
    ));
    assert!(matches!(
        module_closure("garbage line\n", &["a"]),
        Err(GuestError::BadModuleDeps(_))
    ));
}

#[test]
fn builtin_names() {
    let b = parse_builtin("kernel/crypto/crc32c_generic.ko\nkernel/fs/ext4/ext4.ko\n");
    assert!(b.contains("crc32c_generic") && b.contains("ext4") && b.len() == 2);
}

/// A relocatable ELF64 with `.shstrtab` and a `.modinfo` section.
pub(crate) fn synthetic_module(name: &str, depends: &str) -> Vec<u8> {
    let shstrtab = b"\0.shstrtab\0.modinfo\0".to_vec();
    let modinfo =
        format!("license=GPL\0depends={depends}\0name={name}\0vermagic=6.1.0 SMP\0").into_bytes();
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[6] = 1;
    e[0x10..0x12].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    e[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
    let strtab_off = e.len();
    e.extend_from_slice(&shstrtab);
    let modinfo_off = e.len();
    e.extend_from_slice(&modinfo);
    e.resize(e.len().next_multiple_of(8), 0);
    let shoff = e.len();
    e[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    e[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    e[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    e[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
    let mut sh = |name: u32, kind: u32, off: usize, size: usize| {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
        h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
        e.extend_from_slice(&h);
    };
    sh(0, 0, 0, 0);
    sh(1, 3, strtab_off, shstrtab.len());
    sh(11, 1, modinfo_off, modinfo.len());
    e
}

#[test]
fn modinfo_depends_reads_the_section() {
    let ko = synthetic_module("virtio_net", "virtio_ring,virtio,net-failover");
    assert_eq!(
        modinfo_depends(&ko).unwrap(),
        ["virtio_ring", "virtio", "net_failover"]
    );
    assert!(modinfo_depends(&synthetic_module("overlay", ""))
        .unwrap()
        .is_empty());
    assert!(modinfo_depends(b"\x7fELF garbage").is_err());
    let mut truncated = ko.clone();
    truncated.truncate(ko.len() - 100);
    assert!(modinfo_depends(&truncated).is_err());
}

/// Writes a fake `/lib/modules/<release>` tree without modules.dep.
pub(crate) fn fake_modules_tree(root: &Path) {
    let put = |rel: &str, data: Vec<u8>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    put(
        "kernel/drivers/virtio/virtio.ko",
        synthetic_module("virtio", ""),
    );
    put(
        "kernel/drivers/virtio/virtio_ring.ko",
        synthetic_module("virtio_ring", "virtio"),
    );
    put(
        "kernel/drivers/block/virtio_blk.ko",
        synthetic_module("virtio_blk", "virtio,virtio_ring"),
    );
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &synthetic_module("erofs", "libcrc32c")[..], &mut xz).unwrap();
    put("kernel/fs/erofs/erofs.ko.xz", xz);
    put(
        "kernel/lib/libcrc32c.ko.zst",
        zstd::encode_all(&synthetic_module("libcrc32c", "")[..], 3).unwrap(),
    );
    put(
        "kernel/fs/overlayfs/overlay.ko",
        synthetic_module("overlay", ""),
    );
    put(
        "modules.builtin",
        b"kernel/drivers/virtio/virtio_mmio.ko\n".to_vec(),
    );
}

#[test]
fn resolve_generates_deps_from_modinfo_and_skips_builtins() {
    let dir = tempfile::tempdir().unwrap();
    fake_modules_tree(dir.path());
    let set = resolve(dir.path(), &["virtio_mmio", "virtio_blk", "erofs"]).unwrap();
    assert_eq!(set.builtin, ["virtio_mmio"]);
    assert_eq!(
        set.load_order,
        [
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/lib/libcrc32c.ko.zst",
            "kernel/fs/erofs/erofs.ko.xz",
        ]
    );
    assert!(
        !set.load_order.iter().any(|p| p.contains("overlay")),
        "only the closure"
    );
    assert!(matches!(
        resolve(dir.path(), &["missing_mod"]),
        Err(GuestError::ModuleNotFound(_))
    ));
}

#[test]
fn decompresses_modules_by_suffix() {
    let ko = synthetic_module("m", "");
    let zst = zstd::encode_all(&ko[..], 3).unwrap();
    assert_eq!(
        decompress_module("kernel/m.ko.zst", &zst).unwrap(),
        (ko.clone(), "kernel/m.ko".to_string())
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &ko).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(decompress_module("kernel/m.ko.gz", &gz).unwrap().0, ko);
    assert_eq!(
        decompress_module("kernel/m.ko", &ko).unwrap().1,
        "kernel/m.ko"
    );
    assert!(decompress_module("kernel/m.ko.xz", b"not xz").is_err());
}

#[test]
fn hostile_section_offsets_do_not_panic() {
    let mut ko = synthetic_module("m", "x");
    // e_shoff near usize::MAX.
    ko[0x28..0x30].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    assert!(modinfo_depends(&ko).is_err());
    let mut ko = synthetic_module("m", "x");
    ko[0x3e..0x40].copy_from_slice(&u16::MAX.to_le_bytes()); // shstrndx out of range
    assert!(modinfo_depends(&ko).is_err());
}
