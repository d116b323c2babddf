//! The server half of Firecracker's hybrid-vsock handshake.
//!
//! On the host, Firecracker (and vhost-device-vsock) expose a guest's vsock
//! as a unix socket: the client writes `CONNECT <port>\n` and reads
//! `OK <n>\n`, and from then on the stream is the guest port. In the
//! namespaces backend there is no VMM, so the agent plays that part itself on
//! its unix listener: it reads one bounded line, checks the port, answers
//! `OK <port>\n` and hands the stream to gRPC. In a VM the VMM does this and
//! the agent sees a plain vsock connection.

use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest handshake line accepted, newline included.
pub const MAX_LINE: usize = 32;

/// How long a peer has to send its `CONNECT` line.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection was refused during the handshake.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Reading or writing the stream failed.
    #[error("handshake i/o")]
    Io(#[from] io::Error),
    /// The peer sent nothing complete within [`TIMEOUT`].
    #[error("handshake timed out")]
    Timeout,
    /// The peer closed the stream before a full line.
    #[error("peer closed during the handshake (read {0:?})")]
    Closed(String),
    /// No newline within [`MAX_LINE`] bytes.
    #[error("handshake line longer than {MAX_LINE} bytes (read {0:?})")]
    TooLong(String),
    /// The line is not `CONNECT <port>`.
    #[error("malformed handshake line {0:?}")]
    Malformed(String),
    /// The peer asked for a port nobody listens on.
    #[error("no listener on port {0}")]
    WrongPort(u32),
}

/// Parses a `CONNECT <port>` line (without its newline).
pub fn parse_connect(line: &[u8]) -> Result<u32, HandshakeError> {
    let malformed = || HandshakeError::Malformed(lossy(line));
    let text = std::str::from_utf8(line).map_err(|_| malformed())?;
    let port = text.strip_prefix("CONNECT ").ok_or_else(malformed)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    port.parse::<u32>().map_err(|_| malformed())
}

/// Reads one `\n`-terminated line, byte by byte so that nothing after the
/// newline is consumed, and at most [`MAX_LINE`] bytes. Returns the line
/// without its newline.
pub async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HandshakeError> {
    let mut line = Vec::with_capacity(MAX_LINE);
    loop {
        let mut byte = [0u8; 1];
        if r.read(&mut byte).await? == 0 {
            return Err(HandshakeError::Closed(lossy(&line)));
        }
        if byte[0] == b'\n' {
            return Ok(line);
        }
        line.push(byte[0]);
        if line.len() >= MAX_LINE {
            return Err(HandshakeError::TooLong(lossy(&line)));
        }
    }
}

/// Runs the server side of the handshake on `stream`: accepts only
/// `CONNECT <port>` for `port`, answers `OK <port>\n`. On error the caller
/// drops (closes) the stream.
pub async fn accept<S>(stream: &mut S, port: u32, timeout: Duration) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let line = tokio::time::timeout(timeout, read_line(stream))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    let asked = parse_connect(&line)?;
    if asked != port {
        return Err(HandshakeError::WrongPort(asked));
    }
    stream.write_all(format!("OK {port}\n").as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}

/// Printable form of bytes read off the wire (already bounded by the caller).
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_connect() {
        assert_eq!(parse_connect(b"CONNECT 1024").unwrap(), 1024);
        assert_eq!(parse_connect(b"CONNECT 0").unwrap(), 0);
        assert_eq!(parse_connect(b"CONNECT 4294967295").unwrap(), u32::MAX);
    }

    #[test]
    fn rejects_malformed_connect() {
        for bad in [
            &b""[..],
            b"CONNECT",
            b"CONNECT ",
            b"CONNECT +1024",
            b"CONNECT -1",
            b"CONNECT 1024 ",
            b"CONNECT 1024\r",
            b"connect 1024",
            b"CONNECT  1024",
            b"CONNECT 4294967296",
            b"CONNECT 10x",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_connect(bad), Err(HandshakeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn read_line_stops_at_newline_without_overreading() {
        let mut input: &[u8] = b"CONNECT 1024\nPRI * HTTP/2.0";
        let line = read_line(&mut input).await.unwrap();
        assert_eq!(line, b"CONNECT 1024");
        assert_eq!(input, b"PRI * HTTP/2.0");
    }

    #[tokio::test]
    async fn read_line_is_bounded() {
        let long = vec![b'A'; 1000];
        let mut input: &[u8] = &long;
        match read_line(&mut input).await {
            Err(HandshakeError::TooLong(s)) => assert_eq!(s.len(), MAX_LINE),
            other => panic!("{other:?}"),
        }
        // Only MAX_LINE bytes were consumed.
        assert_eq!(input.len(), 1000 - MAX_LINE);
    }

    #[tokio::test]
    async fn read_line_reports_early_close() {
        let mut input: &[u8] = b"CONN";
        assert!(matches!(
            read_line(&mut input).await,
            Err(HandshakeError::Closed(s)) if s == "CONN"
        ));
    }

    #[tokio::test]
    async fn accept_answers_ok_for_the_right_port() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"CONNECT 1024\n").await.unwrap();
        accept(&mut server, 1024, TIMEOUT).await.unwrap();
        let mut reply = [0u8; 8];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"OK 1024\n");
    }

    #[tokio::test]
    async fn accept_refuses_other_ports() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"CONNECT 52\n").await.unwrap();
        assert!(matches!(
            accept(&mut server, 1024, TIMEOUT).await,
            Err(HandshakeError::WrongPort(52))
        ));
    }

    #[tokio::test]
    async fn accept_times_out_on_a_silent_peer() {
        let (_client, mut server) = tokio::io::duplex(64);
        let err = accept(&mut server, 1024, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout));
    }
}
