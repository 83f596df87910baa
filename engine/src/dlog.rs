//! The delivery log: one JSON line per recipient outcome.
//!
//! Shards format their lines and hand them to one writer thread over a
//! channel, so no shard ever waits on the disk; the writer flushes whenever
//! the channel runs dry and when the engine stops.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use volley_smtp::Reply;

use crate::rate::RateSnapshot;
use crate::receivers::{self, Reason};

/// What happened to a recipient in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Delivered,
    Deferred,
    Bounced,
    Expired,
}

/// Why a recipient was not delivered, in the words an operator sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Category {
    BadMailbox,
    MailboxFull,
    Policy,
    Throttled,
    Dns,
    Connection,
    /// DKIM, SPF, DMARC or PTR, by a receiver's documented reply.
    Authentication,
    /// Complaints or a block of the sending address, by a receiver's
    /// documented reply.
    Reputation,
    /// Too fast, by a receiver's documented reply.
    Rate,
    /// TLS wanted and not had: the receiver's reply, or Volley's own
    /// policy (a failed handshake, STARTTLS missing or refused).
    Tls,
    Other,
}

impl Category {
    /// How many categories there are.
    pub(crate) const COUNT: usize = 11;
    /// Every category, in the order of their numbers (`c as usize`).
    pub(crate) const ALL: [Category; Category::COUNT] = [
        Category::BadMailbox,
        Category::MailboxFull,
        Category::Policy,
        Category::Throttled,
        Category::Dns,
        Category::Connection,
        Category::Authentication,
        Category::Reputation,
        Category::Rate,
        Category::Tls,
        Category::Other,
    ];

    /// Its name in the delivery log and the metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Category::BadMailbox => "bad_mailbox",
            Category::MailboxFull => "mailbox_full",
            Category::Policy => "policy",
            Category::Throttled => "throttled",
            Category::Dns => "dns",
            Category::Connection => "connection",
            Category::Authentication => "authentication",
            Category::Reputation => "reputation",
            Category::Rate => "rate",
            Category::Tls => "tls",
            Category::Other => "other",
        }
    }

    /// Classifies a remote reply: a big receiver's documented policy reply
    /// by what its documentation says, others by RFC 3463 subject, then
    /// by the text.
    pub(crate) fn of_reply(reply: &Reply) -> Category {
        if let Some(reason) = receivers::reason(reply) {
            return match reason {
                Reason::Authentication => Category::Authentication,
                Reason::Reputation => Category::Reputation,
                Reason::Rate => Category::Rate,
                Reason::Tls => Category::Tls,
            };
        }
        let text = reply.text().to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if let Some(e) = reply.enhanced {
            match (e.subject, e.detail) {
                (1, 1) | (1, 2) | (1, 3) | (1, 6) | (1, 10) | (2, 1) => {
                    return Category::BadMailbox;
                }
                (2, 2) => return Category::MailboxFull,
                (4, 5) => return Category::Throttled,
                (7, _)
                    if reply.is_transient()
                        && has(&["rate", "too many", "throttl", "slow down", "limit"]) =>
                {
                    return Category::Throttled;
                }
                (7, _) => return Category::Policy,
                _ => {}
            }
        }
        if has(&[
            "user unknown",
            "no such user",
            "does not exist",
            "unknown user",
            "mailbox unavailable",
            "invalid recipient",
        ]) {
            Category::BadMailbox
        } else if has(&[
            "quota",
            "mailbox full",
            "over quota",
            "insufficient storage",
        ]) {
            Category::MailboxFull
        } else if has(&[
            "rate",
            "too many",
            "throttl",
            "slow down",
            "try again later",
        ]) {
            Category::Throttled
        } else if has(&[
            "spam",
            "blocked",
            "blacklist",
            "blocklist",
            "policy",
            "reputation",
            "denied",
        ]) {
            Category::Policy
        } else {
            Category::Other
        }
    }
}

