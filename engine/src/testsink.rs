//! A scripted SMTP sink for the engine's unit tests: plain std threads and
//! sockets, one reply per command line, bodies kept for comparison.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// What the sink answers to RCPT for a recipient; 250 when `None`.
/// Messages a sink accepted: (recipients, body).
pub(crate) type Got = Arc<Mutex<Vec<(Vec<String>, Vec<u8>)>>>;

pub(crate) type RcptScript = Arc<dyn Fn(&str, usize) -> Option<String> + Send + Sync>;

pub(crate) struct Sink {
    pub(crate) addr: SocketAddr,
    /// (recipients, body) of each accepted message.
    pub(crate) got: Got,
}

impl Sink {
    pub(crate) fn start(ip: [u8; 4], rcpt: RcptScript) -> Sink {
        let l = TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
        let addr = l.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (g, c) = (got.clone(), calls.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let (g, c, rcpt) = (g.clone(), c.clone(), rcpt.clone());
                std::thread::spawn(move || session(s, g, c, rcpt));
            }
        });
        Sink { addr, got }
    }
}

fn session(s: TcpStream, got: Got, calls: Arc<AtomicUsize>, rcpt: RcptScript) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 sink ESMTP\r\n");
    let mut rcpts = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let up = line.to_ascii_uppercase();
        let reply = if up.starts_with("EHLO") {
            "250-sink\r\n250 PIPELINING\r\n".to_string()
        } else if up.starts_with("MAIL") {
            rcpts.clear();
            "250 2.1.0 ok\r\n".into()
        } else if up.starts_with("RCPT") {
            let addr = line[8..]
                .trim()
                .trim_matches(|c| c == '<' || c == '>')
                .to_string();
            let n = calls.fetch_add(1, Ordering::SeqCst);
            match rcpt(&addr, n) {
                Some(r) => r,
                None => {
                    rcpts.push(addr);
                    "250 2.1.5 ok\r\n".into()
                }
            }
        } else if up.starts_with("DATA") && rcpts.is_empty() {
            "554 5.5.1 no valid recipients\r\n".into()
        } else if up.starts_with("DATA") {
            let _ = w.write_all(b"354 go\r\n");
            let mut body = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b"..") {
                    &l[1..]
                } else {
                    &l[..]
                };
                body.extend_from_slice(l);
            }
            got.lock().push((std::mem::take(&mut rcpts), body));
            "250 2.0.0 queued\r\n".into()
        } else if up.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else if up.starts_with("RSET") {
            rcpts.clear();
            "250 ok\r\n".into()
        } else {
            "500 what\r\n".into()
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
