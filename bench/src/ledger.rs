//! Loss and duplicate accounting: what the Composer handed over (and the
//! server under test accepted) against what the sinks kept.
//!
//! Every sent message must end exactly once: delivered to its recipient at a
//! sink, or refused for good by the sink (an unknown mailbox, which the
//! scenario says in advance). Anything else is a loss, a duplicate, an
//! unexpected message or a changed body, and the run is not clean.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Examples kept per kind of fault, for the report.
const EXAMPLES: usize = 10;

/// A message the server under test accepted from the Composer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    /// The bench id.
    pub id: String,
    /// Its one recipient.
    pub recipient: String,
    /// Digest of its body (see [`Composed`](crate::Composed)).
    pub digest: u64,
    /// The connection broke after the body was sent and before the reply:
    /// the server may or may not have taken it. Delivered or not, it is
    /// neither a loss nor unexpected.
    pub uncertain: bool,
}

/// A message a sink accepted (`250` after the dot) for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The bench id found in the message, if any.
    pub id: Option<String>,
    /// The recipient it was accepted for.
    pub recipient: String,
    /// The domain of the sink that took it. A provider's sink takes mail
    /// for all of its domains: the recipient's domain when the provider
    /// hosts it, otherwise the provider's name.
    pub domain: String,
    /// Digest of the body after the header section.
    pub digest: u64,
    /// Size of the message as received.
    pub size: u64,
    /// Injection time from the message's header.
    pub sent_micros: Option<u64>,
    /// When the sink accepted it (microseconds since the epoch).
    pub accepted_micros: u64,
}

/// The verdict of the accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Messages the server under test accepted.
    pub sent: u64,
    /// Of those, delivered exactly once or more.
    pub delivered: u64,
    /// Of those, addressed to mailboxes the scenario makes unknown: a bounce
    /// is their correct end.
    pub expected_bounces: u64,
    /// Sent, not delivered, and not an expected bounce.
    pub lost: u64,
    /// Not delivered, but the Composer never saw the server accept it (the
    /// connection broke after the body).
    pub uncertain_undelivered: u64,
    /// Extra copies beyond the first of any delivered message.
    pub duplicates: u64,
    /// Deliveries with no id, an id never sent, or the wrong recipient.
    pub unexpected: u64,
    /// Deliveries whose body differs from what was sent.
    pub corrupted: u64,
    /// Some lost ids.
    pub lost_examples: Vec<String>,
    /// Some duplicated ids.
    pub duplicate_examples: Vec<String>,
}

impl Accounting {
    /// Zero lost, duplicated, unexpected and corrupted.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.unexpected == 0 && self.corrupted == 0
    }
}

/// Compares `sent` with `deliveries`; `expected_bounce(recipient)` says
/// whether the scenario refuses that recipient for good.
pub fn reconcile(
    sent: &[SentRecord],
    deliveries: &[Delivery],
    expected_bounce: impl Fn(&str) -> bool,
) -> Accounting {
    let mut by_id: HashMap<&str, (&SentRecord, u64)> = HashMap::with_capacity(sent.len());
    for s in sent {
        by_id.insert(s.id.as_str(), (s, 0));
    }
    let mut acc = Accounting {
        sent: by_id.len() as u64,
        ..Accounting::default()
    };
    for d in deliveries {
        let Some(entry) = d.id.as_deref().and_then(|id| by_id.get_mut(id)) else {
            acc.unexpected += 1;
            continue;
        };
        if !entry.0.recipient.eq_ignore_ascii_case(&d.recipient) {
            acc.unexpected += 1;
            continue;
        }
        entry.1 += 1;
        if entry.1 > 1 {
            acc.duplicates += 1;
            if acc.duplicate_examples.len() < EXAMPLES {
                acc.duplicate_examples.push(entry.0.id.clone());
            }
        }
        if entry.0.digest != d.digest {
            acc.corrupted += 1;
        }
    }
    let mut lost: Vec<&str> = Vec::new();
    for (id, (record, count)) in &by_id {
        if *count > 0 {
            acc.delivered += 1;
        } else if record.uncertain {
            acc.uncertain_undelivered += 1;
        } else if expected_bounce(&record.recipient) {
            acc.expected_bounces += 1;
        } else {
            acc.lost += 1;
            lost.push(id);
        }
    }
    lost.sort_unstable();
    acc.lost_examples = lost.iter().take(EXAMPLES).map(|s| s.to_string()).collect();
    acc.duplicate_examples.sort();
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(n: u64) -> Vec<SentRecord> {
        (0..n)
            .map(|i| SentRecord {
                id: format!("r.{i}"),
                recipient: format!("user{i}@a.test"),
                digest: i,
                uncertain: false,
            })
            .collect()
    }

    fn delivered(s: &SentRecord) -> Delivery {
        Delivery {
            id: Some(s.id.clone()),
            recipient: s.recipient.clone(),
            domain: "a.test".into(),
            digest: s.digest,
            size: 100,
            sent_micros: Some(1),
            accepted_micros: 2,
        }
    }

    #[test]
    fn all_delivered_once_is_clean() {
        let s = sent(100);
        let d: Vec<Delivery> = s.iter().map(delivered).collect();
        let acc = reconcile(&s, &d, |_| false);
        assert!(acc.is_clean(), "{acc:?}");
        assert_eq!((acc.sent, acc.delivered), (100, 100));
    }

    #[test]
    fn catches_a_dropped_message() {
        let s = sent(100);
        let d: Vec<Delivery> = s.iter().filter(|s| s.id != "r.42").map(delivered).collect();
        let acc = reconcile(&s, &d, |_| false);
        assert!(!acc.is_clean());
        assert_eq!(acc.lost, 1);
        assert_eq!(acc.lost_examples, vec!["r.42".to_string()]);
        // Had the connection broken after its body, it would not count as lost.
        let mut s = s;
        s[42].uncertain = true;
        let acc = reconcile(&s, &d, |_| false);
        assert!(acc.is_clean());
        assert_eq!(acc.uncertain_undelivered, 1);
    }

    #[test]
    fn catches_a_duplicated_message() {
        let s = sent(100);
        let mut d: Vec<Delivery> = s.iter().map(delivered).collect();
        d.push(delivered(&s[7]));
        let acc = reconcile(&s, &d, |_| false);
        assert!(!acc.is_clean());
        assert_eq!((acc.duplicates, acc.lost), (1, 0));
        assert_eq!(acc.duplicate_examples, vec!["r.7".to_string()]);
    }

    #[test]
    fn expected_bounces_are_not_losses_but_unknown_and_changed_mail_is_flagged() {
        let s = sent(10);
        let mut d: Vec<Delivery> = s.iter().skip(1).map(delivered).collect();
        let acc = reconcile(&s, &d, |r| r == "user0@a.test");
        assert!(acc.is_clean());
        assert_eq!(acc.expected_bounces, 1);

        let mut stranger = delivered(&s[1]);
        stranger.id = Some("other.1".into());
        d.push(stranger);
        let mut misrouted = delivered(&s[2]);
        misrouted.recipient = "user3@a.test".into();
        d.push(misrouted);
        d[3].digest ^= 1;
        let acc = reconcile(&s, &d, |r| r == "user0@a.test");
        assert_eq!((acc.unexpected, acc.corrupted), (2, 1));
        assert!(!acc.is_clean());
    }
}
