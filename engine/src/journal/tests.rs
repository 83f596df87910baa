//! The journal as a whole, on real files in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::body_log::{self, segment_path};
use super::disk::RealDisk;
use super::progress::{self, journal_path};
use super::*;

fn list_segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    body_log::list_segments(&RealDisk, dir)
}

fn list_generations(dir: &Path) -> Result<Vec<u64>, JournalError> {
    progress::list_generations(&RealDisk, dir)
}

fn truncate_durably(path: &Path, len: u64) -> std::io::Result<()> {
    body_log::truncate_durably(&RealDisk, path, len)
}

fn small() -> JournalConfig {
    JournalConfig {
        segment_bytes: 4096,
        ..JournalConfig::default()
    }
}

fn open(dir: &Path, config: JournalConfig) -> (ShardJournal, Recovery) {
    ShardJournal::open(dir, config).expect("open journal")
}

fn body(i: u64) -> Vec<u8> {
    format!(
        "Subject: message {i:04}\r\n\r\nBODY-{i:04}-{}\r\n",
        "x".repeat(200)
    )
    .into_bytes()
}

fn rcpts(i: u64, n: u32) -> Vec<String> {
    (0..n)
        .map(|r| format!("r{r}-m{i}@d{}.example", r % 3))
        .collect()
}

/// Appends `n` messages of `per` recipients each and commits them; message
/// `seq` carries `body(seq - 1)`.
fn fill(j: &mut ShardJournal, now: Instant, n: u64, per: u32) -> Vec<u64> {
    let mut seqs = Vec::new();
    let base = j.durable_upto();
    for i in base..base + n {
        let seq = j
            .append(
                now,
                &format!("s{i}@sender.example"),
                &rcpts(i, per),
                &body(i),
            )
            .unwrap();
        seqs.push(seq);
    }
    assert_eq!(j.commit_bodies(now).unwrap(), *seqs.last().unwrap());
    seqs
}

/// (seq, indices) of what recovery handed back.
fn unfinished(r: &Recovery) -> Vec<(u64, Vec<u32>)> {
    r.messages
        .iter()
        .map(|m| (m.seq, m.recipients.iter().map(|r| r.index).collect()))
        .collect()
}

fn file_with(dir: &Path, needle: &[u8]) -> (PathBuf, usize) {
    for seg in list_segments(dir).unwrap() {
        let path = segment_path(dir, seg);
        let data = fs::read(&path).unwrap();
        if let Some(at) = memchr::memmem::find(&data, needle) {
            return (path, at);
        }
    }
    panic!("no segment holds {}", String::from_utf8_lossy(needle));
}

fn flip(path: &Path, at: usize) {
    let mut data = fs::read(path).unwrap();
    data[at] ^= 0x01;
    fs::write(path, &data).unwrap();
}

fn current_journal(dir: &Path) -> PathBuf {
    journal_path(dir, *list_generations(dir).unwrap().last().unwrap())
}

#[test]
fn round_trip_gives_back_every_committed_message_whole() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, r) = open(dir.path(), small());
    assert!(r.messages.is_empty() && r.report.is_clean());
    let seqs = fill(&mut j, now, 30, 3);
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    // Appended but never committed: never acknowledged, so not recovered.
    j.append(now, "late@x", &["r@y"], b"not durable").unwrap();
    drop(j);

    let (j, r) = open(dir.path(), small());
    assert!(r.report.is_clean(), "{}", r.report);
    assert_eq!(r.messages.len(), 30);
    for (i, m) in r.messages.iter().enumerate() {
        let i = i as u64;
        assert_eq!(m.seq, i + 1);
        assert_eq!(m.sender, format!("s{i}@sender.example"));
        let addrs: Vec<String> = m.recipients.iter().map(|r| r.address.clone()).collect();
        assert_eq!(addrs, rcpts(i, 3));
        assert_eq!(&m.body[..], &body(i)[..]);
    }
    assert_eq!(r.report.recipients, 90);
    // Sequence numbers continue past every durable one.
    drop(j);
    let (mut j, _) = open(dir.path(), small());
    assert_eq!(j.append(now, "a@b", &["c@d"], b"x").unwrap(), 31);
}

