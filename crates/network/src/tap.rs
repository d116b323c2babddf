//! A tap device inside the pod's network namespace, joined to the CNI
//! interface by tc: an `ingress` qdisc on each side and a `u32` match-all
//! filter whose `mirred egress redirect` action sends every frame to the
//! other device (Kata Containers' "tcfilter" model). The VM's NIC uses the
//! tap; the guest takes the CNI interface's MAC and addresses, so nothing
//! outside the pod can tell a VM from a container.
//!
//! The tap is made with `/dev/net/tun` ioctls (`TUNSETIFF`, `TUNSETOWNER`,
//! `TUNSETPERSIST`: the kernel does not create tun devices over rtnetlink);
//! everything else is rtnetlink (qdiscs, filters, link state, addresses,
//! routes). No `tc` or `ip` binary is needed.
//!
//! All netlink work runs on a dedicated thread that joined the namespace
//! (see [`crate::run_in_netns`]), with its own single-threaded runtime.

use std::fs::OpenOptions;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteType};
use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::cni::result::IpNet;
use crate::error::NetworkError;
use crate::netns::run_in_netns;

/// `tcm_handle` of an ingress qdisc (`ffff:`).
const INGRESS_HANDLE: u32 = 0xffff_0000;
/// Main routing table.
const RT_TABLE_MAIN: u8 = 254;

/// A route the guest should install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop, if not on-link.
    pub gateway: Option<IpAddr>,
}

/// What the guest needs to take over the pod's CNI interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapInfo {
    /// The tap device (give it to the VMM as `host_dev_name`).
    pub tap_name: String,
    /// The CNI interface the tap is mirrored with.
    pub cni_ifname: String,
    /// The CNI interface's MAC: the guest NIC must use it.
    pub mac: String,
    /// The CNI interface's MTU (the tap gets the same).
    pub mtu: u32,
    /// Global addresses on the CNI interface, with prefixes.
    pub ips: Vec<IpNet>,
    /// Routes via the CNI interface (main table, not the kernel's
    /// per-prefix ones).
    pub routes: Vec<TapRoute>,
    /// IPv4 default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
}

/// Who may attach to a tap without `CAP_NET_ADMIN` (`TUNSETOWNER`,
/// `TUNSETGROUP`): the VMM's uid and gid when it runs unprivileged (the
/// jailer's Firecracker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapOwner {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid; `None` sets no group.
    pub gid: Option<u32>,
}

impl TapOwner {
    /// Only `uid` (and root) may attach.
    pub fn uid(uid: u32) -> TapOwner {
        TapOwner { uid, gid: None }
    }
}

/// Creates tap `tap_name` owned by `owner` (`None`: only processes with
/// `CAP_NET_ADMIN` may attach) inside the namespace at `netns_path` and
/// redirects all traffic between it and `cni_ifname`. A link already named
/// `tap_name` is an error and is left alone. On failure, the tap and the
/// qdiscs added are removed again.
pub async fn create_tap_redirect(
    netns_path: &Path,
    cni_ifname: &str,
    tap_name: &str,
    owner: Option<TapOwner>,
) -> Result<TapInfo, NetworkError> {
    check_ifname("cni_ifname", cni_ifname)?;
    check_ifname("tap_name", tap_name)?;
    let (ns, cni, tap) = (
        netns_path.to_path_buf(),
        cni_ifname.to_string(),
        tap_name.to_string(),
    );
    in_netns(netns_path, async move {
        let handle = connect(&ns)?;
        if get_link(&handle, &tap).await?.is_some() {
            return Err(NetworkError::InvalidRequest {
                field: "tap_name",
                reason: format!("a link named {tap} already exists in {}", ns.display()),
            });
        }
        match setup(&handle, &ns, &cni, &tap, owner).await {
            Ok(info) => Ok(info),
            Err(e) => {
                teardown(&handle, &cni, &tap).await;
                Err(e)
            }
        }
    })
    .await
}

/// Removes the tap and the ingress qdisc (with its filter) from the CNI
/// interface. Missing pieces, or a missing namespace, are not errors.
pub async fn remove_tap_redirect(
    netns_path: &Path,
    cni_ifname: &str,
    tap_name: &str,
) -> Result<(), NetworkError> {
    let path = netns_path.to_path_buf();
    let alive = tokio::task::spawn_blocking(move || crate::netns::is_nsfs(&path))
        .await
        .unwrap_or(false);
    if !alive {
        return Ok(());
    }
    let (ns, cni, tap) = (
        netns_path.to_path_buf(),
        cni_ifname.to_string(),
        tap_name.to_string(),
    );
    in_netns(netns_path, async move {
        let handle = connect(&ns)?;
        teardown(&handle, &cni, &tap).await;
        Ok(())
    })
    .await
}

