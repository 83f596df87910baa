//! Power cuts at random points, deterministically: one seed gives one run.
//!
//! A run opens a journal on a [`SimDisk`] with settings drawn from the
//! seed, and over a few epochs appends messages, acknowledges those that
//! `commit_bodies` says are durable, finishes their recipients, commits
//! facts, takes checkpoints (segments roll and are deleted on the way),
//! and has writes, syncs and directory syncs fail now and then. The clock
//! is simulated. At a random operation the power goes: the operation then
//! fails (a write may be half done), every later one too, and the disk
//! keeps only what was synced plus a torn part of the rest. Sometimes the
//! power goes again during the recovery that follows. After each recovery
//! the run checks:
//!
//! - every acknowledged message is recovered with each recipient not
//!   finished, byte for byte, or that recipient was finished;
//! - no recipient whose "finished" fact was durable (committed, or taken
//!   into a checkpoint) is handed back: only those in the documented window
//!   (finished, fact not yet committed) may be delivered again;
//! - nothing comes back that was never appended, or that an earlier
//!   recovery did not hand back; no message is reported missing;
//! - the report adds up, each cut it reports left the file at that length,
//!   and a second recovery finds nothing more to cut or skip;
//! - nothing panics.
//!
//! `SIM_RUNS` (default 1200, about 8 s in a debug build) and `SIM_SEED` (the first seed, default 0)
//! scale it; `SIM_THREADS` spreads the seeds over threads;
//! `scripts/powerloss.sh RUNS` runs it in release. A failing seed is named
//! in the panic message; rerun it alone with `SIM_SEED=<seed> SIM_RUNS=1`,
//! and keep it as a named test below once fixed.

use std::collections::{BTreeMap, BTreeSet};
use std::panic;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::quota::{QuotaLimits, SendQuota};
use super::sim_disk::{CutStats, Fault, Rng, SimDisk};
use super::{JournalConfig, Recovery, ShardJournal};

/// A message as it was appended.
#[derive(Debug, Clone)]
struct Sent {
    sender: String,
    recipients: Vec<String>,
    body: Vec<u8>,
}

/// What the journal was told and what it answered: what recovery owes.
#[derive(Debug, Default)]
struct Model {
    /// Every message appended and not forgotten since, by sequence number.
    appended: BTreeMap<u64, Sent>,
    /// Acknowledged messages (durable by `commit_bodies`, or recovered).
    acked: BTreeSet<u64>,
    /// Appended since the last body commit: acknowledged or rejected by it.
    pending: Vec<u64>,
    /// Rejected by a commit that failed with the power on: the caller
    /// answered 452 and must never see them again.
    rejected: BTreeSet<u64>,
    /// Recipients of acknowledged messages left to deliver.
    todo: Vec<(u64, u32)>,
    /// Recipients marked finished.
    finished: BTreeSet<(u64, u32)>,
    /// Finished, the fact not yet known durable.
    unsynced: Vec<(u64, u32)>,
    /// Finished, the fact durable: never to be delivered again.
    durable: BTreeSet<(u64, u32)>,
}

/// Figures over many runs.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    runs: u64,
    acked: u64,
    rejected: u64,
    recoveries: u64,
    cut_in_recovery: u64,
    resent_in_window: u64,
    unacked_back: u64,
    damage: u64,
    cut_off: u64,
    disk: CutStats,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.runs += o.runs;
        self.acked += o.acked;
        self.rejected += o.rejected;
        self.recoveries += o.recoveries;
        self.cut_in_recovery += o.cut_in_recovery;
        self.resent_in_window += o.resent_in_window;
        self.unacked_back += o.unacked_back;
        self.damage += o.damage;
        self.cut_off += o.cut_off;
        self.disk.cuts += o.disk.cuts;
        self.disk.torn += o.disk.torn;
        self.disk.lost += o.disk.lost;
        self.disk.dir_undone += o.disk.dir_undone;
        self.disk.faults += o.disk.faults;
    }
}

type Sim<T> = Result<T, String>;

impl Model {
    fn ack(&mut self, seq: u64) {
        self.acked.insert(seq);
        let n = self.appended[&seq].recipients.len() as u32;
        self.todo.extend((0..n).map(|i| (seq, i)));
    }

