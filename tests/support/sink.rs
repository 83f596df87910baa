//! A small MX sink for the engine's end-to-end tests, on the bench's one MX
//! session driver: it stores what it accepts (bodies and the peer address)
//! and follows a per-address script for refusals and faults. The bench's
//! sinks model capacities by chance and keep digests; these tests need
//! deterministic scripts ("451 to this address once", "cut the next body
//! once") and whole bodies.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use volley_bench::{DataEnd, Flow, MxService, MxSession, MxSink, SinkTls};
use volley_smtp::{BodyType, Extensions, MailParams, Reply, ServerConfig, Verdict};

/// One message as the sink accepted it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The address the message came from (Volley's source address).
    pub peer: IpAddr,
    pub sender: String,
    pub recipients: Vec<String>,
    /// MAIL's BODY parameter as it arrived.
    pub body_type: Option<BodyType>,
    /// The `Received:` header at the top of the message (with its folded
    /// lines), empty when there was none: Volley adds one to every message.
    pub trace: String,
    /// The message after that header: what the Composer sent.
    pub body: Vec<u8>,
}

/// Splits a leading `Received:` header (its first line and the folded
/// lines after it) from the rest of `message`.
fn split_trace(mut message: Vec<u8>) -> (String, Vec<u8>) {
    if !message.starts_with(b"Received:") {
        return (String::new(), message);
    }
    let mut end = 0;
    loop {
        match message[end..].iter().position(|&b| b == b'\n') {
            Some(lf) => end += lf + 1,
            None => end = message.len(),
        }
        if !message.get(end).is_some_and(|&b| b == b'\t' || b == b' ') {
            break;
        }
    }
    let rest = message.split_off(end);
    (String::from_utf8_lossy(&message).into_owned(), rest)
}

type RcptFn = dyn Fn(&str, usize) -> Option<Reply> + Send + Sync;

/// What the sink does besides accepting.
#[derive(Default)]
pub struct Script {
    /// Reply for RCPT TO (address, how many times this address was seen
    /// before); `None` accepts.
    pub rcpt: Option<Box<RcptFn>>,
    /// Drop the connection in the middle of the next body (once).
    pub cut_mid_data_once: AtomicBool,
    /// Wait this long before answering the end of data.
    pub data_delay: Option<Duration>,
    /// The extensions offered in EHLO; `None`: the server's defaults
    /// (8BITMIME, CHUNKING, BINARYMIME and the rest).
    pub extensions: Option<Extensions>,
    /// STARTTLS offered, and what happens when it is asked for.
    pub tls: Option<SinkTls>,
}

pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    _serving: MxSink,
}

impl Sink {
    /// Listens on `ip:port` (port 0: any) with `script`.
    pub fn start(ip: Ipv4Addr, port: u16, script: Script) -> std::io::Result<Sink> {
        let listener = TcpListener::bind((ip, port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            script,
            received: Arc::new(Mutex::new(Vec::new())),
            connections: Arc::new(AtomicUsize::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            seen: Mutex::new(HashMap::new()),
        });
        let (received, connections) = (state.received.clone(), state.connections.clone());
        let open = state.open.clone();
        let service = Arc::new(Scripted(state));
        Ok(Sink {
            addr,
            received,
            connections,
            open,
            _serving: MxSink::start(vec![(listener, service)], 1)?,
        })
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }
}

/// The sink's service: every session shares its state.
struct Scripted(Arc<State>);

struct State {
    script: Script,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// RCPTs seen per address, over every connection.
    seen: Mutex<HashMap<String, usize>>,
}

impl MxService for Scripted {
    type Session = Session;

    fn server_config(&self) -> ServerConfig {
        ServerConfig {
            hostname: "sink.test".into(),
            extensions: self.0.script.extensions.clone().unwrap_or_default(),
            ..ServerConfig::default()
        }
    }

    fn tls(&self) -> Option<SinkTls> {
        self.0.script.tls.clone()
    }

    fn connect(&self, peer: SocketAddr) -> Result<Session, Reply> {
        self.0.connections.fetch_add(1, Ordering::Relaxed);
        self.0.open.fetch_add(1, Ordering::SeqCst);
        Ok(Session {
            sink: self.0.clone(),
            peer: peer.ip(),
            sender: String::new(),
            body_type: None,
            body: Vec::new(),
        })
    }
}

struct Session {
    sink: Arc<State>,
    peer: IpAddr,
    sender: String,
    body_type: Option<BodyType>,
    body: Vec<u8>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sink.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MxSession for Session {
    fn mail(&mut self, reverse_path: Option<&str>, params: &MailParams) -> Verdict {
        self.sender = reverse_path.unwrap_or_default().to_string();
        self.body_type = params.body;
        self.body.clear();
        Verdict::Accept
    }

    fn rcpt(&mut self, forward_path: &str) -> Verdict {
        let n = {
            let mut seen = self.sink.seen.lock();
            let n = seen.entry(forward_path.to_string()).or_insert(0);
            *n += 1;
            *n - 1
        };
        match self
            .sink
            .script
            .rcpt
            .as_ref()
            .and_then(|f| f(forward_path, n))
        {
            Some(reply) => Verdict::Reject(reply),
            None => Verdict::Accept,
        }
    }

    fn body_chunk(&mut self, chunk: &[u8]) -> Flow {
        self.body.extend_from_slice(chunk);
        if self
            .sink
            .script
            .cut_mid_data_once
            .swap(false, Ordering::SeqCst)
        {
            return Flow::Cut;
        }
        Flow::Continue
    }

    fn message_complete(&mut self, recipients: &[String]) -> DataEnd {
        let (trace, body) = split_trace(std::mem::take(&mut self.body));
        self.sink.received.lock().push(Received {
            peer: self.peer,
            sender: self.sender.clone(),
            recipients: recipients.to_vec(),
            body_type: self.body_type,
            trace,
            body,
        });
        DataEnd::Accept {
            delay: self.sink.script.data_delay.unwrap_or_default(),
        }
    }

    fn aborted(&mut self) {
        self.body.clear();
    }
}
