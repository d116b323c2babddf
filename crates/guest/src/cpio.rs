//! The `newc` cpio format the kernel unpacks as an initramfs.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name padded to 4 bytes, then the data padded
//! to 4 bytes; the archive ends with a `TRAILER!!!` entry. The writer is
//! deterministic (mtime 0, owner root, inode numbers in write order) so the
//! same inputs give the same bytes and the same checksum, and it creates
//! missing parent directories itself. Hard links share an inode number,
//! carry `nlink` = number of names and, as GNU cpio does, the data goes with
//! the last name (the kernel accepts either placement).

use std::collections::BTreeSet;
use std::io::Write;

use crate::error::{GuestError, Result};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// Longest entry name accepted (PATH_MAX, including the NUL).
pub const MAX_NAME: usize = 4096;

/// File type bits of `mode`.
pub const S_IFMT: u32 = 0o170_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;

/// Streams a deterministic newc archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

struct Header<'a> {
    name: &'a str,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its missing parents).
    pub fn add_dir(&mut self, name: &str, perm: u32) -> Result<()> {
        let name = check_name(name)?;
        if self.dirs.contains(name) {
            return Ok(());
        }
        self.parents(name)?;
        let ino = self.ino();
        self.entry(
            Header {
                name,
                ino,
                mode: S_IFDIR | (perm & 0o7777),
                nlink: 2,
                size: 0,
                rdev: (0, 0),
            },
            b"",
        )?;
        self.dirs.insert(name.to_string());
        Ok(())
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn add_file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.add_hard_links(&[name], perm, data)
    }

    /// Adds one regular file under several names (hard links).
    pub fn add_hard_links(&mut self, names: &[&str], perm: u32, data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| GuestError::BadCpio("file larger than 4 GiB".into()))?;
        let nlink = u32::try_from(names.len()).unwrap_or(u32::MAX);
        if names.is_empty() {
            return Err(GuestError::BadEntryName(String::new()));
        }
        let ino = self.ino();
        for (i, name) in names.iter().enumerate() {
            let name = check_name(name)?;
            self.parents(name)?;
            let last = i + 1 == names.len();
            let (size, body) = if last { (size, data) } else { (0, &b""[..]) };
            self.entry(
                Header {
                    name,
                    ino,
                    mode: S_IFREG | (perm & 0o7777),
                    nlink,
                    size,
                    rdev: (0, 0),
                },
                body,
            )?;
        }
        Ok(())
    }

    /// Adds a symbolic link `name` → `target`.
    pub fn add_symlink(&mut self, name: &str, target: &str) -> Result<()> {
        let name = check_name(name)?;
        if target.is_empty() || target.len() >= MAX_NAME || target.contains('\0') {
            return Err(GuestError::BadEntryName(target.to_string()));
        }
        self.parents(name)?;
        let ino = self.ino();
        let size = target.len() as u32;
        self.entry(
            Header {
                name,
                ino,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                size,
                rdev: (0, 0),
            },
            target.as_bytes(),
        )
    }

    /// Adds a character device node.
    pub fn add_char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        let name = check_name(name)?;
        self.parents(name)?;
        let ino = self.ino();
        self.entry(
            Header {
                name,
                ino,
                mode: S_IFCHR | (perm & 0o7777),
                nlink: 1,
                size: 0,
                rdev: (major, minor),
            },
            b"",
        )
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        self.entry(
            Header {
                name: TRAILER,
                ino: 0,
                mode: 0,
                nlink: 1,
                size: 0,
                rdev: (0, 0),
            },
            b"",
        )?;
        self.out.flush().map_err(write_err)?;
        Ok(self.out)
    }

    fn ino(&mut self) -> u32 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn parents(&mut self, name: &str) -> Result<()> {
        if let Some((parent, _)) = name.rsplit_once('/') {
            if !self.dirs.contains(parent) {
                self.add_dir(parent, 0o755)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, h: Header<'_>, data: &[u8]) -> Result<()> {
        let namesize = h.name.len() + 1;
        let fields = [
            h.ino,
            h.mode,
            0,
            0,
            h.nlink,
            0,
            h.size,
            0,
            0,
            h.rdev.0,
            h.rdev.1,
            namesize as u32,
            0,
        ];
        let mut buf = Vec::with_capacity(HEADER_LEN + namesize + 3);
        buf.extend_from_slice(MAGIC);
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(h.name.as_bytes());
        buf.push(0);
        buf.resize(pad4(buf.len()), 0);
        self.write(&buf)?;
        self.write(data)?;
        let pad = pad4(data.len()) - data.len();
        self.write(&[0u8; 3][..pad])
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(write_err)?;
        self.written += b.len() as u64;
        Ok(())
    }
}

fn write_err(e: std::io::Error) -> GuestError {
    GuestError::Io {
        op: "write cpio",
        path: "<archive>".into(),
        source: e,
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn check_name(name: &str) -> Result<&str> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.ends_with('/')
        || name.len() + 1 > MAX_NAME
        || name.contains('\0')
        || name == TRAILER
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(GuestError::BadEntryName(name.to_string()));
    }
    Ok(name)
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path inside the archive (no leading `/`).
    pub name: String,
    /// Inode number (shared by hard links).
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device major/minor of a device node.
    pub rdev: (u32, u32),
    /// File contents, or the target of a symlink.
    pub data: Vec<u8>,
}

/// Reads a newc archive from memory; every length is checked against the
/// bytes that are left.
pub struct CpioReader<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> CpioReader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        CpioReader {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Reads all entries up to the trailer (which must be present).
    pub fn read_all(buf: &'a [u8]) -> Result<Vec<CpioEntry>> {
        let mut r = CpioReader::new(buf);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        if !r.done {
            return Err(GuestError::BadCpio("no trailer".into()));
        }
        Ok(out)
    }

    /// The next entry, or `None` after the trailer or at the end of input.
    pub fn next_entry(&mut self) -> Result<Option<CpioEntry>> {
        if self.done || self.pos >= self.buf.len() {
            return Ok(None);
        }
        let bad = |m: &str| GuestError::BadCpio(m.to_string());
        let hdr = self
            .take(HEADER_LEN)
            .ok_or_else(|| bad("truncated header"))?;
        if &hdr[..6] != MAGIC {
            return Err(bad("bad magic (only newc is supported)"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&hdr[6 + i * 8..14 + i * 8])
                .map_err(|_| bad("non-ascii header"))?;
            *v = u32::from_str_radix(s, 16).map_err(|_| bad("non-hex header field"))?;
        }
        let namesize = f[11] as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(bad("name size out of range"));
        }
        let name_start = self.pos;
        let raw = self.take(namesize).ok_or_else(|| bad("truncated name"))?;
        let (last, name) = raw.split_last().ok_or_else(|| bad("empty name"))?;
        if *last != 0 {
            return Err(bad("name not NUL-terminated"));
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name not UTF-8"))?;
        self.pos = name_start - HEADER_LEN + pad4(HEADER_LEN + namesize);
        let size = f[6] as usize;
        let data = self
            .take(size)
            .ok_or_else(|| bad("truncated data"))?
            .to_vec();
        self.pos = pad4(self.pos);
        if name == TRAILER {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(CpioEntry {
            name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev: (f[9], f[10]),
            data,
        }))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

#[cfg(test)]
#[path = "cpio_tests.rs"]
mod tests;
