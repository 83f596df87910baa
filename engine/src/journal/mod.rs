//! Durable mode: a write-once body log, a bit-vector recovery journal, crash
//! recovery, and the sending quota.
//!
//! Volley processes mail in memory; with `--journal DIR` it also keeps, per
//! shard in `DIR/shard-N/`, just enough on disk to survive a crash:
//!
//! - the **body log**: each accepted message (envelope and body) appended
//!   once to segment files, fsynced in groups. Normal processing never
//!   reads it back; only recovery does.
//! - the **recovery journal**: per recipient that finishes, twelve bytes
//!   ("recipient i of message s finished"), folded into one bit vector per
//!   message in memory and written out whole in periodic checkpoints.
//!
//! Guarantees, for a caller that acknowledges a message only once
//! [`ShardJournal::commit_bodies`] returned a `durable_upto` at or above its
//! sequence number:
//!
//! - An acknowledged message is recovered after a crash or power loss with
//!   every recipient whose "finished" fact was not yet durable; facts are
//!   fsynced by [`ShardJournal::commit_progress`], so the window in which a
//!   delivered recipient can be sent twice is one group commit of facts
//!   (`finish_commit_interval` plus the commit itself).
//! - Every record is checksummed. Damage is detected, skipped, cut off when
//!   at a file's end, and listed in [`RecoveryReport`]; records after a
//!   damaged one are still read. Nothing is dropped silently: a message the
//!   journal lists but whose record is unreadable is named in
//!   [`RecoveryReport::missing`].
//! - A failed write or fsync (a full disk) rejects only the messages not
//!   yet acknowledged, with a typed [`JournalError`]; what was durable stays.
//! - A body-log segment is deleted once every message in it is finished and
//!   that fact is durable.
//!
//! [`ShardJournal`] is blocking file I/O for a dedicated writer thread, with
//! time passed in; [`JournalWriter`] is that thread, answering each append
//! with a ticket that resolves once the message is durable.
//!
//! Every file operation goes through the small `Disk` trait (`disk`): real
//! files in production, held as an `Arc<dyn Disk>` so that no type
//! parameter reaches the rest of the engine. The tests run the journal on
//! a simulated disk (`sim_disk`) that keeps only what was synced when the
//! power is cut, tears the last write, and fails writes and syncs on
//! request; `sim` cuts the power at thousands of random points and checks
//! the guarantees above after each recovery. One assumption is not tested
//! there: the shard directory itself is durable once created (its parent
//! is never synced).

mod bits;
mod body_log;
mod commits;
mod config;
mod disk;
mod error;
mod frame;
mod progress;
mod quota;
mod recovery;
mod store;
mod writer;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_disk;
#[cfg(test)]
mod tests;

pub use self::{
    commits::{COMMIT_BUCKETS, CommitStats},
    config::JournalConfig,
    error::JournalError,
    frame::DamageKind,
    quota::{QuotaCounts, QuotaExceeded, QuotaLimits, SendQuota},
    recovery::{Damage, RecoveredMessage, RecoveredRecipient, RecoveryReport},
    store::{JournalStats, Recovery, ShardJournal, shard_dir},
    writer::{AppendResult, AppendTicket, JournalWriter, NewMessage},
};
