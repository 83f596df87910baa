//! One shard's durable state: the body log, the recovery journal, and the
//! bookkeeping that ties them (which messages are unfinished, which
//! segments still hold one).
//!
//! Meant to be driven by one writer thread per shard: plain blocking file
//! I/O, no locks shared with other shards (each has its own directory), and
//! time passed in for the group-commit deadline.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::bits::Bits;
use super::body_log::{self, BodyLog, Loc};
use super::config::JournalConfig;
use super::disk::{Disk, LockGuard, RealDisk};
use super::error::JournalError;
use super::progress::{self, ProgressLog};
use super::recovery::{self, RecoveredMessage, RecoveryReport};

/// The directory of shard `shard`'s journal under the `--journal` root:
/// each shard has its own, so shards never share a file or a lock.
pub fn shard_dir(root: &Path, shard: usize) -> PathBuf {
    root.join(format!("shard-{shard}"))
}

/// What opening a shard's journal gave back.
#[derive(Debug)]
pub struct Recovery {
    /// Messages with unfinished recipients, by ascending sequence number.
    pub messages: Vec<RecoveredMessage>,
    /// What was read, and any damage found.
    pub report: RecoveryReport,
}

/// Counters for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Bytes written to body-log segments.
    pub body_bytes_written: u64,
    /// Bytes written to the recovery journal (checkpoints included).
    pub journal_bytes_written: u64,
    /// Messages with unfinished recipients.
    pub unfinished_messages: u64,
    /// Body-log segments on disk.
    pub segments: u64,
}

#[derive(Debug)]
struct Message {
    loc: Loc,
    finished: Bits,
}

/// One shard's journal: append accepted messages, mark recipients finished,
/// commit in groups, checkpoint now and then. See the module docs of
/// `journal` for the guarantees.
#[derive(Debug)]
pub struct ShardJournal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    config: JournalConfig,
    /// Held for the journal's lifetime: the flock on `lock`.
    _lock: LockGuard,
    body: BodyLog,
    progress: ProgressLog,
    messages: HashMap<u64, Message>,
    /// Segment id -> messages in it not durably finished.
    segments: BTreeMap<u64, u64>,
    /// Messages whose last recipient finished, waiting for that fact to be
    /// durable before their segment may go.
    done: Vec<u64>,
    /// The first sequence number appended since the last body commit.
    first_pending: Option<u64>,
    /// When the oldest uncommitted append or fact arrived.
    pending_since: Option<Instant>,
    /// Where the body log stood at the last checkpoint.
    checkpoint_body_bytes: u64,
}

impl ShardJournal {
    /// Opens (or creates) the journal in `dir`, recovers what a previous
    /// run left unfinished, and writes a fresh checkpoint so the next
    /// recovery starts from here. Damage is reported, not fatal; I/O errors
    /// and a directory locked by another process are.
    pub fn open(dir: &Path, config: JournalConfig) -> Result<(Self, Recovery), JournalError> {
        Self::open_on(Arc::new(RealDisk), dir, config)
    }

