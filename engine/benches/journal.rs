//! The journal's figures (not a timed test): append throughput with group
//! commit, bytes written against body bytes, and recovery time.
//!
//! ```text
//! cargo bench -p volley-engine --bench journal -- [--messages N] [--recipients N] [--dir PATH]
//!     [--only throughput|bytes|recovery]
//! ```
//!
//! Files go to a fresh temporary directory under `--dir` (default: the
//! system's temporary directory) and are removed at the end. For the
//! recovery figures the files' pages are dropped from the page cache first
//! (`posix_fadvise(DONTNEED)` on our own files only), so they are read from
//! the disk.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use volley_engine::journal::{JournalConfig, ShardJournal};

struct Args {
    messages: u64,
    recipients: u64,
    dir: PathBuf,
    /// Run only this section: throughput, bytes or recovery.
    only: Option<String>,
}

fn args() -> Args {
    // `cargo bench` passes --bench; anything else (`cargo test
    // --all-targets`) gets a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let mut a = Args {
        messages: if full { 200_000 } else { 2_000 },
        recipients: if full { 1_000_000 } else { 10_000 },
        dir: std::env::temp_dir(),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => a.messages = value().parse().expect("--messages N"),
            "--recipients" => a.recipients = value().parse().expect("--recipients N"),
            "--dir" => a.dir = value().into(),
            "--only" => a.only = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn body(size: usize, i: u64) -> Vec<u8> {
    let mut b = format!(
        "From: news@sender.example\r\nTo: user{i}@example.com\r\nSubject: offer {i}\r\n\r\n"
    )
    .into_bytes();
    b.resize(size, b'x');
    b
}

fn rcpt(i: u64, r: u64) -> String {
    format!("user{i}.{r}@d{}.example.com", i % 1000)
}

/// Drops our files' pages from the page cache.
fn uncache(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list") {
        let f = File::open(entry.expect("entry").path()).expect("open");
        // SAFETY: an advisory call on a descriptor we own.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

struct Run {
    elapsed: Duration,
    commits: u64,
    /// The slowest commit: write and fsync of both logs.
    worst: Duration,
    journal: ShardJournal,
    body_bytes: u64,
}

/// Appends `n` messages of `per` recipients, committing whenever the group
/// commit is due, and finishing each message `lag` messages after its
/// append (as deliveries would).
fn steady(dir: &Path, config: JournalConfig, n: u64, per: u64, lag: u64) -> Run {
    let (mut j, _) = ShardJournal::open(dir, config).expect("open");
    let b = body(2048, 0);
    let mut commits = 0;
    let mut body_bytes = 0;
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for i in 0..n {
        let now = Instant::now();
        let rcpts: Vec<String> = (0..per).map(|r| rcpt(i, r)).collect();
        let seq = j
            .append(now, "news@sender.example", &rcpts, &b)
            .expect("append");
        body_bytes += b.len() as u64;
        if seq > lag && seq - lag <= j.durable_upto() {
            for r in 0..per {
                j.finish(now, seq - lag, r as u32).expect("finish");
            }
        }
        if j.commit_due(now) {
            let t = Instant::now();
            j.commit_bodies(now).expect("commit");
            j.commit_progress(now).expect("commit");
            worst = worst.max(t.elapsed());
            commits += 1;
        }
        if j.checkpoint_due() {
            j.checkpoint().expect("checkpoint");
        }
    }
    let now = Instant::now();
    j.commit_bodies(now).expect("commit");
    j.commit_progress(now).expect("commit");
    commits += 1;
    Run {
        elapsed: start.elapsed(),
        commits,
        worst,
        journal: j,
        body_bytes,
    }
}

fn throughput(base: &Path, n: u64) {
    let lag = 10_000.min(n / 4);
    println!(
        "== append with group commit: {n} messages of 2048 bytes, 1 recipient, finished {lag} behind =="
    );
    for (label, commit_bytes) in [("1 MiB batches", 1 << 20), ("64 KiB batches", 64 << 10)] {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let config = JournalConfig {
            commit_bytes,
            ..JournalConfig::default()
        };
        let Run {
            elapsed,
            commits,
            worst,
            journal: j,
            body_bytes,
        } = steady(dir.path(), config, n, 1, lag);
        let s = j.stats();
        let written = s.body_bytes_written + s.journal_bytes_written;
        let allowed = body_bytes as f64 * 1.1 + 64.0 * n as f64;
        println!(
            "  {label}: {:.0} messages/s, {:.0} MB/s, {commits} commits ({:.1} messages each, slowest {worst:.2?})",
            n as f64 / elapsed.as_secs_f64(),
            body_bytes as f64 / elapsed.as_secs_f64() / 1e6,
            n as f64 / commits as f64,
        );
        println!(
            "  bytes written {written} = body log {} + journal {}; body bytes {body_bytes}; \
             {:.3}x body, {:.1} B/recipient over the body; goal <= 1.1x body + 64 B/recipient: {}",
            s.body_bytes_written,
            s.journal_bytes_written,
            written as f64 / body_bytes as f64,
            (written - body_bytes) as f64 / n as f64,
            if (written as f64) <= allowed {
                "met"
            } else {
                "MISSED"
            },
        );
        println!("  segments left on disk: {}", s.segments);
    }
}

fn bytes_many_recipients(base: &Path, n: u64) {
    let per = 10;
    println!(
        "== bytes written: {n} messages of 2048 bytes, {per} recipients each, all finished =="
    );
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let run = steady(
        dir.path(),
        JournalConfig::default(),
        n,
        per,
        1_000.min(n / 4),
    );
    let (s, body_bytes) = (run.journal.stats(), run.body_bytes);
    let written = s.body_bytes_written + s.journal_bytes_written;
    let rcpts = n * per;
    let allowed = body_bytes as f64 * 1.1 + 64.0 * rcpts as f64;
    println!(
        "  bytes written {written}; body bytes {body_bytes}; {:.1} B/recipient over the body; goal: {}",
        (written - body_bytes) as f64 / rcpts as f64,
        if (written as f64) <= allowed {
            "met"
        } else {
            "MISSED"
        },
    );
}

fn recovery(base: &Path, recipients: u64, per: u64, checkpointed: bool) {
    let n = recipients / per;
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    {
        let (mut j, _) = ShardJournal::open(dir.path(), JournalConfig::default()).expect("open");
        let now = Instant::now();
        for i in 0..n {
            let rcpts: Vec<String> = (0..per).map(|r| rcpt(i, r)).collect();
            j.append(now, "news@sender.example", &rcpts, &body(2048, i))
                .expect("append");
            if j.commit_due(now) {
                j.commit_bodies(now).expect("commit");
            }
        }
        j.commit_bodies(now).expect("commit");
        if checkpointed {
            j.checkpoint().expect("checkpoint");
        }
    }
    // Let writeback of earlier runs finish, then read from the disk.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    uncache(dir.path());
    let start = Instant::now();
    let (_, r) = ShardJournal::open(dir.path(), JournalConfig::default()).expect("recover");
    let elapsed = start.elapsed();
    assert_eq!(r.report.recipients, n * per);
    println!(
        "  {n} messages x {per} recipients, {}: {elapsed:.2?} ({}); goal < 10 s: {}",
        if checkpointed {
            "all in the checkpoint (read one by one)"
        } else {
            "all after the checkpoint (scanned)"
        },
        r.report,
        if elapsed < Duration::from_secs(10) {
            "met"
        } else {
            "MISSED"
        },
    );
}

fn main() {
    let a = args();
    println!("journal benchmark in {}", a.dir.display());
    let run = |section: &str| a.only.as_deref().is_none_or(|o| o == section);
    if run("throughput") {
        throughput(&a.dir, a.messages);
    }
    if run("bytes") {
        bytes_many_recipients(&a.dir, a.messages / 10);
    }
    if !run("recovery") {
        return;
    }
    println!(
        "== recovery of {} unfinished recipients, page cache dropped ==",
        a.recipients
    );
    for per in [1, 10] {
        for checkpointed in [false, true] {
            recovery(&a.dir, a.recipients, per, checkpointed);
        }
    }
}
