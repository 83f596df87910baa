//! The only module that touches sockets: TCP over tokio-uring, and TLS
//! on top of it once [`Conn::start_tls`] has run.
//!
//! Everything above this module (ingest, delivery) speaks in terms of
//! [`Conn`] and [`Listener`], so the socket layer can be swapped without
//! touching protocol or queue code, and a connection reads and writes the
//! same way in clear text and inside TLS.
//!
//! Two facts of tokio-uring, checked on this project's machines, shape
//! this module:
//! - tokio-uring's `read` is `IORING_OP_READ`, which on an `O_NONBLOCK` file
//!   returns `EAGAIN` instead of waiting, so every socket handed to tokio-uring
//!   is put back in blocking mode first (io_uring does the waiting).
//! - a timed-out operation that is dropped leaves the socket open; every
//!   timeout here shuts the socket down explicitly before reporting (a read
//!   that timed out shuts down the reading side only, so that a goodbye
//!   such as `421` can still be written; dropping a [`Conn`] shuts down both).

mod tls;

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_uring::net::{TcpListener, TcpStream};

pub(crate) use tls::TlsSummary;
use tls::{LayerError, TlsLayer};

/// How an I/O operation on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The operation did not finish in time; the socket has been shut down.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// What was being done: connect, read, write.
        op: &'static str,
        /// The limit that ran out.
        after: Duration,
    },
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The TLS handshake or a TLS record failed (a bad certificate, a
    /// peer that does not speak TLS, a broken record).
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The operating system reported an error.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A TCP connection driven by io_uring, with the peer's address, in
/// clear text or (after [`Conn::start_tls`]) inside TLS.
pub(crate) struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    shut: bool,
    tls: Option<Box<TlsLayer>>,
}

impl From<LayerError> for TransportError {
    fn from(e: LayerError) -> Self {
        match e {
            LayerError::Closed => TransportError::Closed,
            LayerError::Tls(e) => TransportError::Tls(e),
        }
    }
}

