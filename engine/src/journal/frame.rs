//! Checksummed frames, shared by the body log and the recovery journal.
//!
//! ```text
//! magic   4 bytes   which log and which format version ("VBL1", "VJL1")
//! len     u32 LE    payload length
//! payload len bytes
//! crc     u32 LE    CRC32C over magic, len and payload
//! ```
//!
//! A reader needs no other state: the length finds the end, the checksum
//! proves the frame whole. A torn write (a crash in the middle of a frame)
//! shows as a frame that runs past the end of the file; a flipped bit as a
//! checksum mismatch. After damage the scanner looks for the next magic
//! whose frame checks out, so one bad frame does not take the good frames
//! after it along.

use memchr::memmem;

/// Bytes a frame adds around its payload.
pub(crate) const FRAME_OVERHEAD: usize = 12;

/// The largest payload a frame may carry; a larger length field is damage.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

/// What kind of damage a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The file ends in the middle of a frame: a write cut short by a crash.
    Truncated,
    /// The frame is whole but its checksum does not match: flipped bits.
    BadChecksum,
    /// No frame starts here (wrong magic or an impossible length).
    BadHeader,
    /// The checksum matches but the content does not parse.
    BadContent,
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DamageKind::Truncated => "record cut short",
            DamageKind::BadChecksum => "checksum mismatch",
            DamageKind::BadHeader => "no valid record header",
            DamageKind::BadContent => "record content does not parse",
        })
    }
}

/// Starts a frame at the end of `out`; returns its start for [`end`].
pub(crate) fn begin(out: &mut Vec<u8>, magic: [u8; 4]) -> usize {
    let start = out.len();
    out.extend_from_slice(&magic);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Closes the frame begun at `start`: fills in the length, appends the CRC.
pub(crate) fn end(out: &mut Vec<u8>, start: usize) {
    let len = (out.len() - start - 8) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// One attempt to read a frame at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole frame: its payload and its total size.
    Frame(&'a [u8], usize),
    /// Not a frame (or not a whole one).
    Damaged(DamageKind),
}

pub(crate) fn decode(buf: &[u8], magic: [u8; 4]) -> Decoded<'_> {
    if buf.len() < 8 {
        return if magic.starts_with(&buf[..buf.len().min(4)]) {
            Decoded::Damaged(DamageKind::Truncated)
        } else {
            Decoded::Damaged(DamageKind::BadHeader)
        };
    }
    if buf[..4] != magic {
        return Decoded::Damaged(DamageKind::BadHeader);
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Damaged(DamageKind::BadHeader);
    }
    let total = len + FRAME_OVERHEAD;
    if buf.len() < total {
        return Decoded::Damaged(DamageKind::Truncated);
    }
    let crc = u32::from_le_bytes(buf[total - 4..total].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[..total - 4]) != crc {
        return Decoded::Damaged(DamageKind::BadChecksum);
    }
    Decoded::Frame(&buf[8..total - 4], total)
}

/// A stretch of a file that held no usable frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) kind: DamageKind,
}

/// What a scan of a whole buffer found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Frames whose payload the callback accepted.
    pub(crate) frames: u64,
    /// Damaged stretches, in file order.
    pub(crate) skipped: Vec<Skipped>,
    /// Where the last good frame ends: the file may be cut here when the
    /// last damage runs to the end of the buffer.
    pub(crate) good_end: u64,
}

