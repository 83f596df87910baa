//! The recovery journal: which recipients are finished, in a few bytes each.
//!
//! One file per generation, `journal-<gen>.jnl`. Its first frame is a
//! checkpoint: every message that still had unfinished recipients when it
//! was taken, each with its place in the body log, its recipient count and
//! the bit vector of its finished recipients, and the body-log position up
//! to which the checkpoint speaks. Later frames each carry a batch of
//! "recipient i of message s finished" facts. A new generation is written
//! to a temporary file, fsynced and renamed into place before the old one
//! is removed, so a crash leaves either generation whole.
//!
//! ```text
//! checkpoint: 1u8, next_seq u64, body_seg u64, body_off u64, count u64,
//!             count x (seq u64, seg u64, off u64, rcpts u32, bits)
//! finished:   2u8, n x (seq u64, index u32)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bits::Bits;
use super::body_log::{Loc, sync_dir, write_atomic};
use super::disk::{Disk, DiskFile};
use super::error::JournalError;
use super::frame::{self, Reader};

/// Magic and version of a recovery-journal frame.
pub(crate) const JOURNAL_MAGIC: [u8; 4] = *b"VJL1";

const KIND_CHECKPOINT: u8 = 1;
const KIND_FINISHED: u8 = 2;

/// Bytes one "finished" fact takes in a frame.
pub(crate) const FINISHED_ENTRY: usize = 12;

pub(crate) fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:020}.jnl"))
}

/// Journal generations present in `dir`, ascending.
pub(crate) fn list_generations(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut gens = Vec::new();
    let names = disk
        .list(dir)
        .map_err(|e| JournalError::io("list", dir, e))?;
    for name in names {
        let Some(name) = name.to_str() else { continue };
        if let Some(g) = name
            .strip_prefix("journal-")
            .and_then(|r| r.strip_suffix(".jnl"))
            .and_then(|n| n.parse().ok())
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// One message as a checkpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointEntry {
    pub(crate) seq: u64,
    pub(crate) loc: Loc,
    pub(crate) finished: Bits,
}

/// A parsed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Every message below this sequence number is either listed or finished.
    pub(crate) next_seq: u64,
    /// Body-log records before this position are covered by the checkpoint.
    pub(crate) body_pos: Loc,
    pub(crate) entries: Vec<CheckpointEntry>,
}

/// A parsed journal frame.
#[derive(Debug)]
pub(crate) enum JournalFrame {
    Checkpoint(Checkpoint),
    Finished(Vec<(u64, u32)>),
}

/// Encodes a checkpoint frame into `out`.
pub(crate) fn encode_checkpoint<'a>(
    out: &mut Vec<u8>,
    next_seq: u64,
    body_pos: Loc,
    entries: impl ExactSizeIterator<Item = (u64, Loc, &'a Bits)>,
) {
    let start = frame::begin(out, JOURNAL_MAGIC);
    out.push(KIND_CHECKPOINT);
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(&body_pos.seg.to_le_bytes());
    out.extend_from_slice(&body_pos.off.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (seq, loc, bits) in entries {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&loc.seg.to_le_bytes());
        out.extend_from_slice(&loc.off.to_le_bytes());
        out.extend_from_slice(&bits.len().to_le_bytes());
        bits.write_bytes(out);
    }
    frame::end(out, start);
}

/// Encodes a frame of "finished" facts into `out`.
pub(crate) fn encode_finished(out: &mut Vec<u8>, facts: &[(u64, u32)]) {
    let start = frame::begin(out, JOURNAL_MAGIC);
    out.push(KIND_FINISHED);
    for (seq, index) in facts {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&index.to_le_bytes());
    }
    frame::end(out, start);
}

