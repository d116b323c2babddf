//! The command lines of QEMU (`microvm`) and vhost-device-vsock.
//!
//! What the flags are for (measured on the development machines, see
//! DESIGN.md "QEMU microvm facts"):
//! - `-M microvm,acpi=on`: the Debian cloud kernel finds virtio-mmio
//!   devices only through ACPI.
//! - `-bios qboot.rom`: QEMU 10's SeaBIOS default triple-faults the PVH
//!   `vmlinux` most of the time.
//! - `reboot=t` + `-no-reboot`: QEMU exits ≈ 15 ms after the agent's
//!   `reboot(2)`; `panic=-1` turns a guest panic into an exit too.
//! - `tsc_early_khz=… tsc=reliable`: under TCG the guest's TSC calibration
//!   fails at random and the boot hangs without them.
//! - vsock: guest memory must be a shared memfd so vhost-device-vsock can
//!   map it (`-m` equals the backend's size).

use std::ffi::OsString;
use std::path::PathBuf;

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`/dev/kvm` that boots a stock guest).
    Kvm,
    /// Software emulation: slow (6–15×) and no security boundary.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A disk the VM boots with (virtio-blk on the virtio-mmio bus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDrive {
    /// QEMU's node name, also the guest-visible serial (`/sys/block/*/serial`).
    pub id: String,
    /// The backing file (raw).
    pub path: PathBuf,
    /// Read-only for the guest.
    pub read_only: bool,
}

/// The VM's network card: virtio-net on the virtio-mmio bus over an
/// existing tap, which QEMU opens by name in its own network namespace
/// (the pod's). No helper scripts run (`script=no,downscript=no`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The tap's name (in QEMU's network namespace).
    pub tap: String,
    /// The guest's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// Everything one VM's command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmArgs {
    /// Name shown by `ps` and in QMP (`-name`).
    pub name: String,
    /// Uncompressed ELF kernel (PVH entry).
    pub kernel: PathBuf,
    /// The agent's initramfs.
    pub initramfs: PathBuf,
    /// Firmware (`-bios`), normally qboot.rom.
    pub firmware: PathBuf,
    /// QEMU's data directory (`-L`); `None` uses the built-in one.
    pub data_dir: Option<PathBuf>,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// KVM or TCG.
    pub accel: Accel,
    /// The host TSC frequency in kHz for `tsc_early_khz` (TCG); `None`
    /// leaves the guest to calibrate.
    pub tsc_khz: Option<u64>,
    /// Where the guest console (ttyS0) is written.
    pub serial_log: PathBuf,
    /// The QMP unix socket QEMU listens on.
    pub qmp_socket: PathBuf,
    /// vhost-device-vsock's vhost-user socket.
    pub vhost_vsock_socket: PathBuf,
    /// Disks present from boot, in order (`/dev/vda`, `/dev/vdb`, ...).
    pub drives: Vec<BootDrive>,
    /// PCIe root ports for drives hot-plugged later (`pcie=on`; the
    /// ports are `hp0`, `hp1`, ...). 0 leaves PCIe off.
    pub hotplug_ports: u32,
    /// The network card, if the pod has a network.
    pub nic: Option<Nic>,
    /// Enable QEMU's seccomp sandbox (`-sandbox on,...`).
    pub seccomp: bool,
    /// `(uid, gid)` QEMU drops to once its devices are set up
    /// (`-run-with user=`); `None` keeps it root. Files it opens later
    /// (hot-plugged drives) must then be passed as fds.
    pub run_as: Option<(u32, u32)>,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
}

