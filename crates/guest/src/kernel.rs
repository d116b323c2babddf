//! Finding, downloading and unpacking the Debian kernel package.
//!
//! `apt-cache show` turns the meta package (`linux-image-cloud-amd64`) into
//! the versioned one (`linux-image-6.1.0-NN-cloud-amd64`) and its exact
//! version; `apt-get download <pkg>=<version>` fetches the `.deb` into the
//! work directory and `dpkg -x` unpacks it. Nothing is installed on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{GuestError, Result};

/// A concrete kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackage {
    /// Versioned package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Exact Debian version, e.g. `6.1.192-2`.
    pub version: String,
}

/// An unpacked kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedKernel {
    /// The package it came from.
    pub package: KernelPackage,
    /// Root of the unpacked tree.
    pub root: PathBuf,
    /// `uname -r` of the kernel (the `/lib/modules/<release>` name).
    pub release: String,
    /// sha256 of the `.deb`.
    pub deb_sha256: String,
}

impl UnpackedKernel {
    /// The compressed kernel image (`boot/vmlinuz-<release>`).
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The module tree (`lib/modules/<release>`).
    pub fn modules_root(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let tool = format!("{:?}", cmd.get_program())
        .trim_matches('"')
        .to_string()
        + &cmd
            .get_args()
            .map(|a| format!(" {}", a.to_string_lossy()))
            .collect::<String>();
    let out = cmd.output().map_err(|e| GuestError::Tool {
        tool: tool.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        return Err(GuestError::Tool {
            tool,
            detail: format!("{}: {tail}", out.status),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| GuestError::Tool {
        tool,
        detail: "non-UTF-8 output".into(),
    })
}

/// Parses the first stanza of `apt-cache show` into (version, depends).
fn parse_show(text: &str) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    (field("Version:"), field("Depends:"))
}

/// The versioned `linux-image-<release>` named in a meta package's Depends.
pub fn versioned_from_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|name| {
            name.strip_prefix("linux-image-")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// Resolves a (meta or versioned) package name to the versioned package.
pub fn resolve(package: &str) -> Result<KernelPackage> {
    let show = |p: &str| run(Command::new("apt-cache").args(["show", "--no-all-versions", p]));
    let (version, depends) = parse_show(&show(package)?);
    let versioned = depends.as_deref().and_then(versioned_from_depends);
    let (package, version) = match versioned {
        Some(v) if v != package => (v.clone(), parse_show(&show(&v)?).0),
        _ => (package.to_string(), version),
    };
    let version = version.ok_or_else(|| {
        GuestError::BadPackage(format!("apt-cache shows no version for {package}"))
    })?;
    Ok(KernelPackage { package, version })
}

/// Reads package name and version out of a `.deb` (`dpkg-deb -f`).
pub fn deb_identity(deb: &Path) -> Result<KernelPackage> {
    let out = run(Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .args(["Package", "Version"]))?;
    let (mut package, mut version) = (None, None);
    for l in out.lines() {
        if let Some(v) = l.strip_prefix("Package:") {
            package = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("Version:") {
            version = Some(v.trim().to_string());
        }
    }
    match (package, version) {
        (Some(package), Some(version)) => Ok(KernelPackage { package, version }),
        _ => Err(GuestError::BadPackage(format!(
            "{} has no Package/Version",
            deb.display()
        ))),
    }
}

/// Downloads `pkg` into `dir` with `apt-get download` and returns the file.
pub fn download(pkg: &KernelPackage, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(GuestError::io("create", dir))?;
    if let Some(found) = find_deb(pkg, dir)? {
        return Ok(found);
    }
    run(Command::new("apt-get")
        .current_dir(dir)
        .args(["download", "-q"])
        .arg(format!("{}={}", pkg.package, pkg.version)))?;
    find_deb(pkg, dir)?.ok_or_else(|| {
        GuestError::BadPackage(format!("apt-get download left no {} .deb", pkg.package))
    })
}

fn find_deb(pkg: &KernelPackage, dir: &Path) -> Result<Option<PathBuf>> {
    let version = pkg.version.replace(':', "%3a");
    let want = format!("{}_{}_", pkg.package, version);
    for e in std::fs::read_dir(dir).map_err(GuestError::io("read dir", dir))? {
        let e = e.map_err(GuestError::io("read dir", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&want) && name.ends_with(".deb") {
            return Ok(Some(e.path()));
        }
    }
    Ok(None)
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(GuestError::io("open", path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(GuestError::io("read", path))?;
    Ok(hex::encode(h.finalize()))
}

const DONE_MARK: &str = ".hearth-unpacked";

/// Unpacks `deb` (of `pkg`) under `dir/<package>_<version>` with `dpkg -x`,
/// unless a complete earlier unpack of the same `.deb` is there.
pub fn unpack(pkg: &KernelPackage, deb: &Path, dir: &Path) -> Result<UnpackedKernel> {
    let deb_sha256 = sha256_file(deb)?;
    let root = dir.join(format!(
        "{}_{}",
        pkg.package,
        pkg.version.replace(':', "%3a")
    ));
    let mark = root.join(DONE_MARK);
    let done = std::fs::read_to_string(&mark)
        .map(|s| s.trim() == deb_sha256)
        .unwrap_or(false);
    if !done {
        let tmp = dir.join(format!(".unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(GuestError::io("create", &tmp))?;
        run(Command::new("dpkg").arg("-x").arg(deb).arg(&tmp))?;
        std::fs::write(tmp.join(DONE_MARK), &deb_sha256).map_err(GuestError::io("write", &tmp))?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).map_err(GuestError::io("rename", &root))?;
    }
    let release = find_release(&root)?;
    Ok(UnpackedKernel {
        package: pkg.clone(),
        root,
        release,
        deb_sha256,
    })
}

/// The kernel release of an unpacked tree: the `lib/modules/<release>` that
/// has a matching `boot/vmlinuz-<release>`.
pub fn find_release(root: &Path) -> Result<String> {
    let mods = root.join("lib/modules");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&mods).map_err(GuestError::io("read dir", &mods))? {
        let e = e.map_err(GuestError::io("read dir", &mods))?;
        let rel = e.file_name().to_string_lossy().into_owned();
        if root.join("boot").join(format!("vmlinuz-{rel}")).is_file() {
            found.push(rel);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(GuestError::BadPackage(format!(
            "no boot/vmlinuz-<release> matching lib/modules in {}",
            root.display()
        ))),
        _ => Err(GuestError::BadPackage(format!(
            "several kernel releases in {}",
            root.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meta_package_depends() {
        let show = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n\nPackage: x\nVersion: 1\n";
        let (v, d) = parse_show(show);
        assert_eq!(v.as_deref(), Some("6.1.192-2"));
        assert_eq!(
            versioned_from_depends(&d.unwrap()).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        // A versioned package depends on tools, not on another image.
        assert_eq!(
            versioned_from_depends(
                "kmod, linux-base (>= 4.3~), initramfs-tools | linux-initramfs-tool"
            ),
            None
        );
    }

    #[test]
    fn finds_the_release() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-9-cloud-amd64")).unwrap();
        assert!(find_release(d.path()).is_err());
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::write(d.path().join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"x").unwrap();
        assert_eq!(find_release(d.path()).unwrap(), "6.1.0-9-cloud-amd64");
    }
}