/// Runs `fut` on a fresh thread inside the namespace, on a current-thread
/// runtime; awaits it without blocking the caller's runtime.
async fn in_netns<T, F>(netns_path: &Path, fut: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, NetworkError>> + Send + 'static,
{
    let path = netns_path.to_path_buf();
    let path2 = path.clone();
    tokio::task::spawn_blocking(move || {
        run_in_netns(&path, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| NetworkError::netns("start netlink runtime", &path2, e))?;
            rt.block_on(fut)
        })
    })
    .await
    .map_err(|_| NetworkError::WorkerDied {
        path: netns_path.to_path_buf(),
    })?
    .and_then(|r| r)
}

fn connect(netns: &Path) -> Result<Handle, NetworkError> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| NetworkError::netns("open netlink socket", netns, e))?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn setup(
    handle: &Handle,
    netns: &Path,
    cni: &str,
    tap: &str,
    owner: Option<TapOwner>,
) -> Result<TapInfo, NetworkError> {
    let cni_link = get_link(handle, cni)
        .await?
        .ok_or(NetworkError::LinkNotFound {
            ifname: cni.to_string(),
            netns: netns.to_path_buf(),
        })?;
    let cni_index = cni_link.header.index;
    let (mac, mtu) = link_mac_mtu(&cni_link);
    create_persistent_tap(tap, owner).map_err(|e| NetworkError::io("create tap", tap, e))?;
    let tap_index = get_link(handle, tap)
        .await?
        .ok_or(NetworkError::LinkNotFound {
            ifname: tap.to_string(),
            netns: netns.to_path_buf(),
        })?
        .header
        .index;
    let nl = |op, ifname: &str| {
        let ifname = ifname.to_string();
        move |source| NetworkError::Netlink { op, ifname, source }
    };
    let mut tap_msg = LinkUnspec::new_with_index(tap_index).up();
    if mtu > 0 {
        tap_msg = tap_msg.mtu(mtu);
    }
    handle
        .link()
        .set(tap_msg.build())
        .execute()
        .await
        .map_err(nl("set up", tap))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(cni_index).up().build())
        .execute()
        .await
        .map_err(nl("set up", cni))?;
    for (from, from_name, to) in [(cni_index, cni, tap_index), (tap_index, tap, cni_index)] {
        let from_i32 = i32::try_from(from).unwrap_or(i32::MAX);
        handle
            .qdisc()
            .add(from_i32)
            .ingress()
            .execute()
            .await
            .map_err(nl("add ingress qdisc on", from_name))?;
        handle
            .traffic_filter(from_i32)
            .add()
            .parent(INGRESS_HANDLE)
            .protocol((libc::ETH_P_ALL as u16).to_be())
            .redirect(to)
            .map_err(nl("build redirect filter on", from_name))?
            .execute()
            .await
            .map_err(nl("add redirect filter on", from_name))?;
    }
    let ips = addresses(handle, cni_index)
        .await
        .map_err(nl("list addresses of", cni))?;
    let routes = routes(handle, cni_index)
        .await
        .map_err(nl("list routes of", cni))?;
    let default_gw = |v4: bool| {
        routes
            .iter()
            .filter(|r| r.dst.prefix_len == 0 && r.dst.is_ipv4() == v4)
            .find_map(|r| r.gateway)
    };
    let gateway = match default_gw(true) {
        Some(IpAddr::V4(g)) => Some(g),
        _ => None,
    };
    let gateway6 = match default_gw(false) {
        Some(IpAddr::V6(g)) => Some(g),
        _ => None,
    };
    tracing::debug!(tap, cni, ?owner, "tap redirect set up");
    Ok(TapInfo {
        tap_name: tap.to_string(),
        cni_ifname: cni.to_string(),
        mac,
        mtu,
        ips,
        routes,
        gateway,
        gateway6,
    })
}

/// Best effort: delete the tap (its qdisc and filter go with it) and the
/// ingress qdisc of the CNI interface.
async fn teardown(handle: &Handle, cni: &str, tap: &str) {
    if let Ok(Some(link)) = get_link(handle, tap).await {
        if let Err(e) = handle.link().del(link.header.index).execute().await {
            tracing::warn!(tap, error = %e, "delete tap");
        }
    }
    if let Ok(Some(link)) = get_link(handle, cni).await {
        let mut req = handle
            .qdisc()
            .del(i32::try_from(link.header.index).unwrap_or(i32::MAX));
        req.message_mut().header.parent = TcHandle::INGRESS;
        req.message_mut().header.handle = TcHandle::from(INGRESS_HANDLE);
        // ENOENT/EINVAL when there is no ingress qdisc: fine.
        let _ = req.execute().await;
    }
}

