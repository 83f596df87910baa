//! The sending quota: a persisted count of delivered messages, checked
//! against optional limits in total and per day (the number of messages
//! the operator is allowed to send).
//!
//! The state is one small checksummed file rewritten atomically (temporary
//! file, fsync, rename, fsync of the directory), so a crash leaves either
//! the old count or the new one, never a torn one. Days are UTC days of the
//! clock passed in, so tests can move the date.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::body_log::write_atomic;
use super::disk::{Disk, RealDisk};
use super::error::JournalError;

const QUOTA_MAGIC: [u8; 4] = *b"VQT1";
const QUOTA_LEN: usize = 28;

/// Optional limits on delivered messages (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaLimits {
    /// At most this many messages over the counter's lifetime.
    pub total: Option<u64>,
    /// At most this many messages per UTC day.
    pub per_day: Option<u64>,
}

/// Why the quota refuses more messages; the text is fit for an SMTP reply
/// and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// The lifetime limit is reached; only a larger licence lifts it.
    #[error("sending quota reached: {sent} of {limit} messages in total")]
    Total {
        /// The limit.
        limit: u64,
        /// Messages counted so far.
        sent: u64,
    },
    /// Today's limit is reached; it lifts at the next UTC midnight.
    #[error("daily sending quota reached: {sent} of {limit} messages today (UTC)")]
    Daily {
        /// The limit.
        limit: u64,
        /// Messages counted today.
        sent: u64,
    },
}

impl QuotaExceeded {
    /// True when waiting lifts the refusal (the daily limit).
    pub fn is_transient(&self) -> bool {
        matches!(self, QuotaExceeded::Daily { .. })
    }
}

/// What the counter holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaCounts {
    /// Messages counted over the counter's lifetime.
    pub total: u64,
    /// Messages counted today (UTC, by the clock passed in).
    pub today: u64,
}

/// The persisted delivery counter with its limits.
#[derive(Debug)]
pub struct SendQuota {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    dir: PathBuf,
    limits: QuotaLimits,
    total: u64,
    /// The UTC day (days since 1970-01-01) `today` counts for.
    day: u64,
    today: u64,
}