    /// [`ShardJournal::open`] on another disk than the real one (the
    /// tests' simulated disk).
    pub(crate) fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        config: JournalConfig,
    ) -> Result<(Self, Recovery), JournalError> {
        disk.create_dir_all(dir)
            .map_err(|e| JournalError::io("create", dir, e))?;
        let lock = lock(&*disk, dir)?;
        let rec = recovery::recover(&*disk, dir)?;
        let next_segment = rec.segments.last().map_or(1, |s| s + 1);
        let body = BodyLog::new(
            disk.clone(),
            dir,
            config.segment_bytes,
            next_segment,
            rec.last_seq,
        );
        let mut segments: BTreeMap<u64, u64> = rec.segments.iter().map(|&s| (s, 0)).collect();
        let mut messages = HashMap::with_capacity(rec.live.len());
        for l in rec.live {
            *segments.entry(l.loc.seg).or_default() += 1;
            messages.insert(
                l.seq,
                Message {
                    loc: l.loc,
                    finished: l.finished,
                },
            );
        }
        let mut cp = Vec::new();
        encode_checkpoint(&mut cp, &messages, rec.last_seq, body.end());
        let progress = ProgressLog::start(disk.clone(), dir, rec.last_generation + 1, &cp)?;
        let mut journal = ShardJournal {
            disk,
            dir: dir.to_path_buf(),
            config,
            _lock: lock,
            body,
            progress,
            messages,
            segments,
            done: Vec::new(),
            first_pending: None,
            pending_since: None,
            checkpoint_body_bytes: 0,
        };
        journal.drop_finished_segments();
        if rec.report.is_clean() {
            tracing::info!(dir = %dir.display(), "journal: {}", rec.report);
        } else {
            tracing::warn!(dir = %dir.display(), "journal: {}", rec.report);
        }
        Ok((
            journal,
            Recovery {
                messages: rec.messages,
                report: rec.report,
            },
        ))
    }

    /// Buffers one accepted message; returns its sequence number. It is
    /// durable, and may be acknowledged, once `commit_bodies` returns a
    /// `durable_upto` at or above it.
    pub fn append(
        &mut self,
        now: Instant,
        sender: &str,
        recipients: &[impl AsRef<str>],
        body: &[u8],
    ) -> Result<u64, JournalError> {
        let (seq, loc) = self.body.append(sender, recipients, body)?;
        *self.segments.entry(loc.seg).or_default() += 1;
        let finished = Bits::new(recipients.len() as u32);
        if finished.all() {
            // No recipients: finished at once. A fact names its number, or
            // once its segment is deleted nothing on disk would, and after
            // a crash the number could be given again.
            self.progress.push(seq, 0);
            self.done.push(seq);
        }
        self.messages.insert(seq, Message { loc, finished });
        self.first_pending.get_or_insert(seq);
        self.pending_since.get_or_insert(now);
        Ok(seq)
    }

    /// Records that recipient `index` of message `seq` is finished
    /// (delivered or bounced for good). Marking one twice is harmless.
    pub fn finish(&mut self, now: Instant, seq: u64, index: u32) -> Result<(), JournalError> {
        let m = self
            .messages
            .get_mut(&seq)
            .filter(|m| index < m.finished.len())
            .ok_or(JournalError::UnknownRecipient { seq, index })?;
        if m.finished.set(index) {
            self.progress.push(seq, index);
            if m.finished.all() {
                self.done.push(seq);
            }
            self.pending_since.get_or_insert(now);
        }
        Ok(())
    }

    /// Whether a group commit is due: enough bytes wait, or the oldest has
    /// waited `commit_interval`.
    pub fn commit_due(&self, now: Instant) -> bool {
        self.body.pending_bytes() + self.progress.pending_bytes() >= self.config.commit_bytes
            || self
                .next_commit_at()
                .is_some_and(|deadline| now >= deadline)
    }

    /// Bytes appended or recorded and not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.body.pending_bytes() + self.progress.pending_bytes()
    }

    /// When the next commit is due by time, if anything waits.
    pub fn next_commit_at(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + self.config.commit_interval)
    }

    /// Writes and fsyncs the appended messages; returns `durable_upto`:
    /// every sequence number not above it that was not rejected is durable.
    /// On error, every message appended since the last commit is rejected:
    /// forgotten here, its sequence number never reused, and the caller
    /// must answer it with a temporary failure (452 4.3.1) and not deliver
    /// it. Records that could not be cut off the disk get facts marking
    /// every recipient finished (durable with the next `commit_progress`),
    /// so a crash does not bring them back. What was durable before stays
    /// durable.
    ///
    /// `now` paces retries: after a failure the next commit is due one
    /// `commit_interval` later, not at once.
    pub fn commit_bodies(&mut self, now: Instant) -> Result<u64, JournalError> {
        let Some(first) = self.first_pending.take() else {
            return Ok(self.body.durable_upto());
        };
        let last = self.body.last_seq();
        match self.body.commit() {
            Ok(upto) => {
                if self.progress.pending_bytes() == 0 {
                    self.pending_since = None;
                }
                Ok(upto)
            }
            Err(e) => {
                let rejected = |seq: u64| (first..=last).contains(&seq);
                self.progress.forget(rejected);
                // Records that could not be cut off would be delivered
                // after a crash; facts mark their recipients finished.
                let left = self.body.rejected_left_on_disk();
                for seq in first..=last {
                    if let Some(m) = self.messages.remove(&seq) {
                        self.unref_segment(m.loc.seg);
                        if left {
                            (0..m.finished.len()).for_each(|i| self.progress.push(seq, i));
                        }
                    }
                }
                self.done.retain(|&s| !rejected(s));
                self.pending_since = (self.progress.pending_bytes() > 0).then_some(now);
                Err(e)
            }
        }
    }

    /// Writes and fsyncs the "finished" facts, then deletes every closed
    /// segment whose messages are all finished. On error the facts stay
    /// pending, the next commit is due one `commit_interval` after `now`, and
    /// until then their segments stay (a crash now can only resend, never
    /// lose).
    pub fn commit_progress(&mut self, now: Instant) -> Result<(), JournalError> {
        // A message finished before its own record was durable keeps its
        // segment until the record is: `done` holds it back.
        let durable = self.body.durable_upto();
        let waiting = self.body.pending_bytes() > 0;
        if let Err(e) = self.progress.commit() {
            self.pending_since = Some(now);
            return Err(e);
        }
        if !waiting {
            self.pending_since = None;
        }
        let done = std::mem::take(&mut self.done);
        let mut keep = Vec::new();
        for seq in done {
            if seq > durable {
                keep.push(seq);
            } else if let Some(m) = self.messages.remove(&seq) {
                self.unref_segment(m.loc.seg);
            }
        }
        self.done = keep;
        self.drop_finished_segments();
        Ok(())
    }

    /// The highest durable sequence number.
    pub fn durable_upto(&self) -> u64 {
        self.body.durable_upto()
    }

    /// Whether a checkpoint is due (the journal or the body log grew past
    /// the configured amount since the last one).
    pub fn checkpoint_due(&self) -> bool {
        self.progress.since_checkpoint() >= self.config.checkpoint_journal_bytes
            || self.body.bytes_written() - self.checkpoint_body_bytes
                >= self.config.checkpoint_body_bytes
    }

    /// Writes a checkpoint of the durable unfinished messages to a new
    /// journal generation and removes the old one. Facts about messages not
    /// yet durable stay pending for the new generation.
    pub fn checkpoint(&mut self) -> Result<(), JournalError> {
        let durable = self.body.durable_upto();
        // Everything from the first pending record on is found again by the
        // tail scan, so the checkpoint speaks only up to there.
        let body_pos = self.body.durable_end();
        let mut cp = Vec::new();
        encode_checkpoint(&mut cp, &self.messages, durable, body_pos);
        self.progress.rotate(&cp, |seq| seq > durable)?;
        self.checkpoint_body_bytes = self.body.bytes_written();
        // The checkpoint made every finished durable message's state durable.
        let done = std::mem::take(&mut self.done);
        for seq in done {
            if seq > durable {
                self.done.push(seq);
            } else if let Some(m) = self.messages.remove(&seq) {
                self.unref_segment(m.loc.seg);
            }
        }
        self.drop_finished_segments();
        Ok(())
    }

    /// Counters for metrics and the benchmark.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            body_bytes_written: self.body.bytes_written(),
            journal_bytes_written: self.progress.bytes_written(),
            unfinished_messages: self.messages.len() as u64,
            segments: self.segments.len() as u64,
        }
    }

    /// The settings this journal runs with.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// The directory this journal lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn unref_segment(&mut self, seg: u64) {
        if let Some(n) = self.segments.get_mut(&seg) {
            *n = n.saturating_sub(1);
        }
    }

    /// Deletes closed segments that hold no unfinished message. A failed
    /// delete is retried after the next commit.
    fn drop_finished_segments(&mut self) {
        let active = self.body.active_segment();
        let empty: Vec<u64> = self
            .segments
            .range(..active)
            .filter(|(_, n)| **n == 0)
            .map(|(s, _)| *s)
            .collect();
        let mut removed = false;
        for seg in empty {
            let path = body_log::segment_path(&self.dir, seg);
            match self.disk.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "journal: cannot delete finished segment");
                    continue;
                }
            }
            self.segments.remove(&seg);
            removed = true;
        }
        if removed {
            // Not needed for safety (a deleted segment coming back is only
            // read if the journal lists it), but keeps the directory tidy.
            let _ = body_log::sync_dir(&*self.disk, &self.dir);
        }
    }
}

/// Encodes a checkpoint of the unfinished messages up to `upto`.
fn encode_checkpoint(
    out: &mut Vec<u8>,
    messages: &HashMap<u64, Message>,
    upto: u64,
    body_pos: Loc,
) {
    let mut list: Vec<(u64, &Message)> = messages
        .iter()
        .filter(|(seq, m)| **seq <= upto && !m.finished.all())
        .map(|(s, m)| (*s, m))
        .collect();
    list.sort_unstable_by_key(|(s, _)| *s);
    progress::encode_checkpoint(
        out,
        upto + 1,
        body_pos,
        list.iter().map(|(s, m)| (*s, m.loc, &m.finished)),
    );
}

/// Takes the shard directory's lock, so two processes never share it.
fn lock(disk: &dyn Disk, dir: &Path) -> Result<LockGuard, JournalError> {
    let path = dir.join("lock");
    disk.lock(&path).map_err(|e| {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            JournalError::Locked { path: path.clone() }
        } else {
            JournalError::io("lock", &path, e)
        }
    })
}
