use super::*;

#[test]
fn log_tails_are_bounded_and_skip_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("serial.log");
    let mut text = "x".repeat(10_000);
    text.push_str("\n\nKernel panic - not syncing: boom\n\n");
    std::fs::write(&p, text).unwrap();
    assert_eq!(last_lines(&p, 1), "Kernel panic - not syncing: boom");
    assert!(last_lines(&p, 5).len() <= LOG_TAIL_BYTES + 16);
    assert!(last_lines(&dir.path().join("nope"), 1).contains("missing"));
    std::fs::write(
            &p,
            "[    2.5] Kernel panic - not syncing: No working init found.\n[    2.6] Kernel Offset: disabled\n",
        )
        .unwrap();
    assert_eq!(
        console_summary(&p),
        "guest Kernel panic - not syncing: No working init found."
    );
}

#[test]
fn connecting_waits_for_the_serving_line_or_a_long_console() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("serial.log");
    assert!(!console_says_serving(&p));
    std::fs::write(&p, "[0.1] booting\nINFO module loaded\n").unwrap();
    assert!(!console_says_serving(&p));
    std::fs::write(&p, "INFO agent serving mode=\"vm\"\n").unwrap();
    assert!(console_says_serving(&p));
    std::fs::write(&p, "x".repeat(SERVING_SEARCH_BYTES as usize)).unwrap();
    assert!(console_says_serving(&p));
}

#[test]
fn handle_round_trips() {
    let h = Handle {
        accel: "tcg".into(),
        isolation: "none".into(),
        qemu: Proc { pid: 1, started: 2 },
        vsock: Proc { pid: 3, started: 4 },
        run_dir: "/r".into(),
        qmp_socket: "/r/qmp.sock".into(),
        vhost_socket: "/r/vhost.sock".into(),
        agent_socket: "/r/vm.vsock".into(),
        serial_log: "/r/serial.log".into(),
        qemu_log: "/r/qemu.log".into(),
        vsock_log: "/r/vsock.log".into(),
        boot_drives: BTreeMap::new(),
        attached: vec![],
        hotplug_ports: 4,
        hotplugged: BTreeMap::new(),
        nic: None,
        uid: Some(300_000),
    };
    assert_eq!(Handle::from(&h.to_handle()).unwrap(), h);
    assert!(Handle::from(&BackendHandle(serde_json::json!({"agent_pid": 1}))).is_err());
}
