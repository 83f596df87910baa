//! Crash recovery: the journal says what is unfinished, the body log gives
//! back exactly those messages.
//!
//! 1. Every journal generation is read. The newest whole checkpoint gives
//!    the unfinished messages and their places in the body log; every
//!    "finished" fact of every generation is applied (a fact stays true
//!    across generations, and sequence numbers are never reused).
//! 2. The body log is scanned only after the checkpoint's position: the
//!    records appended since the checkpoint.
//! 3. The checkpoint's unfinished messages are read at their places, one
//!    record each.
//!
//! Damage (a torn tail, a flipped byte) is skipped, reported, and when it
//! runs to the end of a body segment the segment is cut there. Without any
//! whole checkpoint the whole body log is scanned and every record in it is
//! taken as unfinished unless a fact says otherwise: duplicates, never loss.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::bits::Bits;
use super::body_log::{self, BODY_MAGIC, Loc};
use super::disk::{Disk, DiskFile};
use super::error::JournalError;
use super::frame::{self, DamageKind, SEQ_LIMIT};
use super::progress::{self, Checkpoint, JOURNAL_MAGIC, JournalFrame};

/// A message that still has unfinished recipients after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    /// Its sequence number: finishing a recipient names it.
    pub seq: u64,
    /// The envelope sender.
    pub sender: String,
    /// Only the recipients not yet finished, with their original index.
    pub recipients: Vec<RecoveredRecipient>,
    /// The body as it was accepted.
    pub body: Bytes,
}

/// An unfinished recipient of a recovered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRecipient {
    /// Its index in the message's original envelope (what `finish` takes).
    pub index: u32,
    /// The address.
    pub address: String,
}

/// A stretch of a file recovery could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The body segment or journal file.
    pub file: PathBuf,
    /// Where the stretch starts.
    pub offset: u64,
    /// How many bytes were discarded (0 for a record read at its place
    /// whose length could not be trusted).
    pub len: u64,
    /// What was wrong.
    pub kind: DamageKind,
    /// Whether the file was cut at `offset` (damage at its end).
    pub truncated: bool,
}

/// What recovery found: the figures an operator wants in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether a whole checkpoint was found (without one, every record of
    /// the body log is resent unless a fact says it is finished).
    pub checkpoint: bool,
    /// Whole journal frames read.
    pub journal_records: u64,
    /// Whole body-log records read.
    pub body_records: u64,
    /// Messages handed back.
    pub messages: u64,
    /// Unfinished recipients handed back.
    pub recipients: u64,
    /// Damaged stretches, in the order found.
    pub damage: Vec<Damage>,
    /// Messages the journal lists as unfinished whose body record could not
    /// be read (missing segment or damaged record): these are lost, and
    /// said so.
    pub missing: Vec<u64>,
}

impl RecoveryReport {
    /// Bytes of damaged records skipped or cut off.
    pub fn bytes_discarded(&self) -> u64 {
        self.damage.iter().map(|d| d.len).sum()
    }

    /// True when nothing was damaged or missing.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.missing.is_empty()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {} messages ({} recipients) from {} journal and {} body records{}",
            self.messages,
            self.recipients,
            self.journal_records,
            self.body_records,
            if self.checkpoint {
                ""
            } else {
                ", no checkpoint"
            },
        )?;
        for d in &self.damage {
            write!(
                f,
                "; {} at {}+{} in {}{}",
                d.kind,
                d.offset,
                d.len,
                d.file.display(),
                if d.truncated {
                    " (cut off)"
                } else {
                    " (skipped)"
                },
            )?;
        }
        if !self.missing.is_empty() {
            write!(f, "; {} unfinished messages lost", self.missing.len())?;
        }
        Ok(())
    }
}

/// A message the shard keeps tracking after recovery.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) seq: u64,
    pub(crate) loc: Loc,
    pub(crate) finished: Bits,
}

/// Everything `ShardJournal::open` needs to carry on.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) messages: Vec<RecoveredMessage>,
    pub(crate) report: RecoveryReport,
    pub(crate) live: Vec<Live>,
    /// Segment ids on disk after recovery.
    pub(crate) segments: Vec<u64>,
    pub(crate) last_seq: u64,
    pub(crate) last_generation: u64,
}

