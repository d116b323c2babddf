//! The guest's network interfaces (`ConfigureNetwork`, VM mode only: the
//! namespaces backend's pod netns is configured by CNI on the host).
//!
//! The host sends the NIC's MAC (the VMM gave the virtio-net device that
//! MAC), the name, MTU and addresses it must have, and the routes. The
//! request is parsed and checked first ([`Plan::parse`], pure and
//! unit-tested), then applied with the classic ioctls, which need no
//! netlink code in this static binary: `SIOCSIFNAME`, `SIOCSIFMTU`,
//! `SIOCSIFFLAGS`, `SIOCSIFADDR` + `SIOCSIFNETMASK` (IPv4; a second IPv4
//! address goes on an alias label `eth0:1`), `SIOCSIFADDR` with an
//! `in6_ifreq` (IPv6), and `SIOCADDRT` with an `rtentry` (IPv4) or an
//! `in6_rtmsg` (IPv6). An address or route that already exists is not an
//! error, so a repeated request is harmless.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use hearth_agent_proto::v1::ConfigureNetworkRequest;
use thiserror::Error;

/// Where the kernel lists network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";
/// How long a NIC may take to appear (its driver probes while the agent
/// starts).
const NIC_WAIT: Duration = Duration::from_secs(10);
/// At most this many interfaces, addresses per interface, and routes.
const MAX_ITEMS: usize = 64;