#[test]
fn recovery_returns_exactly_the_unfinished_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 10, 4);
    // Before a checkpoint: message 1 done, 2 half done.
    for i in 0..4 {
        j.finish(now, 1, i).unwrap();
    }
    j.finish(now, 2, 1).unwrap();
    j.finish(now, 2, 3).unwrap();
    j.commit_progress(now).unwrap();
    j.checkpoint().unwrap();
    // After it: 3 done, 2 one more, 4 one; and new messages 11 and 12.
    fill(&mut j, now, 2, 2);
    for i in 0..4 {
        j.finish(now, 3, i).unwrap();
    }
    j.finish(now, 2, 0).unwrap();
    j.finish(now, 4, 2).unwrap();
    j.finish(now, 11, 1).unwrap();
    j.commit_progress(now).unwrap();
    // Finished, but the fact is never committed: it is sent again.
    j.finish(now, 5, 0).unwrap();
    drop(j);

    let (mut j, r) = open(dir.path(), small());
    assert!(r.report.is_clean(), "{}", r.report);
    let mut want = vec![(2, vec![2]), (4, vec![0, 1, 3])];
    want.extend((5..=10).map(|s| (s, vec![0, 1, 2, 3])));
    want.push((11, vec![0]));
    want.push((12, vec![0, 1]));
    assert_eq!(unfinished(&r), want);
    assert_eq!(r.messages[0].recipients[0].address, "r2-m1@d2.example");

    // The state carries through a second restart, with no new facts lost.
    j.finish(now, 2, 2).unwrap();
    j.finish(now, 12, 0).unwrap();
    j.commit_progress(now).unwrap();
    assert!(matches!(
        j.finish(now, 2, 9),
        Err(JournalError::UnknownRecipient { seq: 2, index: 9 })
    ));
    assert!(j.finish(now, 99, 0).is_err());
    drop(j);
    let (_, r) = open(dir.path(), small());
    assert_eq!(unfinished(&r)[0], (4, vec![0, 1, 3]));
    assert_eq!(unfinished(&r).last().unwrap(), &(12, vec![1]));
    assert_eq!(r.report.messages, 9);
}

#[test]
fn finished_segments_are_deleted_and_the_active_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    let seqs = fill(&mut j, now, 40, 1);
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 3, "{segs:?}");
    // Finish everything but the last message.
    for &s in &seqs[..39] {
        j.finish(now, s, 0).unwrap();
    }
    // Not yet durable: nothing may go.
    assert_eq!(list_segments(dir.path()).unwrap(), segs);
    j.commit_progress(now).unwrap();
    let left = list_segments(dir.path()).unwrap();
    assert_eq!(
        left,
        vec![*segs.last().unwrap()],
        "only the active segment stays"
    );
    assert_eq!(j.stats().unfinished_messages, 1);
    drop(j);
    let (mut j, r) = open(dir.path(), small());
    assert_eq!(unfinished(&r), vec![(40, vec![0])]);
    // Once the last one finishes, its (now closed) segment goes too.
    j.finish(now, 40, 0).unwrap();
    j.commit_progress(now).unwrap();
    assert!(list_segments(dir.path()).unwrap().is_empty());
}

#[test]
fn a_body_record_cut_in_the_middle_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), JournalConfig::default());
    fill(&mut j, now, 5, 2);
    drop(j);
    let (path, at) = file_with(dir.path(), b"BODY-0004");
    let full = fs::metadata(&path).unwrap().len();
    let cut = at as u64 + 20;
    truncate_durably(&path, cut).unwrap();

    let (_, r) = open(dir.path(), JournalConfig::default());
    assert_eq!(
        unfinished(&r).iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(r.report.damage.len(), 1, "{}", r.report);
    let d = &r.report.damage[0];
    assert_eq!(d.kind, DamageKind::Truncated);
    assert!(d.truncated);
    assert_eq!(d.file, path);
    assert_eq!(d.offset + d.len, cut);
    assert!(full > cut);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        d.offset,
        "file cut at the last good record"
    );
    assert!(r.report.to_string().contains("record cut short"));
}

