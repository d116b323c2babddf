//! Applying OCI layers to a directory with full OCI semantics.
//!
//! Whiteouts (`.wh.name`) and opaque whiteouts (`.wh..wh..opq`) remove what
//! lower layers put there; hard links, symlinks, FIFOs, devices (if allowed),
//! xattrs (`SCHILY.xattr.*`), ownership (when running as root), modes and
//! mtimes are kept. Every parent component of an entry is resolved inside the
//! root by hand, symlinks included (an absolute target means the root), so
//! nothing is ever written through a symlink to outside it: `..`, absolute
//! entry paths and symlinks that climb above the root are refused with
//! [`ImageError::UnsafeLayerPath`]. The uncompressed stream is hashed and
//! checked against the config's `diff_id`.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::error::{ImageError, Result};

/// One layer to apply.
#[derive(Debug, Clone)]
pub(crate) struct LayerFile {
    /// Compressed digest (names the layer in errors).
    pub digest: String,
    /// Where the blob is.
    pub path: PathBuf,
    /// Expected digest of the uncompressed tar (`rootfs.diff_ids`), if known.
    pub diff_id: Option<String>,
}

/// Options for unpacking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnpackOptions {
    /// Allow character and block devices.
    pub allow_device_nodes: bool,
    /// Apply ownership (only possible as root).
    pub chown: bool,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const MAX_SYMLINK_HOPS: usize = 40;

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn decompressor(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(1 << 16, fs::File::open(path)?);
    let magic = r.fill_buf()?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

struct Ctx<'a> {
    root: &'a Path,
    layer: &'a str,
    opts: UnpackOptions,
    /// Real paths this layer created (protected from its own opaque whiteouts).
    added: HashSet<PathBuf>,
    /// Directories whose times are set once the layer is done.
    dir_times: Vec<(PathBuf, u64)>,
}

impl Ctx<'_> {
    fn unsafe_path(&self, path: &[u8], reason: &'static str) -> ImageError {
        ImageError::UnsafeLayerPath {
            layer: self.layer.to_string(),
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        }
    }

    fn io_err(&self, path: &[u8], source: io::Error) -> ImageError {
        ImageError::Layer {
            layer: self.layer.to_string(),
            path: String::from_utf8_lossy(path).into_owned(),
            source,
        }
    }
}

/// Splits an entry path into its components, refusing `..` and absolute paths.
fn components<'p>(ctx: &Ctx<'_>, raw: &'p [u8]) -> Result<Vec<&'p OsStr>> {
    if raw.starts_with(b"/") {
        return Err(ctx.unsafe_path(raw, "absolute path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(ctx.unsafe_path(raw, "parent directory component '..'")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Resolves directory components inside the root, following symlinks as the
/// container will see them. Missing directories are created when `create`
/// (tar semantics), else the result is `None`. Returns a host path without
/// symlinks in it.
fn resolve_dir(
    ctx: &Ctx<'_>,
    raw: &[u8],
    comps: &[&OsStr],
    create: bool,
) -> Result<Option<PathBuf>> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = comps.iter().map(|c| c.to_os_string()).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            if stack.pop().is_none() {
                return Err(ctx.unsafe_path(raw, "a symlink in the path points outside the root"));
            }
            continue;
        }
        let mut cur = ctx.root.to_path_buf();
        cur.extend(&stack);
        cur.push(&c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ctx.unsafe_path(raw, "too many levels of symlinks"));
                }
                let target = fs::read_link(&cur).map_err(|e| ctx.io_err(raw, e))?;
                let tb = target.as_os_str().as_bytes();
                if tb.starts_with(b"/") {
                    stack.clear();
                }
                for part in tb.split(|&b| b == b'/').rev() {
                    queue.push_front(OsStr::from_bytes(part).to_os_string());
                }
            }
            Ok(m) if m.is_dir() => stack.push(c),
            Ok(_) => {
                return Err(ctx.io_err(
                    raw,
                    io::Error::new(io::ErrorKind::NotADirectory, "a parent is not a directory"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|e| ctx.io_err(raw, e))?;
                stack.push(c);
            }
            Err(e) => return Err(ctx.io_err(raw, e)),
        }
    }
    let mut out = ctx.root.to_path_buf();
    out.extend(&stack);
    Ok(Some(out))
}

