//! A small MX sink for the engine's end-to-end tests, on volley-smtp's
//! `Server` over std sockets (one thread per connection): it stores what it
//! accepts (bodies and the peer address) and follows a per-address script
//! for refusals and faults. The bench's sinks model capacities by chance and
//! keep digests; these tests need deterministic scripts ("451 to this
//! address once", "cut the next body once") and whole bodies.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use volley_smtp::{Reply, Server, ServerConfig, ServerEvent, Verdict};

/// One message as the sink accepted it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The address the message came from (Volley's source address).
    pub peer: std::net::IpAddr,
    pub sender: String,
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
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
}

pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Listens on `ip:port` (port 0: any) with `script`.
    pub fn start(ip: Ipv4Addr, port: u16, script: Script) -> std::io::Result<Sink> {
        let listener = TcpListener::bind((ip, port))?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        let seen = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
        let (r, c, s) = (received.clone(), connections.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::Relaxed);
                let (r, script, seen) = (r.clone(), script.clone(), seen.clone());
                std::thread::spawn(move || session(stream, r, script, seen));
            }
        });
        Ok(Sink {
            addr,
            received,
            connections,
            stop,
        })
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn session(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Script>,
    seen: Arc<Mutex<std::collections::HashMap<String, usize>>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(peer) = stream.peer_addr() else { return };
    let mut server = Server::new(ServerConfig {
        hostname: "sink.test".into(),
        ..ServerConfig::default()
    });
    let mut sender = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Mail { reverse_path, .. } => {
                    sender = reverse_path.map(|m| m.to_string()).unwrap_or_default();
                    rcpts.clear();
                    body.clear();
                    let _ = server.mail_verdict(Verdict::Accept);
                }
                ServerEvent::Rcpt { forward_path, .. } => {
                    let addr = forward_path.to_string();
                    let n = {
                        let mut seen = seen.lock();
                        let n = seen.entry(addr.clone()).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    match script.rcpt.as_ref().and_then(|f| f(&addr, n)) {
                        Some(reply) => {
                            let _ = server.rcpt_verdict(Verdict::Reject(reply));
                        }
                        None => {
                            rcpts.push(addr);
                            let _ = server.rcpt_verdict(Verdict::Accept);
                        }
                    }
                }
                ServerEvent::BodyChunk(chunk) => {
                    body.extend_from_slice(&chunk);
                    if script.cut_mid_data_once.swap(false, Ordering::SeqCst) {
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                }
                ServerEvent::MessageComplete => {
                    if let Some(d) = script.data_delay {
                        std::thread::sleep(d);
                    }
                    received.lock().push(Received {
                        peer: peer.ip(),
                        sender: sender.clone(),
                        recipients: std::mem::take(&mut rcpts),
                        body: std::mem::take(&mut body),
                    });
                    while server.pending().is_some() {
                        if server.message_verdict(Verdict::Accept).is_err() {
                            break;
                        }
                    }
                }
                ServerEvent::TransactionAborted(_) => {
                    rcpts.clear();
                    body.clear();
                }
                ServerEvent::Quit | ServerEvent::Closed(_) => {}
            }
        }
        let out = server.output();
        if !out.is_empty() {
            let n = out.len();
            if stream.write_all(out).is_err() {
                return;
            }
            server.consume_output(n);
        }
        if server.is_closed() {
            return;
        }
        if !pending.is_empty() {
            let n = server.receive(&pending);
            pending.drain(..n);
            if n > 0 {
                continue;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