    fn commit_bodies(
        &mut self,
        j: &mut ShardJournal,
        disk: &SimDisk,
        now: Instant,
        t: &mut Totals,
    ) -> Sim<()> {
        let pending = std::mem::take(&mut self.pending);
        match j.commit_bodies(now) {
            Ok(upto) => {
                for seq in pending {
                    if seq > upto {
                        return Err(format!(
                            "commit_bodies: {seq} appended, durable_upto {upto}"
                        ));
                    }
                    self.ack(seq);
                    t.acked += 1;
                }
            }
            Err(_) => {
                t.rejected += pending.len() as u64;
                if !disk.is_dead() {
                    self.rejected.extend(pending);
                }
            }
        }
        Ok(())
    }

    /// Checks what recovery handed back against what it owes.
    fn check(&self, rec: &Recovery, disk: &SimDisk, t: &mut Totals) -> Sim<()> {
        let r = &rec.report;
        if !r.missing.is_empty() {
            return Err(format!("messages reported lost: {:?}; {r}", r.missing));
        }
        let recipients: u64 = rec.messages.iter().map(|m| m.recipients.len() as u64).sum();
        if r.messages != rec.messages.len() as u64 || r.recipients != recipients {
            return Err(format!("the report does not add up: {r}"));
        }
        for d in &r.damage {
            t.damage += 1;
            if d.truncated {
                t.cut_off += 1;
                let len = disk.len_of(&d.file);
                if len.is_some_and(|l| l != d.offset) {
                    return Err(format!(
                        "reported a cut at {} but the file has {len:?} bytes; {r}",
                        d.offset
                    ));
                }
            }
        }
        let mut back = BTreeSet::new();
        for m in &rec.messages {
            let Some(sent) = self.appended.get(&m.seq) else {
                return Err(format!(
                    "message {} came back, never appended (or forgotten)",
                    m.seq
                ));
            };
            if m.sender != sent.sender || m.body[..] != sent.body[..] {
                return Err(format!("message {} came back changed", m.seq));
            }
            if m.recipients.is_empty() {
                return Err(format!("message {} came back with nothing to do", m.seq));
            }
            if self.rejected.contains(&m.seq) {
                return Err(format!("message {} was rejected, yet came back", m.seq));
            }
            if !self.acked.contains(&m.seq) {
                t.unacked_back += 1;
            }
            for x in &m.recipients {
                let key = (m.seq, x.index);
                if sent.recipients.get(x.index as usize) != Some(&x.address) {
                    return Err(format!("recipient {key:?} came back changed"));
                }
                if self.durable.contains(&key) {
                    return Err(format!(
                        "recipient {key:?} finished durably, yet handed back"
                    ));
                }
                if self.finished.contains(&key) {
                    t.resent_in_window += 1;
                }
                if !back.insert(key) {
                    return Err(format!("recipient {key:?} handed back twice"));
                }
            }
        }
        for &seq in &self.acked {
            for i in 0..self.appended[&seq].recipients.len() as u32 {
                let key = (seq, i);
                if !self.finished.contains(&key) && !back.contains(&key) {
                    return Err(format!("recipient {key:?} acknowledged, then lost; {r}"));
                }
            }
        }
        Ok(())
    }

    /// Carries on from what recovery handed back: exactly that is left to
    /// do, and every other recipient is durably finished.
    fn adopt(&mut self, rec: &Recovery) {
        let back: BTreeSet<(u64, u32)> = rec
            .messages
            .iter()
            .flat_map(|m| m.recipients.iter().map(move |x| (m.seq, x.index)))
            .collect();
        self.acked.extend(rec.messages.iter().map(|m| m.seq));
        let acked = &self.acked;
        self.appended.retain(|seq, _| acked.contains(seq));
        self.durable = self
            .acked
            .iter()
            .flat_map(|&seq| {
                (0..self.appended[&seq].recipients.len() as u32).map(move |i| (seq, i))
            })
            .filter(|k| !back.contains(k))
            .collect();
        self.finished = self.durable.clone();
        self.unsynced.clear();
        self.pending.clear();
        self.todo = back.into_iter().collect();
    }
}

fn unfinished(r: &Recovery) -> Vec<(u64, Vec<u32>)> {
    r.messages
        .iter()
        .map(|m| (m.seq, m.recipients.iter().map(|x| x.index).collect()))
        .collect()
}

