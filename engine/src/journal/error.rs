//! The journal's errors: typed, so ingest can tell "try again later"
//! (452 4.3.1) from "this will not get better by waiting".

use std::io;
use std::path::PathBuf;

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed. When it happened during a commit, every
    /// message appended since the last successful commit is rejected (it
    /// was never acknowledged), and what was durable before is untouched.
    #[error("journal: {op} {}: {source}", path.display())]
    Io {
        /// What the journal was doing ("write", "fsync", "rename", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process holds this shard directory.
    #[error("journal: {} is in use by another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The record would not fit the on-disk format (an address longer than
    /// 65,535 bytes, more than 2^32 recipients, a record over 1 GiB).
    #[error("journal: record too large ({what})")]
    TooLarge {
        /// Which part is too large.
        what: &'static str,
    },
    /// Every sequence number is taken: the journal holds a record or a
    /// fact numbered 2^63 - 1, which only damage its checksum did not
    /// catch can write. New messages are refused (nothing already
    /// durable is affected) rather than numbered past what recovery reads.
    #[error("journal: sequence numbers used up (a record or fact numbered 2^63 - 1)")]
    NumbersUsedUp,
    /// A recipient that the journal does not know was marked finished:
    /// a bug in the caller, reported rather than ignored.
    #[error("journal: no unfinished message {seq} with recipient {index}")]
    UnknownRecipient {
        /// The message's sequence number.
        seq: u64,
        /// The recipient's index in the message's envelope.
        index: u32,
    },
    /// The quota file is damaged. Volley refuses to start rather than count
    /// from zero again: the counter is a licence limit.
    #[error("journal: quota file {} is damaged ({reason})", path.display())]
    CorruptQuota {
        /// The quota file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl JournalError {
    /// True when the same operation may succeed later without an operator:
    /// a full disk, a quota or file-size limit, an interrupted call. Ingest
    /// answers 452 4.3.1 either way; this tells the log how loud to be.
    pub fn is_transient(&self) -> bool {
        match self {
            JournalError::Io { source, .. } => io_is_transient(source),
            JournalError::Locked { .. }
            | JournalError::TooLarge { .. }
            | JournalError::NumbersUsedUp
            | JournalError::UnknownRecipient { .. }
            | JournalError::CorruptQuota { .. } => false,
        }
    }

    /// True when the disk (or a limit on it) is full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            JournalError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

fn io_is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EINTR | libc::EAGAIN | libc::ENOMEM)
    ) || matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_transient_and_eio_is_not() {
        let full = JournalError::io("write", "/x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(full.is_transient());
        assert!(full.is_storage_full());
        let eio = JournalError::io("fsync", "/x", io::Error::from_raw_os_error(libc::EIO));
        assert!(!eio.is_transient());
        assert!(!eio.is_storage_full());
        assert!(!JournalError::UnknownRecipient { seq: 1, index: 0 }.is_transient());
    }
}
