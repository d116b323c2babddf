//! From a bzImage (`vmlinuz`) to the ELF `vmlinux` Firecracker loads.
//!
//! The x86 boot protocol (≥ 2.08) setup header tells where the compressed
//! kernel sits: `payload_offset` (0x248) counted from the start of the
//! protected-mode code, which begins after `setup_sects + 1` sectors, and
//! `payload_length` (0x24c). The compression is identified by its magic.
//!
//! The decompressed payload is `vmlinux.bin` (the stripped ELF) followed, on
//! relocatable kernels, by the relocation table the decompressor uses; it is
//! cut at the end of the ELF's last header table or section so the output is
//! exactly an ELF file.
//!
//! Decompression is done in Rust: LZ4 legacy frames with `lz4_flex`
//! (Debian's cloud kernel), gzip with `flate2`, xz with `lzma-rs`, zstd with
//! `zstd`. bzip2, lzma and lzo are recognised and refused.

use std::io::{Read, Write};

use crate::error::{GuestError, Result};

/// Largest vmlinux accepted (bounds every decompressor's output).
pub const MAX_VMLINUX: usize = 512 << 20;

const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// The compression of a bzImage payload, identified by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// LZ4 legacy frame (`lz4 -l`), magic `02 21 4c 18`.
    Lz4Legacy,
    /// gzip, magic `1f 8b`.
    Gzip,
    /// xz, magic `fd 37 7a 58 5a 00`.
    Xz,
    /// zstd, magic `28 b5 2f fd`.
    Zstd,
    /// bzip2 (detected, not supported).
    Bzip2,
    /// lzma alone (detected, not supported).
    Lzma,
    /// lzop (detected, not supported).
    Lzo,
    /// Already an ELF (a kernel built without compression).
    None,
}

impl Compression {
    /// Short name used in errors and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4Legacy => "lz4",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Lzo => "lzo",
            Compression::None => "none",
        }
    }
}

/// The location of the compressed kernel inside a bzImage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// Byte offset of the payload in the bzImage file.
    pub offset: usize,
    /// Payload length in bytes.
    pub length: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the setup header and returns where the payload is.
pub fn payload_location(bzimage: &[u8]) -> Result<Payload> {
    if bzimage.len() < PAYLOAD_LENGTH + 4 {
        return Err(GuestError::BadBzImage("too short for a setup header"));
    }
    if u16_at(bzimage, BOOT_FLAG) != Some(0xaa55) {
        return Err(GuestError::BadBzImage("no 0xaa55 boot flag"));
    }
    if bzimage.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err(GuestError::BadBzImage("no HdrS setup header"));
    }
    let version = u16_at(bzimage, VERSION).unwrap_or(0);
    if version < 0x208 {
        return Err(GuestError::BadBzImage(
            "boot protocol older than 2.08 (no payload fields)",
        ));
    }
    let setup_sects = match bzimage[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let rel = u32_at(bzimage, PAYLOAD_OFFSET).unwrap_or(0) as usize;
    let length = u32_at(bzimage, PAYLOAD_LENGTH).unwrap_or(0) as usize;
    let offset = pm_start
        .checked_add(rel)
        .ok_or(GuestError::BadBzImage("payload offset overflows"))?;
    match offset.checked_add(length) {
        Some(end) if end <= bzimage.len() && length > 0 => Ok(Payload { offset, length }),
        _ => Err(GuestError::BadBzImage("payload outside the file")),
    }
}

/// Identifies a compressed stream by its magic bytes.
pub fn detect_compression(data: &[u8]) -> Option<Compression> {
    let c = if data.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        Compression::Lz4Legacy
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if data.starts_with(b"BZh") {
        Compression::Bzip2
    } else if data.starts_with(&[0x5d, 0x00, 0x00]) {
        Compression::Lzma
    } else if data.starts_with(&[0x89, b'L', b'Z', b'O']) {
        Compression::Lzo
    } else if data.starts_with(b"\x7fELF") {
        Compression::None
    } else {
        return None;
    };
    Some(c)
}

/// Extracts the ELF vmlinux from a bzImage; see the module docs.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    extract_vmlinux_with(bzimage).map(|(elf, _)| elf)
}

/// Like [`extract_vmlinux`], also returning the compression found.
pub fn extract_vmlinux_with(bzimage: &[u8]) -> Result<(Vec<u8>, Compression)> {
    let p = payload_location(bzimage)?;
    let payload = &bzimage[p.offset..p.offset + p.length];
    let compression = detect_compression(payload).ok_or(GuestError::BadBzImage(
        "payload has no known compression magic",
    ))?;
    let mut raw = decompress(compression, payload)?;
    let len = elf_extent(&raw)?;
    raw.truncate(len);
    Ok((raw, compression))
}

/// Decompresses a payload of a known compression, bounded by [`MAX_VMLINUX`].
pub fn decompress(compression: Compression, payload: &[u8]) -> Result<Vec<u8>> {
    let err = |detail: String| GuestError::Decompress {
        compression: compression.name(),
        detail,
    };
    match compression {
        Compression::Lz4Legacy => lz4_legacy(payload),
        Compression::Gzip => {
            read_bounded(flate2::read::GzDecoder::new(payload)).map_err(|e| err(e.to_string()))
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| err(e.to_string()))?
                .single_frame();
            read_bounded(dec).map_err(|e| err(e.to_string()))
        }
        Compression::Xz => {
            // The kernel build appends the 4-byte uncompressed size after the
            // xz stream; try the stream as is first, then without it.
            xz(payload).or_else(|first| match payload.len().checked_sub(4) {
                Some(n) => xz(&payload[..n]).map_err(|_| first),
                None => Err(first),
            })
        }
        Compression::None => {
            if payload.len() > MAX_VMLINUX {
                return Err(err("larger than the vmlinux limit".into()));
            }
            Ok(payload.to_vec())
        }
        Compression::Bzip2 | Compression::Lzma | Compression::Lzo => {
            Err(GuestError::UnsupportedCompression(compression.name()))
        }
    }
}

