//! Pod networking for Hearth: named network namespaces, CNI plugins, and the
//! tap + tc redirect that connects a Firecracker VM to the pod's CNI
//! interface.
//!
//! Layout:
//! - [`netns`]: [`NetnsManager`] creates and removes bind-mounted network
//!   namespaces (what `ip netns add/delete` does) without ever moving the
//!   calling thread; [`run_in_netns`] runs a closure on a helper thread
//!   inside one.
//! - [`cni`]: [`Cni`] runs the CNI plugin chain from the conf dir for a pod
//!   ([`Cni::setup`] → [`PodNetwork`], which the daemon persists;
//!   [`Cni::teardown`] with that record), and reports readiness
//!   ([`Cni::status`]). Submodules: `config` (conf dir loading), `exec`
//!   (one plugin run: environment, stdin, timeout, CNI error object),
//!   `result` (CNI 0.3/0.4/1.x results).
//! - [`tap`]: [`create_tap_redirect`] makes a tap owned by the VMM's uid in
//!   the pod namespace and mirrors it with the CNI interface through tc
//!   ingress `u32` + `mirred` redirect filters (rtnetlink; no `tc` binary),
//!   returning what the guest needs ([`TapInfo`]).
//! - [`error`]: [`NetworkError`], the one error type of the crate.
//!
//! Typical use by the daemon (RunPodSandbox, unless the pod uses the host
//! network), each step undone in reverse order on failure and at removal:
//!
//! ```text
//! netns  = NetnsManager::create(sandbox_id)            remove(sandbox_id)
//! net    = Cni::setup(&PodNetworkRequest{..netns..})   Cni::teardown(&net, netns)
//!          persist `net` (serde) with the sandbox     (teardown_unrecorded if never persisted)
//! tap    = create_tap_redirect(netns, "eth0",         remove_tap_redirect(netns, "eth0", tap)
//!                              tap, owner)             (VM backends, at boot / stop + destroy)
//! ```
//!
//! Threads: namespace work always happens on a dedicated short-lived
//! `std::thread` that exits afterwards, never on a tokio worker. Plugins run
//! through `tokio::process` with a time limit. [`NetnsManager`] calls and
//! [`Cni::status`] block briefly (syscalls, small file reads): async callers
//! wrap them in `spawn_blocking`.
//!
//! Not implemented: the CNI `CHECK`, `GC` and `STATUS` verbs, and result
//! conversion between spec versions (a chain is expected to speak one
//! version; results of 0.3.0–1.1.0 are parsed).
//!
//! Host requirements: CNI plugins (Debian `containernetworking-plugins`,
//! in `/usr/lib/cni`); `portmap` needs `iptables` (Debian `iptables`) and
//! sets `route_localnet` itself for `127.0.0.1` host ports; the kernel needs
//! `sch_ingress`, `cls_u32`, `act_mirred` and `tun` for [`tap`].
#![warn(missing_docs)]

pub mod cni;
pub mod error;
pub mod netns;
pub mod tap;

pub use cni::config::{load_network_config, CniConfig, NetworkConfigList};
pub use cni::result::{CniResult, IpNet};
pub use cni::{
    AttachedNetwork, Bandwidth, Cni, DnsConfig, PodNetwork, PodNetworkRequest, PortMapping,
    Protocol,
};
pub use error::NetworkError;
pub use netns::{run_in_netns, NetnsManager, DEFAULT_NETNS_DIR};
pub use tap::{create_tap_redirect, derived_mac, remove_tap_redirect, TapInfo, TapOwner, TapRoute};