#[test]
fn padded_commits_recover_whole_and_a_torn_padding_record_is_cut_off() {
    // Three commits of about 6 KB each: each is padded to its page end.
    let padded = || {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = open(dir.path(), JournalConfig::default());
        for _ in 0..3 {
            fill(&mut j, Instant::now(), 20, 1);
        }
        drop(j);
        let path = segment_path(dir.path(), list_segments(dir.path()).unwrap()[0]);
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len % 4096, 0, "the last commit ends on a page boundary");
        (dir, path, len)
    };

    let (dir, _, _) = padded();
    let (_, r) = open(dir.path(), JournalConfig::default());
    assert!(r.report.is_clean(), "{}", r.report);
    assert_eq!(r.report.body_records, 60, "padding is not counted");
    assert_eq!(r.messages.len(), 60);

    // A crash in the middle of writing the last padding record.
    let (dir, path, len) = padded();
    let (_, last) = file_with(dir.path(), b"BODY-0059");
    let cut = len - 100;
    assert!(cut > last as u64 + 300, "the cut falls in the padding");
    truncate_durably(&path, cut).unwrap();
    let (_, r) = open(dir.path(), JournalConfig::default());
    assert_eq!(r.messages.len(), 60, "{}", r.report);
    assert_eq!(r.report.damage.len(), 1, "{}", r.report);
    assert_eq!(r.report.damage[0].kind, DamageKind::Truncated);
    assert!(r.report.damage[0].truncated);
}

#[test]
fn a_flipped_byte_in_the_body_log_costs_only_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), JournalConfig::default());
    fill(&mut j, now, 3, 1);
    // Messages 1-3 go into the checkpoint, 4-6 stay in the tail.
    j.checkpoint().unwrap();
    fill(&mut j, now, 3, 1);
    drop(j);
    let (path, at) = file_with(dir.path(), b"BODY-0001");
    flip(&path, at); // message 2: listed by the checkpoint
    let (path, at) = file_with(dir.path(), b"BODY-0004");
    flip(&path, at); // message 5: in the tail

    let (_, r) = open(dir.path(), JournalConfig::default());
    assert_eq!(
        unfinished(&r).iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![1, 3, 4, 6]
    );
    assert_eq!(r.report.missing, vec![2], "{}", r.report);
    let kinds: Vec<DamageKind> = r.report.damage.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        vec![DamageKind::BadChecksum, DamageKind::BadChecksum],
        "{}",
        r.report
    );
    assert!(r.report.damage.iter().all(|d| !d.truncated));
    assert!(r.report.bytes_discarded() > 200);
}

#[test]
fn a_journal_frame_cut_in_the_middle_costs_only_its_facts() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 4, 2);
    j.finish(now, 1, 0).unwrap();
    j.commit_progress(now).unwrap();
    j.finish(now, 2, 1).unwrap();
    j.commit_progress(now).unwrap();
    drop(j);
    let path = current_journal(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    truncate_durably(&path, len - 5).unwrap();

    let (_, r) = open(dir.path(), small());
    assert_eq!(
        unfinished(&r),
        vec![
            (1, vec![1]),
            (2, vec![0, 1]),
            (3, vec![0, 1]),
            (4, vec![0, 1])
        ]
    );
    assert_eq!(r.report.damage.len(), 1);
    assert_eq!(r.report.damage[0].kind, DamageKind::Truncated);
    assert_eq!(r.report.damage[0].file, path);
    assert!(r.report.checkpoint);
}

#[test]
fn a_flipped_byte_in_a_journal_frame_costs_only_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 3, 1);
    for s in 1..=3 {
        j.finish(now, s, 0).unwrap();
        j.commit_progress(now).unwrap();
    }
    drop(j);
    let path = current_journal(dir.path());
    let data = fs::read(&path).unwrap();
    // The three fact frames are the file's last 3 x (12 + 1 + 12) bytes.
    let frame = 25;
    flip(&path, data.len() - 2 * frame + 14); // inside the second one's seq

    let (_, r) = open(dir.path(), small());
    assert_eq!(unfinished(&r), vec![(2, vec![0])], "{}", r.report);
    assert_eq!(r.report.damage.len(), 1);
    assert_eq!(r.report.damage[0].kind, DamageKind::BadChecksum);
    assert!(!r.report.damage[0].truncated);
}