fn day_of(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl SendQuota {
    /// Opens the counter stored at `path` (a missing file is a zero count).
    /// A damaged file is an error: the count is not silently reset.
    pub fn open(path: &Path, limits: QuotaLimits) -> Result<Self, JournalError> {
        Self::open_on(Arc::new(RealDisk), path, limits)
    }

    /// [`SendQuota::open`] on another disk than the real one (the tests'
    /// simulated disk).
    pub(crate) fn open_on(
        disk: Arc<dyn Disk>,
        path: &Path,
        limits: QuotaLimits,
    ) -> Result<Self, JournalError> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        disk.create_dir_all(&dir)
            .map_err(|e| JournalError::io("create", &dir, e))?;
        let mut q = SendQuota {
            disk,
            path: path.to_path_buf(),
            dir,
            limits,
            total: 0,
            day: 0,
            today: 0,
        };
        let mut data = Vec::new();
        match q.disk.read_to_end(path, &mut data) {
            Ok(()) => q.load(&data)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io("read", path, e)),
        }
        Ok(q)
    }

    fn load(&mut self, data: &[u8]) -> Result<(), JournalError> {
        let bad = |reason| JournalError::CorruptQuota {
            path: self.path.clone(),
            reason,
        };
        if data.len() != QUOTA_LEN {
            return Err(bad("wrong length"));
        }
        if data[..4] != QUOTA_MAGIC {
            return Err(bad("unknown format"));
        }
        let crc = u32::from_le_bytes(data[24..28].try_into().expect("4 bytes"));
        if crc32c::crc32c(&data[..24]) != crc {
            return Err(bad("checksum mismatch"));
        }
        self.total = u64::from_le_bytes(data[4..12].try_into().expect("8 bytes"));
        self.day = u64::from(u32::from_le_bytes(
            data[12..16].try_into().expect("4 bytes"),
        ));
        self.today = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
        Ok(())
    }

    /// The counts as of `now` (today's count is zero on a new day).
    pub fn counts(&self, now: SystemTime) -> QuotaCounts {
        QuotaCounts {
            total: self.total,
            today: if day_of(now) == self.day {
                self.today
            } else {
                0
            },
        }
    }

    /// May one more message be accepted at `now`?
    pub fn check(&self, now: SystemTime) -> Result<(), QuotaExceeded> {
        let c = self.counts(now);
        if let Some(limit) = self.limits.total.filter(|&l| c.total >= l) {
            return Err(QuotaExceeded::Total {
                limit,
                sent: c.total,
            });
        }
        if let Some(limit) = self.limits.per_day.filter(|&l| c.today >= l) {
            return Err(QuotaExceeded::Daily {
                limit,
                sent: c.today,
            });
        }
        Ok(())
    }

    /// Counts `n` delivered messages at `now` and stores the new count
    /// before returning. Each call costs a small atomic file write with two
    /// fsyncs: callers count in batches. On error the count in memory is
    /// unchanged and the file keeps the previous count.
    pub fn record(&mut self, now: SystemTime, n: u64) -> Result<(), JournalError> {
        let day = day_of(now);
        let today = if day == self.day { self.today } else { 0 };
        let (total, today) = (self.total.saturating_add(n), today.saturating_add(n));
        let day32 = u32::try_from(day).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(QUOTA_LEN);
        buf.extend_from_slice(&QUOTA_MAGIC);
        buf.extend_from_slice(&total.to_le_bytes());
        buf.extend_from_slice(&day32.to_le_bytes());
        buf.extend_from_slice(&today.to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        write_atomic(&*self.disk, &self.dir, &self.path, &buf)?;
        self.total = total;
        self.day = u64::from(day32);
        self.today = today;
        Ok(())
    }

    /// The limits in force.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use std::time::Duration;

    fn at(day: u64, secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(day * 86_400 + secs)
    }

    #[test]
    fn refused_at_the_daily_limit_after_reopening_and_allowed_the_next_day() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota");
        let limits = QuotaLimits {
            total: None,
            per_day: Some(5),
        };
        let mut q = SendQuota::open(&path, limits).unwrap();
        let morning = at(20_000, 3_600);
        for _ in 0..4 {
            q.check(morning).unwrap();
            q.record(morning, 1).unwrap();
        }
        q.check(morning).unwrap();
        q.record(morning, 1).unwrap();
        let refused = q.check(morning).unwrap_err();
        assert_eq!(refused, QuotaExceeded::Daily { limit: 5, sent: 5 });
        assert!(refused.is_transient());
        drop(q);

        let q = SendQuota::open(&path, limits).unwrap();
        let evening = at(20_000, 86_399);
        assert_eq!(q.check(evening).unwrap_err(), refused);
        assert_eq!(q.counts(evening), QuotaCounts { total: 5, today: 5 });
        let next_day = at(20_001, 0);
        q.check(next_day).unwrap();
        assert_eq!(q.counts(next_day), QuotaCounts { total: 5, today: 0 });
    }

    #[test]
    fn total_limit_survives_days_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota");
        let limits = QuotaLimits {
            total: Some(10),
            per_day: Some(8),
        };
        let mut q = SendQuota::open(&path, limits).unwrap();
        q.record(at(1, 0), 8).unwrap();
        assert!(matches!(
            q.check(at(1, 5)),
            Err(QuotaExceeded::Daily { .. })
        ));
        q.record(at(2, 0), 2).unwrap();
        drop(q);
        let q = SendQuota::open(&path, limits).unwrap();
        let e = q.check(at(3, 0)).unwrap_err();
        assert_eq!(
            e,
            QuotaExceeded::Total {
                limit: 10,
                sent: 10
            }
        );
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "sending quota reached: 10 of 10 messages in total"
        );
    }

    #[test]
    fn a_damaged_counter_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota");
        let mut q = SendQuota::open(&path, QuotaLimits::default()).unwrap();
        q.record(at(1, 0), 3).unwrap();
        let mut data = fs::read(&path).unwrap();
        data[5] ^= 1;
        fs::write(&path, &data).unwrap();
        let e = SendQuota::open(&path, QuotaLimits::default()).unwrap_err();
        assert!(matches!(
            e,
            JournalError::CorruptQuota {
                reason: "checksum mismatch",
                ..
            }
        ));
        assert!(!e.is_transient());
    }
}
