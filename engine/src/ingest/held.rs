//! Durable fast mode without a stall per message: a session accepts a
//! message at once in the SMTP state machine, so it goes on reading the
//! Composer's pipelined commands, but the reply bytes from that 250 on are
//! held back until the journal says the message is on disk. Only then is
//! the message routed and its 250 sent. One fsync thus acknowledges every
//! message a session had in flight.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot::error::TryRecvError;

use crate::durable::Durable;
use crate::journal::{AppendResult, AppendTicket, NewMessage};
use crate::message::Message;

/// A message written to the journal, not yet known to be on disk.
pub(super) struct Pending {
    /// Output position (bytes since the session began) of its
    /// transaction's first reply (to MAIL FROM). The replies from there on
    /// wait with its 250: the Composer, having sent the whole message,
    /// needs them all, and one write instead of two spares both sides a
    /// wake-up per message.
    pub(super) start: u64,
    /// Output position of its own reply (the 250 held back).
    pub(super) before: u64,
    /// Set once the message went to the journal writer ([`Held::send`]).
    pub(super) ticket: Option<AppendTicket>,
    pub(super) msg: Message,
    pub(super) keys: Vec<Box<str>>,
}

/// The session's held messages, oldest first, and how much output went out.
#[derive(Default)]
pub(super) struct Held {
    queue: VecDeque<Pending>,
    sent: u64,
    /// Messages of the last burst of input, not yet handed to the writer.
    unsent: Vec<NewMessage>,
}

impl Held {
    /// The output position of the next byte the server queues, given what
    /// is waiting in its buffer now.
    pub(super) fn mark(&self, unsent: usize) -> u64 {
        self.sent + unsent as u64
    }

    /// How many of the `unsent` output bytes may go out now: all of them,
    /// or those before the oldest held message's transaction.
    pub(super) fn sendable(&self, unsent: usize) -> usize {
        match self.queue.front() {
            Some(p) => self.up_to(p.start, unsent),
            None => unsent,
        }
    }

    /// How many of the `unsent` output bytes lie before position `mark`.
    pub(super) fn up_to(&self, mark: u64, unsent: usize) -> usize {
        (mark.saturating_sub(self.sent) as usize).min(unsent)
    }

    /// Where output position `mark` lies in the unsent output, if it has
    /// not gone out yet.
    pub(super) fn offset_of(&self, mark: u64) -> Option<usize> {
        mark.checked_sub(self.sent).map(|o| o as usize)
    }

    /// `n` output bytes went out.
    pub(super) fn sent(&mut self, n: usize) {
        self.sent += n as u64;
    }

    /// Holds `p`; `new` goes to the journal with the next [`Held::send`].
    pub(super) fn push(&mut self, p: Pending, new: NewMessage) {
        self.queue.push_back(p);
        self.unsent.push(new);
    }

    /// Hands the messages pushed since the last call to the journal of
    /// shard `shard`, in one batch.
    pub(super) fn send(&mut self, durable: &Durable, shard: usize) {
        if self.unsent.is_empty() {
            return;
        }
        let tickets = durable.append_many(shard, std::mem::take(&mut self.unsent));
        let first = self.queue.len() - tickets.len();
        for (p, t) in self.queue.iter_mut().skip(first).zip(tickets) {
            p.ticket = Some(t);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest held message once its ticket resolved; `wait`: wait for
    /// it, else only if it already did.
    pub(super) async fn next(&mut self, wait: bool) -> Option<(Pending, AppendResult)> {
        let ticket = self.queue.front_mut()?.ticket.as_mut()?;
        let result: Result<AppendResult, ()> = if wait {
            ticket.await.map_err(|_| ())
        } else {
            match ticket.try_recv() {
                Ok(r) => Ok(r),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Closed) => Err(()),
            }
        };
        let p = self.queue.pop_front()?;
        Some((p, result.unwrap_or_else(|()| Err(Arc::new(gone())))))
    }
}

fn gone() -> crate::journal::JournalError {
    crate::journal::JournalError::Io {
        op: "append",
        path: std::path::PathBuf::new(),
        source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "journal writer stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_stops_before_the_oldest_held_transaction() {
        let mut h = Held::default();
        assert_eq!(h.sendable(10), 10);
        h.sent(10);
        let start = h.mark(4); // 4 bytes of an earlier reply, then MAIL's
        let before = h.mark(4 + 8); // 8 bytes of MAIL and RCPT replies
        let (_tx, ticket) = tokio::sync::oneshot::channel();
        h.push(
            Pending {
                start,
                before,
                ticket: Some(ticket),
                msg: Message::new(
                    1,
                    std::time::Instant::now(),
                    "a@b",
                    &["c@d".to_string()],
                    bytes::Bytes::new(),
                    None,
                    Default::default(),
                ),
                keys: vec!["d".into()],
            },
            (String::new(), Vec::new(), bytes::Bytes::new()),
        );
        assert_eq!(h.sendable(4 + 8 + 20), 4);
        h.sent(4);
        assert_eq!(h.sendable(8 + 20), 0);
        // A refusal still goes out after the replies before the message's own.
        assert_eq!(h.up_to(before, 8 + 20), 8);
    }
}