async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(source) => Err(NetworkError::Netlink {
            op: "look up",
            ifname: name.to_string(),
            source,
        }),
    }
}

fn link_mac_mtu(link: &LinkMessage) -> (String, u32) {
    let mut mac = String::new();
    let mut mtu = 0;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Address(bytes) => {
                mac = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    (mac, mtu)
}

async fn addresses(handle: &Handle, index: u32) -> Result<Vec<IpNet>, rtnetlink::Error> {
    let mut out = Vec::new();
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = addrs.try_next().await? {
        if msg.header.scope != AddressScope::Universe {
            continue;
        }
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(addr) = addr {
            out.push(IpNet {
                addr,
                prefix_len: msg.header.prefix_len,
            });
        }
    }
    out.sort_by_key(|ip| !ip.is_ipv4());
    Ok(out)
}

async fn routes(handle: &Handle, index: u32) -> Result<Vec<TapRoute>, rtnetlink::Error> {
    let mut out = Vec::new();
    let queries = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    for query in queries {
        let mut stream = handle.route().get(query).execute();
        while let Some(msg) = stream.try_next().await? {
            let h = &msg.header;
            if h.table != RT_TABLE_MAIN
                || h.protocol == RouteProtocol::Kernel
                || h.kind != RouteType::Unicast
            {
                continue;
            }
            let mut oif = None;
            let mut dst = None;
            let mut gateway = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(a) => dst = route_ip(a),
                    RouteAttribute::Gateway(a) => gateway = route_ip(a),
                    _ => {}
                }
            }
            if oif != Some(index) {
                continue;
            }
            let v4 = h.address_family == rtnetlink::packet_route::AddressFamily::Inet;
            let addr = dst.unwrap_or(if v4 {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            });
            out.push(TapRoute {
                dst: IpNet {
                    addr,
                    prefix_len: h.destination_prefix_length,
                },
                gateway,
            });
        }
    }
    Ok(out)
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn check_ifname(field: &'static str, name: &str) -> Result<(), NetworkError> {
    crate::netns::ifreq(name)
        .map(drop)
        .map_err(|_| NetworkError::InvalidRequest {
            field,
            reason: format!("{name:?} must be 1-15 bytes without NUL"),
        })
}

/// Creates a persistent tap named `name` owned by `owner` in the calling
/// thread's network namespace.
fn create_persistent_tap(name: &str, owner: Option<TapOwner>) -> io::Result<()> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = crate::netns::ifreq(name)?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `tun` is an open /dev/net/tun and `req` a valid `ifreq` that
    // outlives the call; TUNSETIFF reads the name and flags, may write the name.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETOWNER, TUNSETGROUP and TUNSETPERSIST take an integer
    // argument by value; `tun` is attached to the device just created.
    let set = |op, arg: libc::c_ulong| unsafe { libc::ioctl(tun.as_raw_fd(), op, arg) };
    let mut ok = true;
    if let Some(o) = owner {
        ok = set(libc::TUNSETOWNER, libc::c_ulong::from(o.uid)) >= 0;
        if let (true, Some(gid)) = (ok, o.gid) {
            ok = set(libc::TUNSETGROUP, libc::c_ulong::from(gid)) >= 0;
        }
    }
    // Not persistent until everything else worked: closing the only fd of
    // a non-persistent tap deletes it.
    if !ok || set(libc::TUNSETPERSIST, 1) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A locally administered unicast MAC derived from `seed` (FNV-1a), for a
/// guest NIC when the CNI interface has no MAC of its own to give (an L3
/// device): the same seed always gives the same address.
pub fn derived_mac(seed: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 0x02: locally administered, not multicast.
    let bytes = [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]];
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_local_unicast() {
        let a = derived_mac(b"0123456789ab");
        assert_eq!(a, derived_mac(b"0123456789ab"));
        assert_ne!(a, derived_mac(b"0123456789ac"));
        assert_eq!(a.len(), 17, "{a}");
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x01, 0, "multicast bit set: {a}");
        assert_eq!(first & 0x02, 0x02, "not locally administered: {a}");
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("tap_name", "tap0").is_ok());
        let err = check_ifname("tap_name", "a-very-long-tap-name").unwrap_err();
        assert!(err.to_string().contains("tap_name"), "{err}");
    }
}
