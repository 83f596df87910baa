//! The body log: every accepted message, written once, read only to recover.
//!
//! A shard appends records to numbered segment files
//! (`body-<id>.log`, 20 decimal digits, so names sort by id). Appends go to
//! a memory buffer; [`BodyLog::commit`] writes the buffer and fsyncs it, so
//! one fsync covers a whole batch (group commit). A record is one frame
//! (see `frame`) whose payload is:
//!
//! ```text
//! seq       u64
//! sender    u16 length + bytes
//! rcpts     u32 count, then per recipient u16 length + bytes
//! body      the rest of the payload
//! ```
//!
//! A record with sequence number 0 is padding (no envelope, a body of
//! zeros): a large commit is padded to the end of its last page, so the
//! next commit starts on a fresh page instead of dirtying the last one
//! again. Every fsync cleans the page it wrote last; without padding, the
//! next commit would write that page a second time. Readers skip padding.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::disk::{Disk, DiskFile};
use super::error::JournalError;
use super::frame::{self, Decoded, FRAME_OVERHEAD, MAX_PAYLOAD, Reader};

/// Magic and version of a body-log record.
pub(crate) const BODY_MAGIC: [u8; 4] = *b"VBL1";

/// The page size the page cache writes back in.
const PAGE: u64 = 4096;

/// A commit is padded to its page end only when it wrote at least this
/// much: a smaller one would save less than a page by it and waste up to
/// a page of disk.
const PAD_FROM: usize = PAGE as usize;

/// The smallest padding record: frame, sequence number, empty sender and
/// recipient count.
const PAD_MIN: u64 = (FRAME_OVERHEAD + 8 + 2 + 4) as u64;

/// Where a record lies: segment id and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Loc {
    pub(crate) seg: u64,
    pub(crate) off: u64,
}

/// A body-log record, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyRecord {
    pub(crate) seq: u64,
    pub(crate) sender: String,
    pub(crate) recipients: Vec<String>,
    pub(crate) body: Bytes,
}

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("body-{id:020}.log"))
}

/// Segment ids present in `dir`, ascending.
pub(crate) fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut ids = Vec::new();
    let names = disk
        .list(dir)
        .map_err(|e| JournalError::io("list", dir, e))?;
    for name in names {
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_prefix("body-")
            .and_then(|r| r.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The size of the record for this message, or why it cannot be written.
pub(crate) fn record_len(
    sender: &str,
    recipients: &[impl AsRef<str>],
    body: &[u8],
) -> Result<usize, JournalError> {
    let too_large = |what| JournalError::TooLarge { what };
    let fits = |a: &str| u16::try_from(a.len()).map_err(|_| too_large("address"));
    fits(sender)?;
    u32::try_from(recipients.len()).map_err(|_| too_large("recipient count"))?;
    let mut envelope = 2 + sender.len() + 4;
    for r in recipients {
        envelope += 2 + fits(r.as_ref())? as usize;
    }
    let payload = 8 + envelope + body.len();
    if payload > MAX_PAYLOAD {
        return Err(too_large("message"));
    }
    Ok(payload + FRAME_OVERHEAD)
}

/// Appends one record for (seq, envelope, body) to `out`; nothing is
/// appended when the message does not fit the format.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    sender: &str,
    recipients: &[impl AsRef<str>],
    body: &[u8],
) -> Result<usize, JournalError> {
    let len = record_len(sender, recipients, body)?;
    out.reserve(len);
    let start = frame::begin(out, BODY_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    let addr = |out: &mut Vec<u8>, a: &str| {
        out.extend_from_slice(&(a.len() as u16).to_le_bytes());
        out.extend_from_slice(a.as_bytes());
    };
    addr(out, sender);
    out.extend_from_slice(&(recipients.len() as u32).to_le_bytes());
    for r in recipients {
        addr(out, r.as_ref());
    }
    out.extend_from_slice(body);
    frame::end(out, start);
    debug_assert_eq!(out.len() - start, len);
    Ok(len)
}

/// Appends a padding record of exactly `len` bytes (at least [`PAD_MIN`]).
fn encode_padding(out: &mut Vec<u8>, len: usize) {
    let start = frame::begin(out, BODY_MAGIC);
    // Sequence number 0, empty sender, no recipients, a body of zeros.
    out.resize(start + len - 4, 0);
    frame::end(out, start);
    debug_assert_eq!(out.len() - start, len);
}

/// Whether a payload is padding (see the module doc).
pub(crate) fn is_padding(payload: &[u8]) -> bool {
    peek(payload).is_some_and(|(seq, _)| seq == 0)
}

/// The sequence number and recipient count of a payload, without copying.
pub(crate) fn peek(payload: &[u8]) -> Option<(u64, u32)> {
    let mut r = Reader::new(payload);
    let seq = r.seq()?;
    let n = r.u16()? as usize;
    r.bytes(n)?;
    Some((seq, r.u32()?))
}

/// Parses a whole payload; `None` if it does not parse.
pub(crate) fn parse(payload: &[u8]) -> Option<BodyRecord> {
    let mut r = Reader::new(payload);
    let seq = r.seq()?;
    let addr = |r: &mut Reader<'_>| {
        let n = r.u16()? as usize;
        String::from_utf8(r.bytes(n)?.to_vec()).ok()
    };
    let sender = addr(&mut r)?;
    let count = r.u32()? as usize;
    // Every recipient takes at least 2 bytes: a bound on the allocation.
    let mut recipients = Vec::with_capacity(count.min(payload.len() / 2));
    for _ in 0..count {
        recipients.push(addr(&mut r)?);
    }
    let body = Bytes::copy_from_slice(r.rest());
    Some(BodyRecord {
        seq,
        sender,
        recipients,
        body,
    })
}

/// Reads the record at `off` of an open segment of `file_len` bytes
/// (recovery only).
pub(crate) fn read_at(
    file: &dyn DiskFile,
    file_len: u64,
    off: u64,
) -> io::Result<Result<BodyRecord, frame::DamageKind>> {
    let mut head = [0u8; 8];
    if let Err(e) = file.read_exact_at(&mut head, off) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(Err(frame::DamageKind::Truncated))
        } else {
            Err(e)
        };
    }
    if head[..4] != BODY_MAGIC {
        return Ok(Err(frame::DamageKind::BadHeader));
    }
    let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Ok(Err(frame::DamageKind::BadHeader));
    }
    if off + (len + FRAME_OVERHEAD) as u64 > file_len {
        // Checked before allocating: a damaged length could ask for 1 GiB.
        return Ok(Err(frame::DamageKind::Truncated));
    }
    let mut buf = vec![0u8; len + FRAME_OVERHEAD];
    buf[..8].copy_from_slice(&head);
    if let Err(e) = file.read_exact_at(&mut buf[8..], off + 8) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(Err(frame::DamageKind::Truncated))
        } else {
            Err(e)
        };
    }
    Ok(match frame::decode(&buf, BODY_MAGIC) {
        Decoded::Frame(payload, _) => parse(payload).ok_or(frame::DamageKind::BadContent),
        Decoded::Damaged(kind) => Err(kind),
    })
}