fn read_bounded(r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(MAX_VMLINUX as u64 + 1).read_to_end(&mut out)?;
    if out.len() > MAX_VMLINUX {
        return Err(std::io::Error::other(
            "output larger than the vmlinux limit",
        ));
    }
    Ok(out)
}

struct BoundedWriter(Vec<u8>);

impl Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_VMLINUX {
            return Err(std::io::Error::other(
                "output larger than the vmlinux limit",
            ));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn xz(payload: &[u8]) -> Result<Vec<u8>> {
    let mut input = payload;
    let mut out = BoundedWriter(Vec::new());
    lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| GuestError::Decompress {
        compression: "xz",
        detail: e.to_string(),
    })?;
    Ok(out.0)
}

/// Decodes an LZ4 legacy frame: magic, then blocks of `u32 size` + data,
/// each decompressing to at most 8 MiB; the magic may repeat (concatenated
/// frames) and the kernel appends the 4-byte uncompressed size at the end.
fn lz4_legacy(payload: &[u8]) -> Result<Vec<u8>> {
    let err = |d: &str| GuestError::Decompress {
        compression: "lz4",
        detail: d.to_string(),
    };
    // LZ4_compressBound(8 MiB).
    let max_block = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let mut out = Vec::new();
    let mut scratch: Option<Vec<u8>> = None;
    let mut pos = 4;
    if u32_at(payload, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(err("no legacy frame magic"));
    }
    while pos < payload.len() {
        let size = u32_at(payload, pos).ok_or_else(|| err("truncated block header"))?;
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        if pos == payload.len() {
            // The size trailer appended by the kernel build.
            if size as usize != out.len() {
                return Err(err("size trailer does not match the output"));
            }
            break;
        }
        let size = size as usize;
        if size > max_block {
            return Err(err("block larger than the legacy frame allows"));
        }
        let block = payload
            .get(pos..pos + size)
            .ok_or_else(|| err("truncated block"))?;
        pos += size;
        if out.len() >= MAX_VMLINUX {
            return Err(err("output larger than the vmlinux limit"));
        }
        // One zeroed scratch block, reused: no per-block 8 MiB fill.
        let scratch = scratch.get_or_insert_with(|| vec![0u8; LZ4_LEGACY_BLOCK]);
        let n =
            lz4_flex::block::decompress_into(block, scratch).map_err(|e| err(&e.to_string()))?;
        out.extend_from_slice(&scratch[..n]);
    }
    if out.len() > MAX_VMLINUX {
        return Err(err("output larger than the vmlinux limit"));
    }
    Ok(out)
}

/// Checks that `elf` is a little-endian x86_64 ELF64 image and returns the
/// length of the ELF proper (end of the furthest header table or section).
pub fn elf_extent(elf: &[u8]) -> Result<usize> {
    if !elf.starts_with(b"\x7fELF") {
        return Err(GuestError::BadElf("no ELF magic"));
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(GuestError::BadElf("not a little-endian ELF64"));
    }
    if u16_at(elf, 0x12) != Some(62) {
        return Err(GuestError::BadElf("not x86_64"));
    }
    let bad = || GuestError::BadElf("header tables outside the file");
    let phoff = u64_at(elf, 0x20).ok_or_else(bad)?;
    let shoff = u64_at(elf, 0x28).ok_or_else(bad)?;
    let phentsize = u64::from(u16_at(elf, 0x36).ok_or_else(bad)?);
    let phnum = u64::from(u16_at(elf, 0x38).ok_or_else(bad)?);
    let shentsize = u64::from(u16_at(elf, 0x3a).ok_or_else(bad)?);
    let shnum = u64::from(u16_at(elf, 0x3c).ok_or_else(bad)?);
    let mut end: u64 = 64;
    let table_end = |off: u64, n: u64, sz: u64| off.checked_add(n.checked_mul(sz)?);
    if phnum > 0 {
        end = end.max(table_end(phoff, phnum, phentsize).ok_or_else(bad)?);
    }
    if shnum > 0 {
        end = end.max(table_end(shoff, shnum, shentsize).ok_or_else(bad)?);
    }
    if end > elf.len() as u64 {
        return Err(bad());
    }
    for i in 0..phnum {
        let h = (phoff + i * phentsize) as usize;
        let off = u64_at(elf, h + 8).ok_or_else(bad)?;
        let filesz = u64_at(elf, h + 0x20).ok_or_else(bad)?;
        end = end.max(off.checked_add(filesz).ok_or_else(bad)?);
    }
    for i in 0..shnum {
        let h = (shoff + i * shentsize) as usize;
        let kind = u32_at(elf, h + 4).ok_or_else(bad)?;
        if kind == 8 {
            continue; // SHT_NOBITS occupies no file space.
        }
        let off = u64_at(elf, h + 0x18).ok_or_else(bad)?;
        let size = u64_at(elf, h + 0x20).ok_or_else(bad)?;
        end = end.max(off.checked_add(size).ok_or_else(bad)?);
    }
    if end > elf.len() as u64 {
        return Err(GuestError::BadElf(
            "a segment or section ends past the file",
        ));
    }
    Ok(end as usize)
}

#[cfg(test)]
#[path = "bzimage_tests.rs"]
pub(crate) mod tests;
