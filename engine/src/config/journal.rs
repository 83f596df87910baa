//! The `[journal]` section: where durable mode keeps its files and how it
//! writes them. Without a `dir`, Volley works from memory alone.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::journal::JournalConfig;

/// Durable mode's settings; the defaults are the journal's own
/// ([`JournalConfig::default`]), so an empty section changes nothing but
/// what `dir` turns on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSettings {
    /// The journal's root directory (one `shard-N` directory per shard, and
    /// the quota counter). Unset: no journal, and a crash or power loss
    /// loses every message held in memory, acknowledged or not.
    pub dir: Option<PathBuf>,
    /// A body-log segment is closed at this size; a closed segment is
    /// deleted once all its messages are finished.
    #[serde(with = "volley_units::serde::size")]
    pub segment_size: u64,
    /// Group commit by time: a fast-mode 250 waits at most this long
    /// before its fsync starts (sooner when the writer has nothing else
    /// queued).
    #[serde(with = "volley_units::serde::duration")]
    pub commit_interval: Duration,
    /// Group commit of "finished" records: a recipient's final outcome
    /// waits at most this long before the fsync that records it starts.
    /// This bounds the window in which a crash resends a recipient that
    /// was delivered.
    #[serde(with = "volley_units::serde::duration")]
    pub finish_commit_interval: Duration,
    /// Group commit by size: a commit starts once this many bytes wait.
    #[serde(with = "volley_units::serde::size")]
    pub commit_size: u64,
    /// A checkpoint is written once the recovery journal grew this much.
    #[serde(with = "volley_units::serde::size")]
    pub checkpoint_journal_size: u64,
    /// A checkpoint is written once this many body bytes were appended
    /// (it bounds how much of the body log recovery scans).
    #[serde(with = "volley_units::serde::size")]
    pub checkpoint_body_size: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        let j = JournalConfig::default();
        JournalSettings {
            dir: None,
            segment_size: j.segment_bytes,
            commit_interval: j.commit_interval,
            finish_commit_interval: j.finish_commit_interval,
            commit_size: j.commit_bytes as u64,
            checkpoint_journal_size: j.checkpoint_journal_bytes,
            checkpoint_body_size: j.checkpoint_body_bytes,
        }
    }
}

impl JournalSettings {
    /// The storage layer's settings for each shard's journal.
    pub fn storage(&self) -> JournalConfig {
        JournalConfig {
            segment_bytes: self.segment_size,
            commit_interval: self.commit_interval,
            finish_commit_interval: self.finish_commit_interval,
            commit_bytes: usize::try_from(self.commit_size).unwrap_or(usize::MAX),
            checkpoint_journal_bytes: self.checkpoint_journal_size,
            checkpoint_body_bytes: self.checkpoint_body_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn the_journal_and_quota_sections_parse_and_a_quota_needs_a_dir() {
        let c = Config::from_toml(
            "[journal]\ndir = \"/var/lib/volley\"\ncommit_interval = \"3ms\"\nsegment_size = \"8MiB\"\n[quota]\nper_day = 10\n",
        )
        .unwrap();
        assert_eq!(
            c.journal.dir.as_deref(),
            Some(std::path::Path::new("/var/lib/volley"))
        );
        let s = c.journal.storage();
        assert_eq!(s.commit_interval, Duration::from_millis(3));
        assert_eq!(s.segment_bytes, 8 << 20);
        assert_eq!(c.quota.per_day, Some(10));
        assert_eq!(
            Config::default().journal.dir,
            None,
            "memory only by default"
        );

        let e = Config::from_toml("shards = 1\n[quota]\ntotal = 5\n").unwrap_err();
        assert_eq!(e[0].line, Some(2), "{e:?}");
        assert!(e[0].message.contains("needs [journal] dir"), "{e:?}");
        assert!(Config::from_toml("[journal]\nsegment_sise = 1\n").is_err());
    }
}