/// Bytes appended to one segment and not yet durable.
#[derive(Debug)]
struct Pending {
    seg: u64,
    /// The segment's durable length, where this chunk goes.
    base: u64,
    bytes: Vec<u8>,
}

/// The writing side of one shard's body log.
#[derive(Debug)]
pub(crate) struct BodyLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    segment_bytes: u64,
    /// The segment being filled, if its file is open.
    file: Option<(u64, Box<dyn DiskFile>)>,
    /// Id of the segment new records go to, and its length counting
    /// pending bytes.
    active: u64,
    active_len: u64,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// The highest sequence number whose record is durable (0: none).
    durable_upto: u64,
    /// The highest sequence number appended.
    last_seq: u64,
    /// Total bytes written to segment files (for the benchmark's ratio).
    bytes_written: u64,
    /// Whether records of the last failed commit could not be cut off.
    uncut: bool,
}

impl BodyLog {
    /// A log whose next record goes to a new segment `next_segment` and gets
    /// a sequence number above `last_seq`.
    pub(crate) fn new(
        disk: Arc<dyn Disk>,
        dir: &Path,
        segment_bytes: u64,
        next_segment: u64,
        last_seq: u64,
    ) -> Self {
        BodyLog {
            disk,
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            file: None,
            active: next_segment,
            active_len: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            durable_upto: last_seq,
            last_seq,
            bytes_written: 0,
            uncut: false,
        }
    }