impl VmArgs {
    /// The guest kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut c = String::from("console=ttyS0 reboot=t panic=-1 pcie_ports=native quiet");
        if let Some(khz) = self.tsc_khz {
            c.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
        }
        if !self.extra_cmdline.trim().is_empty() {
            c.push(' ');
            c.push_str(self.extra_cmdline.trim());
        }
        c
    }

    /// QEMU's arguments (without the program).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-name");
        push(&format!("{},debug-threads=on", opt_escape(&self.name)));
        push("-M");
        push(if self.hotplug_ports > 0 {
            "microvm,acpi=on,pcie=on"
        } else {
            "microvm,acpi=on"
        });
        push("-accel");
        push(self.accel.as_str());
        push("-cpu");
        push(match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        });
        push("-smp");
        push(&self.vcpus.max(1).to_string());
        push("-m");
        push(&format!("{}M", self.memory_mib));
        push("-object");
        push(&format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            self.memory_mib
        ));
        push("-machine");
        push("memory-backend=mem");
        push("-nodefaults");
        push("-no-user-config");
        push("-nographic");
        push("-no-reboot");
        if self.seccomp {
            // Dropping to `run_as` is itself a set*id call; once dropped,
            // QEMU has nothing left to elevate to (spawn stays denied).
            let elevate = if self.run_as.is_some() {
                "allow"
            } else {
                "deny"
            };
            push("-sandbox");
            push(&format!(
                "on,obsolete=deny,elevateprivileges={elevate},spawn=deny,resourcecontrol=deny"
            ));
        }
        if let Some((uid, gid)) = self.run_as {
            push("-run-with");
            push(&format!("user={uid}:{gid}"));
        }
        push("-serial");
        push(&format!("file:{}", self.serial_log.display()));
        push("-qmp");
        push(&format!(
            "unix:{},server=on,wait=off",
            opt_escape(&self.qmp_socket.to_string_lossy())
        ));
        push("-bios");
        push(&self.firmware.to_string_lossy());
        push("-kernel");
        push(&self.kernel.to_string_lossy());
        push("-initrd");
        push(&self.initramfs.to_string_lossy());
        push("-append");
        push(&self.kernel_cmdline());
        push("-chardev");
        push(&format!(
            "socket,id=vsock0,path={}",
            opt_escape(&self.vhost_vsock_socket.to_string_lossy())
        ));
        push("-device");
        push("vhost-user-vsock-device,chardev=vsock0");
        for d in &self.drives {
            push("-blockdev");
            push(&format!(
                "driver=file,node-name={id}-file,filename={path},read-only={ro}",
                id = d.id,
                path = opt_escape(&d.path.to_string_lossy()),
                ro = on_off(d.read_only)
            ));
            push("-blockdev");
            push(&format!(
                "driver=raw,node-name={id},file={id}-file,read-only={ro}",
                id = d.id,
                ro = on_off(d.read_only)
            ));
            push("-device");
            push(&format!(
                "virtio-blk-device,drive={id},serial={id}",
                id = d.id
            ));
        }
        if let Some(nic) = &self.nic {
            push("-netdev");
            push(&format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                opt_escape(&nic.tap)
            ));
            push("-device");
            push(&format!(
                "virtio-net-device,netdev=net0,mac={}",
                opt_escape(&nic.mac)
            ));
        }
        for i in 0..self.hotplug_ports {
            push("-device");
            push(&format!(
                "pcie-root-port,id={},bus=pcie.0,chassis={}",
                hotplug_port(i),
                i + 1
            ));
        }
        if let Some(dir) = &self.data_dir {
            a.push("-L".into());
            a.push(dir.into());
        }
        a
    }
}

/// vhost-device-vsock's arguments: one VM, guest CID 3 (each VM has its own
/// daemon, so CIDs never clash), the vhost-user socket QEMU connects to and
/// the hybrid-vsock socket the host connects to.
pub fn vhost_vsock_args(vhost_socket: &std::path::Path, uds: &std::path::Path) -> Vec<OsString> {
    vec![
        "--vm".into(),
        format!(
            "guest-cid=3,socket={},uds-path={}",
            vhost_socket.display(),
            uds.display()
        )
        .into(),
    ]
}

