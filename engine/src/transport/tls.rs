//! TLS records between a [`Conn`](super::Conn)'s socket and the SMTP
//! state machines: rustls's classic `Connection`, which is sans-IO, fed
//! with the ciphertext io_uring reads into owned buffers and drained of
//! the ciphertext io_uring writes. Nothing here touches the socket.

use std::io::{self, Read as _, Write as _};

use bytes::{Buf, BytesMut};

/// Ciphertext read from the socket at a time, at most: one full TLS
/// record and its header.
pub(super) const RAW_READ: usize = 16 * 1024 + 512;

/// Ciphertext gathered before it is written out, when encrypting a large
/// body: big enough for few system calls, small enough not to hold a
/// second copy of a large message.
pub(super) const FLUSH_AT: usize = 256 * 1024;

/// How a TLS session went, for the delivery log and the `Received:` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsSummary {
    /// `TLSv1_3` in rustls's naming is written `TLSv1.3` here, as in logs
    /// of other MTAs.
    pub(crate) version: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub(crate) cipher: &'static str,
    /// The session was resumed (no full handshake).
    pub(crate) resumed: bool,
}

/// One connection's TLS state: rustls and the ciphertext it has not taken.
pub(super) struct TlsLayer {
    conn: rustls::Connection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    raw: BytesMut,
}

/// What a TLS layer could not do.
#[derive(Debug)]
pub(super) enum LayerError {
    /// The peer ended the TLS session (close_notify, or EOF inside it).
    Closed,
    /// The peer broke the protocol, or its certificate was refused.
    Tls(rustls::Error),
}

impl TlsLayer {
    pub(super) fn new(conn: rustls::Connection) -> TlsLayer {
        TlsLayer {
            conn,
            raw: BytesMut::new(),
        }
    }

    pub(super) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Lends the buffer that the socket's next read fills, with room for
    /// one read; [`TlsLayer::took`] gives it back.
    pub(super) fn lend_raw(&mut self) -> BytesMut {
        let mut raw = std::mem::take(&mut self.raw);
        raw.reserve(RAW_READ);
        raw
    }

    /// The buffer lent by [`TlsLayer::lend_raw`], with what the socket
    /// added, goes to rustls.
    pub(super) fn took(&mut self, raw: BytesMut) -> Result<(), LayerError> {
        self.raw = raw;
        self.feed()
    }

    /// Hands buffered ciphertext to rustls for as long as it wants more.
    fn feed(&mut self) -> Result<(), LayerError> {
        while !self.raw.is_empty() && self.conn.wants_read() {
            let mut slice = &self.raw[..];
            let n = match self.conn.read_tls(&mut slice) {
                Ok(n) => n,
                // Its buffers are full: feed the rest after the reader.
                Err(_) => return Ok(()),
            };
            self.raw.advance(n);
            self.conn.process_new_packets().map_err(LayerError::Tls)?;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Moves decrypted bytes into `buf` (with at least `min_room` spare);
    /// `Ok(None)` when rustls needs more ciphertext first.
    pub(super) fn plaintext_into(
        &mut self,
        buf: &mut BytesMut,
        min_room: usize,
    ) -> Result<Option<usize>, LayerError> {
        // Ciphertext left over from a read that filled rustls's buffers.
        self.feed()?;
        let len = buf.len();
        buf.resize(len + min_room.max(4096), 0);
        let r = self.conn.reader().read(&mut buf[len..]);
        match r {
            Ok(0) => {
                buf.truncate(len);
                Err(LayerError::Closed)
            }
            Ok(n) => {
                buf.truncate(len + n);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(len);
                Ok(None)
            }
            Err(_) => {
                buf.truncate(len);
                Err(LayerError::Closed)
            }
        }
    }

    /// Encrypts as much of `plain` as rustls takes now; how much it took.
    pub(super) fn encrypt(&mut self, plain: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(plain)
    }

    /// Appends the ciphertext rustls wants sent (handshake flights,
    /// alerts, encrypted data) to `out`.
    pub(super) fn drain(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Queues a close_notify alert for [`TlsLayer::drain`].
    pub(super) fn close(&mut self) {
        self.conn.send_close_notify();
    }

    pub(super) fn summary(&self) -> Option<TlsSummary> {
        let version = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let resumed = self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Some(TlsSummary {
            version,
            cipher,
            resumed,
        })
    }
}
