//! The bench's messages: written by the Composer load with a unique id and
//! the injection time in headers, read back by the sinks. The id is what
//! loss and duplicate accounting counts; the time gives end-to-end latency.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::capacity::fnv1a;
use crate::load::Planned;

/// Header carrying the message's unique id in the run.
pub const ID_HEADER: &str = "X-Volley-Bench-Id";
/// Header carrying the injection time, microseconds since the Unix epoch.
pub const SENT_HEADER: &str = "X-Volley-Bench-Sent";

/// Longest header section a sink keeps to find the bench headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Microseconds since the Unix epoch: comparable across processes.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A message ready to hand to the SMTP client.
#[derive(Debug, Clone)]
pub struct Composed {
    /// The unique id, `{run}.{number}`.
    pub id: String,
    /// The recipient.
    pub recipient: String,
    /// The whole message (headers, blank line, body), CRLF lines, not dot-stuffed.
    pub data: Bytes,
    /// FNV-1a of the body after the header section: the sink computes the
    /// same, so a changed body shows.
    pub digest: u64,
    /// When it was composed (microseconds since the epoch).
    pub sent_micros: u64,
}

/// Fills the template for `plan` and pads the body to its size.
pub fn compose(run: &str, sender: &str, template: &str, plan: &Planned) -> Composed {
    let id = format!("{run}.{}", plan.number);
    let name = format!("Subscriber {}", plan.number);
    let sent_micros = unix_micros();
    let mut data = Vec::with_capacity(plan.size + 512);
    let headers = format!(
        "From: Composer <{sender}>\r\nTo: {name} <{rcpt}>\r\nSubject: Volley bench {number}\r\nMessage-ID: <{id}@bench.test>\r\n{ID_HEADER}: {id}\r\n{SENT_HEADER}: {sent_micros}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        rcpt = plan.recipient,
        number = plan.number,
    );
    data.extend_from_slice(headers.as_bytes());
    let body_start = data.len();
    let filled = template
        .replace("{name}", &name)
        .replace("{number}", &plan.number.to_string())
        .replace("{email}", &plan.recipient)
        .replace("{id}", &id);
    data.extend_from_slice(filled.as_bytes());
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    const FILL: &[u8] =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n";
    while data.len() < plan.size {
        data.extend_from_slice(FILL);
    }
    let digest = fnv1a(&data[body_start..]);
    Composed {
        id,
        recipient: plan.recipient.clone(),
        data: Bytes::from(data),
        digest,
        sent_micros,
    }
}

/// What a sink learned from one received message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    /// The bench id, if the header was there.
    pub id: Option<String>,
    /// The injection time, if the header was there.
    pub sent_micros: Option<u64>,
    /// FNV-1a of the body after the header section.
    pub digest: u64,
    /// Size of the whole message as received.
    pub size: u64,
}

/// Reads a message chunk by chunk without keeping the body: the header
/// section (bounded) for the bench headers, a running digest for the rest.
#[derive(Debug)]
pub struct Inspector {
    headers: Vec<u8>,
    in_body: bool,
    digest: u64,
    size: u64,
}

impl Default for Inspector {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            in_body: false,
            digest: 0xcbf2_9ce4_8422_2325,
            size: 0,
        }
    }
}

impl Inspector {
    /// Feeds the next piece of the (un-stuffed) message.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if !self.in_body {
            let keep_from = self.headers.len().saturating_sub(3);
            let room = MAX_HEADER_BYTES.saturating_sub(self.headers.len());
            let take = chunk.len().min(room.max(1));
            self.headers.extend_from_slice(&chunk[..take]);
            let found = memfind(&self.headers[keep_from..], b"\r\n\r\n").map(|p| p + keep_from + 4);
            match found {
                Some(end) => {
                    let body_in_headers = self.headers.len() - end;
                    let body_start = take - body_in_headers;
                    self.headers.truncate(end);
                    self.in_body = true;
                    chunk = &chunk[body_start..];
                }
                None if self.headers.len() >= MAX_HEADER_BYTES => {
                    // No header end in sight: treat the rest as body.
                    self.in_body = true;
                    chunk = &chunk[take..];
                }
                None => return,
            }
        }
        for &b in chunk {
            self.digest ^= u64::from(b);
            self.digest = self.digest.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// What was found.
    pub fn finish(self) -> Inspected {
        let text = String::from_utf8_lossy(&self.headers);
        let header = |name: &str| {
            text.split("\r\n").find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        Inspected {
            id: header(ID_HEADER),
            sent_micros: header(SENT_HEADER).and_then(|v| v.parse().ok()),
            digest: self.digest,
            size: self.size,
        }
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: usize) -> Planned {
        Planned {
            number: 7,
            recipient: "user7@a.test".into(),
            size,
        }
    }

    #[test]
    fn composes_personalized_messages_of_the_asked_size() {
        let m = compose(
            "run1",
            "c@b.test",
            "Hi {name} #{number} <{email}> {id}\r\n",
            &plan(3000),
        );
        let text = String::from_utf8(m.data.to_vec()).unwrap();
        assert!(text.contains("Hi Subscriber 7 #7 <user7@a.test> run1.7\r\n"));
        assert!(text.contains("X-Volley-Bench-Id: run1.7\r\n"));
        assert!(m.data.len() >= 3000 && m.data.len() < 3100);
        assert_eq!(m.id, "run1.7");
    }

    #[test]
    fn inspector_finds_headers_and_digest_in_any_chunking() {
        let m = compose("r", "c@b.test", crate::load::DEFAULT_TEMPLATE, &plan(5000));
        // A relay adds a trace header at the top: the digest ignores headers.
        let mut relayed = b"Received: from composer by relay\r\n".to_vec();
        relayed.extend_from_slice(&m.data);
        for chunk_size in [1, 2, 3, 7, 64, 10_000] {
            let mut insp = Inspector::default();
            for c in relayed.chunks(chunk_size) {
                insp.feed(c);
            }
            let got = insp.finish();
            assert_eq!(got.id.as_deref(), Some("r.7"), "chunk {chunk_size}");
            assert_eq!(got.sent_micros, Some(m.sent_micros));
            assert_eq!(got.digest, m.digest, "chunk {chunk_size}");
            assert_eq!(got.size, relayed.len() as u64);
        }
    }

    #[test]
    fn inspector_reports_a_changed_body_and_a_missing_id() {
        let m = compose("r", "c@b.test", "x\r\n", &plan(500));
        let mut changed = m.data.to_vec();
        let last = changed.len() - 3;
        changed[last] ^= 1;
        let mut insp = Inspector::default();
        insp.feed(&changed);
        assert_ne!(insp.finish().digest, m.digest);
        let mut insp = Inspector::default();
        insp.feed(b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(insp.finish().id, None);
    }
}