impl Conn {
    /// Connects to `addr` within `timeout`, optionally from a chosen local
    /// address. The connect itself goes through tokio's reactor (tokio-uring
    /// 0.5 cannot bind before connecting); the established socket is then
    /// handed to io_uring for all reads and writes.
    pub(crate) async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Conn, TransportError> {
        let io = |source| TransportError::Io {
            op: "connect",
            source,
        };
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(io)?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(io)?;
        }
        // Dropping the connect future on timeout drops (and closes) the socket
        // it owns: no io_uring operation is in flight yet.
        let stream = match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(r) => r.map_err(io)?,
            Err(_) => {
                return Err(TransportError::Timeout {
                    op: "connect",
                    after: timeout,
                });
            }
        };
        let std = stream.into_std().map_err(io)?;
        std.set_nonblocking(false).map_err(io)?;
        std.set_nodelay(true).map_err(io)?;
        Ok(Conn {
            stream: TcpStream::from_std(std),
            peer: addr,
            shut: false,
            tls: None,
        })
    }

    fn from_accepted(stream: TcpStream, peer: SocketAddr) -> Conn {
        // Sockets accepted through io_uring are blocking already.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            peer,
            shut: false,
            tls: None,
        }
    }

    /// The remote address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Reads into the spare capacity of `buf` (reserving `min_room` first).
    /// Returns the buffer and how many bytes arrived; zero bytes is reported
    /// as [`TransportError::Closed`]. After a timeout the buffer still holds
    /// what it held before the call: only the spare room lent to the
    /// cancelled read is lost, since the kernel may still write into it.
    pub(crate) async fn read(
        &mut self,
        mut buf: BytesMut,
        min_room: usize,
        timeout: Duration,
    ) -> (Result<usize, TransportError>, BytesMut) {
        if self.tls.is_some() {
            let r = self.read_tls(&mut buf, min_room, timeout).await;
            return (r, buf);
        }
        if buf.capacity() - buf.len() < min_room {
            buf.reserve(min_room);
        }
        let len = buf.len();
        // Read into the tail: a slice of the spare capacity.
        let tail = buf.split_off(len);
        let fut = self.stream.read(tail);
        match tokio::time::timeout(timeout, fut).await {
            Ok((res, tail)) => {
                buf.unsplit(tail);
                match res {
                    Ok(0) => (Err(TransportError::Closed), buf),
                    Ok(n) => (Ok(n), buf),
                    Err(source) => (Err(TransportError::Io { op: "read", source }), buf),
                }
            }
            Err(_) => {
                // Ends the read still in flight; writing stays possible.
                let _ = self.stream.shutdown(Shutdown::Read);
                (
                    Err(TransportError::Timeout {
                        op: "read",
                        after: timeout,
                    }),
                    buf,
                )
            }
        }
    }

    /// Reads through TLS: decrypted bytes rustls holds already, or more
    /// ciphertext from the socket until some arrive. The caller's buffer
    /// never goes into an operation that a timeout could cut short.
    async fn read_tls(
        &mut self,
        buf: &mut BytesMut,
        min_room: usize,
        timeout: Duration,
    ) -> Result<usize, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let tls = self.tls.as_mut().expect("a TLS connection");
            if let Some(n) = tls.plaintext_into(buf, min_room)? {
                return Ok(n);
            }
            // rustls may owe the peer something first (a key update).
            self.flush_tls(deadline).await?;
            self.read_ciphertext(deadline).await?;
        }
    }

    /// One socket read of ciphertext, handed to rustls. A TLS error sends
    /// the alert rustls queued (best effort) before it is reported.
    async fn read_ciphertext(&mut self, deadline: Instant) -> Result<(), TransportError> {
        let tls = self.tls.as_mut().expect("a TLS connection");
        let mut raw = tls.lend_raw();
        let len = raw.len();
        let tail = raw.split_off(len);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (r, tail) = match tokio::time::timeout(timeout, self.stream.read(tail)).await {
            Ok(done) => done,
            Err(_) => {
                let _ = self.stream.shutdown(Shutdown::Read);
                return Err(TransportError::Timeout {
                    op: "read",
                    after: timeout,
                });
            }
        };
        raw.unsplit(tail);
        match r {
            Ok(0) => return Err(TransportError::Closed),
            Ok(_) => {}
            Err(source) => return Err(TransportError::Io { op: "read", source }),
        }
        let tls = self.tls.as_mut().expect("a TLS connection");
        if let Err(e) = tls.took(raw) {
            let _ = self.flush_tls(deadline).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Writes the ciphertext rustls wants sent.
    async fn flush_tls(&mut self, deadline: Instant) -> Result<(), TransportError> {
        let tls = self.tls.as_mut().expect("a TLS connection");
        let mut out = Vec::new();
        tls.drain(&mut out);
        if out.is_empty() {
            return Ok(());
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.write_plain(vec![Bytes::from(out)], timeout).await
    }

    /// Runs the TLS handshake on this connection within `timeout`, as the
    /// client or the server `session` says; from then on every read and
    /// write goes through TLS. On failure the connection is unusable.
    pub(crate) async fn start_tls(
        &mut self,
        session: rustls::Connection,
        timeout: Duration,
    ) -> Result<TlsSummary, TransportError> {
        let deadline = Instant::now() + timeout;
        self.tls = Some(Box::new(TlsLayer::new(session)));
        loop {
            self.flush_tls(deadline).await?;
            let tls = self.tls.as_ref().expect("a TLS connection");
            if !tls.is_handshaking() {
                break;
            }
            self.read_ciphertext(deadline).await?;
        }
        Ok(self.tls_summary().expect("a finished handshake"))
    }

    /// How the TLS session went; `None` in clear text.
    pub(crate) fn tls_summary(&self) -> Option<TlsSummary> {
        self.tls.as_ref().and_then(|t| t.summary())
    }

    /// Ends the TLS session politely (close_notify) before the connection
    /// closes; nothing to do in clear text.
    pub(crate) async fn close_tls(&mut self, timeout: Duration) {
        if let Some(tls) = self.tls.as_mut() {
            tls.close();
            let _ = self.flush_tls(Instant::now() + timeout).await;
        }
    }

    /// Writes every byte of `bufs` (in order) within `timeout`: in clear
    /// text with vectored writes, so that a shared body goes out without
    /// being copied; inside TLS, encrypted in pieces of a bounded size.
    pub(crate) async fn write_all(
        &mut self,
        bufs: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        if self.tls.is_none() {
            return self.write_plain(bufs, timeout).await;
        }
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for b in &bufs {
            let mut rest = &b[..];
            while !rest.is_empty() {
                let tls = self.tls.as_mut().expect("a TLS connection");
                let n = tls.encrypt(rest).map_err(|source| TransportError::Io {
                    op: "write",
                    source,
                })?;
                tls.drain(&mut out);
                rest = &rest[n..];
                if out.len() >= tls::FLUSH_AT || (n == 0 && !out.is_empty()) {
                    let t = deadline.saturating_duration_since(Instant::now());
                    self.write_plain(vec![Bytes::from(std::mem::take(&mut out))], t)
                        .await?;
                } else if n == 0 {
                    return Err(TransportError::Closed);
                }
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let t = deadline.saturating_duration_since(Instant::now());
        self.write_plain(vec![Bytes::from(out)], t).await
    }

    /// Writes `bufs` to the socket as they are.
    async fn write_plain(
        &mut self,
        bufs: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        match tokio::time::timeout(timeout, self.write_all_inner(bufs)).await {
            Ok(r) => r,
            Err(_) => {
                self.shutdown();
                Err(TransportError::Timeout {
                    op: "write",
                    after: timeout,
                })
            }
        }
    }

    async fn write_all_inner(&self, mut bufs: Vec<Bytes>) -> Result<(), TransportError> {
        bufs.retain(|b| !b.is_empty());
        while !bufs.is_empty() {
            let (res, back) = if bufs.len() == 1 {
                let one = bufs.pop().expect("one buffer");
                let (res, b) = self.stream.write(one).submit().await;
                (res, vec![b])
            } else {
                // The kernel caps an iovec at IOV_MAX (1024) entries.
                let rest = if bufs.len() > 1024 {
                    bufs.split_off(1024)
                } else {
                    Vec::new()
                };
                let (res, mut done) = self.stream.writev(bufs).await;
                done.extend(rest);
                (res, done)
            };
            let mut n = res.map_err(|source| TransportError::Io {
                op: "write",
                source,
            })?;
            if n == 0 {
                return Err(TransportError::Closed);
            }
            bufs = back;
            // Drop what went out, keep the rest (partial writes are normal).
            let mut skip = 0;
            for b in bufs.iter_mut() {
                if n >= b.len() {
                    n -= b.len();
                    skip += 1;
                } else {
                    let _ = b.split_to(n);
                    break;
                }
            }
            bufs.drain(..skip);
        }
        Ok(())
    }

    /// Asks the kernel to acknowledge received data at once instead of
    /// delaying the ACK. A client that writes a command in two segments
    /// with Nagle on (many SMTP libraries do, for the end of DATA) would
    /// otherwise wait 40 ms for our delayed ACK on every message. Linux
    /// clears the flag by itself, so ingest sets it again after each read.
    pub(crate) fn quick_ack(&self) {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a valid int option.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// Shuts both directions down (idempotent). Needed before dropping a
    /// connection that may have an operation in flight.
    pub(crate) fn shutdown(&mut self) {
        if !self.shut {
            self.shut = true;
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A listening socket shared by every shard through `SO_REUSEPORT`: the
/// kernel spreads incoming connections over the shards' listeners.
pub(crate) struct Listener {
    inner: TcpListener,
}

/// Fails with `AddrInUse` when anyone listens on `addr` (port 0 always
/// passes: it asks for a free port). Every shard binds each listener with
/// SO_REUSEPORT, and so would a second Volley on the same port: Linux lets
/// it in silently and splits the connections between the two. A socket
/// without SO_REUSEPORT is refused while anyone listens there.
pub(crate) fn probe_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR only lets old TIME_WAIT connections be; a listener
    // still makes the bind fail.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// Binds a std listener with `SO_REUSEPORT` (and `SO_REUSEADDR`), blocking,
/// ready to be turned into a [`Listener`] on a shard's thread.
pub(crate) fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(false)?;
    Ok(socket.into())
}

impl Listener {
    /// Wraps a bound std listener; must be called on a tokio-uring runtime.
    pub(crate) fn from_std(l: std::net::TcpListener) -> Listener {
        Listener {
            inner: TcpListener::from_std(l),
        }
    }

    /// The bound address (useful after binding port 0).
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Stops accepting: an accept in flight returns an error at once, and
    /// the kernel no longer sends this shard new connections.
    pub(crate) fn close(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a descriptor we own; it does not close it.
        unsafe {
            libc::shutdown(self.inner.as_raw_fd(), libc::SHUT_RDWR);
        }
    }

    /// Waits for the next connection.
    pub(crate) async fn accept(&self) -> io::Result<Conn> {
        let (stream, peer) = self.inner.accept().await?;
        Ok(Conn::from_accepted(stream, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_probe_is_refused_while_anyone_listens() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = probe_free(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        drop(held);
        probe_free(addr).unwrap();
    }

    #[test]
    fn echo_over_loopback_with_vectored_write() {
        tokio_uring::start(async {
            let l = Listener::from_std(bind_reuseport(loopback(0)).unwrap());
            let addr = l.local_addr().unwrap();
            let server = tokio_uring::spawn(async move {
                let mut c = l.accept().await.unwrap();
                let mut buf = BytesMut::new();
                while buf.len() < 11 {
                    let (r, b) = c.read(buf, 64, Duration::from_secs(5)).await;
                    r.unwrap();
                    buf = b;
                }
                c.write_all(vec![buf.freeze()], Duration::from_secs(5))
                    .await
                    .unwrap();
            });
            let mut c = Conn::connect(addr, Some([127, 0, 0, 1].into()), Duration::from_secs(5))
                .await
                .unwrap();
            c.write_all(
                vec![Bytes::from_static(b"hello"), Bytes::from_static(b" world")],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            let mut buf = BytesMut::new();
            while buf.len() < 11 {
                let (r, b) = c.read(buf, 64, Duration::from_secs(5)).await;
                r.unwrap();
                buf = b;
            }
            assert_eq!(&buf[..], b"hello world");
            server.await.unwrap();
        });
    }

    #[test]
    fn after_a_read_timeout_the_buffer_is_kept_a_goodbye_can_be_sent_and_drop_closes() {
        tokio_uring::start(async {
            let l = Listener::from_std(bind_reuseport(loopback(0)).unwrap());
            let addr = l.local_addr().unwrap();
            let client = tokio_uring::spawn(async move {
                let mut c = Conn::connect(addr, None, Duration::from_secs(5))
                    .await
                    .unwrap();
                let partial = BytesMut::from(&b"250-partial"[..]);
                let (r, kept) = c.read(partial, 64, Duration::from_millis(50)).await;
                assert!(matches!(r, Err(TransportError::Timeout { op: "read", .. })));
                assert_eq!(&kept[..], b"250-partial", "what was read before stays");
                c.write_all(
                    vec![Bytes::from_static(b"421 bye\r\n")],
                    Duration::from_secs(1),
                )
                .await
                .unwrap();
                drop(c);
                // Stay alive: the drop alone must have closed the socket.
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
            let mut s = l.accept().await.unwrap();
            let mut buf = BytesMut::new();
            loop {
                let (r, b) = s.read(buf, 64, Duration::from_millis(900)).await;
                buf = b;
                match r {
                    Ok(_) => continue,
                    Err(TransportError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(&buf[..], b"421 bye\r\n");
            client.await.unwrap();
        });
    }

    #[test]
    fn connect_to_a_closed_port_fails_fast() {
        tokio_uring::start(async {
            let port = {
                let l = std::net::TcpListener::bind(loopback(0)).unwrap();
                l.local_addr().unwrap().port()
            };
            let r = Conn::connect(loopback(port), None, Duration::from_secs(5)).await;
            assert!(matches!(r, Err(TransportError::Io { op: "connect", .. })));
        });
    }

    /// A server configuration with a certificate for 127.0.0.1, and a
    /// client configuration that trusts it.
    fn tls_pair() -> (
        std::sync::Arc<rustls::ServerConfig>,
        std::sync::Arc<rustls::ClientConfig>,
    ) {
        use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server.into(), client.into())
    }

    #[test]
    fn tls_carries_a_large_body_both_ways_after_the_handshake() {
        let (server_config, client_config) = tls_pair();
        tokio_uring::start(async move {
            let l = Listener::from_std(bind_reuseport(loopback(0)).unwrap());
            let addr = l.local_addr().unwrap();
            // Larger than rustls's buffers and the flush threshold.
            let body = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
            let expected = body.clone();
            let server = tokio_uring::spawn(async move {
                let mut c = l.accept().await.unwrap();
                let session = rustls::ServerConnection::new(server_config).unwrap();
                let summary = c
                    .start_tls(session.into(), Duration::from_secs(5))
                    .await
                    .unwrap();
                assert_eq!(summary.version, "TLSv1.3");
                let mut buf = BytesMut::new();
                while buf.len() < expected.len() {
                    let (r, b) = c.read(buf, 64 * 1024, Duration::from_secs(5)).await;
                    r.unwrap();
                    buf = b;
                }
                assert!(buf[..] == expected[..]);
                c.write_all(
                    vec![Bytes::from_static(b"250 ok\r\n")],
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            });
            let mut c = Conn::connect(addr, None, Duration::from_secs(5))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let session = rustls::ClientConnection::new(client_config, name).unwrap();
            let summary = c
                .start_tls(session.into(), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(!summary.resumed);
            assert_eq!(c.tls_summary(), Some(summary));
            c.write_all(vec![Bytes::from_static(b""), body], Duration::from_secs(10))
                .await
                .unwrap();
            let mut buf = BytesMut::new();
            while !buf.ends_with(b"\r\n") {
                let (r, b) = c.read(buf, 64, Duration::from_secs(5)).await;
                r.unwrap();
                buf = b;
            }
            assert_eq!(&buf[..], b"250 ok\r\n");
            server.await.unwrap();
        });
    }

    #[test]
    fn a_peer_that_answers_a_client_hello_with_garbage_fails_the_handshake_fast() {
        let (_, client_config) = tls_pair();
        tokio_uring::start(async move {
            let l = Listener::from_std(bind_reuseport(loopback(0)).unwrap());
            let addr = l.local_addr().unwrap();
            let server = tokio_uring::spawn(async move {
                let mut c = l.accept().await.unwrap();
                let (r, _) = c.read(BytesMut::new(), 4096, Duration::from_secs(5)).await;
                r.unwrap();
                c.write_all(
                    vec![Bytes::from_static(b"220 this is not TLS\r\n")],
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
            let mut c = Conn::connect(addr, None, Duration::from_secs(5))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let session = rustls::ClientConnection::new(client_config, name).unwrap();
            let started = Instant::now();
            let r = c.start_tls(session.into(), Duration::from_secs(5)).await;
            assert!(matches!(r, Err(TransportError::Tls(_))), "{:?}", r.err());
            assert!(started.elapsed() < Duration::from_secs(2));
            server.await.unwrap();
        });
    }

    #[test]
    fn two_listeners_share_one_port() {
        let first = bind_reuseport(loopback(0)).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_reuseport(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }
}