pub(crate) fn recover(disk: &dyn Disk, dir: &Path) -> Result<Recovered, JournalError> {
    let mut report = RecoveryReport::default();
    let (checkpoint, facts, last_generation) = read_journal(disk, dir, &mut report)?;
    report.checkpoint = checkpoint.is_some();
    let Checkpoint {
        next_seq,
        body_pos,
        entries,
    } = checkpoint.unwrap_or(Checkpoint {
        next_seq: 1,
        body_pos: Loc { seg: 0, off: 0 },
        entries: Vec::new(),
    });
    // Never reuse a number a fact names, even one whose record is gone
    // (but one past the limit names no message: it is damage).
    let mut last_seq = facts
        .keys()
        .copied()
        .filter(|&s| s < SEQ_LIMIT)
        .max()
        .unwrap_or(0)
        .max(next_seq.saturating_sub(1));

    // A sequence number is recovered once: a second listing or record of
    // it (damage no checksum caught) would be delivered twice.
    let mut seen = HashSet::new();
    // Checkpointed messages, with every fact applied.
    let mut listed: Vec<Live> = entries
        .into_iter()
        .filter(|e| seen.insert(e.seq))
        .map(|e| {
            let mut finished = e.finished;
            for &i in facts.get(&e.seq).into_iter().flatten() {
                finished.set(i);
            }
            Live {
                seq: e.seq,
                loc: e.loc,
                finished,
            }
        })
        .filter(|l| !l.finished.all())
        .collect();

    let segments = body_log::list_segments(disk, dir)?;
    let mut messages = Vec::new();
    let mut live = Vec::new();

    // The tail: records appended after the checkpoint.
    let tail: Vec<u64> = segments
        .iter()
        .copied()
        .filter(|&s| s >= body_pos.seg)
        .collect();
    if let Some(&first) = tail.first() {
        disk.prefetch(&body_log::segment_path(dir, first));
    }
    // One buffer for every segment: no fresh pages to fault in each time.
    let mut data = Vec::new();
    for (k, &seg) in tail.iter().enumerate() {
        // The disk reads the next segment while this one is parsed.
        if let Some(&next) = tail.get(k + 1) {
            disk.prefetch(&body_log::segment_path(dir, next));
        }
        let path = body_log::segment_path(dir, seg);
        read_into(disk, &path, &mut data)?;
        // A segment shorter than the checkpoint says (its tail lost behind
        // the journal's back) has no tail; what the checkpoint lists past
        // its end is reported missing below.
        let start = if seg == body_pos.seg {
            body_pos.off.min(data.len() as u64)
        } else {
            0
        };
        let from = start as usize;
        let mut padding = 0;
        let scan = frame::scan(&data[from..], BODY_MAGIC, |off, payload| {
            let Some((seq, count)) = body_log::peek(payload) else {
                return false;
            };
            if body_log::is_padding(payload) {
                padding += 1;
                return true;
            }
            if seq < next_seq {
                return true; // covered by the checkpoint
            }
            if !seen.insert(seq) {
                return false;
            }
            let mut finished = Bits::new(count);
            for &i in facts.get(&seq).into_iter().flatten() {
                finished.set(i);
            }
            if !finished.all() {
                let Some(rec) = body_log::parse(payload) else {
                    return false;
                };
                messages.push(unfinished(rec, &finished));
                live.push(Live {
                    seq,
                    loc: Loc {
                        seg,
                        off: start + off,
                    },
                    finished,
                });
            }
            last_seq = last_seq.max(seq);
            true
        });
        report.body_records += scan.frames - padding;
        let end = data.len() as u64 - start;
        record_damage(&path, start, end, &scan, &mut report);
        if scan.skipped.last().is_some_and(|s| s.offset + s.len == end) {
            cut(disk, &path, start + scan.good_end)?;
        }
    }

    // The checkpoint's unfinished messages, read at their places in order.
    listed.sort_unstable_by_key(|l| l.loc);
    let mut wanted: Vec<u64> = listed.iter().map(|l| l.loc.seg).collect();
    wanted.dedup();
    // The segment being read: its id, and its file and length unless it is gone.
    let mut open: Option<(u64, Option<OpenSegment>)> = None;
    for l in listed {
        if open.as_ref().map(|(s, _)| *s) != Some(l.loc.seg) {
            let path = body_log::segment_path(dir, l.loc.seg);
            if open.is_none() {
                disk.prefetch(&path);
            }
            let k = wanted.partition_point(|&s| s <= l.loc.seg);
            if let Some(&next) = wanted.get(k) {
                disk.prefetch(&body_log::segment_path(dir, next));
            }
            let f = match disk.open_read(&path).and_then(|f| Ok((f.size()?, f))) {
                Ok((len, f)) => Some((f, len)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(JournalError::io("open", &path, e)),
            };
            open = Some((l.loc.seg, f));
        }
        let Some((_, Some((file, file_len)))) = &open else {
            report.missing.push(l.seq);
            continue;
        };
        let path = body_log::segment_path(dir, l.loc.seg);
        match body_log::read_at(&**file, *file_len, l.loc.off)
            .map_err(|e| JournalError::io("read", &path, e))?
        {
            Ok(rec) if rec.seq == l.seq && rec.recipients.len() == l.finished.len() as usize => {
                report.body_records += 1;
                messages.push(unfinished(rec, &l.finished));
                live.push(l);
            }
            Ok(_) => {
                report.damage.push(Damage {
                    file: path,
                    offset: l.loc.off,
                    len: 0,
                    kind: DamageKind::BadContent,
                    truncated: false,
                });
                report.missing.push(l.seq);
            }
            Err(kind) => {
                report.damage.push(Damage {
                    file: path,
                    offset: l.loc.off,
                    len: 0,
                    kind,
                    truncated: false,
                });
                report.missing.push(l.seq);
            }
        }
    }

    messages.sort_unstable_by_key(|m| m.seq);
    live.sort_unstable_by_key(|l| l.seq);
    report.messages = messages.len() as u64;
    report.recipients = messages.iter().map(|m| m.recipients.len() as u64).sum();
    report.missing.sort_unstable();
    Ok(Recovered {
        messages,
        report,
        live,
        segments,
        last_seq,
        last_generation,
    })
}

type Facts = HashMap<u64, Vec<u32>>;

type OpenSegment = (Box<dyn DiskFile>, u64);

/// Reads every generation: the newest whole checkpoint, and all facts.
fn read_journal(
    disk: &dyn Disk,
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<(Option<Checkpoint>, Facts, u64), JournalError> {
    // Leftovers of a checkpoint or quota write cut short by a crash.
    for name in disk
        .list(dir)
        .map_err(|e| JournalError::io("list", dir, e))?
    {
        let path = dir.join(&name);
        if path.extension().is_some_and(|x| x == "tmp")
            && name.to_string_lossy().starts_with("journal-")
        {
            let _ = disk.remove_file(&path);
        }
    }
    let generations = progress::list_generations(disk, dir)?;
    let mut checkpoint: Option<Checkpoint> = None;
    let mut facts = Facts::new();
    for &g in generations.iter().rev() {
        let path = progress::journal_path(dir, g);
        let mut data = Vec::new();
        read_into(disk, &path, &mut data)?;
        let mut own_checkpoint = None;
        let scan = frame::scan(&data, JOURNAL_MAGIC, |off, payload| {
            match progress::parse(payload) {
                Some(JournalFrame::Checkpoint(cp)) if off == 0 => own_checkpoint = Some(cp),
                Some(JournalFrame::Finished(f)) => {
                    for (seq, i) in f {
                        facts.entry(seq).or_default().push(i);
                    }
                }
                // A checkpoint anywhere but at the start is not ours.
                Some(JournalFrame::Checkpoint(_)) | None => return false,
            }
            true
        });
        report.journal_records += scan.frames;
        let end = data.len() as u64;
        record_damage(&path, 0, end, &scan, report);
        if scan.skipped.last().is_some_and(|s| s.offset + s.len == end) {
            cut(disk, &path, scan.good_end)?;
        }
        if checkpoint.is_none() {
            checkpoint = own_checkpoint;
        }
    }
    Ok((checkpoint, facts, generations.last().copied().unwrap_or(0)))
}

fn record_damage(
    path: &Path,
    base: u64,
    end: u64,
    scan: &frame::Scan,
    report: &mut RecoveryReport,
) {
    for s in &scan.skipped {
        report.damage.push(Damage {
            file: path.to_path_buf(),
            offset: base + s.offset,
            len: s.len,
            kind: s.kind,
            truncated: s.offset + s.len == end,
        });
    }
}

/// Reads a whole file into `buf`, reusing its allocation.
fn read_into(disk: &dyn Disk, path: &Path, buf: &mut Vec<u8>) -> Result<(), JournalError> {
    buf.clear();
    disk.read_to_end(path, buf)
        .map_err(|e| JournalError::io("read", path, e))
}

/// Cuts a file after its last good record, so the damage is not
/// found again and the file ends clean.
fn cut(disk: &dyn Disk, path: &Path, len: u64) -> Result<(), JournalError> {
    body_log::truncate_durably(disk, path, len).map_err(|e| JournalError::io("truncate", path, e))
}

fn unfinished(rec: body_log::BodyRecord, finished: &Bits) -> RecoveredMessage {
    RecoveredMessage {
        seq: rec.seq,
        sender: rec.sender,
        recipients: rec
            .recipients
            .into_iter()
            .zip(0u32..)
            .filter(|(_, i)| !finished.get(*i))
            .map(|(address, index)| RecoveredRecipient { index, address })
            .collect(),
        body: rec.body,
    }
}
