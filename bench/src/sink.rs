//! The simulated internet's MX sinks: every policy decision of a session
//! (connection limit, rate, unknown mailboxes, greylisting, drops, delays)
//! asked of the receiver's [`DomainModel`], on the one MX session driver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use volley_smtp::{Extensions, MailParams, Reply, ServerConfig, Verdict};

use crate::capacity::{ConnectVerdict, DataVerdict, DomainModel, RcptVerdict};
use crate::ledger::Delivery;
use crate::message::{Inspector, unix_micros};
use crate::mx::{DataEnd, MxService, MxSession, SinkTls};
use crate::scenario::{SimDomain, SimReceiver};

/// State the sink threads share: one capacity model per receiver (a
/// provider's domains share one) and the record of accepted messages.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) domains: Vec<SimDomain>,
    /// Index of each domain in `domains`, by its lower-case name.
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) receivers: Vec<SimReceiver>,
    /// One per receiver, in the same order.
    pub(crate) models: Vec<Mutex<DomainModel>>,
    pub(crate) deliveries: Mutex<Vec<Delivery>>,
}

impl Shared {
    /// The domain that takes a delivery for `recipient` at a sink of
    /// `receiver`: an ordinary domain's sink is its domain's, a provider's
    /// sink takes mail for all the domains it hosts. A recipient at a
    /// domain the provider does not host gets the provider's name, which
    /// no recipient's domain matches, so a check that each delivery
    /// reached its recipient's domain catches it.
    fn delivery_domain(&self, receiver: usize, recipient: &str) -> &str {
        let r = &self.receivers[receiver];
        if !r.provider {
            return &r.name;
        }
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        match self.by_name.get(&domain.to_ascii_lowercase()) {
            Some(&i) if self.domains[i].receiver == receiver => &self.domains[i].name,
            _ => &r.name,
        }
    }

    pub(crate) fn record(&self, delivery: Delivery) {
        if let Ok(mut d) = self.deliveries.lock() {
            d.push(delivery);
        }
    }

    /// Runs `f` on the receiver's model; `None` if a panic poisoned it.
    fn model<T>(&self, receiver: usize, f: impl FnOnce(&mut DomainModel) -> T) -> Option<T> {
        self.models[receiver].lock().ok().map(|mut m| f(&mut m))
    }
}

/// The sink of one MX address of one receiver.
pub(crate) struct DomainSink {
    pub(crate) shared: Arc<Shared>,
    /// Index of the receiver, in `Shared::receivers`.
    pub(crate) receiver: usize,
    /// STARTTLS offered with this, when the internet runs with TLS.
    pub(crate) tls: Option<SinkTls>,
}

impl MxService for DomainSink {
    type Session = DomainSession;

    fn tls(&self) -> Option<SinkTls> {
        self.tls.clone()
    }

    fn server_config(&self) -> ServerConfig {
        ServerConfig {
            hostname: format!("mx.{}", self.shared.receivers[self.receiver].name),
            extensions: Extensions {
                // DATA rather than BDAT, so slow DATA (a delayed 354)
                // applies to every sender.
                chunking: false,
                binarymime: false,
                ..Extensions::default()
            },
            ..ServerConfig::default()
        }
    }

    fn is_up(&self) -> bool {
        // A model a panic poisoned answers every connection with a 421.
        !self
            .shared
            .model(self.receiver, |m| m.is_down(Instant::now()))
            .unwrap_or(false)
    }

    fn connect(&self, _peer: SocketAddr) -> Result<DomainSession, Reply> {
        let verdict = self
            .shared
            .model(self.receiver, |m| m.connect(Instant::now()))
            .unwrap_or_else(|| {
                ConnectVerdict::Refuse(Reply::new(
                    421,
                    volley_smtp::EnhancedCode::new(4, 3, 0),
                    "sink model unavailable",
                ))
            });
        match verdict {
            ConnectVerdict::Refuse(reply) => Err(reply),
            ConnectVerdict::Accept => Ok(DomainSession {
                shared: self.shared.clone(),
                receiver: self.receiver,
                inspector: Inspector::default(),
            }),
        }
    }
}

/// One accepted connection; gives back the receiver's connection slot when
/// dropped, however the session ends.
pub(crate) struct DomainSession {
    shared: Arc<Shared>,
    receiver: usize,
    inspector: Inspector,
}

impl Drop for DomainSession {
    fn drop(&mut self) {
        self.shared.model(self.receiver, |m| m.disconnect());
    }
}

impl MxSession for DomainSession {
    fn mail(&mut self, _reverse_path: Option<&str>, _params: &MailParams) -> Verdict {
        self.inspector = Inspector::default();
        Verdict::Accept
    }

    fn rcpt(&mut self, forward_path: &str) -> Verdict {
        match self
            .shared
            .model(self.receiver, |m| m.rcpt(Instant::now(), forward_path))
        {
            Some(RcptVerdict::Accept) => Verdict::Accept,
            Some(RcptVerdict::Refuse(reply)) => Verdict::Reject(reply),
            None => Verdict::Reject(Reply::new(
                451,
                volley_smtp::EnhancedCode::new(4, 3, 0),
                "sink model unavailable",
            )),
        }
    }

    fn data_delay(&mut self) -> Duration {
        self.shared
            .model(self.receiver, |m| m.data_delay(Instant::now()))
            .unwrap_or_default()
    }

    fn body_chunk(&mut self, chunk: &[u8]) -> crate::mx::Flow {
        self.inspector.feed(chunk);
        crate::mx::Flow::Continue
    }

    fn message_complete(&mut self, recipients: &[String]) -> DataEnd {
        let n = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
        let verdict = self
            .shared
            .model(self.receiver, |m| m.data_end(Instant::now(), n));
        match verdict {
            Some(DataVerdict::Accept { delay }) => {
                // Recorded now, stamped with the moment the 250 goes out,
                // so the record always agrees with the counters even if
                // the run ends during the delay.
                let seen = std::mem::take(&mut self.inspector).finish();
                let accepted_micros = unix_micros() + delay.as_micros() as u64;
                for rcpt in recipients {
                    let domain = self.shared.delivery_domain(self.receiver, rcpt);
                    self.shared.record(Delivery {
                        id: seen.id.clone(),
                        recipient: rcpt.clone(),
                        domain: domain.to_string(),
                        digest: seen.digest,
                        size: seen.size,
                        sent_micros: seen.sent_micros,
                        accepted_micros,
                    });
                }
                DataEnd::Accept { delay }
            }
            Some(DataVerdict::Drop { delay }) => DataEnd::Drop { delay },
            None => DataEnd::Drop {
                delay: Duration::ZERO,
            },
        }
    }

    fn aborted(&mut self) {
        self.inspector = Inspector::default();
    }
}
