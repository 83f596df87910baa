//! One MX session driver for every sink Volley is measured or tested
//! against: the simulated internet's capacity-modelled sinks, the end-to-end
//! tests' scripted sink and the durable-throughput example's counting sink.
//!
//! The driver owns the socket loop around `volley-smtp`'s sans-IO
//! [`Server`]: reading, flushing replies before a delay, the idle timeout,
//! and accepting every recipient's verdict at the end of an LMTP body. What
//! differs between sinks is only what they decide at each step, which they
//! say through [`MxService`] (per connection) and [`MxSession`] (per
//! command). Each sink thread runs a current-thread tokio runtime; a
//! [`MxSink`] handle stops it when dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use volley_smtp::{
    MailParams, Reply, Server, ServerConfig, ServerEvent, UnexpectedVerdict, Verdict,
};

/// Idle time after which a sink closes a silent connection (`421 4.4.2`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a sink decides when a connection arrives.
pub trait MxService: Send + Sync + 'static {
    /// The per-connection state and decisions.
    type Session: MxSession;

    /// The SMTP server settings (name, extensions) of every session.
    fn server_config(&self) -> ServerConfig;

    /// A new connection from `peer`: a session, or the greeting that
    /// refuses it (sent, then the connection closes).
    fn connect(&self, peer: SocketAddr) -> Result<Self::Session, Reply>;

    /// Whether the host is up now; a connection to a host that is down is
    /// reset at once, without a greeting. Up by default.
    fn is_up(&self) -> bool {
        true
    }

    /// Whether STARTTLS is offered, and what happens when it is asked
    /// for; `None` (the default): not offered.
    fn tls(&self) -> Option<SinkTls> {
        None
    }
}

/// What a sink that offers STARTTLS does when a client asks for it.
#[derive(Clone)]
pub enum SinkTls {
    /// `220`, then a handshake with this configuration.
    Offer(Arc<rustls::ServerConfig>),
    /// Answers STARTTLS with this reply (e.g. `454 4.7.0`) and goes on in
    /// clear text.
    Refuse(Reply),
    /// `220`, then bytes that are not TLS, then the connection closes: a
    /// receiver whose TLS is broken.
    Break,
}

/// What happens to a message once its body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// Answer 250 (for every recipient) after `delay`.
    Accept {
        /// How long the reply waits.
        delay: Duration,
    },
    /// Wait `delay`, then drop the connection without a reply.
    Drop {
        /// How long before the drop.
        delay: Duration,
    },
}

/// Whether the session goes on after a body chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Drop the connection now, mid-body.
    Cut,
}

/// A sink's decisions within one connection. Dropped when the connection
/// ends, however it ends, so a sink can release what it counted in
/// [`MxService::connect`] in its `Drop`.
pub trait MxSession: Send + 'static {
    /// MAIL FROM (`None` for the null path) with its parameters: the verdict.
    fn mail(&mut self, _reverse_path: Option<&str>, _params: &MailParams) -> Verdict {
        Verdict::Accept
    }

    /// RCPT TO: the verdict. Accepted recipients are handed back at
    /// [`MxSession::message_complete`].
    fn rcpt(&mut self, _forward_path: &str) -> Verdict {
        Verdict::Accept
    }

    /// How long to hold the `354` that invites the body.
    fn data_delay(&mut self) -> Duration {
        Duration::ZERO
    }

    /// A piece of the body, in order.
    fn body_chunk(&mut self, _chunk: &[u8]) -> Flow {
        Flow::Continue
    }

    /// The body is complete; `recipients` are those accepted at RCPT.
    fn message_complete(&mut self, recipients: &[String]) -> DataEnd;

    /// The transaction ended without a message (RSET, a cut, a bad body).
    fn aborted(&mut self) {}
}

/// Sink threads serving a set of listeners; stops them when dropped.
pub struct MxSink {
    stop: Option<watch::Sender<bool>>,
    threads: Vec<JoinHandle<()>>,
}

impl MxSink {
    /// Serves each listener with its service on `threads` threads (the
    /// listeners are spread over them in turn), named `volley-sink-N`.
    pub fn start<S: MxService>(
        listeners: Vec<(std::net::TcpListener, Arc<S>)>,
        threads: usize,
    ) -> io::Result<MxSink> {
        let threads_n = threads.max(1);
        let mut per_thread: Vec<Vec<(std::net::TcpListener, Arc<S>)>> =
            (0..threads_n).map(|_| Vec::new()).collect();
        for (i, l) in listeners.into_iter().enumerate() {
            per_thread[i % threads_n].push(l);
        }
        let (stop, stopped) = watch::channel(false);
        let mut sink = MxSink {
            stop: Some(stop),
            threads: Vec::new(),
        };
        for (t, listeners) in per_thread.into_iter().enumerate() {
            if listeners.is_empty() {
                continue;
            }
            let stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("volley-sink-{t}"))
                .spawn(move || run_thread(listeners, stopped))?;
            sink.threads.push(thread);
        }
        Ok(sink)
    }
}

impl Drop for MxSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run_thread<S: MxService>(
    listeners: Vec<(std::net::TcpListener, Arc<S>)>,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        for (listener, service) in listeners {
            if listener.set_nonblocking(true).is_err() {
                continue;
            }
            if let Ok(l) = TcpListener::from_std(listener) {
                tokio::spawn(accept_loop(l, service));
            }
        }
        let _ = stopped.wait_for(|s| *s).await;
    });
    // Dropping the runtime cancels every accept loop and session.
}