#[test]
fn without_a_whole_checkpoint_the_body_log_is_resent_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 3, 2);
    j.checkpoint().unwrap();
    j.finish(now, 3, 0).unwrap();
    j.commit_progress(now).unwrap();
    drop(j);
    let path = current_journal(dir.path());
    flip(&path, 20); // inside the checkpoint frame

    let (_, r) = open(dir.path(), small());
    assert!(!r.report.checkpoint);
    assert_eq!(r.report.damage.len(), 1, "{}", r.report);
    // The later fact still counts; everything else is sent again.
    assert_eq!(
        unfinished(&r),
        vec![(1, vec![0, 1]), (2, vec![0, 1]), (3, vec![1])]
    );
}

#[test]
fn group_commit_is_due_by_size_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        commit_interval: Duration::from_millis(5),
        commit_bytes: 10_000,
        ..JournalConfig::default()
    };
    let t0 = Instant::now();
    let (mut j, _) = open(dir.path(), config);
    assert!(!j.commit_due(t0));
    assert_eq!(j.next_commit_at(), None);
    j.append(t0, "a@b", &["c@d"], &[0; 100]).unwrap();
    assert!(!j.commit_due(t0 + Duration::from_millis(4)));
    assert_eq!(j.next_commit_at(), Some(t0 + Duration::from_millis(5)));
    assert!(j.commit_due(t0 + Duration::from_millis(5)));
    assert_eq!(j.durable_upto(), 0);
    assert_eq!(j.commit_bodies(t0).unwrap(), 1);
    assert_eq!(j.next_commit_at(), None);
    j.append(t0, "a@b", &["c@d"], &[0; 10_000]).unwrap();
    assert!(j.commit_due(t0), "due by size at once");
    j.commit_bodies(t0).unwrap();
    j.finish(t0, 1, 0).unwrap();
    assert!(
        j.commit_due(t0 + Duration::from_millis(5)),
        "facts wait too"
    );
}

#[test]
fn a_shard_directory_is_held_by_one_journal_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path(), small());
    let e = ShardJournal::open(dir.path(), small()).unwrap_err();
    assert!(matches!(e, JournalError::Locked { .. }), "{e}");
    drop(j);
    open(dir.path(), small());
}

const CHILD_DIR: &str = "VOLLEY_JOURNAL_FSIZE_CHILD";
const FSIZE_LIMIT: u64 = 64 * 1024;

/// Run by `a_full_disk_is_a_typed_error_and_loses_nothing_acknowledged` in a
/// child process, with a file-size limit that would hurt any other test.
#[test]
#[ignore = "a child process of a_full_disk_is_a_typed_error_and_loses_nothing_acknowledged"]
fn fsize_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    // SAFETY: plain libc calls on this process; SIGXFSZ ignored so that a
    // write past the limit fails with EFBIG instead of killing us.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: FSIZE_LIMIT,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let now = Instant::now();
    let config = JournalConfig {
        segment_bytes: 1 << 20,
        ..JournalConfig::default()
    };
    let (mut j, _) = open(Path::new(&dir), config);
    let mut acked = Vec::new();
    let mut failures = 0;
    for batch in 0..100u64 {
        let seqs: Vec<u64> = (0..5)
            .map(|i| {
                j.append(now, "s@x", &["r@y"], &body(batch * 5 + i))
                    .unwrap()
            })
            .collect();
        match j.commit_bodies(now) {
            Ok(upto) => {
                assert_eq!(upto, *seqs.last().unwrap());
                acked.extend(seqs);
            }
            Err(e) => {
                assert!(e.is_transient() && e.is_storage_full(), "{e}");
                assert!(
                    matches!(e, JournalError::Io { ref source, .. } if source.raw_os_error() == Some(libc::EFBIG))
                );
                println!("ERROR {e}");
                failures += 1;
                if failures == 3 {
                    break;
                }
            }
        }
    }
    // Space again: the log carries on after the rejected batches.
    // SAFETY: as above; raising the soft limit up to the hard one.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let seq = j.append(now, "s@x", &["r@y"], &body(999)).unwrap();
    assert_eq!(j.commit_bodies(now).unwrap(), seq);
    acked.push(seq);
    let acked: Vec<String> = acked.iter().map(u64::to_string).collect();
    println!("ACKED {}", acked.join(","));
}