    /// Buffers one record; returns its sequence number and location.
    pub(crate) fn append(
        &mut self,
        sender: &str,
        recipients: &[impl AsRef<str>],
        body: &[u8],
    ) -> Result<(u64, Loc), JournalError> {
        let seq = self.last_seq + 1;
        if seq >= frame::SEQ_LIMIT {
            return Err(JournalError::NumbersUsedUp);
        }
        let len = record_len(sender, recipients, body)? as u64;
        if self.active_len > 0 && self.active_len + len > self.segment_bytes {
            self.active += 1;
            self.active_len = 0;
        }
        let loc = Loc {
            seg: self.active,
            off: self.active_len,
        };
        if self.pending.last().is_none_or(|p| p.seg != self.active) {
            self.pending.push(Pending {
                seg: self.active,
                base: self.active_len,
                bytes: Vec::new(),
            });
        }
        let chunk = &mut self.pending.last_mut().expect("pushed above").bytes;
        encode(chunk, seq, sender, recipients, body)?;
        self.active_len += len;
        self.pending_bytes += len as usize;
        self.last_seq = seq;
        Ok((seq, loc))
    }

    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub(crate) fn durable_upto(&self) -> u64 {
        self.durable_upto
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The segment new records go to: every lower one is closed.
    pub(crate) fn active_segment(&self) -> u64 {
        self.active
    }

    /// Where the next record will start, once everything pending is durable.
    pub(crate) fn end(&self) -> Loc {
        Loc {
            seg: self.active,
            off: self.active_len,
        }
    }

    /// Where the first record not yet durable starts (or the end).
    pub(crate) fn durable_end(&self) -> Loc {
        self.pending.first().map_or(self.end(), |p| Loc {
            seg: p.seg,
            off: p.base,
        })
    }

    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Whether records the last failed commit rejected may still be on
    /// disk, whole: cutting them off failed, so recovery would read them.
    pub(crate) fn rejected_left_on_disk(&self) -> bool {
        self.uncut
    }

    /// Writes and fsyncs everything pending; returns the highest durable
    /// sequence number. On error, every pending record is dropped (it was
    /// never durable, so never acknowledged), the segment is cut back to its
    /// durable length, and the sequence numbers above `durable_upto()` are
    /// rejected for good.
    pub(crate) fn commit(&mut self) -> Result<u64, JournalError> {
        if self.pending.is_empty() {
            return Ok(self.durable_upto);
        }
        self.pad();
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut created = false;
        for chunk in &pending {
            if let Err(e) = self.write_chunk(chunk, &mut created) {
                // Chunks already written are cut too: their messages are
                // rejected with the rest, so they must not come back after
                // a crash either.
                self.undo(&pending);
                return Err(e);
            }
        }
        if created && let Err(e) = sync_dir(&*self.disk, &self.dir) {
            self.undo(&pending);
            return Err(e);
        }
        self.durable_upto = self.last_seq;
        Ok(self.durable_upto)
    }

    /// Pads a large commit to the end of its last page, where the padding
    /// fits the record format and the segment.
    fn pad(&mut self) {
        let Some(last) = self.pending.last_mut() else {
            return;
        };
        if last.seg != self.active || last.bytes.len() < PAD_FROM {
            return;
        }
        let room = (PAGE - self.active_len % PAGE) % PAGE;
        if room < PAD_MIN || self.active_len + room > self.segment_bytes {
            return;
        }
        encode_padding(&mut last.bytes, room as usize);
        self.active_len += room;
    }

    fn write_chunk(&mut self, chunk: &Pending, created: &mut bool) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, chunk.seg);
        if self.file.as_ref().map(|(id, _)| *id) != Some(chunk.seg) {
            let f = open_or_create(&*self.disk, &path)?;
            *created |= chunk.base == 0;
            self.file = Some((chunk.seg, f));
        }
        let (_, f) = self.file.as_mut().expect("just opened");
        f.write_all_at(&chunk.bytes, chunk.base)
            .map_err(|e| JournalError::io("write", &path, e))?;
        self.bytes_written += chunk.bytes.len() as u64;
        f.sync_data()
            .map_err(|e| JournalError::io("fsync", &path, e))?;
        if chunk.seg != self.active {
            self.file = None; // filled up: closed for good
        }
        Ok(())
    }

    /// Cuts the segments of failed chunks back to their durable length.
    /// If a cut fails, new records go to a fresh segment, so no record is
    /// ever written after garbage; recovery reports the garbage as damage,
    /// and whole records left behind are marked finished by the caller
    /// (see [`BodyLog::rejected_left_on_disk`]).
    /// Sequence numbers of the dropped records are not reused.
    fn undo(&mut self, failed: &[Pending]) {
        let mut clean = true;
        for chunk in failed {
            let path = segment_path(&self.dir, chunk.seg);
            match truncate_durably(&*self.disk, &path, chunk.base) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => clean = false,
            }
        }
        let first = &failed[0];
        self.file = None;
        self.uncut = !clean;
        if clean {
            self.active = first.seg;
            self.active_len = first.base;
        } else {
            self.active = failed.last().map_or(self.active, |p| p.seg) + 1;
            self.active_len = 0;
        }
    }
}

/// Opens `path` for writing, creating it if needed, keeping what it holds.
pub(crate) fn open_or_create(
    disk: &dyn Disk,
    path: &Path,
) -> Result<Box<dyn DiskFile>, JournalError> {
    disk.open_or_create(path)
        .map_err(|e| JournalError::io("open", path, e))
}

