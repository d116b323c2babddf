//! Checks on the Firecracker binary: version (≥ 1.8) and static linking.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::error::{FirecrackerError, Result};
use crate::http::truncate;

/// Oldest Firecracker Hearth runs: 1.8 brought the ACPI tables the Debian
/// cloud kernel needs to find vCPUs and virtio devices.
pub const MIN_VERSION: FirecrackerVersion = FirecrackerVersion {
    major: 1,
    minor: 8,
    patch: 0,
};

/// A Firecracker release version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FirecrackerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl fmt::Display for FirecrackerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FirecrackerVersion {
    /// Parses `1.16.1`, `v1.16.1` or `1.16.1-dev` (suffix ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+', ' ']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch = it.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(FirecrackerVersion {
            major,
            minor,
            patch,
        })
    }

    /// Finds `Firecracker vX.Y.Z` in `--version` output (the binary may
    /// print log lines after it).
    pub fn from_version_output(out: &str) -> Option<Self> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Firecracker v").and_then(Self::parse))
    }

    /// Errors with "too old" below [`MIN_VERSION`].
    pub fn check_supported(self) -> Result<Self> {
        if self < MIN_VERSION {
            return Err(FirecrackerError::TooOld {
                found: self.to_string(),
            });
        }
        Ok(self)
    }
}

/// Runs `<path> --version` (bounded by 10 s), parses it and checks ≥ 1.8.
pub async fn check_binary(path: &Path) -> Result<FirecrackerVersion> {
    let run = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(r) => r.map_err(|e| FirecrackerError::Spawn(path.to_path_buf(), e))?,
        Err(_) => {
            return Err(FirecrackerError::BadVersion {
                path: path.into(),
                output: "--version timed out".into(),
            })
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    FirecrackerVersion::from_version_output(&text)
        .ok_or_else(|| FirecrackerError::BadVersion {
            path: path.into(),
            output: truncate(&text),
        })?
        .check_supported()
}

/// Whether an ELF file has a `PT_INTERP` program header (dynamic linking).
/// Reads only the ELF and program headers, each bounded.
pub fn has_interpreter(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |why: &str| FirecrackerError::InvalidArgument {
        field: "firecracker binary",
        reason: format!("{}: {why}", path.display()),
    };
    let mut f = std::fs::File::open(path).map_err(FirecrackerError::io("open", path))?;
    let mut ehdr = [0u8; 64];
    f.read_exact(&mut ehdr)
        .map_err(|_| bad("too short for an ELF header"))?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(bad("not a little-endian ELF64 file"));
    }
    let phoff = u64::from_le_bytes(ehdr[0x20..0x28].try_into().unwrap_or_default());
    let phentsize = usize::from(u16::from_le_bytes([ehdr[0x36], ehdr[0x37]]));
    let phnum = usize::from(u16::from_le_bytes([ehdr[0x38], ehdr[0x39]]));
    if phentsize < 56 || phnum > 4096 {
        return Err(bad("implausible program header table"));
    }
    let mut table = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff))
        .map_err(FirecrackerError::io("seek", path))?;
    f.read_exact(&mut table)
        .map_err(|_| bad("program headers past the end of the file"))?;
    Ok(table
        .chunks(phentsize)
        .any(|ph| ph[..4] == 3u32.to_le_bytes()))
}

/// Errors with [`FirecrackerError::DynamicBinary`] when `path` is dynamic.
pub fn check_static(path: &Path) -> Result<()> {
    if has_interpreter(path)? {
        return Err(FirecrackerError::DynamicBinary(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let out = "Firecracker v1.16.1\n\n2026-11-28T16:58:19.698 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n";
        let v = FirecrackerVersion::from_version_output(out).unwrap();
        assert_eq!(
            v,
            FirecrackerVersion {
                major: 1,
                minor: 16,
                patch: 1
            }
        );
        assert_eq!(v.to_string(), "1.16.1");
        assert!(v.check_supported().is_ok());
        assert_eq!(FirecrackerVersion::parse("1.8.0-dev"), Some(MIN_VERSION));
        assert!(FirecrackerVersion::from_version_output("Jailer v1.16.1").is_none());
        assert!(FirecrackerVersion::from_version_output("garbage").is_none());
    }

    #[test]
    fn older_than_1_8_is_too_old_and_named() {
        let e = FirecrackerVersion::parse("1.7.0")
            .unwrap()
            .check_supported()
            .unwrap_err();
        assert!(matches!(&e, FirecrackerError::TooOld { found } if found == "1.7.0"));
        assert!(e.to_string().contains("1.7.0") && e.to_string().contains("too old"));
        assert!(FirecrackerVersion::parse("0.25.2")
            .unwrap()
            .check_supported()
            .is_err());
        assert!(FirecrackerVersion::parse("2.0.0")
            .unwrap()
            .check_supported()
            .is_ok());
    }

    #[tokio::test]
    async fn check_binary_runs_version() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("firecracker");
        hearth_test_support::write_executable(&fake, "#!/bin/sh\necho 'Firecracker v1.5.0'\n");
        assert!(
            matches!(check_binary(&fake).await, Err(FirecrackerError::TooOld { found }) if found == "1.5.0")
        );
        std::fs::write(&fake, "#!/bin/sh\necho 'Firecracker v1.10.1'\n").unwrap();
        assert_eq!(check_binary(&fake).await.unwrap().minor, 10);
        std::fs::write(&fake, "#!/bin/sh\necho nope\n").unwrap();
        assert!(matches!(
            check_binary(&fake).await,
            Err(FirecrackerError::BadVersion { .. })
        ));
    }

    #[test]
    fn detects_dynamic_binaries() {
        // The test binary itself is dynamically linked on the gnu target
        // unless built with crt-static; /bin/sh on Debian is dynamic.
        assert!(has_interpreter(Path::new("/bin/sh")).unwrap());
        assert!(matches!(
            check_static(Path::new("/bin/sh")),
            Err(FirecrackerError::DynamicBinary(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(
            &junk,
            b"not an elf at all, just some bytes to fill sixty-four bytes......",
        )
        .unwrap();
        assert!(has_interpreter(&junk).is_err());
        if Path::new("/bin/busybox").exists()
            && !has_interpreter(Path::new("/bin/busybox")).unwrap()
        {
            assert!(check_static(Path::new("/bin/busybox")).is_ok());
        }
    }
}