/// The id of hot-plug root port `i`.
pub fn hotplug_port(i: u32) -> String {
    format!("hp{i}")
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// QEMU option values escape `,` by doubling it.
fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> VmArgs {
        VmArgs {
            name: "hearth-abc".into(),
            kernel: "/g/vmlinux".into(),
            initramfs: "/g/initramfs.cpio".into(),
            firmware: "/usr/share/qemu/qboot.rom".into(),
            data_dir: None,
            vcpus: 2,
            memory_mib: 320,
            accel: Accel::Tcg,
            tsc_khz: Some(2_100_000),
            serial_log: "/run/x/serial.log".into(),
            qmp_socket: "/run/x/qmp.sock".into(),
            vhost_vsock_socket: "/run/x/vhost.sock".into(),
            drives: vec![BootDrive {
                id: "scratch".into(),
                path: "/var/a,b/scratch.img".into(),
                read_only: false,
            }],
            hotplug_ports: 0,
            nic: None,
            seccomp: true,
            run_as: None,
            extra_cmdline: String::new(),
        }
    }

    fn joined(a: &VmArgs) -> String {
        a.to_args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn value_of(a: &VmArgs, flag: &str) -> Vec<String> {
        let v = a.to_args();
        v.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn microvm_with_acpi_qboot_and_exit_on_reset() {
        let a = args();
        assert_eq!(value_of(&a, "-M"), ["microvm,acpi=on"]);
        assert_eq!(value_of(&a, "-bios"), ["/usr/share/qemu/qboot.rom"]);
        assert_eq!(value_of(&a, "-accel"), ["tcg"]);
        assert_eq!(value_of(&a, "-cpu"), ["max"]);
        let s = joined(&a);
        assert!(s.contains("-no-reboot"), "{s}");
        assert!(s.contains("-nodefaults"), "{s}");
        let cmdline = a.kernel_cmdline();
        for want in [
            "reboot=t",
            "panic=-1",
            "console=ttyS0",
            "tsc_early_khz=2100000",
            "tsc=reliable",
        ] {
            assert!(cmdline.contains(want), "{cmdline}");
        }
    }

    #[test]
    fn memory_is_a_shared_memfd_of_the_same_size() {
        let a = args();
        assert_eq!(value_of(&a, "-m"), ["320M"]);
        assert_eq!(
            value_of(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=320M,share=on"]
        );
        assert_eq!(value_of(&a, "-machine"), ["memory-backend=mem"]);
        assert_eq!(value_of(&a, "-smp"), ["2"]);
    }

    #[test]
    fn drives_have_their_id_as_serial_and_commas_are_escaped() {
        let a = args();
        let blockdevs = value_of(&a, "-blockdev");
        assert_eq!(
            blockdevs[0],
            "driver=file,node-name=scratch-file,filename=/var/a,,b/scratch.img,read-only=off"
        );
        assert!(value_of(&a, "-device")
            .contains(&"virtio-blk-device,drive=scratch,serial=scratch".to_owned()));
    }

    #[test]
    fn hotplug_ports_turn_pcie_on() {
        let mut a = args();
        assert!(!joined(&a).contains("pcie-root-port"));
        a.hotplug_ports = 2;
        assert_eq!(value_of(&a, "-M"), ["microvm,acpi=on,pcie=on"]);
        let devices = value_of(&a, "-device");
        assert!(devices.contains(&"pcie-root-port,id=hp0,bus=pcie.0,chassis=1".to_owned()));
        assert!(devices.contains(&"pcie-root-port,id=hp1,bus=pcie.0,chassis=2".to_owned()));
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_seccomp_can_be_off() {
        let mut a = args();
        a.accel = Accel::Kvm;
        a.seccomp = false;
        a.tsc_khz = None;
        assert_eq!(value_of(&a, "-cpu"), ["host"]);
        assert!(value_of(&a, "-sandbox").is_empty());
        assert!(!a.kernel_cmdline().contains("tsc_early_khz"));
    }

    #[test]
    fn qemu_drops_to_its_uid_after_set_up() {
        let mut a = args();
        assert!(value_of(&a, "-run-with").is_empty());
        assert!(value_of(&a, "-sandbox")[0].contains("elevateprivileges=deny"));
        a.run_as = Some((300_001, 300_001));
        assert_eq!(value_of(&a, "-run-with"), ["user=300001:300001"]);
        assert!(value_of(&a, "-sandbox")[0].contains("elevateprivileges=allow,spawn=deny"));
    }

    #[test]
    fn the_nic_is_virtio_net_on_an_existing_tap_without_scripts() {
        let mut a = args();
        assert!(value_of(&a, "-netdev").is_empty());
        a.nic = Some(Nic {
            tap: "tap0".into(),
            mac: "0a:58:0a:01:02:03".into(),
        });
        assert_eq!(
            value_of(&a, "-netdev"),
            ["tap,id=net0,ifname=tap0,script=no,downscript=no"]
        );
        assert!(value_of(&a, "-device")
            .contains(&"virtio-net-device,netdev=net0,mac=0a:58:0a:01:02:03".to_owned()));
    }

    #[test]
    fn vsock_daemon_gets_one_vm() {
        let v = vhost_vsock_args("/r/vhost.sock".as_ref(), "/r/vm.vsock".as_ref());
        assert_eq!(v[0], "--vm");
        assert_eq!(
            v[1],
            "guest-cid=3,socket=/r/vhost.sock,uds-path=/r/vm.vsock"
        );
    }
}