/// Cuts `path` to `len` bytes and makes the cut durable. The raw
/// `io::Error` is returned so a caller can tell a missing file apart.
pub(crate) fn truncate_durably(disk: &dyn Disk, path: &Path, len: u64) -> io::Result<()> {
    disk.open_write(path)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
}

/// Makes a file's creation, rename or removal durable.
pub(crate) fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), JournalError> {
    disk.sync_dir(dir)
        .map_err(|e| JournalError::io("fsync directory", dir, e))
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename,
/// fsync of the directory.
pub(crate) fn write_atomic(
    disk: &dyn Disk,
    dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), JournalError> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let f = disk
            .create(&tmp)
            .map_err(|e| JournalError::io("create", &tmp, e))?;
        f.write_all_at(bytes, 0)
            .map_err(|e| JournalError::io("write", &tmp, e))?;
        f.sync_all()
            .map_err(|e| JournalError::io("fsync", &tmp, e))?;
        disk.rename(&tmp, path)
            .map_err(|e| JournalError::io("rename", path, e))?;
        sync_dir(disk, dir)
    })();
    if result.is_err() {
        let _ = disk.remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::disk::RealDisk;
    use super::*;

    #[test]
    fn record_round_trip_and_peek() {
        let mut out = Vec::new();
        let len = encode(
            &mut out,
            7,
            "a@x.example",
            &["b@y.example", "c@z.example"],
            b"hello",
        )
        .unwrap();
        let Decoded::Frame(payload, total) = frame::decode(&out, BODY_MAGIC) else {
            panic!("not a frame")
        };
        assert_eq!(total, out.len());
        assert_eq!(len, out.len());
        assert_eq!(peek(payload), Some((7, 2)));
        let rec = parse(payload).unwrap();
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.sender, "a@x.example");
        assert_eq!(rec.recipients, vec!["b@y.example", "c@z.example"]);
        assert_eq!(&rec.body[..], b"hello");
    }

    #[test]
    fn a_large_commit_ends_on_a_page_boundary_and_padding_reads_as_padding() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BodyLog::new(Arc::new(RealDisk), dir.path(), 1 << 20, 1, 0);
        let body = vec![b'x'; 3000];
        let (_, first) = log.append("s@a", &["r@b"], &body).unwrap();
        log.append("s@a", &["r@b"], &body).unwrap();
        assert_eq!(log.commit().unwrap(), 2);
        assert_eq!(log.end().off % PAGE, 0, "padded to the page end");
        let (_, third) = log.append("s@a", &["r@b"], b"small").unwrap();
        assert_eq!(third.off, 2 * PAGE);
        log.commit().unwrap();
        // A commit under a page is not padded.
        assert_ne!(log.end().off % PAGE, 0);
        let data = fs::read(segment_path(dir.path(), first.seg)).unwrap();
        let mut seqs = Vec::new();
        let mut pads = 0;
        let scan = frame::scan(&data, BODY_MAGIC, |_, payload| {
            if is_padding(payload) {
                pads += 1;
            } else {
                seqs.push(parse(payload).unwrap().seq);
            }
            true
        });
        assert!(scan.skipped.is_empty());
        assert_eq!((seqs, pads), (vec![1, 2, 3], 1));
    }

    #[test]
    fn oversize_address_is_refused() {
        let long = "x".repeat(70_000);
        let mut out = Vec::new();
        let err = encode(&mut out, 1, &long, &["b@y"], b"").unwrap_err();
        assert!(matches!(err, JournalError::TooLarge { what: "address" }));
        assert!(out.is_empty());
    }

    #[test]
    fn segments_roll_at_the_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BodyLog::new(Arc::new(RealDisk), dir.path(), 1000, 1, 0);
        let body = vec![b'x'; 300];
        let mut locs = Vec::new();
        for _ in 0..7 {
            locs.push(log.append("s@a", &["r@b"], &body).unwrap().1);
        }
        assert_eq!(log.commit().unwrap(), 7);
        let segs = list_segments(&RealDisk, dir.path()).unwrap();
        assert!(segs.len() >= 3, "{segs:?}");
        for id in &segs {
            let len = fs::metadata(segment_path(dir.path(), *id)).unwrap().len();
            assert!(len <= 1000, "segment {id} has {len} bytes");
        }
        for (i, loc) in locs.iter().enumerate() {
            let f = RealDisk
                .open_read(&segment_path(dir.path(), loc.seg))
                .unwrap();
            let len = f.size().unwrap();
            let rec = read_at(&*f, len, loc.off).unwrap().unwrap();
            assert_eq!(rec.seq, i as u64 + 1);
        }
    }
}