fn open(disk: &SimDisk, dir: &Path, config: &JournalConfig) -> Sim<(ShardJournal, Recovery)> {
    ShardJournal::open_on(Arc::new(disk.clone()), dir, config.clone())
        .map_err(|e| format!("open failed with the power on: {e}"))
}

/// Recovers, the power going again during it now and then; checks the
/// result and that a second recovery finds nothing more to mend.
fn recover(
    disk: &SimDisk,
    dir: &Path,
    config: &JournalConfig,
    m: &Model,
    rng: &mut Rng,
    t: &mut Totals,
) -> Sim<(ShardJournal, Recovery)> {
    while rng.chance(20) {
        disk.cut_after(rng.below(12));
        let opened = ShardJournal::open_on(Arc::new(disk.clone()), dir, config.clone());
        if !disk.is_dead() {
            // It needed fewer operations than planned: a whole recovery.
            let (j, rec) = opened.map_err(|e| format!("open failed with the power on: {e}"))?;
            m.check(&rec, disk, t)?;
            drop(j);
            disk.power_cut(rng);
            continue;
        }
        drop(opened);
        t.cut_in_recovery += 1;
        disk.power_cut(rng);
    }
    let (j, rec) = open(disk, dir, config)?;
    t.recoveries += 1;
    m.check(&rec, disk, t)?;
    drop(j);
    let (j, again) = open(disk, dir, config)?;
    if !again.report.is_clean() || unfinished(&again) != unfinished(&rec) {
        return Err(format!(
            "a second recovery differs: {} after {}",
            again.report, rec.report
        ));
    }
    Ok((j, rec))
}

fn append(j: &mut ShardJournal, m: &mut Model, rng: &mut Rng, now: Instant) -> Sim<()> {
    let n = if rng.chance(3) { 0 } else { 1 + rng.below(4) };
    let tag = rng.next() % 100_000;
    let sent = Sent {
        sender: format!("s{tag}@sender.example"),
        recipients: (0..n)
            .map(|i| format!("r{i}-{tag}@d{}.example", i % 2))
            .collect(),
        body: (0..rng.below(700))
            .map(|i| b'a' + ((tag + i) % 26) as u8)
            .collect(),
    };
    let seq = j
        .append(now, &sent.sender, &sent.recipients, &sent.body)
        .map_err(|e| format!("append failed: {e}"))?;
    if m.appended.contains_key(&seq) {
        return Err(format!("sequence number {seq} given twice"));
    }
    // A number a power cut took back may be given again.
    m.rejected.remove(&seq);
    m.appended.insert(seq, sent);
    m.pending.push(seq);
    Ok(())
}

/// One epoch of work until the power goes (or `steps` are done).
fn drive(
    j: &mut ShardJournal,
    disk: &SimDisk,
    m: &mut Model,
    rng: &mut Rng,
    now: &mut Instant,
    steps: u64,
    t: &mut Totals,
) -> Sim<()> {
    for _ in 0..steps {
        if disk.is_dead() {
            return Ok(());
        }
        *now += Duration::from_micros(rng.below(4000));
        match rng.below(100) {
            0..=27 => {
                for _ in 0..1 + rng.below(3) {
                    append(j, m, rng, *now)?;
                }
            }
            28..=52 => {
                for _ in 0..1 + rng.below(3) {
                    if m.todo.is_empty() {
                        break;
                    }
                    let (seq, i) = m.todo.swap_remove(rng.below(m.todo.len() as u64) as usize);
                    j.finish(*now, seq, i)
                        .map_err(|e| format!("finish {seq} {i}: {e}"))?;
                    m.finished.insert((seq, i));
                    m.unsynced.push((seq, i));
                }
            }
            53..=67 => m.commit_bodies(j, disk, *now, t)?,
            68..=80 => {
                if j.commit_progress(*now).is_ok() {
                    m.durable.extend(m.unsynced.drain(..));
                }
            }
            81..=84 => {
                // Every finished recipient belongs to a durable message,
                // so a checkpoint makes every fact durable.
                if j.checkpoint().is_ok() {
                    m.durable.extend(m.unsynced.drain(..));
                }
            }
            85..=86 => {
                let fault = [Fault::Write, Fault::Sync, Fault::SyncDir][rng.below(3) as usize];
                disk.inject(fault, None);
            }
            _ => {
                // The writer thread's way: commit what is due.
                if j.commit_due(*now) {
                    m.commit_bodies(j, disk, *now, t)?;
                    if j.commit_progress(*now).is_ok() {
                        m.durable.extend(m.unsynced.drain(..));
                    }
                }
                if j.checkpoint_due() && j.checkpoint().is_ok() {
                    m.durable.extend(m.unsynced.drain(..));
                }
            }
        }
    }
    Ok(())
}

