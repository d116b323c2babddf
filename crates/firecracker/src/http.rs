//! A small HTTP/1.1 client for Firecracker's API socket.
//!
//! Hand-written rather than hyper: Firecracker's server (micro_http) answers
//! one request per exchange with `Content-Length` framing, and a client this
//! size lets every length read off the wire be bounded before allocation:
//! the head at [`MAX_HEAD`] bytes, the body at [`MAX_BODY`]. One connection
//! per request; the whole exchange runs under a timeout.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{FirecrackerError, Result};

/// Largest status line + headers accepted.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest body accepted (`GET /vm/config` is a few KiB).
pub const MAX_BODY: usize = 1 << 20;

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes (empty for 204).
    pub body: Vec<u8>,
}

/// Sends one request and reads the response, all within `timeout`.
pub async fn request(
    socket: &Path,
    method: &'static str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response> {
    let exchange = async {
        let mut stream = connect(socket).await?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        stream
            .write_all(&bytes)
            .await
            .map_err(FirecrackerError::io("write", socket))?;
        read_response(&mut stream, method == "HEAD").await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(FirecrackerError::Timeout {
            method,
            path: path.to_string(),
            timeout,
        }),
    }
}

/// Longest path `connect(2)` takes in `sockaddr_un` (108 with the NUL).
const SUN_PATH_MAX: usize = 107;

/// Connects to a unix socket; a path too long for `sockaddr_un` (jail
/// paths can be) is reached through `/proc/self/fd/<dir>/<name>`.
async fn connect(socket: &Path) -> Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let err = FirecrackerError::io("connect", socket);
    if socket.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
        return UnixStream::connect(socket).await.map_err(err);
    }
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Err(err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG)));
    };
    let dir_fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map_err(FirecrackerError::io("open", dir))?;
    let short = Path::new("/proc/self/fd")
        .join(dir_fd.as_raw_fd().to_string())
        .join(name);
    let stream = UnixStream::connect(&short).await.map_err(err);
    drop(dir_fd);
    stream
}

/// Reads and parses one response from `r`.
pub async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    head_only: bool,
) -> Result<Response> {
    let io = |e| FirecrackerError::Io {
        op: "read",
        path: "<firecracker api>".into(),
        source: e,
    };
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(FirecrackerError::TooLarge {
                what: "headers",
                limit: MAX_HEAD,
            });
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(FirecrackerError::Http(
                "connection closed before the end of the headers".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(FirecrackerError::TooLarge {
            what: "headers",
            limit: MAX_HEAD,
        });
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| FirecrackerError::Http("non-utf8 headers".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !version.starts_with("HTTP/1.") {
        return Err(FirecrackerError::Http(format!(
            "bad status line {:?}",
            truncate(status_line)
        )));
    }
    let status: u16 = code
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| FirecrackerError::Http(format!("bad status code {:?}", truncate(code))))?;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(FirecrackerError::Http(format!(
                "bad header line {:?}",
                truncate(line)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| {
                FirecrackerError::Http(format!("bad content-length {:?}", truncate(value)))
            })?;
            if n > MAX_BODY {
                return Err(FirecrackerError::TooLarge {
                    what: "body",
                    limit: MAX_BODY,
                });
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(FirecrackerError::Http(format!(
                "unsupported transfer-encoding {:?}",
                truncate(value)
            )));
        }
    }
    let mut body = buf.split_off(head_end + 4);
    let no_body = head_only || status == 204 || status == 304 || status < 200;
    match (no_body, content_length) {
        (true, _) => body.clear(),
        (false, Some(n)) => {
            if body.len() > n {
                body.truncate(n); // extra bytes would be a next response; ignore them
            }
            while body.len() < n {
                let mut chunk = vec![0u8; (n - body.len()).min(64 << 10)];
                let got = r.read(&mut chunk).await.map_err(io)?;
                if got == 0 {
                    return Err(FirecrackerError::Http(
                        "connection closed inside the body".into(),
                    ));
                }
                body.extend_from_slice(&chunk[..got]);
            }
        }
        (false, None) => {
            // Read to EOF, bounded.
            let mut rest = Vec::new();
            let limit = (MAX_BODY + 1).saturating_sub(body.len()) as u64;
            r.take(limit).read_to_end(&mut rest).await.map_err(io)?;
            body.extend_from_slice(&rest);
            if body.len() > MAX_BODY {
                return Err(FirecrackerError::TooLarge {
                    what: "body",
                    limit: MAX_BODY,
                });
            }
        }
    }
    Ok(Response { status, body })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<Response> {
        read_response(&mut &raw[..], false).await
    }

    #[tokio::test]
    async fn parses_content_length_and_no_content() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        let r = parse(b"HTTP/1.1 400 Bad Request\r\n\r\n{\"fault_message\":\"x\"}")
            .await
            .unwrap();
        assert_eq!(r.body, b"{\"fault_message\":\"x\"}");
    }

    #[tokio::test]
    async fn bounds_every_length() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            parse(huge.as_bytes()).await,
            Err(FirecrackerError::TooLarge { what: "body", .. })
        ));
        let overflow = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert!(matches!(
            parse(overflow).await,
            Err(FirecrackerError::Http(_))
        ));
        let mut endless_head = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless_head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(
            parse(&endless_head).await,
            Err(FirecrackerError::TooLarge {
                what: "headers",
                ..
            })
        ));
        let mut unframed = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        unframed.extend(std::iter::repeat_n(b'b', MAX_BODY + 10));
        assert!(matches!(
            parse(&unframed).await,
            Err(FirecrackerError::TooLarge { what: "body", .. })
        ));
    }

    #[tokio::test]
    async fn rejects_garbage() {
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n").await,
            Err(FirecrackerError::Http(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 abc OK\r\n\r\n").await,
            Err(FirecrackerError::Http(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").await,
            Err(FirecrackerError::Http(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await,
            Err(FirecrackerError::Http(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200").await,
            Err(FirecrackerError::Http(_))
        ));
    }
}