#[test]
fn a_full_disk_is_a_typed_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal::tests::fsize_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("ERROR journal: write").count(),
        3,
        "{stdout}"
    );
    let acked: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ACKED "))
        .expect("child reports what it acknowledged")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let body_bytes = body(0).len() as u64;
    assert!(
        acked.len() as u64 * body_bytes > FSIZE_LIMIT / 2,
        "{} acked",
        acked.len()
    );
    assert!(acked.len() as u64 * body_bytes < FSIZE_LIMIT);

    let (_, r) = open(dir.path(), JournalConfig::default());
    assert!(r.report.is_clean(), "{}", r.report);
    let seqs: Vec<u64> = r.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, acked);
}

#[test]
fn a_checkpoint_taken_while_appends_wait_loses_neither_them_nor_their_facts() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 3, 2);
    let a = j.append(now, "s@x", &["a@y", "b@y"], b"waiting 1").unwrap();
    let b = j.append(now, "s@x", &["a@y"], b"waiting 2").unwrap();
    j.finish(now, a, 1).unwrap();
    j.finish(now, 1, 0).unwrap();
    j.checkpoint().unwrap();
    assert_eq!(
        list_generations(dir.path()).unwrap().len(),
        1,
        "the old generation is gone"
    );
    assert_eq!(j.commit_bodies(now).unwrap(), b);
    j.commit_progress(now).unwrap();
    drop(j);

    let (_, r) = open(dir.path(), small());
    assert!(r.report.is_clean(), "{}", r.report);
    assert_eq!(
        unfinished(&r),
        vec![
            (1, vec![1]),
            (2, vec![0, 1]),
            (3, vec![0, 1]),
            (a, vec![0]),
            (b, vec![0])
        ]
    );
    assert_eq!(&r.messages[3].body[..], b"waiting 1");
}

const CRASH_DIR: &str = "VOLLEY_JOURNAL_CRASH_CHILD";

