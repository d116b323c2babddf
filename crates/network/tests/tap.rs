//! Tap + tc redirect in a real network namespace (needs root, /dev/net/tun).

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{in_ns, must, require, run, unique, LinkGuard, Namespaces};
use hearth_network::{
    create_tap_redirect, remove_tap_redirect, run_in_netns, NetworkError, TapOwner,
};

const ETHERTYPE: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental
const OWNER: u32 = 12345;

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

fn is_ours(f: &[u8], payload: &[u8]) -> bool {
    f.len() >= 14 + payload.len() && f[12..14] == ETHERTYPE && f[14..].starts_with(payload)
}

/// Opens the existing tap `name` in the calling thread's namespace.
fn open_tap(name: &str) -> OwnedFd {
    let path = std::ffi::CString::new("/dev/net/tun").unwrap();
    // SAFETY: valid NUL-terminated path; the returned fd is checked.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: fd is /dev/net/tun, req a valid ifreq living across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    assert!(
        rc >= 0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

/// A raw AF_PACKET socket bound to `ifname` in the calling thread's netns.
fn packet_socket(ifname: &str) -> (OwnedFd, libc::sockaddr_ll) {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex(ifname).unwrap();
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    // SAFETY: addr is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(
        rc == 0,
        "bind AF_PACKET: {}",
        std::io::Error::last_os_error()
    );
    (fd, addr)
}

