use super::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: serde_json::Value,
}

/// A fake Firecracker API: answers every request with `reply(method, path)`.
fn fake_server(
    socket: &Path,
    reply: impl Fn(&str, &str) -> Vec<u8> + Send + Sync + 'static,
) -> Arc<Mutex<Vec<Seen>>> {
    let listener = UnixListener::bind(socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (seen, reply) = (seen2.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                    let mut c = [0u8; 1024];
                    let n = s.read(&mut c).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&c[..n]);
                };
                let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
                let mut first = head.lines().next().unwrap().split(' ');
                let (method, path) = (
                    first.next().unwrap().to_string(),
                    first.next().unwrap().to_string(),
                );
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.parse().unwrap());
                let mut body = buf[head_end + 4..].to_vec();
                while body.len() < len {
                    let mut c = [0u8; 1024];
                    let n = s.read(&mut c).await.unwrap();
                    body.extend_from_slice(&c[..n]);
                }
                let body = if body.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_slice(&body).unwrap()
                };
                let out = reply(&method, &path);
                seen.lock().unwrap().push(Seen { method, path, body });
                let _ = s.write_all(&out).await;
            });
        }
    });
    seen
}

fn no_content() -> Vec<u8> {
    b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".to_vec()
}

fn json_reply(status: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[tokio::test]
async fn requests_have_the_documented_method_path_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let seen = fake_server(&sock, |_, _| no_content());
    let c = FirecrackerClient::new(&sock);
    c.put_machine_config(&MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 512,
        ..Default::default()
    })
    .await
    .unwrap();
    c.put_drive(&Drive {
        drive_id: "scratch".into(),
        is_root_device: false,
        is_read_only: Some(false),
        path_on_host: Some("/s.img".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.patch_drive(&PartialDrive {
        drive_id: "img_0".into(),
        path_on_host: Some("/i.erofs".into()),
        rate_limiter: None,
    })
    .await
    .unwrap();
    c.put_network_interface(&NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "tap0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.instance_start().await.unwrap();
    c.send_ctrl_alt_del().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let summary: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT".to_string(), "/machine-config".to_string()),
            ("PUT".into(), "/drives/scratch".into()),
            ("PATCH".into(), "/drives/img_0".into()),
            ("PUT".into(), "/network-interfaces/eth0".into()),
            ("PUT".into(), "/actions".into()),
            ("PUT".into(), "/actions".into()),
        ]
    );
    assert_eq!(
        seen[0].body,
        serde_json::json!({"vcpu_count": 2, "mem_size_mib": 512})
    );
    assert_eq!(
        seen[2].body,
        serde_json::json!({"drive_id": "img_0", "path_on_host": "/i.erofs"})
    );
    assert_eq!(
        seen[4].body,
        serde_json::json!({"action_type": "InstanceStart"})
    );
    assert_eq!(
        seen[5].body,
        serde_json::json!({"action_type": "SendCtrlAltDel"})
    );
}

#[tokio::test]
async fn fault_messages_are_surfaced_and_400_is_distinguishable() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    fake_server(&sock, |_, path| match path {
        "/machine-config" => json_reply(
            "400 ",
            r#"{"fault_message":"The memory size (MiB) is either 0, or not a multiple of the configured page size."}"#,
        ),
        "/actions" => b"HTTP/1.1 500 \r\nContent-Length: 5\r\n\r\noops!".to_vec(),
        _ => json_reply(
            "200 ",
            r#"{"id":"vm-1","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}"#,
        ),
    });
    let c = FirecrackerClient::new(&sock);
    let e = c
        .put_machine_config(&MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.is_bad_request());
    assert!(e
        .fault_message()
        .unwrap()
        .starts_with("The memory size (MiB) is either 0"));
    assert!(e.to_string().contains("PUT /machine-config") && e.to_string().contains("400"));
    let e = c.instance_start().await.unwrap_err();
    assert!(!e.is_bad_request());
    assert_eq!(e.fault_message(), Some("oops!"));
    let info = c.instance_info().await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.vmm_version.as_str()),
        ("vm-1", "1.16.1")
    );
}

#[tokio::test]
async fn ids_are_checked_before_any_request() {
    let c = FirecrackerClient::new("/nonexistent/api.sock");
    let e = c
        .put_drive(&Drive {
            drive_id: "../x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        FirecrackerError::InvalidArgument {
            field: "drive_id",
            ..
        }
    ));
    let e = c
        .patch_drive(&PartialDrive {
            drive_id: "a b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FirecrackerError::InvalidArgument { .. }));
}

#[tokio::test]
async fn wait_ready_waits_for_the_socket_then_answers() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let sock2 = sock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        fake_server(&sock2, |_, _| {
            json_reply(
                "200 ",
                r#"{"id":"x","state":"Not started","vmm_version":"1.8.0","app_name":"Firecracker"}"#,
            )
        });
    });
    let info = FirecrackerClient::new(&sock)
        .wait_ready(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(info.vmm_version, "1.8.0");
}

#[tokio::test]
async fn wait_ready_honours_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let e = FirecrackerClient::new(dir.path().join("never.sock"))
        .wait_ready(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, FirecrackerError::NotReady { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    // A socket that accepts but never answers: the deadline still holds.
    let sock = dir.path().join("silent.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    let start = Instant::now();
    let e = FirecrackerClient::new(&sock)
        .wait_ready(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, FirecrackerError::NotReady { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn request_timeout_and_bounded_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    let e = FirecrackerClient::new(&sock)
        .with_timeout(Duration::from_millis(100))
        .vm_config()
        .await
        .unwrap_err();
    assert!(
        matches!(e, FirecrackerError::Timeout { method: "GET", .. }),
        "{e}"
    );
    let big = dir.path().join("big.sock");
    fake_server(&big, |_, _| {
        format!("HTTP/1.1 200 \r\nContent-Length: {}\r\n\r\n", 50 << 20).into_bytes()
    });
    let e = FirecrackerClient::new(&big).vm_config().await.unwrap_err();
    assert!(
        matches!(e, FirecrackerError::TooLarge { what: "body", .. }),
        "{e}"
    );
}

#[tokio::test]
async fn connects_to_sockets_with_paths_longer_than_sun_path() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let sock = deep.join("firecracker.socket");
    assert!(sock.as_os_str().len() > 108);
    // Bind through the same /proc trick (bind has the same limit).
    let dir_fd = std::fs::File::open(&deep).unwrap();
    let short = format!(
        "/proc/self/fd/{}/firecracker.socket",
        std::os::unix::io::AsRawFd::as_raw_fd(&dir_fd)
    );
    let listener = std::os::unix::net::UnixListener::bind(&short).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = UnixListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut b = [0u8; 512];
        let _ = s.read(&mut b).await;
        s.write_all(&json_reply("200 ", r#"{"id":"deep","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}"#)).await.unwrap();
    });
    let info = FirecrackerClient::new(&sock).instance_info().await.unwrap();
    assert_eq!(info.id, "deep");
}