/// Run by `kill_9_at_random_points_loses_nothing_acknowledged` in a child
/// process: appends and finishes under load, printing what it acknowledged
/// ("ACK seq recipients"), what it is about to finish ("WILL seq i") and
/// what it finished durably ("FIN seq i"), until it is killed (or 10 s).
#[test]
#[ignore = "a child process of kill_9_at_random_points_loses_nothing_acknowledged"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let config = JournalConfig {
        segment_bytes: 16 << 10,
        checkpoint_journal_bytes: 2 << 10,
        ..JournalConfig::default()
    };
    let (mut j, r) = open(Path::new(&dir), config);
    let mut todo: std::collections::VecDeque<(u64, u32)> = r
        .messages
        .iter()
        .flat_map(|m| m.recipients.iter().map(move |r| (m.seq, r.index)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u64;
    while Instant::now() < deadline {
        let now = Instant::now();
        let mut appended = Vec::new();
        for _ in 0..5 {
            let n = 1 + (i % 3) as u32;
            appended.push((j.append(now, "s@x", &rcpts(i, n), &body(i)).unwrap(), n));
            i += 1;
        }
        j.commit_bodies(now).unwrap();
        for (seq, n) in appended {
            println!("ACK {seq} {n}");
            todo.extend((0..n).map(|k| (seq, k)));
        }
        let mut finished = Vec::new();
        for (seq, k) in todo.drain(..4.min(todo.len())) {
            println!("WILL {seq} {k}");
            j.finish(now, seq, k).unwrap();
            finished.push((seq, k));
        }
        j.commit_progress(now).unwrap();
        for (seq, k) in finished {
            println!("FIN {seq} {k}");
        }
        if j.checkpoint_due() {
            j.checkpoint().unwrap();
        }
    }
}

#[test]
fn kill_9_at_random_points_loses_nothing_acknowledged() {
    use std::collections::{BTreeMap, HashSet};
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut acked = BTreeMap::new();
    let mut will = HashSet::new();
    let mut fin = HashSet::new();
    for round in 0..4u64 {
        let delay = Duration::from_millis(100 + (seed / (round + 1)) % 200);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "journal::tests::crash_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CRASH_DIR, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
            match (f[0], num(1), num(2)) {
                ("ACK", Some(s), Some(n)) => {
                    acked.insert(s, n as u32);
                }
                ("WILL", Some(s), Some(i)) => {
                    will.insert((s, i as u32));
                }
                ("FIN", Some(s), Some(i)) => {
                    fin.insert((s, i as u32));
                }
                _ => {}
            }
        }

        let (j, r) = open(dir.path(), JournalConfig::default());
        let recovered: HashSet<(u64, u32)> = r
            .messages
            .iter()
            .flat_map(|m| m.recipients.iter().map(move |x| (m.seq, x.index)))
            .collect();
        for (&s, &n) in &acked {
            for i in 0..n {
                let key = (s, i);
                if fin.contains(&key) {
                    assert!(
                        !recovered.contains(&key),
                        "round {round} (seed {seed}): {key:?} finished durably, yet resent"
                    );
                } else if !will.contains(&key) {
                    assert!(
                        recovered.contains(&key),
                        "round {round} (seed {seed}): {key:?} acknowledged, then lost; {}",
                        r.report
                    );
                }
            }
        }
        assert!(r.report.missing.is_empty(), "{}", r.report);
        drop(j);
    }
    assert!(
        acked.len() > 20,
        "the child acknowledged only {} messages",
        acked.len()
    );
    assert!(!fin.is_empty());
}

/// Found by the power-loss simulation (seed 266).
#[test]
fn a_message_without_recipients_keeps_its_number_after_its_segment_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    // One record per segment.
    let config = JournalConfig {
        segment_bytes: 300,
        ..JournalConfig::default()
    };
    let (mut j, _) = open(dir.path(), config.clone());
    j.append(now, "s@x", &["r@y"], &body(0)).unwrap();
    let none = j
        .append(now, "s@x", &Vec::<String>::new(), &body(1))
        .unwrap();
    assert_eq!(j.commit_bodies(now).unwrap(), none);
    // Never committed; it closes the segment of the message without
    // recipients, which then goes.
    j.append(now, "s@x", &["r@y"], &body(2)).unwrap();
    j.commit_progress(now).unwrap();
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    drop(j);

    let (mut j, r) = open(dir.path(), config);
    assert_eq!(unfinished(&r), vec![(1, vec![0])]);
    let next = j.append(now, "s@x", &["r@y"], &body(3)).unwrap();
    assert!(next > none, "number {next} given again");
}

#[test]
fn a_listed_message_whose_segment_is_gone_is_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 40, 1);
    j.checkpoint().unwrap();
    drop(j);
    let (first, _) = file_with(dir.path(), b"BODY-0000");
    fs::remove_file(&first).unwrap();

    let (_, r) = open(dir.path(), small());
    assert!(!r.report.missing.is_empty());
    assert_eq!(r.report.missing[0], 1);
    assert_eq!(r.report.missing.len() + r.messages.len(), 40);
    assert!(r.report.to_string().contains("unfinished messages lost"));
}

/// Found by the `journal_recovery` fuzz target: a checkpoint that puts the
/// body log's end past the end of its segment (the segment lost its tail
/// behind the journal's back) made recovery subtract past zero, a panic
/// wherever overflow checks are on, instead of reporting what the
/// checkpoint lists there as missing.
#[test]
fn a_segment_shorter_than_its_checkpoint_says_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // The fuzzer's journal file: a checkpoint frame (next sequence number 3,
    // body log at segment 1 offset 127, message 1 at segment 1 offset 0 with
    // two recipients, the first finished), then five bytes of garbage.
    let journal: &[u8] = b"VJL1\x3e\x00\x00\x00\x01\
        \x03\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\
        \x7f\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\
        \x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01\
        \x0a\x87\x0f\xb8VJ\x00le";
    fs::write(journal_path(dir.path(), 2), journal).unwrap();
    // ... and an empty segment 1.
    fs::write(segment_path(dir.path(), 1), b"").unwrap();

    let (_, r) = open(dir.path(), small());
    assert!(r.report.checkpoint, "{}", r.report);
    assert_eq!(r.report.missing, vec![1], "{}", r.report);
    assert!(r.messages.is_empty());
}

