//! Sandbox backends built into hearthd.
//!
//! - [`namespaces`]: the agent in fresh namespaces on the host.
//! - [`firecracker`]: a jailed Firecracker microVM per pod.
//! - [`qemu`]: a QEMU microvm per pod.
//! - [`loopdev`]: loop devices, the namespaces backend's drives.
//! - [`process`]: pid liveness and reaping of agents hearthd adopted.
//!
//! Shared here: the agent connection loop and the VM backends' guest NIC
//! ([`GuestNic`]: the tap each VM backend creates at boot in the pod's
//! netns and removes at stop and destroy).

pub mod firecracker;
pub mod loopdev;
pub mod namespaces;
pub mod process;
pub mod qemu;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_agent_proto::v1::{ConfigureNetworkRequest, NetworkInterface, NetworkRoute};
use hearth_agent_proto::AGENT_PORT;
use hearth_network::{TapInfo, TapOwner, TapRoute};
use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::BackendError;
use hearth_runtime::Id;
use serde::{Deserialize, Serialize};

/// What a backend sees of its guest between two connection attempts.
pub(crate) enum GuestState {
    /// The guest (or its VMM, or the agent process) is gone: stop waiting.
    Gone(String),
    /// Still starting; the string says what is awaited.
    NotYet(String),
    /// Worth a connection attempt.
    Ready,
}

/// Connects to the agent behind the hybrid-vsock socket `socket`, trying
/// until `deadline` and giving up early when `probe` says the guest is
/// gone. At the deadline, `timed_out` gets the last reason and words the
/// error.
pub(crate) async fn connect_agent_until(
    socket: &Path,
    deadline: Duration,
    mut probe: impl FnMut() -> GuestState,
    timed_out: impl FnOnce(Option<String>) -> String,
) -> Result<AgentClient, BackendError> {
    let end = Instant::now() + deadline;
    let mut last: Option<String> = None;
    loop {
        let state = probe();
        if let GuestState::Gone(reason) = state {
            return Err(BackendError::AgentNotReady { reason });
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BackendError::AgentNotReady {
                reason: timed_out(last),
            });
        }
        if let GuestState::NotYet(why) = state {
            last = Some(why);
        } else {
            match AgentClient::connect(socket, AGENT_PORT, left.min(Duration::from_secs(2))).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::trace!(error = %e, "agent not answering yet");
                    last = Some(crate::cri::status::chain(&e));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10).min(left)).await;
    }
}

/// The pod's CNI interface in its netns (`CNI_IFNAME`, hearth-network's
/// default, which the daemon does not change).
const CNI_IFNAME: &str = "eth0";
/// The VM backends' tap, in the pod's netns (one per netns, so the name
/// never clashes with another pod's).
const TAP_NAME: &str = "tap0";
/// The guest's interface name.
const GUEST_IFNAME: &str = "eth0";

/// The guest NIC of a VM backend, persisted in its handle: a tap in the
/// pod's netns mirrored with the CNI interface by tc (hearth-network's
/// [`create_tap_redirect`](hearth_network::create_tap_redirect)), and what
/// the guest takes over from the CNI interface: its MAC, MTU, addresses and
/// routes. The CNI interface keeps them in the netns, but every frame
/// reaching it goes to the guest and back, so the pod's IP answers from the
/// guest's kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GuestNic {
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// What hearth-network read from the CNI interface, and the tap's name.
    pub tap: TapInfo,
    /// The guest NIC's MAC: the CNI interface's, or one derived from the
    /// sandbox id when it has none.
    pub mac: String,
}

