//! The journal's start-up recovery on a directory a crash (or a bad disk)
//! left damaged: `ShardJournal::open` reads every journal generation and
//! body-log segment, skips or cuts off damaged records, and writes a fresh
//! checkpoint.
//!
//! Input: a flags byte (bit 0: fill in the checksum of every frame found,
//! so that the record decoders behind the CRC check see the fuzzer's bytes
//! too), a file count (low two bits, plus one), then per file a name byte
//! (bit 0: journal generation, else body-log segment; the other bits: its
//! number) and a little-endian u16 length, the last file taking all that
//! is left.
//!
//! A failure is a panic or a hang; an I/O error or a damage report is the
//! expected answer to a damaged directory. Recovery must also be stable: a
//! second start-up right after the first (a crash before any new work)
//! recovers the same messages and loses none.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use volley_engine::journal::{JournalConfig, ShardJournal};
use volley_fuzz::Header;

const BODY_MAGIC: &[u8; 4] = b"VBL1";
const JOURNAL_MAGIC: &[u8; 4] = b"VJL1";

fuzz_target!(|input: &[u8]| {
    let mut header = Header::new(input);
    let fix_checksums = header.byte() & 1 == 1;
    let count = usize::from(header.byte() & 3) + 1;
    let mut files = Vec::new();
    for k in 0..count {
        let name = header.byte();
        let len = if k + 1 == count {
            usize::MAX
        } else {
            usize::from(u16::from_le_bytes([header.byte(), header.byte()]))
        };
        files.push((name, len));
    }
    let mut rest = header.rest();

    let dir = scratch_dir();
    for (name, len) in files {
        let (bytes, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let mut bytes = bytes.to_vec();
        let id = u64::from(name >> 1);
        let (file, magic) = if name & 1 == 1 {
            (format!("journal-{id:020}.jnl"), JOURNAL_MAGIC)
        } else {
            (format!("body-{id:020}.log"), BODY_MAGIC)
        };
        if fix_checksums {
            fill_in_checksums(&mut bytes, magic);
        }
        fs::write(dir.path().join(file), bytes).expect("write a scratch file");
    }

    let Ok(first) = open(dir.path()) else {
        return;
    };
    let second = open(dir.path()).expect("a directory recovery just wrote opens again");
    assert_eq!(first, second, "a second start-up recovered other messages");
});

/// The messages recovered, as (sequence number, sender, unfinished
/// recipients, body); the journal is closed again on return.
type Recovered = Vec<(u64, String, Vec<(u32, String)>, Vec<u8>)>;

fn open(dir: &Path) -> Result<Recovered, volley_engine::journal::JournalError> {
    let (journal, recovery) = ShardJournal::open(dir, JournalConfig::default())?;
    drop(journal);
    Ok(recovery
        .messages
        .into_iter()
        .map(|m| {
            let recipients = m
                .recipients
                .into_iter()
                .map(|r| (r.index, r.address))
                .collect();
            (m.seq, m.sender, recipients, m.body.to_vec())
        })
        .collect())
}

/// Writes the CRC32C every frame header found in `bytes` calls for: a frame
/// is `magic`, a u32 LE payload length, the payload, and a u32 LE CRC32C of
/// everything before it.
fn fill_in_checksums(bytes: &mut [u8], magic: &[u8; 4]) {
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(4).position(|w| w == magic) {
        let start = at + i;
        at = start + 1;
        let Some(len) = bytes.get(start + 4..start + 8) else {
            break;
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let end = start + 8 + len;
        if end + 4 > bytes.len() {
            continue;
        }
        let crc = crc32c::crc32c(&bytes[start..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A fresh directory, in memory where the machine has /dev/shm: recovery
/// fsyncs, and a disk would make each run a hundred times slower.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("volley-fuzz-journal-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a scratch directory")
}
