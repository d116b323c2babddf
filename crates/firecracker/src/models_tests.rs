use super::*;
use serde_json::{json, Value};

fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    v: &T,
    expect: Value,
) {
    let got = serde_json::to_value(v).unwrap();
    assert_eq!(got, expect);
    let back: T = serde_json::from_value(expect).unwrap();
    assert_eq!(&back, v);
}

#[test]
fn machine_config_shape() {
    round_trip(
        &MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 1024,
            smt: Some(false),
            ..Default::default()
        },
        json!({"vcpu_count": 2, "mem_size_mib": 1024, "smt": false}),
    );
}

#[test]
fn boot_source_shape() {
    round_trip(
        &BootSource {
            kernel_image_path: "./vmlinux.bin".into(),
            boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
            initrd_path: None,
        },
        json!({"kernel_image_path": "./vmlinux.bin", "boot_args": "console=ttyS0 reboot=k panic=1"}),
    );
}

#[test]
fn drive_shapes() {
    round_trip(
        &Drive {
            drive_id: "rootfs".into(),
            path_on_host: Some("/img/rootfs.ext4".into()),
            is_root_device: true,
            is_read_only: Some(false),
            cache_type: Some(CacheType::Unsafe),
            io_engine: Some(IoEngine::Sync),
            rate_limiter: Some(RateLimiter {
                bandwidth: Some(TokenBucket {
                    size: 1000,
                    refill_time: 100,
                    one_time_burst: None,
                }),
                ops: None,
            }),
            ..Default::default()
        },
        json!({"drive_id": "rootfs", "path_on_host": "/img/rootfs.ext4", "is_root_device": true,
               "is_read_only": false, "cache_type": "Unsafe", "io_engine": "Sync",
               "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}),
    );
    round_trip(
        &PartialDrive {
            drive_id: "img0".into(),
            path_on_host: Some("/img/x.erofs".into()),
            rate_limiter: None,
        },
        json!({"drive_id": "img0", "path_on_host": "/img/x.erofs"}),
    );
}

#[test]
fn device_shapes() {
    round_trip(
        &Vsock {
            guest_cid: 3,
            uds_path: "./v.sock".into(),
            vsock_id: None,
        },
        json!({"guest_cid": 3, "uds_path": "./v.sock"}),
    );
    round_trip(
        &NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:AC:10:00:02".into()),
            ..Default::default()
        },
        json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}),
    );
    round_trip(
        &Logger {
            log_path: Some("/run/log.fifo".into()),
            level: Some(LogLevel::Warning),
            show_level: Some(true),
            show_log_origin: None,
            module: None,
        },
        json!({"log_path": "/run/log.fifo", "level": "Warning", "show_level": true}),
    );
    round_trip(
        &Metrics {
            metrics_path: "/run/m.fifo".into(),
        },
        json!({"metrics_path": "/run/m.fifo"}),
    );
    round_trip(&EntropyDevice::default(), json!({}));
    round_trip(
        &Balloon {
            amount_mib: 0,
            deflate_on_oom: true,
            stats_polling_interval_s: Some(1),
            ..Default::default()
        },
        json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
    );
    round_trip(
        &InstanceActionInfo {
            action_type: ActionType::InstanceStart,
        },
        json!({"action_type": "InstanceStart"}),
    );
    round_trip(
        &InstanceActionInfo {
            action_type: ActionType::SendCtrlAltDel,
        },
        json!({"action_type": "SendCtrlAltDel"}),
    );
}

#[test]
fn parses_instance_info_and_vm_config() {
    let info: InstanceInfo = serde_json::from_value(json!({
        "id": "anonymous-instance", "state": "Not started", "vmm_version": "1.16.1", "app_name": "Firecracker"
    }))
    .unwrap();
    assert_eq!(info.vmm_version, "1.16.1");
    assert!(!info.is_running());
    // Shape of GET /vm/config with nulls and sections Hearth does not model.
    let cfg: FullVmConfiguration = serde_json::from_value(json!({
        "balloon": null,
        "drives": [{"drive_id": "root", "partuuid": null, "is_root_device": true, "cache_type": "Unsafe",
                    "is_read_only": false, "path_on_host": "/x", "rate_limiter": null, "io_engine": "Sync", "socket": null}],
        "boot-source": {"kernel_image_path": "/k", "initrd_path": null, "boot_args": "console=ttyS0"},
        "cpu-config": null, "logger": null,
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": false, "huge_pages": "None"},
        "metrics": null, "mmds-config": null, "network-interfaces": null, "vsock": {"guest_cid": 3, "uds_path": "/v"},
        "entropy": null, "pmem": [], "memory-hotplug": null
    }))
    .unwrap();
    assert_eq!(cfg.drives[0].path_on_host.as_deref(), Some("/x"));
    assert_eq!(cfg.machine_config.unwrap().mem_size_mib, 256);
    assert!(cfg.network_interfaces.is_empty());
    assert_eq!(cfg.vsock.unwrap().guest_cid, 3);
    assert_eq!(
        cfg.boot_source.unwrap().boot_args.as_deref(),
        Some("console=ttyS0")
    );
}