/// Parses a journal payload; `None` if it does not parse.
pub(crate) fn parse(payload: &[u8]) -> Option<JournalFrame> {
    let mut r = Reader::new(payload);
    match r.u8()? {
        KIND_CHECKPOINT => {
            let next_seq = r.next_seq()?;
            let body_pos = Loc {
                seg: r.u64()?,
                off: r.u64()?,
            };
            let count = r.u64()?;
            // Each entry takes at least 28 bytes: a bound on the allocation.
            let mut entries = Vec::with_capacity((count as usize).min(payload.len() / 28));
            for _ in 0..count {
                let seq = r.seq()?;
                let loc = Loc {
                    seg: r.u64()?,
                    off: r.u64()?,
                };
                let n = r.u32()?;
                let finished = Bits::from_bytes(n, r.bytes(Bits::byte_len(n))?)?;
                entries.push(CheckpointEntry { seq, loc, finished });
            }
            r.is_empty().then_some(JournalFrame::Checkpoint(Checkpoint {
                next_seq,
                body_pos,
                entries,
            }))
        }
        KIND_FINISHED => {
            let rest = r.rest();
            if !rest.len().is_multiple_of(FINISHED_ENTRY) {
                return None;
            }
            Some(JournalFrame::Finished(
                rest.chunks_exact(FINISHED_ENTRY)
                    .map(|c| {
                        (
                            u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                            u32::from_le_bytes(c[8..].try_into().expect("4 bytes")),
                        )
                    })
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// The writing side of one shard's recovery journal.
#[derive(Debug)]
pub(crate) struct ProgressLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    generation: u64,
    path: PathBuf,
    file: Box<dyn DiskFile>,
    /// Durable length of the current generation's file.
    len: u64,
    pending: Vec<(u64, u32)>,
    /// Bytes appended since the generation's checkpoint.
    since_checkpoint: u64,
    bytes_written: u64,
}

impl ProgressLog {
    /// Starts generation `generation` with the checkpoint `checkpoint` (one
    /// encoded frame), then removes every older generation.
    pub(crate) fn start(
        disk: Arc<dyn Disk>,
        dir: &Path,
        generation: u64,
        checkpoint: &[u8],
    ) -> Result<Self, JournalError> {
        let path = journal_path(dir, generation);
        write_atomic(&*disk, dir, &path, checkpoint)?;
        let file = disk
            .open_write(&path)
            .map_err(|e| JournalError::io("open", &path, e))?;
        let log = ProgressLog {
            disk,
            dir: dir.to_path_buf(),
            generation,
            path,
            file,
            len: checkpoint.len() as u64,
            pending: Vec::new(),
            since_checkpoint: 0,
            bytes_written: checkpoint.len() as u64,
        };
        log.remove_older()?;
        Ok(log)
    }

    /// Moves to the next generation with a new checkpoint. Pending facts
    /// that `keep` selects are carried over (the checkpoint did not cover
    /// them); the others are dropped (it did).
    pub(crate) fn rotate(
        &mut self,
        checkpoint: &[u8],
        keep: impl Fn(u64) -> bool,
    ) -> Result<(), JournalError> {
        let mut next = ProgressLog::start(
            self.disk.clone(),
            &self.dir,
            self.generation + 1,
            checkpoint,
        )?;
        next.bytes_written += self.bytes_written;
        next.pending = std::mem::take(&mut self.pending);
        next.pending.retain(|(seq, _)| keep(*seq));
        *self = next;
        Ok(())
    }

    fn remove_older(&self) -> Result<(), JournalError> {
        let mut removed = false;
        for g in list_generations(&*self.disk, &self.dir)? {
            if g < self.generation {
                let p = journal_path(&self.dir, g);
                self.disk
                    .remove_file(&p)
                    .map_err(|e| JournalError::io("remove", &p, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&*self.disk, &self.dir)?;
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, seq: u64, index: u32) {
        self.pending.push((seq, index));
    }

    pub(crate) fn pending_bytes(&self) -> usize {
        if self.pending.is_empty() {
            0
        } else {
            frame::FRAME_OVERHEAD + 1 + self.pending.len() * FINISHED_ENTRY
        }
    }

    /// Drops pending facts about messages that were never durable.
    pub(crate) fn forget(&mut self, rejected: impl Fn(u64) -> bool) {
        self.pending.retain(|(seq, _)| !rejected(*seq));
    }

    /// Writes and fsyncs the pending facts as one frame. On error the file
    /// is cut back to its durable length and the facts stay pending.
    pub(crate) fn commit(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(self.pending_bytes());
        encode_finished(&mut buf, &self.pending);
        let written = self
            .file
            .write_all_at(&buf, self.len)
            .map_err(|e| JournalError::io("write", &self.path, e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| JournalError::io("fsync", &self.path, e))
            });
        if let Err(e) = written {
            // Best effort: a cut that fails leaves a damaged tail that
            // recovery detects and reports; the facts are retried.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.since_checkpoint += buf.len() as u64;
        self.bytes_written += buf.len() as u64;
        self.pending.clear();
        Ok(())
    }

    pub(crate) fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::frame::{Decoded, decode};

    #[test]
    fn checkpoint_round_trip() {
        let mut bits = Bits::new(10);
        bits.set(3);
        bits.set(9);
        let empty = Bits::new(1);
        let mut out = Vec::new();
        let entries = [
            (5u64, Loc { seg: 1, off: 0 }, &bits),
            (6u64, Loc { seg: 2, off: 77 }, &empty),
        ];
        encode_checkpoint(&mut out, 9, Loc { seg: 2, off: 100 }, entries.into_iter());
        let Decoded::Frame(payload, _) = decode(&out, JOURNAL_MAGIC) else {
            panic!("not a frame")
        };
        let Some(JournalFrame::Checkpoint(cp)) = parse(payload) else {
            panic!("not a checkpoint")
        };
        assert_eq!(cp.next_seq, 9);
        assert_eq!(cp.body_pos, Loc { seg: 2, off: 100 });
        assert_eq!(cp.entries.len(), 2);
        assert_eq!(cp.entries[0].finished, bits);
        assert_eq!(cp.entries[1].loc, Loc { seg: 2, off: 77 });
        assert_eq!(cp.entries[1].finished, empty);
    }

    #[test]
    fn finished_round_trip_and_bad_length() {
        let mut out = Vec::new();
        encode_finished(&mut out, &[(1, 0), (u64::MAX, 7)]);
        let Decoded::Frame(payload, _) = decode(&out, JOURNAL_MAGIC) else {
            panic!("not a frame")
        };
        let Some(JournalFrame::Finished(f)) = parse(payload) else {
            panic!("not finished")
        };
        assert_eq!(f, vec![(1, 0), (u64::MAX, 7)]);
        assert!(parse(&payload[..payload.len() - 1]).is_none());
        assert!(parse(&[9]).is_none());
    }
}
