//! Where the agent accepts the host's connections.
//!
//! - VM mode: an `AF_VSOCK` listener on [`AGENT_PORT`] (the VMM on the host
//!   has already done the hybrid-vsock handshake).
//! - Namespaces mode: the unix listener hearthd passes as an fd; the agent
//!   does the handshake itself ([`crate::handshake`]).
//!
//! [`incoming`] turns either into the stream of ready connections that tonic
//! serves. Accept errors are logged and never end the loop; a peer that
//! fails the handshake is dropped without affecting the others.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hearth_agent_proto::AGENT_PORT;
use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use crate::handshake;

/// Handshakes that may be in progress at once (each holds one fd).
const MAX_PENDING_HANDSHAKES: usize = 32;

/// A listening socket of either kind.
pub enum Listener {
    /// hearthd's unix listener (namespaces mode): handshake required.
    Unix(UnixListener),
    /// The guest's vsock listener (VM mode): no handshake.
    Vsock(FdListener),
}

/// One accepted connection.
pub enum Conn {
    /// From a unix listener.
    Unix(UnixStream),
    /// From a vsock listener.
    Vsock(FdStream),
}

impl Listener {
    /// Takes over an inherited, already listening unix socket.
    pub fn from_unix(fd: OwnedFd) -> io::Result<Listener> {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        set_cloexec(std.as_raw_fd())?;
        Ok(Listener::Unix(UnixListener::from_std(std)?))
    }

    /// Binds a vsock listener on `VMADDR_CID_ANY:port`. The vsock
    /// transport may come up a little after the modules are loaded, so this
    /// retries for up to `patience`.
    pub async fn vsock(port: u32, patience: Duration) -> io::Result<Listener> {
        let end = tokio::time::Instant::now() + patience;
        loop {
            match FdListener::bind(port) {
                Ok(l) => return Ok(Listener::Vsock(l)),
                Err(err) if tokio::time::Instant::now() < end => {
                    tracing::debug!(error = %err, "vsock not ready yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l) => Ok(Conn::Unix(l.accept().await?.0)),
            Listener::Vsock(l) => Ok(Conn::Vsock(l.accept().await?)),
        }
    }

    fn needs_handshake(&self) -> bool {
        matches!(self, Listener::Unix(_))
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Accepts connections from `listener` (doing the handshake for
/// [`AGENT_PORT`] where required) and yields the ready ones.
pub fn incoming(listener: Listener) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(accept_loop(listener, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(listener: Listener, tx: mpsc::Sender<io::Result<Conn>>) {
    let handshake = listener.needs_handshake();
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            _ = tx.closed() => return,
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE, ECONNABORTED, ...: keep serving the others.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if handshake {
                if let Err(err) = handshake::accept(&mut conn, AGENT_PORT, handshake::TIMEOUT).await
                {
                    tracing::warn!(error = %err, "refused a connection");
                    return;
                }
            }
            tracing::debug!("connection ready");
            let _ = tx.send(Ok(conn)).await;
        });
    }
}

/// A listening stream socket of any family (`AF_VSOCK` here), driven by
/// tokio's reactor.
pub struct FdListener {
    fd: AsyncFd<OwnedFd>,
}

impl FdListener {
    /// Takes over a listening socket; makes it non-blocking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<FdListener> {
        set_nonblocking(&fd)?;
        Ok(FdListener { fd: register(fd)? })
    }

    fn bind(port: u32) -> io::Result<FdListener> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
        listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))?;
        Ok(FdListener { fd: register(fd)? })
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<FdStream> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                accept4(
                    fd.as_raw_fd(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match res {
                Ok(Ok(raw)) => {
                    // SAFETY: accept4 just returned this fd; we are its only owner.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    return FdStream::new(owned);
                }
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers an owned, non-blocking fd with tokio's reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and always returns the same fd; the
    // AsyncFd owns it until it is dropped, so it stays open meanwhile.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// A non-blocking stream socket of any family, driven by tokio's reactor.
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    fn new(fd: OwnedFd) -> io::Result<FdStream> {
        Ok(FdStream { fd: register(fd)? })
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.as_raw_fd(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = nix::sys::socket::shutdown(
            self.fd.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Write,
        );
        Poll::Ready(res.map_err(io::Error::from))
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Vsock($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The VM path (fd listener + fd stream) over a unix socket: the code
    /// does not depend on the address family.
    #[tokio::test]
    async fn fd_listener_and_stream_carry_bytes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = FdListener::from_fd(OwnedFd::from(std_listener)).unwrap();
        let client = tokio::spawn(async move {
            let mut c = UnixStream::connect(&path).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            buf
        });
        let mut conn = Conn::Vsock(listener.accept().await.unwrap());
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        let big = vec![7u8; 1 << 20];
        conn.write_all(&big).await.unwrap();
        conn.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), big);
    }

    #[tokio::test]
    async fn unix_listener_requires_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut ready = incoming(Listener::from_unix(OwnedFd::from(std_listener)).unwrap());
        use tokio_stream::StreamExt;

        // A bad peer is dropped; a good one comes through.
        let mut bad = UnixStream::connect(&path).await.unwrap();
        bad.write_all(b"CONNECT 9\n").await.unwrap();
        let mut good = UnixStream::connect(&path).await.unwrap();
        good.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
            .await
            .unwrap();
        let mut conn = ready.next().await.unwrap().unwrap();
        let mut reply = vec![0u8; format!("OK {AGENT_PORT}\n").len()];
        good.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, format!("OK {AGENT_PORT}\n").as_bytes());
        let mut rest = Vec::new();
        assert_eq!(bad.read_to_end(&mut rest).await.unwrap(), 0);
        good.write_all(b"x").await.unwrap();
        let mut x = [0u8; 1];
        conn.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"x");
    }
}