/// Reads every frame of `buf` in order and hands `(offset, payload)` to
/// `each`, which answers whether the payload parsed. Damage is skipped and
/// recorded; the scan resumes at the next magic that starts a good frame.
pub(crate) fn scan(buf: &[u8], magic: [u8; 4], mut each: impl FnMut(u64, &[u8]) -> bool) -> Scan {
    let mut out = Scan::default();
    let finder = memmem::Finder::new(&magic);
    let mut pos = 0usize;
    while pos < buf.len() {
        let kind = match decode(&buf[pos..], magic) {
            Decoded::Frame(payload, total) => {
                if each(pos as u64, payload) {
                    out.frames += 1;
                    pos += total;
                    out.good_end = pos as u64;
                    continue;
                }
                DamageKind::BadContent
            }
            Decoded::Damaged(kind) => kind,
        };
        // Resynchronise: the next magic from which a whole frame decodes.
        let mut next = None;
        let mut from = pos + 1;
        while let Some(i) = finder.find(&buf[from..]) {
            let at = from + i;
            if matches!(decode(&buf[at..], magic), Decoded::Frame(..)) {
                next = Some(at);
                break;
            }
            from = at + 1;
        }
        let stop = next.unwrap_or(buf.len());
        out.skipped.push(Skipped {
            offset: pos as u64,
            len: (stop - pos) as u64,
            kind,
        });
        pos = stop;
    }
    out
}

/// Sequence numbers are below this. No journal numbers 2^63 messages, so a
/// larger one is damage the checksum did not catch, and would leave no room
/// to number the messages after it.
pub(crate) const SEQ_LIMIT: u64 = 1 << 63;

/// Little-endian reader over a payload; `None` means "does not parse".
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A sequence number: a u64 below [`SEQ_LIMIT`].
    pub(crate) fn seq(&mut self) -> Option<u64> {
        self.u64().filter(|&s| s < SEQ_LIMIT)
    }

    /// The number after the last one used: up to [`SEQ_LIMIT`] itself,
    /// which says every number is taken.
    pub(crate) fn next_seq(&mut self) -> Option<u64> {
        self.u64().filter(|&s| s <= SEQ_LIMIT)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = *b"TST1";

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            let s = begin(&mut out, M);
            out.extend_from_slice(p);
            end(&mut out, s);
        }
        out
    }

    fn collect(buf: &[u8]) -> (Vec<Vec<u8>>, Scan) {
        let mut got = Vec::new();
        let scan = scan(buf, M, |_, p| {
            got.push(p.to_vec());
            true
        });
        (got, scan)
    }

    #[test]
    fn round_trip() {
        let buf = frames(&[b"one", b"", b"three"]);
        let (got, scan) = collect(&buf);
        assert_eq!(got, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert!(scan.skipped.is_empty());
        assert_eq!(scan.good_end, buf.len() as u64);
    }

    #[test]
    fn every_cut_of_the_last_frame_is_a_truncation() {
        let buf = frames(&[b"first", b"second frame"]);
        let first_len = 5 + FRAME_OVERHEAD;
        for cut in first_len + 1..buf.len() {
            let (got, scan) = collect(&buf[..cut]);
            assert_eq!(got, vec![b"first".to_vec()], "cut at {cut}");
            assert_eq!(scan.good_end, first_len as u64);
            assert_eq!(scan.skipped.len(), 1);
            assert_eq!(scan.skipped[0].kind, DamageKind::Truncated, "cut at {cut}");
            assert_eq!(scan.skipped[0].len, (cut - first_len) as u64);
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_costs_only_its_frame() {
        let buf = frames(&[b"alpha", b"bravo", b"charlie"]);
        let second = 5 + FRAME_OVERHEAD;
        let third = second * 2;
        for i in second..third {
            let mut bad = buf.clone();
            bad[i] ^= 0x20;
            let (got, scan) = collect(&bad);
            assert_eq!(
                got,
                vec![b"alpha".to_vec(), b"charlie".to_vec()],
                "byte {i}"
            );
            assert_eq!(scan.skipped.len(), 1, "byte {i}");
            assert_eq!(scan.skipped[0].offset, second as u64);
            assert_eq!(scan.skipped[0].len, (third - second) as u64);
        }
    }

    #[test]
    fn rejected_content_is_damage() {
        let buf = frames(&[b"ok", b"bad", b"ok"]);
        let mut n = 0;
        let scan = scan(&buf, M, |_, p| {
            n += 1;
            p == b"ok"
        });
        assert_eq!(n, 3);
        assert_eq!(scan.frames, 2);
        assert_eq!(scan.skipped[0].kind, DamageKind::BadContent);
    }
}