async fn accept_loop<S: MxService>(listener: TcpListener, service: Arc<S>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve(stream, peer, service.clone()));
            }
            // Out of descriptors or similar: pause rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve<S: MxService>(mut stream: TcpStream, peer: SocketAddr, service: Arc<S>) {
    if !service.is_up() {
        // A zero linger makes the close a reset, as a host with nothing
        // listening answers.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        return;
    }
    let _ = stream.set_nodelay(true);
    match service.connect(peer) {
        Ok(mut session) => {
            let tls = service.tls();
            let mut config = service.server_config();
            config.extensions.starttls = tls.is_some();
            let server = Server::new(config);
            let Ok(Ended::StartTls(mut server)) =
                run_session(&mut stream, server, &mut session, tls.as_ref()).await
            else {
                return;
            };
            match tls {
                Some(SinkTls::Offer(config)) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    if server.tls_started().is_ok() {
                        let _ = run_session(&mut stream, *server, &mut session, None).await;
                    }
                }
                _ => {
                    let _ = stream.write_all(b"\x15\x03\x03\x00\x02garbage").await;
                    let _ = stream.shutdown().await;
                }
            }
        }
        Err(reply) => {
            let mut out = Vec::new();
            reply.encode(&mut out);
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// How a session on one stream ended.
enum Ended {
    /// Closed, or given up on.
    Over,
    /// STARTTLS was accepted and its `220` sent: the handshake comes next.
    StartTls(Box<Server>),
}

/// One SMTP or LMTP session on an accepted connection.
async fn run_session<M: MxSession, T: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut T,
    mut server: Server,
    session: &mut M,
    tls: Option<&SinkTls>,
) -> io::Result<Ended> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Mail {
                    reverse_path,
                    params,
                } => {
                    rcpts.clear();
                    let sender = reverse_path.map(|m| m.to_string());
                    let verdict = session.mail(sender.as_deref(), &params);
                    in_turn(server.mail_verdict(verdict))?;
                }
                ServerEvent::Rcpt { forward_path, .. } => {
                    let address = forward_path.to_string();
                    let verdict = session.rcpt(&address);
                    if matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_)) {
                        rcpts.push(address);
                    }
                    in_turn(server.rcpt_verdict(verdict))?;
                }
                ServerEvent::BodyChunk(chunk) => {
                    if session.body_chunk(&chunk) == Flow::Cut {
                        let _ = stream.shutdown().await;
                        return Ok(Ended::Over);
                    }
                }
                ServerEvent::MessageComplete => {
                    // Replies to the commands before the body go out first.
                    flush(stream, &mut server).await?;
                    match session.message_complete(&rcpts) {
                        DataEnd::Accept { delay } => {
                            tokio::time::sleep(delay).await;
                            in_turn(server.accept_message())?;
                        }
                        DataEnd::Drop { delay } => {
                            tokio::time::sleep(delay).await;
                            return Ok(Ended::Over);
                        }
                    }
                    rcpts.clear();
                }
                ServerEvent::TransactionAborted(_) => {
                    rcpts.clear();
                    session.aborted();
                }
                // Sinks never offer AUTH.
                ServerEvent::Auth(_) => {
                    let no = Reply::new(502, volley_smtp::EnhancedCode::new(5, 5, 1), "no AUTH");
                    in_turn(server.auth_verdict(Verdict::Reject(no)))?;
                }
                ServerEvent::StartTls => match tls {
                    Some(SinkTls::Refuse(reply)) => {
                        in_turn(server.starttls_verdict(Verdict::Reject(reply.clone())))?;
                    }
                    _ => {
                        in_turn(server.starttls_verdict(Verdict::Accept))?;
                        flush(stream, &mut server).await?;
                        return Ok(Ended::StartTls(Box::new(server)));
                    }
                },
                ServerEvent::Quit | ServerEvent::Closed(_) => {}
            }
        }
        if has_354(server.output()) {
            let delay = session.data_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        flush(stream, &mut server).await?;
        if server.is_closed() {
            let _ = stream.shutdown().await;
            return Ok(Ended::Over);
        }
        if start < end {
            let taken = server.receive(&buf[start..end]);
            if taken == 0 {
                // Every verdict is given at once and output is flushed, so
                // the server always has room: this would be a bug here.
                return Err(io::Error::other("sink session stalled"));
            }
            start += taken;
            continue;
        }
        match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Ended::Over),
            Ok(Ok(n)) => {
                start = 0;
                end = n;
            }
            Err(_) => server.timeout(),
        }
    }
}

/// A verdict out of turn is a bug in this file; end the session over it.
fn in_turn(r: Result<(), UnexpectedVerdict>) -> io::Result<()> {
    r.map_err(io::Error::other)
}

async fn flush<T: AsyncWrite + Unpin>(stream: &mut T, server: &mut Server) -> io::Result<()> {
    let out = server.output();
    if out.is_empty() {
        return Ok(());
    }
    stream.write_all(out).await?;
    let n = out.len();
    server.consume_output(n);
    Ok(())
}

/// Whether a `354` reply (go ahead with DATA) is about to be sent.
fn has_354(out: &[u8]) -> bool {
    out.split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"354"))
}