/// Found by the `journal_recovery` fuzz target: a segment holding the same
/// record twice (message 1: sender s@x, recipients a@x, b@x and c@x, body
/// "b"), with no checkpoint, handed message 1 back twice, so it would have
/// been delivered twice. The second copy is now damage.
#[test]
fn a_record_found_twice_is_recovered_once() {
    let dir = tempfile::tempdir().unwrap();
    let record: &[u8] = b"VBL1\x21\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\
        \x03\x00s@x\x03\x00\x00\x00\x03\x00a@x\x03\x00b@x\x03\x00c@xb\x84\x6e\x00\xed";
    let segment = [b"\x001\x01\x02", record, b"x", record].concat();
    fs::write(segment_path(dir.path(), 0), segment).unwrap();

    let (_, r) = open(dir.path(), small());
    assert_eq!(unfinished(&r), vec![(1, vec![0, 1, 2])], "{}", r.report);
    assert!(
        r.report
            .damage
            .iter()
            .any(|d| d.kind == DamageKind::BadContent)
    );
}

/// Found by the `journal_recovery` fuzz target: a whole record numbered
/// 2^64 - 1 made recovery's next sequence number overflow (a panic where
/// overflow checks are on; 0 otherwise, so numbers would have been reused).
/// A number that high is damage.
#[test]
fn a_record_numbered_past_the_limit_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let record: &[u8] = b"VBL1\x21\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\
        \x01\x00\x00\x00\x00\x00\x00\x00\x03\x00s@\xb8\x00\x00xb@x\x03\x00c\x00@x6A'\xc3";
    fs::write(segment_path(dir.path(), 0), record).unwrap();

    let (_, r) = open(dir.path(), small());
    assert!(r.messages.is_empty());
    assert_eq!(r.report.damage.len(), 1, "{}", r.report);
    assert_eq!(r.report.damage[0].kind, DamageKind::BadContent);
}

/// Found by the `journal_recovery` fuzz target: a "finished" fact naming
/// message 2^63 - 1, the highest number there is (damage its checksum did
/// not catch), made the checkpoint that recovery writes say "next number
/// 2^63", which its own reader refused: the next start-up found no
/// checkpoint, and the facts folded into it were gone with the older
/// generations, so a finished message was handed back to be sent again.
#[test]
fn a_fact_naming_the_highest_number_leaves_a_checkpoint_the_next_start_reads() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut j, _) = open(dir.path(), small());
    fill(&mut j, now, 3, 1);
    j.finish(now, 1, 0).unwrap();
    j.commit_progress(now).unwrap();
    drop(j);
    let mut damage = Vec::new();
    progress::encode_finished(&mut damage, &[(super::frame::SEQ_LIMIT - 1, 0)]);
    let mut journal = fs::OpenOptions::new()
        .append(true)
        .open(current_journal(dir.path()))
        .unwrap();
    std::io::Write::write_all(&mut journal, &damage).unwrap();
    drop(journal);

    let (mut j, r) = open(dir.path(), small());
    assert_eq!(unfinished(&r), vec![(2, vec![0]), (3, vec![0])]);
    // No number is left for a new message: it is refused, not numbered 2^63.
    assert!(matches!(
        j.append(now, "s@x", &["r@x"], b"b"),
        Err(JournalError::NumbersUsedUp)
    ));
    drop(j);
    let (_, r) = open(dir.path(), small());
    assert!(r.report.checkpoint, "{}", r.report);
    assert!(r.report.is_clean(), "{}", r.report);
    assert_eq!(unfinished(&r), vec![(2, vec![0]), (3, vec![0])]);
}
