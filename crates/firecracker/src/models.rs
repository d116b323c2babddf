//! Request and response bodies of the Firecracker API, written from the
//! `definitions` of Firecracker's `swagger/firecracker.yaml` (v1.8 – v1.16).
//!
//! Only the endpoints Hearth uses are modelled. Optional fields are skipped
//! when `None` so requests carry exactly what was set; responses tolerate
//! fields added by newer Firecracker releases.

use serde::{Deserialize, Serialize};

/// `PUT /machine-config` (swagger `MachineConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Number of vCPUs (1 or an even number, at most 32).
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Dirty page tracking, for diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// `None` or `2M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
    /// Deprecated static CPU template name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
}

/// `PUT /boot-source` (swagger `BootSource`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// Host path of the kernel (ELF vmlinux on x86_64).
    pub kernel_image_path: String,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Host path of the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// A token bucket of a [`RateLimiter`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Bucket capacity.
    pub size: u64,
    /// Milliseconds to refill the bucket.
    pub refill_time: u64,
    /// Initial extra burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
}

/// Bandwidth and ops limits (swagger `RateLimiter`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Bytes per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// Caching strategy of a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are ignored (Firecracker's default).
    Unsafe,
    /// Flushes reach the host file.
    Writeback,
}

/// IO engine of a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking reads and writes (default).
    Sync,
    /// io_uring (host ≥ 5.10.51).
    Async,
}

/// `PUT /drives/{drive_id}` (swagger `Drive`, virtio-block flavour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Drive id (also the path segment).
    pub drive_id: String,
    /// Whether the guest boots from it.
    pub is_root_device: bool,
    /// Read-only; fixed at boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Host path of the backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// Partition UUID of a root device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Caching strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// IO engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// Rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// vhost-user-block socket (not used by Hearth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// `PATCH /drives/{drive_id}` (swagger `PartialDrive`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialDrive {
    /// Drive id.
    pub drive_id: String,
    /// New backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// New rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `PUT /vsock` (swagger `Vsock`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// Guest CID (≥ 3).
    pub guest_cid: u32,
    /// Host unix socket Firecracker listens on (`CONNECT <port>`).
    pub uds_path: String,
    /// Deprecated id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

/// `PUT /network-interfaces/{iface_id}` (swagger `NetworkInterface`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Interface id (also the path segment).
    pub iface_id: String,
    /// Host tap device name.
    pub host_dev_name: String,
    /// Guest MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// MTU advertised to the guest (newer Firecracker only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Receive limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Log level of [`Logger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Default.
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
    /// Nothing.
    Off,
}

/// `PUT /logger` (swagger `Logger`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    /// FIFO or file for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Print the level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Print file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Module filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `PUT /metrics` (swagger `Metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// FIFO or file for the JSON metrics.
    pub metrics_path: String,
}

/// `PUT /entropy` (swagger `EntropyDevice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropyDevice {
    /// Rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `PUT /balloon` (swagger `Balloon`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u64,
    /// Deflate under guest memory pressure.
    pub deflate_on_oom: bool,
    /// Statistics refresh interval; 0 disables them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_polling_interval_s: Option<u32>,
    /// Free page hinting (newer Firecracker only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_hinting: Option<bool>,
    /// Free page reporting (newer Firecracker only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_reporting: Option<bool>,
}

/// Actions of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Flush the metrics now.
    FlushMetrics,
    /// Boot the configured VM.
    InstanceStart,
    /// Press Ctrl-Alt-Del (x86 only).
    SendCtrlAltDel,
}

/// `PUT /actions` (swagger `InstanceActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    /// The action.
    pub action_type: ActionType,
}

/// `GET /` (swagger `InstanceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name (`Firecracker`).
    pub app_name: String,
    /// Instance id (`--id`).
    pub id: String,
    /// `Not started`, `Running` or `Paused`.
    pub state: String,
    /// Firecracker version, e.g. `1.16.1`.
    pub vmm_version: String,
}

impl InstanceInfo {
    /// Whether the guest has been started (and not paused).
    pub fn is_running(&self) -> bool {
        self.state == "Running"
    }
}

/// `GET /vm/config` (swagger `FullVmConfiguration`); sections Hearth does not
/// model (cpu-config, mmds, pmem, memory hot-plug) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    /// Balloon, when configured.
    #[serde(default)]
    pub balloon: Option<Balloon>,
    /// Block devices.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub drives: Vec<Drive>,
    /// Boot source.
    #[serde(default, rename = "boot-source")]
    pub boot_source: Option<BootSource>,
    /// Logger.
    #[serde(default)]
    pub logger: Option<Logger>,
    /// Machine configuration.
    #[serde(default, rename = "machine-config")]
    pub machine_config: Option<MachineConfig>,
    /// Metrics.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Network interfaces.
    #[serde(
        default,
        rename = "network-interfaces",
        deserialize_with = "null_as_empty"
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    /// vsock device.
    #[serde(default)]
    pub vsock: Option<Vsock>,
    /// Entropy device.
    #[serde(default)]
    pub entropy: Option<EntropyDevice>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Error body of every failed request (swagger `Error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Firecracker's description of what went wrong.
    pub fault_message: String,
}

#[cfg(test)]
#[path = "models_tests.rs"]
mod tests;