/// Reads frames from non-blocking `fd` until one carries `payload`.
fn wait_for(fd: &OwnedFd, payload: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        // SAFETY: buf is writable for its full length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 && is_ours(&buf[..n as usize], payload) {
            return true;
        }
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_redirect_mirrors_frames_both_ways_and_is_removed() {
    let Some(()) = require(
        "tap_redirect_mirrors_frames_both_ways_and_is_removed",
        &[
            "/dev/net/tun",
            "/usr/bin/nsenter",
            "/usr/sbin/ip",
            "/usr/sbin/tc",
        ],
    ) else {
        return;
    };
    let mut nss = Namespaces::new();
    let ns = nss.create(&unique("tapns"));
    let ns_s = ns.to_str().unwrap().to_string();
    let outside = unique("hvo");
    must(&[
        "ip", "link", "add", "name", &outside, "type", "veth", "peer", "name", "eth0", "netns",
        &ns_s,
    ]);
    let _guard = LinkGuard(outside.clone());
    must(&["ip", "link", "set", &outside, "up"]);
    must(&[
        "nsenter",
        &format!("--net={ns_s}"),
        "ip",
        "addr",
        "add",
        "10.231.7.2/24",
        "dev",
        "eth0",
    ]);
    must(&[
        "nsenter",
        &format!("--net={ns_s}"),
        "ip",
        "link",
        "set",
        "eth0",
        "up",
    ]);
    must(&[
        "nsenter",
        &format!("--net={ns_s}"),
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.231.7.1",
    ]);

    let owner = TapOwner {
        uid: OWNER,
        gid: Some(OWNER + 1),
    };
    let info = create_tap_redirect(&ns, "eth0", "tap0", Some(owner))
        .await
        .unwrap();
    let (_, link) = in_ns(&ns, &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains(&info.mac), "mac {} not in {link}", info.mac);
    assert_eq!(
        info.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        ["10.231.7.2/24"]
    );
    assert_eq!(info.gateway, Some("10.231.7.1".parse().unwrap()));
    assert!(
        info.routes.iter().any(|r| r.dst.prefix_len == 0),
        "{:?}",
        info.routes
    );
    assert!(info.mtu > 0);

    let (_, tap) = in_ns(&ns, &["ip", "-d", "link", "show", "tap0"]);
    assert!(tap.contains(&format!("user {OWNER}")), "tap owner: {tap}");
    assert!(
        tap.contains(&format!("group {}", OWNER + 1)),
        "tap group: {tap}"
    );
    assert!(tap.contains("persist on"), "{tap}");
    for (dev, to) in [("eth0", "tap0"), ("tap0", "eth0")] {
        let (_, f) = in_ns(&ns, &["tc", "filter", "show", "dev", dev, "ingress"]);
        assert!(
            f.contains("protocol all") && f.contains("u32"),
            "{dev}: {f}"
        );
        assert!(
            f.contains(&format!("Egress Redirect to device {to}")),
            "{dev}: {f}"
        );
    }

    // Guest → world: a frame written to the tap leaves through eth0 and
    // shows up on the veth peer outside.
    let tap_fd = run_in_netns(&ns, || open_tap("tap0")).unwrap();
    let (pkt, addr) = packet_socket(&outside);
    let guest_mac = mac_bytes(&info.mac);
    let out_frame = frame([0xff; 6], guest_mac, b"hearth-out");
    // SAFETY: the buffer is valid for its length.
    let n = unsafe {
        libc::write(
            tap_fd.as_raw_fd(),
            out_frame.as_ptr().cast(),
            out_frame.len(),
        )
    };
    assert_eq!(
        n as usize,
        out_frame.len(),
        "{}",
        std::io::Error::last_os_error()
    );
    assert!(
        wait_for(&pkt, b"hearth-out"),
        "frame from tap never reached the veth peer"
    );

    // World → guest: a frame sent into the veth arrives on the tap.
    let in_frame = frame(guest_mac, [0x02, 0, 0, 0, 0, 1], b"hearth-in");
    // SAFETY: buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            pkt.as_raw_fd(),
            in_frame.as_ptr().cast(),
            in_frame.len(),
            0,
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        n as usize,
        in_frame.len(),
        "{}",
        std::io::Error::last_os_error()
    );
    assert!(
        wait_for(&tap_fd, b"hearth-in"),
        "frame into the veth never reached the tap"
    );
    drop(tap_fd);

    remove_tap_redirect(&ns, "eth0", "tap0").await.unwrap();
    let (exists, _) = in_ns(&ns, &["ip", "link", "show", "tap0"]);
    assert!(!exists, "tap0 survived removal");
    let (_, q) = in_ns(&ns, &["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(!q.contains("ingress"), "ingress qdisc survived: {q}");
    remove_tap_redirect(&ns, "eth0", "tap0").await.unwrap();
}

#[tokio::test]
async fn tap_failures_leave_nothing() {
    let Some(()) = require(
        "tap_failures_leave_nothing",
        &["/dev/net/tun", "/usr/bin/nsenter"],
    ) else {
        return;
    };
    let mut nss = Namespaces::new();
    let ns = nss.create(&unique("tapfail"));
    let err = create_tap_redirect(&ns, "eth9", "tap0", Some(TapOwner::uid(OWNER)))
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::LinkNotFound { .. }), "{err}");
    assert!(err.to_string().contains("eth9"), "{err}");
    let (_, links) = in_ns(&ns, &["ip", "-o", "link", "show"]);
    assert!(!links.contains("tap0"), "{links}");

    // A name clash is an error naming the tap, and the link that was there
    // first stays.
    let ns_s = ns.to_str().unwrap().to_string();
    must(&[
        "nsenter",
        &format!("--net={ns_s}"),
        "ip",
        "link",
        "add",
        "tap0",
        "type",
        "bridge",
    ]);
    let err = create_tap_redirect(&ns, "eth0", "tap0", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::InvalidRequest { .. }) && err.to_string().contains("tap0"),
        "{err}"
    );
    let (exists, _) = in_ns(&ns, &["ip", "link", "show", "tap0"]);
    assert!(exists, "the clashing link was removed");

    // A missing namespace: create fails naming it, removal is a no-op.
    let gone = Path::new("/nonexistent/netns");
    let err = create_tap_redirect(gone, "eth0", "tap0", Some(TapOwner::uid(OWNER)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    remove_tap_redirect(gone, "eth0", "tap0").await.unwrap();
    let _ = run(&["true"]);
}