/// One whole run.
fn run(seed: u64) -> Sim<Totals> {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new();
    let dir = Path::new("/sim/shard-0");
    let config = JournalConfig {
        segment_bytes: 400 + rng.below(3000),
        commit_bytes: 256 + rng.below(4096) as usize,
        checkpoint_journal_bytes: 32 + rng.below(1024),
        checkpoint_body_bytes: 512 + rng.below(8192),
        ..JournalConfig::default()
    };
    let mut m = Model::default();
    let mut t = Totals {
        runs: 1,
        ..Totals::default()
    };
    let mut now = Instant::now();
    for epoch in 0..3 {
        let (mut j, rec) = recover(&disk, dir, &config, &m, &mut rng, &mut t)
            .map_err(|e| format!("epoch {epoch}: {e}"))?;
        m.adopt(&rec);
        disk.cut_after(rng.below(200));
        let steps = 10 + rng.below(90);
        drive(&mut j, &disk, &mut m, &mut rng, &mut now, steps, &mut t)
            .map_err(|e| format!("epoch {epoch}: {e}"))?;
        drop(j);
        disk.power_cut(&mut rng);
    }
    recover(&disk, dir, &config, &m, &mut rng, &mut t)
        .map_err(|e| format!("last recovery: {e}"))?;
    t.disk = disk.stats();
    Ok(t)
}

/// Runs `seed`, turning a panic into an error that names the seed.
fn run_caught(seed: u64) -> Sim<Totals> {
    match panic::catch_unwind(|| run(seed)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("seed {seed}: {e}")),
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("seed {seed}: panicked: {what}"))
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn power_cuts_at_random_points_lose_nothing_acknowledged() {
    let runs = env_u64("SIM_RUNS", 1200);
    let first = env_u64("SIM_SEED", 0);
    let threads = env_u64("SIM_THREADS", 1).clamp(1, 64);
    let started = Instant::now();
    let results: Vec<Sim<Totals>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    let mut total = Totals::default();
                    let mut seed = first + k;
                    while seed < first + runs {
                        total.add(&run_caught(seed)?);
                        seed += threads;
                    }
                    Ok(total)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let mut total = Totals::default();
    for r in results {
        match r {
            Ok(t) => total.add(&t),
            Err(e) => panic!("{e}\n(rerun alone: SIM_SEED=<seed> SIM_RUNS=1)"),
        }
    }
    println!(
        "power-loss simulation: {} runs from seed {first} in {:.1} s: {total:?}",
        total.runs,
        started.elapsed().as_secs_f64()
    );
    if runs >= 500 {
        // The runs reach what they are meant to.
        let d = total.disk;
        assert!(
            d.torn > 0 && d.lost > 0 && d.dir_undone > 0 && d.faults > 0,
            "{total:?}"
        );
        assert!(
            total.acked > 0 && total.rejected > 0 && total.cut_in_recovery > 0,
            "{total:?}"
        );
        assert!(total.resent_in_window > 0 && total.cut_off > 0, "{total:?}");
    }
}

/// A failed fsync may have lost the facts it was to make durable (Linux
/// marks the pages clean; the platter never got them): the next commit
/// must write them again, not only sync again.
#[test]
fn facts_whose_fsync_failed_are_written_again() {
    let disk = SimDisk::new();
    let dir = Path::new("/sim/shard-0");
    let config = JournalConfig::default();
    let now = Instant::now();
    let (mut j, _) = open(&disk, dir, &config).unwrap();
    let seq = j.append(now, "s@x", &["a@y", "b@y"], b"body").unwrap();
    assert_eq!(j.commit_bodies(now).unwrap(), seq);
    j.finish(now, seq, 0).unwrap();
    disk.inject(Fault::Sync, None);
    assert!(j.commit_progress(now).is_err());
    j.commit_progress(now).unwrap();
    drop(j);
    disk.power_cut(&mut Rng::new(0));
    let (_, rec) = open(&disk, dir, &config).unwrap();
    assert_eq!(unfinished(&rec), vec![(seq, vec![1])], "{}", rec.report);
}

