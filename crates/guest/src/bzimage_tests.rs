use super::*;

/// A minimal x86_64 ELF64: header, one PT_LOAD of `seg` bytes, no sections.
pub(crate) fn synthetic_elf(seg: usize) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little endian
    e[6] = 1;
    e[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 64;
    e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
    e[ph + 0x20..ph + 0x28].copy_from_slice(&(seg as u64).to_le_bytes()); // p_filesz
                                                                          // Compressible but not trivial content.
    e.extend((0..seg).map(|i| ((i / 7) as u8) ^ ((i % 251) as u8)));
    e
}

/// Wraps a compressed payload in a bzImage-like setup header.
pub(crate) fn synthetic_bzimage(payload: &[u8]) -> Vec<u8> {
    let setup_sects = 3usize;
    let pm_start = (setup_sects + 1) * 512;
    let rel = 0x100usize;
    let mut b = vec![0u8; pm_start + rel];
    b[SETUP_SECTS] = setup_sects as u8;
    b[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
    b[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    b[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    b[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&(rel as u32).to_le_bytes());
    b[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(&[0xee; 16]); // whatever follows the payload
    b
}

/// The kernel build's "vmlinux.bin + relocs", as the decompressor sees it.
fn elf_with_relocs(seg: usize) -> (Vec<u8>, Vec<u8>) {
    let elf = synthetic_elf(seg);
    let mut raw = elf.clone();
    raw.extend_from_slice(&[0x5a; 300]);
    (elf, raw)
}

fn with_size_trailer(mut c: Vec<u8>, raw: &[u8]) -> Vec<u8> {
    c.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    c
}

pub(crate) fn lz4_legacy_frame(raw: &[u8]) -> Vec<u8> {
    let mut c = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
    for chunk in raw.chunks(LZ4_LEGACY_BLOCK) {
        let block = lz4_flex::block::compress(chunk);
        c.extend_from_slice(&(block.len() as u32).to_le_bytes());
        c.extend_from_slice(&block);
    }
    with_size_trailer(c, raw)
}

fn check(compression: Compression, seg: usize, compress: impl Fn(&[u8]) -> Vec<u8>) {
    let (elf, raw) = elf_with_relocs(seg);
    let bz = synthetic_bzimage(&compress(&raw));
    let (out, found) = extract_vmlinux_with(&bz).expect("extract");
    assert_eq!(found, compression);
    assert_eq!(out.len(), elf.len(), "relocs must be cut off");
    assert!(
        out == elf,
        "{} output differs from the ELF",
        compression.name()
    );
}

#[test]
fn extracts_lz4_legacy_multi_block() {
    // More than one 8 MiB legacy block.
    check(Compression::Lz4Legacy, 9 << 20, lz4_legacy_frame);
}

#[test]
fn extracts_gzip() {
    check(Compression::Gzip, 64 << 10, |raw| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(raw).unwrap();
        enc.finish().unwrap()
    });
}

#[test]
fn extracts_zstd_with_size_trailer() {
    check(Compression::Zstd, 64 << 10, |raw| {
        with_size_trailer(zstd::encode_all(raw, 19).unwrap(), raw)
    });
}

#[test]
fn extracts_xz_with_size_trailer() {
    check(Compression::Xz, 64 << 10, |raw| {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &raw[..], &mut out).unwrap();
        with_size_trailer(out, raw)
    });
}

#[test]
fn refuses_detected_but_unsupported() {
    let bz = synthetic_bzimage(b"BZh91AY&SYjunk");
    assert!(matches!(
        extract_vmlinux(&bz),
        Err(GuestError::UnsupportedCompression("bzip2"))
    ));
    let bz = synthetic_bzimage(&[0x89, b'L', b'Z', b'O', 0, 0]);
    assert!(matches!(
        extract_vmlinux(&bz),
        Err(GuestError::UnsupportedCompression("lzo"))
    ));
}

#[test]
fn rejects_bad_headers_without_panicking() {
    assert!(matches!(
        payload_location(&[0u8; 10]),
        Err(GuestError::BadBzImage(_))
    ));
    let mut bz = synthetic_bzimage(&lz4_legacy_frame(&synthetic_elf(100)));
    // Payload length pointing past the end of the file.
    bz[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        extract_vmlinux(&bz),
        Err(GuestError::BadBzImage(_))
    ));
    let mut bz = synthetic_bzimage(&lz4_legacy_frame(&synthetic_elf(100)));
    bz[HEADER_MAGIC] = b'X';
    assert!(matches!(
        extract_vmlinux(&bz),
        Err(GuestError::BadBzImage(_))
    ));
}

#[test]
fn rejects_corrupt_lz4_blocks() {
    let raw = synthetic_elf(4096);
    let mut frame = lz4_legacy_frame(&raw);
    // A block size larger than a legacy block may be.
    frame[4..8].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let bz = synthetic_bzimage(&frame);
    assert!(matches!(
        extract_vmlinux(&bz),
        Err(GuestError::Decompress { .. })
    ));
    // A wrong size trailer.
    let mut frame = lz4_legacy_frame(&raw);
    let n = frame.len();
    frame[n - 4..].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        extract_vmlinux(&synthetic_bzimage(&frame)),
        Err(GuestError::Decompress { .. })
    ));
}

#[test]
fn rejects_non_x86_64_elf() {
    let mut raw = synthetic_elf(100);
    raw[0x12] = 183; // EM_AARCH64
    let bz = synthetic_bzimage(&lz4_legacy_frame(&raw));
    assert!(matches!(extract_vmlinux(&bz), Err(GuestError::BadElf(_))));
}

/// Deterministic pseudo-random corruptions never panic.
#[test]
fn corrupted_images_never_panic() {
    let good = synthetic_bzimage(&lz4_legacy_frame(&synthetic_elf(2048)));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        if next() % 5 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        let _ = extract_vmlinux(&b);
    }
}