/// Errors of `ConfigureNetwork`.
#[derive(Debug, Error)]
pub enum NetError {
    /// The request is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No interface of the guest has the MAC asked for.
    #[error("no network interface with MAC {0} (is the virtio_net driver loaded?)")]
    NoInterface(String),
    /// A system call failed.
    #[error("{op} {ifname}")]
    System {
        /// What was being done.
        op: &'static str,
        /// The interface (or address, route) concerned.
        ifname: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> NetError {
    NetError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.1.2.3/24` or `fd00::1/64`; the prefix is required.
    pub fn parse(field: &'static str, s: &str) -> Result<Cidr, NetError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid(field, format!("{s:?} is not in CIDR form (a.b.c.d/n)")))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| invalid(field, format!("{s:?}: {addr:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| invalid(field, format!("{s:?}: the prefix must be 0-{max}")))?;
        Ok(Cidr { addr, prefix })
    }

    /// The IPv4 netmask of the prefix.
    fn v4_mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }
}

/// One interface to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The NIC's MAC.
    pub mac: [u8; 6],
    /// The name to give it; `None` keeps it.
    pub name: Option<String>,
    /// The MTU to set; `None` keeps it.
    pub mtu: Option<u32>,
    /// Addresses to add.
    pub addresses: Vec<Cidr>,
}

/// One route to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub destination: Cidr,
    /// Next hop; `None` is on-link.
    pub gateway: Option<IpAddr>,
    /// Output interface (its name after renaming).
    pub device: String,
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Interfaces, in request order.
    pub interfaces: Vec<Interface>,
    /// Routes, added in request order (on-link ones before the routes
    /// through a gateway they reach).
    pub routes: Vec<Route>,
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let bad = || {
        invalid(
            "interfaces.mac",
            format!("{s:?} is not a MAC like aa:bb:cc:dd:ee:ff"),
        )
    };
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in &mut out {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

fn check_ifname(field: &'static str, name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} must be 1-15 bytes without '/', ':' or spaces"),
        ))
    }
}

impl Plan {
    /// Checks every field of `req`.
    pub fn parse(req: &ConfigureNetworkRequest) -> Result<Plan, NetError> {
        if req.interfaces.len() > MAX_ITEMS || req.routes.len() > MAX_ITEMS {
            return Err(invalid(
                "interfaces",
                format!("at most {MAX_ITEMS} interfaces and {MAX_ITEMS} routes"),
            ));
        }
        let mut interfaces = Vec::new();
        for i in &req.interfaces {
            if i.addresses.len() > MAX_ITEMS {
                return Err(invalid(
                    "interfaces.addresses",
                    format!("at most {MAX_ITEMS} per interface"),
                ));
            }
            let name = (!i.name.is_empty()).then(|| i.name.clone());
            if let Some(n) = &name {
                check_ifname("interfaces.name", n)?;
            }
            if i.mtu != 0 && !(68..=65535).contains(&i.mtu) {
                return Err(invalid(
                    "interfaces.mtu",
                    format!("{} is outside 68-65535", i.mtu),
                ));
            }
            let addresses = i
                .addresses
                .iter()
                .map(|a| Cidr::parse("interfaces.addresses", a))
                .collect::<Result<Vec<_>, _>>()?;
            interfaces.push(Interface {
                mac: parse_mac(&i.mac)?,
                name,
                mtu: (i.mtu != 0).then_some(i.mtu),
                addresses,
            });
        }
        let mut routes = Vec::new();
        for r in &req.routes {
            let destination = Cidr::parse("routes.destination", &r.destination)?;
            let gateway = match r.gateway.as_str() {
                "" => None,
                g => {
                    let ip: IpAddr = g.parse().map_err(|_| {
                        invalid("routes.gateway", format!("{g:?} is not an IP address"))
                    })?;
                    if ip.is_ipv4() != destination.addr.is_ipv4() {
                        return Err(invalid(
                            "routes.gateway",
                            format!("{g} is not of the family of {}", r.destination),
                        ));
                    }
                    Some(ip)
                }
            };
            check_ifname("routes.device", &r.device)?;
            routes.push(Route {
                destination,
                gateway,
                device: r.device.clone(),
            });
        }
        Ok(Plan { interfaces, routes })
    }
}

/// Applies `req` to the guest's interfaces and routes.
pub async fn configure(req: ConfigureNetworkRequest) -> Result<(), NetError> {
    let plan = Plan::parse(&req)?;
    tokio::task::spawn_blocking(move || apply(&plan, Path::new(SYS_CLASS_NET)))
        .await
        .map_err(|e| NetError::System {
            op: "configure",
            ifname: "the network".into(),
            source: io::Error::other(e.to_string()),
        })?
}

/// Applies a checked plan (blocking).
fn apply(plan: &Plan, sys_class_net: &Path) -> Result<(), NetError> {
    let v4 = Socket::new(libc::AF_INET).map_err(sys("open an AF_INET socket for", "lo"))?;
    v4.set_up("lo")?;
    for i in &plan.interfaces {
        let mac = format_mac(&i.mac);
        let mut name = wait_for_mac(sys_class_net, &i.mac, NIC_WAIT)?
            .ok_or_else(|| NetError::NoInterface(mac.clone()))?;
        if let Some(want) = &i.name {
            if *want != name {
                v4.set_down(&name)?;
                v4.rename(&name, want)?;
                name = want.clone();
            }
        }
        if let Some(mtu) = i.mtu {
            v4.set_mtu(&name, mtu)?;
        }
        v4.set_up(&name)?;
        let mut v4_count = 0;
        for a in &i.addresses {
            match a.addr {
                IpAddr::V4(ip) => {
                    // The ioctl interface keeps one IPv4 address per label.
                    let label = match v4_count {
                        0 => name.clone(),
                        n => format!("{name}:{n}"),
                    };
                    check_ifname("interfaces.addresses", &label)?;
                    v4.add_v4_address(&label, ip, a.v4_mask())?;
                    v4_count += 1;
                }
                IpAddr::V6(ip) => {
                    let v6 = Socket::new(libc::AF_INET6)
                        .map_err(sys("open an AF_INET6 socket for", &name))?;
                    v6.add_v6_address(&name, ip, a.prefix)?;
                }
            }
        }
        tracing::info!(ifname = %name, %mac, addresses = i.addresses.len(), "interface configured");
    }
    for r in &plan.routes {
        match (r.destination.addr, r.gateway) {
            (IpAddr::V4(dst), gw) => {
                let gw = match gw {
                    Some(IpAddr::V4(g)) => Some(g),
                    _ => None,
                };
                v4.add_v4_route(dst, r.destination.v4_mask(), gw, &r.device)?;
            }
            (IpAddr::V6(dst), gw) => {
                let gw = match gw {
                    Some(IpAddr::V6(g)) => Some(g),
                    _ => None,
                };
                let v6 = Socket::new(libc::AF_INET6)
                    .map_err(sys("open an AF_INET6 socket for", &r.device))?;
                v6.add_v6_route(dst, r.destination.prefix, gw, &r.device)?;
            }
        }
    }
    if !plan.routes.is_empty() {
        tracing::info!(routes = plan.routes.len(), "routes added");
    }
    Ok(())
}

fn sys<'a>(op: &'static str, ifname: &'a str) -> impl FnOnce(io::Error) -> NetError + 'a {
    move |source| NetError::System {
        op,
        ifname: ifname.to_owned(),
        source,
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface whose `address` is `mac`, waiting up to `wait` for it.
fn wait_for_mac(dir: &Path, mac: &[u8; 6], wait: Duration) -> Result<Option<String>, NetError> {
    let end = Instant::now() + wait;
    loop {
        if let Some(name) =
            find_by_mac(dir, mac).map_err(sys("list", &dir.display().to_string()))?
        {
            return Ok(Some(name));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The interface under `dir` (`/sys/class/net`) whose `address` is `mac`.
pub fn find_by_mac(dir: &Path, mac: &[u8; 6]) -> io::Result<Option<String>> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(text) = std::fs::read_to_string(entry.path().join("address")) else {
            continue;
        };
        if parse_mac(text.trim()).is_ok_and(|m| m == *mac) {
            return Ok(Some(entry.file_name().to_string_lossy().into_owned()));
        }
    }
    Ok(None)
}

/// The kernel's `struct rtentry` (`<linux/route.h>`; glibc's libc crate
/// does not define it).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// The kernel's `struct in6_rtmsg` (`<linux/ipv6_route.h>`; the libc
/// crate's has private fields).
#[repr(C)]
struct In6Rtmsg {
    rtmsg_dst: libc::in6_addr,
    rtmsg_src: libc::in6_addr,
    rtmsg_gateway: libc::in6_addr,
    rtmsg_type: u32,
    rtmsg_dst_len: u16,
    rtmsg_src_len: u16,
    rtmsg_metric: u32,
    rtmsg_info: libc::c_ulong,
    rtmsg_flags: u32,
    rtmsg_ifindex: libc::c_int,
}

/// `RTF_UP`, `RTF_GATEWAY`, `RTF_HOST` as the route ioctls take them.
const RTF_UP: u16 = libc::RTF_UP;
const RTF_GATEWAY: u16 = libc::RTF_GATEWAY;
const RTF_HOST: u16 = libc::RTF_HOST;

fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // both are plain old data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn in6(ip: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: ip.octets(),
    }
}

/// An `ifreq` for `name` (checked by [`check_ifname`] or read from sysfs).
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

/// A datagram socket to issue interface ioctls on.
struct Socket(OwnedFd);

fn already_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

impl Socket {
    fn new(family: libc::c_int) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `ioctl(fd, op, arg)` on a struct the caller owns.
    fn ioctl<T>(&self, op: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: every caller passes the struct the ioctl `op` expects,
        // valid for the duration of the call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), op, std::ptr::from_mut(arg)) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn flags(&self, name: &str) -> io::Result<libc::ifreq> {
        let mut req = ifreq(name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        Ok(req)
    }

    fn set_flag(&self, name: &str, up: bool) -> Result<(), NetError> {
        let op = if up { "bring up" } else { "bring down" };
        let set = || -> io::Result<()> {
            let mut req = self.flags(name)?;
            // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
            let flags = unsafe { req.ifr_ifru.ifru_flags };
            let up_flag = libc::IFF_UP as libc::c_short;
            let want = if up {
                flags | up_flag
            } else {
                flags & !up_flag
            };
            if want == flags {
                return Ok(());
            }
            req.ifr_ifru.ifru_flags = want;
            self.ioctl(libc::SIOCSIFFLAGS, &mut req)
        };
        set().map_err(sys(op, name))
    }

    fn set_up(&self, name: &str) -> Result<(), NetError> {
        self.set_flag(name, true)
    }

    fn set_down(&self, name: &str) -> Result<(), NetError> {
        self.set_flag(name, false)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), NetError> {
        let run = || -> io::Result<()> {
            let mut req = ifreq(from)?;
            let new = ifreq(to)?;
            req.ifr_ifru.ifru_newname = new.ifr_name;
            self.ioctl(libc::SIOCSIFNAME, &mut req)
        };
        run().map_err(|source| NetError::System {
            op: "rename",
            ifname: format!("{from} to {to}"),
            source,
        })
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), NetError> {
        let run = || -> io::Result<()> {
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_mtu =
                i32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            self.ioctl(libc::SIOCSIFMTU, &mut req)
        };
        run().map_err(sys("set the MTU of", name))
    }

    fn add_v4_address(&self, label: &str, ip: Ipv4Addr, mask: Ipv4Addr) -> Result<(), NetError> {
        let run = || -> io::Result<()> {
            let mut req = ifreq(label)?;
            req.ifr_ifru.ifru_addr = sockaddr_v4(ip);
            self.ioctl(libc::SIOCSIFADDR, &mut req)?;
            let mut req = ifreq(label)?;
            req.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
            self.ioctl(libc::SIOCSIFNETMASK, &mut req)
        };
        run().map_err(|source| NetError::System {
            op: "add address",
            ifname: format!("{ip} to {label}"),
            source,
        })
    }

    fn ifindex(&self, name: &str) -> io::Result<libc::c_int> {
        let mut req = ifreq(name)?;
        self.ioctl(libc::SIOCGIFINDEX, &mut req)?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
        Ok(unsafe { req.ifr_ifru.ifru_ifindex })
    }

    fn add_v6_address(&self, name: &str, ip: Ipv6Addr, prefix: u8) -> Result<(), NetError> {
        let run = || -> io::Result<()> {
            let mut req = libc::in6_ifreq {
                ifr6_addr: in6(ip),
                ifr6_prefixlen: u32::from(prefix),
                ifr6_ifindex: self.ifindex(name)?,
            };
            match self.ioctl(libc::SIOCSIFADDR, &mut req) {
                Err(e) if !already_exists(&e) => Err(e),
                _ => Ok(()),
            }
        };
        run().map_err(|source| NetError::System {
            op: "add address",
            ifname: format!("{ip}/{prefix} to {name}"),
            source,
        })
    }

    fn add_v4_route(
        &self,
        dst: Ipv4Addr,
        mask: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
        device: &str,
    ) -> Result<(), NetError> {
        let dev = CString::new(device).map_err(|_| invalid("routes.device", device))?;
        let mut flags = RTF_UP;
        if gateway.is_some() {
            flags |= RTF_GATEWAY;
        }
        if mask == Ipv4Addr::BROADCAST {
            flags |= RTF_HOST;
        }
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_v4(dst),
            rt_gateway: sockaddr_v4(gateway.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            rt_genmask: sockaddr_v4(mask),
            rt_flags: flags,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            // The kernel only reads the name.
            rt_dev: dev.as_ptr().cast_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        match self.ioctl(libc::SIOCADDRT, &mut rt) {
            Err(e) if !already_exists(&e) => Err(NetError::System {
                op: "add route",
                ifname: route_text(
                    &IpAddr::V4(dst),
                    mask_len(mask),
                    gateway.map(IpAddr::V4),
                    device,
                ),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn add_v6_route(
        &self,
        dst: Ipv6Addr,
        prefix: u8,
        gateway: Option<Ipv6Addr>,
        device: &str,
    ) -> Result<(), NetError> {
        let text = route_text(&IpAddr::V6(dst), prefix, gateway.map(IpAddr::V6), device);
        let run = || -> io::Result<()> {
            let mut flags = u32::from(RTF_UP);
            if gateway.is_some() {
                flags |= u32::from(RTF_GATEWAY);
            }
            if prefix == 128 {
                flags |= u32::from(RTF_HOST);
            }
            let mut rt = In6Rtmsg {
                rtmsg_dst: in6(dst),
                rtmsg_src: in6(Ipv6Addr::UNSPECIFIED),
                rtmsg_gateway: in6(gateway.unwrap_or(Ipv6Addr::UNSPECIFIED)),
                rtmsg_type: 0,
                rtmsg_dst_len: u16::from(prefix),
                rtmsg_src_len: 0,
                rtmsg_metric: 1,
                rtmsg_info: 0,
                rtmsg_flags: flags,
                rtmsg_ifindex: self.ifindex(device)?,
            };
            match self.ioctl(libc::SIOCADDRT, &mut rt) {
                Err(e) if !already_exists(&e) => Err(e),
                _ => Ok(()),
            }
        };
        run().map_err(|source| NetError::System {
            op: "add route",
            ifname: text,
            source,
        })
    }
}

fn mask_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).count_ones() as u8
}

fn route_text(dst: &IpAddr, prefix: u8, gateway: Option<IpAddr>, device: &str) -> String {
    match gateway {
        Some(g) => format!("{dst}/{prefix} via {g} dev {device}"),
        None => format!("{dst}/{prefix} dev {device}"),
    }
}

#[cfg(test)]
mod tests;
