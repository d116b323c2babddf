//! VM mode: the agent is `/init` of the initramfs, PID 1 of the guest.
//!
//! Order: make sure stdio is the console; leave the initramfs's rootfs
//! for a bind of it (so containers can pivot_root); mount proc, sysfs, devtmpfs,
//! devpts, /dev/shm, /run, cgroup2; disable Ctrl-Alt-Del (it then arrives as
//! SIGINT, handled like `Shutdown`); load the kernel modules listed in
//! `/etc/hearth/modules`; serve on vsock; tear down; reboot (with
//! `reboot=k`/`reboot=t` the VMM exits). PID 1 must never exit: a fatal
//! error is logged to the console and `/dev/kmsg`, then the guest reboots.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_agent_proto::AGENT_PORT;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::MsFlags;
use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};

use super::{chain, mount_fs, pseudo, InitError};
use crate::lifecycle::{Agent, ListenOn};
use crate::server::Mode;

/// The list of modules to load, one path per line relative to
/// `/lib/modules/<release>/`, in order.
pub const MODULES_LIST: &str = "/etc/hearth/modules";

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the module.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// Runs the guest's PID 1. Never returns.
pub fn main() -> ! {
    ensure_stdio();
    crate::init_logging();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "hearth-agent starting (vm)"
    );
    // A panic that escapes (the default hook has printed it to the console)
    // must not end PID 1: that would panic the kernel instead of letting the
    // VMM see a reboot.
    if std::panic::catch_unwind(run).is_err() {
        fatal("the agent panicked");
    }
    reboot_now()
}

fn run() {
    if let Err(err) = setup() {
        fatal(&chain(&err));
    }
    let agent = Agent::new(Mode::Vm);
    if let Err(err) = agent.serve(ListenOn::Vsock(AGENT_PORT)) {
        tracing::error!(error = %chain(&err), "agent stopped");
        kmsg(&format!("hearth-agent: {}", chain(&err)));
    }
    agent.teardown();
}

fn setup() -> Result<(), InitError> {
    leave_rootfs()?;
    // Essential: without these nothing works.
    for (src, target, fstype, flags, data) in [
        ("proc", "/proc", "proc", pseudo(), None),
        ("sysfs", "/sys", "sysfs", pseudo(), None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
    ] {
        tolerate_mounted(mount_fs(src, Path::new(target), fstype, flags, data))?;
    }
    // Useful: log and go on.
    for (src, target, fstype, flags, data) in [
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "run",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", pseudo(), None),
    ] {
        if let Err(err) = tolerate_mounted(mount_fs(src, Path::new(target), fstype, flags, data)) {
            tracing::warn!(error = %chain(&err), "mount failed");
        }
    }
    if let Err(err) = set_cad_enabled(false) {
        tracing::warn!(error = %err, "cannot disable Ctrl-Alt-Del");
    }
    load_modules();
    Ok(())
}

/// Where the initramfs is bound before it is moved over `/`.
const NEW_ROOT: &str = "/.hearth-root";

/// The initramfs is the kernel's rootfs, which `pivot_root` cannot leave
/// (EINVAL), so a container's init could not pivot into its rootfs. Binds
/// it, moves the bind over `/` and chroots there (what `switch_root`
/// does): `/` is then an ordinary mount, the same files, nothing copied.
fn leave_rootfs() -> Result<(), InitError> {
    let new = Path::new(NEW_ROOT);
    let create = |source: io::Error| InitError::Create {
        path: new.to_owned(),
        source,
    };
    match std::fs::create_dir(new) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(create(e)),
        _ => {}
    }
    let mount_err = |source: Errno| InitError::Mount {
        fstype: "bind".into(),
        target: PathBuf::from("/"),
        source: source.into(),
    };
    nix::mount::mount(
        Some("/"),
        new,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err)?;
    nix::unistd::chdir(new).map_err(|e| create(e.into()))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(mount_err)?;
    nix::unistd::chroot(".").map_err(|e| create(e.into()))?;
    nix::unistd::chdir("/").map_err(|e| create(e.into()))?;
    Ok(())
}

/// EBUSY from mount: already mounted (e.g. by the kernel). Fine.
fn tolerate_mounted(res: Result<(), InitError>) -> Result<(), InitError> {
    match res {
        Err(InitError::Mount { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            Ok(())
        }
        other => other,
    }
}

/// Parses the modules list: one relative path a line; blank lines and `#`
/// comments are skipped, as are paths that try to leave the modules dir.
pub fn parse_modules_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let p = Path::new(l);
            let ok = p
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !ok {
                tracing::warn!(module = l, "skipping module path that is not relative");
            }
            ok.then(|| p.to_owned())
        })
        .collect()
}

fn load_modules() {
    let text = match std::fs::read_to_string(MODULES_LIST) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("no {MODULES_LIST}: no modules to load");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read {MODULES_LIST}");
            return;
        }
    };
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new("/lib/modules").join(release);
    for rel in parse_modules_list(&text) {
        let path = dir.join(&rel);
        match load_module(&path) {
            Ok(()) => tracing::info!(module = %rel.display(), "module loaded"),
            Err(Errno::EEXIST) => tracing::debug!(module = %rel.display(), "module already loaded"),
            Err(err) => {
                tracing::warn!(module = %path.display(), error = %err, "cannot load module")
            }
        }
    }
}

fn load_module(path: &Path) -> Result<(), Errno> {
    let file = File::open(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let compressed = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("xz" | "zst" | "gz")
    );
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    const NO_PARAMS: &CStr = c"";
    finit_module(&file, NO_PARAMS, flags)
}

/// If the kernel found no /dev/console in the initramfs, fds 0-2 are
/// closed: mount devtmpfs early and open the console on them.
fn ensure_stdio() {
    let closed: Vec<i32> = (0..3)
        .filter(|fd| nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_GETFD).is_err())
        .collect();
    if closed.is_empty() {
        return;
    }
    let _ = mount_fs(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        None,
    );
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in closed {
        // SAFETY: dup2 onto a closed standard fd; no Rust object owns it.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
}

/// Writes one line to the kernel log (seen on the console even when stderr
/// is lost).
fn kmsg(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "<2>{msg}");
    }
}

/// Logs and reboots: PID 1 must not exit (that panics the kernel).
fn fatal(msg: &str) -> ! {
    tracing::error!(error = msg, "fatal");
    kmsg(&format!("hearth-agent: fatal: {msg}"));
    std::thread::sleep(Duration::from_millis(500));
    reboot_now()
}

fn reboot_now() -> ! {
    nix::unistd::sync();
    tracing::info!("rebooting");
    let Err(err) = reboot(RebootMode::RB_AUTOBOOT);
    kmsg(&format!("hearth-agent: reboot failed: {err}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_list_keeps_order_and_skips_junk() {
        let list = "\
# virtio
kernel/drivers/virtio/virtio_mmio.ko

kernel/net/vmw_vsock/vsock.ko.xz
/abs/evil.ko
../evil.ko
kernel/../../evil.ko
";
        assert_eq!(
            parse_modules_list(list),
            vec![
                PathBuf::from("kernel/drivers/virtio/virtio_mmio.ko"),
                PathBuf::from("kernel/net/vmw_vsock/vsock.ko.xz"),
            ]
        );
    }
}
