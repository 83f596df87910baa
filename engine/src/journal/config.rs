//! Settings of a shard's journal, with their defaults in one place:
//! `#[serde(default)]` fills every missing field from `Default`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a shard's journal writes: segment size, group commit and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// A body-log segment is closed once it holds this many bytes; a whole
    /// segment is deleted once every message in it is finished, so smaller
    /// segments free disk sooner and larger ones mean fewer files.
    pub segment_bytes: u64,
    /// Group commit by time: the oldest unsynced append waits at most this
    /// long before its commit starts (the writer commits sooner when
    /// nothing else is queued). It bounds the added latency of a fast-mode
    /// 250.
    #[serde(with = "volley_units::serde::duration")]
    pub commit_interval: Duration,
    /// Group commit of "finished" facts: the oldest waits at most this long
    /// before its commit starts. Longer means fewer fsyncs and fewer bytes
    /// rewritten per fact; it also widens the window in which a crash
    /// resends a recipient that was already delivered.
    #[serde(with = "volley_units::serde::duration")]
    pub finish_commit_interval: Duration,
    /// Group commit by size: a commit is due once this many bytes wait.
    pub commit_bytes: usize,
    /// A checkpoint is due once the recovery journal has grown by this many
    /// bytes since the last one (it bounds the journal's size on disk).
    pub checkpoint_journal_bytes: u64,
    /// A checkpoint is due once this many body-log bytes were appended since
    /// the last one (it bounds how much of the body log recovery scans).
    pub checkpoint_body_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: 64 << 20,
            commit_interval: Duration::from_millis(2),
            finish_commit_interval: Duration::from_millis(10),
            commit_bytes: 1 << 20,
            checkpoint_journal_bytes: 16 << 20,
            checkpoint_body_bytes: 1 << 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_the_defaults_and_durations_read_as_text() {
        let c: JournalConfig =
            toml::from_str("commit_interval = \"5ms\"\nsegment_bytes = 1024").unwrap();
        assert_eq!(c.commit_interval, Duration::from_millis(5));
        assert_eq!(c.segment_bytes, 1024);
        assert_eq!(c.commit_bytes, JournalConfig::default().commit_bytes);
        assert!(toml::from_str::<JournalConfig>("segment_size = 1").is_err());
    }
}