/// Removes whatever is at `p` (not following symlinks); absent is fine.
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mtime(p: &Path, secs: u64) -> io::Result<()> {
    let t = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
    utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// Applies one layer to `root`.
pub(crate) fn apply_layer(root: &Path, layer: &LayerFile, opts: UnpackOptions) -> Result<()> {
    let mut ctx = Ctx {
        root,
        layer: &layer.digest,
        opts,
        added: HashSet::new(),
        dir_times: Vec::new(),
    };
    let reader = decompressor(&layer.path).map_err(|e| ctx.io_err(b"", e))?;
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(|e| ctx.io_err(b"", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ctx.io_err(b"", e))?;
            apply_entry(&mut ctx, entry)?;
        }
    }
    // Hash the tar's trailing padding too, then check the diff_id.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| ctx.io_err(b"", e))?;
    let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    if let Some(expected) = &layer.diff_id {
        if *expected != actual {
            return Err(ImageError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    for (p, t) in ctx.dir_times.iter().rev() {
        // Best effort like tar: a later layer may have removed the directory.
        let _ = set_mtime(p, *t);
    }
    Ok(())
}

fn apply_entry<R: Read>(ctx: &mut Ctx<'_>, mut entry: tar::Entry<'_, R>) -> Result<()> {
    let raw: Vec<u8> = entry.path_bytes().into_owned();
    let kind = entry.header().entry_type();
    if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
        return Ok(());
    }
    let comps = components(ctx, &raw)?;
    let Some((name, parents)) = comps.split_last() else {
        // The root itself ("./"): nothing to create.
        return Ok(());
    };
    let name_b = name.as_bytes();
    let is_whiteout = name_b.starts_with(WHITEOUT_PREFIX);
    let Some(parent) = resolve_dir(ctx, &raw, parents, !is_whiteout)? else {
        // A whiteout in a directory no lower layer has: nothing to hide.
        return Ok(());
    };

    if name_b == OPAQUE {
        let rd = fs::read_dir(&parent).map_err(|e| ctx.io_err(&raw, e))?;
        for child in rd {
            let child = child.map_err(|e| ctx.io_err(&raw, e))?.path();
            if !ctx.added.contains(&child) {
                remove_any(&child).map_err(|e| ctx.io_err(&raw, e))?;
            }
        }
        return Ok(());
    }
    if let Some(hidden) = name_b.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(ctx.unsafe_path(&raw, "malformed whiteout name"));
        }
        let target = parent.join(OsStr::from_bytes(hidden));
        remove_any(&target).map_err(|e| ctx.io_err(&raw, e))?;
        return Ok(());
    }

    let dest = parent.join(name);
    let header = entry.header().clone();
    let mode = header.mode().map_err(|e| ctx.io_err(&raw, e))? & 0o7777;
    let uid = header.uid().map_err(|e| ctx.io_err(&raw, e))?;
    let gid = header.gid().map_err(|e| ctx.io_err(&raw, e))?;
    let mtime = header.mtime().unwrap_or(0);
    let mut xattrs: Vec<(OsString, Vec<u8>)> = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(|e| ctx.io_err(&raw, e))? {
        for ext in exts {
            let ext = ext.map_err(|e| ctx.io_err(&raw, e))?;
            if let Some(n) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((
                    OsStr::from_bytes(n).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
    }

    let existing = fs::symlink_metadata(&dest).ok();
    match kind {
        EntryType::Directory => {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                remove_any(&dest).map_err(|e| ctx.io_err(&raw, e))?;
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dest)
                    .map_err(|e| ctx.io_err(&raw, e))?;
            }
        }
        EntryType::Regular | EntryType::Continuous => {
            remove_any(&dest).map_err(|e| ctx.io_err(&raw, e))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&dest)
                .map_err(|e| ctx.io_err(&raw, e))?;
            io::copy(&mut entry, &mut f).map_err(|e| ctx.io_err(&raw, e))?;
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ctx.unsafe_path(&raw, "symlink without a target"))?
                .into_owned();
            remove_any(&dest).map_err(|e| ctx.io_err(&raw, e))?;
            symlink(OsStr::from_bytes(&target), &dest).map_err(|e| ctx.io_err(&raw, e))?;
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ctx.unsafe_path(&raw, "hard link without a target"))?
                .into_owned();
            let tcomps = components(ctx, &target)?;
            let Some((tname, tparents)) = tcomps.split_last() else {
                return Err(ctx.unsafe_path(&raw, "hard link to the root"));
            };
            let src = resolve_dir(ctx, &target, tparents, false)?
                .ok_or_else(|| {
                    ctx.io_err(
                        &raw,
                        io::Error::new(io::ErrorKind::NotFound, "hard link target does not exist"),
                    )
                })?
                .join(tname);
            if src == dest {
                return Ok(());
            }
            remove_any(&dest).map_err(|e| ctx.io_err(&raw, e))?;
            // linkat(2) without AT_SYMLINK_FOLLOW: a symlink source is linked itself.
            fs::hard_link(&src, &dest).map_err(|e| ctx.io_err(&raw, e))?;
            ctx.added.insert(dest);
            return Ok(());
        }
        EntryType::Char | EntryType::Block => {
            if !ctx.opts.allow_device_nodes {
                return Err(ImageError::DeviceNodeNotAllowed {
                    layer: ctx.layer.to_string(),
                    path: String::from_utf8_lossy(&raw).into_owned(),
                });
            }
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let kind = if kind == EntryType::Char {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            remove_any(&dest).map_err(|e| ctx.io_err(&raw, e))?;
            mknod(
                &dest,
                kind,
                Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
            )
            .map_err(|e| ctx.io_err(&raw, e.into()))?;
        }
        EntryType::Fifo => {
            remove_any(&dest).map_err(|e| ctx.io_err(&raw, e))?;
            nix::unistd::mkfifo(&dest, Mode::from_bits_truncate(0o600))
                .map_err(|e| ctx.io_err(&raw, e.into()))?;
        }
        other => {
            return Err(ctx.io_err(
                &raw,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("unsupported tar entry type {other:?}"),
                ),
            ))
        }
    }

    let is_symlink = kind == EntryType::Symlink;
    if ctx.opts.chown {
        let range = |_| {
            ctx.io_err(
                &raw,
                io::Error::new(io::ErrorKind::InvalidData, "uid or gid above 2^32"),
            )
        };
        let uid = u32::try_from(uid).map_err(range)?;
        let gid = u32::try_from(gid).map_err(range)?;
        std::os::unix::fs::lchown(&dest, Some(uid), Some(gid)).map_err(|e| ctx.io_err(&raw, e))?;
    }
    for (k, v) in &xattrs {
        if let Err(e) = xattr::set(&dest, k, v) {
            if ctx.opts.chown {
                return Err(ctx.io_err(&raw, e));
            }
            tracing::warn!(layer = ctx.layer, path = %String::from_utf8_lossy(&raw), xattr = ?k, error = %e, "xattr not set (not running as root)");
        }
    }
    if !is_symlink {
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .map_err(|e| ctx.io_err(&raw, e))?;
    }
    if kind == EntryType::Directory {
        ctx.dir_times.push((dest.clone(), mtime));
    } else {
        set_mtime(&dest, mtime).map_err(|e| ctx.io_err(&raw, e))?;
    }
    ctx.added.insert(dest);
    Ok(())
}

#[cfg(test)]
mod tests;
