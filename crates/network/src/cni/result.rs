//! CNI ADD results (spec versions 0.3.x, 0.4.0 and 1.x share one shape).
//!
//! Parsing is strict about the fields Hearth uses (addresses must parse) and
//! lenient about everything else: unknown fields are ignored here, and the
//! plugin's raw JSON is kept alongside so `prevResult` chaining and DEL pass
//! on exactly what the plugin said.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Result versions this crate understands.
pub const SUPPORTED_RESULT_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// An address with its prefix length, such as `10.88.0.5/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (0–32 for IPv4, 0–128 for IPv6).
    pub prefix_len: u8,
}

impl IpNet {
    /// Whether this is an IPv4 address.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| format!("{s:?}: bad prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(IpNet { addr, prefix_len })
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One interface a plugin created or configured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniInterface {
    /// Interface name.
    pub name: String,
    /// MAC address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU, if reported (CNI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the pod; absent for host ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl CniInterface {
    /// Whether the interface lives inside the pod's namespace.
    pub fn in_sandbox(&self) -> bool {
        self.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// One address assigned by the plugin chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniIpConfig {
    /// Address with prefix.
    pub address: IpNet,
    /// Gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route the plugin chain set up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniRoute {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; absent means the default gateway of the address family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings from the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniDns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A parsed CNI result (0.3.x / 0.4.0 / 1.x).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The result's spec version.
    pub cni_version: String,
    /// Interfaces created or configured.
    #[serde(default)]
    pub interfaces: Vec<CniInterface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<CniIpConfig>,
    /// Routes set up.
    #[serde(default)]
    pub routes: Vec<CniRoute>,
    /// DNS settings.
    #[serde(default)]
    pub dns: CniDns,
}

impl CniResult {
    /// Parses a plugin's stdout. Errors describe what is wrong, for
    /// [`crate::NetworkError::MalformedResult`].
    pub fn parse(raw: &[u8]) -> Result<(CniResult, serde_json::Value), String> {
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
        if !value.is_object() {
            return Err("not a JSON object".to_string());
        }
        let result: CniResult = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        if !SUPPORTED_RESULT_VERSIONS.contains(&result.cni_version.as_str()) {
            return Err(format!(
                "unsupported cniVersion {:?} (supported: {})",
                result.cni_version,
                SUPPORTED_RESULT_VERSIONS.join(", ")
            ));
        }
        if let Some(bad) = result
            .ips
            .iter()
            .filter_map(|ip| ip.interface)
            .find(|i| *i >= result.interfaces.len())
        {
            return Err(format!("ips refer to interface {bad}, which is not listed"));
        }
        Ok((result, value))
    }

    /// The pod's addresses on interface `ifname`, IPv4 first (the first one
    /// is the pod's primary IP, the rest are its additional IPs).
    ///
    /// Addresses without an interface index, or on an interface inside the
    /// sandbox with that name, count; host-side interfaces do not.
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpNet> {
        let mut ips: Vec<IpNet> = self
            .ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    None => true,
                    Some(iface) => iface.in_sandbox() && iface.name == ifname,
                },
            )
            .map(|ip| ip.address)
            .collect();
        ips.sort_by_key(|ip| !ip.is_ipv4());
        ips
    }
}

/// The error object a failing plugin prints on stdout.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct CniErrorReply {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{
      "cniVersion": "1.0.0",
      "interfaces": [
        {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
        {"name": "veth1", "mac": "aa:bb:cc:00:00:02"},
        {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/run/netns/x"}
      ],
      "ips": [
        {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
        {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
        {"address": "10.99.0.1/16", "interface": 0}
      ],
      "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0"}],
      "dns": {"nameservers": ["10.96.0.10"], "unknown": 1},
      "extra": true
    }"#;

    const V04: &str = r#"{
      "cniVersion": "0.4.0",
      "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
      "ips": [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}],
      "dns": {}
    }"#;

    #[test]
    fn parses_1_0_dual_stack_ipv4_first() {
        let (r, raw) = CniResult::parse(V1.as_bytes()).unwrap();
        assert_eq!(raw["extra"], true);
        let ips = r.pod_ips("eth0");
        assert_eq!(
            ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            ["10.88.0.5/16", "fd00::5/64"]
        );
        assert_eq!(r.routes[1].gw, None);
        assert_eq!(r.dns.nameservers, ["10.96.0.10"]);
    }

    #[test]
    fn parses_0_4() {
        let (r, _) = CniResult::parse(V04.as_bytes()).unwrap();
        assert_eq!(r.pod_ips("eth0")[0].to_string(), "10.1.2.3/24");
        assert!(r.routes.is_empty());
    }

    #[test]
    fn rejects_bad_results() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"cniVersion": "0.2.0", "ip4": {}}"#,
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}"#,
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/33"}]}"#,
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 3}]}"#,
            r#"{"cniVersion": 1}"#,
        ] {
            assert!(CniResult::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipnet_round_trips() {
        let n: IpNet = "fd00::1/64".parse().unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"fd00::1/64\"");
        assert!("10.0.0.1/x".parse::<IpNet>().is_err());
    }
}
