//! Operators' suspensions on disk, in durable mode: `suspensions.json` in
//! the journal's directory, written whole (a temporary file, then a
//! rename) at every suspend and resume, read at start, so a restart keeps
//! them. Times are wall-clock seconds since the Unix epoch.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name in the journal's directory.
const FILE: &str = "suspensions.json";

/// One suspension as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedHold {
    pub(crate) domain: String,
    pub(crate) until_unix: u64,
    pub(crate) reason: String,
}

impl SavedHold {
    /// How long it still holds at `now` (`None`: it ran out).
    pub(crate) fn left(&self, now: SystemTime) -> Option<Duration> {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        (self.until_unix > now).then(|| Duration::from_secs(self.until_unix - now))
    }
}

/// The file of `journal_dir`.
pub(crate) fn path(journal_dir: &Path) -> PathBuf {
    journal_dir.join(FILE)
}

/// The suspensions in `file` that still hold at `now`; none when there is
/// no file, and none (said in the log) when it cannot be read.
pub(crate) fn load(file: &Path, now: SystemTime) -> Vec<SavedHold> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(target: "volley", "{}: {e}; no suspension restored", file.display());
            return Vec::new();
        }
    };
    match serde_json::from_str::<Vec<SavedHold>>(&text) {
        Ok(all) => all.into_iter().filter(|h| h.left(now).is_some()).collect(),
        Err(e) => {
            tracing::warn!(target: "volley", "{}: {e}; no suspension restored", file.display());
            Vec::new()
        }
    }
}

/// Writes `holds` to `file`, replacing what was there in one rename.
pub(crate) fn save(file: &Path, holds: &[SavedHold]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(holds).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_holds_come_back_unless_they_ran_out_or_the_file_is_bad() {
        let dir = std::env::temp_dir().join(format!("volley-holds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = path(&dir);
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(load(&file, now).is_empty(), "no file: none");
        let holds = vec![
            SavedHold {
                domain: "a.example".into(),
                until_unix: 1_000_600,
                reason: "asked".into(),
            },
            SavedHold {
                domain: "b.example".into(),
                until_unix: 999_000,
                reason: "over".into(),
            },
        ];
        save(&file, &holds).unwrap();
        let back = load(&file, now);
        assert_eq!(back, holds[..1].to_vec());
        assert_eq!(back[0].left(now), Some(Duration::from_secs(600)));
        std::fs::write(&file, "not json").unwrap();
        assert!(load(&file, now).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