impl GuestNic {
    /// Creates the tap in `netns` (owned by `owner`, `None` for a VMM with
    /// `CAP_NET_ADMIN`) for sandbox `id`. `None` when the pod's network
    /// gave it no CNI interface (e.g. a loopback-only network): the guest
    /// then has no NIC.
    pub async fn create(
        id: &Id,
        netns: &Path,
        owner: Option<TapOwner>,
    ) -> Result<Option<GuestNic>, BackendError> {
        let tap = match hearth_network::create_tap_redirect(netns, CNI_IFNAME, TAP_NAME, owner)
            .await
        {
            Ok(tap) => tap,
            Err(hearth_network::NetworkError::LinkNotFound { ifname, .. })
                if ifname == CNI_IFNAME =>
            {
                tracing::info!(
                    "the pod's network has no {CNI_IFNAME} (no CNI interface): the guest gets no NIC"
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(BackendError::Network {
                    what: format!("creating the VM's tap {TAP_NAME} in {}", netns.display()),
                    reason: crate::cri::status::chain(&e),
                })
            }
        };
        let mac = match tap.mac.as_str() {
            "" | "00:00:00:00:00:00" => hearth_network::derived_mac(id.as_str().as_bytes()),
            m => m.to_owned(),
        };
        tracing::info!(tap = %tap.tap_name, %mac, ips = ?tap.ips, "guest NIC tap created");
        Ok(Some(GuestNic {
            netns: netns.to_owned(),
            tap,
            mac,
        }))
    }

    /// Removes the tap and the redirect (idempotent; a missing netns or
    /// CNI interface is fine).
    pub async fn remove(&self) -> Result<(), BackendError> {
        hearth_network::remove_tap_redirect(&self.netns, &self.tap.cni_ifname, &self.tap.tap_name)
            .await
            .map_err(|e| BackendError::Network {
                what: format!("removing the VM's tap {}", self.tap.tap_name),
                reason: crate::cri::status::chain(&e),
            })
    }

    /// The agent's `ConfigureNetwork` request: the NIC renamed `eth0` with
    /// the CNI interface's MTU and addresses, then its routes (on-link ones
    /// first, so that gateways are reachable when their routes are added).
    pub fn request(&self) -> ConfigureNetworkRequest {
        let mut routes: Vec<&TapRoute> = self.tap.routes.iter().collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        ConfigureNetworkRequest {
            interfaces: vec![NetworkInterface {
                mac: self.mac.clone(),
                name: GUEST_IFNAME.to_owned(),
                mtu: self.tap.mtu,
                addresses: self.tap.ips.iter().map(ToString::to_string).collect(),
            }],
            routes: routes
                .into_iter()
                .map(|r| NetworkRoute {
                    destination: r.dst.to_string(),
                    gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    device: GUEST_IFNAME.to_owned(),
                })
                .collect(),
        }
    }

    /// Sends [`GuestNic::request`] to the agent, when the guest has a NIC
    /// (a VM backend's `configure_guest`).
    pub async fn configure(
        nic: Option<&GuestNic>,
        agent: &AgentClient,
    ) -> Result<(), BackendError> {
        let Some(nic) = nic else {
            return Ok(());
        };
        agent.configure_network(nic.request()).await?;
        tracing::info!(mac = %nic.mac, "guest network configured");
        Ok(())
    }
}

/// The uids of every process on the host (owners of `/proc/<pid>`).
fn uids_in_use() -> HashSet<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .as_encoded_bytes()
                        .iter()
                        .all(u8::is_ascii_digit)
                })
                .filter_map(|e| e.metadata().ok().map(|m| m.uid()))
                .collect()
        })
        .unwrap_or_default()
}

/// The first uid of `[start, start + count)` that is neither `reserved`
/// (VMs this hearthd is booting or runs) nor the uid of any process.
pub(crate) fn pick_uid(start: u32, count: u32, reserved: &HashSet<u32>) -> Option<u32> {
    let busy = uids_in_use();
    (start..start.saturating_add(count)).find(|u| !reserved.contains(u) && !busy.contains(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_gets_the_cni_interfaces_identity_and_routes_on_link_first() {
        let nic = GuestNic {
            netns: "/run/netns/x".into(),
            tap: TapInfo {
                tap_name: TAP_NAME.into(),
                cni_ifname: CNI_IFNAME.into(),
                mac: "0a:58:0a:01:02:03".into(),
                mtu: 1450,
                ips: vec![
                    "10.1.2.3/24".parse().unwrap(),
                    "fd00::3/64".parse().unwrap(),
                ],
                routes: vec![
                    TapRoute {
                        dst: "0.0.0.0/0".parse().unwrap(),
                        gateway: Some("10.1.2.1".parse().unwrap()),
                    },
                    TapRoute {
                        dst: "10.9.0.0/16".parse().unwrap(),
                        gateway: None,
                    },
                ],
                gateway: Some("10.1.2.1".parse().unwrap()),
                gateway6: None,
            },
            mac: "0a:58:0a:01:02:03".into(),
        };
        let req = nic.request();
        assert_eq!(req.interfaces.len(), 1);
        let i = &req.interfaces[0];
        assert_eq!(
            (i.mac.as_str(), i.name.as_str(), i.mtu),
            ("0a:58:0a:01:02:03", "eth0", 1450)
        );
        assert_eq!(i.addresses, ["10.1.2.3/24", "fd00::3/64"]);
        let routes: Vec<_> = req
            .routes
            .iter()
            .map(|r| {
                (
                    r.destination.as_str(),
                    r.gateway.as_str(),
                    r.device.as_str(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("10.9.0.0/16", "", "eth0"),
                ("0.0.0.0/0", "10.1.2.1", "eth0")
            ]
        );
    }

    #[test]
    fn picks_a_uid_nobody_uses() {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        let reserved: HashSet<u32> = [me + 1].into();
        // Our own uid is busy, the reserved one is skipped.
        let got = pick_uid(me, 50, &reserved).unwrap();
        assert!(got != me && got != me + 1, "{got}");
        assert_eq!(pick_uid(me, 1, &reserved), None);
    }
}