/// One line of the delivery log.
#[derive(Debug, Serialize)]
pub(crate) struct Record<'a> {
    /// Seconds since the Unix epoch, with milliseconds.
    pub(crate) time: f64,
    pub(crate) message_id: String,
    /// The message's own `Message-ID` header, if it has one.
    pub(crate) message_id_header: Option<&'a str>,
    pub(crate) sender: &'a str,
    pub(crate) recipient: &'a str,
    pub(crate) domain: &'a str,
    pub(crate) mx: Option<&'a str>,
    pub(crate) ip: Option<String>,
    /// How TLS went with the MX host: version, cipher, whether the
    /// certificate was verified; null in clear text.
    pub(crate) tls: Option<crate::tls::TlsUsed>,
    pub(crate) attempt: u32,
    pub(crate) status: Status,
    pub(crate) code: Option<u16>,
    pub(crate) enhanced: Option<String>,
    pub(crate) text: String,
    /// From acceptance by Volley to this outcome, in milliseconds.
    pub(crate) latency_ms: u64,
    pub(crate) category: Option<Category>,
    /// The destination's pace when the outcome came (adaptive queues only):
    /// its limits, rate, latency floor and recent latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<RateSnapshot>,
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// What the writer thread is told.
enum ToWriter {
    /// One JSON line, newline included.
    Line(String),
    /// Flush, close the file and open the path again: after logrotate has
    /// renamed it, new lines go to a new file, without copytruncate.
    Reopen,
    /// Flush and stop after what was sent before.
    Stop,
}

/// A handle shards write through; cheap to clone.
#[derive(Clone)]
pub(crate) struct DeliveryLog {
    tx: Option<mpsc::Sender<ToWriter>>,
}

/// The writer thread; joins (after a final flush) when every handle is gone.
pub(crate) struct LogWriter {
    thread: Option<JoinHandle<()>>,
}

fn open_append(path: &Path) -> std::io::Result<BufWriter<File>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(1 << 16, file))
}

impl DeliveryLog {
    /// A log that writes nothing (no path configured).
    pub(crate) fn off() -> DeliveryLog {
        DeliveryLog { tx: None }
    }

    /// Opens (appends to) `path` and starts the writer thread.
    pub(crate) fn open(path: &Path) -> std::io::Result<(DeliveryLog, LogWriter)> {
        let mut out = open_append(path)?;
        let path = path.to_path_buf();
        let (tx, rx) = mpsc::channel::<ToWriter>();
        let thread = std::thread::Builder::new()
            .name("volley-dlog".into())
            .spawn(move || {
                // Write what has arrived, flush when the channel runs dry.
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(message) = next.take() {
                        match message {
                            ToWriter::Line(line) => {
                                let _ = out.write_all(line.as_bytes());
                            }
                            ToWriter::Reopen => {
                                let _ = out.flush();
                                match open_append(&path) {
                                    Ok(reopened) => out = reopened,
                                    Err(e) => tracing::warn!(
                                        "cannot reopen the delivery log {}: {e}; writing on to the old file",
                                        path.display()
                                    ),
                                }
                            }
                            ToWriter::Stop => {
                                let _ = out.flush();
                                return;
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                }
                let _ = out.flush();
            })?;
        Ok((
            DeliveryLog { tx: Some(tx) },
            LogWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Tells the writer to flush and stop after the lines sent so far.
    pub(crate) fn close(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToWriter::Stop);
        }
    }

    /// Tells the writer to open the log's path again after the lines sent
    /// so far (SIGHUP, for logrotate).
    pub(crate) fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToWriter::Reopen);
        }
    }

    #[cfg(test)]
    pub(crate) fn write(&self, record: &Record<'_>) {
        if self.tx.is_some()
            && let Ok(line) = serde_json::to_string(record)
        {
            self.write_line(line);
        }
    }