/// Messages whose fsync failed are rejected, never acknowledged by a
/// later commit, and do not come back; the next batch is written anew.
#[test]
fn messages_whose_fsync_failed_are_rejected_and_the_next_ones_kept() {
    let disk = SimDisk::new();
    let dir = Path::new("/sim/shard-0");
    let config = JournalConfig::default();
    let now = Instant::now();
    let (mut j, _) = open(&disk, dir, &config).unwrap();
    let a = j.append(now, "s@x", &["r@y"], b"first").unwrap();
    assert_eq!(j.commit_bodies(now).unwrap(), a);
    j.append(now, "s@x", &["r@y"], b"second").unwrap();
    disk.inject(Fault::Sync, None);
    assert!(j.commit_bodies(now).is_err());
    let c = j.append(now, "s@x", &["r@y"], b"third").unwrap();
    assert_eq!(j.commit_bodies(now).unwrap(), c);
    drop(j);
    disk.power_cut(&mut Rng::new(0));
    let (_, rec) = open(&disk, dir, &config).unwrap();
    assert_eq!(
        unfinished(&rec),
        vec![(a, vec![0]), (c, vec![0])],
        "{}",
        rec.report
    );
    assert!(rec.report.is_clean(), "{}", rec.report);
}

/// A commit fails after one of its chunks was synced, and cutting that
/// chunk off fails too: its messages were rejected (answered 452), so
/// they must not come back after a crash either.
#[test]
fn rejected_messages_whose_cut_failed_do_not_come_back() {
    let disk = SimDisk::new();
    let dir = Path::new("/sim/shard-0");
    // Two records per segment.
    let config = JournalConfig {
        segment_bytes: 200,
        ..JournalConfig::default()
    };
    let now = Instant::now();
    let (mut j, _) = open(&disk, dir, &config).unwrap();
    let body = [b'x'; 50];
    let a = j.append(now, "s@x", &["r@y"], &body).unwrap();
    assert_eq!(j.commit_bodies(now).unwrap(), a);
    let b = j.append(now, "s@x", &["r@y"], &body).unwrap();
    let c = j.append(now, "s@x", &["r@y"], &body).unwrap();
    assert_eq!(
        j.stats().segments,
        2,
        "b closes the first segment, c opens the next"
    );
    // b is written and synced; creating c's segment is not made durable;
    // the cut back of b's segment is not either.
    let first = super::body_log::segment_path(dir, 1);
    disk.inject(Fault::SyncDir, None);
    disk.inject_later(Fault::Sync, Some(&first), 1);
    assert!(j.commit_bodies(now).is_err());
    assert_eq!(disk.stats().faults, 2);
    j.commit_progress(now).unwrap();
    drop(j);
    disk.power_cut(&mut Rng::new(0));
    let (_, rec) = open(&disk, dir, &config).unwrap();
    let seqs: Vec<u64> = rec.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        vec![a],
        "b {b} and c {c} were rejected; {}",
        rec.report
    );
}

/// A message without recipients lost its number with its segment, and
/// the next start gave that number again.
#[test]
fn seed_266_a_message_without_recipients_keeps_its_number() {
    run_caught(266).unwrap();
}

/// A power cut in the middle of a quota update leaves the old count or the
/// new one, never an error and never a torn count.
#[test]
fn a_power_cut_during_a_quota_update_keeps_the_old_count_or_the_new() {
    let path = Path::new("/sim/quota");
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let disk = SimDisk::new();
        let open = || SendQuota::open_on(Arc::new(disk.clone()), path, QuotaLimits::default());
        let mut counted = 0;
        for _ in 0..3 {
            let mut q = open().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let now = std::time::SystemTime::now();
            assert_eq!(q.counts(now).total, counted, "seed {seed}");
            disk.cut_after(rng.below(12));
            let mut tried = 0;
            while !disk.is_dead() && tried < 3 {
                tried += 1;
                if q.record(now, 1).is_ok() {
                    counted += 1;
                }
            }
            disk.power_cut(&mut rng);
            let q = open().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let total = q.counts(now).total;
            // The update under way when the power went may have landed.
            assert!(
                total == counted || (tried > 0 && total == counted + 1),
                "seed {seed}: counted {counted}, found {total}"
            );
            counted = total;
        }
    }
}
