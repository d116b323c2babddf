//! The guest bundle built from the real Debian kernel package.
//!
//! Needs `apt-get download` to work (or `HEARTH_KERNEL_DEB` pointing at the
//! `.deb`) and a static ELF to stand in for the agent (`HEARTH_TEST_AGENT`,
//! default `/bin/busybox` from busybox-static). The package is cached in
//! `HEARTH_GUEST_CACHE` (default `$TMPDIR/hearth-guest-cache`), so later runs
//! are fast and exercise the no-op path. Skips with a printed reason.

use std::path::PathBuf;

use hearth_guest::{build, BundleSpec, CpioReader, GuestError};

fn is_static_elf(bytes: &[u8]) -> bool {
    // No PT_INTERP program header (type 3).
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    if !bytes.starts_with(b"\x7fELF") || bytes.len() < 64 {
        return false;
    }
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let h = phoff + i * phentsize;
        bytes.get(h..h + 4).is_some_and(|t| t != [3, 0, 0, 0])
    })
}

#[test]
fn real_debian_cloud_kernel_bundle() {
    let agent = std::env::var_os("HEARTH_TEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/bin/busybox".into());
    let Ok(agent_bytes) = std::fs::read(&agent) else {
        eprintln!(
            "skipping: no stand-in agent at {} (install busybox-static or set HEARTH_TEST_AGENT)",
            agent.display()
        );
        return;
    };
    if !is_static_elf(&agent_bytes) {
        eprintln!("skipping: {} is not a static ELF", agent.display());
        return;
    }
    let cache = std::env::var_os("HEARTH_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hearth-guest-cache"));
    let spec = BundleSpec {
        work_dir: cache.clone(),
        agent_binary: agent,
        kernel_package: None,
        kernel_deb: std::env::var_os("HEARTH_KERNEL_DEB").map(PathBuf::from),
    };
    let bundle = match build(&spec) {
        Ok(b) => b,
        Err(e @ GuestError::Tool { .. }) => {
            eprintln!("skipping: cannot fetch the kernel package here: {e}");
            return;
        }
        Err(e) => panic!("bundle build failed: {e:?}"),
    };
    let m = &bundle.manifest;
    eprintln!(
        "kernel {} {} release {} compression {} (rebuilt: {})",
        m.inputs.kernel_package,
        m.inputs.kernel_version,
        m.kernel_release,
        m.kernel_compression,
        bundle.rebuilt
    );
    assert!(m.inputs.kernel_package.starts_with("linux-image-"));
    assert!(m.kernel_release.contains("cloud-amd64"));

    let vmlinux = std::fs::read(&bundle.vmlinux).unwrap();
    assert!(vmlinux.starts_with(b"\x7fELF"));
    assert_eq!(vmlinux[4], 2, "ELF64");
    assert_eq!(
        u16::from_le_bytes([vmlinux[0x12], vmlinux[0x13]]),
        62,
        "x86_64"
    );

    cross_check_with_lz4_tool(&bundle, &vmlinux);

    let cpio = std::fs::read(&bundle.initramfs).unwrap();
    let entries = CpioReader::read_all(&cpio).unwrap();
    let get = |n: &str| entries.iter().find(|e| e.name == n);
    assert_eq!(get("init").unwrap().data, agent_bytes);
    let list = String::from_utf8(get("etc/hearth/modules").unwrap().data.clone()).unwrap();
    let list: Vec<&str> = list.lines().collect();
    eprintln!("modules: {list:?}; builtin: {:?}", m.builtin_modules);
    for want in [
        "virtio_mmio.ko",
        "virtio_blk.ko",
        "virtio_net.ko",
        "vsock.ko",
        "vmw_vsock_virtio_transport.ko",
        "overlay.ko",
        "erofs.ko",
        "virtio_pci.ko",
    ] {
        let listed = list.iter().any(|p| p.ends_with(&format!("/{want}")));
        let builtin = m.builtin_modules.iter().any(|b| format!("{b}.ko") == want);
        assert!(listed || builtin, "{want} neither listed nor built in");
    }
    // Dependencies come before their users.
    let pos = |m: &str| list.iter().position(|p| p.ends_with(m)).unwrap();
    assert!(pos("/virtio.ko") < pos("/virtio_blk.ko"));
    assert!(pos("/virtio_ring.ko") < pos("/virtio_mmio.ko"));
    assert!(pos("/vsock.ko") < pos("/vmw_vsock_virtio_transport.ko"));
    assert!(pos("/vmw_vsock_virtio_transport_common.ko") < pos("/vmw_vsock_virtio_transport.ko"));
    for p in &list {
        let e = get(&format!("lib/modules/{}/{p}", m.kernel_release)).unwrap();
        assert!(e.data.starts_with(b"\x7fELF"), "{p}");
    }

    let again = build(&spec).unwrap();
    assert!(!again.rebuilt, "second build must be a no-op");
    assert_eq!(&again.manifest, m);
}

/// Debian's `lz4` tool, when installed, must agree with the Rust decoder
/// (its output also carries the relocation table the ELF is cut before).
fn cross_check_with_lz4_tool(bundle: &hearth_guest::Bundle, vmlinux: &[u8]) {
    use std::io::Write;
    if bundle.manifest.kernel_compression != "lz4" {
        return;
    }
    let kdir = bundle
        .vmlinux
        .parent()
        .unwrap()
        .join("kernel")
        .join(format!(
            "{}_{}",
            bundle.manifest.inputs.kernel_package, bundle.manifest.inputs.kernel_version
        ));
    let vmlinuz = kdir.join(format!("boot/vmlinuz-{}", bundle.kernel_release));
    let Ok(bz) = std::fs::read(&vmlinuz) else {
        return;
    };
    let p = hearth_guest::bzimage::payload_location(&bz).unwrap();
    let child = std::process::Command::new("lz4")
        .args(["-dc", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("note: lz4 tool not installed; no cross-check");
        return;
    };
    let payload = bz[p.offset..p.offset + p.length].to_vec();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    // lz4 exits non-zero on the kernel's 4-byte size trailer; the data before it counts.
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.stdout.len() >= vmlinux.len());
    assert!(
        out.stdout[..vmlinux.len()] == *vmlinux,
        "lz4 tool and lz4_flex disagree"
    );
    eprintln!(
        "lz4 tool agrees ({} bytes, {} of relocs cut)",
        vmlinux.len(),
        out.stdout.len() - vmlinux.len()
    );
}