    /// Writes a line [`Record`] already made (without its newline).
    pub(crate) fn write_line(&self, mut line: String) {
        if let Some(tx) = &self.tx {
            line.push('\n');
            let _ = tx.send(ToWriter::Line(line));
        }
    }

    /// Whether lines go anywhere.
    pub(crate) fn is_on(&self) -> bool {
        self.tx.is_some()
    }
}

impl LogWriter {
    /// Waits for the writer to flush and stop (after every handle dropped).
    pub(crate) fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_listed_at_its_number_with_its_log_name() {
        for (i, c) in Category::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            let logged = serde_json::to_value(c).unwrap();
            assert_eq!(logged, c.name());
        }
    }
    use volley_smtp::EnhancedCode;

    fn reply(code: u16, e: (u8, u16, u16), text: &str) -> Reply {
        Reply::new(code, EnhancedCode::new(e.0, e.1, e.2), text)
    }

    fn record(recipient: &str) -> Record<'_> {
        Record {
            time: 1.0,
            message_id: "1".into(),
            message_id_header: None,
            sender: "s@example.com",
            recipient,
            domain: "example.com",
            mx: None,
            ip: None,
            tls: None,
            attempt: 1,
            status: Status::Delivered,
            code: Some(250),
            enhanced: None,
            text: "ok".into(),
            latency_ms: 1,
            category: None,
            rate: None,
        }
    }

    #[test]
    fn a_reopen_after_a_rename_writes_on_in_a_new_file() {
        let dir = std::env::temp_dir().join(format!("volley-dlog-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("delivery.log");
        let rotated = dir.join("delivery.log.1");
        let (log, writer) = DeliveryLog::open(&path).unwrap();
        log.write(&record("before@example.com"));
        // What logrotate does, then its postrotate SIGHUP.
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.write(&record("after@example.com"));
        log.close();
        drop(log);
        writer.join();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("before@") && !old.contains("after@"), "{old}");
        assert!(new.contains("after@") && !new.contains("before@"), "{new}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn categories_from_enhanced_codes_and_text() {
        assert_eq!(
            Category::of_reply(&reply(550, (5, 1, 1), "no")),
            Category::BadMailbox
        );
        assert_eq!(
            Category::of_reply(&reply(452, (4, 2, 2), "full")),
            Category::MailboxFull
        );
        assert_eq!(
            Category::of_reply(&reply(554, (5, 7, 1), "spam")),
            Category::Policy
        );
        assert_eq!(
            Category::of_reply(&reply(421, (4, 7, 0), "too many connections")),
            Category::Throttled
        );
        let plain = Reply {
            code: 550,
            enhanced: None,
            lines: vec!["User unknown".into()],
        };
        assert_eq!(Category::of_reply(&plain), Category::BadMailbox);
        assert_eq!(
            Category::of_reply(&reply(451, (4, 3, 0), "oops")),
            Category::Other
        );
    }

    #[test]
    fn lines_reach_the_file_as_json() {
        let dir = std::env::temp_dir().join(format!("volley-dlog-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let (log, writer) = DeliveryLog::open(&dir).unwrap();
        log.write(&Record {
            time: unix_now(),
            message_id: "1".into(),
            message_id_header: Some("<m@c.example>"),
            sender: "a@b",
            recipient: "c@d",
            domain: "d",
            mx: Some("mx.d"),
            ip: Some("127.0.0.2".into()),
            tls: None,
            attempt: 1,
            status: Status::Bounced,
            code: Some(550),
            enhanced: Some("5.1.1".into()),
            text: "no such user".into(),
            latency_ms: 3,
            category: Some(Category::BadMailbox),
            rate: None,
        });
        log.close();
        writer.join();
        let text = std::fs::read_to_string(&dir).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["status"], "bounced");
        assert_eq!(v["category"], "bad_mailbox");
        assert_eq!(v["code"], 550);
        let _ = std::fs::remove_file(&dir);
    }
}
